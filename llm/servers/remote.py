"""What every server backend shares (llama-server, vLLM): the adapter stack Home keeps on its side, the
context policy, and the streamed `/v1/chat/completions` reply turned into text pieces and a `Completion`.

The two servers differ in how a stack reaches a request (llama-server: a `lora` list of every held
adapter with its scale; vLLM: the request's `model` is the one adapter served), so a subclass says that
in `load_adapter` and `_body`; everything a reply does once the body is built is here, once.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..decode import Completion
from ..errors import AdapterError, LLMError
from ..fit import fit_messages
from ..gguf_meta import AdapterInfo, ModelInfo, read_model_info
from ..params import GenParams
from .http import Http, ServerError, StreamCut

Message = Mapping[str, Any]
Stack = list[tuple[str, float]]


class RemoteBackend(ABC):
    """The `Backend` protocol over an OpenAI-compatible server at `url`, for the base model whose GGUF is
    at `model_path` (read for its metadata only: the fingerprint adapters are checked against)."""

    kind = "server"

    def __init__(self, url: str, model_path: str | os.PathLike, api_key: str | None = None,
                 timeout: float = 600.0) -> None:
        self.http = Http(url, api_key, timeout)
        self.url = self.http.url
        self.path = Path(model_path)
        self.info: ModelInfo = read_model_info(self.path)
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[Path, AdapterInfo]] = {}  # adapter id -> (the file the server reads, facts)
        self._active: Stack = []
        self.last: Completion | None = None
        self.n_ctx = self.info.n_ctx_train

    @property
    def backend(self) -> str:
        """What a log record's `backend` field says served the reply."""
        return f"{self.kind} {self.url}"

    # --- the stack on Home's side ---------------------------------------------------------------

    def unload_adapter(self, adapter_id: str) -> bool:
        """Forget an adapter (the server keeps it: another Home may use it). True if the stack changed."""
        with self._lock:
            self._loaded.pop(adapter_id, None)
            before = list(self._active)
            self._active = [(i, s) for i, s in self._active if i != adapter_id]
            return before != self._active

    def _check_stack(self, stack: Iterable[tuple[str, float]]) -> Stack:
        stack = [(str(i), float(s)) for i, s in stack]
        for adapter_id, _ in stack:
            if adapter_id not in self._loaded:
                known = ", ".join(sorted(self._loaded)) or "none"
                raise AdapterError(f"adapter {adapter_id!r} is not loaded (loaded: {known})")
        return stack

    def set_adapters(self, stack: Iterable[tuple[str, float]]) -> bool:
        with self._lock:
            stack = self._check_stack(stack)
            changed = stack != self._active
            self._active = stack
            return changed

    @property
    def adapters(self) -> Stack:
        return list(self._active)

    @property
    def loaded_adapters(self) -> dict[str, Path]:
        return {k: p for k, (p, _) in self._loaded.items()}

    # --- the context policy -----------------------------------------------------------------------

    @abstractmethod
    def count_tokens(self, messages: Sequence[Message]) -> int:
        """The prompt's length in tokens, as the server counts it."""

    def fit(self, messages: Sequence[Message], max_tokens: int) -> tuple[list[Message], int]:
        return fit_messages(messages, max_tokens, self.n_ctx, self.count_tokens)

    def reset(self) -> None:  # noqa: B027 - the Backend protocol's, a no-op here
        """Nothing to forget here: the server keys its prompt cache on tokens and adapters."""

    # --- a reply ------------------------------------------------------------------------------------

    @abstractmethod
    def _body(self, messages: Sequence[Message], params: GenParams, stack: Stack) -> tuple[dict, Stack]:
        """(Under the lock.) The request body for `stack`, and the stack it serves."""

    def stream(
        self,
        messages: Sequence[Message],
        params: GenParams | None = None,
        cancel: threading.Event | None = None,
        adapters: Iterable[tuple[str, float]] | None = None,
        aside: bool = False,
    ) -> Iterator[str]:
        """Reply to `messages`, yielding text pieces; afterwards `.last` holds the `Completion`. An
        adapter not loaded, or a prompt that cannot fit, raises here, before the first piece. `aside`: a
        call beside the chat, sent where it leaves the chat's cached prompt alone (`_route`)."""
        params = params or GenParams()
        with self._lock:
            stack = self._check_stack(self._active if adapters is None else adapters)
            if adapters is not None:
                self._active = stack
            kept, dropped = self.fit(messages, params.max_tokens)
            body, served = self._body(kept, params, stack)
            self._route(body, aside)
        return self._generate(body, cancel, dropped, tuple(served))

    def _route(self, body: dict, aside: bool) -> None:  # noqa: B027 - a hook: the server decides alone
        """(Under the lock.) Point the request at a slot of the server's, if this kind has slots."""

    def _generate(self, body: dict, cancel: threading.Event | None, dropped: int,
                  served: tuple[tuple[str, float], ...]) -> Iterator[str]:
        t0 = time.perf_counter()
        parts: list[str] = []
        state: dict[str, Any] = {"finish": "cancelled", "first": None, "usage": {}, "timings": {}}
        events = self.http.events("/v1/chat/completions", body)
        try:
            for event in events:
                if cancel is not None and cancel.is_set():
                    break  # closing `events` closes the socket: the server stops decoding
                state["usage"] = event.get("usage") or state["usage"]
                state["timings"] = event.get("timings") or state["timings"]  # llama-server's own figures
                for choice in event.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        state["first"] = state["first"] or time.perf_counter()
                        parts.append(piece)
                        yield piece
                    if choice.get("finish_reason"):
                        state["finish"] = "length" if choice["finish_reason"] == "length" else "stop"
            else:
                if state["finish"] == "cancelled":  # [DONE] without a finish reason
                    state["finish"] = "stop"
        except (StreamCut, ServerError):
            state["finish"] = "error"  # logged partial: true by the turn
            raise
        finally:
            events.close()
            self.last = completion(state, parts, t0, dropped, served)

    def generate_text(self, messages: Sequence[Message], params: GenParams | None = None,
                      cancel: threading.Event | None = None) -> str:
        return "".join(self.stream(messages, params, cancel))

    def logits(self, tokens: Sequence[int], all_positions: bool = False) -> Any:
        raise LLMError(f"{self.url}: a server gives no logits; this needs the in-process engine (no --backend)")

    def close(self) -> None:  # noqa: B027 - the Backend protocol's, a no-op here
        """Nothing to free: the server keeps running (it is not ours to stop here)."""

    def __enter__(self) -> RemoteBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def completion(state: dict, parts: list[str], t0: float, dropped: int,
               served: tuple[tuple[str, float], ...]) -> Completion:
    """The reply's `Completion`: token counts from `usage` (else llama-server's `timings`; the prompt
    tokens its cache served: `timings.cache_n`, else OpenAI's `prompt_tokens_details`), decode speed
    from the server's own figure when it gives one, else tokens after the first over their time."""
    usage, timings = state["usage"], state["timings"]
    end, first = time.perf_counter(), state["first"]
    n_out = int(usage.get("completion_tokens") or timings.get("predicted_n") or 0)
    decode_s = end - first if first is not None else 0.0
    measured = (n_out - 1) / decode_s if n_out > 1 and decode_s > 0 else 0.0
    return Completion(
        text="".join(parts),
        prompt_tokens=int(usage.get("prompt_tokens") or timings.get("prompt_n") or 0),
        completion_tokens=n_out,
        ttft_s=(first - t0) if first is not None else end - t0,
        total_s=end - t0,
        tok_per_s=float(timings.get("predicted_per_second") or measured),
        finish_reason=state["finish"],
        dropped_turns=dropped,
        adapters=served,
        cached_tokens=int(timings.get("cache_n") or (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
    )
