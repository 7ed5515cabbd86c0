"""Memory recall as a user meets it (issue 13): a fact said in passing comes back in a new chat, and a
slice of the year-long benchmark (bench/memory_recall.py) keeps its floor.

Real ChromaDB, the real MiniLM embedder, Home's own turn path (`home.recall.Recall.recall`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from home.recall import Recall
from vault.config import MemorySettings
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.memory import MemoryStore, index_logs

REPO = Path(__file__).resolve().parents[1]



def test_a_fact_said_in_passing_is_recalled_in_a_new_chat(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    log = ConversationLog.create(vault, "s1")
    said = log.append({"role": "user", "text": "Hi! I'm Maya and I live in Lisbon. What should I cook tonight?",
                       "user": "maya", "persona": "sage"})
    log.append({"role": "assistant", "text": "How about a simple tomato rice with some fresh coriander?",
                "user": "maya", "persona": "sage"})
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        assert store.count() == 2  # the turn's sentences are part of it, not more memories
        recall = Recall(vault, store, MemorySettings())
        got = recall.recall("Where do I live?", "maya", session="s2", count_tokens=lambda s: len(s) // 4)
        assert got.ids[:1] == [said["id"]], got
        assert "Lisbon" in got.block
        store.forgotten([said["id"]])  # forgetting the turn takes its sentences with it
        assert store.keyword_count() == store.count() == 1
        assert said["id"] not in recall.recall("Where do I live?", "maya", session="s2",
                                               count_tokens=lambda s: len(s) // 4).ids


def test_benchmark_slice_keeps_its_floor(tmp_path):
    """One person's first six sessions (180 turns) and the questions they answer, through the bench's CLI."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    proc = subprocess.run([sys.executable, "bench/memory_recall.py", "--users", "maya", "--sessions", "6", "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["cost"]["turns"] == 180
    assert res["cost"]["items"] > 180  # sentence items beside the turns
    assert res["no-answer"]["questions"] == 6
    assert res["overall"]["questions"] == 21
    assert res["overall"]["recall@10"] >= FLOOR, res
    assert res["no-answer"]["empty"] >= EMPTY_FLOOR, res


FLOOR = 0.8  # measured 0.867 (issue 13, steps 1-4)
EMPTY_FLOOR = 0.8  # measured 1.0


def test_two_part_questions_split_and_time_words_name_a_window():
    from datetime import UTC, datetime

    from vault.query_plan import plan, sub_queries, time_window

    assert sub_queries("What did my brother study, and where?") == ["What did my brother study",
                                                                    "where did my brother study"]
    assert sub_queries("Which instrument do I play and which sport do I do?") == ["Which instrument do I play",
                                                                                  "which sport do I do"]
    assert sub_queries("Where do I live?") == [] and sub_queries("Do I like bread and butter?") == []
    now = datetime(2026, 1, 12, tzinfo=UTC)

    def days(text):
        w = time_window(text, now)
        return w and [datetime.fromtimestamp(x, UTC).date().isoformat() for x in w]

    assert days("Where did I travel in May?") == ["2025-05-01", "2025-06-01"]  # the latest May before now
    assert days("What did I plant last spring?") == ["2025-03-01", "2025-06-01"]
    assert days("Which book did we read in January 2026?") == ["2026-01-01", "2026-02-01"]
    assert days("I may go; what did I plan?") is None and days("Where do I live?") is None
    assert plan("What did I do two weeks ago?", now).window is not None
    assert days("Can I afford a cruise this summer?") is None  # in January: a plan, not a memory


def test_questions_get_the_statement_that_would_answer_them():
    from vault.query_plan import statement_form

    assert statement_form("Where do I live?") == "i live"
    assert statement_form("What am I allergic to?") == "i am allergic to"
    assert statement_form("Who is my partner?") == "my partner is"
    assert statement_form("Which football team do I support?") == "i support football team"
    assert statement_form("Tell me a joke") is None


def test_greetings_with_a_memory_cue_still_skip_memory():
    from vault.retrieval import should_retrieve

    assert not should_retrieve("Good morning! How are you doing today, my friend?")
    assert not should_retrieve("Hey, thanks again for earlier, you're great!")
    assert should_retrieve("Hi, where do I live?") and should_retrieve("Thanks! What is my job?")


def test_a_second_hop_adds_the_names_the_first_hit_holds():
    from vault.query_plan import bridge

    assert bridge("where is my friend moving", "My best friend Sophie just got a job as an architect.") \
        == "where is my friend moving Sophie"
    assert bridge("where does Sophie live", "Sophie is moving to Hamburg.") == "where does Sophie live Hamburg"
    assert bridge("what do I play", "I play the cello. Anyway, how are you?") is None


def test_a_changed_text_loses_the_sentence_items_it_no_longer_has(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    rec = {"id": "s1:1", "session": "s1", "turn": 1, "role": "user", "user": "me",
           "text": "I grew up by the sea. I keep bees on the roof. My tea is always too strong."}
    with MemoryStore.open(vault, embedder) as store:
        store.upsert([rec])
        assert store.stats()["parts"] == 3 and store.count() == 1
        store.upsert([dict(rec, text="I grew up in the mountains and never saw the sea.")])
        assert store.stats()["parts"] == 0 and store.count() == 1
        assert [h.text for h in store.search("Do I keep bees?", k=3)] == []
