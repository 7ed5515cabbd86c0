"""What a process killed mid-write leaves in the vault, found (`home doctor`) and put right (the next
training run or registration).

Every writer makes its files under a temp name that carries its pid (`fsio.temp_sibling`), so a temp
whose process is gone is garbage. An adapter folder is renamed into `adapters/` before its manifest
entry is written; a kill between the two leaves a folder the manifest does not name. The trainer writes
`registration.json` (the entry it is about to add) into the folder before the rename: such a folder,
complete (its GGUF's sha256 matches), is adopted; any other unnamed folder (a half-removed adapter, an
`adapters add` that died) is removed. Both run under `locks/adapters.lock`, which every writer of
`adapters/` holds, so a live writer's folder is never taken for an orphan.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import VaultError
from .fsio import TEMP_RE, FileLock, file_sha256, pid_alive, restore_swapped_dir
from .layout import Vault
from .manifest import AdapterEntry, ManifestStore

REGISTRATION = "registration.json"
_LEGACY_TMP = ".tmp-"  # the trainer's adapter temp folder before it carried a pid


@dataclass(frozen=True)
class Leftover:
    path: Path
    kind: str  # "temp" | "swapped" (a folder's last version, moved aside) | "adoptable" | "orphan"

    def describe(self, root: Path) -> str:
        what = {"temp": "temp of a dead process", "swapped": "previous version to restore",
                "adoptable": "complete adapter missing from the manifest",
                "orphan": "adapter folder the manifest does not name"}[self.kind]
        return f"{self.path.relative_to(root)} ({what})"


def adapters_lock(vault: Vault) -> FileLock:
    """Held by whoever writes under `adapters/` (registration, `adapters add`, the sweep)."""
    return FileLock(vault.lock_path("adapters"), timeout=120.0)


def _dead_temp(name: str) -> bool:
    m = TEMP_RE.match(name)
    return bool(m) and not pid_alive(int(m.group("pid")))


def _named_folders(vault: Vault) -> set[str] | None:
    """Folder names under adapters/ that manifest entries point into; None if the manifest is unreadable
    (then nothing can be called an orphan)."""
    try:
        adapters = ManifestStore(vault).read().adapters
    except VaultError:
        return None
    named = set()
    for entry in adapters.values():
        parts = Path(entry.file).parts
        if len(parts) >= 3 and parts[0] == "adapters":
            named.add(parts[1])
    return named


def _registration(folder: Path) -> dict | None:
    """The entry a complete, interrupted registration left in `folder`; None if absent or not matching."""
    try:
        note = json.loads((folder / REGISTRATION).read_text())
        entry = AdapterEntry.from_dict(note["entry"], str(folder / REGISTRATION))
        digest = file_sha256(folder / "adapter.gguf")
    except (OSError, ValueError, KeyError, TypeError, RecursionError, VaultError):
        return None
    if entry.id != folder.name or entry.file != f"adapters/{folder.name}/adapter.gguf" or digest != entry.sha256:
        return None
    return note


def find_leftovers(vault: Vault) -> list[Leftover]:
    """Every leftover in the vault, without changing anything."""
    found: list[Leftover] = []
    for dirpath, dirnames, filenames in os.walk(vault.root):
        here = Path(dirpath)
        for name in filenames + dirnames:
            m = TEMP_RE.match(name)
            if m and _dead_temp(name):
                kind = "swapped" if m.group("kind") == "old" and not (here / m.group("name")).exists() else "temp"
                found.append(Leftover(here / name, kind))
        dirnames[:] = [d for d in dirnames if not TEMP_RE.match(d)]
    named = _named_folders(vault)
    if vault.adapters_dir.is_dir():
        for p in sorted(vault.adapters_dir.iterdir()):
            if p.name.startswith(_LEGACY_TMP) and not TEMP_RE.match(p.name) and p.is_dir():
                found.append(Leftover(p, "temp"))
            elif named is not None and p.is_dir() and not p.name.startswith(".") and p.name not in named:
                found.append(Leftover(p, "adoptable" if _registration(p) else "orphan"))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _adopt(vault: Vault, folder: Path) -> str:
    note = _registration(folder)
    if note is None:  # changed since it was found
        _remove(folder)
        return f"removed {folder.relative_to(vault.root)} (incomplete adapter)"
    entry = AdapterEntry.from_dict(note["entry"], str(folder / REGISTRATION))
    refused = None
    with ManifestStore(vault).update() as manifest:  # a lock timeout propagates: the folder waits
        try:
            manifest.add_adapter(entry)
        except VaultError as exc:  # the manifest refuses the entry itself: it can never be adopted
            refused = str(exc).splitlines()[0]
        else:
            if note.get("set_voice") and entry.owner:
                manifest.ensure_user(entry.owner)["voice_adapter"] = entry.id
    if refused is not None:
        _remove(folder)
        return f"removed {folder.relative_to(vault.root)} (not adoptable: {refused})"
    (folder / REGISTRATION).unlink(missing_ok=True)
    return f"adopted {entry.id} (registered before the manifest was updated)"


def clean_leftovers(vault: Vault, *, locked: bool = False) -> list[str]:
    """Put right what `find_leftovers` sees; one line per action. `locked`: the caller holds
    `adapters_lock` already (registration does)."""
    if not locked:
        with adapters_lock(vault):
            return clean_leftovers(vault, locked=True)
    done: list[str] = []
    for lo in find_leftovers(vault):
        rel = lo.path.relative_to(vault.root)
        if lo.kind == "swapped":
            m = TEMP_RE.match(lo.path.name)
            dest = lo.path.with_name(m.group("name")) if m else None
            if dest is not None and restore_swapped_dir(dest) is not None:
                done.append(f"restored {dest.relative_to(vault.root)} from {rel}")
                continue
            _remove(lo.path)
            done.append(f"removed {rel}")
        elif lo.kind == "adoptable":
            done.append(_adopt(vault, lo.path))
        else:
            _remove(lo.path)
            done.append(f"removed {rel} ({'dead temp' if lo.kind == 'temp' else 'orphan adapter folder'})")
    named = _named_folders(vault) or set()
    for name in named:  # a registration that finished but died before dropping its note
        (vault.adapters_dir / name / REGISTRATION).unlink(missing_ok=True)
    return done
