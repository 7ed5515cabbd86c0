"""Shared-prefix scoring (trainer/evaluation/chains.py) and target-only logits, on the real model.

A conversation whose window holds every earlier turn is a growing prefix: one pass must give the same
target-token loss as scoring each example alone. With a short window each target sees more context
than its own (never less), and examples that do not continue each other are scored alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data.sources import load_source
from trainer.evaluation.chains import Chain, build_chains
from trainer.evaluation.evaluate import pick_examples
from trainer.evaluation.perplexity import example_tokens, score

TALK = """Wren: Morning. The glass is falling again.
Maya: Then the beans wait another day. I hate waiting on the weather.
Wren: Aye. Mind the tide if you walk the causeway.
Maya: I never walk it after four. The bread needs me by then anyway.
Wren: Bread again? You bake more than the harbour eats.
Maya: Slow bread, three days of it. The starter is older than my car.
Wren: Bring a loaf on Sunday and I will show you the storm log.
Maya: Deal. I will bring the rye, the good one, with caraway.
"""


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    path = tmp_path_factory.mktemp("chains") / "talk.txt"
    path.write_text(TALK)
    return path


def test_logits_from_first_position_are_the_tail_of_all_positions(engine):
    tokens = engine.tokenize("The keeper of the light logs every ship and every storm that passes the point.")
    full = engine.logits(tokens, all_positions=True)
    tail = engine.logits(tokens, all_positions=True, first=9)
    assert tail.shape == (len(tokens) - 9, full.shape[1])
    np.testing.assert_allclose(tail, full[9:], atol=2e-3)
    assert engine.logits(tokens, all_positions=True, first=len(tokens)).shape == (0, full.shape[1])


def test_shared_scoring_equals_exact_when_the_window_holds_everything(engine, talk):
    examples = load_source("transcript", str(talk), speaker="Maya", window=50).examples
    assert len(examples) == 4
    [chain] = build_chains(engine, examples, None, engine.n_ctx)
    assert isinstance(chain, Chain) and chain.size == 4
    for ex, (a, b) in zip(examples, chain.spans, strict=True):  # each span is that example's own target
        tokens, start = example_tokens(engine, ex)
        assert chain.tokens[:b] == tokens and a == start
    exact, shared = score(engine, examples), score(engine, examples, shared=True)
    assert shared.tokens == exact.tokens
    assert shared.nll == pytest.approx(exact.nll, rel=1e-3)


def test_short_windows_chain_with_more_context_and_breaks_fall_back(engine, talk, tmp_path):
    examples = load_source("transcript", str(talk), speaker="Maya", window=2).examples
    units = build_chains(engine, examples, None, engine.n_ctx)
    assert [u.size for u in units] == [4]  # window 2: each context continues the one before
    for ex, (a, b) in zip(examples, units[0].spans, strict=True):  # the same target tokens, more context
        tokens, start = example_tokens(engine, ex)
        assert units[0].tokens[a:b] == tokens[start:] and a >= start

    split = tmp_path / "split.txt"  # a heading starts a section: the context never crosses it
    lines = TALK.splitlines()
    split.write_text("\n".join(lines[:4] + ["ACT II"] + lines[4:]) + "\n")
    parts = load_source("transcript", str(split), speaker="Maya", window=10).examples
    units = build_chains(engine, parts, None, engine.n_ctx)
    assert [u if isinstance(u, int) else u.size for u in units] == [2, 2]
    reordered = [examples[2], examples[0], examples[3], examples[1]]  # nothing continues anything
    assert build_chains(engine, reordered, None, engine.n_ctx) == [0, 1, 2, 3]


def test_pick_examples_in_runs_spread_over_the_data():
    data = list(range(100))
    assert pick_examples(data, 64) == [(i * 100) // 64 for i in range(64)]  # unchanged default
    runs = pick_examples(data, 64, run=16)
    assert len(runs) == 64 and runs[:16] == list(range(16)) and runs[-16:] == list(range(84, 100))
    assert pick_examples(data, 10, run=4) == [0, 1, 2, 3, 48, 49, 50, 51, 96, 97]
    assert pick_examples(data[:5], 10, run=4) == data[:5]
