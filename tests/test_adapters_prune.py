"""`home adapters prune`: each name keeps its newest K versions; a user's voice, what a persona card names
and what a kept adapter is built on stay whatever K; --dry-run changes nothing; logs are never touched."""

from __future__ import annotations

import json
import shutil

from tests.cli_helpers import run_home
from tests.loras import make_random_lora
from trainer.worker.per_persona import point_persona
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore


def _vault(tmp_path, model_path):  # noqa: ANN001, ANN202
    from llm.gguf_meta import read_model_info

    vault = Vault.open(tmp_path / "v")
    lora = make_random_lora(model_path, tmp_path / "a.gguf", rank=1, n_layers=1)
    base = {"fingerprint": read_model_info(model_path).fingerprint}
    versions = {"me-voice": ("voice", 6), "tone": ("style", 3), "sage-persona": ("persona", 4)}
    with ManifestStore(vault).update() as m:
        for name, (kind, count) in versions.items():
            for v in range(1, count + 1):
                ident = f"{name}-{v}"
                (vault.adapters_dir / ident).mkdir()
                shutil.copy(lora, vault.adapters_dir / ident / "adapter.gguf")
                stack = [{"id": "tone-1", "scale": 0.5}] if ident == "tone-3" else []  # built on an old one
                m.add_adapter(AdapterEntry(id=ident, name=name, file=f"adapters/{ident}/adapter.gguf", base=base,
                                           owner="sage" if kind == "persona" else "me", kind=kind, stack=stack))
        m.ensure_user("me")["voice_adapter"] = "me-voice-4"  # set back by hand
    point_persona(vault, "sage", "sage-persona-2")  # the card pins an older version
    (vault.logs_dir / "s1.jsonl").write_text(json.dumps({"id": "s1:1", "role": "user", "text": "hi"}) + "\n")
    return vault


def _state(vault: Vault) -> tuple[list[str], list[str], bytes]:
    ids = sorted(ManifestStore(vault).read().adapters)
    return ids, sorted(p.name for p in vault.adapters_dir.iterdir()), (vault.logs_dir / "s1.jsonl").read_bytes()


def test_prune_keeps_the_newest_k_and_everything_in_use(tmp_path, model_path):
    vault = _vault(tmp_path, model_path)
    before = _state(vault)

    dry = run_home(vault.root, "adapters", "prune", "--keep", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove me-voice-3" in dry.stdout and _state(vault) == before

    out = run_home(vault.root, "adapters", "prune", "--keep", "2")
    assert out.returncode == 0, out.stderr
    gone = ["me-voice-1", "me-voice-2", "me-voice-3", "sage-persona-1"]
    ids, folders, log = _state(vault)
    assert ids == folders == sorted(set(before[0]) - set(gone)), out.stdout
    assert "4 old versions: removed" in out.stdout and log == before[2]
    manifest = ManifestStore(vault).read()
    assert manifest.users["me"]["voice_adapter"] == "me-voice-4"

    one = run_home(vault.root, "adapters", "prune", "me-voice", "--keep", "1")
    assert one.returncode == 0, one.stderr
    assert [i for i in _state(vault)[0] if i.startswith("me-voice")] == ["me-voice-4", "me-voice-6"]

    bad = run_home(vault.root, "adapters", "prune", "--keep", "0")
    assert bad.returncode == 2 and "argument --keep: expected a whole number >= 1" in bad.stderr.splitlines()[-1]
