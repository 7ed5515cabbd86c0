"""Conversation logs: one append-only JSONL file per session, one record per turn, fsynced per record.

Why JSONL and one write per record: the trainer learns the user's voice from these files, so a crash
must never cost a completed turn or leave a file that does not parse. Each record is a single
`write(2)` with O_APPEND followed by fsync; a torn last line (power loss mid-write) is reported and
skipped by readers, and the next append starts on a fresh line.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import LogError
from .fsio import FILE_MODE, fsync_dir
from .jsonparse import JSONProblem, loads
from .layout import Vault

LOG_VERSION = 1
_SESSION_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-.")


def new_session_id() -> str:
    """Sortable by time (µs) with a random tail, so two sessions started together never collide."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%d-%H%M%S-%f-") + secrets.token_hex(2)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class LogRead:
    records: list[dict]
    problems: list[str]  # "file:line: reason" for each line that was skipped


def read_log(path: str | os.PathLike) -> LogRead:
    """Every parseable record; a torn or damaged line is skipped and named in `problems`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LogError(f"{path}: cannot read ({exc.strerror})") from None
    records, problems = [], []
    lines = raw.split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
        except JSONProblem:
            torn = n == len(lines) and not raw.endswith(b"\n")
            problems.append(f"{path}:{n}: {'torn last line (interrupted write)' if torn else 'invalid JSON'}")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path}:{n}: expected a JSON object")
            continue
        records.append(rec)
    return LogRead(records, problems)


def exclusions(records: Sequence[dict]) -> set[str]:
    """Ids the user asked to forget: exclude events, and records marked `excluded` themselves."""
    out = {r["target"] for r in records if r.get("role") == "event" and r.get("event") == "exclude"
           and isinstance(r.get("target"), str)}
    return out | {r["id"] for r in records if r.get("excluded") and isinstance(r.get("id"), str)}


def turn_states(vault: Vault, ids: Iterable[str], read: dict[str, list[dict]] | None = None) -> tuple[set[str], set[str]]:
    """Of these turn ids (`<session>:<turn>`): the ones their log excludes (forgotten), and the ones no log
    holds (the file deleted by hand, an unreadable one, or no such turn). Each session's log is read once;
    `read` (session → its records) is used and filled, so a caller that already read a log passes it."""
    read = {} if read is None else read
    seen: dict[str, tuple[set[str], set[str]]] = {}  # session → (its exclusions, its turns' ids)
    excluded: set[str] = set()
    missing: set[str] = set()
    for ident in ids:
        session, _, turn = ident.rpartition(":")
        if session not in read:
            try:
                read[session] = read_log(_session_path(vault, session)).records if turn.isdigit() else []
            except LogError:  # a bad session id, or no such file
                read[session] = []
        if session not in seen:
            records = read[session]
            seen[session] = (exclusions(records),
                             {r.get("id") for r in records if r.get("role") in ("user", "assistant")})
        gone, turns = seen[session]
        if ident in gone:
            excluded.add(ident)
        elif ident not in turns:
            missing.add(ident)
    return excluded, missing


class ConversationLog:
    """Appends turn records to `<vault>/logs/<session>.jsonl`, numbering them 1, 2, 3…"""

    def __init__(self, path: Path, session: str, next_turn: int) -> None:
        self.path = path
        self.session = session
        self._next = next_turn

    @classmethod
    def create(cls, vault: Vault, session_id: str | None = None) -> ConversationLog:
        session = session_id or new_session_id()
        path = _session_path(vault, session)
        if path.exists():
            raise LogError(f"{path}: session {session} already exists")
        return cls(path, session, 1)

    @classmethod
    def open(cls, vault: Vault, session_id: str) -> ConversationLog:
        """Continue an existing session: turn numbers carry on after its last record."""
        path = _session_path(vault, session_id)
        if not path.is_file():
            known = ", ".join(s.id for s in list_sessions(vault)[:5]) or "none"
            raise LogError(f"no session '{session_id}' in {vault.logs_dir} (latest: {known})")
        records = read_log(path).records
        last = max((r.get("turn", 0) for r in records if isinstance(r.get("turn"), int)), default=0)
        return cls(path, session_id, last + 1)  # writes nothing: a torn last line is ended by `append`, under the lock

    def append(self, record: dict) -> dict:
        """Stamp (v, id, session, turn, time), write one line, fsync. Returns the record as written.

        The turn number is the file's last one + 1, read under an exclusive lock on the file: two
        processes (the app and `home ask --continue`) may write one session, and each counting on from
        the turn it saw at open gave two records one id."""
        new = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise LogError(f"{self.path}: cannot append turn {self._next} ({exc.strerror})") from None
        turn = self._next
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last, ends_line = _tail(fd)
            turn = last + 1
            full = {"v": LOG_VERSION, "id": f"{self.session}:{turn}", "session": self.session, "turn": turn,
                    "time": _now(), **record}
            data = ("" if ends_line else "\n") + json.dumps(full, ensure_ascii=False, default=str) + "\n"
            view = memoryview(data.encode("utf-8"))  # a torn last line must not swallow this record
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            raise LogError(f"{self.path}: cannot append turn {turn} ({exc.strerror})") from None
        finally:
            os.close(fd)  # releases the lock
        if new:
            fsync_dir(self.path.parent)
        self._next = turn + 1
        return full

    def records(self) -> list[dict]:
        return read_log(self.path).records if self.path.exists() else []


def _tail(fd: int) -> tuple[int, bool]:
    """(the last turn number in the file, whether it ends with a newline), reading back from the end
    only as far as the last record that parses."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, True
    ends_line = os.pread(fd, 1, size - 1) == b"\n"
    chunk = 1 << 16
    while True:
        start = max(0, size - chunk)
        lines = os.pread(fd, size - start, start).split(b"\n")
        if start > 0:
            lines = lines[1:]  # may be cut
        for line in reversed(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("turn"), int):
                return rec["turn"], ends_line
        if start == 0:
            return 0, ends_line
        chunk *= 4


@dataclass(frozen=True)
class SessionInfo:
    id: str
    path: Path
    modified: float


def list_sessions(vault: Vault) -> list[SessionInfo]:
    """Sessions newest first (by last write, then id)."""
    out = []
    for p in vault.logs_dir.glob("*.jsonl"):
        try:
            out.append(SessionInfo(p.stem, p, p.stat().st_mtime))
        except OSError:
            continue
    return sorted(out, key=lambda s: (s.modified, s.id), reverse=True)


def first_message(path: str | os.PathLike, max_lines: int = 50) -> str | None:
    """The session's first user message, from its first `max_lines` lines only (a long log is never read
    whole): what names a session in a list of them. None when there is none there, or it cannot be read."""
    try:
        with open(path, "rb") as fh:
            for _, line in zip(range(max_lines), fh, strict=False):
                try:
                    rec = loads(line)
                except JSONProblem:
                    continue
                if isinstance(rec, dict) and rec.get("role") == "user" and isinstance(rec.get("text"), str):
                    return rec["text"]
    except OSError:
        return None
    return None


def _session_path(vault: Vault, session: str) -> Path:
    if not session or not set(session) <= _SESSION_CHARS or session.startswith("."):
        raise LogError(f"session id {session!r}: only lowercase letters, digits, '-' and '.' are allowed")
    return vault.logs_dir / f"{session}.jsonl"
