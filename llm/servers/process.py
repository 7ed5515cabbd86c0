"""`ServerProcess`: a llama-server Home starts, watches and stops (for `home serve` and the tests).

Started with the base model and every adapter file at scale 0 (`--lora … --lora-init-without-apply`),
two slots over one unified KV pool, on 127.0.0.1 unless told otherwise, flash attention off as in
Home's in-process engine (llama-server's `auto` turns it on, and its other rounding changed greedy
replies of the default model within a few tokens: the same settings give the same tokens on both
sides). Start, readiness and stop are `ManagedServer`'s (llm/servers/managed.py). `restart(files)` is
how a newly registered adapter reaches it: llama-server cannot add a LoRA to a running model.

Why two slots: a personal assistant has one conversation, but Home also makes calls aside (a gestalt
distillation, a query rewrite, a session summary). In one slot each such call moves the chat's KV out
to the server's host-RAM prompt cache and back (measured: ~0.1 s a call for SmolLM2's 150 MiB at 6.7k
tokens on 2 cores; it grows with the model and the context), and where that cache cannot hold it
(`--cache-ram`, 8 GiB by default, or 0) the next turn re-reads the whole chat (bench/server_aside.py).
Calls aside name slot 0 (LlamaServerBackend), the chat takes the other. The pool is `n_ctx + ASIDE_CTX`
cells, each slot capped at `n_ctx` (`--kv-unified-per-slot`), so the chat keeps its whole context; a
call aside that outgrows the reserve makes the server purge the idle chat slot (re-read next turn),
never fails a turn (tests/test_llm_server_aside.py). `--no-cache-idle-slots`: with a unified pool the
server would otherwise move every idle slot, the chat's, to its RAM cache at each new request. A
llama-server without these flags (an older one on PATH) gets one slot, as before.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .http import ServerError
from .managed import ManagedServer, free_port

__all__ = ["ASIDE_CTX", "ServerProcess", "free_port"]

ASIDE_CTX = 1024  # KV cells reserved beside the chat's for calls aside (a distillation prompt is ~160)
SLOT_FLAGS = ("--kv-unified-per-slot", "--no-cache-idle-slots")  # what the two-slot layout needs


@functools.lru_cache(maxsize=8)
def has_flags(binary: str, flags: tuple[str, ...] = SLOT_FLAGS) -> bool:
    """Whether `binary --help` lists every one of `flags` (an older llama-server on PATH may not)."""
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    text = out.stdout + out.stderr
    return all(f in text for f in flags)


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
               "--flash-attn", "off", *self.slot_args()]
        if self.n_threads:
            cmd += ["--threads", str(self.n_threads), "--threads-batch", str(self.n_threads)]
        for a in self.adapters:
            cmd += ["--lora", str(a)]
        if self.adapters:
            cmd.append("--lora-init-without-apply")
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra

    def slot_args(self) -> list[str]:
        """Two slots (the chat's, the calls aside) over one pool, each slot `n_ctx`; else one slot."""
        if not has_flags(str(self.binary)):
            return ["-c", str(self.n_ctx), "--parallel", "1"]
        return ["-c", str(self.n_ctx + ASIDE_CTX), "--parallel", "2", "--kv-unified",
                "--kv-unified-per-slot", str(self.n_ctx), "--no-cache-idle-slots"]

    def _check(self) -> None:
        if not self.binary.is_file():
            raise ServerError(f"{self.binary}: no llama-server there (python -m llm.servers.build builds one)")

    def restart(self, adapters: Sequence[str | os.PathLike]) -> None:
        """Stop and start again on the same port with `adapters` (their ids on the server renumber)."""
        self.stop()
        self.adapters = [Path(a) for a in adapters]
        self.start()
