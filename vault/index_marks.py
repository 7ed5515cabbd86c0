"""The indexer's per-session checkpoint: how far each conversation log has been read into memory.

Why a table and not `index.json`: the checkpoint changes after every turn, for one session. Rewriting a
JSON of every session (10k sessions: ~700 kB, fsynced and renamed) per turn made the cost of a turn grow
with the years of logs; one row updated in the keyword database costs the same at any size. A mark is
`{"turn": last turn read, "bytes": the log's length up to the end of the last line read}` (-1: read the
whole file again, keeping only turns after `turn`). Older stores kept the marks in `index.json`'s
"sessions"; they move here the first time the store opens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

SCHEMA = "CREATE TABLE IF NOT EXISTS index_marks(session TEXT PRIMARY KEY, turn INTEGER NOT NULL, bytes INTEGER NOT NULL);"


def load(db: sqlite3.Connection, legacy: dict | None = None) -> dict[str, dict]:
    """Every session's mark; `legacy` (index.json's "sessions") is adopted when the table is empty."""
    db.executescript(SCHEMA)
    marks = {s: {"turn": t, "bytes": b} for s, t, b in db.execute("SELECT session, turn, bytes FROM index_marks")}
    if not marks and legacy:
        marks = {str(s): {"turn": int(m.get("turn", 0)), "bytes": int(m.get("bytes", -1))}
                 for s, m in legacy.items() if isinstance(m, dict)}
        save(db, marks, marks)
    return marks


def save(db: sqlite3.Connection, marks: dict[str, dict], sessions: Iterable[str]) -> None:
    """Write the marks of `sessions` (one transaction; a session no longer in `marks` is dropped)."""
    sessions = list(sessions)
    with db:
        db.executemany("DELETE FROM index_marks WHERE session = ?", [(s,) for s in sessions if s not in marks])
        db.executemany("INSERT INTO index_marks(session, turn, bytes) VALUES (?, ?, ?) ON CONFLICT(session) "
                       "DO UPDATE SET turn = excluded.turn, bytes = excluded.bytes",
                       [(s, marks[s]["turn"], marks[s]["bytes"]) for s in sessions if s in marks])


def clear(db: sqlite3.Connection) -> None:
    with db:
        db.execute("DELETE FROM index_marks")
