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

import pytest

from home.recall import Recall
from vault.config import MemorySettings
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.memory import MemoryStore, index_logs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedder():
    from vault.embedder import load_embedder

    return load_embedder()


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
    assert res["overall"]["questions"] >= 25
    assert res["overall"]["recall@10"] >= FLOOR, res
    assert res["no-answer"]["empty"] >= EMPTY_FLOOR, res


FLOOR = 0.6
EMPTY_FLOOR = 0.5
