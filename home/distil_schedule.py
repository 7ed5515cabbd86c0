"""When the app distils gestalts, and which turns are still to be read: every N user turns of the chat in
progress, the rest when a session ends, and, at the next start, sessions that ended without it (the app
was closed, or the turns came from `home ask`).

Why a mark per session (`<vault>/gestalts/.distilled.json`, atomic, 0600): distillation runs in the
background and gives way to the user's next message, so it stops anywhere; the mark is the last turn
read, written after each one, and nothing is read twice (a model call per turn is the cost).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

from home.distil import distil_session, fact_turns
from vault.config import GestaltSettings
from vault.fsio import FileLock, atomic_write_json
from vault.layout import Vault
from vault.logs import list_sessions, read_log

STATE = ".distilled.json"
BACKLOG_DAYS = 30  # older sessions are not read at start-up (`home gestalts distil --session` can)
BACKLOG_SESSIONS = 20


class DistilSchedule:
    """The per-session marks of one vault, and the rule for when a chat in progress is due."""

    def __init__(self, vault: Vault, settings: GestaltSettings) -> None:
        self.vault = vault
        self.settings = settings
        self.path = vault.gestalts_dir / STATE
        self._lock = threading.Lock()
        self.marks: dict[str, int] = self._read()

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
            return {str(k): int(v) for k, v in data.get("sessions", {}).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):
            return {}  # derived bookkeeping: at worst some turns are read again (duplicates are dropped)

    def mark(self, session: str, turn: int) -> None:
        with self._lock, FileLock(self.vault.lock_path("distil")):
            if self.marks.get(session, 0) >= turn:
                return
            self.marks = {**self._read(), **self.marks, session: turn}
            atomic_write_json(self.path, {"v": 1, "sessions": self.marks})

    def pending(self, session: str, records: list[dict], user: str) -> list[dict]:
        """The turns of `session` that could hold a fact about `user` and were not read yet."""
        done = self.marks.get(session, 0)
        return [r for r in fact_turns(records, user) if r.get("turn", 0) > done]

    def due(self, session: str, records: list[dict], user: str) -> bool:
        """Mid-session: every `every_n_turns` user turns (0: only when the session ends)."""
        n = self.settings.every_n_turns
        if not self.settings.enabled or n <= 0:
            return False
        done = self.marks.get(session, 0)
        said = sum(1 for r in records if r.get("role") == "user" and r.get("turn", 0) > done)
        return said >= n

    def backlog(self, user: str, skip: str | None = None) -> list[tuple[str, list[dict]]]:
        """Recent sessions with turns never read, newest first (at start-up, in the background)."""
        if not self.settings.enabled:
            return []
        since = datetime.now(UTC) - timedelta(days=BACKLOG_DAYS)
        out = []
        for s in list_sessions(self.vault):  # newest write first
            if len(out) >= BACKLOG_SESSIONS or s.modified < since.timestamp():
                break  # every later log was last written before the cutoff: none is read
            if s.id == skip:
                continue
            tail = _last_record(s.path)
            if tail is not None and (_time(tail) < since or self.marks.get(s.id, 0) >= tail.get("turn", 0)):
                continue  # its last record says: too old, or read up to the end already
            records = read_log(s.path).records
            if not records or _time(records[-1]) < since:
                continue
            if self.pending(s.id, records, user):
                out.append((s.id, records))
        return out

    def run(self, engine, user: str, session: str, records: list[dict], cancel: threading.Event,
            turn_lock: threading.RLock, stop: threading.Event | None = None) -> int:
        """Read the pending turns of one session, one model call each under `turn_lock` (a reply never
        runs beside it), marking each when done. A reply that wants the engine sets `cancel`: the call
        in flight stops, and that turn is read again once the reply is over. `stop` (the app closing)
        ends the run. Returns how many gestalts were added."""
        added = 0
        todo = self.pending(session, records, user)
        i = 0
        while i < len(todo):
            if stop is not None and stop.is_set():
                return added
            if cancel.is_set():  # a reply is about to take the lock: let it
                time.sleep(0.02)
                continue
            with turn_lock:
                result = distil_session(engine, self.vault, user, [todo[i]], cancel=cancel)
                interrupted = cancel.is_set()
            if interrupted:
                continue
            self.mark(session, todo[i]["turn"])
            added += len(result.new)
            i += 1
        last = max((r.get("turn", 0) for r in records), default=0)
        self.mark(session, last)  # the turns with nothing to read count as read too
        return added

def _last_record(path) -> dict | None:  # noqa: ANN001
    """The log's last complete record, from its last few kB only (None: unreadable, read it whole)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = fh.read().rstrip(b"\n").split(b"\n")
        rec = json.loads(lines[-1].decode("utf-8")) if len(lines) > 1 or size <= 65536 else None
    except (OSError, ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("turn", 0), int) else None


def _time(record: dict) -> datetime:
    try:
        t = datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
