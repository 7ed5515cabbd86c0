"""`home eval`'s measuring, before and after shared-prefix scoring, on a 190-line two-speaker transcript.

The issue's case: 64 examples, 4 samples, a voice adapter; it took 20 minutes on 2 busy cores. Before:
every example scored in its own window with logits for every position, three passes (base, adapter,
base + persona prompt), examples picked one by one. After (`home eval`'s default now): runs of
consecutive examples read in one pass each (`trainer/evaluation/chains.py`), output rows only for the
targets, two passes (a voice adapter has no persona bar). Both generate the same 4 greedy samples per
side. Printed side by side from one run: wall seconds, CPU seconds (this process: what a quiet 2-core
machine would need, roughly halved with 2 threads), perplexities, peak memory.

    .venv/bin/python bench/eval_speed.py [--before-examples 64] [--samples 4]

`--before-examples N < 64` times the old path on the first N picked examples only and scales its time to
64 (printed as "scaled"): the old path takes most of an hour when the machine is shared.

Measured 2026-11-30 (`--before-examples 4 --threads 1`, load average 15-19 on the 2 cores): CPU s 634 →
258 (2.5×), wall 3252 (scaled) → 1146 s; 2,922 scored tokens; peak RSS 1.4 GiB. One thread's CPU seconds
are about a quiet core's wall time, so a quiet 2-core machine needs roughly 2-2.5 minutes after (5+ before).
The perplexities of the two columns are not comparable: other examples, and after, more context (this
fixture repeats sentences from a small pool, so long context predicts it unusually well); adapter/base
moved 1.016 → 1.011 for the random adapter.

Measured 2026-11-30 23:31 UTC on a quiet 2-core box (AMD EPYC Zen 4, AVX-512; nothing else running, load 1.9),
`--before-examples 4`: after **60 s wall** (103 CPU-s, 2,922 scored tokens, 4 samples a side), before 128 s
(scaled from 4 examples, 231 CPU-s): 2.2x, the issue's <= 2 min goal met on a quiet machine; peak RSS 1.37 GiB.
This box is faster than the AVX2 one the issue timed (its before here is 128 s, not 20 min beside a training).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, model_path, parser, random_adapter

FIXTURE = ROOT / "tests/fixtures/trainer/transcripts/two_speakers_190.txt"
PERSONA = "You are Sage, a calm and practical assistant who answers briefly."


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def old_score(engine, examples, system=None) -> tuple[float, int]:
    """The scoring as it was: each example alone, logits for every position."""
    import numpy as np

    from trainer.evaluation.perplexity import example_tokens, target_nll

    nll, n = 0.0, 0
    for ex in examples:
        tokens, start = example_tokens(engine, ex, system)
        logits = engine.logits(tokens[:-1], all_positions=True)
        targets = np.asarray(tokens[start:])
        nll += target_nll(logits[start - 1:], targets)
        n += len(targets)
    return nll, n


def samples(engine, examples, k: int, stack) -> None:
    from trainer.evaluation.evaluate import SAMPLE_PARAMS

    for label_stack in ([], stack):
        engine.set_adapters(label_stack)
        for ex in examples[:k]:
            engine.generate_text(ex.prompt_messages(), SAMPLE_PARAMS)
    engine.set_adapters([])


def main() -> int:
    import math

    from llm.engine import Engine
    from trainer.data.sources import load_source
    from trainer.evaluation.chains import MAX_GROUP
    from trainer.evaluation.evaluate import pick_examples
    from trainer.evaluation.perplexity import score

    p = parser(__doc__.splitlines()[0], iters=1)
    p.add_argument("--before-examples", type=int, default=64, help="examples the old path is timed on")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--speaker", default="Maya")
    args = p.parse_args()
    data = load_source("transcript", str(FIXTURE), speaker=args.speaker, window=10)
    lines = sum(1 for line in FIXTURE.read_text().splitlines() if line.strip())
    with tempfile.TemporaryDirectory() as tmp, Engine(model_path(args.model), n_ctx=args.n_ctx,
                                                        n_threads=args.threads) as engine:
        engine.load_adapter("voice", random_adapter(model_path(args.model), Path(tmp) / "voice.gguf", rank=16))
        stack = [("voice", 1.0)]
        print(f"{FIXTURE.name}: {lines} lines, {len(data.examples)} examples of {args.speaker}", flush=True)

        before_ex = pick_examples(data.examples, 64)[: args.before_examples]
        t, c = time.perf_counter(), cpu_s()
        engine.set_adapters([])
        b_nll, b_n = old_score(engine, before_ex)
        print(f"  before: base pass {time.perf_counter() - t:.0f} s", flush=True)
        engine.set_adapters(stack)
        a_nll, _ = old_score(engine, before_ex)
        engine.set_adapters([])
        old_score(engine, before_ex, PERSONA)
        scale = 64 / len(before_ex)
        old_wall, old_cpu = (time.perf_counter() - t) * scale, (cpu_s() - c) * scale
        t, c = time.perf_counter(), cpu_s()
        samples(engine, before_ex, args.samples, stack)
        old_wall += time.perf_counter() - t
        old_cpu += cpu_s() - c
        print(f"  before: done ({old_wall:.0f} s{' scaled' if scale != 1 else ''})", flush=True)

        after_ex = pick_examples(data.examples, 64, run=MAX_GROUP)
        t, c = time.perf_counter(), cpu_s()
        engine.set_adapters([])
        base = score(engine, after_ex, shared=True)
        engine.set_adapters(stack)
        tuned = score(engine, after_ex, shared=True)
        samples(engine, after_ex, args.samples, stack)
        new_wall, new_cpu = time.perf_counter() - t, cpu_s() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ppl = lambda nll, n: math.exp(nll / n)  # noqa: E731
    print(f"{'':<28}{'before':>12}{'after':>12}{'ratio':>8}")
    print(f"{'wall s (64 examples)':<28}{old_wall:>12.0f}{new_wall:>12.0f}{old_wall / new_wall:>8.1f}"
          + ("   (before scaled from " + str(len(before_ex)) + ")" if scale != 1 else ""))
    print(f"{'CPU s':<28}{old_cpu:>12.0f}{new_cpu:>12.0f}{old_cpu / new_cpu:>8.1f}")
    print(f"{'scored tokens':<28}{round(b_n * scale):>12}{base.tokens:>12}")
    print(f"{'perplexity base':<28}{ppl(b_nll, b_n):>12.2f}{base.perplexity:>12.2f}")
    print(f"{'perplexity adapter':<28}{ppl(a_nll, b_n):>12.2f}{tuned.perplexity:>12.2f}")
    print(f"adapter/base: before {ppl(a_nll, b_n) / ppl(b_nll, b_n):.3f}, after {tuned.perplexity / base.perplexity:.3f}"
          f"; peak RSS {peak:.0f} MiB; load average now {open('/proc/loadavg').read().split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
