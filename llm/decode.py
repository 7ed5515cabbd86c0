"""One reply's token loop and the KV prefix it may reuse; the engine calls both under its lock.

Why our own loop instead of `create_completion`: one detokenised piece per token with an incremental
UTF-8 decoder and stop-string hold-back (`create_completion` re-detokenises the whole reply each token).
"""

from __future__ import annotations

import codecs
import ctypes
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import kv_aside
from .kv_aside import SavedPrefix
from .params import GenParams
from .stops import split_stop

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
    cached_tokens: int = 0  # prompt tokens taken from the KV cache, not evaluated (a chat's earlier turns)


class PromptCache:
    """Which evaluated tokens a reply may reuse. Resets clear Llama's prefix bookkeeping AND the KV cells."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self._prompt_cached = 0  # leading KV tokens that came from prompt (multi-token) evaluation
        self.reused = 0  # prompt tokens the last reply took from the cache
        self.copies = kv_aside.Copies()  # what keeping the chat's prefix across calls aside cost

    def clear(self) -> None:
        """Forget every evaluated token. The cells are marked empty (masked out of attention, as `seq_rm`
        in `trim` does); the buffers are not zeroed (data=False): that memset costs ~2 ms per 4k of
        n_ctx on every stack change and changes no result (tests compare against a fresh engine
        bit-for-bit)."""
        import llama_cpp

        self._llm.reset()
        self._prompt_cached = 0
        mem = llama_cpp.llama_get_memory(self._llm.ctx)
        if mem:
            llama_cpp.llama_memory_clear(mem, False)

    def save(self) -> SavedPrefix | None:
        """The cached prefix, to put back after calls aside (llm/kv_aside.py); None: not worth keeping."""
        saved = kv_aside.save(self._llm, self._prompt_cached)
        if saved is not None:
            self.copies.saves += 1
            self.copies.bytes += saved.size
        return saved

    def restore(self, saved: SavedPrefix) -> None:
        """Back to the saved prefix, as if the calls aside never ran."""
        self.clear()
        cached = kv_aside.restore(self._llm, saved)
        self.copies.restores += 1
        self.copies.bytes += saved.size
        if cached is None:
            self.clear()
        else:
            self._prompt_cached = cached

    def drop(self, saved: SavedPrefix | None) -> None:
        """Let a saved prefix go unrestored (counted: the bench and tests tell lazy from eager by it)."""
        if saved is not None:
            self.copies.drops += 1

    def trim(self, prompt: list[int]) -> None:
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
            self.clear()
            self.reused = 0
        else:
            llm.n_tokens = keep
            self.reused = keep
        self._prompt_cached = len(prompt)  # generate() evaluates the rest of the prompt as one batch


class Pieces:
    """token → its bytes through llama.cpp's vocabulary, one reused buffer."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._buf = ctypes.create_string_buffer(256)

    def __call__(self, token: int) -> bytes:
        import llama_cpp

        buf = self._buf
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:  # piece longer than the buffer
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]


@dataclass
class Tally:
    """What the loop did so far; read after it ends, however it ended (a consumer's close() included)."""

    t0: float
    parts: list[str] = field(default_factory=list)
    n_sampled: int = 0
    n_out: int = 0
    t_first: float | None = None
    t_last: float | None = None
    finish: str = "cancelled"  # what a close() from the consumer leaves

    def completion(self, prompt_tokens: int, dropped: int, adapters: tuple[tuple[str, float], ...],
                   cached: int = 0) -> Completion:
        t_end = time.perf_counter()
        first, last = self.t_first, self.t_last
        decode_s = (last - first) if first is not None and last is not None else 0.0
        return Completion(
            text="".join(self.parts),
            prompt_tokens=prompt_tokens,
            completion_tokens=self.n_out,
            ttft_s=(first - self.t0) if first is not None else t_end - self.t0,
            total_s=t_end - self.t0,
            tok_per_s=(self.n_sampled - 1) / decode_s if self.n_sampled > 1 and decode_s > 0 else 0.0,
            finish_reason=self.finish,
            dropped_turns=dropped,
            adapters=adapters,
            cached_tokens=cached,
        )


def decode(
    llm: Any,
    vocab: Any,
    pieces: Pieces,
    prompt: list[int],
    params: GenParams,
    stops: tuple[str, ...],
    cancel: threading.Event | None,
    max_new: int,
    tally: Tally,
) -> Iterator[str]:
    """Sample up to `max_new` tokens after `prompt` (already trimmed against the cache), yielding text
    as soon as it cannot be part of a stop string; `tally` records what happened."""
    import llama_cpp

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
            if tally.n_out >= max_new:
                tally.finish = "length"
                break
            if cancel is not None and cancel.is_set():
                tally.finish = "cancelled"
                break
            token = next(gen)
            tally.t_last = time.perf_counter()
            tally.t_first = tally.t_first or tally.t_last
            tally.n_sampled += 1
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                tally.finish = "stop"
                break
            tally.n_out += 1
            pending += decoder.decode(pieces(token))
            if not pending:
                continue  # inside a multi-byte character
            emit, pending, hit = split_stop(pending, stops, longest_stop)
            if emit:
                tally.parts.append(emit)
                yield emit
            if hit:
                tally.finish = "stop"
                pending = ""
                break
        if pending:  # a partial stop marker that never completed is ordinary text
            tally.parts.append(pending)
            yield pending
    finally:
        gen.close()


def batch_logits(llm: Any, tokens: list[int], n_batch: int, n_vocab: int, all_positions: bool,
                 first: int = 0) -> Any:
    """Logits after `tokens`, evaluated from position 0 in batches of `n_batch` (the caller clears the
    cache before and after). With `all_positions`, rows for positions `first`… only: llama.cpp computes
    no output (last layer's rows, the vocabulary projection) for the others, which is most of the cost
    of scoring a short reply after a long context."""
    import llama_cpp
    import numpy as np

    rows = []
    for i in range(0, len(tokens), n_batch):
        chunk = tokens[i : i + n_batch]
        llm._batch.set_batch(chunk, n_past=i, logits_all=all_positions)
        wanted = len(chunk)
        if all_positions and first > i:
            flags = llm._batch.batch.logits
            for j in range(len(chunk)):
                flags[j] = i + j >= first
            wanted = max(0, i + len(chunk) - first)
        llm._ctx.decode(llm._batch)
        if all_positions and wanted:
            ptr = llama_cpp.llama_get_logits(llm.ctx)
            rows.append(np.ctypeslib.as_array(ptr, shape=(wanted, n_vocab)).copy())
    if all_positions:
        return np.concatenate(rows) if rows else np.zeros((0, n_vocab), dtype=np.float32)
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()
