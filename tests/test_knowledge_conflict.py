"""The knowledge-conflict bench's pieces (bench/knowledge_conflict.py): the planted facts, how a reply is
judged, the report, and where the memory block goes. The measurement itself trains: it is a bench, not a test."""

from __future__ import annotations

import re

import pytest

from bench.conflict.facts import FACTS, classify, old_log_turns, table, tally
from bench.conflict.placement import HEADERS, HISTORY, messages, with_header

CITY = FACTS[0]


@pytest.mark.parametrize(("reply", "label"), [
    ("You live in Lisbon now.", "memory"),
    ("You live in Berlin.", "adapter"),
    ("You moved from Berlin to Lisbon.", "both"),
    ("I'm not sure where you live.", "neither"),
    ("LISBON!", "memory"),
    ("Berliner Weisse is a beer.", "neither"),  # whole words only
])
def test_classify_by_whole_words(reply, label):
    assert classify(reply, CITY) == label


def test_values_belong_to_one_fact_and_the_logs_hold_only_stale_ones():
    values = [v.lower() for f in FACTS for v in (f.stale, f.new)]
    assert len(values) == len(set(values))
    for f in FACTS:
        others = [v for g in FACTS if g is not f for v in (g.stale, g.new)]
        text = " ".join([*f.stale_lines(), f.new_line(), *f.questions])
        assert not any(re.search(rf"\b{v}\b", text, re.I) for v in others), f.key
        assert classify(f.new_line(), f) == "memory" and all(classify(s, f) == "adapter" for s in f.stale_lines())
    said = " ".join(s for _, s in old_log_turns())
    assert all(classify(said, f) == "adapter" for f in FACTS)  # the adapter never sees a new value
    assert len(old_log_turns()) == sum(len(f.said_stale) + len(f.questions) for f in FACTS)


def test_tally_and_table():
    t = tally(["memory", "memory", "adapter", "neither", "both"])
    assert t == {"memory": 2, "adapter": 1, "both": 1, "neither": 1, "n": 5, "memory_rate": 0.4}
    assert tally([])["memory_rate"] == 0.0
    out = table({"adapter, no memory": tally(["adapter"] * 4), "memory late": t})
    lines = out.splitlines()
    assert len(lines) == 4 and lines[2].startswith("adapter, no memory") and lines[3].rstrip().endswith("40%")


def test_block_placements():
    block = "Memory — header\n- [2026-11-20] the user said: I moved to Lisbon."
    late = messages("Where do I live?", block, "late")
    assert late[-2] == {"role": "system", "content": block} and late[-1]["content"] == "Where do I live?"
    assert late[:-2] == HISTORY  # Home's build_messages: history, then the block next to the question
    top = messages("Where do I live?", block, "top")
    assert top[0]["content"] == block and top[1:-1] == HISTORY
    user = messages("Where do I live?", block, "user")
    assert user[-1]["content"].startswith(block) and user[-1]["content"].endswith("Where do I live?")
    assert messages("Where do I live?", None, "top") == [*HISTORY, {"role": "user", "content": "Where do I live?"}]
    with pytest.raises(ValueError, match="place"):
        messages("q", block, "middle")
    swapped = with_header(block, HEADERS["direct"])
    assert swapped.startswith(HEADERS["direct"]) and swapped.endswith("I moved to Lisbon.")
    assert with_header(block, None) == block and with_header("", HEADERS["direct"]) == ""
