"""An old vault holds every version of every adapter ever trained: the app loads only those in reach
(each name's newest, each user's voice, what they stack), an older one still loads when named, and a
version superseded while the app runs is freed unless the stack is using it."""

from __future__ import annotations

from home.hotload import sync_adapters
from home.stack import activate
from tests.loras import make_random_lora
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore


def _register(vault: Vault, model_path, ident: str, name: str, kind: str, **fields) -> None:  # noqa: ANN001
    from llm.gguf_meta import read_model_info

    target = vault.adapters_dir / ident / "adapter.gguf"
    target.parent.mkdir(parents=True)
    make_random_lora(model_path, target, rank=2, n_layers=1, seed=len(ident))
    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry(id=ident, name=name, file=f"adapters/{ident}/adapter.gguf", owner="me",
                                   base={"fingerprint": read_model_info(model_path).fingerprint}, kind=kind,
                                   **fields))


def test_only_adapters_in_reach_load_ahead_and_older_ones_load_when_named(tmp_path, engine, model_path):
    vault = Vault.open(tmp_path / "v")
    store = ManifestStore(vault)
    for v in (1, 2):
        _register(vault, model_path, f"tone-{v}", "tone", "style")
    for v in range(1, 6):
        stack = [{"id": "tone-1", "scale": 0.5}] if v == 5 else []
        _register(vault, model_path, f"me-voice-{v}", "me-voice", "voice", stack=stack)
    with store.update() as m:
        m.ensure_user("me")["voice_adapter"] = "me-voice-3"  # set back to an older version by hand
    assert store.read().in_reach() == {"me-voice-3", "me-voice-5", "tone-1", "tone-2"}

    managed: set[str] = set()
    pre = set(engine.loaded_adapters)  # the session's engine: what other tests left loaded is not ours
    try:
        report = sync_adapters(engine, vault, store.read(), managed)
        assert sorted(report.loaded) == ["me-voice-3", "me-voice-5", "tone-1", "tone-2"]
        assert sorted(set(engine.loaded_adapters) - pre) == sorted(report.loaded)

        activate(engine, vault, store.read(), [("me-voice-1", 1.0)])  # named: loaded then
        assert "me-voice-1" in engine.loaded_adapters

        _register(vault, model_path, "me-voice-6", "me-voice", "voice")
        with store.update() as m:
            m.ensure_user("me")["voice_adapter"] = "me-voice-6"
        engine.set_adapters([("me-voice-1", 1.0), ("me-voice-5", 0.5)])
        report = sync_adapters(engine, vault, store.read(), managed)
        assert report.loaded == ["me-voice-6"]
        assert report.released == ["me-voice-3", "tone-1"]  # me-voice-5 is on the stack: kept
        assert not report.unloaded and "no change" not in report.summary()
        assert sorted(set(engine.loaded_adapters) - pre) == ["me-voice-1", "me-voice-5", "me-voice-6", "tone-2"]

        engine.set_adapters([("me-voice-1", 1.0)])
        report = sync_adapters(engine, vault, store.read(), managed)
        assert report.released == ["me-voice-5"] and not report.changed
    finally:
        engine.set_adapters([])
        for ident in set(engine.loaded_adapters) - pre:
            engine.unload_adapter(ident)
