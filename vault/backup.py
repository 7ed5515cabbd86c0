"""One archive of the whole vault, consistent while the app runs, and its restore into a new directory.

Why not `cp -r`: the manifest, a gestalt or the memory's SQLite files can be mid-write. Here each group is
taken under the lock its writers hold, only for as long as it takes to open its files: every writer of the
manifest, gestalts and adapters/ replaces whole files by rename, so a file opened under the lock stays that
version while it is streamed after the lock is gone. Logs are append-only: each is read up to its size at
snapshot time, cut to its last whole line. The memory store (ChromaDB + SQLite, written in place) is copied
only under its own lock, which the running app owns for its whole session: then memory is left out and the
restored vault rebuilds it from the logs (`home memory reindex`). Compression is gzip: xz shrinks JSONL a
little more but runs ~10x slower, and the bulk (adapters, float32 vectors) does not compress either way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .errors import VaultError
from .fsio import TEMP_RE, FileLock, LockTimeout, fsync_dir, temp_sibling
from .layout import Vault
from .orphans import adapters_lock

FORMAT = 1
META = "home-backup.json"
RUNS_SMALL = 1 << 20  # without --with-runs, runs/ keeps files up to this size (job, state, plots), no checkpoints
SKIP_DIRS = {"locks"}
SQLITE_SIDE = ("-wal", "-shm", "-journal")


class BackupError(VaultError):
    """A backup that could not be written (a lock held too long, the destination unwritable)."""

    exit_code = 1


class ArchiveError(VaultError):
    """An archive refused by restore: corrupt, truncated, unsafe, or a target that is not empty."""


@dataclass
class Member:
    name: str  # the path inside the vault, posix
    fh: BinaryIO
    size: int


@dataclass
class Report:
    path: Path
    files: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    left_out: list[str] = field(default_factory=list)
    seconds: float = 0.0
    fingerprints: list[str] = field(default_factory=list)


def _open(path: Path, name: str, whole_lines: bool = False) -> Member | None:
    """The file as it is now (an open fd keeps this version through a later rename); JSONL cut to whole lines."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed after it is streamed
    except FileNotFoundError:
        return None
    size = os.fstat(fh.fileno()).st_size
    if whole_lines and size:
        size = _last_newline(fh, size)
    return Member(name, fh, size)


def _last_newline(fh: BinaryIO, size: int) -> int:
    """The length up to and including the last b'\\n' before `size` (a record being appended is left out)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        fh.seek(start)
        i = fh.read(end - start).rfind(b"\n")
        if i >= 0:
            fh.seek(0)
            return start + i + 1
        end = start
    fh.seek(0)
    return 0


def _files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not TEMP_RE.match(d))
        for f in sorted(filenames):
            p = Path(dirpath, f)
            if not TEMP_RE.match(f) and p.is_file() and not p.is_symlink():
                yield p


def _group(vault: Vault, folder: Path, keep: Callable[[Path], bool] = lambda p: True) -> list[Member]:
    out = []
    for p in _files(folder):
        if keep(p):
            m = _open(p, p.relative_to(vault.root).as_posix(), whole_lines=p.suffix == ".jsonl")
            if m is not None:
                out.append(m)
    return out


def _logs(vault: Vault) -> list[Member]:
    """Each log under a shared flock (ConversationLog.append holds it exclusive while it writes a record)."""
    import fcntl

    out = []
    for p in _files(vault.logs_dir):
        m = _open(p, p.relative_to(vault.root).as_posix())
        if m is None:
            continue
        fcntl.flock(m.fh.fileno(), fcntl.LOCK_SH)
        try:
            m.size = _last_newline(m.fh, os.fstat(m.fh.fileno()).st_size)
        finally:
            fcntl.flock(m.fh.fileno(), fcntl.LOCK_UN)
        out.append(m)
    return out


def _memory(vault: Vault, scratch: Path) -> list[Member] | None:
    """The memory folder under its lock (None when another process owns it); SQLite through its backup API."""
    out = []
    for p in _files(vault.memory_dir):
        name = p.relative_to(vault.root).as_posix()
        if p.name.endswith(SQLITE_SIDE):
            continue
        if p.suffix in (".sqlite3", ".sqlite"):
            copy = Path(tempfile.mkstemp(dir=scratch)[1])
            src = sqlite3.connect(f"{p.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            m = _open(copy, name)
        else:
            m = _open(p, name)
        if m is not None:
            out.append(m)
    return out


def _fingerprints(manifest_bytes: bytes | None) -> list[str]:
    try:
        adapters = json.loads(manifest_bytes or b"{}").get("adapters") or {}
        return sorted({(a.get("base") or {}).get("fingerprint") for a in adapters.values()} - {None})
    except (ValueError, AttributeError):
        return []


class _Hashing:
    """A reader that hashes and counts what tarfile copies out of it, reporting progress."""

    def __init__(self, fh: BinaryIO, tick: Callable[[int], None]) -> None:
        self.fh, self.tick, self.h, self.n = fh, tick, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.h.update(data)
        self.n += len(data)
        self.tick(len(data))
        return data


def backup(vault: Vault, dest: Path, *, with_runs: bool = False, adapters: bool = True,
           progress: Callable[[int, int], None] | None = None, version: str = "") -> Report:
    """Write `dest` (gzip tar, 0600, temp + fsync + rename). `progress(done_bytes, known_bytes)` per chunk."""
    dest = Path(dest).absolute()
    if dest.is_dir():
        raise BackupError(f"{dest}: is a directory; name the archive file (e.g. {dest}/home-backup.tar.gz)")
    if dest.resolve().is_relative_to(vault.root.resolve()):
        raise BackupError(f"{dest}: inside the vault it backs up; write the archive elsewhere")
    report, t0, done = Report(dest), time.monotonic(), [0]
    tmp = temp_sibling(dest)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise BackupError(f"{dest}: cannot write ({exc.strerror})") from None
    listing: dict[str, dict] = {}

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], report.bytes_in)

    try:
        with os.fdopen(fd, "wb") as raw, tempfile.TemporaryDirectory(dir=dest.parent) as scratch, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:

            def put(members: list[Member]) -> None:
                report.bytes_in += sum(m.size for m in members)
                for m in members:
                    with m.fh:
                        info = tarfile.TarInfo(m.name)
                        info.size, info.mode, info.mtime = m.size, 0o600, int(time.time())
                        r = _Hashing(m.fh, tick)
                        tar.addfile(info, r)
                        listing[m.name] = {"size": m.size, "sha256": r.h.hexdigest()}

            mem_lock = FileLock(vault.lock_path("memory"), timeout=0)
            try:
                mem_lock.acquire()
            except LockTimeout:
                report.left_out.append("memory/ (the running app owns it; after restore `home memory reindex` "
                                       "rebuilds it from the logs)")
            else:
                try:  # streamed under the lock: ChromaDB and the vector files are written in place
                    put(_memory(vault, Path(scratch)) or [])
                finally:
                    mem_lock.release()
            try:
                with adapters_lock(vault), FileLock(vault.lock_path("manifest"), timeout=30):
                    top = [m for n in ("config.toml", "manifest.json", "manifest.json.bak")
                           if (m := _open(vault.root / n, n))]
                    if adapters:
                        top += _group(vault, vault.adapters_dir)
                with FileLock(vault.lock_path("gestalts"), timeout=30):
                    top += _group(vault, vault.gestalts_dir)
            except LockTimeout as exc:
                raise BackupError(str(exc)) from None
            if not adapters:
                report.left_out.append("adapters/ (--no-adapters; retrain or re-add them)")
            man = next((m for m in top if m.name == "manifest.json"), None)
            if man is not None:
                report.fingerprints = _fingerprints(man.fh.read(man.size))
                man.fh.seek(0)
            put(top)
            put(_logs(vault))
            skipped = [0, 0]  # files, bytes

            def runs_keep(p: Path) -> bool:
                size = p.stat().st_size
                ok = with_runs or ("checkpoints" not in p.parts and size <= RUNS_SMALL)
                if not ok:
                    skipped[0], skipped[1] = skipped[0] + 1, skipped[1] + size
                return ok

            special = {"adapters", "logs", "gestalts", "memory", "runs", *SKIP_DIRS}
            for entry in sorted(vault.root.iterdir()):
                if entry.is_dir() and not entry.is_symlink() and entry.name not in special \
                        and not TEMP_RE.match(entry.name):
                    put(_group(vault, entry))
            put(_group(vault, vault.runs_dir, runs_keep))
            if skipped[0]:
                report.left_out.append(f"runs/ checkpoints and weight copies: {skipped[0]} files, "
                                       f"{skipped[1] / 1e6:.2f} MB (--with-runs keeps them)")
            meta = json.dumps({"format": FORMAT, "home_version": version, "created": time.time(),
                               "model_fingerprints": report.fingerprints, "left_out": report.left_out,
                               "files": listing}, indent=1).encode()
            info = tarfile.TarInfo(META)
            info.size, info.mode, info.mtime = len(meta), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(meta))
            tar.close()
            gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    report.files, report.bytes_out, report.seconds = len(listing), dest.stat().st_size, time.monotonic() - t0
    return report

