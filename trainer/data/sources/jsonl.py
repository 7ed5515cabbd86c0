"""Examples from JSON Lines datasets, the layout detected per line so mixed files just work.

Layouts (one JSON object per line; a `.json` file may instead hold one array of them):
- alpaca: `instruction`, optional `input`, `output`, optional `system`;
- persona records: `persona`, `category`, `instruction`, `input`, `output` (category → Example.tier);
- chat: `messages` (OpenAI `{role, content}`) or `conversations` (sharegpt `{from: human|gpt|system,
  value}`): every assistant message is a target, the up-to-`window` turns before it its context, the
  system message(s) its system prompt;
- history/response: `instruction` is the list of prior turns (strings alternating user/assistant and
  ending with the user's, or `[user, assistant]` pairs), optional `input` the last user turn,
  `response` the target;
- prompt/completion: trl's form, which is also what `Example.to_record` writes, so exports load back.

`persona` keeps only records whose `persona` field matches (case-insensitive). Every bad line is a
rejection with the file, the line (or "item N" in an array) and the field at fault; nothing raises but
a missing file or a persona no record has.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from trainer.data.examples import DatasetReport, Example
from trainer.data.sources import SourceError, merge_roles, require_file
from vault.jsonparse import JSONProblem, loads

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "bot": "assistant",
         "model": "assistant", "chatgpt": "assistant", "system": "system"}
LAYOUTS_HELP = ("alpaca (instruction, output), persona (persona, instruction, output), chat (messages or "
                "conversations), history (instruction list, response), prompt/completion")


class Bad(ValueError):
    """One record's problem, worded for the QA report."""


def _kind(value) -> str:
    return "null" if value is None else {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__)


def _str(rec: dict, name: str, required: bool = True) -> str:
    """A string field, stripped; a missing optional field is ""."""
    if name not in rec or (rec[name] is None and not required):
        if required:
            raise Bad(f"{name}: missing")
        return ""
    value = rec[name]
    if not isinstance(value, str):
        raise Bad(f"{name}: expected a string, got {_kind(value)}")
    return value.strip()


def _target(rec: dict, name: str) -> str:
    text = _str(rec, name)
    if not text:
        raise Bad(f"{name}: empty")
    return text


def _ask(rec: dict) -> str:
    """instruction + input as one user message."""
    prompt = "\n\n".join(p for p in (_str(rec, "instruction"), _str(rec, "input", False)) if p)
    if not prompt:
        raise Bad("instruction: empty (and no input)")
    return prompt


def _content(value, where: str) -> str:
    """Message content: a string, or OpenAI's list of parts whose text parts are joined."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        texts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "\n".join(t.strip() for t in texts).strip()
    raise Bad(f"{where}: expected a string, got {_kind(value)}")


def _messages(value, key: str) -> list[tuple[str, str]]:
    """(role, text) for a chat's messages, roles normalised to system/user/assistant."""
    if not isinstance(value, list):
        raise Bad(f"{key}: expected a list of messages, got {_kind(value)}")
    out = []
    for k, msg in enumerate(value):
        where = f"{key}[{k}]"
        if not isinstance(msg, dict):
            raise Bad(f"{where}: expected an object, got {_kind(msg)}")
        role_key, text_key = ("role", "content") if "role" in msg else ("from", "value")
        role = msg.get(role_key)
        if not isinstance(role, str) or role.casefold() not in ROLES:
            raise Bad(f"{where}.{role_key}: expected one of system, user, assistant (or human, gpt), "
                      f"got {role!r}")
        out.append((ROLES[role.casefold()], _content(msg.get(text_key), f"{where}.{text_key}")))
    return out


def _chat(rec: dict, window: int, where: str, problems: list[str], base: dict) -> list[Example]:
    """Each non-empty assistant message → a target with the previous `window` turns as its context."""
    key = "messages" if "messages" in rec else "conversations"
    msgs = _messages(rec[key], key)
    system = "\n\n".join(t for r, t in msgs if r == "system" and t) or _str(rec, "system", False)
    turns = [(r, t, k) for k, (r, t) in enumerate(msgs) if r != "system"]
    if not any(r == "assistant" for r, _, _ in turns):
        raise Bad(f"{key}: no assistant message to learn from")
    out = []
    for i, (role, text, k) in enumerate(turns):
        if role != "assistant":
            continue
        if not text:
            problems.append(f"{key}[{k}]: empty assistant message, skipped")
            continue
        context = [(r, t) for r, t, _ in turns[max(0, i - window):i] if t]
        out.append(Example(merge_roles(context), text, "jsonl", where, system=system or None, **base))
    return out


def _history(rec: dict, window: int, where: str, base: dict) -> list[Example]:
    hist = rec["instruction"]
    if isinstance(hist, str):
        turns = [("user", hist.strip())]
    elif isinstance(hist, list):
        turns = []
        strings = bool(hist) and isinstance(hist[0], str)  # the first turn decides the layout
        for k, turn in enumerate(hist):
            if strings and not isinstance(turn, str):
                raise Bad(f"instruction[{k}]: expected a string like the turns before it, got {_kind(turn)}")
            if strings:  # alternating, the last one the user's
                turns.append(("user" if (len(hist) - 1 - k) % 2 == 0 else "assistant", turn.strip()))
                continue
            if not (isinstance(turn, list) and 1 <= len(turn) <= 2 and isinstance(turn[0], str)
                    and all(isinstance(t, str) or t is None for t in turn)):
                raise Bad(f"instruction[{k}]: expected a [user, assistant] pair of strings, "
                          f"got {_kind(turn)}")
            turns.append(("user", turn[0].strip()))
            if len(turn) == 2 and turn[1]:
                turns.append(("assistant", turn[1].strip()))
    else:
        raise Bad(f"instruction: expected a string or a list of turns, got {_kind(hist)}")
    if extra := _str(rec, "input", False):
        turns.append(("user", extra))
    turns = [(r, t) for r, t in turns if t][-window:]
    if not turns:
        raise Bad("instruction: no turns before the response")
    return [Example(merge_roles(turns), _target(rec, "response"), "jsonl", where,
                    system=_str(rec, "system", False) or None, **base)]


def _prompt_completion(rec: dict, window: int, where: str, base: dict) -> list[Example]:
    prompt = rec["prompt"]
    msgs = [("user", prompt.strip())] if isinstance(prompt, str) else _messages(prompt, "prompt")
    done = rec["completion"]
    target = done.strip() if isinstance(done, str) else "\n".join(
        t for r, t in _messages(done, "completion") if r == "assistant").strip()
    if not target:
        raise Bad("completion: empty")
    system = "\n\n".join(t for r, t in msgs if r == "system" and t) or None
    turns = [(r, t) for r, t in msgs if r != "system" and t][-window:]
    return [Example(merge_roles(turns), target, "jsonl", where, system=system, **base)]


def record_examples(rec, window: int, where: str, problems: list[str]) -> list[Example]:
    """The examples in one record; raises Bad with the reason when it has none to give."""
    if not isinstance(rec, dict):
        raise Bad(f"expected a JSON object, got {_kind(rec)}")
    persona = rec.get("persona")
    if persona is not None and not isinstance(persona, str):
        raise Bad(f"persona: expected a string, got {_kind(persona)}")
    base = {"persona": (persona or "").strip() or None}
    if "messages" in rec or "conversations" in rec:
        return _chat(rec, window, where, problems, base)
    if "instruction" in rec and "response" in rec:
        return _history(rec, window, where, base)
    if "prompt" in rec and "completion" in rec:
        return _prompt_completion(rec, window, where, base)
    if "instruction" in rec and "output" in rec:
        tier = (_str(rec, "category", False) or None) if persona is not None else None
        return [Example(({"role": "user", "content": _ask(rec)},), _target(rec, "output"), "jsonl", where,
                        system=_str(rec, "system", False) or None, tier=tier, **base)]
    keys = ", ".join(sorted(rec)) or "none"
    raise Bad(f"unknown layout (keys: {keys}); expected {LAYOUTS_HELP}")


def _items(path: Path, report: DatasetReport) -> list[tuple[int, str, object]]:
    """(line number, label, parsed value or Bad) for each record; file-level problems are rejected."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        report.reject(str(path), None, f"cannot read: {exc.strerror or exc}")
        return []
    if not raw.strip():
        report.reject(str(path), None, "empty file")
        return []
    if b"\x00" in raw[:8192]:
        report.reject(str(path), None, "binary file (contains NUL bytes), not JSON text")
        return []
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    if path.suffix.lower() == ".json" and raw.lstrip()[:1] == b"[":
        try:
            data = loads(raw)
        except JSONProblem as exc:
            report.reject(str(path), exc.line, _json_reason(exc))
            return []
        return [(n, f"item {n}: ", item) for n, item in enumerate(data, 1)]
    out: list[tuple[int, str, object]] = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((n, "", loads(line)))
        except JSONProblem as exc:
            out.append((n, "", Bad(_json_reason(exc))))
    return out


def _json_reason(exc: JSONProblem) -> str:
    """The rejection's reason: its line is the rejection's own, the column stays."""
    return f"invalid JSON: {exc.msg} (column {exc.column})" if exc.column is not None else str(exc)


def load_jsonl(path: Path, persona: str | None = None, window: int = 10) -> DatasetReport:
    """Every usable record in `path` as Examples; `persona` filters persona-tagged records."""
    report = DatasetReport()
    path = require_file(Path(path))
    personas: Counter = Counter()
    matched = 0
    for n, label, rec in _items(path, report):
        where = f"{path}:{n}"
        problems: list[str] = []
        try:
            if isinstance(rec, Bad):
                raise rec
            tag = rec.get("persona") if isinstance(rec, dict) else None
            if isinstance(tag, str):
                personas[tag.strip()] += 1
            if persona is not None and isinstance(rec, dict):  # untagged records are not what was asked
                if not isinstance(tag, str) or tag.strip().casefold() != persona.strip().casefold():
                    continue
                matched += 1
            report.examples.extend(record_examples(rec, window, where, problems))
        except Bad as exc:
            report.reject(str(path), n, f"{label}{exc}")
        for problem in problems:
            report.reject(str(path), n, f"{label}{problem}")
    if persona is not None and not matched and personas:
        found = ", ".join(f"{p} ({c})" for p, c in personas.most_common())
        raise SourceError(f"{path}: no records for persona {persona!r}; personas found: {found}")
    return report
