"""How far more of a speaker's own words take the perplexity ratio (issue 16's "what it takes to get to
0.50"): one learning curve per voice on one fixed held-out set.

Per voice: the latest `--val-fraction` of all its examples is the held-out set, the same for every
point; each point trains Home's default recipe (its size tier: trainer/protocol/tiers.py) on the latest
N examples before it (`--sizes`, 0: all of them), with the real worker, one run at a time under
`--lock`. Scored with Home's held-out measure (`heldout_perplexity`: each reply read after the
conversation before it, base vs adapter, llama.cpp on the GGUF the user runs). The log-ratio is fitted
against ln(N) per voice, and the N at which the fit reaches 0.50 is printed: an extrapolation, labelled
so. One JSON line, a table on stderr and `<out>/voice_curve.png`.

    .venv/bin/python bench/voice_curve.py --lock /tmp/home-heavy.lock --out /tmp/vf4 \\
        --voices hamlet,falstaff --sizes 64,128,0 --val-fraction 0.1 --window 4

With the `--out` of a bench/voice_fidelity.py run at the same `--val-fraction` and `--window`, the
all-data point reuses its adapters. Measured numbers: bench/voice/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from _common import model_path
from voice_fidelity import say, train, write_dataset
from voice_texts import VOICES, voice_examples

GOAL = 0.50


def fit(points: list[tuple[int, float]]) -> dict:
    """Least squares of ln(ratio) on ln(N): the slope per e-fold of data, and the N where the line meets
    GOAL (None when it never falls)."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(r) for _, r in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    at = my - slope * mx
    reach = math.exp((math.log(GOAL) - at) / slope) if slope < 0 else None
    return {"slope_per_efold": slope, "intercept": at, "examples_for_goal": reach}


def plot(curves: dict) -> bytes:
    from trainer.evaluation.figures import png_bytes, pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for voice, c in curves.items():
        ns = [p["trained"] for p in c["points"]]
        line = ax.plot(ns, [p["ratio"] for p in c["points"]], "o-", label=voice)[0]
        f = c["fit"]
        far = f["examples_for_goal"] or max(ns) * 10
        xs = [min(ns), max(max(ns) * 10, min(far, max(ns) * 1000))]
        ax.plot(xs, [math.exp(f["intercept"] + f["slope_per_efold"] * math.log(x)) for x in xs], ":",
                color=line.get_color())
    ax.axhline(GOAL, color="black", ls="--", label=f"goal {GOAL:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("examples of the speaker trained on (log)")
    ax.set_ylabel("held-out perplexity, adapter / base")
    ax.set_title("one held-out set per voice; dotted: the fit, extrapolated")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voices", default="hamlet,falstaff")
    p.add_argument("--sizes", default="64,128,0", help="examples trained per point, comma-separated (0: all)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="the latest share of all examples held out")
    p.add_argument("--window", type=int, default=4, help="context turns per example (default %(default)s)")
    p.add_argument("--lock", type=Path, default=None, help="flock this file around each training")
    p.add_argument("--out", type=Path, required=True, help="work folder: texts, vault, reports")
    p.add_argument("--model", type=Path, default=None)
    args = p.parse_args(argv)
    voices = [v for v in args.voices.split(",") if v]
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes: expected whole numbers, got {args.sizes!r}")
    if [v for v in voices if v not in VOICES] or not voices:
        p.error(f"--voices: expected some of {', '.join(VOICES)}, got {args.voices!r}")
    if not sizes or any(n < 0 for n in sizes):
        p.error(f"--sizes: expected whole numbers >= 0, got {args.sizes!r}")
    args.steps = None  # each point trains its size tier's length

    from llm.engine import Engine
    from trainer.data.examples import DatasetReport
    from trainer.evaluation.evaluate import validation_split
    from trainer.evaluation.perplexity import heldout_perplexity
    from trainer.worker.dataset import split_examples
    from vault.layout import Vault

    t0 = time.monotonic()
    heldout: dict[str, list] = {}
    plan: list[tuple[str, int, list, bool]] = []  # (voice, examples trained, the examples written, all?)
    for voice in voices:  # every size checked before anything trains
        every = voice_examples(VOICES[voice], args.out / "texts", args.window)
        _, held = split_examples(every, args.val_fraction, by_time=True)
        n_val, before = len(held), len(every) - len(held)
        heldout[voice] = held
        for size in sizes:
            n = before if size == 0 else min(size, before)
            if n_val > (n + n_val) // 3:
                p.error(f"--sizes: {size} examples for {voice} is too few to hold out its latest {n_val} "
                        f"(the split keeps two thirds for training): use at least {2 * n_val}")
            plan.append((voice, n, every[before - n:], n == before))
    runs: dict[str, list[dict]] = {voice: [] for voice in voices}
    for voice, n, subset, everything in plan:
        n_val = len(heldout[voice])
        run_args = argparse.Namespace(**vars(args))
        # all the data keeps the asked share (so a voice_fidelity run's adapter is reused); fewer
        # examples hold out exactly the same latest n_val
        run_args.val_fraction = args.val_fraction if everything else (n_val - 0.5) / len(subset)
        dataset = args.out / "curve" / f"{voice}-{n}.jsonl"
        data = write_dataset(subset, dataset)
        digest = DatasetReport(examples=list(data)).dataset_hash()
        entry, wall = train(args.out / "vault", voice, dataset, digest, run_args)
        mine = validation_split(entry, data, digest)
        if [ex.key() for ex in mine or []] != [ex.key() for ex in heldout[voice]]:
            raise SystemExit(f"{voice}, {n} examples: the run held out other examples than the curve's "
                             f"latest {n_val}; see {entry.id}")
        runs[voice].append({"trained": n, "entry": entry, "wall": wall})

    v = Vault.open(args.out / "vault")
    curves = {}
    with Engine(model_path(args.model), n_ctx=4096) as engine:
        for voice in voices:
            held = heldout[voice]
            points = []
            for run in runs[voice]:
                entry = run["entry"]
                engine.load_adapter(entry.id, v.root / entry.file)
                say(f"{voice} / {run['trained']}: scoring {len(held)} held-out examples")
                ppl = heldout_perplexity(engine, held, entry.id)
                engine.unload_adapter(entry.id)
                t = entry.training or {}
                points.append({"trained": run["trained"], "ratio": ppl["adapter"] / ppl["base"], "base": ppl["base"],
                               "adapter": ppl["adapter"], "steps": t.get("steps"), "epochs": t.get("epochs"),
                               "tier": t.get("tier"), "duration_s": t.get("duration_s"),
                               "peak_memory_bytes": t.get("peak_memory_bytes"), "adapter_id": entry.id})
                say(f"{voice} / {run['trained']}: ppl {ppl['base']:.2f} -> {ppl['adapter']:.2f} "
                    f"(x{points[-1]['ratio']:.3f})")
            points.sort(key=lambda q: q["trained"])
            curves[voice] = {"heldout": len(held), "points": points,
                             "fit": fit([(q["trained"], q["ratio"]) for q in points]) if len(points) > 1 else None}

    print(f"{'voice':<10}{'trained':>8}{'tier':>8}{'steps':>6}{'ratio':>8}{'train min':>10}{'peak GiB':>9}",
          file=sys.stderr)
    for voice, c in curves.items():
        for q in c["points"]:
            minutes = f"{q['duration_s'] / 60:.1f}" if q["duration_s"] else "?"
            peak = f"{q['peak_memory_bytes'] / 2**30:.2f}" if q["peak_memory_bytes"] else "?"
            print(f"{voice:<10}{q['trained']:>8}{q['tier'] or '?':>8}{q['steps'] or '?':>6}{q['ratio']:>8.3f}"
                  f"{minutes:>10}{peak:>9}", file=sys.stderr)
        f = c["fit"]
        if f:
            reach = f"{f['examples_for_goal']:,.0f}" if f["examples_for_goal"] else "never (not falling)"
            print(f"{voice:<10} fit: {f['slope_per_efold']:+.3f} nats of ratio per e-fold of data; "
                  f"{GOAL:.2f} at ~{reach} examples (extrapolated)", file=sys.stderr)
    if all(c["fit"] for c in curves.values()):
        (args.out / "voice_curve.png").write_bytes(plot(curves))
    print(json.dumps({"bench": "voice_curve", "val_fraction": args.val_fraction, "window": args.window,
                      "curves": curves, "wall_s": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
