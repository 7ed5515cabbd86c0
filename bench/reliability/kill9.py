"""kill -9 at a random moment, then check every invariant (bench/reliability/invariants.py).

    .venv/bin/python bench/reliability/kill9.py --kind ask --runs 100 [--seed 1] [--workdir DIR]
    flock /tmp/home-heavy.lock .venv/bin/python bench/reliability/kill9.py --kind train --runs 30

Kinds: ask, index, distil, manifest (kinds.py), app, train, train-tiny (kinds_heavy.py). Each run's line says when
the kill came and what was found; the end prints runs / losses / corruptions (a run counts once in each
column it failed), leftovers the next start's sweep cleaned, peak memory, and one JSON line. A run that
exits non-zero on its own (not killed) is a corruption too: the vault the last kill left made the next
command fail. The seed fixes every choice (the moments as fractions of the calibrated durations, the
texts); the exact instant still depends on the machine's load.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.reliability.invariants import Ledger, check, summary  # noqa: E402
from bench.reliability.kinds import CHEAP  # noqa: E402


def kinds() -> dict:
    from bench.reliability.kinds_heavy import HEAVY

    return {**CHEAP, **HEAVY}


def peak_mib() -> tuple[float, float]:
    """(this process, its largest child) peak RSS in MiB."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def campaign(kind: str, runs: int, seed: int, workdir: Path, *, rebuild_every: int = 1, embedder=None,
             say=print, max_minutes: float | None = None) -> dict:
    """`runs` kills of `kind` on one vault under `workdir`; returns the summary (also printed). The memory
    rebuild check runs after every `rebuild_every`-th run and the last (0: never). `max_minutes`: start no
    run after that (the summary counts the runs done)."""
    if embedder is None:
        from vault.embedder import load_embedder

        embedder = load_embedder()
    import vault.memory  # noqa: F401  the checks' code, loaded now: an edit to the tree mid-campaign cannot break them

    t0 = time.monotonic()
    k = kinds()[kind](workdir, seed)
    ledger = Ledger()
    k.calibrate(ledger)
    base = check(k.vault, ledger, embedder=embedder, rebuild=rebuild_every > 0)
    if not base.ok:
        raise SystemExit(f"{kind}: the vault is not sound before any kill: {base.losses + base.corruptions}")
    tally = {"killed": 0, "completed": 0, "losses": 0, "corruptions": 0, "failures": 0, "cleaned": 0}
    exposed: set[str] = set()
    planned = runs
    for i in range(1, planned + 1):
        if max_minutes is not None and time.monotonic() - t0 > max_minutes * 60:
            runs = i - 1
            say(f"{kind}: {max_minutes} min passed, stopping after {runs} of {planned} runs")
            break
        out = k.run(i, ledger)
        rebuild = rebuild_every > 0 and (i % rebuild_every == 0 or i == planned)
        found = check(k.vault, ledger, embedder=embedder, rebuild=rebuild)
        if out.failure:
            found.corruptions.append(f"the command failed on its own: {out.failure}")
            tally["failures"] += 1
        tally["killed" if out.killed else "completed"] += 1
        tally["losses"] += bool(found.losses)
        tally["corruptions"] += bool(found.corruptions)
        tally["cleaned"] += len(found.cleaned)
        exposed |= {e.split(" ")[0] for e in found.exposed}
        what = f"killed at {out.at:6.2f} s" if out.killed else f"completed in {out.at:6.2f} s"
        verdict = "ok" if found.ok else "; ".join(
            [f"LOSS {x}" for x in found.losses] + [f"CORRUPTION {x}" for x in found.corruptions])
        swept = f" (swept: {'; '.join(found.cleaned)})" if found.cleaned else ""
        say(f"{kind} {i}/{planned}: {what}, after {out.where!r}; memory {found.memory}: {verdict}{swept}", flush=True)
    me, child = peak_mib()
    result = {"runs": runs, **tally, "exposed": sorted(exposed)[:10], "seed": seed, "rebuild_every": rebuild_every,
              "seconds": round(time.monotonic() - t0, 1), "peak_rss_mib": {"bench": round(me), "child": round(child)}}
    say(f"\n{'kind':<9} {'runs':>5} {'losses':>7} {'corruptions':>12} {'killed':>7} {'completed':>10} "
        f"{'swept':>6}\n{kind:<9} {runs:>5} {tally['losses']:>7} {tally['corruptions']:>12} "
        f"{tally['killed']:>7} {tally['completed']:>10} {tally['cleaned']:>6}")
    say(f"peak memory: bench {me:.0f} MiB, largest child {child:.0f} MiB; {result['seconds']} s")
    if exposed:
        say(f"readable by others after a kill: {sorted(exposed)[:10]}")
    result.pop("runs")
    say(summary(kind, runs, **result), flush=True)
    return {"kind": kind, "runs": runs, **result}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", required=True, choices=sorted(kinds()))
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None, help="where the vault goes (default: a temp folder)")
    p.add_argument("--rebuild-every", type=int, default=1,
                   help="rebuild memory from the logs after every Nth run and the last (default 1; 0 never)")
    p.add_argument("--max-minutes", type=float, default=None, help="start no run after this many minutes")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"home-kill9-{args.kind}-") as tmp:
        result = campaign(args.kind, args.runs, args.seed, args.workdir or Path(tmp), rebuild_every=args.rebuild_every,
                          max_minutes=args.max_minutes)
    return 0 if result["losses"] == result["corruptions"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
