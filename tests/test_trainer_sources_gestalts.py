"""trainer.sources.gestalts: the user's distilled facts as knowledge examples."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.sources import SourceError, load_source
from trainer.sources.gestalts import PROMPTS, load_gestalts, second_person

FIX = Path(__file__).parent / "fixtures" / "trainer" / "gestalts"


def ask(ex) -> str:
    (msg,) = ex.context
    assert msg["role"] == "user"
    return msg["content"]


@pytest.fixture(scope="module")
def report():
    return load_gestalts(path=FIX, user="maya")


def singles(report) -> dict[str, str]:
    return {e.origin.rsplit(":", 1)[1]: e.target for e in report.examples if not e.target.startswith("- ")}


def test_live_facts_in_second_person(report):
    assert singles(report) == {
        "1": "You prefer tea over coffee.",
        "3": "You have a dog called Biscuit.",
        "4": "You are learning Portuguese for a trip to Lisbon.",
        "5": "You dislike loud restaurants.",
        "7": "Tennis is her favourite sport to watch.",  # no safe rewrite: kept as written
        "10": "You usually run on Saturday mornings now.",  # the edit replaced line 2
        "13": "You journal every evening before bed.",
    }
    assert all(e.source == "gestalts" and e.persona is None for e in report.examples)


def test_deleted_facts_are_not_trained_on(report):
    assert not any("nurse" in e.target for e in report.examples)


def test_prompts_are_keyed_on_kind_and_stable(report):
    for ex in report.examples:
        if not ex.target.startswith("- "):
            assert ask(ex) in PROMPTS[ex.tier]
    again = load_gestalts(path=FIX / "maya.jsonl")
    assert [ask(e) for e in again.examples] == [ask(e) for e in report.examples]
    assert again.dataset_hash() == report.dataset_hash()


def test_listing_per_kind_with_several_facts(report):
    (listing,) = [e for e in report.examples if e.target.startswith("- ")]
    assert ask(listing) == "List everything you know about my preferences."
    assert listing.target.splitlines() == ["- You prefer tea over coffee.", "- You dislike loud restaurants.",
                                           "- Tennis is her favourite sport to watch."]
    assert listing.tier == "preference"


def test_bad_lines_are_rejections(report):
    reasons = {r.line: r.reason for r in report.rejected}
    assert reasons == {
        8: "text: expected a string, got int",
        9: "invalid JSON: Expecting value",
        12: "deleted: expected true or false, got 'no'",
        14: "torn last line (an interrupted write), skipped",
    }
    assert all(r.file == str(FIX / "maya.jsonl") for r in report.rejected)
    assert "rejected " + str(FIX / "maya.jsonl") + ":14: torn last line" in report.render()


def test_by_kind_counts_in_the_report(report):
    assert "by tier: preference=4, fact=1, goal=1, habit=1, routine=1" in report.render()


@pytest.mark.parametrize("fact, expected", [
    ("Prefers tea over coffee.", "You prefer tea over coffee."),
    ("Usually runs on Sunday mornings.", "You usually run on Sunday mornings."),
    ("Is allergic to peanuts.", "You are allergic to peanuts."),
    ("Maya's sister lives in Leeds.", "Your sister lives in Leeds."),
    ("Her brother is called Tom.", "Your brother is called Tom."),
    ("Maya has two cats.", "You have two cats."),
    ("She doesn't drink alcohol.", "You don't drink alcohol."),
    ("They are vegetarian.", "You are vegetarian."),
    ("The user works as a nurse.", "You work as a nurse."),
    ("Watches films on Fridays.", "You watch films on Fridays."),
    ("Tries to read before bed.", "You try to read before bed."),
    ("Teaches herself Spanish.", "You teach yourself Spanish."),
    ("Lives with her partner Sam.", "Lives with her partner Sam."),  # "her" could be anyone: unchanged
    ("Cats are her favourite animal.", "Cats are her favourite animal."),
    ("Paris is where she grew up.", "Paris is where she grew up."),
    ("Runs.", "Runs."),
])
def test_second_person(fact, expected):
    assert second_person(fact, "Maya") == expected


def test_other_kinds_get_generic_prompts(tmp_path):
    folder = tmp_path / "gestalts"
    folder.mkdir()
    recs = [{"id": "a", "text": "Speaks Welsh fluently.", "kind": "skill"},
            {"id": "b", "text": "Can touch-type.", "kind": "skill"},
            {"id": "c", "text": "Born in Cardiff."}]
    (folder / "rhys.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    report = load_source("gestalts", vault=SimpleNamespace(gestalts_dir=folder))
    prompts = [ask(e) for e in report.examples]
    assert prompts[0] in ("What do you know about my skills?", "Remind me of something about my skills.")
    assert report.examples[2].tier == "fact"  # missing kind
    assert "List everything you know about my skills." in prompts


def test_user_filter_and_vault_roots(tmp_path):
    folder = tmp_path / "vault" / "gestalts"
    folder.mkdir(parents=True)
    (folder / "maya.jsonl").write_text(json.dumps({"id": "1", "user": "maya", "text": "Likes figs."}) + "\n")
    (folder / "theo.jsonl").write_text(json.dumps({"id": "1", "user": "theo", "text": "Likes dates."}) + "\n")
    assert [e.target for e in load_gestalts(vault=tmp_path / "vault", user="Theo").examples] == [
        "You like dates."]
    assert len(load_gestalts(vault=tmp_path / "vault").examples) == 2
    with pytest.raises(SourceError, match=r"no gestalts for user 'ann' \(users with gestalts: maya, theo\)"):
        load_gestalts(vault=tmp_path / "vault", user="ann")


def test_requests_that_cannot_work(tmp_path):
    with pytest.raises(SourceError, match="a vault or a path"):
        load_gestalts()
    with pytest.raises(SourceError, match="no such gestalts"):
        load_gestalts(path=tmp_path / "missing")
    with pytest.raises(SourceError, match="no gestalts yet"):
        load_gestalts(path=tmp_path)
