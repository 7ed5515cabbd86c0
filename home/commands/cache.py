"""`home cache`: training's dequantized base copies (outside the vault, trainer/protocol/base_copies.py),
what they take on disk, and removing those of deleted models or unused for a while."""

from __future__ import annotations

import argparse
import json
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="training's base model copies: list them, remove unneeded ones",
                       description="Training dequantizes each model once per dtype into a cache outside the vault "
                                   "($HOME_CACHE/bases, else the user cache dir) and keeps it (542 MB for the default "
                                   "model, ~16 GB for an 8B). `clean` removes copies whose model file is gone, and with "
                                   "--older-than those unused for that many days; never one a running training holds.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="every base copy: model file, dtype, size, last used")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    cl = verbs.add_parser("clean", help="remove copies of deleted models (and, --older-than, unused ones)")
    cl.add_argument("--older-than", type=float, metavar="DAYS",
                    help="also remove copies not used for DAYS days (a later training rebuilds one)")
    cl.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    cl.set_defaults(func=run_clean)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _days(t: float) -> str:
    return f"{(time.time() - t) / 86400:.0f} d ago"


def run_list(args: argparse.Namespace) -> int:
    from trainer.protocol.base_copies import bases_root, in_use, scan

    copies = scan()
    now = time.time()
    if args.json:
        print(json.dumps([{"folder": c.path.name, "source": c.source, "source_exists": not c.source_gone,
                           "dtype": c.dtype, "bytes": c.size, "last_used": c.used, "complete": c.complete,
                           "in_use": not c.leftover and in_use(c.path),
                           "removable": c.why_removable(None, now)} for c in copies]))
        return 0
    if not copies:
        print(f"no base copies in {bases_root()}")
        return 0
    print(f"{'MODEL FILE':<40}  {'DTYPE':<8}  {'SIZE':>10}  {'LAST USED':>10}  NOTE")
    for c in copies:
        name = "-" if not c.source else ("…" + c.source[-39:] if len(c.source) > 40 else c.source)
        note = "in use" if not c.leftover and in_use(c.path) else (c.why_removable(None, now) or "")
        print(f"{name:<40}  {(c.dtype or '-'):<8}  {_mb(c.size):>10}  {_days(c.used):>10}  {note}")
    gone = sum(c.size for c in copies if c.why_removable(None, now))
    print(f"{len(copies)} in {bases_root()}, {_mb(sum(c.size for c in copies))}; `home cache clean` frees "
          f"{_mb(gone)} (--older-than DAYS: unused ones too)")
    return 0


def run_clean(args: argparse.Namespace) -> int:
    from home.errors import UsageError
    from trainer.protocol.base_copies import clean

    if args.older_than is not None and args.older_than < 0:
        raise UsageError(f"--older-than {args.older_than:g}: expected 0 or more days")
    removed, busy = clean(args.older_than, dry_run=args.dry_run)
    verb = "would free" if args.dry_run else "freed"
    for c, why in removed:
        print(f"{c.path.name} ({why}): {verb} {_mb(c.size)}")
    for c in busy:
        print(f"{c.path.name}: kept, in use by a running training")
    print(f"{len(removed)} copies {'to remove' if args.dry_run else 'removed'}, {verb} "
          f"{_mb(sum(c.size for c, _ in removed))}" if removed else "nothing to remove")
    return 0
