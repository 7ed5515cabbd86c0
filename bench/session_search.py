"""Search past sessions (vault/search.py, a scan without an index) on vaults of 1k and 10k sessions.

Why: the search screen scans every log on each query; this says up to what size a scan stays well under
a keystroke's budget, and so when an index would start to pay. Sessions hold 20 turns of ~40 words
drawn from a 2,000-word vocabulary (plus a few rare words), written by the real ConversationLog.
Timings are with the files in the page cache (a second search; the first pays the disk once).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common as c

QUERIES = {"common word": "w7", "two words": "w12 w345", "phrase": '"w5 w6"', "rare word": "zebra",
           "no match": "nothingmatches"}


def make_vault(root: Path, sessions: int, turns: int, seed: int = 0):
    """Records as ConversationLog writes them (same fields, one JSON line each), without its per-record
    fsync: 20k fsyncs would take minutes and measure the disk, not the search."""
    from vault.layout import Vault

    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    vault = Vault.open(root)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for s in range(sessions):
        sid, lines = f"s{s:06d}", []
        for t in range(turns):
            words = rng.choices(vocab, k=40)
            if rng.random() < 0.001:
                words[rng.randrange(40)] = "zebra"
            when = (start + timedelta(minutes=10 * s + t)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            lines.append(json.dumps({"v": 1, "id": f"{sid}:{t + 1}", "session": sid, "turn": t + 1, "time": when,
                                     "user": "me", "persona": "sage", "role": "user" if t % 2 == 0 else "assistant",
                                     "text": " ".join(words), "adapters": []}))
        path = vault.logs_dir / f"{sid}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        mtime = (start + timedelta(minutes=10 * s + turns)).timestamp()
        os.utime(path, (mtime, mtime))
    return vault


def main() -> None:
    p = c.parser("Full-text search over the session logs", iters=5)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="session counts (default 1000 10000)")
    p.add_argument("--turns", type=int, default=20)
    args = p.parse_args()
    from vault.search import search_logs

    for n in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="home-search-"))
        try:
            t0 = time.perf_counter()
            vault = make_vault(root / "v", n, args.turns)
            size = sum(f.stat().st_size for f in vault.logs_dir.glob("*.jsonl")) / 1e6
            print(f"\n{n} sessions × {args.turns} turns ({size:.1f} MB of logs, written in {time.perf_counter() - t0:.1f} s)")
            print(f"{'query':<14} {'hits':>6} {'median ms':>10} {'max ms':>8}")
            search_logs(vault, "warmup")
            for label, q in QUERIES.items():
                times, hits = [], 0
                for _ in range(args.iters):
                    r = search_logs(vault, q)
                    times.append(r.elapsed_ms)
                    hits = len(r.hits) if not r.truncated else f"{len(r.hits)}+"
                print(f"{label:<14} {hits!s:>6} {statistics.median(times):>10.1f} {max(times):>8.1f}")
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
