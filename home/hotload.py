"""Keep the running engine's loaded adapters in step with the manifest (new, replaced, removed).

The trainer registers adapters from another process; the app's watcher calls `sync_adapters` and
announces what changed. Loading validates each file first (the pool refuses foreign or broken files),
an adapter made for another base is skipped with its reason, and a removed adapter is taken off the
active stack before it is freed (the engine resets its cache when the stack changes).

Only adapters in reach are loaded ahead (`Manifest.in_reach`): each name's newest version and each user's voice.
Every retraining registers a new version and keeps the old ones; loading them all made the app's start
(and its memory) grow with the years: a weekly voice for three years is 156 files read before the first
reply could start. An older version still works wherever it is named: `stack.activate` loads it then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llm.errors import AdapterError
from llm.fingerprint import same_base
from vault.layout import Vault
from vault.manifest import Manifest


@dataclass
class SyncReport:
    loaded: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # out of reach now (superseded), freed; still registered
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why)

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.reloaded or self.unloaded)

    def summary(self) -> str:
        parts = []
        for label, ids in (("loaded", self.loaded), ("reloaded", self.reloaded), ("unloaded", self.unloaded)):
            if ids:
                parts.append(f"{label} {', '.join(ids)}")
        parts.extend(f"skipped {i} ({why})" for i, why in self.skipped)
        return "adapters: " + "; ".join(parts) if parts else "adapters: no change"


def sync_adapters(engine, vault: Vault, manifest: Manifest, managed: set[str] | None = None) -> SyncReport:
    """Load every adapter in reach (`Manifest.in_reach`) that fits the engine's base; reload a loaded one whose
    file changed; unload those no longer registered, and free those this function loaded that are out of
    reach now (a newer version came) unless the active stack holds them.

    `managed`: ids this function loaded earlier (so adapters loaded by other means are left alone);
    it is updated in place. Returns what changed.
    """
    report = SyncReport()
    managed = managed if managed is not None else set(engine.loaded_adapters)
    fingerprint = engine.info.fingerprint
    loaded = engine.loaded_adapters  # id -> resolved path
    reach = manifest.in_reach()
    for adapter_id in sorted(managed - set(manifest.adapters)):
        if adapter_id in loaded:
            engine.unload_adapter(adapter_id)
            report.unloaded.append(adapter_id)
        managed.discard(adapter_id)
    active = {i for i, _ in engine.adapters}
    for adapter_id in sorted(managed - reach - active):
        if adapter_id in loaded:
            engine.unload_adapter(adapter_id)
            report.released.append(adapter_id)
        managed.discard(adapter_id)
    loaded = engine.loaded_adapters
    for adapter_id, entry in manifest.adapters.items():
        if adapter_id not in reach and adapter_id not in loaded:
            continue  # an older version: loaded when a turn names it
        if not same_base(entry.base.get("fingerprint"), fingerprint):
            report.skipped.append((adapter_id, f"made for {entry.base.get('name') or 'another base'}"))
            continue
        path = (vault.root / entry.file).resolve()
        have = loaded.get(adapter_id)
        if have is not None and Path(have) == path:
            continue
        if not path.is_file():
            report.skipped.append((adapter_id, f"file missing: {path}"))
            continue
        if have is not None:
            engine.unload_adapter(adapter_id)
        try:
            engine.load_adapter(adapter_id, path)
        except AdapterError as exc:
            report.skipped.append((adapter_id, str(exc)))
            managed.discard(adapter_id)
            continue
        (report.reloaded if have is not None else report.loaded).append(adapter_id)
        managed.add(adapter_id)
    return report
