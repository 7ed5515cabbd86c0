"""The draft's embeddings, made while the user types, so Enter does not wait for MiniLM.

Why: embedding a turn's texts (the message for the router, what memory searches for it) is ~10-12 ms of
the ~30 ms of a turn's own work at 100k items, and most of it is reading the weights, whatever the text.
The chat embeds the prompt box's text in a worker thread once typing pauses (`PAUSE_S`); a turn whose text
is exactly the one embedded takes those vectors, any other text is embedded on the turn as before. One
draft is kept (the latest); a turn that asks for the text being embedded right now waits for that embed
rather than making a second one, and gets that embed's own result (a newer draft may finish before it wakes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

PAUSE_S = 0.2  # after the last keystroke: typing goes on uninterrupted, Enter after a pause finds it done

Vectors = dict[str, np.ndarray]


class _Embed:
    """One embed in flight: a turn waiting on it reads its result here, not the draft slot a newer text may take."""

    __slots__ = ("text", "vectors", "done")

    def __init__(self, text: str) -> None:
        self.text, self.vectors, self.done = text, None, False


class DraftVectors:
    """One text's turn vectors (`home.recall.turn_vectors`), made ahead of its turn. Thread-safe: `prepare`
    runs on a worker thread, `take` on the turn's."""

    def __init__(self, embed: Callable[[str], Vectors | None]) -> None:
        self._embed = embed  # text -> its turn vectors (None: nothing to embed for now: no embedder yet)
        self._cond = threading.Condition()
        self._text: str | None = None  # the text `_vectors` were made for
        self._vectors: Vectors | None = None
        self._pending: _Embed | None = None  # the embed in flight
        self._latest: str | None = None  # the text last asked for: an older one still waiting gives way
        self.embedded = 0  # drafts embedded (tests, bench)
        self.used = 0  # turns that took a draft's vectors

    def prepare(self, text: str) -> bool:
        """Embed `text` unless it is the draft already embedded or being embedded; True when it embedded."""
        text = text.strip()
        with self._cond:
            if not text or text == self._text or (self._pending is not None and self._pending.text == text):
                return False
            self._latest = text
            while self._pending is not None:  # one embed at a time: the one in flight is older than this
                self._cond.wait()
            if self._latest != text:  # typing went on while this waited: the newer text is embedded instead
                return False
            job = self._pending = _Embed(text)
        vectors = None
        try:
            vectors = self._embed(text)
        finally:
            with self._cond:
                self._pending = None
                job.vectors, job.done = vectors, True
                if vectors is not None:
                    self._text, self._vectors = text, vectors
                    self.embedded += 1
                self._cond.notify_all()
        return vectors is not None

    @property
    def text(self) -> str | None:
        """The text whose vectors are held."""
        return self._text

    def take(self, text: str) -> Vectors | None:
        """A copy of the vectors made for exactly `text` (waiting for them if they are being made now), or None."""
        with self._cond:
            job = self._pending
            if job is not None and job.text == text:
                while not job.done:
                    self._cond.wait()
                vectors = job.vectors
            else:
                vectors = self._vectors if self._text == text else None
            if vectors is None:
                return None
            self.used += 1
            return dict(vectors)
