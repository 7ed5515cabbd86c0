"""Memory at scale: ingest rate and search latency at 1k and 10k logged turns (100k with --big), 1M vectors.

Why these numbers: search runs on every turn that needs memory, before the first token, so its p95 adds
straight to time-to-first-token; ingest runs in the background after each turn, and once over the whole
vault on `home memory reindex --rebuild`. The eight facts of tests/test_vault_memory.py are planted in the
first session and asked about at the end, so the table also says whether recall@3 holds as the haystack
grows. Synthetic turns are templated sentences (user) and 2–3 sentence replies (assistant), spread over two
years. Everything runs in one process with the real embedder, ChromaDB and FTS5, on temp vaults; the first
search (which loads the exact vector matrix from ChromaDB) is timed on its own.

Before/after (issue 13), measured in the same run: the embedder on numpy (before) and on onnxruntime
(after), one thread and on every core; ingest of the first size with each; the first search of a reopened
store when it loaded every embedding back from ChromaDB into memory (before) and when it maps the vector
file beside the store (after). Ingest is given in turns/s and in CPU seconds per turn over every thread
(the steadier of the two when other work shares the cores). `--synthetic N` times the vector part of a search over N random unit rows
in a vector file (1M: 1.5 GB, more than embedding a real vault of that size allows here).
Search before/after the sign codes (vault/sign_codes.py), query after query in the same run: every row
scored (before) and the codes' candidates scored (after), with how many of the top-5 hits agree, recall@3
of the planted facts both ways, and the load average while it ran. `--cached-embed` builds a large vault
with each distinct text embedded once (its ingest rate is then not Home's, and not printed).

The turn path's search comes right after the previous turn's rows were written: that row compares, in the
same run, the vector file mapped again after each append and the sign codes copied whole (before, emulated
by dropping the mapping and the codes' room) with the mapping and room kept (after, vault/vector_file.py).

Goals (printed as PASS/FAIL): search p95 <= 25 ms at 100k (issue 5; the search proper, given the router's
embedding of the message as the turn path does, the embedding being the turn's own cost), recall@3 of the
planted facts >= 0.85, ingest >= 3x the numpy embedder's (issue 13).

Measured at 100k turns (160k items with sentences; `--sizes 100000 --keep DIR --distinct 3000
--cached-embed --no-before --synthetic 100000`), load average 6.9 on the shared 2-core box: given vector
p50 16.5 / p95 24.5 ms (CPU 10.2 / 12.2 ms; the earlier run at load 7.2: 24.8 / 34.5, CPU 12.3 / 14.4),
recall@3 1.00, the same top-5 texts as the exact scan; right after an append 45.4 / 64.2 ms before (CPU
28.1 / 32.6), 17.5 / 27.6 ms after (CPU 11.1 / 12.8): 2.3x at p95. 1M on paper: ~4.5 ms besides the vector
part + 10 x its 20.0 ms = ~205 ms: past ~40k items per 25 ms the candidates must come from an ANN graph.
(That was the exact scan; the sign codes came after, see below.)

Measured 2026-11-30 23:27 UTC on a quiet 2-core box of another kind (AMD EPYC Zen 4, AVX-512; nothing else
running, load 1.9-2.4 from this run alone), `--sizes 1000 --big`: search p95 given the router's vector at 100k
turns (160k items) 1.8 ms (p50 1.7; 6.9 ms with the query's own embedding), the exact scan beside it 7.0 ms,
the same top-5 texts 0.998, recall@3 1.00; right after a turn's rows were written 2.7 ms (mapped again:
6.6); 100k ingest 433 turns/s (231 s); 1k ingest 473 turns/s against the numpy embedder's 161 in the same
run (2.95x wall, 3.03x less CPU per turn: 12.3 -> 4.1 ms; 1k is a 2-second run: at 10k, `--sizes 10000
--synthetic`, 124 -> 431 turns/s, 3.47x wall, 14.0 -> 4.5 CPU-ms per turn, 3.10x: PASS); 1M vector rows (1.59 GB file) top-20 p95 6.2 ms
(exact 34.4). The issue's ~125 turns/s was the numpy embedder on the older AVX2 box; this box runs numpy
at 161, so the ratio, not the rate, is the comparable number.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import tempfile
import time
from pathlib import Path

import _common as c
from memory_vaults import OBJECTS, SUBJECTS, DistinctTexts, build_vault, planted, synthetic_turns


def ingest(vault, embedder, batch: int) -> tuple[float, float, int]:
    """Index the vault's logs into a fresh store (wall seconds, CPU seconds of every thread, turns), as
    `home memory reindex` does. The CPU seconds are the steadier number on a shared machine."""
    from vault.blas import all_blas_threads
    from vault.memory import MemoryStore, index_logs

    with MemoryStore.open(vault, embedder) as store, all_blas_threads():
        t0, c0 = time.perf_counter(), time.process_time()
        report = index_logs(vault, store, batch_size=batch)
        return time.perf_counter() - t0, time.process_time() - c0, report.indexed


def load_all_ms(store) -> float:
    """Before: the first search loaded every embedding from ChromaDB into an in-memory matrix."""
    from vault.retrieval import VectorMatrix

    t = time.perf_counter()
    matrix = VectorMatrix(store.embedder.dim)
    for ids, users, vecs in store._pages():
        matrix.upsert(ids, users, vecs)
    return (time.perf_counter() - t) * 1e3


def run_size(n: int, embedder, queries: int, batch: int, keep: Path | None = None, before=None,
             distinct: int | None = None, cached: bool = False) -> dict:
    """One vault of `n` turns; `before` (the numpy embedder): also ingest a copy with it, for the ratio.
    `cached`: the vault is indexed with each distinct text embedded once (DistinctTexts; search timing only)."""
    import shutil

    from vault.layout import Vault
    from vault.memory import MemoryStore

    with tempfile.TemporaryDirectory() as tmp:
        root = keep if keep is not None else Path(tmp) / "v"
        reuse = (root / "memory" / "index.json").exists()
        vault = Vault.open(root) if reuse else build_vault(root, n, distinct=distinct)[0]
        expected = planted(vault)
        old_rate = old_cpu = float("nan")
        if before is not None and not reuse:
            shutil.copytree(root / "logs", Path(tmp) / "old" / "logs")
            secs, cpu, done = ingest(Vault.open(Path(tmp) / "old"), before, batch)
            old_rate, old_cpu = done / secs, cpu / done
            shutil.rmtree(Path(tmp) / "old")
        ingest_s, ingest_cpu, indexed = ingest(vault, DistinctTexts(embedder) if cached else embedder, batch)
        if cached:
            ingest_s = float("nan")  # not Home's rate
        with MemoryStore.open(vault, embedder) as store:
            n = store.count()
            rng = random.Random(1)
            probes = list(expected) + [f"what did {rng.choice(SUBJECTS)} say about {rng.choice(OBJECTS)}?"
                                       for _ in range(max(0, queries - len(expected)))]
            embedder.embed(["warm up"])
            t = time.perf_counter()
            store.search(probes[0], k=5)  # a reopened store: the first query maps the vector file
            first_ms = (time.perf_counter() - t) * 1e3
            old_first = load_all_ms(store)
            times, given, exact, same, given_cpu, exact_cpu = [], [], [], [], [], []
            load = os.getloadavg()[0]
            for q in probes:
                t = time.perf_counter()
                store.search(q, k=5)
                times.append(time.perf_counter() - t)
                vec = embedder.embed([q])[0]  # the turn path embeds once for the router and memory
                t, cpu = time.perf_counter(), time.process_time()
                got = store.search(q, k=5, vector=vec)
                given.append(time.perf_counter() - t)
                given_cpu.append(time.process_time() - cpu)
                with exact_scan():  # before: every row scored, in the same run, query after query
                    t, cpu = time.perf_counter(), time.process_time()
                    want = store.search(q, k=5, vector=vec)
                    exact.append(time.perf_counter() - t)
                    exact_cpu.append(time.process_time() - cpu)
                # by text: the templated turns repeat, and which copy of a repeated text comes first is a tie
                same.append(len({h.text for h in got} & {h.text for h in want}) / max(len(want), 1))
            load = (load + os.getloadavg()[0]) / 2
            appended = after_append(store, probes, embedder)
            recall = sum(expected[q] in [h.id for h in store.search(q, k=3)] for q in expected) / len(expected)
            with exact_scan():
                old_recall = sum(expected[q] in [h.id for h in store.search(q, k=3)] for q in expected) / len(expected)
            size = store.stats()["bytes"]
    rate = indexed / ingest_s if indexed else float("nan")
    return {"n": n, "ingest_s": ingest_s if indexed else float("nan"), "rate": rate, "old_rate": old_rate,
            "cpu": ingest_cpu / indexed * 1e3 if indexed else float("nan"), "old_cpu": old_cpu * 1e3,
            "p50": c.pct(times, 50) * 1e3, "p95": c.pct(times, 95) * 1e3, "vp50": c.pct(given, 50) * 1e3,
            "vp95": c.pct(given, 95) * 1e3, "first": first_ms, "old_first": old_first, "recall": recall,
            "mb": size / 1e6, "ep50": c.pct(exact, 50) * 1e3, "ep95": c.pct(exact, 95) * 1e3,
            "old_recall": old_recall, "same": sum(same) / len(same), "load": load,
            "cpu50": c.pct(given_cpu, 50) * 1e3, "cpu95": c.pct(given_cpu, 95) * 1e3,
            "ecpu50": c.pct(exact_cpu, 50) * 1e3, "ecpu95": c.pct(exact_cpu, 95) * 1e3, **appended}


def after_append(store, probes: list[str], embedder) -> dict:  # noqa: ANN001
    """The turn path's search: the previous turn's rows were just written. Query after query in one run, a
    few rows appended before each search (then deleted again), with the vector file's mapping and the sign
    codes' room kept (after) and, emulating before, dropped so the search maps the file again and the codes
    are copied whole as they were (vault/vector_file.py `_map`, vault/sign_codes.py `_put`). Wall and CPU."""
    import numpy as np

    from vault.memory_items import MemoryItem

    vf = store._vectors()
    out: dict[str, list[float]] = {"before": [], "after": [], "before_cpu": [], "after_cpu": []}
    added: list[str] = []
    for n, q in enumerate(probes):
        vec = embedder.embed([q])[0]
        for mode in ("before", "after"):
            ident = f"bench-append-{os.getpid()}:{n}-{mode}"
            store.upsert_items([MemoryItem(ident, f"{q} ({mode})", "bench-append", n, "user", "me", "",
                                           "2026-01-01T00:00:00Z")])
            added.append(ident)
            if mode == "before":
                vf._whole = None  # mapped again, as every search after an append did
            if mode == "before" and vf._signs is not None:
                signs = vf._signs
                signs._cols = np.ascontiguousarray(signs._cols[:, :signs._n])  # no room: copied whole
                signs._buf = tuple(b[..., :0] for b in signs._buf)  # no scratch kept: allocated again
            t, cpu = time.perf_counter(), time.process_time()
            store.search(q, k=5, vector=vec)
            out[mode].append(time.perf_counter() - t)
            out[mode + "_cpu"].append(time.process_time() - cpu)
    store.delete(added)
    return {f"ap_{k}{q}": c.pct(v, q) * 1e3 for k, v in out.items() for q in (50, 95)}


@contextlib.contextmanager
def exact_scan():
    """Searches inside score every row (the exact scan, as before the sign codes: vault/sign_codes.py)."""
    import vault.vector_file as vf

    old, vf.SIGN_ROWS = vf.SIGN_ROWS, 1 << 62
    try:
        yield
    finally:
        vf.SIGN_ROWS = old


def embed_rate(embedder, n: int = 512, bulk: bool = False) -> float:
    from vault.blas import all_blas_threads

    texts = [t for _, t in synthetic_turns(n, random.Random(2))]
    with all_blas_threads() if bulk else contextlib.nullcontext():
        t = time.perf_counter()
        embedder.embed(texts)
        return n / (time.perf_counter() - t)


def synthetic(n: int, dim: int = 384, queries: int = 50) -> dict:
    """The vector part of a search over `n` random unit rows in a vector file (mapped, exact)."""
    import sqlite3

    import numpy as np

    from vault.vector_file import VectorFile

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "k.sqlite3")
        vf = VectorFile(Path(tmp), db, dim)

        def pages():
            for start in range(0, n, 50000):
                m = rng.standard_normal((min(50000, n - start), dim), dtype=np.float32)
                m /= np.linalg.norm(m, axis=1, keepdims=True)
                yield [f"s:{i}" for i in range(start, start + len(m))], ["me"] * len(m), m
                print(f"  synthetic {start + len(m)}/{n} rows", end="\r", flush=True)

        t = time.perf_counter()
        vf.rebuild(pages())
        build_s = time.perf_counter() - t
        reopened = VectorFile(Path(tmp), db, dim)
        t = time.perf_counter()
        ok = reopened.valid(n)
        open_ms = (time.perf_counter() - t) * 1e3
        qs = rng.standard_normal((queries + 1, dim), dtype=np.float32)
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        t = time.perf_counter()
        reopened.top(qs[0], 20)  # the first pass codes the rows (vault/sign_codes.py), once
        code_ms = (time.perf_counter() - t) * 1e3
        with exact_scan():
            reopened.top(qs[0], 20)  # … and the exact scan reads the file into the page cache
        times, exact = [], []
        for q in qs[1:]:
            t = time.perf_counter()
            reopened.top(q, 20, user="me")
            times.append(time.perf_counter() - t)
            with exact_scan():
                t = time.perf_counter()
                reopened.top(q, 20, user="me")
                exact.append(time.perf_counter() - t)
        size = sum(p.stat().st_size for p in Path(tmp).glob("vectors-*"))
    return {"n": n, "ok": ok, "build_s": build_s, "open_ms": open_ms, "p50": c.pct(times, 50) * 1e3,
            "p95": c.pct(times, 95) * 1e3, "gb": size / 1e9, "ep50": c.pct(exact, 50) * 1e3,
            "ep95": c.pct(exact, 95) * 1e3, "code_ms": code_ms, "load": os.getloadavg()[0]}


def paper_million(row: dict, vec: dict | None) -> str:
    """The 1M-item point on paper, from a measured 100k row: every file grows with the items (vectors
    384 x 4 bytes + a 4-byte user code per row, ChromaDB's copy, SQLite text and FTS), and of a search
    only the vector part grows with them (the keyword search reads only rare terms' postings, the
    ranking a fixed pool). `vec`: the vector-only point at the same row count, to split the two."""
    scale = 1_000_000 / row["n"]
    line = f"\n1M items on paper (x{scale:.0f} the {row['n']} row): disk ~{row['mb'] * scale / 1e3:.1f} GB"
    if vec is None:
        return line + f"; search p95 <= {row['p95'] * scale:.0f} ms (all of it scaled: run --synthetic {row['n']})"
    rest = max(0.0, row["vp95"] - vec["p95"])
    total = rest + vec["p95"] * scale
    fits = int(row["n"] * max(0.0, 25 - rest) / vec["p95"]) if vec["p95"] > 0 else 0
    return (line + f" (vector file {1_000_000 * (384 * 4 + 4) / 1e9:.2f} GB mapped, sign codes "
            f"{1_000_000 * 48 / 1e6:.0f} MB); search p95 ~{rest:.1f} ms besides the vector part + {vec['p95']:.1f} x "
            f"{scale:.0f} ms of it = {total:.0f} ms given the router's "
            f"vector, + the query embedding ({row['p95'] - row['vp95']:.1f} ms at p95 here)"
            + ("" if total <= 25 else f"\n  over the 25 ms budget: the vector part fits it up to ~{fits} items; "
               "past that the candidates must come from an ANN graph (ChromaDB's HNSW, kept at default quality)"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="turns per run (default 1k 10k)")
    p.add_argument("--big", action="store_true", help="also 100k turns (slow: minutes of embedding on 2 cores)")
    p.add_argument("--queries", type=int, default=100, help="search calls timed per size (default 100)")
    p.add_argument("--batch", type=int, default=256, help="turns per indexing batch (default 256)")
    p.add_argument("--keep", type=Path, default=None,
                   help="one size only: build its vault here once, reuse it later (100k embeds for ~15 min)")
    p.add_argument("--synthetic", type=int, nargs="*", default=[100000, 1000000],
                   help="vector-file rows for the vector-only point (default 100k 1M; none: skip)")
    p.add_argument("--distinct", type=int, default=None,
                   help="user messages drawn from N different ones (a 100k vault: 3000)")
    p.add_argument("--no-before", action="store_true", help="skip the numpy embedder's ingest (the before)")
    p.add_argument("--cached-embed", action="store_true",
                   help="index each distinct text's vector once (a 100k vault in minutes; no ingest rate)")
    args = p.parse_args()
    from vault.bert_numpy import NumpyBert
    from vault.embedder import default_embedder_path, load_embedder

    t = time.perf_counter()
    embedder = load_embedder()
    print(f"embedder {embedder.name} ({embedder.dim}-d, {type(embedder).__name__}) loaded in "
          f"{time.perf_counter() - t:.1f} s")
    before = None if args.no_before else NumpyBert(default_embedder_path(), name=embedder.name)
    if before is not None:
        rates = {(name, bulk): embed_rate(e, bulk=bulk) for name, e in (("before", before), ("after", embedder))
                 for bulk in (False, True)}
        print(f"embedding alone, texts/s: numpy (before) {rates['before', False]:.0f} one thread, "
              f"{rates['before', True]:.0f} every core; onnxruntime (after) {rates['after', False]:.0f} one thread "
              f"({rates['after', False] / rates['before', False]:.1f}x), {rates['after', True]:.0f} every core "
              f"({rates['after', True] / rates['before', True]:.1f}x)")
    sizes = args.sizes + ([100000] if args.big else [])
    if args.keep is not None and len(sizes) != 1:
        p.error("--keep takes one size (--sizes N)")
    rows = [run_size(n, embedder, args.queries, args.batch, args.keep, before if k == 0 else None, args.distinct,
                     args.cached_embed) for k, n in enumerate(sizes)]
    print(f"\n{'turns':>7} {'ingest s':>9} {'turns/s':>8} {'before':>7} {'first ms':>9} {'before':>7} "
          f"{'search p50':>11} {'p95':>6} {'given vector p50':>17} {'p95':>6} {'recall@3':>9} {'disk MB':>8}")
    for r in rows:
        print(f"{r['n']:>7} {r['ingest_s']:>9.1f} {r['rate']:>8.0f} {r['old_rate']:>7.0f} {r['first']:>9.0f} "
              f"{r['old_first']:>7.0f} {r['p50']:>11.1f} {r['p95']:>6.1f} {r['vp50']:>17.1f} {r['vp95']:>6.1f} "
              f"{r['recall']:>9.2f} {r['mb']:>8.1f}")
    print("(turns/s before = the numpy embedder; first ms = a reopened store's first search, before = loading "
          "every embedding from ChromaDB into memory as it did; search = embed the query + hybrid search; given "
          "vector = the turn path's cost, where the router's embedding of the message is reused; times in ms)")
    for r in rows:
        print(f"{r['n']} turns, given vector, in the same run query after query (load average {r['load']:.1f}): "
              f"exact scan (before) p50 {r['ep50']:.1f} / p95 {r['ep95']:.1f} ms, sign-code candidates (after) p50 "
              f"{r['vp50']:.1f} / p95 {r['vp95']:.1f} ms ({r['ep95'] / r['vp95']:.1f}x at p95); the same top-5 texts "
              f"{r['same']:.3f}; recall@3 {r['old_recall']:.2f} before, {r['recall']:.2f} after; CPU per search "
              f"(every thread, steadier on a shared machine) p50 {r['ecpu50']:.1f} / p95 {r['ecpu95']:.1f} ms before, "
              f"{r['cpu50']:.1f} / {r['cpu95']:.1f} ms after")
    for r in rows:
        print(f"{r['n']} turns, given vector, a search right after a turn's rows were written (the turn path): "
              f"mapped again (before) p50 {r['ap_before50']:.1f} / p95 {r['ap_before95']:.1f} ms (CPU "
              f"{r['ap_before_cpu50']:.1f} / {r['ap_before_cpu95']:.1f}), mapping kept (after) p50 "
              f"{r['ap_after50']:.1f} / p95 {r['ap_after95']:.1f} ms (CPU {r['ap_after_cpu50']:.1f} / "
              f"{r['ap_after_cpu95']:.1f}): {r['ap_before95'] / r['ap_after95']:.1f}x at p95")
    syn = [synthetic(n) for n in args.synthetic]
    if syn:
        print(f"\n{'vector rows':>11} {'file GB':>8} {'open ms':>8} {'codes ms':>9} {'top-20 p50':>11} {'p95':>6} "
              f"{'exact p50':>10} {'p95':>6} {'load':>5}   (vector part only: sign-code candidates, exact scan)")
        for r in syn:
            print(f"{r['n']:>11} {r['gb']:>8.2f} {r['open_ms']:>8.1f} {r['code_ms']:>9.0f} {r['p50']:>11.1f} "
                  f"{r['p95']:>6.1f} {r['ep50']:>10.1f} {r['ep95']:>6.1f} {r['load']:>5.1f}")
    big = [r for r in rows if r["n"] >= 100000]
    for r in big:
        print(paper_million(r, next((x for x in syn if abs(x["n"] - r["n"]) <= 0.1 * r["n"]), None)))
    ok_latency = all(r["vp95"] <= 25 for r in big)  # the turn path's search: the router's embedding reused
    ok_recall = all(r["recall"] >= 0.85 for r in rows)
    r0 = rows[0]
    if before is not None:
        print(f"\ningest of {r0['n']} turns: {r0['old_rate']:.0f} turns/s before (numpy), {r0['rate']:.0f} after "
              f"(onnxruntime): {r0['rate'] / r0['old_rate']:.2f}x wall; CPU per turn, every thread: "
              f"{r0['old_cpu']:.1f} ms before, {r0['cpu']:.1f} ms after ({r0['old_cpu'] / r0['cpu']:.2f}x less)")
    ok_ingest = r0["rate"] >= 3 * r0["old_rate"] if before is not None else None
    print(f"\nsearch p95 (given the router's vector) <= 25 ms at 100k: "
          f"{c.verdict(ok_latency) if big else 'not run (--big)'}; "
          f"recall@3 >= 0.85 at every size: {c.verdict(ok_recall)}; ingest >= 3x before: "
          + ("not run" if ok_ingest is None else f"{c.verdict(ok_ingest)} ({r0['rate'] / r0['old_rate']:.1f}x)"))
    return 0 if ok_latency and ok_recall and ok_ingest is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
