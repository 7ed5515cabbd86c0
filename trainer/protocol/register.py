"""The last stage: move a verified adapter into the vault and record it in the manifest.

Order matters for "a half-written adapter never appears in the manifest": the files are assembled in a
hidden temp directory (fsynced, with `registration.json`: the entry about to be added), renamed into
place (atomic on one filesystem), and only then is the manifest entry written under the manifest lock.
If that fails, the directory is removed again; if the process is killed between the rename and the
manifest write, the next registration or training run adopts the folder (`vault.orphans`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vault.fsio import atomic_write_json, ensure_private_dir, file_sha256, replacing_dir
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore, name_key, now_iso
from vault.orphans import REGISTRATION, adapters_lock, clean_leftovers


@dataclass(frozen=True)
class Registered:
    id: str
    path: Path  # the GGUF inside the vault
    entry: dict


slug = name_key  # run folders and adapter ids share one naming (trainer.protocol.runs imports it from here)


def next_id(store: ManifestStore, name: str, kind: str | None = None) -> str:
    """`<slug>-<n>`: retraining keeps every earlier version, so the user can go back. With `kind`, a
    name another kind of adapter holds is refused here, before anything is copied."""
    manifest = store.read()
    if kind is not None:
        manifest.check_name(name, kind)
    return manifest.next_id(name, taken=lambda ident: (store.vault.adapters_dir / ident).exists())


def _copy_private(src: Path, dest: Path) -> None:
    if src.is_dir():
        ensure_private_dir(dest)
        for child in src.iterdir():
            _copy_private(child, dest / child.name)
    else:
        shutil.copyfile(src, dest)
        dest.chmod(0o600)


def register_adapter(
    vault: Vault,
    *,
    name: str,
    gguf: Path,
    peft_dir: Path | None,
    extra_files: list[Path],
    base: dict,
    owner: str,
    kind: str,
    tasks: list[str],
    tones: list[str],
    rank: int,
    alpha: float,
    dataset: dict,
    metrics: dict,
    training: dict,
    verification: dict,
    parent: str | None = None,
    stack: list[dict] | None = None,
    set_voice: bool = False,
    promotion: dict | None = None,
) -> Registered:
    """Copy the adapter (GGUF, peft source, reports) into `adapters/<id>/` and add its manifest entry.
    `promotion`: the gate's record (trainer/evaluation/gate.py), kept in the entry as `promotion`."""
    store = ManifestStore(vault)
    with adapters_lock(vault):
        clean_leftovers(vault, locked=True)  # what a killed registration left, before choosing an id
        adapter_id = next_id(store, name, kind)
        final = vault.adapters_dir / adapter_id
        entry = AdapterEntry(
            id=adapter_id, name=name, file=f"adapters/{adapter_id}/adapter.gguf", sha256=file_sha256(gguf),
            base=base, owner=owner, kind=kind, tasks=list(tasks), tones=list(tones), rank=rank, alpha=float(alpha),
            dataset=dataset, metrics=metrics, training=training, verification=verification, parent=parent,
            stack=list(stack or []), created=now_iso(), extra={"promotion": promotion} if promotion else {},
        )
        with replacing_dir(final) as tmp:
            _copy_private(gguf, tmp / "adapter.gguf")
            if peft_dir is not None:
                _copy_private(peft_dir, tmp / "peft")
            for f in extra_files:
                if f.exists():
                    _copy_private(f, tmp / f.name)
            atomic_write_json(tmp / "metrics.json", {"metrics": metrics, "training": training,
                                                     "verification": verification, "dataset": dataset})
            atomic_write_json(tmp / REGISTRATION, {"entry": entry.to_dict(), "set_voice": set_voice})
        if file_sha256(final / "adapter.gguf") != entry.sha256:  # the copy is what the manifest will vouch for
            shutil.rmtree(final, ignore_errors=True)
            raise OSError(f"{final / 'adapter.gguf'}: sha256 changed while copying {gguf}")
        try:
            with store.update() as manifest:
                manifest.add_adapter(entry)
                if set_voice:
                    manifest.ensure_user(owner)["voice_adapter"] = adapter_id
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        (final / REGISTRATION).unlink(missing_ok=True)
    return Registered(adapter_id, final / "adapter.gguf", entry.to_dict())
