"""The chat's cached KV prefix, kept across a call made aside (a gestalt distillation, a session summary,
a search-query rewrite) that would otherwise evict it.

Why: those calls share the engine's one context. Each evaluated its own short prompt over the chat's
cached tokens, so the next turn of the chat re-read the whole conversation: with gestalts distilled every
10 turns (or a backlog after a resume) a 4k-token chat paid ~15 s of prompt evaluation on 2 CPU cores
instead of ~0.5 s. llama.cpp copies one sequence's KV cells out (`llama_state_seq_get_data`) and back;
the cells come back bit for bit, so a reply after an aside call is the one a fresh engine gives (tests).
A prefix too short to matter, or too large to copy cheaply, is not kept (then it is re-read, as before).

The copy goes back lazily (`Aside`, kept by the engine): a distillation backlog (50 turns after a resume, then
a session summary) is one run of calls aside, and copying the cells (up to 1 GiB) out and back around each
of them is work only the next chat turn needs, once. So: one save before the run, no restore inside it
(each call also reuses the last one's prompt, the distillation's instructions, which a restore evicted),
and one restore at the next chat call, only when its prompt starts with at least MIN_TOKENS of the saved
tokens (`shared`); otherwise the copy is dropped. The price: the copy stays in host memory until then.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_TOKENS = 256  # shorter prefixes re-read in well under the time of a copy on any machine
MAX_BYTES = 1 << 30  # 1 GiB of KV (8k tokens of an 8B model at f16): a host copy, briefly, is the cost


@dataclass
class SavedPrefix:
    data: Any  # ctypes c_uint8 array: seq 0's cells
    size: int
    ids: np.ndarray  # llama-cpp-python's input_ids for those cells
    n_tokens: int
    prompt_cached: int  # PromptCache's count: how many leading tokens came from prompt evaluation


@dataclass
class Copies:
    """What the copies have cost so far (the engine's `aside_copies`; bench/long_session.py prints it)."""

    saves: int = 0
    restores: int = 0
    drops: int = 0  # saved copies let go unrestored: a chat prompt that shared too little, a reset, a new stack
    bytes: int = 0  # copied out plus copied back in


@dataclass
class Aside:
    """The chat put aside, from the first call of a run of calls aside to the next chat call: its cells
    (None: not worth keeping) and the stack they were computed under, which is the chat's stack meanwhile
    (the pool holds the calls aside's own)."""

    saved: SavedPrefix | None
    stack: list[tuple[str, float]]


def shared(saved: SavedPrefix, prompt: list[int]) -> int:
    """Prompt tokens the saved cells would spare a reply: its common prefix with them, under
    `PromptCache.trim`'s rule (prompt-evaluated tokens only, 2 prompt tokens left to evaluate)."""
    n = min(saved.n_tokens, saved.prompt_cached, len(prompt))
    diff = np.flatnonzero(saved.ids[:n] != np.asarray(prompt[:n], dtype=saved.ids.dtype))
    common = int(diff[0]) if diff.size else n
    return max(0, min(common, len(prompt) - 2))


def save(llm: Any, prompt_cached: int) -> SavedPrefix | None:
    """seq 0's KV cells and their token bookkeeping, or None when not worth keeping."""
    import llama_cpp

    n = llm.n_tokens
    if min(n, prompt_cached) < MIN_TOKENS:
        return None
    size = int(llama_cpp.llama_state_seq_get_size(llm.ctx, 0))
    if size <= 0 or size > MAX_BYTES:
        return None
    data = (ctypes.c_uint8 * size)()
    if int(llama_cpp.llama_state_seq_get_data(llm.ctx, data, size, 0)) != size:
        return None
    return SavedPrefix(data, size, np.array(llm.input_ids[:n]), n, prompt_cached)


def restore(llm: Any, saved: SavedPrefix) -> int | None:
    """Put the saved cells back into an emptied context; the prompt-cached count, or None when llama.cpp
    refused them (the caller then starts clean)."""
    import llama_cpp

    if int(llama_cpp.llama_state_seq_set_data(llm.ctx, saved.data, saved.size, 0)) == 0:
        return None
    llm.input_ids[: saved.n_tokens] = saved.ids
    llm.n_tokens = saved.n_tokens
    return saved.prompt_cached
