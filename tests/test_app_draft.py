"""The prompt's draft embedded while the user types (home/app/draft.py): Enter after a pause takes its
vectors instead of calling MiniLM on the turn; a text edited after the embed is embedded as before."""

from __future__ import annotations

import threading

from home.app.draft import PAUSE_S
from home.app.widgets.prompt_input import PromptInput
from tests.test_app import drive, make_app, wait_for, wait_ready
from vault.layout import Vault
from vault.logs import ConversationLog


def test_enter_after_a_pause_uses_the_draft_and_an_edit_embeds_again(tmp_path):
    vault = Vault.open(tmp_path / "v")
    vault.config_path.write_text('user = "me"\n[gestalts]\nenabled = false\n')  # no distilling in the background
    ConversationLog.create(vault, "before").append({"role": "user", "text": "I live in Lisbon with Sam.", "user": "me"})
    app = make_app(vault.root, max_tokens=2)
    calls: list[tuple[str, list[str]]] = []  # (thread, texts) of every MiniLM call but the indexer's

    async def scenario(pilot):
        await wait_ready(pilot, app)
        session = app.session
        assert session.router is not None and session.recall is not None
        embedder = session.router.embedder  # the real MiniLM, shared with memory
        real = embedder.embed

        def counted(texts):
            if threading.current_thread().name != "home-memory-indexer":
                calls.append((threading.current_thread().name, list(texts)))
            return real(texts)

        embedder.embed = counted
        box = app.chat.query_one(PromptInput)

        async def turn(before) -> dict:  # noqa: ANN001
            await pilot.press("enter")
            await wait_for(pilot, lambda: session.conversation.last is not before and not app.chat.generating)
            return session.conversation.last.record

        # typed, then a pause: the draft is embedded in a worker, with what memory searches for it
        await pilot.press(*"Where do I live?")
        await pilot.pause(PAUSE_S)
        await wait_for(pilot, lambda: session.drafts.text == "Where do I live?", timeout=30)
        assert calls[-1][1] == ["Where do I live?", "i live"]
        before = len(calls)
        record = await turn(session.conversation.last)
        assert len(calls) == before  # Enter embedded nothing: the turn took the draft's vectors
        assert session.drafts.used == 1
        assert record["memory_ids"] == ["before:1"] and record["router"] is not None
        assert box.text == ""

        # typed and embedded, then edited and sent before the next pause: the turn embeds the new text itself
        box.insert("Where does Sam live?")
        await wait_for(pilot, lambda: session.drafts.text == "Where does Sam live?", timeout=30)
        before = len(calls)
        box.action_delete_left()  # edited, and Enter queued before PAUSE_S is up (a Pilot key press may not be)
        box.insert(" now?")
        record = await turn(session.conversation.last)
        assert session.drafts.used == 1 and session.drafts.text == "Where does Sam live?"
        assert [texts[0] for _, texts in calls[before:]] == ["Where does Sam live now?"]
        assert session.conversation.history[-2]["content"] == "Where does Sam live now?"

    drive(app, scenario)
