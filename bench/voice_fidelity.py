"""Does a voice adapter sound like its speaker? Real speakers (bench/voice_texts.py), each trained with
Home's default recipe on its *earlier* words and judged on its later ones, as a user meets it (issue 16).

Per voice: its earliest `--examples` examples are written as a jsonl dataset (`Example.to_record`) and
trained by the real worker (`python -m trainer`, one run at a time, each under `--lock` when given, the
lock released between voices); a voice run's split is by time, so its validation split is its latest
`--val-fraction` examples. Scored with llama.cpp on the GGUF the user runs, in chat form (the context
as the user's message, the speaker's words as the reply):
- perplexity ratio (adapter / base) on the held-out split, by `home eval`'s code (`evaluate_adapter`,
  shared-prefix scoring), with its style markers (vocabulary overlap, distinct-2, catchphrases, clichés)
  on `--samples` greedy replies, and the replies that say "as an AI" (or any other assistant cliché);
- attribution: every held-out example scored alone under the base and every voice's adapter; the
  adapter with the lowest loss "wrote" it (`trainer.evaluation.attribution.confusion`);
- tokens trained (target tokens of the train split × epochs run), wall time and peak memory of each run.
Prints progress lines to stderr, one JSON line to stdout, and writes `<out>/voice_fidelity.png`.

    pip install -e '.[bench]'; apt-get install bible-kjv   # the texts (bench/voice_texts.py)
    .venv/bin/python bench/voice_fidelity.py --lock /tmp/home-heavy.lock --out /tmp/vf

Re-running with the same `--out` reuses each adapter already trained on the same data and settings.
Measured numbers, commands and the PNG: bench/voice/RESULTS.md.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from _common import model_path
from voice_texts import VOICES, voice_examples

from trainer.protocol.job import VOICE_WINDOW

DEFAULTS = {"examples": 96, "val_fraction": 0.25, "samples": 20}


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


@contextmanager
def held(lock: Path | None):
    """The shared heavy-work lock (flock) for one training, or nothing."""
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        say(f"waiting for {lock}")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def earliest(examples: list, n: int) -> list:
    """The first `n` examples in the order they were spoken (0: all): every voice gets the same budget
    and a later split still holds out its latest words."""
    return list(examples[:n]) if n > 0 else list(examples)


def write_dataset(examples: list, path: Path) -> list:
    """The examples as trl's prompt/completion jsonl, and the examples Home reads back from it (what
    the trainer sees, so their hash is the adapter's dataset hash)."""
    from trainer.data.sources import load_source

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(ex.to_record(), ensure_ascii=False) + "\n" for ex in examples))
    return load_source("jsonl", path).examples


def job_for(vault: Path, voice: str, dataset: Path, args, recipe: dict | None = None) -> object:
    """The `home train` job for one voice: Home's defaults unless `recipe` (Job fields) says otherwise."""
    from trainer.protocol.job import Job

    job = Job(vault=str(vault), source="jsonl", path=str(dataset), user=voice, name=f"{voice}-voice",
              kind="voice", val_fraction=args.val_fraction, device="cpu", seed=0, **(recipe or {}))
    if args.steps:
        job.steps = args.steps
    job.validate()
    return job


def trained(vault: Path, name: str, dataset_hash: str, job) -> object | None:
    """The newest adapter `name` already trained on this data with this recipe (its length and rank as the
    worker resolves them: the voice tier's where the job names none), or None."""
    from trainer.protocol.tiers import sized
    from vault.layout import Vault
    from vault.manifest import ManifestStore

    manifest = ManifestStore(Vault.open(vault)).read()
    for entry in reversed(manifest.versions(name)):
        t = entry.training or {}
        size = sized(job, ((entry.dataset or {}).get("counts") or {}).get("train", 0))
        if ((entry.dataset or {}).get("hash") == dataset_hash and t.get("lr") == job.learning_rate
                and t.get("schedule", "cosine") == job.schedule and t.get("neftune", 0.0) == job.neftune
                and t.get("modules", "all") == job.modules
                and entry.rank == size.rank and entry.alpha == (job.alpha or 2.0 * size.rank)
                and (asked_steps(entry) == job.steps if job.steps is not None
                     else trained_epochs(entry) == size.epochs)):
            return entry
    return None


def trained_epochs(entry) -> float | None:
    """The epochs a run trained for: recorded since the size tiers (trainer/protocol/tiers.py); before
    them, its job.json's, else 3, Home's default then; None when it was asked for steps or is unknown."""
    t = entry.training or {}
    if "epochs" in t:
        return t["epochs"]
    try:
        asked = json.loads((Path(t["run_dir"]) / "job.json").read_text())
    except (KeyError, TypeError, OSError, ValueError):
        return None
    return None if asked.get("steps") is not None else asked.get("epochs") or 3.0


def asked_steps(entry) -> int | None:
    """The steps the run was asked for (its run folder's job.json): one that stopped early records fewer."""
    t = entry.training or {}
    try:
        return json.loads((Path(t["run_dir"]) / "job.json").read_text())["steps"]
    except (KeyError, TypeError, OSError, ValueError):
        return t.get("steps")


def train(vault: Path, voice: str, dataset: Path, dataset_hash: str, args,
          recipe: dict | None = None) -> tuple[object, float | None]:
    """Train one voice with the real worker (or reuse it); (manifest entry, wall seconds or None)."""
    from home.worker import start_worker
    from vault.layout import Vault
    from vault.manifest import ManifestStore

    job = job_for(vault, voice, dataset, args, recipe)
    entry = trained(vault, job.name, dataset_hash, job)
    if entry is not None:
        say(f"{voice}: reusing {entry.id} (same data and recipe)")
        return entry, None
    with held(args.lock):
        say(f"{voice}: training")
        t0 = time.monotonic()
        log = (args.out / f"{voice}-worker.log").open("w")
        proc = start_worker(job, stderr=log)
        registered = None
        for line in proc.stdout:
            ev = json.loads(line)
            kind = ev.get("event")
            if kind == "step" and (ev["step"] % 5 == 0 or ev["step"] == ev["total"]):
                say(f"{voice}: step {ev['step']}/{ev['total']} loss {ev['loss']:.3f} eta {ev.get('eta_s')} s")
            elif kind == "eval" and "val_loss" in ev:
                say(f"{voice}: validation loss {ev['val_loss']:.3f} at step {ev.get('step')}")
            elif kind in ("phase", "error"):
                say(f"{voice}: {ev.get('name', kind)}: {ev.get('detail') or ev.get('message', '')}")
            elif kind == "registered":
                registered = ev["id"]
        code = proc.wait()
        wall = time.monotonic() - t0
    if code != 0 or registered is None:
        raise SystemExit(f"{voice}: the trainer exited {code}; see {args.out / f'{voice}-worker.log'}")
    return ManifestStore(Vault.open(vault)).read().adapter(registered), wall


def example_nll(engine, examples: list, stacks: dict[str, list]) -> dict[str, list[float]]:
    """Summed target NLL of each example alone (its own window), under each named stack."""
    from trainer.evaluation.perplexity import score

    out: dict[str, list[float]] = {}
    for row, stack in stacks.items():
        engine.set_adapters(stack)
        out[row] = [score(engine, [ex]).nll for ex in examples]
    engine.set_adapters([])
    return out


def attribution_matrix(nll: dict[str, dict[str, list[float]]], voices: list[str]) -> dict:
    """`nll[voice][row]`: per held-out example of `voice`, its NLL under stack `row` (the voices'
    adapters; any other row, such as the base, is ignored). Each example is attributed to the voice whose
    adapter finds it least surprising."""
    from trainer.evaluation.attribution import confusion

    true, predicted = [], []
    for voice in voices:
        rows = {v: nll[voice][v] for v in voices}
        for i in range(len(rows[voice])):
            true.append(voice)
            predicted.append(min(voices, key=lambda v: rows[v][i]))
    return confusion(true, predicted, voices)


def tokens_trained(engine, examples: list, entry) -> dict:
    """Target tokens of the train split (llama.cpp's tokenizer) and the epochs the run took over them."""
    counts = (entry.dataset or {}).get("counts") or {}
    n_train = counts.get("train") or 0
    per_epoch = sum(len(engine.tokenize(ex.target)) for ex in examples[:n_train])
    steps, batch = (entry.training or {}).get("steps"), (entry.training or {}).get("batch_size")
    epochs = steps * batch / n_train if steps and batch and n_train else None
    return {"train_examples": n_train, "target_tokens_per_epoch": per_epoch, "epochs": epochs,
            "target_tokens_trained": round(per_epoch * epochs) if epochs else None}


def voice_row(voice: str, report: dict, entry, tokens: dict, wall: float | None, att: dict) -> dict:
    ppl = report["perplexity"]
    samples = report["samples"]
    return {
        "voice": voice, "source": VOICES[voice].source, "adapter": entry.id,
        "heldout_examples": report["examples"], "scored_tokens": report["scored_tokens"],
        "perplexity": {"base": ppl["base"], "adapter": ppl["adapter"]},
        "ppl_ratio": ppl["adapter"] / ppl["base"] if ppl["base"] and ppl["adapter"] else None,
        "attribution": att["recall"].get(voice),
        "style": {k: report[k] for k in ("vocab_overlap", "distinct_2")}
        | {"catchphrases": {k: v for k, v in report["catchphrases"].items() if k != "phrases"},
           "cliches": {k: report["cliches"][k] for k in ("base", "adapter", "targets")}},
        "as_an_ai": {side: sum(1 for s in samples if "as an ai" in s[side].lower()) for side in ("base", "adapter")},
        "replies_with_cliches": {side: sum(1 for s in samples if textstats_cliches(s[side])) for side in ("base", "adapter")},
        "sample_count": report["sample_count"],
        "tokens": tokens,
        "wall_s": {"training_run": (entry.training or {}).get("duration_s"), "worker": round(wall, 1) if wall else None},
        "peak_memory_bytes": (entry.training or {}).get("peak_memory_bytes"),
        "steps": (entry.training or {}).get("steps"),
        "val_loss": {"base": (entry.training or {}).get("base_val_loss"), "best": (entry.training or {}).get("val_loss")},
    }


def textstats_cliches(text: str) -> list[str]:
    from trainer.data.textstats import cliches

    return cliches(text)


def summarize(rows: list[dict], att: dict, settings: dict) -> dict:
    """The one JSON line: per-voice rows, the median ratio, attribution, and the goal's verdicts."""
    ratios = [r["ppl_ratio"] for r in rows if r["ppl_ratio"] is not None]
    median = statistics.median(ratios) if ratios else None
    return {"bench": "voice_fidelity", "settings": settings, "voices": rows,
            "median_ppl_ratio": median, "attribution": att,
            "goal": {"median_ppl_ratio<=0.50": median is not None and median <= 0.50,
                     "attribution>=0.90": att["accuracy"] is not None and att["accuracy"] >= 0.90}}


def plot(summary: dict) -> bytes:
    """PNG: perplexity ratio per voice (the 0.5 goal dashed), and the attribution confusion matrix."""
    from trainer.evaluation.figures import png_bytes, pyplot

    plt = pyplot()

    rows, att = summary["voices"], summary["attribution"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars = ax.bar([r["voice"] for r in rows], [r["ppl_ratio"] or 0 for r in rows], color="#dd8452")
    ax.bar_label(bars, fmt="%.2f")
    ax.axhline(1.0, color="#55a868", ls="-", label="base")
    ax.axhline(0.5, color="black", ls="--", label="goal 0.50")
    ax.set_ylabel("held-out perplexity, adapter / base")
    med = summary["median_ppl_ratio"]
    ax.set_title(f"later words of each speaker (median {med:.2f})" if med is not None else "perplexity ratio")
    ax.legend(fontsize=8)
    labels, matrix = att["labels"], att["matrix"]
    peak = max(1, max(max(r) for r in matrix))
    bx.imshow(matrix, cmap="Blues", vmin=0, vmax=peak)
    bx.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    bx.set_yticks(range(len(labels)), labels)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            bx.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")
    acc = att["accuracy"]
    bx.set_title(f"attribution: lowest-loss adapter ({acc:.0%} of {att['n']})" if acc is not None else "attribution")
    bx.set_xlabel("adapter that fits best")
    bx.set_ylabel("held-out words of")
    fig.tight_layout()
    return png_bytes(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voices", default=",".join(VOICES), help=f"comma-separated (default {','.join(VOICES)})")
    p.add_argument("--examples", type=int, default=DEFAULTS["examples"],
                   help="each voice's earliest N examples (0: all; default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"],
                   help="the latest share held out (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="fixed steps (default: the recipe's, 3 epochs)")
    p.add_argument("--samples", type=int, default=DEFAULTS["samples"], help="greedy replies per voice")
    p.add_argument("--window", type=int, default=VOICE_WINDOW,
                   help="context turns per example (default %(default)s: a voice's, trainer/protocol/job.py)")
    p.add_argument("--lock", type=Path, default=None, help="flock this file around each training")
    p.add_argument("--out", type=Path, required=True, help="work folder: texts, vault, reports")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    unknown = [v for v in voices if v not in VOICES]
    if unknown or len(voices) < 2:
        p.error(f"--voices: need two or more of {', '.join(VOICES)}; got {', '.join(unknown) or args.voices}")
    args.out.mkdir(parents=True, exist_ok=True)
    vault = args.out / "vault"
    t_start = time.monotonic()

    from llm.engine import Engine
    from trainer.evaluation.evaluate import evaluate_adapter, validation_split
    from vault.layout import Vault
    from vault.manifest import ManifestStore

    data, entries, walls = {}, {}, {}
    for voice in voices:
        examples = earliest(voice_examples(VOICES[voice], args.out / "texts", args.window), args.examples)
        data[voice] = write_dataset(examples, args.out / "data" / f"{voice}.jsonl")
        say(f"{voice}: {len(data[voice])} examples ({VOICES[voice].source})")
    from trainer.data.examples import DatasetReport

    hashes = {v: DatasetReport(examples=list(ex)).dataset_hash() for v, ex in data.items()}
    for voice in voices:
        entries[voice], walls[voice] = train(vault, voice, args.out / "data" / f"{voice}.jsonl", hashes[voice], args)

    v = Vault.open(vault)
    heldout = {voice: validation_split(entries[voice], data[voice], hashes[voice]) for voice in voices}
    reports, nll = {}, {}
    with Engine(model_path(args.model), n_ctx=4096, n_threads=args.threads) as engine:
        ids = {voice: entries[voice].id for voice in voices}
        for voice in voices:
            engine.load_adapter(ids[voice], v.root / ManifestStore(v).read().adapter(ids[voice]).file)
        for voice in voices:
            say(f"{voice}: attribution, {len(heldout[voice])} held-out examples x {len(voices)} adapters")
            nll[voice] = example_nll(engine, heldout[voice], {o: [(ids[o], 1.0)] for o in voices})
        att = attribution_matrix(nll, voices)
        rows = []
        for voice in voices:
            reports[voice] = evaluate_adapter(engine, v, ids[voice], 1.0, heldout[voice], persona_system=None,
                                              samples=args.samples, dataset_hash=hashes[voice], source="jsonl",
                                              validation=True, progress=lambda line, who=voice: say(f"{who}: {line}"))
            rows.append(voice_row(voice, reports[voice], entries[voice],
                                  tokens_trained(engine, data[voice], entries[voice]), walls[voice], att))
    settings = {"examples": args.examples, "val_fraction": args.val_fraction, "steps": args.steps,
                "window": args.window, "samples": args.samples, "model": engine.info.name,
                "recipe": {k: (entries[voices[0]].training or {}).get(k) for k in ("lr", "batch_size")}
                | {"rank": entries[voices[0]].rank}, "device": "cpu",
                "wall_s": round(time.monotonic() - t_start, 1),
                "bench_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    summary = summarize(rows, att, settings)
    (args.out / "voice_fidelity.png").write_bytes(plot(summary))
    (args.out / "voice_fidelity.json").write_text(json.dumps(summary, indent=1))
    for r in rows:
        say(f"{r['voice']:>9}: ppl {r['perplexity']['base']:.2f} -> {r['perplexity']['adapter']:.2f} "
            f"(x{r['ppl_ratio']:.2f}), attribution {r['attribution']:.0%}, 'as an AI' {r['as_an_ai']}, "
            f"{r['steps']} steps, {r['wall_s']['training_run']} s, peak {r['peak_memory_bytes'] / 2**30:.1f} GiB")
    say(f"median ratio {summary['median_ppl_ratio']:.2f}, attribution {att['accuracy']:.0%}; "
        f"png {args.out / 'voice_fidelity.png'}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
