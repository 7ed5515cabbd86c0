"""Keeping the memory store in step with the vault's files: the conversation logs and the gestalts.

The store is derived data; these are the only writers that decide what is in it.

Logs: turns are upserted under their log id (`<session>:<turn>`), so writing one twice changes nothing;
the checkpoint (per-session last indexed turn and bytes read: vault/index_marks.py, one row per session;
the excluded ids in `index.json`) is written *after* each batch lands in both stores. A kill -9 mid-batch
re-upserts that batch on the next run: nothing lost, nothing duplicated.

Cost per turn: the turn path asks for its own session only (`sessions=[id]`): that log is read from where
the checkpoint left off, its one row is updated, and no other log is listed or stat'd — unless the logs
folder changed since the last pass (a session file appeared or went: `home ask` beside the app), which
costs one directory listing, still without a stat per file. A full pass (start-up, `home memory reindex`)
stats every log and reads only those that grew.

Gestalts: `sync_gestalts` compares every gestalt file with what the checkpoint says was indexed (a
signature of text, kind, user and times) and adds, replaces or deletes `gestalt:<id>` items to match.
A malformed file keeps its last good item (the user is mid-edit; the file is reported, not trusted);
a file that is gone takes its item with it and is remembered as forgotten, so it is not distilled again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

from . import gestalts as gs
from . import index_marks
from .layout import Vault
from .logs import LogRead, exclusions, list_sessions
from .memory_items import MemoryItem, indexable
from .memory_store import GESTALT_PREFIX, MemoryStore
from .session_summary import Summariser, has_summary, repair, sync_summaries

BATCH_SIZE = 64


@dataclass
class IndexReport:
    indexed: int = 0
    removed: int = 0
    sessions: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    gestalts: GestaltSync | None = None  # reindex syncs the gestalts too
    summaries: int = 0  # session summary items written (vault/session_summary.py)
    summary_s: float = 0.0


def index_logs(vault: Vault, store: MemoryStore, batch_size: int = BATCH_SIZE,
               on_batch: Callable[[int], None] | None = None, sessions: Iterable[str] | None = None,
               summaries: Summariser | None = None, ended: Iterable[str] = ()) -> IndexReport:
    """Index every logged turn not indexed yet, in batches; apply new exclude events. Safe to kill.

    Sessions whose file size matches the checkpoint are skipped without reading, and a grown one is read
    from where the checkpoint left off; a session whose file is gone leaves memory too. `sessions`: only
    these (and files that appeared or went since the last pass), as the turn path asks; None: every log.
    `on_batch(n_done)` is called after each batch is durable (checkpoint written).
    `summaries`: also (re)make the summary item (vault/session_summary.py) of every session read in this
    pass that has ended: all but the turn path's own `sessions` (whose summary, if one was made before, is
    refreshed), and of the `ended` ones (a chat the app just left).
    One indexer at a time per store (the app's background indexer); searches may run meanwhile.
    """
    t0 = time.perf_counter()
    report = IndexReport()
    with store._mutex:
        st = store.state
        paths, gone = _targets(vault, st, sessions)
        for sid in sorted(gone):
            store.delete_session(sid)
            del st["sessions"][sid]
        done: dict[str, dict] = {}
        pending: list[dict] = []
        excluded: set[str] = set()
        for sid, path in sorted(paths.items()):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            prev = st["sessions"].get(sid) or {"turn": 0, "bytes": -1}
            if prev.get("bytes") == size:
                continue
            start = prev["bytes"] if 0 < prev.get("bytes", -1) < size else 0
            read, end = read_new(path, start)
            report.problems += read.problems
            excluded |= exclusions(read.records)
            turns = [r["turn"] for r in read.records if isinstance(r.get("turn"), int)]
            done[sid] = {"turn": max(turns + ([prev.get("turn", 0)] if start else []), default=0), "bytes": end}
            pending += [{**r, "session": sid} for r in read.records
                        if indexable(r) and r["turn"] > prev.get("turn", 0)]
        report.sessions = len(done)
        fresh = excluded - st["excluded"]
        if fresh:
            report.removed = store.delete(sorted(fresh))
            repair(vault, store, fresh)  # a session summary that held a forgotten turn's words is remade
            st["excluded"] |= fresh
        # One item per id, the later record winning: a log written by two processes before turn numbers
        # were taken under a lock can hold one id twice, and chromadb refuses a batch that does.
        pending = list({r["id"]: r for r in pending if r["id"] not in st["excluded"]}.values())
        last = {r["session"]: r["turn"] for r in pending}  # a session is settled once its last turn lands
        for sid, mark in done.items():
            if sid not in last:
                st["sessions"][sid] = mark
        index_marks.save(store._db, st["sessions"], [s for s in done if s not in last] + sorted(gone))
        if fresh or gone or sessions is None:
            _save(store)  # index.json: the excluded ids, the logs folder's stamp
    def land(batch: list[dict], embedded: tuple) -> None:
        store.write(*embedded)
        with store._mutex:
            for r in batch:
                sid = r["session"]
                st["sessions"][sid] = done[sid] if r["turn"] == last[sid] else {"turn": r["turn"], "bytes": -1}
            index_marks.save(store._db, st["sessions"], {r["session"] for r in batch})

    batches = [pending[i:i + max(1, batch_size)] for i in range(0, len(pending), max(1, batch_size))]
    # Several batches (start-up, reindex): each one lands on a writer thread while the next is embedded,
    # so the writes (SQLite, ChromaDB, the vector file, the checkpoint) no longer leave the cores idle.
    # Batches land in order, each checkpointed only once it is in both stores, as before.
    writer = ThreadPoolExecutor(1, thread_name_prefix="home-index-write") if len(batches) > 1 else None
    landing: tuple[Future, int] | None = None
    try:
        for batch in batches:
            embedded = store.embed_records(batch)
            if landing is not None:
                _landed(landing, report, on_batch)
            if writer is None:
                land(batch, embedded)
                report.indexed += len(batch)
                if on_batch:
                    on_batch(report.indexed)
            else:
                landing = (writer.submit(land, batch, embedded), len(batch))
        if landing is not None:
            _landed(landing, report, on_batch)
    finally:
        if writer is not None:
            writer.shutdown(wait=True)
    if summaries is not None:
        named = set(sessions or ())
        todo = {s for s in done if s not in named or has_summary(store, s)} | (set(ended) - gone)
        t1 = time.perf_counter()
        report.summaries = sync_summaries(vault, store, todo, summaries)[0] if todo else 0
        report.summary_s = time.perf_counter() - t1
    if pending or report.summaries:
        store.private()
    report.seconds = time.perf_counter() - t0
    return report


def _landed(landing: tuple[Future, int], report: IndexReport, on_batch: Callable[[int], None] | None) -> None:
    """Wait for a batch's landing (its error surfaces here), count it, tell `on_batch` on the caller's thread."""
    landing[0].result()
    report.indexed += landing[1]
    if on_batch:
        on_batch(report.indexed)


def _save(store: MemoryStore) -> None:
    store.state["updated"] = datetime.now().astimezone().isoformat(timespec="seconds")
    store.save_state()


def _targets(vault: Vault, st: dict, sessions: Iterable[str] | None) -> tuple[dict, set[str]]:
    """{session: log path} to look at, and the sessions whose log is gone. Every log for a full pass;
    else the named ones, plus what a listing of the logs folder (no stat per file) shows appeared or
    went, only when the folder's mtime moved since the last pass."""
    folder = vault.logs_dir
    try:
        stamp = folder.stat().st_mtime_ns
    except OSError:
        stamp = None
    if sessions is None:
        listing = {s.id: s.path for s in list_sessions(vault)}
        st["logs_stamp"] = stamp
        return listing, set(st["sessions"]) - set(listing)
    paths = {sid: folder / f"{sid}.jsonl" for sid in sessions}
    gone: set[str] = set()
    if stamp != st.get("logs_stamp"):
        names = {n[:-6] for n in os.listdir(folder) if n.endswith(".jsonl") and not n.startswith(".")}
        paths.update((sid, folder / f"{sid}.jsonl") for sid in names - set(st["sessions"]))
        gone = set(st["sessions"]) - names
        st["logs_stamp"] = stamp
    return paths, gone


def read_new(path, start: int = 0) -> tuple[LogRead, int]:  # noqa: ANN001
    """The complete lines of a log from byte `start` on, as records, and the byte where they end (a torn
    last line waits for its newline: ConversationLog.open adds one before the next record)."""
    with open(path, "rb") as fh:
        fh.seek(start)
        raw = fh.read()
    end = raw.rfind(b"\n") + 1
    records, problems, at = [], [], start
    for line in raw[:end].split(b"\n"):
        if line.strip():
            try:
                rec = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                rec = None
            if isinstance(rec, dict):
                records.append(rec)
            else:
                problems.append(f"{path}: byte {at}: not a JSON object (invalid line skipped)")
        at += len(line) + 1
    return LogRead(records, problems), start + end


def reindex(vault: Vault, store: MemoryStore, rebuild: bool = False, batch_size: int = BATCH_SIZE,
            on_batch: Callable[[int], None] | None = None, summaries: Summariser | None = None) -> IndexReport:
    """Catch up with the logs and the gestalts; `rebuild` first empties the store, so everything is
    re-embedded. `summaries`: as for `index_logs` (the caller passes it when `[memory] summaries` is on:
    a rebuild without it leaves no session summary)."""
    if rebuild:
        store.reset()
    report = index_logs(vault, store, batch_size=batch_size, on_batch=on_batch, summaries=summaries)
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
    """A gestalt as a memory item. Its time is when it was last true: the user's edit, else when said;
    its sources are the turns it was distilled from (a hit on it stands for them)."""
    when = g.updated if g.updated != g.created else g.said
    return MemoryItem(GESTALT_PREFIX + g.id, g.text, "", 0, "gestalt", g.user, "", when, tuple(g.sources))


def _signature(g: gs.Gestalt) -> str:
    # the sources are part of it: a store indexed before items kept them re-upserts its gestalts once
    data = json.dumps([g.text, g.kind, g.user, g.said, g.created, g.updated, list(g.sources)], ensure_ascii=False)
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
