"""Memory in the app: the store opens after the model, replies use facts from earlier sessions, and the
status bar counts items used and held."""

from __future__ import annotations

import asyncio

from home.app.widgets.status_bar import StatusBar
from tests.test_app import drive, make_app, records, say, wait_for, wait_ready


def test_app_recalls_an_earlier_session_and_counts_memory(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault, max_tokens=4)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        bar = app.chat.query_one(StatusBar)
        assert bar.memory == "0 used · 0 items"
        await say(pilot, app, "My cat is called Miso and she is nine.")
        await asyncio.to_thread(app.session.recall.wait_idle, 60)
        await wait_for(pilot, lambda: bar.memory == "0 used · 2 items")
        first_session = app.session.conversation.log.session
        await app.chat.new_chat()
        await say(pilot, app, "What is my cat called?")
        used = app.session.conversation.last.record["memory_ids"]
        assert f"{first_session}:1" in used
        await wait_for(pilot, lambda: bar.memory.startswith(f"{len(used)} used · "))
        assert "memory" in app.chat.query_one(StatusBar).render()

    drive(app, scenario)
    assert app.session.recall is None  # close_engine released the store for the next process
    recs = [r for r in records(vault) if r.get("role") == "assistant"]
    assert recs[-1]["memory_ids"] and recs[0]["memory_ids"] == []


def test_a_store_another_process_held_at_start_opens_once_it_is_free(tmp_path, monkeypatch):
    """A `home ask` owning the store for its turn when the app opened memory cost the whole chat its memory
    (bench/reliability/two_procs.py: 13 app replies, none with memory): the app tries again until it opens."""
    from home.app import session_memory
    from vault.embedder import load_embedder
    from vault.layout import Vault
    from vault.memory import MemoryStore

    monkeypatch.setattr(session_memory, "RETRY_S", 0.5)
    vault = tmp_path / "v"
    held = MemoryStore.open(Vault.open(vault), load_embedder())  # as another process's `home ask` would
    app = make_app(vault, max_tokens=4)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        bar = app.chat.query_one(StatusBar)
        assert app.session.recall is None and "in use" in app.session.memory_note
        await wait_for(pilot, lambda: bar.memory == "off")  # the bar shows it at its next refresh
        held.close()
        await wait_for(pilot, lambda: app.session.recall is not None, timeout=30)
        await say(pilot, app, "My cat is called Miso and she is nine.")
        await asyncio.to_thread(app.session.recall.wait_idle, 60)
        await wait_for(pilot, lambda: bar.memory == "0 used · 2 items")

    drive(app, scenario)
    assert app.session.recall is None  # released again at the end
