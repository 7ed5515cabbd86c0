"""Turn adapter choices (flags, persona settings, the router) into an active stack on the engine.

The manifest is the authority on which adapters exist and which base each was made for; the engine
only ever sees adapters that passed these checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm.errors import AdapterError, UnknownAdapterError
from llm.fingerprint import base_refusal
from vault.errors import ManifestError, VaultError
from vault.layout import Vault
from vault.manifest import Manifest, ManifestStore

Stack = list[tuple[str, float]]


@dataclass(frozen=True)
class StackSpec:
    """One `ID[:SCALE]` or `NAME[:SCALE]` as the user typed it (a name: its newest version, see
    `Manifest.resolve`); scale None means the adapter's default."""

    id: str
    scale: float | None = None

    @classmethod
    def parse(cls, text: str) -> StackSpec:
        ident, sep, scale = text.partition(":")
        if not ident:
            raise AdapterError(f"--adapter {text!r}: expected ID, NAME, ID:SCALE or NAME:SCALE")
        if not sep:
            return cls(ident)
        try:
            return cls(ident, float(scale))
        except ValueError:
            raise AdapterError(f"--adapter {text!r}: scale {scale!r} is not a number") from None


def persona_specs(persona) -> list[StackSpec]:
    """The adapters a persona card asks for (`extensions.home.adapters`), scale None = the adapter's own."""
    return [StackSpec(a["id"], a.get("scale")) for a in persona.home.get("adapters", [])] if persona else []


def resolve_stack(manifest: Manifest, specs: list[StackSpec], model_fingerprint: str, model_name: str) -> Stack:
    """Check every requested adapter against the manifest and the loaded base; return (id, scale) pairs.

    An adapter trained on top of others (its entry's `stack`, e.g. two-phase style over identity)
    brings them along beneath it, unless the caller already named them. A name picks its newest version
    (flags, cards' `extensions.home.adapters`, the palette: every choice comes through here)."""
    stack: Stack = []
    specs = [StackSpec(_entry(manifest, s.id).id, s.scale) for s in specs]
    for spec in _with_dependencies(manifest, specs):
        entry = _entry(manifest, spec.id)
        why = base_refusal(entry.base, model_fingerprint, model_name)
        if why:
            raise AdapterError(f"adapter '{entry.id}' was {why}: start Home with --model "
                               "pointing at its base")
        stack.append((entry.id, entry.scale if spec.scale is None else spec.scale))
    return stack


def _entry(manifest: Manifest, ref: str):
    """`Manifest.resolve` with the stack's error class: a name no adapter has refuses the turn (exit 2, as
    everywhere else an unknown adapter is named)."""
    try:
        return manifest.resolve(ref)
    except ManifestError as exc:
        raise UnknownAdapterError(str(exc)) from None


def _with_dependencies(manifest: Manifest, specs: list[StackSpec]) -> list[StackSpec]:
    named = {s.id for s in specs}
    out: list[StackSpec] = []

    def add(spec: StackSpec, seen: tuple[str, ...]) -> None:
        entry = manifest.adapters.get(spec.id)
        for dep in (entry.stack if entry else []):
            if dep["id"] not in named and dep["id"] not in seen and all(o.id != dep["id"] for o in out):
                add(StackSpec(dep["id"], float(dep.get("scale", 1.0))), (*seen, spec.id))
        if all(o.id != spec.id for o in out):
            out.append(spec)

    for spec in specs:
        add(spec, ())
    return out


def activate(engine, vault: Vault, manifest: Manifest, stack: Stack) -> None:
    """Load (once) and activate `stack`; the engine resets its KV cache if the stack changed. An adapter
    loaded from another file than the manifest names now (re-registered, and the watcher has not caught
    up yet) is reloaded from the manifest's file, as the watcher would."""
    for adapter_id, _ in stack:
        entry = manifest.adapters[adapter_id]
        path = vault.root / entry.file
        if not path.is_file():
            raise AdapterError(f"adapter '{adapter_id}': file {path} is missing from the vault")
        have = engine.loaded_adapters.get(adapter_id)
        if have is not None and Path(have) != path.resolve():
            engine.unload_adapter(adapter_id)
        engine.load_adapter(adapter_id, path)
    engine.set_adapters(stack)


class _NothingDue(Exception):
    """Leaves `ManifestStore.update` without writing (another process upgraded first)."""


def upgrade_fingerprints(vault: Vault, info, manifest: Manifest | None = None) -> list[str]:
    """Move adapters registered under the loaded model's v1 fingerprint to its v2 one; the ids moved.

    Run where a model is loaded for chat (`home ask`, the app): the one moment both values of the
    model in use are known. Only entries whose recorded base name is this model's move: v1 cannot tell
    a base from its tune, the name usually can; the rest keep v1, which `same_base` still accepts, as
    before. The old value stays in `base.legacy_fingerprint`. Best effort under a short lock: a
    manifest busy or unwritable now is upgraded on a later load, and nothing is refused meanwhile.
    `manifest`: a copy the caller just read (spares a read when nothing is due, the usual case)."""
    legacy, new = info.legacy_fingerprint, info.fingerprint

    def due(m: Manifest) -> list[str]:
        return [e.id for e in m.adapters.values()
                if e.base.get("fingerprint") == legacy and e.base.get("name") in (None, "", info.name)]

    store = ManifestStore(vault, lock_timeout=1.0)
    if not legacy or legacy == new:
        return []
    try:
        if not due(manifest if manifest is not None else store.read()):
            return []
        with store.update() as m:
            ids = due(m)
            if not ids:
                raise _NothingDue
            for i in ids:
                m.adapters[i].base = {**m.adapters[i].base, "fingerprint": new, "legacy_fingerprint": legacy}
        return ids
    except (_NothingDue, VaultError, OSError):
        return []
