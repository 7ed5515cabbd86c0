"""The app's gestalt work in the background: distil (at start-up for sessions that ended unread, every N
turns, when a session ends) and keep memory in step with the gestalt files (after a distillation, and
when the user edits or deletes one: the watcher calls `files_changed`).

Kept out of the screens and of ChatSession: it is scheduling, not chat state. One job at a time, in one
daemon thread; every model call holds `session.turn_lock` and gives way to the user's next message.
Nothing here reads a log on the UI thread: the every-N check after each reply reads, on the worker,
only the records the chat appended since the last check (`LogTail`), so its cost does not grow with
the session.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from home.app.session import ChatSession
from home.distil_schedule import DistilSchedule
from vault.logs import read_log


class LogTail:
    """The records of one session's log not yet distilled, kept up to date by reading only what was
    appended since the last read (a byte offset). A line not yet ending in a newline is left for the
    next read; a log rewritten in place (another inode, or shorter) is read again from the start."""

    def __init__(self, session: str, path: Path) -> None:
        self.session, self.path = session, Path(path)
        self.records: list[dict] = []
        self.offset = 0
        self.read_records = 0  # records parsed over this tail's life (O(new) is testable)
        self._inode: int | None = None

    def read_new(self, after_turn: int = 0) -> list[dict]:
        """Append the new complete records, drop those at or before `after_turn` (already read), and
        return what is left."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self.records
        if st.st_ino != self._inode or st.st_size < self.offset:
            self.records, self.offset, self._inode = [], 0, st.st_ino
        if st.st_size > self.offset:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(st.st_size - self.offset)
            end = chunk.rfind(b"\n") + 1
            self.offset += end
            for line in chunk[:end].splitlines():
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    continue  # a torn line (a crash mid-write) is skipped, as read_log does
                if isinstance(rec, dict):
                    self.records.append(rec)
                    self.read_records += 1
        self.records = [r for r in self.records if r.get("turn", 0) > after_turn]
        return self.records


class GestaltJobs:
    def __init__(self, session: ChatSession, notify: Callable[[str], None] | None = None) -> None:
        self.session = session
        self.schedule = DistilSchedule(session.vault, session.config.gestalts)
        self.notify = notify
        self._jobs: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()  # jobs are put from the UI, the watcher and the loader threads
        self._stop = threading.Event()
        self.tail: LogTail | None = None  # the chat in progress, read by the worker only

    # --- what to do ------------------------------------------------------------------------------

    def start_backlog(self) -> None:
        """Sessions that ended without being read (the app closed, or `home ask` turns)."""
        current = self.session.conversation.log.session if self.session.conversation else None
        self._put(("backlog", current))

    def after_turn(self) -> None:
        """(The UI thread, after each reply.) Every `[gestalts] every_n_turns` user turns of the chat in
        progress: only queued here; the worker reads the new records and decides."""
        convo = self.session.conversation
        settings = self.schedule.settings
        if convo is not None and settings.enabled and settings.every_n_turns > 0:
            self._put(("turn", convo.log.session, convo.log.path))

    def session_ended(self, session: str, path: Path) -> None:
        """A new chat or a resumed one replaced `session`: read what is left of it (on the worker)."""
        if self.schedule.settings.enabled:
            self._put(("ended", session, path))

    def files_changed(self) -> None:
        """(The watcher's thread.) A gestalt file was added, edited or deleted: re-sync memory."""
        self._put(("sync",))

    # --- the worker -------------------------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def _put(self, job: tuple) -> None:
        with self._start_lock:
            if self._stop.is_set():
                return
            self._idle.clear()
            self._jobs.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="home-gestalts", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._start_lock:
            self._stop.set()
            self._jobs.put(None)
        self.session.distil_cancel.set()  # the model call in flight ends now
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - a bad log or file must not end the worker; shown
                if self.notify is not None:
                    self.notify(f"gestalts: {type(exc).__name__}: {exc}")
            if self._jobs.empty():
                self._idle.set()

    def _run(self, job: tuple) -> None:
        s = self.session
        if job[0] == "sync":
            self._sync()
            return
        if s.engine is None:
            return
        if job[0] == "backlog":
            work = self.schedule.backlog(s.user, skip=job[1])
        elif job[0] == "turn":
            records = self._tail(job[1], job[2])
            work = [(job[1], records)] if self.schedule.due(job[1], records, s.user) else []
        else:  # "ended": what the tail holds if it followed this session, else the whole log once
            tail = self.tail
            records = (self._tail(job[1], job[2]) if tail is not None and tail.session == job[1]
                       else read_log(job[2]).records if Path(job[2]).exists() else [])
            work = [(job[1], records)]
        added = 0
        for session, records in work:
            added += self.schedule.run(s.engine, s.user, session, records, s.distil_cancel, s.turn_lock,
                                       self._stop)
        if added:
            self._sync()
            if self.notify is not None:
                self.notify(f"learned {added} new thing{'s' if added != 1 else ''} about you "
                            "(home gestalts list)")

    def _tail(self, session: str, path: Path) -> list[dict]:
        if self.tail is None or self.tail.session != session:
            self.tail = LogTail(session, path)
        return self.tail.read_new(self.schedule.marks.get(session, 0))

    def _sync(self) -> None:
        recall = self.session.recall
        if recall is not None and recall.store is not None:
            from vault.memory import sync_gestalts

            sync_gestalts(self.session.vault, recall.store)
            if recall.on_indexed is not None:
                recall.on_indexed(recall.store.count())
