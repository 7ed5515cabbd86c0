"""The adapter pool: LoRA adapters loaded once into a llama.cpp model, stacked per context at will.

llama.cpp keeps loaded adapters attached to the model (`llama_adapter_lora_init`); which of them a
context applies, with what scales, is set in one call (`llama_set_adapters_lora`). Switching a stack is
therefore a pointer swap (tens of microseconds), not a reload. The pool validates every file with
`gguf_meta` first, so a foreign or broken adapter is refused with a message naming the file instead of
reaching llama.cpp. It does not touch the KV cache: the engine resets it when `set_stack` says changed.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AdapterError
from .gguf_meta import AdapterInfo, ModelInfo, check_adapter_fits, read_adapter_info


@dataclass(frozen=True)
class LoadedAdapter:
    id: str
    path: Path
    info: AdapterInfo
    handle: Any  # what llama_adapter_lora_init returned: a non-null ctypes POINTER(c_void_p)


@contextmanager
def _quiet_llama_log(verbose: bool):
    """Hold back llama.cpp's ERROR lines (we raise our own message) without touching file descriptors,
    which a running TUI owns. llama-cpp-python's log callback prints only if its logger level allows."""
    logger = logging.getLogger("llama-cpp-python")
    old = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(old)


class AdapterPool:
    """Adapters loaded into one llama model, applied to its context(s). Not thread-safe: the engine locks."""

    def __init__(
        self, model: Any, contexts: Sequence[Any], model_info: ModelInfo, verbose: bool = False
    ) -> None:
        self._model = model  # llama_model_p
        self._contexts = list(contexts)  # llama_context_p, each gets the same stack
        self._info = model_info
        self._verbose = verbose
        self._loaded: dict[str, LoadedAdapter] = {}
        self._active: list[tuple[str, float]] = []

    @property
    def loaded(self) -> dict[str, Path]:
        """id → file of every adapter held in memory."""
        return {k: v.path for k, v in self._loaded.items()}

    def path_of(self, adapter_id: str) -> Path | None:
        """The file `adapter_id` was loaded from, None when it is not loaded (one dict lookup: safe
        without the engine's lock)."""
        entry = self._loaded.get(adapter_id)
        return entry.path if entry is not None else None

    @property
    def active(self) -> list[tuple[str, float]]:
        """The stack applied now, as [(id, scale), …] in the order it was set."""
        return list(self._active)

    def info(self, adapter_id: str) -> AdapterInfo:
        return self._get(adapter_id).info

    def _get(self, adapter_id: str) -> LoadedAdapter:
        try:
            return self._loaded[adapter_id]
        except KeyError:
            known = ", ".join(sorted(self._loaded)) or "none"
            raise AdapterError(f"adapter {adapter_id!r} is not loaded (loaded: {known})") from None

    def load(self, adapter_id: str, path: str | os.PathLike) -> AdapterInfo:
        """Validate and load `path` under `adapter_id`; loading the same id and file again is a no-op."""
        import llama_cpp

        path = Path(path).expanduser().resolve()
        have = self._loaded.get(adapter_id)
        if have is not None:
            if have.path == path:
                return have.info
            raise AdapterError(
                f"adapter id {adapter_id!r} is already loaded from {have.path}; unload it before loading {path}"
            )
        info = read_adapter_info(path)
        check_adapter_fits(self._info, info, path)
        with _quiet_llama_log(self._verbose):
            handle = llama_cpp.llama_adapter_lora_init(self._model, str(path).encode("utf-8"))
        if not handle:  # null pointer: llama.cpp refused it after all (its reason went to its log)
            raise AdapterError(f"{path}: llama.cpp could not load this LoRA (run with verbose for its log)")
        self._loaded[adapter_id] = LoadedAdapter(adapter_id, path, info, handle)
        return info

    def unload(self, adapter_id: str) -> bool:
        """Drop an adapter: take it out of the active stack first, then free it. True if the stack changed."""
        import llama_cpp

        entry = self._get(adapter_id)
        changed = False
        if any(i == adapter_id for i, _ in self._active):
            changed = self.set_stack([(i, s) for i, s in self._active if i != adapter_id])
        del self._loaded[adapter_id]
        llama_cpp.llama_adapter_lora_free(entry.handle)
        return changed

    def set_stack(self, stack: Iterable[tuple[str, float]]) -> bool:
        """Apply exactly this stack ([(id, scale), …]; [] = base model). True when it differs from before."""
        import llama_cpp

        new: list[tuple[str, float]] = []
        for item in stack:
            try:
                adapter_id, scale = item
                scale = float(scale)
            except (TypeError, ValueError):
                raise AdapterError(f"adapter stack entry {item!r}: expected (id, scale)") from None
            if not math.isfinite(scale):
                raise AdapterError(f"adapter {adapter_id!r}: scale must be a finite number, got {scale}")
            if any(i == adapter_id for i, _ in new):
                raise AdapterError(f"adapter {adapter_id!r} appears twice in the stack")
            self._get(adapter_id)
            new.append((adapter_id, scale))
        if new == self._active:
            return False
        n = len(new)
        if n:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*(self._loaded[i].handle for i, _ in new))
            scales = (ctypes.c_float * n)(*(s for _, s in new))
        for ctx in self._contexts:
            rc = llama_cpp.llama_set_adapters_lora(ctx, handles, n, scales) if n else (
                llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
            )
            if rc != 0:
                raise AdapterError(f"llama.cpp refused the adapter stack {new} (code {rc})")
        self._active = new
        return True

    def close(self) -> None:
        """Clear every context's stack and free all adapters. Call before the model is freed."""
        import llama_cpp

        if self._active:
            for ctx in self._contexts:
                llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
            self._active = []
        for entry in self._loaded.values():
            llama_cpp.llama_adapter_lora_free(entry.handle)
        self._loaded.clear()
