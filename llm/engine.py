"""The engine: one resident GGUF model on llama-cpp-python, hot-swapped LoRA stacks, streamed replies.

Why it wraps `llama_cpp.Llama` instead of using `create_chat_completion`:
- adapters: `Llama` takes one `lora_path` at construction; we stack adapters per reply (`AdapterPool`)
  and, when the stack changes, drop every cached token (`Llama.generate` reuses any matching token
  prefix, which would otherwise have been computed under the previous stack);
- streaming: our own token loop (`llm.decode`: pieces, stop strings, the reusable KV prefix);
- a lock, so the app's worker thread and a persona switch never interleave inside a decode.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .adapters import AdapterPool
from .decode import MIN_P, Completion, Pieces, PromptCache, Tally, batch_logits, decode
from .errors import ContextError, LLMError, ModelError
from .fit import fit_messages
from .gguf_meta import AdapterInfo, ModelInfo, check_adapter_fits, read_adapter_info, read_model_info
from .kv_aside import MIN_TOKENS, Aside, Copies, shared
from .offload import Offload, check_gpu_layers, default_gpu_layers, offload_of
from .params import GenParams
from .probe import probe_adapter, probe_model
from .template import ChatTemplate

Message = Mapping[str, Any]
__all__ = ["MIN_P", "Completion", "Engine", "Message"]


class Engine:
    """One model, one context, one adapter pool. Safe to share between threads (calls serialise)."""

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        verbose: bool = False,
        gpu_layers: int | None = None,
    ) -> None:
        """`gpu_layers`: layers llama.cpp puts on the GPU (-1 all, 0 none); None: all when this
        llama.cpp can offload, else 0 (`llm.offload`). `.offload` says what it did."""
        import llama_cpp

        if model_path is None:
            from .models import default_model_path

            model_path = default_model_path()
        path = Path(model_path)
        self.info: ModelInfo = read_model_info(path)  # ModelError naming the file if it is no model
        probe_model(path, self.info)  # a file that makes llama.cpp abort is refused here, not by a crash later
        gpu_layers = default_gpu_layers() if gpu_layers is None else check_gpu_layers(gpu_layers)
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_ubatch=n_batch,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=gpu_layers,
                logits_all=False,  # logits for the last position only: sampling needs no more
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            hint = " (too big for the GPU? fewer layers: --gpu-layers N, [context] gpu_layers)" if gpu_layers else ""
            raise ModelError(f"{path}: llama.cpp could not load it ({exc}){hint}") from None
        self.offload: Offload = offload_of(self._llm.model, gpu_layers)
        self.path = path
        self.verbose = verbose
        self.n_batch = self._llm.n_batch
        self.template = ChatTemplate(self.info.chat_template, self.info.bos_token, self.info.eos_token)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._n_vocab = self._llm.n_vocab()
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._pieces = Pieces(self._vocab)
        self._cache = PromptCache(self._llm)
        self._pool = AdapterPool(self._llm.model, [self._llm.ctx], self.info, verbose=verbose)
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._closed = False
        self._last_prompt: tuple[str, tuple[int, ...]] | None = None  # (text, its tokens): `_prompt_tokens`
        self.last: Completion | None = None
        self._aside: Aside | None = None  # the chat put aside during a run of calls aside (llm/kv_aside.py)
        self.lazy_aside = True  # False: put the chat back after every call aside (as before; the bench compares)

    # --- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._owner == me:
            raise LLMError("a reply stream is still open on this thread: finish or close() it first")
        with self._lock:
            if self._closed:
                raise LLMError("engine is closed")
            self._owner = me
            try:
                yield
            finally:
                self._owner = None

    def reset(self) -> None:
        """Forget the cached conversation (a new chat). Replies never depend on it; this frees nothing
        but time on the next prompt."""
        with self._locked():
            self._drop_aside()
            self._cache.clear()

    @property
    def aside_copies(self) -> Copies:
        """What keeping the chat's prefix across calls aside has copied so far (a snapshot)."""
        return replace(self._cache.copies)

    @property
    def n_ctx(self) -> int:
        return self._llm.n_ctx()

    # --- adapters -----------------------------------------------------------------------------

    def load_adapter(self, adapter_id: str, path: str | os.PathLike) -> AdapterInfo:
        """Load (once) and validate an adapter; it is not applied until `set_adapters` names it.
        A new file is validated and probed in a child process first (outside the lock: a reply goes on
        meanwhile), so one that makes llama.cpp abort is an `AdapterError`, not the end of Home."""
        resolved = Path(path).expanduser().resolve()
        if self._pool.path_of(adapter_id) != resolved:
            info = read_adapter_info(resolved)
            check_adapter_fits(self.info, info, resolved)
            probe_adapter(resolved, info, self.info)
        with self._locked():
            return self._pool.load(adapter_id, path)

    def unload_adapter(self, adapter_id: str) -> bool:
        """Free an adapter, removing it from the active stack first. True if the stack changed."""
        with self._locked():
            if self._aside is not None and any(i == adapter_id for i, _ in self._aside.stack):
                self._drop_aside()  # the chat's saved cells were computed under the adapter going away
            changed = self._pool.unload(adapter_id)
            if changed:
                self._cache.clear()
            return changed and self._aside is None  # still aside: the pool held the calls aside's stack, not the chat's

    def set_adapters(self, stack: Iterable[tuple[str, float]]) -> bool:
        """Apply [(id, scale), …] ([] = base). When it changed, the KV and prompt cache are dropped."""
        with self._locked():
            changed = self._pool.set_stack(stack)
            if changed:
                self._cache.clear()
            pending = self._aside
            if pending is None:
                return changed
            if self._pool.active == pending.stack:
                return False  # the chat's own stack: its saved cells still hold
            self._aside = None
            self._cache.drop(pending.saved)
            return True

    @property
    def adapters(self) -> list[tuple[str, float]]:
        """The active stack: the chat's (during a run of calls aside, the one they put aside)."""
        return list(self._aside.stack) if self._aside is not None else self._pool.active

    @property
    def loaded_adapters(self) -> dict[str, Path]:
        return self._pool.loaded

    # --- tokens and the context policy ----------------------------------------------------------

    def render(self, messages: Sequence[Message]) -> str:
        """Prompt text for a chat, through the model's own template."""
        return self.template.render(messages, add_generation_prompt=True)

    def tokenize(self, text: str) -> list[int]:
        """Tokens for prompt text (special tokens parsed; BOS added if the model wants one and the
        template did not already write it)."""
        bos = self.info.bos_token
        add_bos = self._add_bos and not (bos and text.startswith(bos))
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def _prompt_tokens(self, text: str) -> list[int]:
        """`tokenize` with the last prompt remembered: a turn counts its prompt to fit the context and then
        runs that same text, which a long prompt paid twice for (~1 ms a 1k-token prompt here)."""
        last = self._last_prompt
        if last is not None and last[0] == text:
            return list(last[1])
        tokens = self.tokenize(text)
        self._last_prompt = (text, tuple(tokens))
        return tokens

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._prompt_tokens(self.render(messages)))

    def fit(self, messages: Sequence[Message], max_tokens: int) -> tuple[list[Message], int]:
        """Keep the system message and the newest turns so prompt + max_tokens fits n_ctx (see
        `llm.fit.fit_messages`). Returns (messages, number of messages dropped)."""
        return fit_messages(messages, max_tokens, self.n_ctx, self.count_tokens)

    # --- generation ---------------------------------------------------------------------------

    def stream(
        self,
        messages: Sequence[Message],
        params: GenParams | None = None,
        cancel: threading.Event | None = None,
        adapters: Iterable[tuple[str, float]] | None = None,
        aside: bool = False,
    ) -> Iterator[str]:
        """Reply to `messages`, yielding text pieces; afterwards `.last` holds the `Completion`.

        Context errors (and an adapter not loaded) raise here, before the first piece. The engine lock
        is held from the first piece until the iterator ends or is closed: finish it, close() it, or set
        `cancel`. `adapters`: the stack to reply with, set under that same hold, so no other thread (a
        hot-reload, a background call) can change it in between; None keeps the active one. Either way
        `.last.adapters` is the stack the reply was decoded with. `aside`: a call beside the chat (distilling,
        summarising): the chat's cached prefix and stack are kept for its next call; calls aside in a row share
        one copy, put back only when that next call's prompt continues it (llm/kv_aside.py)."""
        params = params or GenParams()
        stack = None if adapters is None else list(adapters)
        if stack:  # checked again under the hold
            with self._locked():
                for adapter_id, _ in stack:
                    self._pool.info(adapter_id)
        kept, dropped = self.fit(messages, params.max_tokens)
        tokens = self._prompt_tokens(self.render(kept))
        stops = tuple(dict.fromkeys(self.template.stop_strings + params.stop))
        return self._generate(tokens, params, stops, cancel, dropped, stack, aside)

    def _generate(
        self,
        prompt: list[int],
        params: GenParams,
        stops: tuple[str, ...],
        cancel: threading.Event | None,
        dropped: int,
        stack: list[tuple[str, float]] | None = None,
        aside: bool = False,
    ) -> Iterator[str]:
        tally = Tally(time.perf_counter())
        with self._locked():
            pending = self._aside
            if aside and pending is None:  # the first of a run of calls aside: the chat's cells, copied out once
                pending = self._aside = Aside(self._cache.save(), self._pool.active)
            if stack is None and pending is not None:
                stack = pending.stack  # None keeps the chat's stack, not the last call aside's
            try:
                try:
                    if stack is not None and self._pool.set_stack(stack):
                        self._cache.clear()
                except LLMError:  # e.g. unloaded since the check in stream(): nothing decoded, and .last says so
                    tally.finish = "error"
                    self.last = tally.completion(len(prompt), dropped, tuple(self.adapters))
                    raise
                applied = tuple(self._pool.active)
                if not aside and pending is not None:
                    self._aside = None
                    self._take_back(pending, prompt)
                self._cache.trim(prompt)
                reused = self._cache.reused
                self._llm.set_seed(params.seed if params.seed >= 0 else random.getrandbits(32))
                max_new = min(params.max_tokens, self.n_ctx - len(prompt))
                try:
                    yield from decode(self._llm, self._vocab, self._pieces, prompt, params, stops, cancel, max_new,
                                      tally)
                finally:
                    self.last = tally.completion(len(prompt), dropped, applied, reused)
            finally:
                if aside and not self.lazy_aside:
                    self._drop_aside(restore=True)

    def _take_back(self, pending: Aside, prompt: list[int]) -> None:
        """(Under the lock; the chat call's stack set.) The chat's saved cells back when they were computed
        under this stack and spare this prompt at least kv_aside.MIN_TOKENS (fewer re-read faster than the
        copy goes back); otherwise they are dropped (a new chat, a history cut moved on, another voice)."""
        saved = pending.saved
        if saved is not None and self._pool.active == pending.stack and shared(saved, prompt) >= MIN_TOKENS:
            self._cache.restore(saved)
        else:
            self._cache.drop(saved)

    def _drop_aside(self, restore: bool = False) -> None:
        """(Under the lock.) End a run of calls aside outside a chat call: the chat's stack back in the pool,
        its saved cells dropped (or, `restore`, put back: the eager way)."""
        pending, self._aside = self._aside, None
        if pending is None:
            return
        try:
            if self._pool.set_stack(pending.stack):
                self._cache.clear()
        except LLMError:  # cannot happen under the lock (unload_adapter drops first); start clean, not mixed
            self._cache.clear()
            restore = False
        if restore and pending.saved is not None:
            self._cache.restore(pending.saved)
        else:
            self._cache.drop(pending.saved)

    def generate_text(
        self, messages: Sequence[Message], params: GenParams | None = None, cancel: threading.Event | None = None
    ) -> str:
        """The whole reply as one string (for scripts and tests)."""
        return "".join(self.stream(messages, params, cancel))

    def logits(self, tokens: Sequence[int], all_positions: bool = False, first: int = 0) -> np.ndarray:
        """Logits after `tokens` (float32, shape (n_vocab,), or (len - first, n_vocab) with all_positions:
        the rows of positions `first`…, the only ones llama.cpp computes), from an empty KV cache under
        the active stack: reproducible."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("logits: no tokens")
        if len(tokens) > self.n_ctx:
            raise ContextError(f"logits: {len(tokens)} tokens do not fit the context of {self.n_ctx}")
        with self._locked():
            if self._aside is not None:
                self._pool.set_stack(self._aside.stack)  # the chat's; its saved cells stay put aside
            self._cache.clear()
            try:
                return batch_logits(self._llm, tokens, self.n_batch, self._n_vocab, all_positions, first)
            finally:
                self._cache.clear()  # the next reply starts clean too (no half-known prefix)

    def close(self) -> None:
        """Free adapters, then the context and model. Idempotent."""
        if self._closed:
            return
        with self._locked():
            self._aside = None
            self._pool.close()
            self._llm.close()
            self._closed = True

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

