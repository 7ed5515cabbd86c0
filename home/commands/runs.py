"""`home runs`: the trainer's run folders, what they keep on disk, and dropping what a finished run no
longer needs (trainer/protocol/run_cleanup.py says what that is and what is never touched)."""

from __future__ import annotations

import argparse
import json

from home.context import Context


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="training run folders: list them, free what finished runs keep",
                       description="Every training keeps its checkpoints, best step and adapter copies under "
                                   "<vault>/runs/ (117 MB a voice run on the default model). `clean` drops them "
                                   "from finished runs; job, state and plots stay. Logs and adapters/ are never "
                                   "touched.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="every run folder: status, adapter, size, what clean frees")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    cl = verbs.add_parser("clean", help="drop the checkpoints and weight copies of finished runs")
    cl.add_argument("--stopped", action="store_true",
                    help="also of stopped, failed and killed runs (they can no longer be resumed)")
    cl.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    cl.set_defaults(func=run_clean)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run_list(args: argparse.Namespace) -> int:
    from trainer.protocol.run_cleanup import scan

    ctx = Context(args)
    runs = scan(ctx.vault)
    if args.json:
        print(json.dumps([{"run": r.path.name, "status": r.status, "adapter": r.adapter, "updated": r.updated,
                           "bytes": r.size, "frees": r.bulk} for r in runs]))
        return 0
    if not runs:
        print(f"no run folders in {ctx.vault.runs_dir}")
        return 0
    width = max(len(r.path.name) for r in runs)
    print(f"{'RUN':<{width}}  {'STATUS':<8}  {'ADAPTER':<20}  {'SIZE':>10}  {'FREES':>10}")
    for r in runs:
        print(f"{r.path.name:<{width}}  {r.status:<8}  {(r.adapter or '-'):<20}  {_mb(r.size):>10}  "
              f"{_mb(r.bulk) if r.cleanable else '-':>10}")
    done = sum(r.bulk for r in runs if r.cleanable and r.status == "done")
    stopped = sum(r.bulk for r in runs if r.cleanable and r.status != "done")
    line = f"{len(runs)} folders, {_mb(sum(r.size for r in runs))}; `home runs clean` frees {_mb(done)}"
    print(line + (f" (--stopped: {_mb(stopped)} more, those runs can then no longer be resumed)" if stopped else ""))
    return 0


def run_clean(args: argparse.Namespace) -> int:
    from trainer.protocol.run_cleanup import clean

    ctx = Context(args)
    cleaned = clean(ctx.vault, stopped=args.stopped, dry_run=args.dry_run)
    verb = "would free" if args.dry_run else "freed"
    for r in cleaned:
        print(f"{r.path.name} ({r.status}): {verb} {_mb(r.bulk)}")
    print(f"{len(cleaned)} runs {'to clean' if args.dry_run else 'cleaned'}, {verb} {_mb(sum(r.bulk for r in cleaned))}"
          if cleaned
          else "nothing to clean: no finished run keeps checkpoints or weight copies")
    return 0
