"""vault.supersede: a newer statement that says it is a change keeps the line it replaces out of the memory
block (issue 14 item 3, bench/knowledge_conflict.py); facts that are both true stay, and so does the old
line when the question asks about the past. The last test runs Home's turn path (real store, MiniLM)."""

from __future__ import annotations

import pytest

from vault.retrieval import Hit, fit_memory
from vault.supersede import asks_about_past, current, replaces, superseded

OLD, NEW = "2025-03-02T09:00:00.000Z", "2026-11-20T09:00:00.000Z"


def hit(ident: str, text: str, when: str, role: str = "user") -> Hit:
    return Hit(ident, text, 0.5, when, role, ident.split(":")[0])


@pytest.mark.parametrize(("old", "new"), [
    ("I live in Berlin.", "I moved to Lisbon last month, I live in Lisbon now."),
    ("I live in Berlin.", "I moved to Lisbon."),  # moving is a change of where one lives
    ("My favourite drink is coffee.", "These days my favourite drink is tea."),
    ("My cat is called Miso.", "My new pet is called Pepper."),
    ("I go swimming on Tuesday mornings before work.", "I switched my swimming to Saturday evenings."),
    ("My favourite show at the moment is The Bear.", "I've gone off The Bear; Slow Horses is my favourite show now."),
    ("I play the violin.", "I gave that up and I play the guitar now."),
])
def test_a_newer_statement_of_a_change_replaces_the_old_one(old, new):
    assert replaces(hit("b:2", new, NEW), hit("a:1", old, OLD))
    assert replaces(hit("b:2", new, NEW, "gestalt"), hit("a:1", old, OLD))  # a gestalt is about the user too


@pytest.mark.parametrize(("old", "new", "why"), [
    ("I have a dog named Rex.", "I have a cat named Tom too.", "an addition"),
    ("I'm allergic to peanuts.", "I'm also allergic to cats now.", "an addition"),
    ("My sister is called Ana.", "My brother is called Rui.", "no change said"),
    ("I live in Berlin.", "I am learning Japanese now.", "another subject"),
    ("I live in Berlin.", "I live in Berlin now.", "the same content"),
    ("I live in Berlin.", "Do I live in Lisbon now?", "a question"),
    ("I live in Berlin.", "We moved the meeting to Friday.", "another subject"),
    ("My colleague Rui just moved to Cardiff, she says the rent is crazy.",
     "My colleague Omar just moved to Naples, she says the rent is crazy.", "about someone else"),
    ("I've started learning Spanish because we're planning a year in Valencia.",
     "I switched my rowing to Sunday evenings because of the new schedule.", "only a function word shared"),
    ("We brought Pickle home from the shelter, a tiny grey cat who rules the flat.",
     "Big news: we finally moved to Manchester, the flat is full of boxes.", "one word of many shared"),
])
def test_facts_that_can_both_be_true_are_kept(old, new, why):
    assert not replaces(hit("b:2", new, NEW), hit("a:1", old, OLD)), why


def test_only_a_later_line_by_the_user_replaces_and_only_the_users_own():
    old, new = "I live in Berlin.", "I moved, I live in Lisbon now."
    assert not replaces(hit("b:2", new, OLD), hit("a:1", old, NEW))  # said earlier: it is the stale one
    assert not replaces(hit("b:2", new, NEW, "assistant"), hit("a:1", old, OLD))  # a reply may be invented
    assert not replaces(hit("b:2", new, NEW), hit("a:1", old, OLD, "assistant"))


def test_the_block_leaves_the_replaced_line_out_unless_the_question_asks_about_the_past():
    berlin = hit("a:1", "I live in Berlin.", OLD)
    lisbon = hit("b:2", "I moved to Lisbon last month, I live in Lisbon now.", NEW)
    dog = hit("c:3", "My dog is called Biscuit.", OLD)
    hits = [berlin, dog, lisbon]  # rank order: the stale line first
    assert superseded(hits) == {"a:1": "b:2"}
    count = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    block, used = fit_memory(hits, 500, count, replaced=current(hits, "Where do I live?"))
    assert "Lisbon" in block and "Berlin" not in block and "Biscuit" in block
    assert used == [dog, lisbon]  # the turn's log lists what the prompt held
    assert asks_about_past("Where did I live before I moved?")
    assert asks_about_past("Which cities have I lived in this year?")  # bench/memory_recall.py lena-q22
    assert not asks_about_past("Where do I live?") and not asks_about_past("What's my job now?")
    block, used = fit_memory(hits, 500, count, replaced=current(hits, "Where did I live before I moved?"))
    assert "Berlin" in block and used == hits


def test_the_turn_path_shows_only_the_newer_statement(tmp_path):
    """Home's own recall (real ChromaDB and MiniLM): both statements are found, only the newer is shown."""
    from home.recall import Recall
    from vault.config import MemorySettings
    from vault.embedder import load_embedder
    from vault.layout import Vault
    from vault.logs import ConversationLog
    from vault.memory import MemoryStore, index_logs

    vault = Vault.open(tmp_path / "v")
    said = {}
    for session, text, when in (("s1", "I live in Berlin, in a flat in Kreuzberg.", OLD),
                                ("s2", "I've moved to Lisbon, so I live there now.", NEW)):
        log = ConversationLog.create(vault, session)
        said[session] = log.append({"role": "user", "text": text, "user": "me", "persona": "sage", "time": when})
        log.append({"role": "assistant", "text": "Noted.", "user": "me", "persona": "sage", "time": when})
    with MemoryStore.open(vault, load_embedder()) as store:
        index_logs(vault, store)
        found = {h.id for h in store.search("Where do I live?", k=5, user="me")}
        assert {said["s1"]["id"], said["s2"]["id"]} <= found  # the search still finds both
        recall = Recall(vault, store, MemorySettings())
        got = recall.recall("Where do I live?", "me", session="s3", count_tokens=lambda s: len(s) // 4)
        assert "Lisbon" in got.block and "Berlin" not in got.block, got.block
        assert said["s1"]["id"] not in got.ids and said["s2"]["id"] in got.ids
        past = recall.recall("Where did I live before?", "me", session="s3", count_tokens=lambda s: len(s) // 4)
        assert "Berlin" in past.block and "Lisbon" in past.block, past.block
