"""Memory at scale: ingest rate and search latency at 1k and 10k logged turns (100k with --big).

Why these numbers: search runs on every turn that needs memory, before the first token, so its p95 adds
straight to time-to-first-token; ingest runs in the background after each turn, and once over the whole
vault on `home memory reindex --rebuild`. The eight facts of tests/test_vault_memory.py are planted in the
first session and asked about at the end, so the table also says whether recall@3 holds as the haystack
grows. Synthetic turns are templated sentences (user) and 2–3 sentence replies (assistant), spread over two
years. Everything runs in one process with the real embedder, ChromaDB and FTS5, on temp vaults; the first
search (which loads the exact vector matrix from ChromaDB) is timed on its own.

Goals (printed as PASS/FAIL): search p95 <= 25 ms at 100k (issue 5), recall@3 of the planted facts >= 0.85.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common as c

SUBJECTS = ["my brother", "my boss", "our neighbour", "the team", "my friend Lea", "the landlord", "my cousin",
            "the kids", "my manager", "our book club", "the plumber", "my mum", "the new intern", "my partner"]
VERBS = ["wants to talk about", "keeps forgetting", "asked me about", "is worried about", "suggested",
         "cancelled", "finally finished", "complained about", "booked", "is excited about", "postponed"]
OBJECTS = ["the quarterly report", "the trip to the coast", "a new laptop", "the garden fence", "the wedding",
           "our budget spreadsheet", "the dentist appointment", "a pottery class", "the car insurance",
           "the birthday party", "the kitchen renovation", "a marathon", "the tax return", "a job interview",
           "the concert tickets", "the broken heater", "a vegetable patch", "the school play", "a podcast"]
WHEN = ["today", "yesterday", "this weekend", "next week", "last month", "tomorrow morning", "in June", "again"]
ASKS = ["How should I handle it?", "Any ideas?", "What would you do?", "Can you help me plan it?", "Thoughts?"]
REPLIES = ["That sounds like a lot to juggle.", "A short list of next steps usually helps.",
           "It might be worth setting a reminder for it.", "Talking it through early avoids surprises.",
           "Break it into two or three small tasks and start with the easiest one.",
           "If it keeps slipping, block a fixed time in your calendar.", "Ask what matters most to them first."]


def synthetic_turns(n: int, rng: random.Random) -> list[tuple[str, str]]:
    out = []
    while len(out) < n:
        s, v, o, w = (rng.choice(x) for x in (SUBJECTS, VERBS, OBJECTS, WHEN))
        out.append(("user", f"{s.capitalize()} {v} {o} {w}. {rng.choice(ASKS)}"))
        out.append(("assistant", f"About {o}: {rng.choice(REPLIES)} {rng.choice(REPLIES)}"))
    return out[:n]


def build_vault(root: Path, n: int, seed: int = 0) -> tuple[object, dict[str, str]]:
    """A vault with `n` turns in sessions of 100; the planted facts open the first session."""
    from tests.test_vault_memory import FACTS
    from vault.layout import Vault
    from vault.logs import ConversationLog

    vault = Vault.open(root)
    rng = random.Random(seed)
    turns = [t for fact, reply, _ in FACTS for t in (("user", fact), ("assistant", reply))]
    turns += synthetic_turns(n - len(turns), rng)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    expected, log = {}, None
    for i, (role, text) in enumerate(turns):
        if i % 100 == 0:
            log = ConversationLog.create(vault, f"bench-{i // 100:05d}")
        when = start + timedelta(minutes=i * 730 * 24 * 60 / n)
        rec = log.append({"role": role, "text": text, "user": "me", "persona": "sage",
                          "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z")})
        for fact, _, query in FACTS:
            if text == fact:
                expected[query] = rec["id"]
    return vault, expected


def planted(vault) -> dict[str, str]:
    """query → the id of the turn that states its fact (the facts open the first session)."""
    from tests.test_vault_memory import FACTS
    from vault.logs import read_log

    ids = {r["text"]: r["id"] for r in read_log(vault.logs_dir / "bench-00000.jsonl").records}
    return {query: ids[fact] for fact, _, query in FACTS}


def run_size(n: int, embedder, queries: int, batch: int, keep: Path | None = None) -> dict:
    from vault.blas import all_blas_threads
    from vault.layout import Vault
    from vault.memory import MemoryStore, index_logs

    with tempfile.TemporaryDirectory() as tmp:
        root = keep if keep is not None else Path(tmp) / "v"
        reuse = (root / "memory" / "index.json").exists()
        vault = Vault.open(root) if reuse else build_vault(root, n)[0]
        expected = planted(vault)
        with MemoryStore.open(vault, embedder) as store:
            t0 = time.perf_counter()
            with all_blas_threads():  # foreground bulk embedding, as `home memory reindex` does
                report = index_logs(vault, store, batch_size=batch)
            ingest_s = time.perf_counter() - t0
            n = store.count()
            rng = random.Random(1)
            probes = list(expected) + [f"what did {rng.choice(SUBJECTS)} say about {rng.choice(OBJECTS)}?"
                                       for _ in range(max(0, queries - len(expected)))]
            t = time.perf_counter()
            store.search(probes[0], k=5)  # the first query loads the vector matrix from ChromaDB
            first_ms = (time.perf_counter() - t) * 1e3
            times, given = [], []
            for q in probes:
                t = time.perf_counter()
                store.search(q, k=5)
                times.append(time.perf_counter() - t)
                vec = embedder.embed([q])[0]  # the turn path embeds once for the router and memory
                t = time.perf_counter()
                store.search(q, k=5, vector=vec)
                given.append(time.perf_counter() - t)
            recall = sum(expected[q] in [h.id for h in store.search(q, k=3)] for q in expected) / len(expected)
            size = store.stats()["bytes"]
    rate = report.indexed / ingest_s if report.indexed else float("nan")
    return {"n": n, "ingest_s": ingest_s if report.indexed else float("nan"), "rate": rate,
            "p50": c.pct(times, 50) * 1e3, "p95": c.pct(times, 95) * 1e3, "vp50": c.pct(given, 50) * 1e3,
            "vp95": c.pct(given, 95) * 1e3, "first": first_ms, "recall": recall, "mb": size / 1e6}


def embed_rate(embedder, n: int = 512) -> float:
    texts = [t for _, t in synthetic_turns(n, random.Random(2))]
    t = time.perf_counter()
    embedder.embed(texts)
    return n / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="turns per run (default 1k 10k)")
    p.add_argument("--big", action="store_true", help="also 100k turns (slow: minutes of embedding on 2 cores)")
    p.add_argument("--queries", type=int, default=100, help="search calls timed per size (default 100)")
    p.add_argument("--batch", type=int, default=256, help="turns per indexing batch (default 256)")
    p.add_argument("--keep", type=Path, default=None,
                   help="one size only: build its vault here once, reuse it later (100k embeds for ~15 min)")
    args = p.parse_args()
    from vault.embedder import load_embedder

    t = time.perf_counter()
    embedder = load_embedder()
    print(f"embedder {embedder.name} ({embedder.dim}-d) loaded in {time.perf_counter() - t:.1f} s; "
          f"embedding alone: {embed_rate(embedder):.0f} texts/s")
    sizes = args.sizes + ([100000] if args.big else [])
    if args.keep is not None and len(sizes) != 1:
        p.error("--keep takes one size (--sizes N)")
    rows = [run_size(n, embedder, args.queries, args.batch, args.keep) for n in sizes]
    print(f"\n{'turns':>7} {'ingest s':>9} {'turns/s':>8} {'first ms':>9} {'search p50':>11} {'p95':>6} "
          f"{'given vector p50':>17} {'p95':>6} {'recall@3':>9} {'disk MB':>8}")
    for r in rows:
        print(f"{r['n']:>7} {r['ingest_s']:>9.1f} {r['rate']:>8.0f} {r['first']:>9.0f} {r['p50']:>11.1f} "
              f"{r['p95']:>6.1f} {r['vp50']:>17.1f} {r['vp95']:>6.1f} {r['recall']:>9.2f} {r['mb']:>8.1f}")
    print("(search = embed the query + hybrid search; given vector = the turn path's cost, where the router's "
          "embedding of the message is reused; times in ms)")
    big = [r for r in rows if r["n"] >= 100000]
    ok_latency = all(r["p95"] <= 25 for r in big)
    ok_recall = all(r["recall"] >= 0.85 for r in rows)
    print(f"\nsearch p95 <= 25 ms at 100k: {c.verdict(ok_latency) if big else 'not run (--big)'}; "
          f"recall@3 >= 0.85 at every size: {c.verdict(ok_recall)}")
    return 0 if ok_latency and ok_recall else 1


if __name__ == "__main__":
    raise SystemExit(main())
