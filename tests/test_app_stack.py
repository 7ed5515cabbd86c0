"""The adapter stack picked by hand from the palette: it wins over the router like a persona's adapters,
the voice toggle adds to it, "none" is the base model whatever the message, "automatic" and a persona
switch give the choice back; the status bar and each turn's log record (`adapters`, `router.explicit`)
follow. Real engine, default model, tiny random adapters registered in the manifest."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette

from home.app.widgets.status_bar import StatusBar
from llm.gguf_meta import read_model_info
from llm.models import default_model_path
from tests.loras import make_random_lora
from tests.test_app import drive, make_app, records, say, wait_for, wait_ready
from tests.test_app_palette import run_command
from tests.test_turn_router import CODING
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore


def add_adapter(vault: Vault, ident: str, kind: str, fingerprint: str, **fields) -> None:
    """A one-layer rank-2 random LoRA: loads and runs at almost the base model's speed."""
    path = vault.adapters_dir / ident / "adapter.gguf"
    path.parent.mkdir(parents=True)
    make_random_lora(default_model_path(), path, rank=2, n_layers=1, seed=len(ident))
    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry(id=ident, name=ident, file=f"adapters/{ident}/adapter.gguf", owner="me",
                                   base={"fingerprint": fingerprint}, kind=kind, **fields))


def palette_names(app) -> list[str]:
    from home.app.commands import HomeCommands

    return [name for name, _, _ in HomeCommands(app.screen)._commands()]


@pytest.mark.slow  # four real turns and a hot unload: 5-12 s idle, up to ~25 s on 2 busy cores
def test_manual_stack_from_the_palette_wins_until_automatic_or_a_persona_switch(tmp_path):
    vault = Vault.open(tmp_path / "v")
    fingerprint = read_model_info(default_model_path()).fingerprint
    add_adapter(vault, "code-helper", "task", fingerprint, tasks=["coding"])
    add_adapter(vault, "calm", "style", fingerprint)
    add_adapter(vault, "elsewhere", "style", "0" * 64)  # made for another base: not offered
    add_adapter(vault, "me-voice", "voice", fingerprint)
    with ManifestStore(vault).update() as m:
        m.ensure_user("me")["voice_adapter"] = "me-voice"
    app = make_app(vault.root, max_tokens=2)
    bar = lambda: app.chat.query_one(StatusBar)  # noqa: E731

    async def scenario(pilot):
        await wait_ready(pilot, app)
        names = palette_names(app)
        assert {"Adapters: calm (style)", "Adapters: code-helper (task)", "Adapters: me-voice (voice)",
                "Adapters: none (base model)", "Adapters: automatic (router)"} <= set(names)
        assert not any("elsewhere" in n for n in names)

        app.chat.action_toggle_voice()  # a manual pick replaces the voice toggle too
        await run_command(pilot, app, "Adapters: calm (style)")
        assert app.session.stack == [("calm", 1.0)] and not app.session.voice_on
        assert bar().stack == "calm×1 (manual)"
        await say(pilot, app, CODING)  # the router would pick code-helper

        app.chat.action_toggle_voice()  # ctrl+v adds the voice on top of the manual stack
        await wait_for(pilot, lambda: app.chat.stack_applied == [("calm", 1.0), ("me-voice", 1.0)])
        await say(pilot, app, CODING)

        await run_command(pilot, app, "Adapters: none (base model)")
        assert app.session.stack == [] and bar().stack == "base (manual)"
        await say(pilot, app, CODING)

        await run_command(pilot, app, "Adapters: automatic (router)")
        assert app.session.manual is None and bar().stack == "base"
        await say(pilot, app, CODING)
        assert app.session.stack == [("code-helper", 1.0)]

        await run_command(pilot, app, "Adapters: calm (style)")
        await pilot.press("f3")  # a persona switch ends the manual choice: quill has no adapters, the router picks
        assert app.session.manual is None and app.session.persona.id == "quill"
        assert app.session.explicit_specs() is None and bar().stack == "base"

        await run_command(pilot, app, "Adapters: calm (style)")
        with ManifestStore(vault).update() as m:  # removed while picked: the watcher unloads it
            m.remove_adapter("calm")
        await wait_for(pilot, lambda: "calm" not in app.session.engine.loaded_adapters and app.session.manual is None
                       and app.session.stack == [], timeout=30)
        await wait_for(pilot, lambda: any("back to automatic" in n.message for n in app._notifications))
        notes = [str(w.render()) for w in app.chat.query("SystemLine")]
        assert any("calm×1 (manual" in n for n in notes) and any("automatic" in n for n in notes)
        assert not CommandPalette.is_open(app)

    drive(app, scenario)
    replies = [r for r in records(vault.root) if r.get("role") == "assistant"]
    assert [r["adapters"] for r in replies] == [
        [{"id": "calm", "scale": 1.0}],
        [{"id": "calm", "scale": 1.0}, {"id": "me-voice", "scale": 1.0}],
        [],
        [{"id": "code-helper", "scale": 1.0}],
    ]
    assert [r["router"]["explicit"] for r in replies] == [True, True, True, False]
    assert replies[0]["router"]["task"]["label"] == "coding"  # the router still says what it would have done
