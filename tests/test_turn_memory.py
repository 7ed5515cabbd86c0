"""Memory on the turn path: real engine, real ChromaDB + MiniLM; what the model sees and what the log says."""

from __future__ import annotations

import json

import pytest

from home.recall import Recall
from home.turn import Conversation
from llm.params import GenParams
from tests.cli_helpers import run_home
from vault.config import MemorySettings
from vault.layout import Vault
from vault.logs import ConversationLog

PARAMS = GenParams(max_tokens=4, temperature=0.0)


class Spy:
    """The real engine, recording the messages each reply was asked for."""

    def __init__(self, engine):
        self._engine = engine
        self.seen: list[list[dict]] = []

    def stream(self, messages, params, cancel=None, adapters=None, aside=False):
        self.seen.append(messages)
        return self._engine.stream(messages, params, cancel=cancel, adapters=adapters, aside=aside)

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture
def recall(tmp_path):
    vault = Vault.open(tmp_path / "v")
    r = Recall.open(vault, MemorySettings())
    yield r
    r.close()


def test_a_fact_from_an_earlier_session_reaches_the_prompt_and_the_log(engine, recall):
    vault, spy = recall.vault, Spy(engine)
    engine.set_adapters([])
    first = Conversation(spy, ConversationLog.create(vault), "me", recall=recall)
    for text in ("My sister Ana moved to Lisbon last spring.", "I'm learning to play the cello."):
        list(first.send(text, PARAMS, []))
    assert recall.wait_idle(60) and recall.count() == 4  # both turns and replies, indexed in the background

    later = Conversation(spy, ConversationLog.create(vault), "me", recall=recall)
    list(later.send("Where does my sister live now?", PARAMS, []))
    memory, asked = spy.seen[-1][-2:]  # memory comes right before the message, after persona + history
    assert memory["role"] == "system" and memory["content"].startswith("Memory") and "Lisbon" in memory["content"]
    assert asked == {"role": "user", "content": "Where does my sister live now?"}
    rec = later.last.record
    sister_turn = f"{first.log.session}:1"
    assert sister_turn in rec["memory_ids"] and rec["timings"]["memory_ms"] is not None
    # chit-chat never searches; turns of the session in progress are not offered back to it
    list(later.send("thanks!", PARAMS, []))
    assert later.last.record["memory_ids"] == [] and later.last.record["timings"]["memory_ms"] is None
    assert [m["role"] for m in spy.seen[-1]] == ["user", "assistant", "user"]  # no memory block
    list(later.send("Tell me about where my sister lives.", PARAMS, []))
    assert all(not i.startswith(later.log.session) for i in later.last.record["memory_ids"])


def test_memory_off_or_busy_means_no_search(engine, recall, tmp_path):
    off = Recall.open(recall.vault, MemorySettings(enabled=False))
    assert off.store is None and "enabled = false" in off.unavailable
    busy = Recall.open(recall.vault, MemorySettings())  # `recall` owns the store
    assert busy.store is None and "in use by another Home process" in busy.unavailable
    convo = Conversation(engine, ConversationLog.create(recall.vault), "me", recall=busy)
    list(convo.send("What is my sister's name?", PARAMS, []))
    assert convo.last.record["memory_ids"] == []


def test_home_ask_recalls_across_calls_and_says_when_memory_is_busy(tmp_path):
    vault = tmp_path / "v"
    said = run_home(vault, "ask", "Remember: my dentist appointment is on Friday at 9.",
                    "--max-tokens", "4", "--temperature", "0", "--json")
    assert said.returncode == 0, said.stderr
    first_id = json.loads(said.stdout)["id"].rsplit(":", 1)[0] + ":1"
    asked = run_home(vault, "ask", "When is my dentist appointment?", "--max-tokens", "4",
                     "--temperature", "0", "--json")
    assert asked.returncode == 0, asked.stderr
    assert first_id in json.loads(asked.stdout)["memory_ids"]
    hi = run_home(vault, "ask", "hi", "--max-tokens", "2", "--json")  # chit-chat: memory never opened
    assert hi.returncode == 0 and json.loads(hi.stdout)["memory_ids"] == []
    owner = Recall.open(Vault.open(vault), MemorySettings())
    try:
        busy = run_home(vault, "ask", "When is my dentist appointment?", "--max-tokens", "2", "--json")
    finally:
        owner.close()
    assert busy.returncode == 0 and json.loads(busy.stdout)["memory_ids"] == []
    assert "answering without memory" in busy.stderr and "in use by another Home process" in busy.stderr


def test_persona_lore_is_recalled_only_while_that_persona_speaks(recall):
    from vault.lore import lore_session

    now = "2026-11-25T10:00:00Z"
    session = lore_session("wren")
    recall.store.upsert([{"id": f"{session}:1", "session": session, "turn": 1, "role": "assistant",
                          "user": "me", "persona": "wren", "time": now,
                          "text": "Wren Alder (background): grew up keeping the lighthouse on Gull Island."}])
    count = lambda s: len(s.split())  # noqa: E731
    question = "Tell me about the lighthouse on Gull Island."
    assert recall.recall(question, "me", None, count).ids == []
    assert recall.recall(question, "me", None, count, persona="sage").ids == []
    assert recall.recall(question, "me", None, count, persona="wren").ids == [f"{session}:1"]
