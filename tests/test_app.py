"""The Textual app end to end: real engine, real default model, a temp vault, driven by Pilot."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from home.app import AppOptions, HomeApp
from home.app.screens.error import ErrorScreen
from home.app.widgets.messages import MessageList
from home.app.widgets.prompt_input import PromptInput
from tests.cli_helpers import REPO, home_env

SIZE = (100, 30)
SAGE_HELLO = "Hello. What would you like to work through today?"  # the built-in cards' greetings
QUILL_HELLO = "Send me a paragraph and I will make it shorter and clearer."


def make_app(vault: Path, **overrides: object) -> HomeApp:
    opts = dict(vault=vault, user="me", max_tokens=8, n_ctx=1024, temperature=0.0, seed=1)
    opts.update(overrides)
    return HomeApp(AppOptions(**opts))


def records(vault: Path) -> list[dict]:
    out = []
    for log in sorted((vault / "logs").glob("*.jsonl")):
        out += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return out


async def wait_for(pilot, cond: Callable[[], object], timeout: float = 90.0) -> None:
    """Bounded polling: the model loads and replies in worker threads."""
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {cond}")


async def wait_ready(pilot, app: HomeApp) -> None:
    """Model loaded, stack applied, and memory opened (or noted off): the status bar is final."""
    await wait_for(pilot, lambda: app.session and app.session.ready and app.chat and app.chat.stack_applied is not None
                   and (app.session.recall is not None or app.session.memory_note))
    if app.session.recall is not None:
        await asyncio.to_thread(app.session.recall.wait_idle, 60)  # the start-up catch-up pass
        app.chat.refresh_status()


async def say(pilot, app: HomeApp, text: str) -> None:
    """Send `text` and wait until its reply is logged and the screen has finished it."""
    before = app.session.conversation.last
    app.chat.query_one(PromptInput).insert(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.session.conversation.last is not before and not app.chat.generating)


def footer(app: HomeApp) -> dict[str, str]:
    """The keys the footer shows now: {key: label}."""
    return {key: b.binding.description for key, b in app.screen.active_bindings.items()
            if b.binding.show and b.enabled}


def keys_panel_text(app: HomeApp) -> str:
    """What F12's keys panel lists, as plain text."""
    from rich.console import Console

    from home.app.widgets.keys_panel import HomeBindingsTable

    console = Console(width=100, record=True, color_system=None)
    console.print(app.screen.query_one(HomeBindingsTable).render_bindings_table())
    return console.export_text()


def drive(app: HomeApp, scenario: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await scenario(pilot)
    try:
        asyncio.run(main())
    finally:
        app.close_engine()


def test_typing_and_enter_streams_a_reply_and_logs_both(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault)

    async def scenario(pilot):
        assert app.chat is not None  # the chat screen is up before the model
        await wait_ready(pilot, app)
        assert app.chat.query_one(PromptInput).has_focus
        await pilot.press(*"hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating and app.session.conversation.last)
        reply = app.chat.query_one(MessageList).last_reply
        assert reply is not None and reply.text.strip()
        assert app.chat.query_one(PromptInput).text == ""

    drive(app, scenario)
    recs = records(vault)
    assert [r["role"] for r in recs] == ["user", "assistant"]
    assert recs[0]["text"] == "hello" and recs[1]["partial"] is False
    assert recs[1]["tokens"]["completion"] <= 8


def test_persona_hotkey_switches_without_reload(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        engine = app.session.engine
        await pilot.press("f2")  # before the user's first message: Sage greets, then Quill instead
        await pilot.press("f3")
        assert app.session.persona.id == "quill"
        shown = [m.text for m in app.chat.query_one(MessageList).query("AssistantMessage")]
        assert shown == [SAGE_HELLO, QUILL_HELLO]  # each card's first_mes, as the persona's message
        await say(pilot, app, "Fix: me and him goes.")
        await pilot.press("f1")
        assert app.session.persona is None
        await say(pilot, app, "hi")
        assert app.session.engine is engine  # the model was not reloaded
        notes = [str(w.render()) for w in app.chat.query("SystemLine")]
        assert any("Quill" in n for n in notes) and any("base" in n for n in notes)
        # the model saw Quill's greeting as the chat's first turn, Sage's no more (the log keeps both)
        assert [m["content"] for m in app.session.conversation.history][:2] == [QUILL_HELLO, "Fix: me and him goes."]

    drive(app, scenario)
    greetings = [(r["persona"], r["text"]) for r in records(vault) if r.get("greeting")]
    assert greetings == [("sage", SAGE_HELLO), ("quill", QUILL_HELLO)]
    replies = [r for r in records(vault) if r["role"] == "assistant" and not r.get("greeting")]
    assert [r["persona"] for r in replies] == ["quill", None]
    assert replies[0]["adapters"] == []


def test_escape_stops_a_long_reply_and_logs_it_partial(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault, max_tokens=400)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        assert "escape" not in footer(app) and footer(app)["f12"] == "Keys"  # nothing to stop: Esc not offered
        app.chat.query_one(PromptInput).insert("Write a long essay about the history of Rome, with many sections.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: (r := app.chat.query_one(MessageList).last_reply) and r.text)
        assert footer(app)["escape"] == "Stop reply"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating)
        reply = app.chat.query_one(MessageList).last_reply
        assert reply.border_subtitle == "(stopped)"
        await pilot.pause()
        assert "escape" not in footer(app)
        # F12: every key, those the footer has no room for too (the README's list).
        await pilot.press("f12")
        await pilot.pause()
        keys = keys_panel_text(app)
        for key, what in [("^b", "Pick best"), ("^f", "Search"), ("^y", "Copy"), ("^o", "Memory"), ("^t", "Retrain"),
                          ("^v", "Voice"), ("f1", "Base")]:
            assert any(key in line and what in line for line in keys.splitlines()), (key, what, keys)
        await pilot.press("f12")
        await pilot.pause()
        assert not app.screen.query("HelpPanel")

    drive(app, scenario)
    (reply,) = [r for r in records(vault) if r["role"] == "assistant"]
    assert reply["partial"] is True and reply["finish_reason"] == "cancelled"
    assert reply["tokens"]["completion"] < 400


def test_regenerate_replaces_the_last_reply_and_keeps_the_history_clean(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await say(pilot, app, "Name a colour.")
        first = app.session.conversation.last
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.session.conversation.last is not first and not app.chat.generating)
        assert len(app.chat.query("AssistantMessage")) == 1
        assert [m["role"] for m in app.session.conversation.history] == ["user", "assistant"]

    drive(app, scenario)
    assert [r["role"] for r in records(vault)] == ["user", "assistant", "user", "assistant"]


def test_voice_toggle_without_a_voice_adapter_says_how_to_train(tmp_path):
    app = make_app(tmp_path / "v")

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("ctrl+v")
        await pilot.pause()
        assert any("home train" in str(n.message) for n in app._notifications)
        assert app.session.voice_on is False

    drive(app, scenario)


def test_broken_model_shows_the_error_screen(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a model at all")
    app = make_app(tmp_path / "v", model=bad)

    async def scenario(pilot):
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen))
        screen = app.screen
        assert str(bad) in screen.message and "\n" not in screen.message
        assert "--model" in screen.hint
        await pilot.press("q")

    drive(app, scenario)
    assert app.startup_error is not None


@pytest.mark.parametrize("argv", [["chat", "--plain"], []])
def test_plain_repl_when_asked_or_when_stdin_is_not_a_tty(tmp_path, argv):
    vault = tmp_path / "v"
    vault.mkdir(mode=0o700)
    (vault / "config.toml").write_text('user = "me"\n[generation]\nmax_tokens = 4\n')
    proc = subprocess.run([sys.executable, "-m", "home.cli", *argv], input="hi\n/quit\n", cwd=REPO,
                          env=home_env(vault), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "home>" in proc.stdout
    assert [r["role"] for r in records(vault)] == ["user", "assistant"]


def test_vault_persona_on_f6_and_the_voice_adapter_on_top(tmp_path, model_path):
    """f6 is also a TextArea key (select line): persona hotkeys must win. ctrl+v stacks the user's voice
    adapter over the persona's, ctrl+up raises its scale by 0.1, and the status bar shows both."""
    from tests.loras import register_voice
    from vault.layout import Vault

    vault = Vault.open(tmp_path / "v")
    register_voice(vault, model_path, "me")
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Ada", "extensions": {"home": {"hotkey": "f6"}}}}
    (vault.personas_dir / "ada.json").write_text(json.dumps(card))
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("f6")
        assert app.session.persona.id == "ada"
        await pilot.press("ctrl+v")
        await wait_for(pilot, lambda: app.chat.stack_applied == [("me-voice", 1.0)])
        await pilot.press("ctrl+up")
        await wait_for(pilot, lambda: app.session.engine.adapters == [("me-voice", 1.1)])
        assert "me-voice×1.1" in str(app.chat.query_one("#status").render())
        await say(pilot, app, "hi")
        await pilot.press("ctrl+v")
        await wait_for(pilot, lambda: app.chat.stack_applied == [])

    drive(app, scenario)
    (reply,) = [r for r in records(vault.root) if r["role"] == "assistant"]
    assert reply["persona"] == "ada" and reply["adapters"] == [{"id": "me-voice", "scale": 1.1}]


def test_adapter_registered_while_running_is_hot_loaded_and_removal_unloads(tmp_path, model_path):
    from tests.loras import make_random_lora

    vault = tmp_path / "v"
    app = make_app(vault)
    lora = make_random_lora(model_path, tmp_path / "a.gguf", rank=4, seed=9)

    def home(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "home.cli", *args], cwd=REPO, env=home_env(vault),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await wait_for(pilot, lambda: app.watcher is not None)
        home("adapters", "add", str(lora), "--name", "fresh")  # as the trainer would, from another process
        await wait_for(pilot, lambda: "fresh" in app.session.engine.loaded_adapters, timeout=30)
        home("adapters", "remove", "fresh")
        await wait_for(pilot, lambda: "fresh" not in app.session.engine.loaded_adapters, timeout=30)

    drive(app, scenario)
