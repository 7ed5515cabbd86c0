"""Session summaries as memory items (issue 13, vault/session_summary.py): made at index time for ended
sessions, pointing only to the turns whose sentences they hold, counted as those turns when found, and
remade when one of those turns is forgotten. Real MiniLM, real store (ChromaDB + FTS5)."""

from __future__ import annotations

import re

import pytest

from home.recall import Recall
from vault.config import MemorySettings, parse_config
from vault.forget import forget
from vault.layout import Vault
from vault.logs import ConversationLog, exclusions, read_log
from vault.memory import MemoryStore, MemoryStoreError, index_logs, reindex
from vault.retrieval import Hit
from vault.session_summary import extract, summary_id
from vault.supersede import replaces

OLD = [("user", "Hi! I'm Maya and I live in Lisbon. What should I cook tonight?"),
       ("assistant", "How about a tomato rice?"),
       ("user", "How do I unclog a bathroom sink?"),
       ("assistant", "Try a plunger first."),
       ("user", "Marta from the office lives in Berlin."),
       ("user", "I play the cello in a small orchestra; my brother Rui studies physics in Coimbra."),
       ("user", "Can you suggest a pasta recipe?")]
# six statements of ~22 words: a summary holds the first four (MAX_WORDS), the last two are left over
LONG = [("user", t) for t in (
    "I work as a nurse at the children's hospital in Porto and I usually take the night shift on weekends "
    "because the wards are calmer.",
    "My brother Rui studies physics in Coimbra and he visits me every second month with his girlfriend Ines "
    "and their old dog.",
    "I play the cello in a small amateur orchestra that rehearses on Tuesday evenings in a church hall near the river.",
    "My favourite season is autumn because I love walking in the rain along the beach with a warm coffee in my hand.",
    "I grow tomatoes and basil on my balcony and I make a fresh sauce from them every Sunday for the whole family.",
    "I ride my bicycle to work every morning, even in winter, and I keep a spare raincoat in my locker.")]



def _log(vault: Vault, sid: str, turns) -> list[dict]:
    log = ConversationLog.create(vault, sid)
    return [log.append({"role": role, "text": text, "user": "maya"}) for role, text in turns]


def test_extract_holds_the_users_statements_and_points_only_to_their_turns(tmp_path):
    vault = Vault.open(tmp_path / "v")
    recs = _log(vault, "old", OLD)
    text, sources = extract(recs)
    assert text == ("I'm Maya and I live in Lisbon. I play the cello in a small orchestra. "
                    "my brother Rui studies physics in Coimbra.")
    assert sources == (recs[0]["id"], recs[5]["id"])  # not the questions, requests, replies or Marta's line
    assert extract(recs, max_words=10) is None  # the cap keeps one sentence, and one source is no summary
    assert MemorySettings().summaries is False
    assert parse_config("[memory]\nsummaries = true\n", "c.toml").memory.summaries is True


def test_ended_sessions_get_a_summary_that_counts_its_source_turns(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    old = _log(vault, "old", OLD)
    _log(vault, "cur", [("user", "I live in Porto now and I work as a nurse at the hospital."),
                        ("user", "My cat is called Miso, she is three.")])
    with MemoryStore.open(vault, embedder) as store:
        rep = index_logs(vault, store, sessions=["cur"], summaries=extract)  # the turn path: "cur" is in progress
        assert rep.summaries == 1 and store.get(summary_id("cur")) is None
        got = store.get(summary_id("old"))
        assert got is not None and got.role == "summary" and got.session == "old"
        assert got.sources == (old[0]["id"], old[5]["id"])
        assert index_logs(vault, store, summaries=extract, ended=["cur"]).summaries == 1  # the chat ended
        assert store.get(summary_id("cur")) is not None
        # found, it stands for its sources only (what bench/memory_recall.py counts), and they fold into it
        hits = Recall(vault, store, MemorySettings(k=10)).recall(
            "What instrument do I play and what does my brother study?", "maya", "new", lambda s: len(s) // 4).hits
        summary = next(h for h in hits if h.id == summary_id("old"))
        assert summary.sources == (old[0]["id"], old[5]["id"])
        assert not {h.id for h in hits} & set(summary.sources)  # its turns are not listed again beside it


def test_forgetting_a_turn_remakes_the_summary_without_it(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    old = _log(vault, "old", OLD + [("user", "My favourite season is autumn, I love the rain.")])
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store, summaries=extract)
        assert store.get(summary_id("old")).sources == (old[0]["id"], old[5]["id"], old[7]["id"])
        forget(vault, [old[5]["id"]], store)
        got = store.get(summary_id("old"))
        assert got.sources == (old[0]["id"], old[7]["id"]) and "cello" not in got.text and "autumn" in got.text
        forget(vault, [old[7]["id"]], store)  # one source left: a summary no longer
        assert store.get(summary_id("old")) is None


def test_a_forget_the_store_missed_repairs_the_summary_at_catch_up(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    old = _log(vault, "old", OLD + [("user", "My favourite season is autumn, I love the rain.")])
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store, summaries=extract)
    forget(vault, [old[0]["id"]])  # the app was not running: only the log says it
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)  # even with summaries off, no summary keeps the forgotten words
        got = store.get(summary_id("old"))
        assert "Lisbon" not in got.text and old[0]["id"] not in got.sources


def excluded(vault: Vault, sid: str) -> set[str]:
    return exclusions(read_log(vault.logs_dir / f"{sid}.jsonl").records)


def test_forgetting_a_summary_forgets_the_turns_it_holds(tmp_path, embedder):
    """`summary:<session>` (as `home memory search` prints it) means what it holds: its source turns get
    exclude events, and the summary is dropped, or remade from the statements it had no room for."""
    vault = Vault.open(tmp_path / "v")
    old, long = _log(vault, "old", OLD), _log(vault, "long", LONG)
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store, summaries=extract)
        held = [r["id"] for r in long[:4]]
        assert list(store.get(summary_id("long")).sources) == held
        done = forget(vault, [summary_id("old"), summary_id("long")], store)
        assert done.held == {summary_id("old"): [old[0]["id"], old[5]["id"]], summary_id("long"): held}
        assert done.remade == [summary_id("long")] and "Lisbon" in done.texts[summary_id("old")]
        assert store.get(summary_id("old")) is None
        remade = store.get(summary_id("long"))
        assert remade.sources == (long[4]["id"], long[5]["id"]) and "nurse" not in remade.text
        assert not [i for i in [old[0]["id"], old[5]["id"], *held] if store.get(i) is not None]
        assert store.get(old[4]["id"]) is not None  # Marta's line was never in the summary: it stays
    assert excluded(vault, "old") == {old[0]["id"], old[5]["id"]} and excluded(vault, "long") == set(held)


def test_without_the_index_the_log_says_what_a_summary_holds(tmp_path, embedder):
    """Another process owns the index (or it is damaged): the turns come from the log, as `extract` makes
    the summary, and the index drops the summary at its next catch-up."""
    vault = Vault.open(tmp_path / "v")
    old = _log(vault, "old", OLD)
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store, summaries=extract)
    done = forget(vault, [summary_id("old")])
    assert done.held == {summary_id("old"): [old[0]["id"], old[5]["id"]]} and not done.indexed
    assert excluded(vault, "old") == {old[0]["id"], old[5]["id"]}
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        assert store.get(summary_id("old")) is None and store.get(old[0]["id"]) is None


def test_a_summary_id_without_a_summary_is_refused_with_nothing_written(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    short = _log(vault, "short", OLD[:4])  # one statement about the user: no summary
    before = (vault.logs_dir / "short.jsonl").read_bytes()
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store, summaries=extract)
        for ident, why in (("summary:short", "session 'short' has no summary"),
                           ("summary:nope", "no session log nope.jsonl"), ("summary:../x", "no session log")):
            with pytest.raises(MemoryStoreError, match=re.escape(f"unknown memory id {ident!r}: {why}")):
                forget(vault, [short[0]["id"], ident], store)  # the turn beside it is not forgotten either
        assert store.get(short[0]["id"]) is not None
    assert (vault.logs_dir / "short.jsonl").read_bytes() == before


def test_reindex_rebuild_keeps_the_summaries_when_asked(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    _log(vault, "old", OLD)
    with MemoryStore.open(vault, embedder) as store:
        assert reindex(vault, store, rebuild=True, summaries=extract).summaries == 1
        assert store.get(summary_id("old")) is not None
        assert reindex(vault, store, rebuild=True).summaries == 0 and store.get(summary_id("old")) is None


def test_a_newer_statement_replaces_a_summary_holding_the_stale_one():
    old = Hit("summary:s1", "I'm Maya and I live in Lisbon. I play the cello.", 1.0, "2025-01-06T18:00:00Z",
              "summary", "s1", ("s1:1", "s1:9"))
    new = Hit("s9:3", "I moved to Porto, I live in Porto now.", 1.0, "2025-06-01T10:00:00Z", "user", "s9")
    assert replaces(new, old)
    assert not replaces(old, new)  # a summary replaces nothing: its other statements may be the answer


def test_the_background_indexer_summarises_a_chat_when_it_ends(tmp_path, embedder):
    """Recall.session_ended (the app calls it when a new chat replaces one): with `[memory] summaries` on,
    the session the turn path indexed as in progress gets its summary; off, nothing is made."""
    vault = Vault.open(tmp_path / "v")
    _log(vault, "old", OLD)
    for on in (False, True):
        recall = Recall(vault, MemoryStore.open(vault, embedder), MemorySettings(summaries=on))
        try:
            recall.index_soon("old")  # a turn of the chat in progress
            assert recall.wait_idle(30) and recall.store.get(summary_id("old")) is None
            recall.session_ended("old")
            assert recall.wait_idle(30) and (recall.store.get(summary_id("old")) is not None) is on
        finally:
            recall.close()


def test_a_model_summary_points_to_the_turns_it_was_made_from(tmp_path, engine):
    """The default model (greedy) writes it from the same sentences: its sources are theirs, no others."""
    from home.session_summary_model import model_summariser

    recs = _log(Vault.open(tmp_path / "v"), "old", OLD)
    text, sources = model_summariser(engine)(recs)
    assert text.strip() and sources == extract(recs)[1] == (recs[0]["id"], recs[5]["id"])
    assert model_summariser(engine)(recs[:5]) is None  # one fact sentence: no summary, no model call needed
