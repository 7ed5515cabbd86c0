"""Which recipe makes a voice adapter sound most like its speaker, at a fixed budget? (issue 16)

The voices and data of `bench/voice_fidelity.py` (each voice's earliest `--examples`, its latest
`--val-fraction` held out by the time split), trained by the real worker at the same `--steps` for every
setting (same steps × batch over the same targets), one setting changed at a time from Home's defaults
for a voice (lr 1e-3 cosine since the sweep of 2026-11-30, rank 16 / alpha 32, window 4 since 2026-12-01, no
system line):

- `lr 2e-4` (the default before), `lr 2e-3`, `lr 1e-3`, `lr 5e-5`: the learning rate;
- `rank 64`, `rank 4` (alpha 2 × rank): capacity;
- `window 4`, `lr 1e-3 window 10`: context turns per example (the targets and their count unchanged; 4 is
  the voice default since 2026-12-01, so `window 4` now equals `default` unless `--window` says otherwise);
- `system line`: each example opens with "You are NAME." (the held-out examples too, for base and adapter);
- `constant`: the learning rate held after warmup instead of cosine to zero (`Job.schedule`);
- `neftune 5`: NEFTune noise (alpha 5) on the input embeddings while training (`Job.neftune`);
- `lr 1e-3 constant`, `lr 1e-3 neftune 5`, `lr 1e-3 rank 64`: the rate named with another change (the same
  as the one change alone since 1e-3 became the voice default; named so, they mean the same in every table).

Measured per voice: held-out perplexity, base and adapter, by Home's one held-out measure in llama.cpp
(`heldout_perplexity`: `home eval`'s and the retrain panel's), and their ratio; the table's last columns
are the median ratio over the voices and the
attribution accuracy among the setting's adapters (each held-out example alone, the adapter with the
lowest loss "wrote" it: with two voices, whether each adapter prefers its own speaker's later words). Each setting
trains in its own vault under `<out>/<setting>/` (no promotion gate between settings), each training
under `--lock`, released between runs; re-running reuses what is already trained. Prints progress to
stderr, the table, and one JSON line.

    .venv/bin/python bench/voice_sweep.py --lock /tmp/home-heavy.lock --out /tmp/vs [--settings a,b]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from _common import model_path
from voice_fidelity import DEFAULTS, attribution_matrix, earliest, example_nll, say, train, write_dataset
from voice_texts import VOICES, voice_examples

from trainer.protocol.job import VOICE_WINDOW

SETTINGS: dict[str, tuple[dict, dict]] = {  # name: (Job fields, data changes)
    "default": ({}, {}),
    "lr 1e-3": ({"lr": 1e-3}, {}),
    "lr 2e-4": ({"lr": 2e-4}, {}),
    "lr 2e-3": ({"lr": 2e-3}, {}),
    "lr 5e-5": ({"lr": 5e-5}, {}),
    "rank 64": ({"rank": 64}, {}),
    "rank 4": ({"rank": 4}, {}),
    "window 4": ({}, {"window": 4}),
    "system line": ({}, {"system": True}),
    "constant": ({"schedule": "constant"}, {}),
    "neftune 5": ({"neftune": 5.0}, {}),
    "lr 1e-3 constant": ({"lr": 1e-3, "schedule": "constant"}, {}),
    "lr 1e-3 neftune 5": ({"lr": 1e-3, "neftune": 5.0}, {}),
    "lr 1e-3 rank 64": ({"lr": 1e-3, "rank": 64}, {}),
    "lr 1e-3 attention": ({"lr": 1e-3, "modules": "attention"}, {}),
    "lr 1e-3 mlp": ({"lr": 1e-3, "modules": "mlp"}, {}),
    "lr 1e-3 window 10": ({"lr": 1e-3}, {"window": 10}),
}


def slug(name: str) -> str:
    return name.replace(" ", "-").replace(".", "")


def best_step(val_losses: list | None) -> int | None:
    """The step whose validation loss was lowest: the adapter the run kept (trainer/worker/train_progress.py)."""
    return min(val_losses, key=lambda sv: sv[1])[0] if val_losses else None


def with_system(examples: list, voice: str) -> list:
    """Each example with a system line naming its speaker, as a persona card would."""
    return [dataclasses.replace(ex, system=f"You are {voice.capitalize()}.") for ex in examples]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voices", default="hamlet,falstaff")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, of: " + ", ".join(SETTINGS))
    p.add_argument("--examples", type=int, default=DEFAULTS["examples"])
    p.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"])
    p.add_argument("--steps", type=int, default=27, help="fixed for every setting (default %(default)s: "
                   "the default recipe's 3 epochs over 72 training examples at batch 8)")
    p.add_argument("--window", type=int, default=VOICE_WINDOW,
                   help="context turns per example (default %(default)s: a voice's, trainer/protocol/job.py)")
    p.add_argument("--lock", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None)
    args = p.parse_args(argv)
    voices = [v for v in args.voices.split(",") if v]
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    bad = [v for v in voices if v not in VOICES] + [s for s in names if s not in SETTINGS]
    if bad:
        p.error(f"unknown voice or setting: {', '.join(bad)}")

    from llm.engine import Engine
    from trainer.data.examples import DatasetReport
    from trainer.evaluation.evaluate import validation_split
    from trainer.evaluation.perplexity import heldout_perplexity
    from vault.layout import Vault

    t0 = time.monotonic()
    results: dict[str, dict] = {}
    for name in names:
        recipe, change = SETTINGS[name]
        out = args.out / slug(name)
        out.mkdir(parents=True, exist_ok=True)
        run_args = argparse.Namespace(**vars(args))
        run_args.out = out
        results[name], entries, held = {}, {}, {}
        for voice in voices:
            examples = earliest(voice_examples(VOICES[voice], args.out / "texts", change.get("window", args.window)),
                                args.examples)
            if change.get("system"):
                examples = with_system(examples, voice)
            dataset = out / "data" / f"{voice}.jsonl"
            data = write_dataset(examples, dataset)
            digest = DatasetReport(examples=list(data)).dataset_hash()
            entries[voice], _ = train(out / "vault", voice, dataset, digest, run_args, recipe)
            held[voice] = validation_split(entries[voice], data, digest)
        v = Vault.open(out / "vault")
        with Engine(model_path(args.model), n_ctx=4096) as engine:
            for voice in voices:
                engine.load_adapter(entries[voice].id, v.root / entries[voice].file)
            nll = {}
            for voice in voices:
                say(f"{name} / {voice}: scoring {len(held[voice])} held-out examples")
                ppl = heldout_perplexity(engine, held[voice], entries[voice].id)
                t = entries[voice].training or {}
                results[name][voice] = {"base": ppl["base"], "adapter": ppl["adapter"],
                                        "ratio": ppl["adapter"] / ppl["base"], "steps": t.get("steps"),
                                        "val_loss": t.get("val_loss"), "base_val_loss": t.get("base_val_loss"),
                                        "duration_s": t.get("duration_s"),
                                        "peak_memory_bytes": t.get("peak_memory_bytes"),
                                        "best_step": best_step(t.get("val_losses"))}
                say(f"{name} / {voice}: ppl {ppl['base']:.2f} -> {ppl['adapter']:.2f} "
                    f"(x{ppl['adapter'] / ppl['base']:.3f})")
                nll[voice] = example_nll(engine, held[voice], {o: [(entries[o].id, 1.0)] for o in voices})
        att = attribution_matrix(nll, voices)
        results[name]["median_ratio"] = statistics.median(results[name][v]["ratio"] for v in voices)
        results[name]["attribution"] = att["accuracy"]
        results[name]["confusion"] = att

    print(f"{'setting':<18}" + "".join(f"{v:>12}" for v in voices) + f"{'median':>10}{'attrib.':>9}",
          file=sys.stderr)
    for name in names:
        row = results[name]
        print(f"{name:<18}" + "".join(f"{row[v]['ratio']:>12.3f}" for v in voices)
              + f"{row['median_ratio']:>10.3f}{row['attribution']:>9.0%}", file=sys.stderr)
    print(f"{'setting':<18}{'voice':>10}{'val loss base -> best':>24}{'best/run steps':>16}{'train min':>11}"
          f"{'peak GiB':>10}", file=sys.stderr)
    for name in names:
        for v in voices:
            r = results[name][v]
            val = (f"{r['base_val_loss']:.3f} -> {r['val_loss']:.3f}" if r["val_loss"] is not None
                   and r["base_val_loss"] is not None else "?")
            minutes = f"{r['duration_s'] / 60:.1f}" if r["duration_s"] else "?"
            peak = f"{r['peak_memory_bytes'] / 2**30:.2f}" if r["peak_memory_bytes"] else "?"
            steps = f"{r['best_step']}/{r['steps']}"
            print(f"{name:<18}{v:>10}{val:>24}{steps:>16}{minutes:>11}{peak:>10}", file=sys.stderr)
    print(json.dumps({"bench": "voice_sweep", "voices": voices, "steps": args.steps, "examples": args.examples,
                      "val_fraction": args.val_fraction, "results": results,
                      "wall_s": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
