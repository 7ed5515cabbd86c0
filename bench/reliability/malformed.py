"""The malformed-input campaign (issue 15): ≥300 generated bad inputs through the real `home` entry points.

Per target (character cards JSON/PNG, manifest.json, config.toml, gestalt files, character sheets, every
training source via `home train --check`, GGUF adapters via `home adapters add`, preference files) it
runs every 10th case as a real `python -m home.cli` process (the rest in process, through `home.cli.main`), and
prints cases / tracebacks / escapes (files written outside the vault) / changed (vault files changed by a
refused input) / unclear messages (not one `home: error:` line naming the file), then one JSON line.
Generators: tests/malformed*.py (hypothesis, derandomized: the same cases every run).

    .venv/bin/python bench/reliability/malformed.py [--per-target 40] [--size 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from tests.malformed import targets  # noqa: E402
from tests.malformed_run import Tally, run_case  # noqa: E402


def _run(strategy, n: int, tally: Tally, every: int) -> None:
    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(case):
        tally.add(case, run_case(case, process=bool(every) and case.action is None and tally.cases % every == 0))

    one()


def campaign(per_target: int, size: int, only: list[str] | None = None, every: int = 10) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for name, strategy in targets(size).items():
        if only and name not in only:
            continue
        tally = tallies[name] = Tally()

        t0 = time.perf_counter()
        _run(strategy, per_target, tally, every)
        print(f"  {name}: {tally.cases} cases in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return tallies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-target", type=int, default=40, help="hypothesis max_examples per target (default 40)")
    ap.add_argument("--size", type=int, default=1024, help="KiB of the 'huge' strings (default 1024)")
    ap.add_argument("--only", nargs="*", help="only these targets")
    ap.add_argument("--subprocess-every", type=int, default=10, metavar="N",
                    help="run every Nth case as `python -m home.cli` in its own process (0: none; default 10)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    tallies = campaign(args.per_target, args.size, args.only, args.subprocess_every)
    cols = ("cases", "tracebacks", "escapes", "changed", "unclear", "accepted")
    print(f"{'target':<14}" + "".join(f"{c:>11}" for c in cols))
    total = {c: 0 for c in cols}
    for name, t in tallies.items():
        print(f"{name:<14}" + "".join(f"{getattr(t, c):>11}" for c in cols))
        for c in cols:
            total[c] += getattr(t, c)
    print(f"{'total':<14}" + "".join(f"{total[c]:>11}" for c in cols))
    print("(accepted: the input was valid after all, or harmless, and the command succeeded)")
    for name, t in tallies.items():
        if t.accepted_kinds:
            print(f"  accepted {name}: " + ", ".join(f"{k} {n}" for k, n in sorted(t.accepted_kinds.items())))
    for name, t in tallies.items():
        for ex in t.examples:
            print(f"FAIL {name}: {ex[:600]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"bench": "malformed_inputs", "seconds": round(time.perf_counter() - t0, 1),
                      "peak_rss_mib": round(peak), **total,
                      "targets": {n: {c: getattr(t, c) for c in cols} for n, t in tallies.items()}}))
    bad = total["tracebacks"] + total["escapes"] + total["changed"] + total["unclear"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
