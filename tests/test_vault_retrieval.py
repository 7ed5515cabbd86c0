"""Retrieval's pure parts, without a store: when to search at all (should_retrieve), the exact in-memory
vector matrix (growth, replacement, deletion, per-user filters, the two-thread split), and the memory
block (dated lines within the token budget, newest first)."""

from __future__ import annotations

import numpy as np

from vault.retrieval import Hit, VectorMatrix, fit_memory, memory_block, should_retrieve


def test_should_retrieve_skips_chit_chat_and_keeps_questions():
    for text in ["hi", "Hello!", "thanks a lot", "ok cool", "how are you?", "good morning :)", "", "lol"]:
        assert not should_retrieve(text), text
    for text in ["where does my sister live?", "what am I allergic to?", "remember the plan?",
                 "suggest a dinner recipe for tonight", "my name?"]:
        assert should_retrieve(text), text


def test_vector_matrix_is_exact_grows_replaces_deletes_and_filters_users():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    m = VectorMatrix(8)
    for i in range(0, 3000, 7):  # small batches: the matrix grows many times
        m.upsert([f"s:{j}" for j in range(i, min(i + 7, 3000))], ["me" if j % 2 else "kim" for j in
                 range(i, min(i + 7, 3000))], vecs[i:i + 7])
    q = vecs[42]
    assert m.top(q, 5)[0] == "s:42" and len(m) == 3000
    assert m.top(q, 3) == [f"s:{j}" for j in np.argsort(-(vecs @ q))[:3]]  # exact, not approximate
    assert "s:42" not in m.top(q, 5, user="me") and m.top(q, 1, user="kim") == ["s:42"]
    m.upsert(["s:42"], ["kim"], -q[None, :])  # replaced in place, not appended
    assert len(m) == 3000 and m.top(q, 1)[0] != "s:42"
    m.delete(["s:42", "nope"])
    assert len(m) == 2999 and m.vector("s:42") is None and m.top(q, 1, user="nobody") == []


def test_memory_block_is_dated_within_budget_and_empty_without_hits():
    hits = [Hit("s:1", "My sister Ana lives in Porto.", 1.0, "2026-01-05T09:00:00.000Z", "user", "s"),
            Hit("s:4", "x " * 500, 0.9, "2026-02-01T09:00:00.000Z", "assistant", "s")]
    count = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    block = memory_block(hits, 60, count)
    assert "[2026-01-05] the user said: My sister Ana lives in Porto." in block and "newer one is right" in block
    assert count(block) <= 60 and "[2026-02-01]" not in block  # the long one did not fit
    assert memory_block([], 500, count) == "" and memory_block(hits, 5, count) == ""


def test_memory_block_writes_the_newest_first_whatever_the_rank():
    """A stale statement that outranks its correction must not come first: the default model follows the
    first of two contradicting lines more often (bench/knowledge_conflict.py). The hits stay in rank order."""
    old = Hit("s:1", "I live in Berlin.", 0.9, "2025-03-02T09:00:00.000Z", "user", "s")
    new = Hit("t:4", "I moved to Lisbon last month.", 0.8, "2026-11-20T09:00:00.000Z", "user", "t")
    count = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    block, used = fit_memory([old, new], 500, count)
    assert block.index("Lisbon") < block.index("Berlin")
    assert used == [old, new]
    ranked, _ = fit_memory([old, new], 500, count, newest_first=False)
    assert ranked.index("Berlin") < ranked.index("Lisbon")
    assert sorted(block.splitlines()[1:]) == sorted(ranked.splitlines()[1:])  # the same lines, reordered


def test_vector_matrix_split_over_two_threads_is_still_exact():
    from vault.retrieval import PARALLEL_ROWS

    rng = np.random.default_rng(0)
    n = PARALLEL_ROWS + 5001
    m = rng.standard_normal((n, 16)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    vm = VectorMatrix(16)
    users = ["me" if i % 3 else "ana" for i in range(n)]
    vm.upsert([f"r{i}" for i in range(n)], users, m)
    vm.delete([f"r{i}" for i in range(0, n, 7)])
    q = m[11]
    for user in (None, "me", "ana"):
        ok = np.array([i % 7 != 0 and (user is None or users[i] == user) for i in range(n)])
        sims = np.where(ok, m @ q, -np.inf)
        want = [f"r{i}" for i in np.argsort(-sims, kind="stable")[:25]]
        assert vm.top(q, 25, user) == want
