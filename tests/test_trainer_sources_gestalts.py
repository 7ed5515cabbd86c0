"""trainer.data.sources.gestalts: the user's distilled facts as knowledge examples."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.data.sources import SourceError, load_source
from trainer.data.sources.gestalts import PROMPTS, load_gestalts, second_person
from vault import gestalts as gs
from vault.layout import Vault

FIX = Path(__file__).parent / "fixtures" / "trainer" / "gestalts"
MAYA = FIX / "maya"


def ask(ex) -> str:
    (msg,) = ex.context
    assert msg["role"] == "user"
    return msg["content"]


@pytest.fixture(scope="module")
def report():
    return load_gestalts(path=FIX, user="maya")


def singles(report) -> dict[str, str]:
    return {Path(e.origin).stem: e.target for e in report.examples if not e.target.startswith("- ")}


def test_facts_in_second_person(report):
    assert singles(report) == {
        "g-01": "You prefer tea over coffee.",
        "g-02": "You usually run on Saturday mornings now.",
        "g-03": "You have a dog called Biscuit.",
        "g-04": "You are learning Portuguese for a trip to Lisbon.",
        "g-05": "You dislike loud restaurants.",
        "g-07": "Tennis is her favourite sport to watch.",  # no safe rewrite: kept as written
        "g-10": "You journal every evening before bed.",
        "g-11": "Your sister lives in Leeds.",
    }
    assert list(singles(report)) == ["g-01", "g-02", "g-03", "g-04", "g-05", "g-07", "g-10", "g-11"]  # said order
    assert all(e.source == "gestalts" and e.persona is None for e in report.examples)


def test_prompts_are_keyed_on_kind_and_stable(report):
    for ex in report.examples:
        if not ex.target.startswith("- "):
            assert ask(ex) in PROMPTS[ex.tier]
    again = load_gestalts(path=MAYA)  # the user's folder itself
    assert [ask(e) for e in again.examples] == [ask(e) for e in report.examples]
    assert again.dataset_hash() == report.dataset_hash()
    (one,) = load_gestalts(path=MAYA / "g-03.md").examples  # one file
    assert one.target == "You have a dog called Biscuit."


def test_listing_per_kind_with_several_facts(report):
    listings = {e.tier: e for e in report.examples if e.target.startswith("- ")}
    assert ask(listings["preference"]) == "List everything you know about my preferences."
    assert listings["preference"].target.splitlines() == [
        "- You prefer tea over coffee.", "- You dislike loud restaurants.", "- Tennis is her favourite sport to watch."]
    assert ask(listings["fact"]) == "List everything you know about me."


def test_malformed_files_are_rejections_naming_line_and_field(report):
    reasons = {(Path(r.file).name, r.line): r.reason for r in report.rejected}
    assert reasons == {
        ("g-08.md", 4): "kind: expected one lowercase word such as fact or preference, got '42'",
        ("g-09.md", 1): "header: expected '---' (the file starts with a header between '---' lines)",
        ("g-12.md", 8): "sources: expected log record ids <session>:<turn>, got 'turn twelve'",
        ("g-13.md", 9): "body: empty: write the fact below the header (or delete the file to forget it)",
    }  # and the editor's .swp dotfile is no gestalt at all
    assert f"rejected {MAYA / 'g-08.md'}:4: kind: expected" in report.render()


def test_by_kind_counts_in_the_report(report):
    assert "by tier: preference=4, habit=1, fact=3, goal=1, routine=1" in report.render()


def test_what_distillation_writes_is_what_training_reads(tmp_path):
    vault = Vault.open(tmp_path / "v")
    gs.add_gestalts(vault, "maya", [gs.Draft("The user lives in Lisbon.", said="2026-01-02T00:00:00Z"),
                                    gs.Draft("The user prefers green tea.", "preference", ("s1:3",),
                                             "2026-01-01T00:00:00Z")])
    report = load_source("gestalts", vault=vault, user="maya")
    assert [e.target for e in report.examples] == ["You prefer green tea.", "You live in Lisbon."]
    assert not report.rejected


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


def write(folder: Path, ident: str, text: str, kind: str = "fact") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{ident}.md").write_text(f"---\nkind: {kind}\nsaid: 2026-01-0{ident[-1]}T00:00:00Z\n---\n{text}\n")


def test_other_kinds_get_generic_prompts(tmp_path):
    folder = tmp_path / "gestalts" / "rhys"
    write(folder, "a1", "Speaks Welsh fluently.", "skill")
    write(folder, "b2", "Can touch-type.", "skill")
    write(folder, "c3", "Born in Cardiff.")
    report = load_source("gestalts", vault=SimpleNamespace(gestalts_dir=tmp_path / "gestalts"))
    prompts = [ask(e) for e in report.examples]
    assert prompts[0] in ("What do you know about my skills?", "Remind me of something about my skills.")
    assert report.examples[2].tier == "fact"  # missing kind
    assert "List everything you know about my skills." in prompts


def test_user_filter_and_vault_roots(tmp_path):
    root = tmp_path / "vault" / "gestalts"
    write(root / "maya", "f1", "Likes figs.")
    write(root / "theo", "d1", "Likes dates.")
    assert [e.target for e in load_gestalts(vault=tmp_path / "vault", user="Theo").examples] == ["You like dates."]
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
