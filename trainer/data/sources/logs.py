"""Examples from the vault's conversation logs: the user's own messages (a voice) or a persona's replies.

For a voice adapter the roles flip: the user's messages are the targets ("assistant", the voice being
learned) and Home's replies become "user", so the adapter is used like any other at chat time.
Excluded turns, events and empty text are never used, neither as targets nor as context: an excluded turn
is one the user asked us to forget. A partial (cancelled) reply is never a target, but it stays in the
context of the turns after it: the user saw it and answered it ("stop, shorter please"), and dropping it
would leave the user's answer replying to their own previous message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainer.data.examples import DatasetReport, Example
from trainer.data.sources import SourceError, merge_roles
from vault.jsonparse import JSONProblem, loads

ROLES = ("user", "assistant", "event")


@dataclass(frozen=True)
class Turn:
    role: str  # user | assistant (events are dropped while reading)
    text: str
    user: str | None
    persona: str | None
    partial: bool
    excluded: bool
    origin: str  # the record's id, else file:line


def log_files(vault=None, path: str | Path | None = None) -> list[Path]:
    """The session logs to read: a given file or folder, else the vault's logs directory."""
    if path is not None:
        p = Path(path)
        if p.is_file():
            return [p]
        if p.is_dir():
            return sorted(p.glob("*.jsonl"))
        raise SourceError(f"{p}: no such log file or folder")
    if vault is None:
        raise SourceError("logs: a vault or a path is needed")
    logs_dir = getattr(vault, "logs_dir", None)
    if logs_dir is None:
        logs_dir = _vault_logs_dir(Path(vault))
    return sorted(Path(logs_dir).glob("*.jsonl"))


def _vault_logs_dir(root: Path) -> Path:
    if not root.is_dir():
        raise SourceError(f"{root}: no such vault")
    try:
        from vault.layout import Vault
    except ImportError:  # the layout module is optional for reading: the folder name is the contract
        return root / "logs"
    return Vault.open(root).logs_dir


def forgotten_ids(files: list[Path]) -> set[str]:
    """Record ids named by `exclude` events (`home memory forget` appends them, in any session): the user
    asked Home to forget those turns, so they are never trained on."""
    out: set[str] = set()
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError:
            continue  # read_turns reports it
        for line in raw.split(b"\n"):
            if b'"exclude"' not in line:
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(rec, dict) and rec.get("role") == "event" and rec.get("event") == "exclude" \
                    and isinstance(rec.get("target"), str):
                out.add(rec["target"])
    return out


def read_turns(path: Path, report: DatasetReport) -> list[Turn]:
    """One session's user and assistant turns in order; bad lines become rejections with file:line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        report.reject(str(path), None, f"cannot read: {exc.strerror or exc}")
        return []
    lines = raw.split(b"\n")
    torn_last = not raw.endswith(b"\n")
    turns: list[Turn] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        reason = None
        try:
            rec = loads(line)
        except JSONProblem as exc:
            if torn_last and n == len(lines):
                reason = "torn last line (an interrupted write), skipped"
            else:
                reason = f"invalid JSON: {exc.msg}" if exc.line is not None else str(exc)
        else:
            turn_or_reason = _turn(rec, f"{path.stem}:{n}")
            if isinstance(turn_or_reason, str):
                reason = turn_or_reason
            elif turn_or_reason is not None:
                turns.append(turn_or_reason)
        if reason:
            report.reject(str(path), n, reason)
    return turns


def _turn(rec, fallback_origin: str) -> Turn | str | None:
    """A Turn, None for an event, or the reason the record cannot be used."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    role = rec.get("role")
    if role not in ROLES:
        return f"role: expected one of {', '.join(ROLES)}, got {role!r}"
    if role == "event":
        return None
    text = rec.get("text")
    if not isinstance(text, str):
        return f"text: expected a string, got {type(text).__name__}"
    for name in ("user", "persona"):
        if rec.get(name) is not None and not isinstance(rec[name], str):
            return f"{name}: expected a string, got {type(rec[name]).__name__}"
    origin = rec.get("id") if isinstance(rec.get("id"), str) else fallback_origin
    return Turn(role, text.strip(), rec.get("user"), rec.get("persona"), bool(rec.get("partial")),
                bool(rec.get("excluded")), origin)


def load_logs(vault=None, path: str | Path | None = None, *, target: str = "user", persona: str | None = None,
              window: int = 10, user: str | None = None) -> DatasetReport:
    """Examples from every session log; `user` restricts to one user's messages (multi-user vaults)."""
    if target not in ("user", "persona"):
        raise SourceError(f"target: expected 'user' or 'persona', got {target!r}")
    if target == "persona" and not persona:
        raise SourceError("target 'persona' needs a persona name")
    report = DatasetReport()
    files = log_files(vault, path)
    forgotten = forgotten_ids(files)
    for path_ in files:
        turns = [t for t in read_turns(path_, report) if t.text and not t.excluded and t.origin not in forgotten]
        if target == "user":
            report.examples.extend(_voice_examples(turns, window, user))
        else:
            report.examples.extend(_persona_examples(turns, window, persona, user))
    return report


def _is_voice(turn: Turn, user: str | None) -> bool:
    return turn.role == "user" and (user is None or (turn.user or "").casefold() == user.casefold())


def _voice_examples(turns: list[Turn], window: int, user: str | None) -> list[Example]:
    """The user's messages as targets; earlier turns with flipped roles as context."""
    out = []
    for i, turn in enumerate(turns):
        if not _is_voice(turn, user) or turn.partial:
            continue
        context = [("assistant" if _is_voice(t, user) else "user", t.text) for t in turns[max(0, i - window):i]]
        out.append(Example(merge_roles(context), turn.text, "logs", turn.origin))
    return out


def _persona_examples(turns: list[Turn], window: int, persona: str, user: str | None) -> list[Example]:
    """The persona's complete replies as targets; earlier turns with their own roles as context."""
    out = []
    for i, turn in enumerate(turns):
        if turn.role != "assistant" or turn.partial:
            continue
        if (turn.persona or "").casefold() != persona.casefold():
            continue
        if user is not None and (turn.user or "").casefold() != user.casefold():
            continue
        context = [(t.role, t.text) for t in turns[max(0, i - window):i]]
        out.append(Example(merge_roles(context), turn.text, "logs", turn.origin, persona=persona))
    return out
