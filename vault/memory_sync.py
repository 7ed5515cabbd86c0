"""Keeping the memory store in step with the vault's files: the conversation logs and the gestalts.

The store is derived data; these are the only writers that decide what is in it.

Logs: turns are upserted under their log id (`<session>:<turn>`), so writing one twice changes nothing;
the checkpoint (`index.json`: per-session last indexed turn and file size, the excluded ids) is written
atomically *after* each batch lands in both stores. A kill -9 mid-batch re-upserts that batch on the next
run: nothing lost, nothing duplicated.

Gestalts: `sync_gestalts` compares every gestalt file with what the checkpoint says was indexed (a
signature of text, kind, user and times) and adds, replaces or deletes `gestalt:<id>` items to match.
A malformed file keeps its last good item (the user is mid-edit; the file is reported, not trusted);
a file that is gone takes its item with it and is remembered as forgotten, so it is not distilled again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from . import gestalts as gs
from .layout import Vault
from .logs import list_sessions, read_log
from .memory_store import GESTALT_PREFIX, MemoryItem, MemoryStore, indexable

BATCH_SIZE = 64


@dataclass
class IndexReport:
    indexed: int = 0
    removed: int = 0
    sessions: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    gestalts: GestaltSync | None = None  # reindex syncs the gestalts too


def exclusions(records: Sequence[dict]) -> set[str]:
    """Ids the user asked to forget: exclude events, and records marked `excluded` themselves."""
    out = {r["target"] for r in records if r.get("role") == "event" and r.get("event") == "exclude"
           and isinstance(r.get("target"), str)}
    return out | {r["id"] for r in records if r.get("excluded") and isinstance(r.get("id"), str)}


def index_logs(vault: Vault, store: MemoryStore, batch_size: int = BATCH_SIZE,
               on_batch: Callable[[int], None] | None = None) -> IndexReport:
    """Index every logged turn not indexed yet, in batches; apply new exclude events. Safe to kill.

    Sessions whose file size matches the checkpoint are skipped without reading; a session whose file is
    gone leaves memory too. `on_batch(n_done)` is called after each batch is durable (checkpoint written).
    One indexer at a time per store (the app's background indexer); searches may run meanwhile.
    """
    t0 = time.perf_counter()
    report = IndexReport()
    with store._mutex:
        st = store.state
        sessions = sorted(list_sessions(vault), key=lambda s: s.id)
        gone = set(st["sessions"]) - {s.id for s in sessions}
        for sid in sorted(gone):
            store.delete_session(sid)
            del st["sessions"][sid]
        done: dict[str, dict] = {}
        pending: list[dict] = []
        excluded: set[str] = set()
        for s in sessions:
            try:
                size = s.path.stat().st_size
            except OSError:
                continue
            prev = st["sessions"].get(s.id) or {"turn": 0, "bytes": -1}
            if prev.get("bytes") == size:
                continue
            read = read_log(s.path)
            report.problems += read.problems
            excluded |= exclusions(read.records)
            turns = [r["turn"] for r in read.records if isinstance(r.get("turn"), int)]
            done[s.id] = {"turn": max(turns, default=0), "bytes": size}
            pending += [{**r, "session": s.id} for r in read.records
                        if indexable(r) and r["turn"] > prev.get("turn", 0)]
        report.sessions = len(done)
        fresh = excluded - st["excluded"]
        if fresh:
            report.removed = store.delete(sorted(fresh))
            st["excluded"] |= fresh
        # One item per id, the later record winning: a log written by two processes before turn numbers
        # were taken under a lock can hold one id twice, and chromadb refuses a batch that does.
        pending = list({r["id"]: r for r in pending if r["id"] not in st["excluded"]}.values())
        last = {r["session"]: r["turn"] for r in pending}  # a session is settled once its last turn lands
        for sid, mark in done.items():
            if sid not in last:
                st["sessions"][sid] = mark
        if done or fresh or gone:
            _save(store)
    for i in range(0, len(pending), max(1, batch_size)):
        batch = pending[i:i + batch_size]
        store.upsert(batch)
        with store._mutex:
            for r in batch:
                sid = r["session"]
                st["sessions"][sid] = done[sid] if r["turn"] == last[sid] else {"turn": r["turn"], "bytes": -1}
            _save(store)
        report.indexed += len(batch)
        if on_batch:
            on_batch(report.indexed)
    if pending:
        store.private()
    report.seconds = time.perf_counter() - t0
    return report


def _save(store: MemoryStore) -> None:
    store.state["updated"] = datetime.now().astimezone().isoformat(timespec="seconds")
    store.save_state()


def reindex(vault: Vault, store: MemoryStore, rebuild: bool = False, batch_size: int = BATCH_SIZE,
            on_batch: Callable[[int], None] | None = None) -> IndexReport:
    """Catch up with the logs and the gestalts; `rebuild` first empties the store, so everything is
    re-embedded."""
    if rebuild:
        store.reset()
    report = index_logs(vault, store, batch_size=batch_size, on_batch=on_batch)
    report.gestalts = sync_gestalts(vault, store)
    return report


@dataclass
class GestaltSync:
    """What `sync_gestalts` changed; `problems` names each malformed file (file:line: field: reason)."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def gestalt_item(g: gs.Gestalt) -> MemoryItem:
    """A gestalt as a memory item. Its time is when it was last true: the user's edit, else when said."""
    when = g.updated if g.updated != g.created else g.said
    return MemoryItem(GESTALT_PREFIX + g.id, g.text, "", 0, "gestalt", g.user, "", when)


def _signature(g: gs.Gestalt) -> str:
    data = json.dumps([g.text, g.kind, g.user, g.said, g.created, g.updated], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def sync_gestalts(vault: Vault, store: MemoryStore) -> GestaltSync:
    """Make the store's gestalt items match the files (every user): added, changed, deleted. Idempotent:
    a second call with no file changed embeds nothing. Safe to call from the watcher's thread."""
    out = GestaltSync()
    listing = gs.list_gestalts(vault)
    out.problems = [str(e) for e in listing.problems]
    broken = {e.path.stem for e in listing.problems if e.path is not None}
    current: dict[str, gs.Gestalt] = {}
    for g in listing.gestalts:
        if g.id in current:  # ids key the store; a copy in another user's folder cannot share one
            out.problems.append(f"{g.path}:0: id: {g.id!r} is also used by {current[g.id].path}; skipped")
            broken.add(g.id)
            continue
        current[g.id] = g
    with store._mutex:
        known: dict[str, dict] = store.state.setdefault("gestalts", {})
        fresh = [g for g in current.values() if known.get(g.id, {}).get("sig") != _signature(g)]
        gone = [i for i in known if i not in current and i not in broken]
        store.upsert_items([gestalt_item(g) for g in fresh])
        store.delete([GESTALT_PREFIX + i for i in gone])
        for ident in gone:
            old = known.pop(ident)
            if not (vault.gestalts_dir / old["user"] / f"{ident}.md").exists():
                gs.record_forgotten(vault, old["user"], old.get("hashes", []))
        for g in fresh:
            out.changed += g.id in known
            out.added += g.id not in known
            known[g.id] = {"sig": _signature(g), "user": g.user, "hashes": sorted({g.hash, gs.gestalt_hash(g.text)})}
        out.removed = len(gone)
        out.unchanged = len(current) - len(fresh)
        if fresh or gone:
            _save(store)
    return out
