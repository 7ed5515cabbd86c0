"""trainer.data.sources: the shared entry point, helpers and the QA report every source prints first."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.data.examples import DatasetReport, Example
from trainer.data.sources import KINDS, SourceError, load_source, merge_roles, read_text, require_file

FIX = Path(__file__).parent / "fixtures" / "trainer"


def test_every_kind_has_a_loader_module():
    import importlib

    names = {"logs": "load_logs", "transcript": "load_transcript", "essays": "load_essays",
             "jsonl": "load_jsonl", "gestalts": "load_gestalts"}
    for kind in KINDS:
        assert callable(getattr(importlib.import_module(f"trainer.data.sources.{kind}"), names[kind]))


@pytest.mark.parametrize("kwargs, words", [
    ({"kind": "tweets", "path": "x"}, "unknown source kind"),
    ({"kind": "jsonl", "path": "x", "window": 0}, "window"),
    ({"kind": "jsonl", "path": "x", "window": True}, "window"),
    ({"kind": "essays"}, "a path is needed"),
    ({"kind": "logs"}, "a vault or a path"),
    ({"kind": "gestalts"}, "a vault or a path"),
    ({"kind": "transcript", "path": FIX / "transcripts" / "chat_inline.txt"}, "--speaker"),
])
def test_load_source_refuses_requests_that_cannot_work(kwargs, words):
    with pytest.raises(SourceError, match=words) as info:
        load_source(**kwargs)
    assert info.value.exit_code == 2


def test_load_source_missing_inputs_name_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    for kind, extra in (("jsonl", {}), ("transcript", {"speaker": "Maya"}), ("essays", {}), ("logs", {}),
                        ("gestalts", {})):
        with pytest.raises(SourceError, match="nope.jsonl"):
            load_source(kind, missing, **extra)


def test_load_source_dedupes_and_counts(tmp_path):
    line = '{"instruction": "Say hi.", "output": "Hi!"}\n'
    f = tmp_path / "dupes.jsonl"
    f.write_text(line * 3 + '{"instruction": "Say bye.", "output": "Bye!"}\n')
    report = load_source("jsonl", f)
    assert [e.target for e in report.examples] == ["Hi!", "Bye!"]
    assert report.duplicates_removed == 2
    assert report.summary()["duplicates_removed"] == 2


@pytest.mark.parametrize("name, reason", [
    ("empty.txt", "empty file"),
    ("binary.txt", "binary file"),
    ("latin1.txt", "not UTF-8"),
])
def test_read_text_rejects_bad_files_by_name(name, reason):
    report = DatasetReport()
    assert read_text(FIX / "transcripts" / name, report) is None
    (rej,) = report.rejected
    assert rej.file.endswith(name) and rej.line is None and reason in rej.reason
    assert str(rej).startswith(str(FIX / "transcripts" / name) + ": ")


def test_read_text_normalises_newlines_and_bom(tmp_path):
    f = tmp_path / "crlf.txt"
    f.write_bytes("\ufeffa\r\nb\rc\n".encode())
    assert read_text(f, DatasetReport()) == "a\nb\nc\n"


def test_require_file_is_a_usage_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        require_file(tmp_path / "missing.txt")
    with pytest.raises(SourceError):
        require_file(tmp_path)  # a folder is not a file


def test_merge_roles_joins_consecutive_speakers():
    msgs = merge_roles([("user", "a"), ("user", "b"), ("assistant", "c"), ("user", "d")])
    assert msgs == ({"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "c"},
                    {"role": "user", "content": "d"})


def test_report_render_shows_counts_lengths_and_rejections():
    report = DatasetReport()
    ctx = ({"role": "user", "content": "q"},)
    report.examples = [
        Example(ctx, "one two three", "jsonl", "f:1", persona="Sage", tier="advice"),
        Example(ctx, "one two three", "jsonl", "f:2", persona="Sage", tier="advice"),
        Example(ctx, "a b c d e f g h i j", "essays", "e:3", tier="note"),
    ]
    report.reject("data.jsonl", 7, "output: empty")
    report.dedupe()
    text = report.render()
    assert "2 examples, 1 duplicates removed, 1 lines rejected" in text
    assert "by source: jsonl=1, essays=1" in text
    assert "by persona: Sage=1, -=1" in text
    assert "by tier: advice=1, note=1" in text
    assert "target words: min 3" in text and "max 10" in text
    assert "rejected data.jsonl:7: output: empty" in text


def test_every_source_reports_before_training(tmp_path):
    """Each source's report renders and serialises its examples (smoke over the fixtures)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "s.jsonl").write_text('{"role": "user", "text": "hello there"}\n')
    reports = [
        load_source("transcript", FIX / "transcripts" / "play_blocks.txt", speaker="Margaret"),
        load_source("essays", FIX / "essays"),
        load_source("jsonl", FIX / "jsonl" / "mixed_bad.jsonl"),
        load_source("gestalts", FIX / "gestalts"),
        load_source("logs", logs),
    ]
    for report in reports:
        assert report.examples
        assert report.render().startswith(f"dataset: {len(report.examples)} examples")
        for ex in report.examples:
            rec = ex.to_record()
            assert rec["completion"][0]["content"].strip()
            assert all(m["role"] in ("system", "user", "assistant") and m["content"] for m in rec["prompt"])
        assert len(report.dataset_hash()) == 64
