"""trainer.data.sources.essays: four tiers from a folder of essays, drafts paired with their finals."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from trainer.data.sources import SourceError, load_source
from trainer.data.sources.essays import CHUNK_WORDS, NOTE_WORDS, load_essays, pair_key, parse_essay

FIX = Path(__file__).parent / "fixtures" / "trainer"
ESSAYS = FIX / "essays"


def words(text: str) -> int:
    return len(text.split())


def prompt(ex) -> str:
    (msg,) = ex.context
    assert msg["role"] == "user"
    return msg["content"]


def by(report, tier: str, name: str) -> list:
    return [e for e in report.examples if e.tier == tier and Path(e.origin.rsplit(":", 1)[0]).name == name]


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def report():
    return load_essays(ESSAYS)


def test_fixture_folder_gives_every_tier(report):
    assert report.rejected == []
    counts = Counter(e.tier for e in report.examples)
    assert counts == {"opening": 4, "body": 4, "note": 4, "revision": 2}
    assert all(e.source == "essays" and e.target.strip() for e in report.examples)


def test_titles_from_front_matter_heading_first_line_and_name(tmp_path):
    cases = {
        "fm.md": ("---\ntitle: 'Front Title'\n---\n# Other\n\nBody text here.\n", "Front Title"),
        "h1.md": ("# Heading Title\nBody text here.\n", "Heading Title"),
        "setext.md": ("Setext Title\n============\n\nBody text here.\n", "Setext Title"),
        "first.txt": ("First Line Title\n\nBody text here.\n", "First Line Title"),
        "my-long_essay.txt": ("Body text here, a sentence that ends.\n\nAnd more.\n", "My long essay"),
    }
    for name, (text, title) in cases.items():
        essay = parse_essay(text, tmp_path / name)
        assert essay.title == title, name
        assert essay.paras[0].text.startswith(("Body", "# Other")), name


def test_markdown_cleanup(report):
    (body,) = by(report, "body", "on-walking.md")
    assert "TODO" not in body.target  # HTML comment dropped
    assert "date:" not in body.target and "tags:" not in body.target  # front matter dropped
    assert "# On Walking to Work" not in body.target  # the title is the prompt's, not the body's
    assert "## The route" in body.target  # section headings keep their place
    assert "The\nforty minutes" not in body.target and "The forty minutes" in body.target  # soft wraps joined
    assert body.origin == f"{ESSAYS / 'on-walking.md'}:9"  # line numbers count the front matter


def test_body_prompt_has_title_and_thesis(report):
    (body,) = by(report, "body", "slow-bread.md")
    assert prompt(body).startswith(
        "Write an essay titled 'The Case for Slow Bread'. Its main point: Bread made")
    assert body.target.startswith("Bread made in two hours")


def test_opening_continues_from_the_first_paragraph(report):
    (op,) = by(report, "opening", "the-case-for-letters.txt")
    assert prompt(op).startswith(
        "Continue this essay titled 'Why I Still Write Letters':\n\nI still write letters")
    assert op.target.startswith("The people I write to write back")
    assert "I still write letters" not in op.target


def test_note_is_short_real_text_from_the_essay(report):
    for ex in (e for e in report.examples if e.tier == "note"):
        assert prompt(ex).startswith("In a few sentences, what is your view on")
        assert words(ex.target) <= NOTE_WORDS
        source = Path(ex.origin.rsplit(":", 1)[0]).read_text()
        assert flat(ex.target) in flat(source)  # never invented
    (note,) = by(report, "note", "on-walking.md")
    assert note.target == ("Walk when you can. "
                           "The thinking you do on foot is the thinking you will not get back later.")
    assert "'Walking to Work'" in prompt(note)  # "On" dropped from the topic


@pytest.mark.parametrize("name, key, role", [
    ("essays/slow-bread.draft.md", ("essays", "slow-bread"), "draft"),
    ("essays/slow-bread.md", ("essays", "slow-bread"), "plain"),
    ("essays/foo-draft.md", ("essays", "foo"), "draft"),
    ("essays/foo_draft2.txt", ("essays", "foo"), "draft"),
    ("essays/foo-final.md", ("essays", "foo"), "final"),
    ("essays/drafts/garden.md", ("essays", "garden"), "draft"),
    ("essays/drafts/garden.draft.md", ("essays", "garden"), "draft"),
])
def test_draft_naming_conventions(name, key, role):
    (folder, stem), got = pair_key(Path(name))
    assert (folder.name, stem, got) == (*key, role)


def test_revision_pairs_draft_with_final(report):
    (rev,) = by(report, "revision", "slow-bread.md")
    assert prompt(rev).startswith(
        "Revise this draft of my essay 'The Case for Slow Bread':\n\nBread made quickly")
    assert rev.target.startswith("Bread made in two hours")
    (garden,) = by(report, "revision", "garden.md")  # drafts/garden.md → garden.md
    assert "A few square metres" in prompt(garden) and garden.target.startswith("Four square metres")
    drafts = [e for e in report.examples if "draft" in e.origin]
    assert drafts == []  # a draft with a final is only ever a revision prompt


def test_final_suffix_and_unpaired_draft(tmp_path):
    (tmp_path / "tea-draft.md").write_text("# Tea\n\nTea is fine. It is hot.\n\nDrink it.\n")
    (tmp_path / "tea-final.md").write_text("# Tea\n\nTea is good. It is warm.\n\nDrink it slowly.\n")
    (tmp_path / "lone.draft.md").write_text("# Lone\n\nOnly a draft exists. It counts.\n\nAs my writing.\n")
    report = load_essays(tmp_path)
    (rev,) = [e for e in report.examples if e.tier == "revision"]
    assert "Tea is fine" in prompt(rev) and rev.target.startswith("Tea is good")
    assert any(e.tier == "body" and "lone.draft.md" in e.origin for e in report.examples)


def test_identical_draft_is_rejected_by_name(tmp_path):
    text = "# Same\n\nNothing changed here. At all.\n\nTruly.\n"
    (tmp_path / "same.md").write_text(text)
    (tmp_path / "same.draft.md").write_text(text)
    report = load_essays(tmp_path)
    assert any("same.draft.md" in str(r) and "identical" in r.reason for r in report.rejected)


def sentence(i: int) -> str:
    return f"Sentence number {i} of the long essay says one small thing clearly."  # 11 words


def test_long_essay_is_chunked_with_bounded_context(tmp_path):
    paras = [" ".join(sentence(p * 10 + s) for s in range(10)) for p in range(12)]  # 12 x 110 words
    (tmp_path / "long.md").write_text("# Long\n\n" + "\n\n".join(paras) + "\n")
    report = load_essays(tmp_path)
    openings = [e for e in report.examples if e.tier == "opening"]
    assert len(openings) >= 4
    for ex in openings:
        assert words(ex.target) <= CHUNK_WORDS
        context = prompt(ex).split(":\n\n", 1)[1]
        assert words(context) <= CHUNK_WORDS + 1
    assert "…" in prompt(openings[-1])  # later chunks see only the preceding text, marked as cut
    covered = " ".join(e.target for e in openings)
    assert sentence(119) in covered and sentence(10) in covered  # everything after the opening is a target
    (body,) = [e for e in report.examples if e.tier == "body"]
    assert words(body.target) <= 600


def test_one_long_paragraph_is_split_at_sentences(tmp_path):
    (tmp_path / "wall.txt").write_text("Wall\n\n" + " ".join(sentence(i) for i in range(60)) + "\n")
    report = load_essays(tmp_path)
    openings = [e for e in report.examples if e.tier == "opening"]
    assert openings and all(words(e.target) <= CHUNK_WORDS for e in openings)
    assert all(e.target.endswith(".") for e in openings)


def test_long_revision_keeps_only_changed_passages(tmp_path):
    paras = [" ".join(sentence(p * 10 + s) for s in range(8)) for p in range(10)]
    final = list(paras)
    final[3] = final[3].replace("says one small thing", "says one sharper thing")
    final[7] = "A new closing paragraph the draft never had. It is short."
    (tmp_path / "big.draft.md").write_text("# Big\n\n" + "\n\n".join(paras) + "\n")
    (tmp_path / "big.md").write_text("# Big\n\n" + "\n\n".join(final) + "\n")
    revs = [e for e in load_essays(tmp_path).examples if e.tier == "revision"]
    assert len(revs) == 2
    assert all(prompt(e).startswith("Revise this passage from my draft of 'Big':") for e in revs)
    assert "sharper" in revs[0].target and "small thing" in prompt(revs[0])
    assert revs[1].target == final[7]
    assert all(words(e.target) <= CHUNK_WORDS for e in revs)


def test_long_revision_shows_an_inserted_paragraph_with_its_neighbour(tmp_path):
    paras = [" ".join(sentence(p * 10 + s) for s in range(8)) for p in range(10)]
    final = paras[:5] + ["An inserted aside. Short and new."] + paras[5:]
    (tmp_path / "ins-draft.md").write_text("\n\n".join(paras) + "\n")
    (tmp_path / "ins-final.md").write_text("\n\n".join(final) + "\n")
    (rev,) = [e for e in load_essays(tmp_path).examples if e.tier == "revision"]
    assert prompt(rev).endswith(paras[4])
    assert rev.target == paras[4] + "\n\nAn inserted aside. Short and new."


def test_bad_files_are_rejections_naming_the_file(tmp_path):
    for name in ("empty.txt", "binary.txt", "latin1.txt"):
        shutil.copy(FIX / "transcripts" / name, tmp_path / name.replace(".txt", ".md"))
    (tmp_path / "title-only.md").write_text("# Just a title\n")
    (tmp_path / "ok.md").write_text("# Fine\n\nA real paragraph. Two sentences.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")  # not an essay type: ignored
    (tmp_path / ".obsidian").mkdir()
    (tmp_path / ".obsidian" / "workspace.md").write_text("# hidden\n\nnot an essay\n")
    report = load_source("essays", tmp_path)
    reasons = {Path(r.file).name: r.reason for r in report.rejected}
    assert reasons["empty.md"] == "empty file"
    assert "binary" in reasons["binary.md"]
    assert "not UTF-8" in reasons["latin1.md"]
    assert reasons["title-only.md"] == "no paragraphs after the title"
    assert len(reasons) == 4
    assert {Path(e.origin.rsplit(":", 1)[0]).name for e in report.examples} == {"ok.md"}


def test_missing_or_empty_folder_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no such essays folder"):
        load_essays(tmp_path / "nope")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(SourceError, match="no essays found"):
        load_essays(tmp_path)


def test_a_single_file_is_accepted():
    report = load_essays(ESSAYS / "on-walking.md")
    assert {e.tier for e in report.examples} == {"opening", "body", "note"}
