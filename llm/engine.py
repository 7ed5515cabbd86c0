"""The engine: one resident GGUF model on llama-cpp-python, hot-swapped LoRA stacks, streamed replies.

Why it wraps `llama_cpp.Llama` instead of using `create_chat_completion`:
- adapters: `Llama` takes one `lora_path` at construction; we stack adapters per reply (`AdapterPool`)
  and, when the stack changes, drop every cached token (`Llama.generate` reuses any matching token
  prefix, which would otherwise have been computed under the previous stack);
- streaming: one detokenised piece per token with an incremental UTF-8 decoder and stop-string
  hold-back, where `create_completion` re-detokenises the whole reply each token;
- a lock, so the app's worker thread and a persona switch never interleave inside a decode.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .adapters import AdapterPool
from .errors import ContextError, LLMError, ModelError
from .fit import fit_messages
from .gguf_meta import AdapterInfo, ModelInfo, read_model_info
from .offload import Offload, check_gpu_layers, default_gpu_layers, offload_of
from .params import GenParams
from .probe import probe_model
from .stops import split_stop
from .template import ChatTemplate

Message = Mapping[str, Any]
MIN_P = 0.05  # llama-cpp-python's default; not a GenParams knob, kept so small models stay on the rails


@dataclass(frozen=True)
class Completion:
    """What the last `stream` did. tok_per_s is decode speed: tokens after the first / time after it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float
    tok_per_s: float
    finish_reason: str  # "stop" | "length" | "cancelled" | "error" (the stack could not be set)
    dropped_turns: int  # history messages left out by the context policy (see Engine.fit)
    adapters: tuple[tuple[str, float], ...] = ()  # the stack active while it decoded (what a log may claim)


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
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pool = AdapterPool(self._llm.model, [self._llm.ctx], self.info, verbose=verbose)
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._closed = False
        self._prompt_cached = 0  # leading KV tokens that came from prompt (multi-token) evaluation
        self.last: Completion | None = None

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

    def _reset_state(self) -> None:
        """Forget every evaluated token: Llama's prefix bookkeeping AND the KV memory's cells.

        The cells are marked empty (masked out of attention, as `seq_rm` in `_trim_cache` does); the
        buffers are not zeroed (data=False): that memset costs ~2 ms per 4k of n_ctx on every stack
        change and changes no result (tests compare against a fresh engine bit-for-bit)."""
        import llama_cpp

        self._llm.reset()
        self._prompt_cached = 0
        mem = llama_cpp.llama_get_memory(self._llm.ctx)
        if mem:
            llama_cpp.llama_memory_clear(mem, False)

    def _trim_cache(self, prompt: list[int]) -> None:
        """Reuse the cached prefix shared with `prompt`, but only tokens that were evaluated as part
        of a prompt, and leave at least 2 prompt tokens to evaluate.

        llama.cpp computes a 1-token batch through another kernel path whose logits differ (by up to
        ~0.5 on SmolLM2) from a multi-token batch's. `Llama.generate` would re-evaluate only the last
        token of a fully cached prompt, and generated tokens are decoded one at a time, so reusing
        either would make a reply depend on what happened to be cached. Batches of 2+ tokens give
        bit-identical results however they are split, so with this rule a reply depends only on
        (messages, params, adapter stack): the same as in a fresh engine.
        """
        import llama_cpp

        llm = self._llm
        cached = min(llm.n_tokens, self._prompt_cached)
        common = 0
        for a, b in zip(llm.input_ids[:cached].tolist(), prompt, strict=False):
            if a != b:
                break
            common += 1
        keep = min(common, len(prompt) - 2)
        mem = llama_cpp.llama_get_memory(llm.ctx)
        if keep <= 0 or not mem or not llama_cpp.llama_memory_seq_rm(mem, -1, keep, -1):
            self._reset_state()
        else:
            llm.n_tokens = keep
        self._prompt_cached = len(prompt)  # generate() evaluates the rest of the prompt as one batch

    def _piece(self, token: int) -> bytes:
        import llama_cpp

        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:  # piece longer than the buffer
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def reset(self) -> None:
        """Forget the cached conversation (a new chat). Replies never depend on it; this frees nothing
        but time on the next prompt."""
        with self._locked():
            self._reset_state()

    @property
    def n_ctx(self) -> int:
        return self._llm.n_ctx()

    # --- adapters -----------------------------------------------------------------------------

    def load_adapter(self, adapter_id: str, path: str | os.PathLike) -> AdapterInfo:
        """Load (once) and validate an adapter; it is not applied until `set_adapters` names it."""
        with self._locked():
            return self._pool.load(adapter_id, path)

    def unload_adapter(self, adapter_id: str) -> bool:
        """Free an adapter, removing it from the active stack first. True if the stack changed."""
        with self._locked():
            changed = self._pool.unload(adapter_id)
            if changed:
                self._reset_state()
            return changed

    def set_adapters(self, stack: Iterable[tuple[str, float]]) -> bool:
        """Apply [(id, scale), …] ([] = base). When it changed, the KV and prompt cache are dropped."""
        with self._locked():
            changed = self._pool.set_stack(stack)
            if changed:
                self._reset_state()
            return changed

    @property
    def adapters(self) -> list[tuple[str, float]]:
        """The active stack."""
        return self._pool.active

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

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenize(self.render(messages)))

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
    ) -> Iterator[str]:
        """Reply to `messages`, yielding text pieces; afterwards `.last` holds the `Completion`.

        Context errors (and an adapter not loaded) raise here, before the first piece. The engine lock
        is held from the first piece until the iterator ends or is closed: finish it, close() it, or set
        `cancel`. `adapters`: the stack to reply with, set under that same hold, so no other thread (a
        hot-reload, a background call) can change it in between; None keeps the active one. Either way
        `.last.adapters` is the stack the reply was decoded with."""
        params = params or GenParams()
        stack = None if adapters is None else list(adapters)
        if stack:  # checked again under the hold
            with self._locked():
                for adapter_id, _ in stack:
                    self._pool.info(adapter_id)
        kept, dropped = self.fit(messages, params.max_tokens)
        tokens = self.tokenize(self.render(kept))
        stops = tuple(dict.fromkeys(self.template.stop_strings + params.stop))
        return self._generate(tokens, params, stops, cancel, dropped, stack)

    def _generate(
        self,
        prompt: list[int],
        params: GenParams,
        stops: tuple[str, ...],
        cancel: threading.Event | None,
        dropped: int,
        stack: list[tuple[str, float]] | None = None,
    ) -> Iterator[str]:
        import llama_cpp

        t0 = time.perf_counter()
        llm = self._llm
        parts: list[str] = []
        n_sampled = n_out = 0
        t_first = t_last = None
        finish = "cancelled"  # what a close() from the consumer leaves
        with self._locked():
            try:
                if stack is not None and self._pool.set_stack(stack):
                    self._reset_state()
            except LLMError:  # e.g. unloaded since the check in stream(): nothing decoded, and .last says so
                self.last = Completion("", len(prompt), 0, 0.0, time.perf_counter() - t0, 0.0, "error", dropped,
                                       tuple(self._pool.active))
                raise
            applied = tuple(self._pool.active)
            self._trim_cache(prompt)
            llm.set_seed(params.seed if params.seed >= 0 else random.getrandbits(32))
            max_new = min(params.max_tokens, self.n_ctx - len(prompt))
            gen = llm.generate(
                prompt,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=MIN_P,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
            )
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            pending = ""
            longest_stop = max((len(s) for s in stops), default=0)
            try:
                while True:
                    if n_out >= max_new:
                        finish = "length"
                        break
                    if cancel is not None and cancel.is_set():
                        finish = "cancelled"
                        break
                    token = next(gen)
                    t_last = time.perf_counter()
                    t_first = t_first or t_last
                    n_sampled += 1
                    if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                        finish = "stop"
                        break
                    n_out += 1
                    pending += decoder.decode(self._piece(token))
                    if not pending:
                        continue  # inside a multi-byte character
                    emit, pending, hit = split_stop(pending, stops, longest_stop)
                    if emit:
                        parts.append(emit)
                        yield emit
                    if hit:
                        finish = "stop"
                        pending = ""
                        break
                if pending:  # a partial stop marker that never completed is ordinary text
                    parts.append(pending)
                    yield pending
            finally:
                gen.close()
                t_end = time.perf_counter()
                decode_s = (t_last - t_first) if t_first is not None and t_last is not None else 0.0
                self.last = Completion(
                    text="".join(parts),
                    prompt_tokens=len(prompt),
                    completion_tokens=n_out,
                    ttft_s=(t_first - t0) if t_first is not None else t_end - t0,
                    total_s=t_end - t0,
                    tok_per_s=(n_sampled - 1) / decode_s if n_sampled > 1 and decode_s > 0 else 0.0,
                    finish_reason=finish,
                    dropped_turns=dropped,
                    adapters=applied,
                )

    def generate_text(
        self, messages: Sequence[Message], params: GenParams | None = None, cancel: threading.Event | None = None
    ) -> str:
        """The whole reply as one string (for scripts and tests)."""
        return "".join(self.stream(messages, params, cancel))

    def logits(self, tokens: Sequence[int], all_positions: bool = False) -> np.ndarray:
        """Logits after `tokens` (float32, shape (n_vocab,), or (len, n_vocab) with all_positions),
        computed from an empty KV cache under the active stack: bit-for-bit reproducible."""
        import llama_cpp

        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("logits: no tokens")
        if len(tokens) > self.n_ctx:
            raise ContextError(f"logits: {len(tokens)} tokens do not fit the context of {self.n_ctx}")
        with self._locked():
            self._reset_state()
            llm, rows = self._llm, []
            try:
                for i in range(0, len(tokens), self.n_batch):
                    chunk = tokens[i : i + self.n_batch]
                    llm._batch.set_batch(chunk, n_past=i, logits_all=all_positions)
                    llm._ctx.decode(llm._batch)
                    if all_positions:
                        ptr = llama_cpp.llama_get_logits(llm.ctx)
                        rows.append(np.ctypeslib.as_array(ptr, shape=(len(chunk), self._n_vocab)).copy())
                if all_positions:
                    return np.concatenate(rows)
                ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
                return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()
            finally:
                self._reset_state()  # the next reply starts clean too (no half-known prefix)

    def close(self) -> None:
        """Free adapters, then the context and model. Idempotent."""
        if self._closed:
            return
        with self._locked():
            self._pool.close()
            self._llm.close()
            self._closed = True

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

