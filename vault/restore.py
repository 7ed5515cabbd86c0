"""`home restore`: a backup (vault/backup.py) unpacked into a new vault, verified before it is put in place.

Why this order: everything is extracted into a temp folder beside the target, every member checked against
the archive's own listing (size, sha256), unsafe members (absolute, `..`, links, devices) refused, modes
made private; only then is the folder renamed to the target. A corrupt or truncated archive leaves nothing
behind, and an existing vault is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .backup import FORMAT, META, ArchiveError
from .fsio import DIR_MODE, fsync_dir, private_tree, temp_sibling
from .layout import Vault


@dataclass
class Restored:
    root: Path
    files: int = 0
    bytes: int = 0
    meta: dict = field(default_factory=dict)


def _safe(archive: Path, m: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(m.name)
    if name.is_absolute() or ".." in name.parts or not name.parts or name.parts[0] in ("", "."):
        raise ArchiveError(f"{archive}: member {m.name!r}: unsafe path (absolute or '..')")
    if not m.isfile():
        raise ArchiveError(f"{archive}: member {m.name!r}: not a regular file (links and devices are refused)")
    return name


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ArchiveError(f"{target}: exists and is not empty; restore into a new or empty directory (--vault DIR)")


def restore(archive: Path, target: Path) -> Restored:
    """Unpack `archive` into `target` (missing or empty), verified; raises ArchiveError with nothing written."""
    archive, target = Path(archive), Path(target).absolute()
    _check_target(target)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    os.mkdir(tmp, DIR_MODE)
    out = Restored(target)
    try:
        seen, meta = _extract(archive, tmp)
        _verify(archive, seen, meta)
        Vault.open(tmp)  # the standard folders (locks/, and any the backup had empty)
        private_tree(tmp)  # fsynced, dirs 0700 and files 0600
        _check_target(target)  # again: something may have appeared meanwhile
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    out.files, out.bytes, out.meta = len(seen), sum(s for s, _ in seen.values()), meta
    return out


def _extract(archive: Path, tmp: Path) -> tuple[dict[str, tuple[int, str]], dict | None]:
    """One streaming pass: each member written under `tmp`, hashed; the listing member parsed."""
    seen: dict[str, tuple[int, str]] = {}
    meta, current = None, "(header)"
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for m in tar:
                current = m.name
                name = _safe(archive, m)
                if m.name in seen or (m.name == META and meta is not None):
                    raise ArchiveError(f"{archive}: member {m.name!r}: appears twice")
                src = tar.extractfile(m)
                if m.name == META:
                    try:
                        meta = json.loads(src.read())
                    except ValueError as exc:
                        raise ArchiveError(f"{archive}: member {META}: not valid JSON ({exc})") from None
                    continue
                path = tmp.joinpath(*name.parts)
                path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                h, n = hashlib.sha256(), 0
                with open(path, "xb") as fh:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        fh.write(chunk)
                        n += len(chunk)
                seen[m.name] = (n, h.hexdigest())
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        why = str(exc) or type(exc).__name__
        raise ArchiveError(f"{archive}: member {current!r}: truncated or corrupt ({why})") from None
    return seen, meta


def _verify(archive: Path, seen: dict[str, tuple[int, str]], meta: dict | None) -> None:
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise ArchiveError(f"{archive}: member {META}: missing (truncated archive, or not a Home backup)")
    if not isinstance(meta.get("format"), int) or meta["format"] > FORMAT:
        raise ArchiveError(f"{archive}: member {META}: field 'format' is {meta.get('format')!r}; this Home reads "
                           f"format {FORMAT} (a newer Home wrote it)")
    files = meta["files"]
    for name, want in files.items():
        if name not in seen:
            raise ArchiveError(f"{archive}: member {name!r}: listed in {META} but missing")
        size, digest = seen[name]
        if not isinstance(want, dict) or want.get("size") != size or want.get("sha256") != digest:
            raise ArchiveError(f"{archive}: member {name!r}: size or sha256 differs from {META} (corrupt)")
    extra = sorted(set(seen) - set(files))
    if extra:
        raise ArchiveError(f"{archive}: member {extra[0]!r}: not listed in {META}")
