"""`home backup DEST` and `home restore ARCHIVE`: the whole vault in one verified archive, safe while the app
runs (vault/backup.py says how), and back into a new directory (vault/restore.py)."""

from __future__ import annotations

import argparse
import resource
import sys
import time

from home.progress import LOG_EVERY_S, fmt_bytes, fmt_duration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="write the whole vault to one archive file (safe while the app runs)",
                       description="Writes one gzip tar (0600, atomically) of the vault: manifest, config, logs, "
                                   "gestalts, personas, preferences, adapters and memory, each taken under its "
                                   "writers' lock so the copy is consistent while Home runs. Left out: runs/ "
                                   "checkpoints (--with-runs keeps them) and, while the app owns it, memory/ "
                                   "(rebuilt from the logs after restore by `home memory reindex`).")
    p.add_argument("dest", metavar="DEST", help="the archive file to write (e.g. home-2026-12-01.tar.gz)")
    p.add_argument("--with-runs", action="store_true", help="also training checkpoints and weight copies")
    p.add_argument("--no-adapters", action="store_true", help="leave adapters/ out (they can be retrained)")
    p.set_defaults(func=run_backup)
    r = sub.add_parser("restore", help="unpack a backup into a new vault, verified first",
                       description="Checks every file of the archive against its listing (size, sha256) in a "
                                   "temp folder beside the target, then renames it into place. Never overwrites: "
                                   "the target must be missing or empty.")
    r.add_argument("archive", metavar="ARCHIVE")
    r.add_argument("--vault", dest="into", metavar="DIR",
                   help="the new vault directory (default: home's --vault, HOME_VAULT or the user data dir)")
    r.set_defaults(func=run_restore)


def _size(n: int) -> str:
    return fmt_bytes(n) if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _peak() -> str:
    return fmt_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


class _Progress:
    """A redrawn line on a terminal; elsewhere a plain line every LOG_EVERY_S."""

    def __init__(self) -> None:
        self.tty, self.t0, self.last = sys.stderr.isatty(), time.monotonic(), time.monotonic()

    def __call__(self, done: int, known: int) -> None:
        now = time.monotonic()
        if now - self.last < (0.5 if self.tty else LOG_EVERY_S):
            return
        self.last = now
        line = f"backup: {fmt_bytes(done)} read ({fmt_bytes(known)} listed), {fmt_duration(now - self.t0)}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)


def run_backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from home import __version__
    from home.context import Context
    from vault.backup import backup

    vault = Context(args).vault
    prog = _Progress()
    rep = backup(vault, Path(args.dest), with_runs=args.with_runs, adapters=not args.no_adapters,
                 progress=prog, version=__version__)
    if prog.tty:
        print(file=sys.stderr)
    print(f"wrote {rep.path}: {rep.files} files, {_size(rep.bytes_in)} -> {_size(rep.bytes_out)} "
          f"in {rep.seconds:.1f} s, peak memory {_peak()}")
    for what in rep.left_out:
        print(f"  left out: {what}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vault.layout import resolve_root
    from vault.restore import restore

    t0 = time.monotonic()
    target = Path(args.into).expanduser().absolute() if args.into else resolve_root(args.vault)
    out = restore(Path(args.archive), target)
    print(f"restored {out.files} files ({_size(out.bytes)}) into {out.root} in {time.monotonic() - t0:.1f} s, "
          f"peak memory {_peak()}; every sha256 checked")
    for what in out.meta.get("left_out") or []:
        print(f"  not in this backup: {what}")
    return 0
