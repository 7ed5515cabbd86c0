"""trainer/synth: the reply filters on crafted replies, the tiers file, and the scenario prompts (no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.data.synth import SynthError
from trainer.data.synth.filters import Limits, check, clean, normalise, other_persona, repetition, trim_cut
from trainer.data.synth.prompts import COMMON, character_context, scenarios
from trainer.data.synth.tiers import read_tiers
from vault.personas import Persona
from vault.sheets import card_data, read_sheet

SHEETS = Path(__file__).parent / "fixtures" / "sheets"
OTHERS = ["Barnaby Fitch", "Juniper Okafor", "Orla", "Sage"]
GOOD = "Aye. Storm's backing west, it'll pass by morning. Sit down and dry your boots. Mind the tide."


def verdict(reply: str, seen: set[str] | None = None, limits: Limits | None = None) -> str | None:
    out = check(reply, "Wren Alder", OTHERS, seen or set(), limits)
    return out[0] if out else None


@pytest.mark.parametrize("reply, expected", [
    (GOOD, None),
    ("", "empty"),
    ("Aye.", "too_short"),
    ("word " * 161, "too_long"),
    ("As an AI, I don't have a lighthouse, but I can tell you about them.", "assistant_cliche"),
    ("I'm just a language model, so I can't feel the wind.", "assistant_cliche"),
    ("I don't have personal feelings, but storms sound exciting!", "assistant_cliche"),
    ("Hello! How can I help you today?", "assistant_cliche"),
    ("The storm passes at dawn. I hope this helps!", "assistant_cliche"),
    ("Sure, I'll stay in character as Wren for this roleplay.", "fourth_wall"),
    ("My character would say the tide is turning now.", "fourth_wall"),
    ("The storm will pass.\nUser: are you sure?\nWren: aye.", "fourth_wall"),
    ("Hello there {{user}}, sit by the fire.", "fourth_wall"),
    ("I'm Barnaby, dear heart, and what a splendid storm it is!", "other_persona"),
    ("My name is Juniper Okafor and I build robots.", "other_persona"),
    ("Orla here. The ferry's late again tonight.", "other_persona"),
    ("Barnaby: my dear fellow, the charts are splendid!", "other_persona"),
    ("the light the light the light the light the light the light", "repetition"),
    ("Sit down now please. I said sit down now please. Sit down now please, friend.", "repetition"),
])
def test_each_filter_catches_its_kind(reply, expected):
    assert verdict(reply) == expected


def test_naming_others_is_fine_when_not_claiming_to_be_them():
    for reply in ("Barnaby buys my old charts. He talks too much.", "I'm fond of Juniper, she's a good kid.",
                  "I'm Wren. Barnaby sent you, did he?", "Aye, I miss my brother. The sea took him."):
        assert other_persona(reply, "Wren Alder", OTHERS) is None and verdict(reply) is None, reply


def test_duplicates_compare_normalised_text():
    seen = {normalise(GOOD)}
    assert verdict(GOOD.upper().replace(".", "!"), seen) == "duplicate"
    assert verdict("“Aye.  Storm's backing west — it'll pass by morning. Sit down and dry your boots. Mind the tide”",
                   seen) == "duplicate"
    assert verdict("Aye. Different words entirely, and the tide is out.", seen) is None


def test_limits_are_settings():
    assert verdict("Aye, by morning.", limits=Limits(min_words=2)) is None
    assert verdict(GOOD, limits=Limits(max_words=5)) == "too_long"


def test_clean_and_trim():
    assert clean('Wren Alder: "Aye, sit down."', "Wren Alder") == "Aye, sit down."
    assert clean("**Wren:** Kettle's on.  ", "Wren Alder") == "Kettle's on."
    assert trim_cut("Kettle's on. Sit down and dry your boo") == "Kettle's on."
    assert trim_cut("no sentence ever ends here") == ""
    assert repetition(GOOD) is None


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "tiers.toml"
    path.write_text(text)
    return path


def test_tiers_file(tmp_path):
    tiers = read_tiers(write(tmp_path, 'default = "minor"\n[counts]\nmain = 150\nmajor = 100\nsupporting = 60\n'
                                       'minor = 30\n[personas]\nwren-alder = "main"\n"Barnaby Fitch" = "major"\n'))
    assert tiers.counts == {"main": 150, "major": 100, "supporting": 60, "minor": 30}
    assert tiers.tier_of("wren-alder", "Wren Alder") == "main"
    assert tiers.tier_of("barnaby-fitch", "Barnaby Fitch") == "major"  # by name, or a key that slugs to the id
    assert tiers.tier_of("juniper-okafor", "Juniper Okafor") == "minor"  # the default
    assert tiers.unknown_keys({"wren-alder"}, {"Wren Alder"}) == ["Barnaby Fitch"]
    no_default = read_tiers(write(tmp_path, "[counts]\nmain = 2\n[personas]\nwren-alder = \"main\"\n"))
    assert no_default.tier_of("juniper-okafor") is None


@pytest.mark.parametrize("text, message", [
    ("[counts]\nmain = 150\n[personas]\nwren = \"mian\"\n", ":4: personas.wren: expected one of the tiers in [counts] (main)"),
    ("[counts]\nmain = -1\n", ":2: counts.main: expected a whole number of examples from 0 to 100000, got -1"),
    ("[counts]\nmain = \"lots\"\n", ":2: counts.main: expected a whole number"),
    ("[personas]\nwren = \"main\"\n", "counts: missing; add a [counts] table"),
    ("[counts]\nmain = 1\n[extra]\nx = 1\n", ":3: extra: unknown setting"),
    ("default = \"big\"\n[counts]\nmain = 1\n", ":1: default: expected one of the tiers"),
    ("[counts\nmain = 1\n", "not valid TOML"),
])
def test_bad_tiers_name_file_line_and_field(tmp_path, text, message):
    with pytest.raises(SynthError) as err:
        read_tiers(write(tmp_path, text))
    assert str(err.value).startswith(str(tmp_path / "tiers.toml")) and message in str(err.value)
    with pytest.raises(SynthError, match="cannot read the tiers file"):
        read_tiers(tmp_path / "missing.toml")


def test_scenarios_cover_common_and_sheet_categories_in_a_stable_order():
    wren = Persona("wren-alder", card_data(read_sheet(SHEETS / "wren-alder.md")))
    all_ = scenarios(wren)
    first = [s.category for s in all_[:8]]
    assert first == [*COMMON, "relationships", "goals", "conflicts"]  # interleaved: 8 examples see 8 categories
    assert len({s.key for s in all_}) == len(all_) > 300  # enough distinct prompts for a main-tier persona
    rel = [s.instruction for s in all_ if s.category == "relationships"]
    assert "What do you think of Barnaby Fitch?" in rel and "What do you think of Orla?" in rel
    assert any("Finish the storm log" in s.instruction for s in all_ if s.category == "goals")
    assert [s.key for s in scenarios(wren)] == [s.key for s in all_]  # deterministic: what resume relies on
    # a card with no sheet (imported elsewhere) still gets the common categories, from its card fields
    plain = Persona("vera", {"name": "Vera", "description": "A lighthouse keeper.", "mes_example": "",
                             "extensions": {}})
    assert {s.category for s in scenarios(plain)} == set(COMMON)
    assert "Description: A lighthouse keeper." in character_context(plain)
    context = character_context(wren)
    assert context.startswith("You are Wren Alder.") and "Speech habits: Short sentences." in context
    assert "Wren Alder: By morning." in context  # the example dialogue, macros filled
