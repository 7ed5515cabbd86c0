"""Switch user from the palette: a new name or a manifest user; the status bar, the next log records and
the voice adapter follow, in a fresh session."""

from __future__ import annotations

from home.app.screens.user_switch import UserSwitchScreen
from home.app.widgets.status_bar import StatusBar
from tests.test_app import drive, make_app, records, say, wait_for, wait_ready
from tests.test_app_palette import run_command
from vault.layout import Vault
from vault.manifest import ManifestStore


def test_switch_to_a_new_user_then_to_one_with_a_voice_adapter(tmp_path, model_path):
    from tests.loras import register_voice

    vault = Vault.open(tmp_path / "v")
    register_voice(vault, model_path, "bo")
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await say(pilot, app, "hi as me")
        first = app.session.conversation.log.session
        await run_command(pilot, app, "Switch user…")
        await wait_for(pilot, lambda: isinstance(app.screen, UserSwitchScreen))
        await pilot.press(*"../x", "enter")  # refused, the modal stays
        await pilot.pause()
        assert "user name" in str(app.screen.query_one("#user-error").render())
        app.screen.query_one("Input").value = ""
        await pilot.press(*"alice", "enter")
        await wait_for(pilot, lambda: app.chat is not None and app.session.user == "alice")
        assert app.session.conversation.log.session != first
        assert "user alice" in str(app.chat.query_one(StatusBar).render())
        await say(pilot, app, "hi as alice")
        await pilot.press("ctrl+v")  # alice has no voice adapter
        await pilot.pause()
        assert app.session.voice_on is False

        await run_command(pilot, app, "Switch user: bo")
        await wait_for(pilot, lambda: app.session.user == "bo")
        await pilot.press("ctrl+v")  # bo has one: the voice follows the user
        await wait_for(pilot, lambda: app.chat.stack_applied == [("bo-voice", 1.0)])
        await say(pilot, app, "hi as bo")

    drive(app, scenario)
    users = [(r["user"], r["role"], r["adapters"]) for r in records(vault.root) if r["role"] == "user"]
    assert sorted(users) == [("alice", "user", []), ("bo", "user", [{"id": "bo-voice", "scale": 1.0}]),
                             ("me", "user", [])]
    assert len({r["session"] for r in records(vault.root)}) == 3
    assert "alice" in ManifestStore(vault).read().users
