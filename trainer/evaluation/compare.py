"""Two bases × (base, tuned): the four-way comparison of `home eval --compare` in one report and one PNG.

The essay-voice question is whether the same data teaches an instruct model or a base (pre-RLHF) model
the voice better. Each side is an ordinary `evaluate_adapter` report on the same held-out examples; this
module lays the two side by side. Why bits per byte beside perplexity: perplexity is per token, and two
models with different tokenizers cut the same words into different numbers of tokens, so only the
per-byte cost of the same target text compares across bases (within one base the two agree in order).
Torch-free; matplotlib only to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from trainer.data.examples import Example
from vault.fsio import atomic_write_bytes, atomic_write_json, ensure_private_dir
from vault.layout import Vault

METRICS = (("vocab overlap", "vocab_overlap"), ("distinct-2", "distinct_2"),
           ("catchphrases / sample", "catchphrases"), ("clichés / sample", "cliches"))
COLORS = ("#55a868", "#dd8452", "#4c72b0", "#c44e52")


def target_bytes(examples: Sequence[Example]) -> int:
    """UTF-8 bytes of the scored targets (the end-of-turn token each also scores has none)."""
    return sum(len(ex.target.encode("utf-8")) for ex in examples)


def bits_per_byte(loss: float | None, tokens: int, n_bytes: int) -> float | None:
    """Mean nats per target token × tokens → bits per target byte; None when unmeasured."""
    if loss is None or not tokens or not n_bytes or not math.isfinite(loss):
        return None
    return loss * tokens / (n_bytes * math.log(2))


def four_way(reports: Sequence[dict], n_bytes: int, sources: Sequence[str]) -> dict:
    """One report from two `evaluate_adapter` reports on the same examples (first: the model Home runs).
    `sources[i]`: how side i's adapter came ("trained" now, or "registered": taken as it was)."""
    a, b = reports
    if a["examples"] != b["examples"]:
        raise ValueError(f"the two sides scored {a['examples']} and {b['examples']} examples: not comparable")
    columns, values = [], {key: {} for _, key in METRICS}
    ppl, bpb = {}, {}
    for side, (rep, how) in enumerate(zip(reports, sources, strict=True), 1):
        for who in ("base", "adapter"):
            col = f"base{side}" + ("+adapter" if who == "adapter" else "")
            columns.append({"key": col, "model": rep["model"]["name"], "fingerprint": rep["model"]["fingerprint"],
                            "adapter": rep["adapter"]["id"] if who == "adapter" else None,
                            "adapter_source": how if who == "adapter" else None})
            ppl[col] = rep["perplexity"][who]
            bpb[col] = bits_per_byte(rep["loss"][who], rep["scored_tokens"], n_bytes)
            for _, key in METRICS:
                values[key][col] = rep[key][who]
    for _, key in METRICS:  # the targets' own rate: the same text on both sides
        if a[key].get("targets") is not None:
            values[key]["targets"] = a[key]["targets"]
    samples = [{"origin": sa["origin"], "prompt": sa["prompt"], "target": sa["target"],
                "outputs": {"base1": sa["base"], "base1+adapter": sa["adapter"],
                            "base2": sb["base"], "base2+adapter": sb["adapter"]}}
               for sa, sb in zip(a["samples"], b["samples"], strict=True)]
    return {
        "kind": "compare",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "columns": columns,
        "examples": a["examples"],
        "heldout": a["heldout"] and b["heldout"],
        "heldout_note": a["heldout_note"],
        "target_bytes": n_bytes,
        "scored_tokens": {"base1": a["scored_tokens"], "base2": b["scored_tokens"]},
        "perplexity": ppl,
        "bits_per_byte": bpb,
        **values,
        "catchphrase_list": a["catchphrases"]["phrases"],
        "samples": samples,
        "generation": a["generation"],
        "sides": list(reports),
    }


def write_compare(vault: Vault, report: dict) -> tuple[Path, Path]:
    """`<vault>/runs/compare-<UTC stamp>/report.json` and `report.png`, both 0600."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir, n = vault.runs_dir / f"compare-{stamp}", 1
    while run_dir.exists():
        n += 1
        run_dir = vault.runs_dir / f"compare-{stamp}-{n}"
    ensure_private_dir(run_dir)
    json_path, png_path = run_dir / "report.json", run_dir / "report.png"
    report["files"] = {"json": str(json_path), "png": str(png_path)}
    atomic_write_json(json_path, report)
    atomic_write_bytes(png_path, plot_compare(report))
    png_path.chmod(0o600)
    return json_path, png_path


def column_labels(report: dict, width: int = 18) -> list[str]:
    """Short labels: the model's name, "+ adapter" for the tuned columns."""
    out = []
    for col in report["columns"]:
        name = col["model"] or col["key"]
        name = name if len(name) <= width else name[: width - 1] + "…"
        out.append(f"{name} + adapter" if col["adapter"] else name)
    return out


def plot_compare(report: dict) -> bytes:
    """PNG bytes: held-out perplexity and bits per byte per column, then the text statistics grouped."""
    from trainer.evaluation.figures import png_bytes, pyplot

    plt = pyplot()

    keys = [c["key"] for c in report["columns"]]
    labels = [lab.replace(" + ", "\n+ ") for lab in column_labels(report, 14)]
    fig, (px, bx, tx) = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1, 1, 2]})
    for ax, key, title in ((px, "perplexity", "perplexity (per token)"), (bx, "bits_per_byte", "bits per byte")):
        vals = [report[key][k] if report[key][k] is not None else 0.0 for k in keys]
        bars = ax.bar(range(len(keys)), vals, color=COLORS)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.set_xticks(range(len(keys)), labels, fontsize=7)
        ax.margins(y=0.15)
        ax.set_title(f"{title}, {'held-out' if report['heldout'] else 'NOT held-out'}")
    width = 0.8 / len(keys)
    for i, (k, lab) in enumerate(zip(keys, column_labels(report), strict=True)):
        xs = [m + (i - (len(keys) - 1) / 2) * width for m in range(len(METRICS))]
        bars = tx.bar(xs, [report[key][k] or 0.0 for _, key in METRICS], width=width, label=lab, color=COLORS[i])
        tx.bar_label(bars, fmt="%.2f", fontsize=6)
    ref = [(m, report[key]["targets"]) for m, (_, key) in enumerate(METRICS) if report[key].get("targets") is not None]
    if ref:
        tx.scatter(*zip(*ref, strict=True), marker="_", s=1400, color="black", label="targets", zorder=3)
    tx.set_xticks(range(len(METRICS)), [label for label, _ in METRICS], fontsize=8)
    tx.margins(y=0.3)
    tx.set_title(f"greedy samples ({len(report['samples'])}) vs targets")
    tx.legend(fontsize=7, ncols=3, loc="upper center")
    fig.suptitle(f"two bases × (base, adapter) on {report['examples']} examples")
    fig.tight_layout()
    return png_bytes(fig)
