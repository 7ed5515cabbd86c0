"""The local model's query rewrite (issue 13, home/query_rewrite.py): off by default, and off it makes no
model call and changes nothing; on, its query is searched beside the question. Real llama.cpp (the default
SmolLM2-135M, greedy), real MiniLM, real store."""

from __future__ import annotations

import pytest

from home.query_rewrite import clean, messages, rewrite_query
from home.recall import Recall
from home.turn import Conversation
from llm.params import GenParams
from tests.test_turn_memory import Spy  # the real engine, recording each generation's messages
from vault.config import MemorySettings, parse_config
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.memory import MemoryStore, index_logs

RECENT = ["My sister Ana moved to Porto last month and works at a bakery."]
QUESTION = "Does she like it there?"
ONLY_VIA_REWRITE = "Ana has settled into Porto well."  # nothing of it is in the question's words


@pytest.fixture
def store(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    log = ConversationLog.create(vault, "old")
    for text in ("I bake sourdough bread every weekend.", "My favourite season is autumn.", ONLY_VIA_REWRITE,
                 "I started learning the cello in March."):
        log.append({"role": "user", "text": text, "user": "maya"})
    with MemoryStore.open(vault, embedder) as s:
        index_logs(vault, s)
        yield s


def _texts(got) -> list[str]:
    return [h.text for h in got.hits]


def test_rewrite_is_off_by_default_and_off_calls_no_model(store, engine):
    assert MemorySettings().rewrite is False
    assert parse_config("[memory]\nrewrite = true\n", "config.toml").memory.rewrite is True
    spy = Spy(engine)
    plain = Recall(store.vault, store, MemorySettings()).recall(QUESTION, "maya", None, lambda s: len(s) // 4)
    got = Recall(store.vault, store, MemorySettings()).recall(
        QUESTION, "maya", None, lambda s: len(s) // 4, rewriter=lambda t: rewrite_query(spy, t, RECENT))
    assert spy.seen == []  # no generation at all
    assert (got.queries, got.ids, got.block, got.rewrite) == (plain.queries, plain.ids, plain.block, None)
    assert got.queries == [QUESTION]
    assert ONLY_VIA_REWRITE not in _texts(got)


def test_rewrite_on_searches_the_model_query_beside_the_question(store, engine):
    spy = Spy(engine)
    recall = Recall(store.vault, store, MemorySettings(rewrite=True))
    got = recall.recall(QUESTION, "maya", None, lambda s: len(s) // 4,
                        rewriter=lambda t: rewrite_query(spy, t, RECENT))
    assert len(spy.seen) == 1 and spy.seen[0] == messages(QUESTION, RECENT)  # one call, the recent turn in it
    assert got.rewrite and got.rewrite == rewrite_query(engine, QUESTION, RECENT)  # greedy: the same query again
    assert got.queries == [QUESTION, got.rewrite]  # beside the question, never instead of it
    assert "Porto" in got.rewrite  # "there" resolved from the recent turn
    assert ONLY_VIA_REWRITE in _texts(got)  # found only through the rewrite (the test above: not without it)
    assert got.rewrite_ms > 0


def test_a_turn_rewrites_with_its_history_only_when_asked(tmp_path, engine, embedder):
    """Conversation.send: off, the one generation is the reply; on, the rewrite comes first, with the chat's
    recent turns in its prompt."""
    vault = Vault.open(tmp_path / "v")
    params = GenParams(max_tokens=2, temperature=0.0)
    for on, calls in ((False, 1), (True, 2)):
        recall = Recall(vault, MemoryStore.open(vault, embedder), MemorySettings(rewrite=on))
        try:
            spy = Spy(engine)
            history = [{"role": "user", "content": RECENT[0]}, {"role": "assistant", "content": "How lovely!"}]
            convo = Conversation(spy, ConversationLog.create(vault), "maya", None, history, recall=recall)
            "".join(convo.send(QUESTION, params, []))
            assert len(spy.seen) == calls
            if on:
                assert spy.seen[0] == messages(QUESTION, [RECENT[0], "How lovely!"])
        finally:
            recall.close()


def test_clean_keeps_a_short_query_and_drops_echoes():
    assert clean('Query: "Ana Porto likes"\nmore', "Does she like it?") == "Ana Porto likes"
    assert clean("none", "x") is None
    assert clean("Does she like it there", "Does she like it there?") is None  # the question again
    assert len(clean(" ".join(["word"] * 40), "q").split()) == 12
