"""A two-part question's searches, one by one vs together (`MemoryStore.search_many`, issue 13).

home/recall.py searches a two-part question three times: the whole and each part. One by one, each search
scans the vector file's sign codes (160k rows at the 100k-turn bench vault); together, each word of the
codes is read once for all three (`SignCodes.candidates_many`), the user mask and the id lookup are made
once, and each part's candidates are scored as a lone search scores them: the same hits, checked here.
CPU time of the searching thread per question, the two ways alternated on the same vault and questions.

    .venv/bin/python bench/memory_parts.py --keep /tmp/v100k   # a vault bench/turn_overhead.py --keep built

Measured on the 100k-item / 10k-session bench vault (101k items, 160k vector rows; 40 questions of three
queries; the box loaded by a training, so CPU time only), two runs: one by one p50 / p95 28.1 / 35.4 and
26.3 / 31.4 ms, together 24.1 / 31.0 and 21.3 / 26.6 ms (0.81-0.86x); the same hits for 40 of 40 both times.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import _common as c
import memory_vaults as ms


def main() -> int:
    p = c.parser(__doc__.splitlines()[0], iters=40)
    p.add_argument("--keep", type=Path, required=True, help="a bench vault (bench/turn_overhead.py --keep DIR)")
    p.add_argument("--reps", type=int, default=3, help="passes over the questions; the first warms up (default 3)")
    args = p.parse_args()
    from vault.embedder import load_embedder
    from vault.layout import Vault
    from vault.memory import MemoryStore
    from vault.query_plan import plan

    embedder = load_embedder()
    rng = random.Random(5)
    questions = [f"What did {rng.choice(ms.SUBJECTS)} say about {rng.choice(ms.OBJECTS)}, and what did "
                 f"{rng.choice(ms.SUBJECTS)} think of {rng.choice(ms.OBJECTS)}?" for _ in range(args.iters)]
    plans = [plan(q) for q in questions]
    vectors = [embedder.embed(qp.queries) for qp in plans]
    one, many, same = [], [], 0
    with MemoryStore.open(Vault.open(args.keep), embedder) as store:
        store.warm()
        items = store.count()
        for rep in range(args.reps):
            for i, (qp, vs) in enumerate(zip(plans, vectors, strict=True)):
                for together in ((False, True) if i % 2 else (True, False)):
                    t = time.thread_time()
                    if together:
                        b = store.search_many(qp.queries, vs, k=9, user="me", fill=0.2)
                    else:
                        a = [store.search(q, k=9, user="me", vector=v, fill=0.2)
                             for q, v in zip(qp.queries, vs, strict=True)]
                    if rep:
                        (many if together else one).append(time.thread_time() - t)
                if rep == args.reps - 1:
                    same += [[h.id for h in x] for x in a] == [[h.id for h in x] for x in b]
    parts = sorted({len(qp.queries) for qp in plans})
    print(f"{len(plans)} questions of {parts} queries, {items} items; CPU ms per question")
    print(f"{'':<12} {'p50':>7} {'p95':>7}")
    for name, xs in (("one by one", one), ("together", many)):
        print(f"{name:<12} {c.pct(xs, 50) * 1e3:>7.2f} {c.pct(xs, 95) * 1e3:>7.2f}")
    print(f"together / one by one at p50: {c.pct(many, 50) / c.pct(one, 50):.2f}; the same hits for "
          f"{same} of {len(plans)} questions")
    return 0 if same == len(plans) else 1


if __name__ == "__main__":
    raise SystemExit(main())
