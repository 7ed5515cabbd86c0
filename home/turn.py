"""One conversation turn, end to end: log the user's words, set the adapter stack, stream, log the reply.

The user's message is fsynced before generation starts and the reply right after it ends, so a
kill -9 at any moment loses at most the reply being generated. Shared by the CLI and the app.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from home.prompt import build_messages, greeting, prompt_budget
from home.stack import Stack
from llm.params import GenParams
from vault.logs import ConversationLog
from vault.personas import Persona

if TYPE_CHECKING:
    from home.recall import Recall


@dataclass
class TurnResult:
    text: str
    record: dict  # the assistant record as logged
    user_record: dict


@dataclass
class Conversation:
    """A session: who is talking, with which persona, and the history the model sees."""

    engine: object
    log: ConversationLog
    user: str
    persona: Persona | None = None
    history: list[dict] = field(default_factory=list)
    last: TurnResult | None = None
    recall: Recall | None = None  # memory: searched before each reply, fed each logged turn

    def greet(self) -> str | None:
        """A chat the user has not spoken in yet opens with the persona's greeting (the card's `first_mes`),
        logged as the persona's (`greeting: true`) and given to the model as the chat's first turn. Called
        again after a persona switch before the user's first message, the new greeting replaces the old in
        what the model sees (the log, append-only, keeps both)."""
        if any(m["role"] == "user" for m in self.history):
            return None
        self.history[:] = [m for m in self.history if not m.get("greeting")]
        text = greeting(self.persona, self.user)
        if text is None:
            return None
        self.log.append({"user": self.user, "persona": self.persona.id, "role": "assistant", "text": text,
                         "greeting": True})
        self.history.append({"role": "assistant", "content": text, "greeting": True})
        return text

    @property
    def model_meta(self) -> dict:
        info = self.engine.info
        return {"name": info.name, "fingerprint": info.fingerprint}

    def _rewrite(self, text: str) -> str | None:
        """The model's search query for `text`, from it and the recent turns (`[memory] rewrite`)."""
        from home.query_rewrite import rewrite_query

        return rewrite_query(self.engine, text, [m["content"] for m in self.history if not m.get("greeting")])

    def send(
        self,
        text: str,
        params: GenParams,
        stack: Stack,
        *,
        cancel: threading.Event | None = None,
        router: dict | None = None,
        memory_block: str | None = None,
        memory_ids: list[str] | None = None,
        query_vectors: dict | None = None,
    ) -> Iterator[str]:
        """Stream the reply to `text`; afterwards `self.last` holds the logged result. `query_vectors`:
        embeddings by text (the message's and memory's `query_texts`, made in one batch)."""
        persona = self.persona  # one persona for the whole turn, whatever the UI switches meanwhile
        persona_id = persona.id if persona else None
        stack = list(stack)
        user_record = self.log.append({"user": self.user, "persona": persona_id, "role": "user", "text": text,
                                       "adapters": _adapters(stack)})
        started = time.perf_counter()
        memory_ms = None
        if memory_block is None and self.recall is not None:
            recalled = self.recall.recall(text, self.user, self.log.session,
                                          lambda s: len(self.engine.tokenize(s)), persona_id,
                                          vectors=query_vectors, rewriter=self._rewrite)
            memory_block, memory_ids = recalled.block, recalled.ids
            memory_ms = round(recalled.ms, 1) if recalled.searched else None
        messages = build_messages(persona, self.history, text, self.user, memory_block, prompt_budget(self.engine))
        mode_line = ((router or {}).get("mode") or {}).get("system")
        if mode_line:  # dual mode (home/router/mode.py): next to the question, so the system prompt stays cached
            messages.insert(len(messages) - 1, {"role": "system", "content": mode_line})
        previous = self.engine.last
        pieces: list[str] = []
        try:
            # The engine sets the stack and decodes under one hold: a hot-reload cannot slip between.
            with closing(self.engine.stream(messages, params, cancel=cancel, adapters=stack)) as stream:
                for piece in stream:
                    pieces.append(piece)
                    yield piece
        finally:
            # Runs on normal end, on cancel, and when the consumer stops early (GeneratorExit).
            reply = "".join(pieces)
            done = self.engine.last
            if done is previous:  # the stream never started (a context error)
                done = None
            finish = done.finish_reason if done else "cancelled"
            partial = finish in ("cancelled", "error")
            # What the engine decoded with, not what was asked: the two differ only if the stack could not be set.
            adapters = _adapters(done.adapters) if done else _adapters(stack)
            record = self.log.append(
                {
                    "user": self.user,
                    "persona": persona_id,
                    "role": "assistant",
                    "text": reply,
                    "adapters": adapters,
                    "model": self.model_meta,
                    "backend": backend_of(self.engine),
                    "params": params.to_dict(),
                    "tokens": {
                        "prompt": getattr(done, "prompt_tokens", None),
                        "completion": getattr(done, "completion_tokens", None),
                        "cached": getattr(done, "cached_tokens", None),  # of the prompt, not re-read
                    },
                    "timings": {
                        "ttft_ms": _ms(getattr(done, "ttft_s", None)),
                        "total_ms": round((time.perf_counter() - started) * 1000, 1),
                        "tok_per_s": getattr(done, "tok_per_s", None),
                        "memory_ms": memory_ms,
                    },
                    "router": router,
                    "memory_ids": memory_ids or [],
                    "partial": partial,
                    "finish_reason": finish,
                    "dropped_turns": getattr(done, "dropped_turns", 0),
                }
            )
            self.history.append({"role": "user", "content": text})
            self.history.append({"role": "assistant", "content": reply})
            self.last = TurnResult(reply, record, user_record)
            if self.recall is not None:
                self.recall.index_soon(self.log.session)


def backend_of(engine) -> str:
    """Which backend and server served a reply: "in-process", or e.g. "llama-server http://127.0.0.1:8080"."""
    return getattr(engine, "backend", None) or "in-process"


def _adapters(stack) -> list[dict]:
    return [{"id": i, "scale": s} for i, s in stack]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
