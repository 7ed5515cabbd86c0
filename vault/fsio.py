"""File primitives every vault writer uses: atomic replace, an inter-process lock, private modes.

Why atomic: the manifest and personas are read by the app while the trainer writes them; a reader must
see the old file or the new one, never half of either, and a crash mid-write must leave the old one.
Why fsync the directory too: the rename itself is only durable once the directory entry is on disk.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) as 0700; tighten an existing directory that is looser."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


# What every temp name beside its target looks like: `.<name>.tmp-<pid>[-<n>]` (and `.old-` for a folder
# swapped out), so a sweep can tell a live writer's temp from one a killed process left behind.
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:-\d+)?$")


def temp_sibling(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """A unique hidden name beside `path` that says which process owns it (see `TEMP_RE`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{time.monotonic_ns()}")


def temp_owner(name: str) -> int | None:
    """The pid in a temp name made by `temp_sibling` (or the GGUF writer's `.<name>.tmp-<pid>`); else None."""
    m = TEMP_RE.match(name)
    return int(m.group("pid")) if m else None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_sha256(path: str | os.PathLike) -> str:
    """The file's sha256, read a megabyte at a time (adapters run to hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temp file beside `path` (0600), fsync it, rename over `path`, fsync the dir."""
    path = Path(path)
    ensure_private_dir(path.parent)
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Pretty, stable JSON (sorted keys off: field order is meaningful to people reading it)."""
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def private_tree(path: str | os.PathLike) -> None:
    """fsync every file and folder under `path` (bottom up) and make them 0600/0700: what libraries
    (peft, transformers) wrote there becomes durable and private before it is renamed into place."""
    path = Path(path)
    for dirpath, _dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            os.chmod(p, FILE_MODE)
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(dirpath, DIR_MODE)
        fsync_dir(Path(dirpath))


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the OS cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in_dir(tmp: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Make the complete folder `tmp` be `dest`. A reader (or a process killed at any moment) sees the old
    `dest` or the new one: one atomic exchange on Linux; elsewhere `dest` is first renamed to a `.old-`
    sibling, which `restore_swapped_dir` puts back if a kill left no `dest`."""
    tmp, dest = Path(tmp), Path(dest)
    private_tree(tmp)
    if not dest.exists():
        os.rename(tmp, dest)
    elif _exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # it now holds the old folder
    else:
        old = temp_sibling(dest, "old")
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dest.parent)
    return dest


def restore_swapped_dir(dest: str | os.PathLike) -> Path | None:
    """After a kill inside the non-Linux `swap_in_dir`: no `dest` but its `.old-` copy from a dead process
    is there; put it back (the last complete version). Returns the folder restored, if any."""
    dest = Path(dest)
    if dest.exists() or not dest.parent.is_dir():
        return None
    for p in sorted(dest.parent.glob(f".{dest.name}.old-*"), reverse=True):
        m = TEMP_RE.match(p.name)
        if m and m.group("name") == dest.name and not pid_alive(int(m.group("pid"))):
            os.rename(p, dest)
            fsync_dir(dest.parent)
            return p
    return None


@contextmanager
def replacing_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """`with replacing_dir(d) as tmp:` fill `tmp`; on a clean exit it becomes `d` (`swap_in_dir`), on an
    exception it is removed and `d` is untouched. Why: a folder saved in place (an adapter by peft)
    is half old, half new if the process dies mid-save, and the next run would read it."""
    dest = Path(dest)
    ensure_private_dir(dest.parent)
    tmp = temp_sibling(dest)
    ensure_private_dir(tmp)
    try:
        yield tmp
        swap_in_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def append_line_fsync(path: str | os.PathLike, line: str) -> None:
    """Append one line (a newline is added) with O_APPEND and fsync: a completed call survives kill -9."""
    if "\n" in line:
        raise ValueError("append_line_fsync: the line must not contain a newline")
    path = Path(path)
    new = not path.exists()
    try:  # never through a link: a log or preferences file linked out of the vault is refused
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link; Home appends only to its own files", str(path)) from None
        raise
    try:
        data = (line + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)


class LockTimeout(OSError):
    """Another process held the lock for longer than we were willing to wait. The CLI prints it as one
    line (exit 1: nothing was wrong with the input; try again when the other process is done)."""

    exit_code = 1


class FileLock:
    """An exclusive lock on a lock file, between Home's processes (the app, `home …`, the trainer) and threads.

    `filelock` underneath (flock on Unix: the kernel drops it when its holder dies, so no lock is ever
    stale; a soft lock with a pid where a filesystem has no flock). What Home adds: the file is 0600 in
    a 0700 folder; a timeout (0: one try) raises `LockTimeout` naming the file, so a stuck holder is
    reported instead of hanging the UI; any thread may release (filelock's default thread-local holds
    would leave a lock taken on one thread and released on another held: the memory store's is). Not
    re-entrant: a second FileLock on the same path waits, in the same thread too.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._lock: Any = None

    def acquire(self) -> None:
        import filelock

        ensure_private_dir(self.path.parent)
        lock = filelock.FileLock(self.path, timeout=self.timeout, mode=FILE_MODE, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise LockTimeout(f"{self.path}: still locked by another process after {self.timeout:g} s") from None
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
