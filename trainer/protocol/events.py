"""The trainer's wire protocol: one JSON object per line on stdout.

Torch-free, so the app and `home train` can read a run's progress without loading any training code.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

KINDS = ("started", "dataset", "phase", "step", "eval", "checkpoint", "stopped", "converted",
         "verified", "registered", "done", "error", "heartbeat")


class EventWriter:
    """Writes events to a stream (stdout by default), flushing each so readers see them at once.

    A reader that went away (the app or `home train` killed) must not crash the run it started: the
    first broken pipe mutes the writer, and the run ends as its stop path says (`mute()` does the same
    when the parent is known to be gone)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self.started = time.time()
        self.muted = False
        self._lock = threading.Lock()  # the memory watch's heartbeat writes from its own thread

    def mute(self) -> None:
        with self._lock:
            self.muted = True

    def __call__(self, kind: str, /, **fields) -> dict:
        if kind not in KINDS:
            raise ValueError(f"unknown trainer event {kind!r}")
        event = {"event": kind, "t": round(time.time() - self.started, 3), **fields}
        with self._lock:
            if self.muted:
                return event
            try:
                self.stream.write(json.dumps(event, default=str) + "\n")
                self.stream.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.muted = True
                try:  # drop what is buffered, or the interpreter's exit reports the same pipe again
                    self.stream.close()
                except OSError:
                    pass
        return event


def read_events(lines: Iterator[str]) -> Iterator[dict]:
    """Parse a trainer's stdout; lines that are not events (library chatter) are passed as `log`."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            yield {"event": "log", "text": line}
            continue
        if isinstance(event, dict) and event.get("event") in KINDS:
            yield event
        else:
            yield {"event": "log", "text": line}


def event_stream() -> IO[str]:
    """A text stream on a duplicate of the real stdout; fd 1 then goes to stderr for everyone else (the
    libraries' progress bars and prints), so stdout carries only events."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")
