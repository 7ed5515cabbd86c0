"""The chat app as a brand-new user meets it (real engine, default model, Pilot): what a first press of
each key shows."""

from __future__ import annotations

import asyncio
import json

from textual.command import CommandPalette

from home.app.commands import HomeCommands
from home.app.screens.chat import FIRST_HINT
from home.app.screens.confirm import ConfirmScreen
from home.app.screens.error import ErrorScreen
from home.app.widgets.persona_bar import PersonaBar
from home.app.widgets.status_bar import StatusBar
from home.app.widgets.train_panel import TrainPanel
from tests.test_app import drive, keys_panel_text, make_app, wait_for, wait_ready
from tests.test_new_user_cli import log_user_turns


def test_retrain_with_too_few_messages_says_so_instead_of_starting_a_worker(tmp_path):
    """ctrl+t on a vault with two of the user's messages started a trainer worker, which loaded torch only
    to refuse them; the panel now says why at once and nothing starts."""
    vault = log_user_turns(tmp_path / "v", 2)
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("ctrl+t")
        panel = app.chat.query_one(TrainPanel)
        assert panel.display and app.retrain is None and not app.training_running
        assert panel.view.outcome == (f"{vault.logs_dir}: 2 usable examples, at least 4 are needed (0 lines "
                                      "rejected): each message you send is one; chat a little more first")
        assert "stage: not started" in panel.text

    drive(app, scenario)


def test_ctrl_t_asks_before_a_run_that_can_start_and_no_starts_nothing(tmp_path):
    """ctrl+t (one key from ctrl+r and ctrl+y) started a run that takes the cores for minutes with no
    question; a run that can start now asks first, and n leaves nothing started."""
    vault = log_user_turns(tmp_path / "v", 6)
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        text = " ".join(str(w.render()) for w in app.screen.query("Static"))
        assert "Retrain your voice from your chat logs?" in text and "Esc there stops it" in text
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert app.retrain is None and not app.training_running
        assert not app.chat.query_one(TrainPanel).display

    drive(app, scenario)


def test_a_refusal_shows_no_empty_progress_bar_or_chart(tmp_path):
    """The refusal stood above a progress bar at '--%', 'step 0 · loss – · – tok/s · eta ?', an empty
    'train loss' chart and 'validation loss: –', as if a run were stuck; a refusal now shows its reason."""
    app = make_app(tmp_path / "v")

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("ctrl+t")
        panel = app.chat.query_one(TrainPanel)
        assert panel.text.splitlines() == ["Retrain my voice", "stage: not started", panel.view.outcome]
        assert not any(panel.query_one(w).display for w in ("ProgressBar", "Sparkline"))

    drive(app, scenario)


def test_f12_lists_homes_keys_before_the_message_boxs_editing_keys(tmp_path):
    """F12 listed the focused prompt's ~40 editing keys first (cursor, select, delete): on a 30-line terminal
    none of Home's own keys (personas, memory, retrain, search) was on screen."""
    app = make_app(tmp_path / "v")

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("f12")
        await pilot.pause()
        lines = [line.strip() for line in keys_panel_text(app).splitlines() if line.strip()]
        assert lines[0] == "Home" and "Editing your message" in lines, lines[:5]
        at = {what: next(i for i, line in enumerate(lines) if what in line)
              for what in ("Memory", "Retrain", "Search", "Pick best", "Quill", "Quit", "Cursor up")}
        shown = app.screen.query_one("HelpPanel").size.height
        assert max(i for what, i in at.items() if what != "Cursor up") < min(at["Cursor up"], shown), (at, shown)
        await pilot.press("f12")
        await pilot.pause()
        assert not app.screen.query("HelpPanel")

    drive(app, scenario)


def test_resume_entries_say_when_and_how_each_session_began(tmp_path):
    """After a restart the palette's "Resume session 20261201-020741-786084-5db4" entries were ids alone:
    a user could not tell which one was the chat they wanted back."""
    vault = log_user_turns(tmp_path / "v", 2)
    (session,) = [p.stem for p in vault.logs_dir.glob("*.jsonl")]
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: CommandPalette.is_open(app))
        app.screen.query_one("CommandInput").value = "resume"
        commands = app.screen.query_one("CommandList")
        await wait_for(pilot, lambda: commands.option_count > 0)
        shown = [str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)]
        (entry,) = [s for s in shown if session in s]
        assert "“my message number 0, about plans”" in entry, entry
        await pilot.press("escape")

    drive(app, scenario)


def test_the_first_screen_says_how_to_start_and_where_the_last_chat_is(tmp_path):
    """The first screen was empty: nothing said which keys do what, nor that yesterday's chat could come
    back. A persona's greeting opens the chat instead, as before."""
    def first_lines(app) -> list[str]:
        return [str(w.render()) for w in app.chat.query("SystemLine")]

    fresh = make_app(tmp_path / "fresh")

    async def new_user(pilot):
        await wait_ready(pilot, fresh)
        await wait_for(pilot, lambda: first_lines(fresh))
        assert first_lines(fresh) == [FIRST_HINT]

    drive(fresh, new_user)
    vault = log_user_turns(tmp_path / "v", 2)
    back = make_app(vault.root)

    async def returning(pilot):
        await wait_ready(pilot, back)
        await wait_for(pilot, lambda: first_lines(back))
        (line,) = first_lines(back)
        assert line.startswith(FIRST_HINT + " Your last chat (") and line.endswith(
            " · “my message number 0, about plans”) is in ctrl+p → Resume."), line

    drive(back, returning)
    greeted = make_app(vault.root, persona="sage")

    async def with_greeting(pilot):
        await wait_ready(pilot, greeted)
        await wait_for(pilot, lambda: greeted.chat.query("AssistantMessage"))
        assert not first_lines(greeted)

    drive(greeted, with_greeting)


def test_an_unknown_persona_at_start_says_where_to_pick_one(tmp_path):
    """`home chat --persona sge` opened "Home cannot start … Fix the file named above", and no file was named."""
    app = make_app(tmp_path / "v", persona="sge")

    async def scenario(pilot):
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen))
        assert app.screen.message == "unknown persona 'sge' (known: quill, sage, spark)"
        assert "--persona NAME" in app.screen.hint and "home personas list" in app.screen.hint
        await pilot.press("q")

    drive(app, scenario)


def test_the_status_line_keeps_persona_adapters_and_memory_at_80_columns(tmp_path):
    """At 80 columns the status line was cut after "– tok/s │": context and memory were off screen. Now the
    least needed parts (speed, then the model's name, then context) leave first; nothing is cut."""
    app = make_app(tmp_path / "v")

    async def main():
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_ready(pilot, app)
            bar = app.chat.query_one(StatusBar)
            line = str(bar.render())
            assert line.startswith("user me │ persona none │ adapters base │ ") and " │ memory 0 used · " in line
            assert len(line) <= bar.content_size.width, (line, bar.content_size.width)
            bar.model, bar.n_ctx = "loading model…", 0  # as before the model is up: that stays on the line
            assert str(bar.render()).startswith("loading model… │ user me │ persona none │ adapters base │ memory")
            app.chat.refresh_status()
            await pilot.resize_terminal(140, 24)
            await pilot.pause()
            assert str(bar.render()).startswith("Smollm2 135M 8k Lc1… │ user me │ persona none │ adapters base │ – tok/s")

    try:
        asyncio.run(main())
    finally:
        app.close_engine()


def test_chat_continue_opens_the_app_on_that_session(tmp_path):
    """`home chat --continue`: the app opens on the session, its messages shown and given to the model."""
    vault = log_user_turns(tmp_path / "v", 2)
    (sid,) = [p.stem for p in vault.logs_dir.glob("*.jsonl")]
    app = make_app(vault.root, resume=sid)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await wait_for(pilot, lambda: app.chat.query("SystemLine"))
        assert app.session.conversation.log.session == sid
        assert [m["content"] for m in app.session.conversation.history][:1] == ["my message number 0, about plans"]
        assert [m.text for m in app.chat.query("UserMessage")] == [f"my message number {i}, about plans" for i in (0, 1)]
        assert [str(w.render()) for w in app.chat.query("SystemLine")] == [f"— resumed {sid} —"]

    drive(app, scenario)


def test_two_cards_on_one_hotkey_show_once_on_the_persona_bar(tmp_path):
    """With an imported card on f2 beside Sage the bar read 'F2 Ada Lovelace  F2 Sage', and F2 picked Ada."""
    vault = log_user_turns(tmp_path / "v", 0)
    (vault.personas_dir / "ada-lovelace.json").write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0",
        "data": {"name": "Ada Lovelace", "extensions": {"home": {"hotkey": "f2"}}}}))
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        bar = app.chat.query_one(PersonaBar)
        assert [(key, pid) for key, pid, _ in bar.entries] == [
            ("f1", None), ("f2", "ada-lovelace"), ("f3", "quill"), ("f4", "spark")]
        await pilot.press("f2")
        assert app.session.persona.id == "ada-lovelace"
        helps = {name: help_text for name, _, help_text in HomeCommands(app.screen)._commands()}
        assert helps["Persona: Sage"] == "switch persona" and helps["Persona: Ada Lovelace"] == "switch persona (f2)"

    drive(app, scenario)
