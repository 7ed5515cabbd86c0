"""The watcher + sync loop the app runs: an adapter registered by another process is loaded into the
running engine, a removed one is unloaded (off the active stack first), a foreign one is skipped."""

from __future__ import annotations

import threading

import numpy as np

from home.hotload import sync_adapters
from tests.cli_helpers import run_home
from tests.loras import make_random_lora
from vault.layout import Vault
from vault.manifest import ManifestStore
from vault.watcher import VaultWatcher


def test_registered_elsewhere_is_hot_loaded_and_removal_unloads(tmp_path, engine, model_path):
    vault = Vault.open(tmp_path / "v")
    store = ManifestStore(vault)
    managed: set[str] = set()
    reports, fired = [], threading.Event()

    def on_manifest() -> None:
        reports.append(sync_adapters(engine, vault, store.read(), managed))
        fired.set()

    tokens = engine.tokenize("Hello there, how are you?")
    base = engine.logits(tokens)
    lora = make_random_lora(model_path, tmp_path / "a.gguf", rank=4, seed=5, scale_std=0.05)
    try:
        with VaultWatcher(vault, on_manifest=on_manifest, debounce=0.1):
            added = run_home(vault.root, "adapters", "add", str(lora), "--name", "fresh")  # another process
            assert added.returncode == 0, added.stderr
            assert fired.wait(20), "the watcher never reported the manifest change"
            assert reports[-1].loaded == ["fresh"] and "fresh" in engine.loaded_adapters
            engine.set_adapters([("fresh", 1.0)])
            assert not np.array_equal(engine.logits(tokens), base)

            fired.clear()
            removed = run_home(vault.root, "adapters", "remove", "fresh")
            assert removed.returncode == 0, removed.stderr
            assert fired.wait(20)
            assert reports[-1].unloaded == ["fresh"]
            assert "fresh" not in engine.loaded_adapters and engine.adapters == []
            assert np.array_equal(engine.logits(tokens), base)  # back to the base, bit for bit
    finally:
        engine.set_adapters([])
        for adapter_id in list(managed):
            if adapter_id in engine.loaded_adapters:
                engine.unload_adapter(adapter_id)


def test_foreign_and_missing_adapters_are_skipped_with_reasons(tmp_path, engine, model_path):
    vault = Vault.open(tmp_path / "v")
    lora = make_random_lora(model_path, tmp_path / "a.gguf", rank=2, seed=6)
    for name in ("other-base", "gone"):
        assert run_home(vault.root, "adapters", "add", str(lora), "--name", name).returncode == 0
    store = ManifestStore(vault)
    with store.update() as m:
        m.adapters["other-base"].base = {"fingerprint": "0" * 64, "name": "Another Model 7B"}
    (vault.adapters_dir / "gone" / "adapter.gguf").unlink()
    report = sync_adapters(engine, vault, store.read(), set())
    assert report.loaded == [] and dict(report.skipped) == {
        "other-base": "made for Another Model 7B",
        "gone": f"file missing: {(vault.adapters_dir / 'gone' / 'adapter.gguf').resolve()}",
    }
    assert "no change" not in report.summary() and "skipped other-base" in report.summary()
