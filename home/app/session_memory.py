"""ChatSession's memory: the router and the vault's memory store, opened once the model is up, and
what the status bar says about them. A mixin so session.py keeps to the chat's state and turns."""

from __future__ import annotations

import threading
from collections.abc import Callable

# How often the app tries again for a store another process held when it opened (a `home ask` owns it for
# its one turn: the chat would otherwise run its whole session without memory).
RETRY_S = 10.0


class MemoryMixin:
    def open_memory(self, on_indexed: Callable[[int], None] | None = None,
                    on_error: Callable[[str], None] | None = None,
                    on_opened: Callable[[], None] | None = None) -> None:
        """Load the router and own the vault's memory store (a worker thread: the embedder and ChromaDB
        take ~1 s), catch up with the logs in the background, and let every later turn search it. A
        busy or broken store is noted in `memory_note` and the chat goes on without memory; a router
        that cannot load (bad [router] settings) in `router_note`, and only explicit stacks are used.
        `on_error`: a background indexing pass failed (one line; the next pass retries). A store another
        process owns is tried again every RETRY_S in the background until it opens (`on_opened`) or
        `close_memory`."""
        from home.recall import Recall
        from home.router import Router
        from vault.embedder import load_embedder
        from vault.errors import VaultError

        embedder = None
        try:
            embedder = load_embedder(self.config.memory.embedder or None)
            if self.config.router.enabled:
                self.router = Router.load(self.vault, self.config, embedder)
        except VaultError as exc:
            self.router_note = f"router off: {exc}"
        self._memory_closed = threading.Event()
        self._memory_attach = threading.Lock()  # an open by the retry thread vs close_memory
        try:
            recall = Recall.open(self.vault, self.config.memory, embedder)
        except VaultError as exc:  # e.g. built with another embedder, or damaged: the note says what to run
            self.memory_note = str(exc)
            return
        if recall.store is None:
            self.memory_note = recall.unavailable
            if recall.busy:
                threading.Thread(target=self._retry_memory, args=(embedder, on_indexed, on_error, on_opened),
                                 name="memory-retry", daemon=True).start()
            return
        self._attach_memory(recall, on_indexed, on_error)

    def _attach_memory(self, recall, on_indexed, on_error) -> bool:  # noqa: ANN001
        """Make an open store the chat's (False, and closed, when the app is closing)."""

        def indexed(count: int) -> None:
            self.memory_items = count
            if on_indexed is not None:
                on_indexed(count)

        with self._memory_attach:
            if self._memory_closed.is_set():
                recall.close()
                return False
            recall.on_indexed = indexed
            recall.on_error = on_error
            self.memory_items = recall.count()
            recall.store.warm()
            # The catch-up is pending before anyone can see the store: a `wait_idle` by whoever finds
            # `self.recall` set (the panel, a test) then waits for it instead of returning before it began.
            recall.index_soon()
            self.recall = recall
            self.memory_note = None
            if self.conversation is not None:
                self.conversation.recall = recall
        return True

    def _retry_memory(self, embedder, on_indexed, on_error, on_opened) -> None:  # noqa: ANN001
        from home.recall import Recall
        from vault.errors import VaultError

        while not self._memory_closed.wait(RETRY_S):
            try:
                recall = Recall.open(self.vault, self.config.memory, embedder)
            except VaultError as exc:
                self.memory_note = str(exc)
                return
            if recall.store is None:
                self.memory_note = recall.unavailable
                if recall.busy:
                    continue
                return
            if self._attach_memory(recall, on_indexed, on_error) and on_opened is not None:
                on_opened()
            return

    def close_memory(self) -> None:
        closed, attach = getattr(self, "_memory_closed", None), getattr(self, "_memory_attach", None)
        if closed is not None:
            closed.set()  # no retry attaches a store after this
        if attach is None:
            attach = threading.Lock()
        with attach:
            if self.recall is not None:
                self.recall.close()
                self.recall = None

    def memory_status(self) -> str:
        """For the status bar: items used by the last reply and items in memory, or why it is off."""
        if self.recall is None:  # off (why: memory_note), opening after the model loaded, or not started
            return "off" if self.memory_note else ("opening…" if self.engine is not None else "–")
        last = self.conversation.last if self.conversation else None
        used = len(last.record.get("memory_ids") or []) if last else 0
        items = self.memory_items if self.memory_items is not None else 0
        return f"{used} used · {items:,} items"
