"""Persona adapters judged across personas: does each one fit its own persona better than the others, and
do its replies read like that persona?

1. Perplexity matrix (llama.cpp, target tokens only): rows are the base and each persona's adapter, columns
   each persona's held-out lines. A good adapter is lowest in its own column and lower on its own persona
   than on the others ("own vs others").
2. Attribution (trainer/evaluation/attribution.py): a classifier trained on the personas' training lines labels
   greedy replies each adapter writes to its persona's held-out prompts; accuracy and a confusion matrix,
   beside the classifier's accuracy on the held-out reference lines (its ceiling).

Writes `<vault>/runs/persona-eval-<time>/report.json`, `confusion.png` and `perplexity.png`. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from llm.errors import AdapterError
from llm.fingerprint import base_refusal
from llm.params import GenParams
from trainer.data.examples import Example
from trainer.evaluation import attribution
from trainer.evaluation.perplexity import score
from vault.fsio import atomic_write_bytes, atomic_write_json, ensure_private_dir
from vault.layout import Vault
from vault.manifest import ManifestStore

SAMPLE_PARAMS = GenParams(temperature=0.0, max_tokens=48, seed=0)


def _finite(x: float) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def perplexity_matrix(engine, adapters: dict[str, str], heldout: dict[str, list[Example]]) -> dict:
    """{"rows": ["base", *personas], "cols": personas, "matrix": {row: {col: ppl}}, "tokens": {col: n},
    "own": {persona: {own, base, gain_own, gain_others, lowest_in_column}}, "own_lowest": share}; the
    engine's stack is restored afterwards."""
    cols = list(heldout)
    before = engine.adapters
    matrix: dict[str, dict[str, float | None]] = {}
    tokens: dict[str, int] = {}
    try:
        for row, stack in [("base", []), *((p, [(a, 1.0)]) for p, a in adapters.items())]:
            engine.set_adapters(stack)
            matrix[row] = {}
            for col in cols:
                s = score(engine, heldout[col])
                matrix[row][col] = _finite(s.perplexity)
                tokens[col] = s.tokens
    finally:
        engine.set_adapters(before)
    own: dict[str, dict] = {}
    base = matrix["base"]
    for p in adapters:
        # Texts differ in how predictable they are, so compare each adapter's perplexity to the base's on
        # the same lines: "gain" < 1 means the adapter fits those lines better than the base does.
        gains = {c: v / base[c] for c, v in matrix[p].items() if v is not None and base.get(c)}
        others = [g for c, g in gains.items() if c != p]
        column = {r: matrix[r].get(p) for r in adapters if matrix[r].get(p) is not None}
        own[p] = {"own": matrix[p].get(p), "base": base.get(p), "gain_own": gains.get(p),
                  "gain_others": sum(others) / len(others) if others else None,
                  "lowest_in_column": bool(column) and min(column, key=column.get) == p}
    return {"rows": ["base", *adapters], "cols": cols, "matrix": matrix, "tokens": tokens, "own": own,
            "own_lowest": sum(1 for v in own.values() if v["lowest_in_column"]) / len(own) if own else None}


def generate_replies(engine, adapters: dict[str, str], heldout: dict[str, list[Example]], samples: int,
                     params: GenParams = SAMPLE_PARAMS) -> list[dict]:
    """Greedy replies under each persona's adapter to its first `samples` held-out prompts."""
    before = engine.adapters
    out = []
    try:
        for persona, adapter_id in adapters.items():
            engine.set_adapters([(adapter_id, 1.0)])
            for ex in heldout.get(persona, [])[:samples]:
                reply = engine.generate_text(ex.prompt_messages(), params).strip()
                prompt = next((m["content"] for m in reversed(ex.context) if m.get("role") == "user"), "")
                out.append({"persona": persona, "adapter": adapter_id, "prompt": prompt, "reference": ex.target,
                            "reply": reply})
    finally:
        engine.set_adapters(before)
    return out


def evaluate_personas(engine, vault: Vault, adapters: dict[str, str], heldout: dict[str, list[Example]],
                      train_lines: dict[str, list[str]], *, samples: int = 8,
                      params: GenParams = SAMPLE_PARAMS) -> dict:
    """The whole report (JSON-ready). `adapters`: persona id → adapter id; `heldout`: persona → examples
    never trained on; `train_lines`: persona → its training targets (the classifier's data)."""
    store = ManifestStore(vault).read()
    for persona, adapter_id in adapters.items():
        entry = store.adapter(adapter_id)
        why = base_refusal(entry.base, engine.info.fingerprint, engine.info.name)
        if why:
            raise AdapterError(f"adapter '{adapter_id}' ({persona}) was {why}")
        engine.load_adapter(adapter_id, vault.root / entry.file)
    ppl = perplexity_matrix(engine, adapters, heldout)
    replies = generate_replies(engine, adapters, heldout, samples, params)

    labels = sorted(train_lines)
    texts = [t for p in labels for t in train_lines[p]]
    model = attribution.train_classifier(texts, [p for p in labels for _ in train_lines[p]])
    refs = [(p, ex.target) for p in heldout for ex in heldout[p] if p in labels]
    reference = attribution.confusion([p for p, _ in refs], attribution.attribute(model, [t for _, t in refs]),
                                      labels)
    predicted = attribution.attribute(model, [r["reply"] for r in replies])
    for r, who in zip(replies, predicted, strict=True):
        r["attributed_to"] = who
    generated = attribution.confusion([r["persona"] for r in replies], predicted, labels) if replies else None
    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {"name": engine.info.name, "fingerprint": engine.info.fingerprint},
        "personas": list(heldout), "adapters": dict(adapters),
        "heldout_examples": {p: len(x) for p, x in heldout.items()},
        "perplexity": ppl,
        "attribution": {
            "classifier": {"kind": "tf-idf (char 2-5 + word 1-2) + logistic regression",
                           "train_lines": {p: len(train_lines[p]) for p in labels}},
            "reference": reference, "generated": generated, "chance": 1 / len(labels)},
        "generation": params.to_dict(),
        "samples": replies,
    }


def write_report(vault: Vault, report: dict) -> dict:
    """report.json, confusion.png and perplexity.png in a new `runs/persona-eval-<UTC stamp>/` (0700/0600)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir, n = vault.runs_dir / f"persona-eval-{stamp}", 1
    while run_dir.exists():
        n += 1
        run_dir = vault.runs_dir / f"persona-eval-{stamp}-{n}"
    ensure_private_dir(run_dir)
    files = {"json": run_dir / "report.json", "confusion": run_dir / "confusion.png",
             "perplexity": run_dir / "perplexity.png"}
    report["files"] = {k: str(v) for k, v in files.items()}
    att = report["attribution"]
    panels = [("held-out reference lines", att["reference"])]
    if att["generated"]:
        panels.insert(0, ("replies under each adapter", att["generated"]))
    atomic_write_bytes(files["confusion"], attribution.plot_confusions(panels, "who wrote it? (attribution)"))
    atomic_write_bytes(files["perplexity"], plot_perplexity(report["perplexity"]))
    atomic_write_json(files["json"], report)
    return report["files"]


def plot_perplexity(ppl: dict) -> bytes:
    """A heatmap: rows base + adapters, columns the personas' held-out lines; the lowest in each column
    (the best fit) outlined."""
    from trainer.evaluation.figures import png_bytes, pyplot

    plt = pyplot()
    import numpy as np

    rows, cols = ppl["rows"], ppl["cols"]
    values = np.array([[ppl["matrix"][r].get(c) or np.nan for c in cols] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 3, 0.7 * len(rows) + 2))
    # colour: each cell against the base on the same lines (green better, red worse), as texts differ
    ax.imshow(np.log(values / values[0:1, :]), cmap="RdYlGn_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r if r == "base" else f"{r} adapter" for r in rows], fontsize=8)
    for j in range(len(cols)):
        column = values[:, j]
        best = int(np.nanargmin(column)) if not np.all(np.isnan(column)) else None
        for i in range(len(rows)):
            text = "-" if np.isnan(values[i, j]) else f"{values[i, j]:.1f}"
            ax.text(j, i, text, ha="center", va="center", fontweight="bold" if i == best else None)
        if best is not None:
            ax.add_patch(plt.Rectangle((j - 0.5, best - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    ax.set_xlabel("held-out lines of")
    ax.set_title("held-out perplexity (llama.cpp; colour vs base, outlined: best in column)")
    fig.tight_layout()
    return png_bytes(fig)


def lines_by_persona(examples: Sequence[Example]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {}
    for ex in examples:
        if ex.persona:
            out.setdefault(ex.persona, []).append(ex)
    return out


def default_paths(folder: Path) -> tuple[Path, Path]:
    return folder / "train.jsonl", folder / "heldout.jsonl"
