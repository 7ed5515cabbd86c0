"""trainer.data.sources.transcript: speaker-labelled dialogue in the common layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.data.sources import SourceError, load_source
from trainer.data.sources.transcript import load_transcript, parse_transcript

FIX = Path(__file__).parent / "fixtures" / "trainer" / "transcripts"


def speeches(text: str, speaker: str | None = None) -> list[tuple[str, str]]:
    return [(s.speaker, s.text) for s in parse_transcript(text, speaker).speeches]


def test_play_blocks_fold_abbreviations_and_drop_directions():
    report = load_transcript(FIX / "play_blocks.txt", "Margaret")
    parsed = parse_transcript((FIX / "play_blocks.txt").read_text(), "Margaret")
    assert parsed.layout == "blocks"
    assert {s.speaker for s in parsed.speeches} == {"MARGARET", "TOBIAS", "WIDOW GREY"}  # MARG./TOB. folded
    texts = [e.target for e in report.examples]
    assert texts[0].startswith("The glass wants polishing again; the salt\nWrites")
    assert "A light is owed\nWhether or not a ship comes by to thank it." in texts
    assert "Go, then. I will keep the wick alone." in texts  # "(softly)" dropped
    everything = " ".join(texts + [m["content"] for e in report.examples for m in e.context])
    for direction in ("She lifts the cloth", "Exit TOBIAS", "Enter MARGARET", "Exeunt", "ACT I", "SCENE"):
        assert direction not in everything
    assert report.examples[0].origin == f"{FIX / 'play_blocks.txt'}:11"


def test_context_never_crosses_a_scene_and_keeps_other_speakers_names():
    report = load_transcript(FIX / "play_blocks.txt", "MARG")
    by_line = {e.origin.rsplit(":", 1)[1]: e for e in report.examples}
    assert by_line["37"].context == ()  # first speech of SCENE 2
    assert by_line["32"].context[-1] == {
        "role": "user",
        "content": "TOBIAS: You speak of it as if it were a person.\n"
                   "WIDOW GREY: She speaks of it as I would speak of mine."}
    assert by_line["19"].context[0]["role"] == "assistant"  # her own earlier speech


def test_inline_dot_play_edition():
    parsed = parse_transcript((FIX / "play_inline_dot.txt").read_text(), "Margaret")
    assert parsed.layout == "inline-dot"
    said = [(s.speaker, s.text) for s in parsed.speeches]
    assert ("Margaret", "Tell Mr. Hale the thanks belong to the lamp.") in said
    assert ("Tobias", "You speak of it as if it were a person.") in said  # "Tob." folded into Tobias
    assert any(t.endswith("thank it. He never stays.") for _, t in said)  # "[Aside.]" removed
    assert not any("Mr" == s for s, _ in said)


def test_screenplay_headings_extensions_and_contd():
    report = load_transcript(FIX / "screenplay.txt", "maya")
    parsed = parse_transcript((FIX / "screenplay.txt").read_text(), "maya")
    assert parsed.layout == "blocks"
    assert [s.speaker for s in parsed.speeches] == ["MAYA", "THEO", "MAYA", "THEO", "PRIYA", "MAYA"]
    targets = [e.target for e in report.examples]
    assert targets == ["Crooked. Of course it's crooked.",
                       "Anywhere the kettle can reach.\nIs it still crooked, or is it me?",  # (CONT'D) merged
                       "You're right on time. Nobody has found the biscuits yet."]
    theo = parsed.speeches[1].text
    assert theo == "Where do you want the mugs? I counted forty, but six of them say World's Best Uncle."
    priya = "PRIYA: Sorry I'm late, the bus went the long way round."
    assert report.examples[2].context == ({"role": "user", "content": priya},)
    joined = " ".join(targets)
    assert "INT." not in joined and "CUT TO" not in joined and "(to herself)" not in joined


def test_inline_chat_with_timestamps_and_wrapped_lines():
    report = load_transcript(FIX / "chat_inline.txt", "Maya")
    targets = [e.target for e in report.examples]
    assert targets[0] == "morning! are we still on for the allotment?"
    assert targets[1] == "perfect, I have the twine and the old kneeling pad, the one with the hole in it"
    assert targets[2] == ("of course. Bring gloves, the nettles are back.\n"
                          "and maybe a flask, it gets cold by noon")
    ctx = report.examples[3].context
    assert ctx[-1]["content"] == "Theo: Note: the gate code changed last week.\nPriya: What is it now?"
    assert "joins the chat" not in str([e.context for e in report.examples])


def test_chat_line_ending_in_a_bracket_is_not_a_stage_direction():
    text = "[10:02] Ann: see you at noon [waves]\n[10:03] Bo: sure\n[10:04] Ann: great\n"
    assert speeches(text, "Ann") == [("Ann", "see you at noon"), ("Bo", "sure"), ("Ann", "great")]


def test_names_that_prefix_each_other_stay_two_people_in_a_chat():
    text = "Ann: hi\nAnnabel: hello\nAnn: how are you\nAnnabel: fine\n"
    assert [s for s, _ in speeches(text, "Ann")] == ["Ann", "Annabel", "Ann", "Annabel"]


def test_abbreviation_that_answers_the_full_name_is_someone_else():
    text = "JO.\nAre you coming?\n\nJOHN.\nIn a minute.\n\nJO.\nNow, please.\n\nJOHN.\nFine.\n"
    assert [s for s, _ in speeches(text)] == ["JO", "JOHN", "JO", "JOHN"]


def test_whatsapp_export_dates():
    text = ("12/03/2024, 10:02 - Ann: morning\n"
            "12/03/2024, 10:03 - Bo: hey\n"
            "[12/03/24, 10:04:33 PM] Ann: <Media omitted>\n"
            "12/03/2024, 10:05 - Ann: look at this\n")
    assert speeches(text, "Ann") == [("Ann", "morning"), ("Bo", "hey"), ("Ann", "look at this")]


def test_window_bounds_the_context(tmp_path):
    f = tmp_path / "long.txt"
    f.write_text("".join(f"Bo: question {i}\nAnn: answer {i}\n" for i in range(20)))
    report = load_transcript(f, "Ann", window=3)
    last = report.examples[-1]
    assert last.target == "answer 19"
    assert [m["content"] for m in last.context] == ["Bo: question 18", "answer 18", "Bo: question 19"]
    assert all(len(e.context) <= 3 for e in report.examples)
    assert len(load_transcript(f, "Ann").examples[-1].context) == 10  # default window


def test_repeated_exchanges_are_deduplicated(tmp_path):
    f = tmp_path / "repeat.txt"
    f.write_text("Bo: hi\nAnn: hello\n\n# Day 2\n\nBo: hi\nAnn: hello\n")
    report = load_source("transcript", f, speaker="Ann")
    assert len(report.examples) == 1 and report.duplicates_removed == 1


def test_unknown_speaker_lists_who_speaks():
    with pytest.raises(SourceError, match=r"no speaker 'Hamlet'.*MARGARET \(4\)"):
        load_transcript(FIX / "play_blocks.txt", "Hamlet")


@pytest.mark.parametrize("name, reason", [("empty.txt", "empty file"), ("binary.txt", "binary"),
                                          ("latin1.txt", "not UTF-8")])
def test_bad_files_are_rejections_not_crashes(name, reason):
    report = load_transcript(FIX / name, "Maya")
    assert report.examples == []
    assert reason in str(report.rejected[0]) and name in str(report.rejected[0])


def test_missing_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        load_transcript(tmp_path / "gone.txt", "Maya")
