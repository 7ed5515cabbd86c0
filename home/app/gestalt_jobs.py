"""The app's gestalt work in the background: distil (at start-up for sessions that ended unread, every N
turns, when a session ends) and keep memory in step with the gestalt files (after a distillation, and
when the user edits or deletes one: the watcher calls `files_changed`).

Kept out of the screens and of ChatSession: it is scheduling, not chat state. One job at a time, in one
daemon thread; every model call holds `session.turn_lock` and gives way to the user's next message.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from home.app.session import ChatSession
from home.distil_schedule import DistilSchedule


class GestaltJobs:
    def __init__(self, session: ChatSession, notify: Callable[[str], None] | None = None) -> None:
        self.session = session
        self.schedule = DistilSchedule(session.vault, session.config.gestalts)
        self.notify = notify
        self.added = 0  # gestalts distilled by this app run
        self.last_error: str | None = None
        self._jobs: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- what to do ------------------------------------------------------------------------------

    def start_backlog(self) -> None:
        """Sessions that ended without being read (the app closed, or `home ask` turns)."""
        current = self.session.conversation.log.session if self.session.conversation else None
        self._put(("backlog", current))

    def after_turn(self) -> None:
        """Every `[gestalts] every_n_turns` user turns of the chat in progress."""
        convo = self.session.conversation
        if convo is None:
            return
        records = convo.log.records()
        if self.schedule.due(convo.log.session, records, self.session.user):
            self._put(("session", convo.log.session, records))

    def session_ended(self, session: str, records: list[dict]) -> None:
        """A new chat or a resumed one replaced `session`: read what is left of it."""
        if self.schedule.settings.enabled:
            self._put(("session", session, records))

    def files_changed(self) -> None:
        """(The watcher's thread.) A gestalt file was added, edited or deleted: re-sync memory."""
        self._put(("sync",))

    # --- the worker -------------------------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def _put(self, job: tuple) -> None:
        self._idle.clear()
        self._jobs.put(job)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="home-gestalts", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.session.distil_cancel.set()  # the model call in flight ends now
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(job)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - a bad log or file must not end the worker; shown
                self.last_error = f"gestalts: {type(exc).__name__}: {exc}"
                if self.notify is not None:
                    self.notify(self.last_error)
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
        else:
            work = [(job[1], job[2])]
        added = 0
        for session, records in work:
            added += self.schedule.run(s.engine, s.user, session, records, s.distil_cancel, s.turn_lock,
                                       self._stop)
        if added:
            self.added += added
            self._sync()
            if self.notify is not None:
                self.notify(f"learned {added} new thing{'s' if added != 1 else ''} about you "
                            "(home gestalts list)")

    def _sync(self) -> None:
        recall = self.session.recall
        if recall is not None and recall.store is not None:
            from vault.memory import sync_gestalts

            sync_gestalts(self.session.vault, recall.store)
            if recall.on_indexed is not None:
                recall.on_indexed(recall.store.count())
