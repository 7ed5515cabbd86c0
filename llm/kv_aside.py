"""The chat's cached KV prefix, kept across a call made aside (a gestalt distillation, a session summary,
a search-query rewrite) that would otherwise evict it.

Why: those calls share the engine's one context. Each evaluated its own short prompt over the chat's
cached tokens, so the next turn of the chat re-read the whole conversation: with gestalts distilled every
10 turns (or a backlog after a resume) a 4k-token chat paid ~15 s of prompt evaluation on 2 CPU cores
instead of ~0.5 s. llama.cpp copies one sequence's KV cells out (`llama_state_seq_get_data`) and back;
the cells come back bit for bit, so a reply after an aside call is the one a fresh engine gives (tests).
A prefix too short to matter, or too large to copy cheaply, is not kept (then it is re-read, as before).
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
