"""Training's dequantized base copies on disk: where they live, which one a process is using, and trimming
those no longer needed (`home cache list/clean`). Torch-free: the CLI imports it; the worker's
trainer/worker/base_cache.py builds the copies and marks them in use through `hold`.

Why: a copy is made per model and dtype and kept for good (542 MB for the default model in fp32, ~16 GB
for an 8B in bf16), also after the GGUF it came from is deleted or replaced by another quantization.

In use: a process that loads a copy (a training, its verification, a build) holds a shared flock on
`base-locks/<folder>.lock` until it exits (the kernel drops it when the process dies, so none is ever
stale); `clean` takes the same lock exclusively, without waiting, before it deletes a copy, so it never
deletes one a live process has or is building, and a training that starts meanwhile waits for the
delete and then builds afresh. Last use: `hold` touches the copy's `home-cache.json`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vault.fsio import ensure_private_dir, pid_alive

CACHE_ENV = "HOME_CACHE"
FORMAT = 1  # bump when the layout of a cached base changes; an older one is rebuilt (and `clean` removes it)
STAMP = "home-cache.json"
_HELD: dict[str, int] = {}  # folder -> fd of its lock, held until this process exits


def cache_root() -> Path:
    """`HOME_CACHE` when set (tests point it into a temp dir), else the platform's user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("home"))


def bases_root() -> Path:
    return cache_root() / "bases"


def lock_path(folder: Path) -> Path:
    """`<cache>/base-locks/<folder>.lock`: beside `bases/`, not in it (its listing is the copies only)."""
    return folder.parent.parent / "base-locks" / f"{folder.name}.lock"


def _open_lock(folder: Path) -> int:
    ensure_private_dir(lock_path(folder).parent)
    return os.open(lock_path(folder), os.O_RDWR | os.O_CREAT, 0o600)


def hold(folder: Path) -> None:
    """Mark `folder` in use by this process until it exits (waits while `clean` deletes it), and used now."""
    key = str(folder)
    if key not in _HELD:
        fd = _open_lock(folder)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _HELD[key] = fd
    try:
        os.utime(folder / STAMP)
    except OSError:
        pass  # not built yet: the build writes the stamp


@dataclass
class BaseCopy:
    path: Path
    dtype: str | None
    source: str | None  # the GGUF it was made from
    used: float  # last use (the stamp's mtime; the folder's when there is none)
    size: int
    complete: bool
    leftover: bool = False  # a crashed build's temp folder

    @property
    def source_gone(self) -> bool:
        return bool(self.source) and not Path(self.source).is_file()

    def why_removable(self, older_than_days: float | None, now: float) -> str | None:
        """Why `clean` may remove it, or None to keep it."""
        if self.leftover:
            return "left by a build that crashed"
        if not self.complete:
            return "incomplete or an older format"
        if self.source_gone:
            return f"its model {self.source} is gone"
        if older_than_days is not None and now - self.used > older_than_days * 86400:
            return f"unused for {(now - self.used) / 86400:.0f} days"
        return None


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def scan(root: Path | None = None) -> list[BaseCopy]:
    """Every copy and crashed build's temp folder under `bases/`, by name."""
    root = bases_root() if root is None else root
    if not root.is_dir():
        return []
    out = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        if path.name.startswith("."):  # `.<name>.<pid>.tmp`: a build in progress or a crashed one
            pid = path.name.split(".")[-2]
            if path.name.endswith(".tmp") and pid.isdigit() and not pid_alive(int(pid)):
                out.append(BaseCopy(path, None, None, path.stat().st_mtime, _size(path), False, leftover=True))
            continue
        try:
            stamp = json.loads((path / STAMP).read_text())
            used = (path / STAMP).stat().st_mtime
        except (OSError, ValueError):
            stamp, used = {}, path.stat().st_mtime
        stamp = stamp if isinstance(stamp, dict) else {}
        weights = (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
        complete = stamp.get("format") == FORMAT and (path / "config.json").is_file() and weights
        source = stamp.get("source") if isinstance(stamp.get("source"), str) else None
        out.append(BaseCopy(path, stamp.get("dtype"), source, used, _size(path), complete))
    return out


def in_use(folder: Path) -> bool:
    """Whether a live process holds `folder` (its lock taken shared)."""
    if not lock_path(folder).exists():
        return False
    fd = _open_lock(folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def clean(older_than_days: float | None = None, dry_run: bool = False,
          root: Path | None = None) -> tuple[list[tuple[BaseCopy, str]], list[BaseCopy]]:
    """Remove the copies `why_removable` names, skipping any in use. Returns (removed or, with
    `dry_run`, to remove, with why; skipped as in use)."""
    now = time.time()
    removed, busy = [], []
    for copy in scan(root):
        why = copy.why_removable(older_than_days, now)
        if why is None:
            continue
        if copy.leftover:  # its builder is dead; no lock names a temp folder
            if not dry_run:
                shutil.rmtree(copy.path, ignore_errors=True)
            removed.append((copy, why))
            continue
        fd = _open_lock(copy.path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy.append(copy)
                continue
            if not dry_run:
                shutil.rmtree(copy.path)
            removed.append((copy, why))
        finally:
            os.close(fd)  # the lock file stays: a waiting process may have it open
    return removed, busy
