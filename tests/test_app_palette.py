"""The command palette (ctrl+p) through the real UI: new session, resume, export, persona, adapters."""

from __future__ import annotations

from textual.command import CommandPalette

from home.app.screens.adapters import AdaptersScreen
from tests.test_app import drive, make_app, say, wait_for, wait_ready


async def run_command(pilot, app, text: str) -> None:
    """Open the palette, type `text`, take the top hit."""
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: CommandPalette.is_open(app))
    palette = app.screen
    palette.query_one("CommandInput").value = text
    await wait_for(pilot, lambda: palette.query_one("CommandList").option_count > 0)
    await pilot.press("enter")
    await wait_for(pilot, lambda: not CommandPalette.is_open(app))
    await pilot.pause()


def test_new_session_resume_and_export(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await say(pilot, app, "hello")
        first = app.session.conversation.log
        await run_command(pilot, app, "New session")
        await wait_for(pilot, lambda: app.session.conversation.log is not first)
        await say(pilot, app, "again")
        assert len(list((vault / "logs").glob("*.jsonl"))) == 2

        await run_command(pilot, app, f"Resume session {first.session}")
        await wait_for(pilot, lambda: app.session.conversation.log.session == first.session)
        assert [m["content"] for m in app.session.conversation.history][:1] == ["hello"]
        assert len(app.chat.query("UserMessage")) == 1

        await run_command(pilot, app, "Export session as Markdown")
        md = vault / "logs" / f"{first.session}.md"
        await wait_for(pilot, md.exists)
        assert oct(md.stat().st_mode & 0o777) == "0o600"
        assert "hello" in md.read_text()

    drive(app, scenario)


def test_persona_and_adapters_from_the_palette(tmp_path):
    app = make_app(tmp_path / "v")

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await run_command(pilot, app, "Persona: Spark")
        assert app.session.persona.id == "spark"
        await run_command(pilot, app, "View adapters")
        await wait_for(pilot, lambda: isinstance(app.screen, AdaptersScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, AdaptersScreen))

    drive(app, scenario)
