"""Copying messages in the real app: ctrl+y takes the last reply, or the message a click selected; the
palette's "Copy last reply" always the reply. Textual's `copy_to_clipboard` keeps what it was asked to
copy in `app.clipboard` (and writes OSC 52 to the terminal)."""

from __future__ import annotations

from home.app.widgets.messages import AssistantMessage, MessageList, UserMessage
from home.app.widgets.prompt_input import PromptInput
from tests.test_app import drive, make_app, records, say, wait_for, wait_ready
from tests.test_app_palette import run_command


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def test_copy_last_reply_or_the_clicked_message(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("ctrl+y")
        assert app.clipboard == "" and "Nothing to copy yet." in notes(app)

        await say(pilot, app, "Name a colour.")
        reply = app.chat.query_one(MessageList).last_reply
        assert reply.text.strip()
        await pilot.press("ctrl+y")  # the prompt has focus: its own ctrl+y (redo) gives way
        assert app.clipboard == reply.text == app.session.conversation.last.record["text"]
        assert any(n.startswith("Copied the reply") for n in notes(app))

        messages = app.chat.query_one(MessageList)
        mine = app.chat.query_one(UserMessage)
        await pilot.click(mine, offset=(3, 1))
        await wait_for(pilot, lambda: messages.selected is mine)
        assert mine.has_class("-selected") and app.chat.query_one(PromptInput).has_focus  # typing goes on
        await pilot.press("ctrl+y")
        assert app.clipboard == "Name a colour."
        assert messages.selected is None and not mine.has_class("-selected")  # done with

        await pilot.click(mine, offset=(3, 1))
        await wait_for(pilot, lambda: messages.selected is mine)
        await pilot.click(mine, offset=(3, 1))  # a second click unselects
        await wait_for(pilot, lambda: messages.selected is None)

        await pilot.click(mine, offset=(3, 1))
        await run_command(pilot, app, "Copy last reply")  # the palette's entry ignores the selection
        assert app.clipboard == reply.text

        await pilot.click(app.chat.query_one(AssistantMessage), offset=(3, 1))
        await pilot.press("ctrl+r")  # regenerate removes the selected reply: the key falls back to the new one
        await wait_for(pilot, lambda: not app.chat.generating and messages.last_reply is not reply
                       and app.session.conversation.last.record["text"] == messages.last_reply.text)
        assert messages.selected is None
        await pilot.press("ctrl+y")
        assert app.clipboard == messages.last_reply.text

    drive(app, scenario)
    assert [r["role"] for r in records(vault)] == ["user", "assistant", "user", "assistant"]
