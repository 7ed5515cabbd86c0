"""The `Backend` protocol: what the app needs from whatever produces replies.

`Engine` (local llama.cpp) satisfies it, and so do the server backends over an OpenAI-compatible API
(llm/servers/remote.py: the stack kept on Home's side, the streamed reply): `LlamaServerBackend` maps a
stack to llama-server's per-request `lora: [{id, scale}]`, `VllmBackend` serves a stack's top adapter as
the request's `model`; `info` is the local GGUF's metadata either way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .engine import Completion
from .gguf_meta import AdapterInfo, ModelInfo
from .params import GenParams


@runtime_checkable
class Backend(Protocol):
    """Reply generation with switchable adapter stacks; `last` describes the most recent reply."""

    info: ModelInfo
    last: Completion | None

    def load_adapter(self, adapter_id: str, path: str | os.PathLike) -> AdapterInfo: ...

    def unload_adapter(self, adapter_id: str) -> bool: ...

    def set_adapters(self, stack: Iterable[tuple[str, float]]) -> bool: ...

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: GenParams | None = None,
        cancel: threading.Event | None = None,
        adapters: Iterable[tuple[str, float]] | None = None,  # set with the decode, atomically
        aside: bool = False,  # a call beside the chat: keep the chat's cached prefix where the backend can
    ) -> Iterator[str]: ...

    def close(self) -> None: ...
