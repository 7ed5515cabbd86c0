"""trainer.data.sources.jsonl: alpaca, persona records, chat, history/response, arrays, and bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data.examples import Example
from trainer.data.sources import SourceError, load_source
from trainer.data.sources.jsonl import load_jsonl

FIX = Path(__file__).parent / "fixtures" / "trainer" / "jsonl"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def write(tmp_path: Path, *records, name: str = "data.jsonl") -> Path:
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in records))
    return f


def test_alpaca_with_input_and_system():
    report = load_jsonl(FIX / "alpaca.jsonl")
    assert report.rejected == []
    a, b, c = report.examples
    assert a.context == (user("Suggest a name for a sourdough starter."),)
    assert a.target == "Call it Clint Yeastwood. It has earned it." and a.source == "jsonl"
    assert b.context == (user("Rewrite this sentence to sound warmer.\n\nYour order has shipped."),)
    assert c.system == "You are a patient gardening helper." and a.system is None
    assert a.origin == f"{FIX / 'alpaca.jsonl'}:1"
    assert c.prompt_messages()[0] == {"role": "system", "content": "You are a patient gardening helper."}


def test_persona_records_set_persona_and_tier():
    report = load_jsonl(FIX / "persona.jsonl")
    assert [(e.persona, e.tier) for e in report.examples] == [
        ("Sage", "advice"), ("Sage", "reflection"), ("Pip", "banter"), ("sage", "advice")]
    assert report.examples[1].context == (
        user("What do you make of this?\n\nI keep starting projects and not finishing them."),)


def test_persona_filter_is_case_insensitive():
    report = load_source("jsonl", FIX / "persona.jsonl", persona="SAGE")
    assert len(report.examples) == 3
    assert {e.persona.casefold() for e in report.examples} == {"sage"}
    assert "by tier: advice=2, reflection=1" in report.render()


def test_persona_filter_skips_untagged_records(tmp_path):
    f = write(tmp_path, {"instruction": "a", "output": "b"},
              {"persona": "Sage", "instruction": "c", "output": "d", "category": "x"})
    assert [e.target for e in load_jsonl(f, persona="sage").examples] == ["d"]


def test_unknown_persona_lists_the_ones_found():
    with pytest.raises(SourceError, match=r"no records for persona 'Nobody'; personas found: Sage \(2\)"):
        load_jsonl(FIX / "persona.jsonl", persona="Nobody")


def test_openai_chat_every_assistant_message_is_a_target():
    report = load_jsonl(FIX / "chat_openai.jsonl")
    first, second, parts = report.examples
    assert first.system == "You are Maya's writing partner."
    assert first.context == (user("Can you look at my opening line?"),)
    assert first.target == "Of course, paste it in."
    assert second.context == (user("Can you look at my opening line?"), bot("Of course, paste it in."),
                              user("It was the kind of rain that made the buses late."))
    assert parts.context == (user("What's a good first plant for a dark flat?"),)  # content parts joined
    assert parts.system is None


def test_sharegpt_conversations():
    a, b = load_jsonl(FIX / "sharegpt.jsonl").examples
    assert a.system == b.system == "Answer briefly."
    assert a.context == (user("How long should I rest pizza dough?"),)
    assert b.target == "Thirty minutes, but stretch it gently." and len(b.context) == 3


def test_history_response_strings_pairs_and_input():
    a, b, c = load_jsonl(FIX / "history.jsonl").examples
    assert [m["role"] for m in a.context] == ["user", "assistant", "user"]
    assert a.context[-1]["content"] == "The park by the river. What should I bring?"
    assert b.context == (user("What's the capital of Scotland?"), bot("Edinburgh."),
                         user("And its famous castle sits on what?"))
    assert c.context == (user("Recommend a novel."), bot("Try 'The Remains of the Day'."),
                         user("Something shorter?"))
    assert c.target == "'Small Things Like These' is barely a hundred pages."


def test_window_bounds_chat_and_history_context(tmp_path):
    msgs = []
    for i in range(8):
        msgs += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    hist = [t for i in range(8) for t in (f"q{i}", f"a{i}")] + ["q8"]
    f = write(tmp_path, {"messages": msgs}, {"instruction": hist, "response": "a8"})
    report = load_jsonl(f, window=3)
    assert len(report.examples) == 9
    assert all(len(e.context) <= 3 for e in report.examples)
    assert report.examples[7].context == (user("q6"), bot("a6"), user("q7"))
    assert report.examples[8].context == (user("q7"), bot("a7"), user("q8"))
    assert len(load_jsonl(f).examples[7].context) == 10  # default window


def test_prompt_completion_round_trips_our_own_records(tmp_path):
    ex = Example((user("hi"), bot("hello"), user("how are you?")), "Grand, thanks.", "logs", "x",
                 system="Be kind.")
    f = write(tmp_path, ex.to_record(), {"prompt": "Plain prompt", "completion": "Plain answer."})
    back, plain = load_jsonl(f).examples
    assert back.prompt_messages() == ex.prompt_messages() and back.target == ex.target
    assert plain.context == (user("Plain prompt"),) and plain.target == "Plain answer."


def test_mixed_file_rejects_each_bad_line_with_file_line_and_reason():
    path = FIX / "mixed_bad.jsonl"
    report = load_source("jsonl", path)
    assert [e.target for e in report.examples] == ["Cold hands, warm soup, leaves.",
                                                   "Not tonight. Decide in daylight.", "Two."]
    assert report.duplicates_removed == 1  # line 12 repeats line 1
    reasons = {r.line: r.reason for r in report.rejected}
    assert all(r.file == str(path) for r in report.rejected)
    assert reasons[3].startswith("invalid JSON: Expecting ',' delimiter (column")
    assert reasons[4] == "expected a JSON object, got list"
    assert reasons[5].startswith("unknown layout (keys: prompt_text, reply); expected alpaca")
    assert reasons[6] == "output: expected a string, got number"
    assert reasons[7] == "output: empty"
    assert reasons[9].startswith("messages[1].role: expected one of system, user, assistant")
    assert reasons[9].endswith("got 'tool'")
    assert reasons[10] == "messages[1]: empty assistant message, skipped"
    assert reasons[11] == "instruction[1]: expected a string like the turns before it, got number"
    assert reasons[13].startswith("not UTF-8 text")
    assert 2 not in reasons and 1 not in reasons  # blank lines skipped, good lines kept
    assert f"rejected {path}:6: output: expected a string, got number" in report.render()


def test_json_array_rejections_say_item(tmp_path):
    report = load_jsonl(FIX / "array.json")
    assert [e.target for e in report.examples] == ["Rosemary.", "Hello! What are we making today?"]
    assert [e.origin.rsplit(":", 1)[1] for e in report.examples] == ["1", "3"]
    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, "item 2: output: empty"),
        (4, "item 4: expected a JSON object, got string"),
        (5, "item 5: unknown layout (keys: answer, question); expected alpaca (instruction, output), "
            "persona (persona, instruction, output), chat (messages or conversations), "
            "history (instruction list, response), prompt/completion")]


def test_broken_json_array_is_one_rejection_with_its_line(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": \n]\n')
    report = load_jsonl(f)
    (rej,) = report.rejected
    assert rej.line == 4 and rej.reason.startswith("invalid JSON:")


def test_json_file_holding_lines_is_read_as_lines(tmp_path):
    f = write(tmp_path, {"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"},
              name="lines.json")
    assert len(load_jsonl(f).examples) == 2


@pytest.mark.parametrize("record, reason", [
    ({"messages": "hello"}, "messages: expected a list of messages, got string"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages: no assistant message to learn from"),
    ({"messages": ["hi"]}, "messages[0]: expected an object, got string"),
    ({"conversations": [{"from": "human", "value": 3}]},
     "conversations[0].value: expected a string, got number"),
    ({"instruction": 5, "output": "x"}, "instruction: expected a string, got number"),
    ({"instruction": "", "input": "", "output": "x"}, "instruction: empty (and no input)"),
    ({"instruction": "hi", "response": ""}, "response: empty"),
    ({"instruction": [], "response": "x"}, "instruction: no turns before the response"),
    ({"instruction": [["q", "a"], "x"], "response": "y"},
     "instruction[1]: expected a [user, assistant] pair of strings, got string"),
    ({"instruction": {"q": 1}, "response": "y"},
     "instruction: expected a string or a list of turns, got object"),
    ({"persona": 3, "instruction": "a", "output": "b"}, "persona: expected a string, got number"),
    ({"prompt": "a", "completion": " "}, "completion: empty"),
    ({}, "unknown layout (keys: none)"),
])
def test_wrong_fields_are_named(tmp_path, record, reason):
    report = load_jsonl(write(tmp_path, record))
    assert report.examples == []
    assert report.rejected[0].line == 1 and report.rejected[0].reason.startswith(reason)


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"\n\n  \n", "empty file"),
                                             (b'{"a": 1}\x00\x01\x02', "binary file")])
def test_bad_files(tmp_path, content, reason):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(content)
    report = load_jsonl(f)
    (rej,) = report.rejected
    assert report.examples == [] and reason in str(rej) and "bad.jsonl" in str(rej)


def test_missing_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_bom_is_tolerated(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"instruction": "a", "output": "b"}).encode() + b"\n")
    assert len(load_jsonl(f).examples) == 1
