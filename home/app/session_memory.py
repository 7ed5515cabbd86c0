"""ChatSession's memory: the router and the vault's memory store, opened once the model is up, and
what the status bar says about them. A mixin so session.py keeps to the chat's state and turns."""

from __future__ import annotations

from collections.abc import Callable


class MemoryMixin:
    def open_memory(self, on_indexed: Callable[[int], None] | None = None,
                    on_error: Callable[[str], None] | None = None) -> None:
        """Load the router and own the vault's memory store (a worker thread: the embedder and ChromaDB
        take ~1 s), catch up with the logs in the background, and let every later turn search it. A
        busy or broken store is noted in `memory_note` and the chat goes on without memory; a router
        that cannot load (bad [router] settings) in `router_note`, and only explicit stacks are used.
        `on_error`: a background indexing pass failed (one line; the next pass retries)."""
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
        try:
            recall = Recall.open(self.vault, self.config.memory, embedder)
        except VaultError as exc:  # e.g. built with another embedder, or damaged: the note says what to run
            self.memory_note = str(exc)
            return
        if recall.store is None:
            self.memory_note = recall.unavailable
            return

        def indexed(count: int) -> None:
            self.memory_items = count
            if on_indexed is not None:
                on_indexed(count)

        recall.on_indexed = indexed
        recall.on_error = on_error
        self.memory_items = recall.count()
        recall.store.warm()
        self.recall = recall
        if self.conversation is not None:
            self.conversation.recall = recall
        recall.index_soon()

    def close_memory(self) -> None:
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
