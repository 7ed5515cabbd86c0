"""Did the adapter learn the voice? One report: perplexity (base, adapter, base + persona prompt), text
statistics of greedy samples against the targets, and the samples themselves side by side.

Why all three: perplexity alone rewards an adapter that predicts the targets but still *writes* like an
assistant; samples alone are anecdotes; "base with the persona prompt" is the bar an adapter must clear
to be worth having over a system prompt. Everything runs on llama.cpp (the model the user chats with).
Torch-free, and `home` never imports it at start-up: `home eval` and the trainer worker both call
`evaluate_adapter`; matplotlib is imported only to draw.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from llm.errors import AdapterError
from llm.fingerprint import base_refusal
from llm.params import GenParams
from trainer.data import textstats
from trainer.data.examples import Example
from trainer.evaluation.perplexity import compare, heldout_perplexity, likeness, score
from vault.fsio import atomic_write_bytes, atomic_write_json, ensure_private_dir
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore
from vault.personas import Persona, get_persona, list_personas

SAMPLE_PARAMS = GenParams(temperature=0.0, max_tokens=48, seed=0)
COLORS = {"base": "#55a868", "base_with_persona": "#8172b3", "adapter": "#dd8452"}
ACCUMULATING = ("logs", "gestalts")  # sources that grow in the vault: a later load contains the old one


def pick_examples(examples: Sequence[Example], limit: int, run: int = 1) -> list[Example]:
    """At most `limit` examples spread evenly over the data (deterministic: same data, same choice),
    so a long file is not judged by its first pages alone; in runs of `run` consecutive examples, which
    shared-prefix scoring (`chains`) reads in one pass each."""
    n = len(examples)
    if n <= limit:
        return list(examples)
    run = max(1, min(run, limit))
    if run == 1:
        return [examples[(i * n) // limit] for i in range(limit)]
    blocks = -(-limit // run)
    idx: set[int] = set()
    for b in range(blocks):
        start = (b * (n - run)) // (blocks - 1) if blocks > 1 else 0
        idx.update(range(start, start + min(run, limit - b * run)))
    return [examples[i] for i in sorted(idx)]


def validation_split(entry: AdapterEntry, examples: Sequence[Example], dataset_hash: str | None) -> list[Example] | None:
    """The examples the adapter never trained on, from a run that recorded a time split (a voice adapter):
    its latest `validation` examples when `examples` are exactly its data (same hash); in data that grew
    since (the logs), every example after the newest one it trained on. None otherwise."""
    ds = entry.dataset or {}
    if ds.get("split") != "time":
        return None
    n_val = (ds.get("counts") or {}).get("validation")
    if dataset_hash and dataset_hash == ds.get("hash"):
        return list(examples[-n_val:]) if isinstance(n_val, int) and 0 < n_val <= len(examples) else None
    last = ds.get("last_trained")
    at = [i for i, ex in enumerate(examples) if ex.key() == last] if isinstance(last, str) else []
    return list(examples[at[-1] + 1:]) or None if at else None


def heldout_status(entry: AdapterEntry, dataset_hash: str | None, source: str | None,
                   validation: bool = False) -> tuple[bool, str]:
    """(held out?, why). `validation`: the examples are the run's own recorded time split. Otherwise the
    manifest holds only a hash of the whole training set, so data is called held-out only when it is
    provably other data than the adapter was trained on."""
    if validation:
        return True, ("the adapter's time split: only examples later than the newest it trained on "
                      "(its validation split, or what was written since)")
    trained = (entry.dataset or {}).get("hash")
    trained_source = (entry.training or {}).get("source")
    if not trained:
        return False, "the adapter records no training data: these examples may have been trained on"
    if dataset_hash is None:
        return False, "no dataset hash given: cannot tell whether these examples were trained on"
    if dataset_hash == trained:
        return False, ("the same data the adapter was trained on (its validation split is not recorded): "
                       "perplexity is not held-out")
    if source in ACCUMULATING and source == trained_source:
        return False, f"the vault's {source} have changed since training but still include what it was trained on"
    return True, "other data than the adapter was trained on (dataset hash differs)"


def adapter_persona(vault: Vault, entry: AdapterEntry) -> Persona | None:
    """The persona a kind=persona adapter speaks for: a card that lists it, else its owner, else the
    name the trainer gave it (`<persona>-persona-<n>`); None for other kinds or when none is found."""
    if entry.kind != "persona":
        return None
    cards = list_personas(vault, errors=[])
    for card in cards:
        if any(isinstance(a, dict) and a.get("id") == entry.id for a in card.home.get("adapters", [])):
            return card
    match = re.match(r"^(.+?)-persona(?:-\d+)?$", entry.id)
    for name in (entry.owner, match.group(1) if match else None):
        if name and any(name.casefold() in (c.id, c.name.casefold()) for c in cards):
            return get_persona(vault, name)
    return None


def training_losses(entry: AdapterEntry) -> dict | None:
    """{"train": [[step, loss]…], "val": […], "base_val": float|None} from the manifest entry or its run
    dir (losses.json, else the newest checkpoint's trainer_state.json); None when nothing is recorded."""
    training = entry.training or {}
    train, val = training.get("train_losses"), training.get("val_losses")
    if isinstance(training.get("losses"), dict):
        train, val = training["losses"].get("train"), training["losses"].get("val")
    run_dir = Path(training["run_dir"]) if isinstance(training.get("run_dir"), str) else None
    if not train and run_dir is not None:
        train, val = _losses_from_run(run_dir)
    if not train and not val:
        return None
    return {"train": _pairs(train), "val": _pairs(val), "base_val": _finite(training.get("base_val_loss"))}


def _losses_from_run(run_dir: Path) -> tuple[list, list]:
    try:
        data = json.loads((run_dir / "losses.json").read_text())
        return data.get("train") or [], data.get("val") or []
    except (OSError, ValueError, AttributeError):
        pass
    step = lambda p: int(p.parent.name.rpartition("-")[2]) if p.parent.name[-1:].isdigit() else -1  # noqa: E731
    states = sorted(run_dir.glob("checkpoints/checkpoint-*/trainer_state.json"), key=step)
    if not states:
        return [], []
    try:
        history = json.loads(states[-1].read_text()).get("log_history", [])
    except (OSError, ValueError, AttributeError):
        return [], []
    train = [[h["step"], h["loss"]] for h in history if isinstance(h, dict) and "loss" in h and "step" in h]
    val = [[h["step"], h["eval_loss"]] for h in history if isinstance(h, dict) and "eval_loss" in h and "step" in h]
    return train, val


def _pairs(values) -> list[list[float]]:
    out = []
    for item in values or []:
        if isinstance(item, list | tuple) and len(item) == 2 and _finite(item[1]) is not None:
            out.append([item[0], float(item[1])])
    return out


def _finite(x) -> float | None:
    """JSON has no NaN: a metric that could not be measured is null."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


def _last_user(example: Example) -> str:
    users = [m["content"] for m in example.context if m.get("role") == "user"]
    return users[-1] if users else ""


def evaluate_adapter(
    engine,
    vault: Vault,
    adapter_id: str,
    scale: float,
    examples: Sequence[Example],
    *,
    persona_system: str | None,
    samples: int,
    persona_name: str | None = None,
    dataset_hash: str | None = None,
    source: str | None = None,
    params: GenParams = SAMPLE_PARAMS,
    progress: Callable[[str], None] | None = None,
    shared: bool = True,
    validation: bool = False,
) -> dict:
    """Measure `adapter_id` at `scale` against the base on `examples`; the caller's stack is restored.

    Returns the report (JSON-ready; unmeasurable numbers are null). `persona_system` None → the
    "base with persona" perplexity is null (a pass skipped). The first `samples` examples are generated
    greedily. `shared`: consecutive examples of a conversation are scored in one pass (`chains`).
    `progress(line)`: one line per stage and about every tenth of a scoring pass.
    """
    say = progress or (lambda line: None)
    entry = ManifestStore(vault).read().adapter(adapter_id)
    why = base_refusal(entry.base, engine.info.fingerprint, engine.info.name)
    if why:
        raise AdapterError(f"adapter '{adapter_id}' was {why}")
    engine.load_adapter(adapter_id, vault.root / entry.file)
    examples = list(examples)
    before = engine.adapters
    try:
        tick = lambda who, done, total: _tick(say, f"perplexity, {who}", done, total)  # noqa: E731
        # shared: Home's one held-out measure, the retrain panel's too; exact: each example in its window
        ppl = (heldout_perplexity(engine, examples, adapter_id, scale, progress=tick) if shared
               else compare(engine, examples, adapter_id, scale, progress=tick))
        with_persona = None
        if persona_system:
            engine.set_adapters([])
            with_persona = score(engine, examples, system=persona_system, shared=shared,
                                 progress=lambda done, total: _tick(say, "perplexity, base + persona", done, total))
        chosen = examples[: max(0, samples)]
        outputs: dict[str, list[str]] = {}
        for label, stack in (("base", []), ("adapter", [(adapter_id, scale)])):
            engine.set_adapters(stack)
            outputs[label] = []
            for i, ex in enumerate(chosen, 1):
                outputs[label].append(engine.generate_text(ex.prompt_messages(), params).strip())
                say(f"samples, {label}: {i}/{len(chosen)}")
    finally:
        engine.set_adapters(before)

    targets = [ex.target for ex in examples]
    phrases = textstats.catchphrases(targets)
    base, tuned = outputs["base"], outputs["adapter"]
    heldout, note = heldout_status(entry, dataset_hash, source, validation)
    return {
        "adapter": {"id": entry.id, "name": entry.name, "kind": entry.kind, "scale": scale},
        "model": {"name": engine.info.name, "fingerprint": engine.info.fingerprint},
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "examples": len(examples),
        "heldout": heldout,
        "heldout_note": note,
        "persona": persona_name if persona_system else None,
        # "sounds X% more like you": Home's one held-out measure only (the retrain panel's), never --exact's
        "likeness": likeness(_finite(ppl["base"]), _finite(ppl["adapter"])) if heldout and shared else None,
        "perplexity": {"base": _finite(ppl["base"]), "adapter": _finite(ppl["adapter"]),
                       "base_with_persona": _finite(with_persona.perplexity) if with_persona else None},
        "loss": {"base": _finite(ppl["base_loss"]), "adapter": _finite(ppl["adapter_loss"]),
                 "base_with_persona": _finite(with_persona.loss) if with_persona else None},
        "scored_tokens": ppl["tokens"],
        "scoring": "shared" if shared else "exact",  # shared: consecutive examples in one pass (chains)
        "sample_count": len(chosen),
        "vocab_overlap": {"base": textstats.vocab_overlap(base, targets),
                          "adapter": textstats.vocab_overlap(tuned, targets)},
        "distinct_2": {"base": textstats.distinct_n(base), "adapter": textstats.distinct_n(tuned),
                       "targets": textstats.distinct_n(targets)},
        "catchphrases": {"phrases": phrases, "base": textstats.catchphrase_rate(base, phrases),
                         "adapter": textstats.catchphrase_rate(tuned, phrases),
                         "targets": textstats.catchphrase_rate(targets, phrases)},
        "cliches": {"base": textstats.cliche_rate(base), "adapter": textstats.cliche_rate(tuned),
                    "targets": textstats.cliche_rate(targets),
                    "found": {"base": sorted({c for t in base for c in textstats.cliches(t)}),
                              "adapter": sorted({c for t in tuned for c in textstats.cliches(t)})}},
        "generation": params.to_dict(),
        "samples": [{"origin": ex.origin, "prompt": _last_user(ex), "target": ex.target, "base": b, "adapter": a}
                    for ex, b, a in zip(chosen, base, tuned, strict=True)],
        "training": training_losses(entry),
    }


def _tick(say: Callable[[str], None], what: str, done: int, total: int) -> None:
    """A progress line at the first pass, about every tenth, and the last."""
    step = max(1, total // 10)
    if done == total or done // step != (done - 1) // step or done == 1:
        say(f"{what}: {done}/{total} examples")


def write_report(vault: Vault, report: dict) -> tuple[Path, Path]:
    """`<vault>/runs/eval-<adapter>-<UTC stamp>/report.json` and `report.png`, both 0600."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = vault.runs_dir / f"eval-{report['adapter']['id']}-{stamp}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    ensure_private_dir(run_dir)
    json_path, png_path = run_dir / "report.json", run_dir / "report.png"
    report["files"] = {"json": str(json_path), "png": str(png_path)}
    atomic_write_json(json_path, report)
    atomic_write_bytes(png_path, plot_report(report))
    png_path.chmod(0o600)
    return json_path, png_path


def plot_report(report: dict) -> bytes:
    """PNG bytes: loss curves (when the run recorded them), perplexity bars, and the text statistics,
    base vs adapter, so a report reads at a glance."""
    from trainer.evaluation.figures import png_bytes, pyplot

    plt = pyplot()

    losses = report.get("training")
    panels = 3 if losses else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    axes = list(axes)
    if losses:
        ax = axes.pop(0)
        for key, label, style in (("train", "train loss", "-"), ("val", "validation loss", "o-")):
            if losses.get(key):
                ax.plot(*zip(*losses[key], strict=True), style, label=label)
        if losses.get("base_val") is not None:
            ax.axhline(losses["base_val"], ls="--", color="#55a868", label="base model")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (target tokens)")
        ax.set_title("training")
        ax.legend()
        ax.grid(alpha=0.3)
    px, tx = axes
    ppl = report["perplexity"]
    names = [k for k in ("base", "base_with_persona", "adapter") if ppl.get(k) is not None]
    bars = px.bar([n.replace("_", "\n") for n in names], [ppl[n] for n in names],
                  color=[COLORS[n] for n in names])
    px.bar_label(bars, fmt="%.2f")
    px.margins(y=0.15)
    px.set_title(f"perplexity ({'held-out' if report['heldout'] else 'not held-out'}, llama.cpp)")
    metrics = [("vocab\noverlap", report["vocab_overlap"]), ("distinct-2", report["distinct_2"]),
               ("catchphrases\n/sample", report["catchphrases"]), ("clichés\n/sample", report["cliches"])]
    xs = range(len(metrics))
    for offset, who in ((-0.2, "base"), (0.2, "adapter")):
        b = tx.bar([x + offset for x in xs], [m[who] for _, m in metrics], width=0.4, label=who, color=COLORS[who])
        tx.bar_label(b, fmt="%.2f", fontsize=8)
    ref = [(x, m["targets"]) for x, (_, m) in zip(xs, metrics, strict=True) if m.get("targets") is not None]
    if ref:
        tx.scatter(*zip(*ref, strict=True), marker="_", s=900, color="black", label="targets", zorder=3)
    tx.margins(y=0.3)
    tx.set_xticks(list(xs), [label for label, _ in metrics])
    tx.set_title(f"samples ({report['sample_count']}) vs targets")
    tx.legend(fontsize=8, ncols=3, loc="upper center")
    fig.suptitle(f"eval: {report['adapter']['id']} (scale {report['adapter']['scale']:g}) on "
                 f"{report['examples']} examples")
    fig.tight_layout()
    return png_bytes(fig)
