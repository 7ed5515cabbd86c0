"""One reply generated outside `Conversation.send` (roundtable turns, pick-best candidates), with the
same assistant record fields, so the logs read the same whichever way a reply came.

Why not `Conversation.send`: it logs the text it is given as the *user's* message. A roundtable turn
replies to other personas, and a pick-best candidate may never be kept; neither is something the user
said, and the voice trainer learns from the user's records.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing

from home.stack import Stack
from llm.params import GenParams


class Reply:
    """Stream with `stream()`; then `text`, `finish_reason`, `partial` and `record()` describe it."""

    def __init__(self, engine, messages: list[dict], params: GenParams, stack: Stack) -> None:
        self.engine = engine
        self.messages = messages
        self.params = params
        self.stack = list(stack)
        self.pieces: list[str] = []
        self.completion = None
        self.finish_reason: str | None = None  # None until the stream ended
        self.total_ms: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def partial(self) -> bool:
        return self.finish_reason in ("cancelled", "error")

    @property
    def adapters(self) -> list[dict]:
        return [{"id": i, "scale": s} for i, s in self.stack]

    def stream(self, cancel: threading.Event | None = None) -> Iterator[str]:
        """Stream under this reply's stack (its adapters must be loaded), set by the engine in the same
        hold as the decode. Context errors raise before the first piece. `adapters` afterwards is the
        stack the engine decoded with."""
        engine = self.engine
        previous = engine.last
        started = time.perf_counter()
        pieces = engine.stream(self.messages, self.params, cancel=cancel, adapters=self.stack)  # nothing started
        try:
            with closing(pieces):
                for piece in pieces:
                    self.pieces.append(piece)
                    yield piece
        finally:
            done = engine.last if engine.last is not previous else None
            self.completion = done
            if done is not None:
                self.stack = list(done.adapters)
            self.finish_reason = done.finish_reason if done else "cancelled"
            self.total_ms = round((time.perf_counter() - started) * 1000, 1)

    def record(self, user: str, persona: str | None, text: str | None = None) -> dict:
        """The assistant log record (see ARCHITECTURE.md), `text` overriding the streamed text."""
        done, info = self.completion, self.engine.info
        ttft = getattr(done, "ttft_s", None)
        return {
            "user": user, "persona": persona, "role": "assistant",
            "text": self.text if text is None else text,
            "adapters": self.adapters,
            "model": {"name": info.name, "fingerprint": info.fingerprint},
            "backend": getattr(self.engine, "backend", None) or "in-process",
            "params": self.params.to_dict(),
            "tokens": {"prompt": getattr(done, "prompt_tokens", None),
                       "completion": getattr(done, "completion_tokens", None)},
            "timings": {"ttft_ms": None if ttft is None else round(ttft * 1000, 1), "total_ms": self.total_ms,
                        "tok_per_s": getattr(done, "tok_per_s", None)},
            "router": None, "memory_ids": [], "partial": self.partial,
            "finish_reason": self.finish_reason, "dropped_turns": getattr(done, "dropped_turns", 0),
        }
