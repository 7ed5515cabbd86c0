"""trainer.data.sources.logs: the user's own messages (voice) or a persona's replies from the vault's logs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.data.sources import SourceError, load_source
from trainer.data.sources.logs import load_logs

SESSION = "20261124-100000-000-ab12"


def record(turn: int, role: str, text: str, *, session: str = SESSION, user: str = "maya",
           persona: str | None = "sage", **extra) -> dict:
    """One log line as vault/logs.py writes it (ARCHITECTURE.md, conversation log record)."""
    rec = {"v": 1, "id": f"{session}:{turn}", "session": session, "turn": turn,
           "time": f"2026-11-24T10:00:{turn:02d}.000Z", "user": user, "persona": persona, "role": role,
           "text": text, "adapters": [], "partial": False}
    if role == "assistant":
        rec |= {"model": {"name": "SmolLM2 135M Instruct", "fingerprint": "f" * 64},
                "params": {"temperature": 0.7}, "tokens": {"prompt": 20, "completion": 9},
                "timings": {"ttft_ms": 40.0, "total_ms": 300.0, "tok_per_s": 30.0}, "router": None,
                "memory_ids": [], "finish_reason": "stop"}
    rec.update(extra)
    return rec


def write_log(folder: Path, records: list, *, session: str = SESSION, tail: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{session}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


@pytest.fixture
def logs(tmp_path) -> Path:
    folder = tmp_path / "logs"
    write_log(folder, [
        record(1, "user", "hey, can you help me plan a picnic?"),
        record(2, "assistant", "Of course! Where are you thinking of going?"),
        record(3, "event", "", kind="adapter_switch"),
        record(4, "user", "the park by the river"),
        record(5, "assistant", "Lovely. Here is a long list of everything you could possibly",
               partial=True, finish_reason="cancelled"),
        record(6, "user", "shorter please, just the essentials"),
        record(7, "assistant", "A blanket, water, and something sweet."),
    ], tail='{"v": 1, "id": "' + SESSION + ':8", "role": "user", "text": "tha')  # torn last line
    return folder


def test_voice_targets_are_the_users_messages_with_roles_flipped(logs):
    report = load_logs(path=logs)
    assert [e.target for e in report.examples] == [
        "hey, can you help me plan a picnic?", "the park by the river", "shorter please, just the essentials"]
    assert report.examples[0].context == ()
    assert report.examples[1].context == (
        {"role": "assistant", "content": "hey, can you help me plan a picnic?"},
        {"role": "user", "content": "Of course! Where are you thinking of going?"})
    assert all(e.source == "logs" and e.persona is None for e in report.examples)
    assert report.examples[1].origin == f"{SESSION}:4"


def test_partial_reply_is_context_but_never_a_target(logs):
    voice = load_logs(path=logs).examples[2]
    assert voice.context[-2:] == (
        {"role": "assistant", "content": "the park by the river"},
        {"role": "user", "content": "Lovely. Here is a long list of everything you could possibly"})
    persona = load_logs(path=logs, target="persona", persona="Sage")
    targets = [e.target for e in persona.examples]
    assert targets == ["Of course! Where are you thinking of going?",
                       "A blanket, water, and something sweet."]
    assert all("everything you could possibly" not in t for t in targets)


def test_persona_target_keeps_roles(logs):
    report = load_source("logs", logs, target="persona", persona="SAGE")
    last = report.examples[-1]
    assert last.persona == "SAGE"
    assert [m["role"] for m in last.context] == ["user", "assistant", "user", "assistant", "user"]
    assert last.context[-1] == {"role": "user", "content": "shorter please, just the essentials"}
    assert load_logs(path=logs, target="persona", persona="pip").examples == []


def test_torn_last_line_and_bad_lines_are_reported(tmp_path):
    path = write_log(tmp_path, [record(1, "user", "hello")], tail="\n".join([
        "not json",
        json.dumps([1, 2]),
        json.dumps(record(2, "narrator", "who?")),
        json.dumps(record(3, "user", None)),
        json.dumps(record(4, "assistant", "fine", persona=7)),
        '{"role": "user", "text": "cut o']))
    report = load_logs(path=path)
    assert [e.target for e in report.examples] == ["hello"]
    reasons = {r.line: r.reason for r in report.rejected}
    assert all(r.file == str(path) for r in report.rejected)
    assert reasons[2].startswith("invalid JSON")
    assert reasons[3] == "expected a JSON object, got list"
    assert reasons[4].startswith("role: expected one of user, assistant, event, got 'narrator'")
    assert reasons[5] == "text: expected a string, got NoneType"
    assert reasons[6] == "persona: expected a string, got int"
    assert reasons[7] == "torn last line (an interrupted write), skipped"
    assert f"rejected {path}:7: torn last line" in report.render()


def test_excluded_and_empty_turns_are_forgotten(tmp_path):
    path = write_log(tmp_path, [
        record(1, "user", "my bank pin is 1234", excluded=True),
        record(2, "assistant", "I won't remember that.", excluded=True),
        record(3, "user", "   "),
        record(4, "user", "what should I cook tonight?"),
    ])
    (ex,) = load_logs(path=path).examples
    assert ex.target == "what should I cook tonight?" and ex.context == ()


def test_turns_forgotten_by_exclude_events_are_never_trained_on(tmp_path):
    write_log(tmp_path, [record(1, "user", "my address is 12 Elm Street"), record(2, "user", "hello there")])
    write_log(tmp_path, [record(1, "user", "unrelated", session="s2"),
                         {"v": 1, "id": "s2:2", "session": "s2", "turn": 2, "role": "event", "event": "exclude",
                          "target": f"{SESSION}:1", "text": ""}], session="s2")
    targets = [ex.target for ex in load_logs(path=tmp_path).examples]
    assert "my address is 12 Elm Street" not in targets and "hello there" in targets


def test_window_bounds_the_context(tmp_path):
    recs = []
    for i in range(10):
        recs += [record(2 * i + 1, "user", f"message {i}"), record(2 * i + 2, "assistant", f"reply {i}")]
    path = write_log(tmp_path, recs)
    report = load_logs(path=path, window=4)
    assert all(len(e.context) <= 4 for e in report.examples)
    last = report.examples[-1].context
    assert [m["content"] for m in last] == ["message 7", "reply 7", "message 8", "reply 8"]
    assert len(load_logs(path=path).examples[-1].context) == 10


def test_user_filter_and_other_users_as_context(tmp_path):
    path = write_log(tmp_path, [
        record(1, "user", "hi from maya"), record(2, "assistant", "hello maya"),
        record(3, "user", "hi from theo", user="theo"), record(4, "assistant", "hello theo"),
        record(5, "user", "maya again"),
    ])
    report = load_logs(path=path, user="Maya")
    assert [e.target for e in report.examples] == ["hi from maya", "maya again"]
    assert report.examples[1].context[-1] == {"role": "user",
                                              "content": "hello maya\nhi from theo\nhello theo"}


def test_sessions_do_not_share_context_and_are_read_in_order(tmp_path):
    for day, text in (("25", "second session"), ("24", "first session")):
        session = f"202611{day}-0900"
        write_log(tmp_path, [record(1, "user", text, session=session)], session=session)
    (tmp_path / "notes.txt").write_text("not a log")
    report = load_logs(path=tmp_path)
    assert [(e.target, e.context) for e in report.examples] == [("first session", ()), ("second session", ())]


def test_vault_objects_and_roots(tmp_path):
    logs = tmp_path / "vault" / "logs"
    write_log(logs, [record(1, "user", "from the vault")])
    duck = SimpleNamespace(logs_dir=logs)
    assert [e.target for e in load_logs(vault=duck).examples] == ["from the vault"]
    assert [e.target for e in load_source("logs", vault=tmp_path / "vault").examples] == ["from the vault"]


def test_requests_that_cannot_work(tmp_path):
    with pytest.raises(SourceError, match="needs a persona"):
        load_logs(path=tmp_path, target="persona")
    with pytest.raises(SourceError, match="target"):
        load_logs(path=tmp_path, target="everyone")
    with pytest.raises(SourceError, match="no such log file or folder"):
        load_logs(path=tmp_path / "missing")
    with pytest.raises(SourceError, match="no such vault"):
        load_logs(vault=tmp_path / "no-vault")
    with pytest.raises(SourceError, match="a vault or a path"):
        load_logs()
