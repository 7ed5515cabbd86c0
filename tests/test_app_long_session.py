"""A session that goes on for days: the chat shows its latest messages, not every one it ever had.

A resumed session of 400 exchanges mounted 800 widgets (9.0 s to open, keys slower); now the screen holds
the latest `MessageList.keep` and a line says how many earlier ones the log keeps. Small `keep` here, the
real app and model otherwise.
"""

from __future__ import annotations

from home.app.widgets.messages import AssistantMessage, MessageList, UserMessage
from tests.test_app import drive, make_app, say, wait_for, wait_ready
from tests.test_new_user_cli import log_user_turns


def test_a_long_session_shows_its_latest_messages_and_says_how_many_are_not_shown(tmp_path, monkeypatch):
    monkeypatch.setattr(MessageList, "keep", 20)
    monkeypatch.setattr(MessageList, "trim_every", 4)
    vault = log_user_turns(tmp_path / "v", 30)
    (sid,) = [p.stem for p in vault.logs_dir.glob("*.jsonl")]
    app = make_app(vault.root, resume=sid)

    def shown() -> list[str]:
        return [w.text for w in app.chat.query_one(MessageList).children if isinstance(w, UserMessage | AssistantMessage)]

    def earlier() -> str:
        return str(app.chat.query_one("#earlier").render())

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await wait_for(pilot, lambda: app.chat.query("#earlier"))
        await wait_for(pilot, lambda: any(f"— resumed {sid} —" in str(w.render()) for w in app.chat.query("SystemLine")))
        assert len(shown()) == 20 and shown()[0] == "my message number 20, about plans" and shown()[-1] == "reply 29"
        assert earlier().startswith("— 40 earlier messages are not shown here (the log keeps every one")
        assert app.chat.query_one(MessageList).children[0].id == "earlier"  # at the top
        assert len(app.session.conversation.history) == 60  # the model's history is not cut by the screen
        for text in ("one more", "and another", "a third"):  # past keep + trim_every: the oldest leave the screen
            await say(pilot, app, text)
        on_screen = shown()
        assert len(on_screen) < 26 and on_screen[-2] == "a third"  # trimmed (in batches of trim_every)
        assert earlier().startswith(f"— {66 - len(on_screen)} earlier messages are not shown here")  # 66 in all
        path = app.session.export_markdown()
        assert "my message number 0, about plans" in path.read_text()  # export has them all

    drive(app, scenario)
