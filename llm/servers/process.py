"""`ServerProcess`: a llama-server Home starts, watches and stops (for `home serve` and the tests).

Started with the base model and every adapter file at scale 0 (`--lora … --lora-init-without-apply`),
one slot (a personal assistant has one conversation at a time: the whole context is that slot's), on
127.0.0.1 unless told otherwise, flash attention off as in Home's in-process engine (llama-server's
`auto` turns it on, and its other rounding changed greedy replies of the default model within a few
tokens: the same settings give the same tokens on both sides). Start, readiness and stop are
`ManagedServer`'s (llm/servers/managed.py). `restart(files)` is how a newly registered adapter reaches
it: llama-server cannot add a LoRA to a running model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .http import ServerError
from .managed import ManagedServer, free_port

__all__ = ["ServerProcess", "free_port"]


class ServerProcess(ManagedServer):
    name = "llama-server"

    def __init__(
        self,
        binary: str | os.PathLike,
        model: str | os.PathLike,
        adapters: Sequence[str | os.PathLike] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        extra: Sequence[str] = (),
        ready_timeout: float = 120.0,
    ) -> None:
        super().__init__(host, port, api_key, ready_timeout)
        self.binary = Path(binary)
        self.model = Path(model)
        self.adapters = [Path(a) for a in adapters]
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.extra = list(extra)

    def command(self) -> list[str]:
        cmd = [str(self.binary), "-m", str(self.model), "--host", self.host, "--port", str(self.port),
               "-c", str(self.n_ctx), "--parallel", "1", "--flash-attn", "off"]
        if self.n_threads:
            cmd += ["--threads", str(self.n_threads), "--threads-batch", str(self.n_threads)]
        for a in self.adapters:
            cmd += ["--lora", str(a)]
        if self.adapters:
            cmd.append("--lora-init-without-apply")
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra

    def _check(self) -> None:
        if not self.binary.is_file():
            raise ServerError(f"{self.binary}: no llama-server there (python -m llm.servers.build builds one)")

    def restart(self, adapters: Sequence[str | os.PathLike]) -> None:
        """Stop and start again on the same port with `adapters` (their ids on the server renumber)."""
        self.stop()
        self.adapters = [Path(a) for a in adapters]
        self.start()
