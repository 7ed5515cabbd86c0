"""Tell the running app when the vault changes under it: the trainer registered an adapter, the user
removed one, or edited a gestalt file by hand.

watchdog reports the raw filesystem events (an atomic manifest write is a create + rename of a temp
file); this module turns them into one debounced callback per burst, by which file matters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .layout import Vault

Callback = Callable[[], None]


class VaultWatcher:
    """Calls `on_manifest()` after manifest.json changes and `on_gestalts()` after a gestalt file does.

    Callbacks run on a timer thread, `debounce` seconds after the last event of a burst, never two at
    once. Use as a context manager or call start()/stop().
    """

    def __init__(self, vault: Vault, on_manifest: Callback | None = None, on_gestalts: Callback | None = None,
                 debounce: float = 0.2) -> None:
        self.vault = vault
        self.debounce = debounce
        self._callbacks = {"manifest": on_manifest, "gestalts": on_gestalts}
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._observer = None

    def _kind(self, path: str) -> str | None:
        p = Path(path)
        if p.name == self.vault.manifest_path.name and p.parent == self.vault.root:
            return "manifest"
        if self.vault.gestalts_dir in p.parents and not p.name.startswith("."):
            return "gestalts"
        return None

    def _event(self, event) -> None:
        if getattr(event, "is_directory", False) and event.event_type == "modified":
            return  # "a file in here changed": that file's own event follows (or is a dotfile we skip)
        for path in (getattr(event, "src_path", ""), getattr(event, "dest_path", "")):
            kind = self._kind(str(path)) if path else None
            if kind and self._callbacks.get(kind):
                self._schedule(kind)

    def _schedule(self, kind: str) -> None:
        with self._lock:
            old = self._timers.get(kind)
            if old is not None:
                old.cancel()
            timer = threading.Timer(self.debounce, self._fire, args=(kind,))
            timer.daemon = True
            self._timers[kind] = timer
            timer.start()

    def _fire(self, kind: str) -> None:
        callback = self._callbacks.get(kind)
        if callback is None:
            return
        with self._run_lock:
            callback()

    def start(self) -> VaultWatcher:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog's event type
                if event.event_type in ("created", "modified", "moved", "deleted"):
                    watcher._event(event)

        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.vault.root), recursive=False)
        self._observer.schedule(Handler(), str(self.vault.gestalts_dir), recursive=True)
        self._observer.daemon = True
        self._observer.start()
        return self

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    def __enter__(self) -> VaultWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
