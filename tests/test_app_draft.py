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


def test_a_turn_waits_for_the_draft_in_flight_and_only_the_newest_waiting_draft_is_embedded():
    """`take` of the text being embedded waits for that embed (no second MiniLM call) and gets its vectors even
    when a newer draft finishes first; drafts asked while one embeds queue, and only the newest is embedded
    after it (typing went on: the older is stale)."""
    import time

    import numpy as np

    from home.app.draft import DraftVectors
    from home.recall import turn_vectors
    from vault.embedder import load_embedder

    embedder = load_embedder()
    started, release, calls = threading.Event(), threading.Event(), []

    def embed(text: str) -> dict:  # the real MiniLM, held until the test lets it finish
        calls.append(text)
        started.set()
        release.wait(10)
        return turn_vectors(embedder, text, None)

    drafts, got = DraftVectors(embed), {}
    taker = threading.Thread(target=lambda: got.setdefault("v", drafts.take("Where do I live?")))

    class LateWaker(threading.Condition):
        """The taker wakes last: the newer draft's embed ends first and takes the draft slot (as CI once had it)."""

        def wait(self, timeout=None):
            woke = super().wait(timeout)
            if threading.current_thread() is taker:
                self.release()
                time.sleep(0.3)
                self.acquire()
            return woke

    drafts._cond = LateWaker()
    first = threading.Thread(target=drafts.prepare, args=("Where do I live?",))
    first.start()
    assert started.wait(10)
    taker.start()
    older = threading.Thread(target=drafts.prepare, args=("Where do I",))
    older.start()
    while drafts._latest != "Where do I":
        time.sleep(0.005)
    newer = threading.Thread(target=drafts.prepare, args=("Where do I work?",))
    newer.start()
    while drafts._latest != "Where do I work?":
        time.sleep(0.005)
    taker.join(0.2)
    assert taker.is_alive()  # waiting for the embed in flight, not embedding a second time
    release.set()
    for t in (first, taker, older, newer):
        t.join(10)
    assert calls == ["Where do I live?", "Where do I work?"]  # "Where do I" gave way to the newer draft
    assert np.allclose(got["v"]["Where do I live?"], embedder.embed(["Where do I live?"])[0], atol=1e-6)
    assert drafts.text == "Where do I work?" and drafts.take("Where do I live?") is None and drafts.used == 1
