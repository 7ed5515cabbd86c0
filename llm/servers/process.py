"""`ServerProcess`: a llama-server Home starts, watches and stops (for `home serve` and the tests).

Started with the base model and every adapter file at scale 0 (`--lora … --lora-init-without-apply`),
one slot (a personal assistant has one conversation at a time: the whole context is that slot's), on
127.0.0.1 unless told otherwise, flash attention off as in Home's in-process engine (llama-server's
`auto` turns it on, and its other rounding changed greedy replies of the default model within a few
tokens: the same settings give the same tokens on both sides). Ready when `GET /health` answers 200; a server that exits first is
reported with the last lines it printed. Stopped with SIGINT (llama-server's own clean shutdown), then
SIGKILL after a grace period. `restart(files)` is how a newly registered adapter reaches it: llama-server
cannot add a LoRA to a running model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .http import Http, ServerError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
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
        self.binary = Path(binary)
        self.model = Path(model)
        self.adapters = [Path(a) for a in adapters]
        self.host = host
        self.port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.api_key = api_key
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.extra = list(extra)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile(prefix="llama-server-")  # what it printed, for errors

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

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

    def start(self) -> ServerProcess:
        if not self.binary.is_file():
            raise ServerError(f"{self.binary}: no llama-server there (python -m llm.servers.build builds one)")
        self._log.seek(0)
        self._log.truncate()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        probe = Http(self.url, self.api_key, timeout=5, connect_timeout=2)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ServerError(f"llama-server exited ({code}) before it was ready: {self.output_tail()}")
            try:
                probe.get("/health")
                return
            except ServerError:
                time.sleep(0.2)
        self.stop()
        raise ServerError(f"llama-server at {self.url} not ready within {self.ready_timeout:g} s: {self.output_tail()}")

    def output_tail(self, lines: int = 3) -> str:
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:]) or "no output"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGINT (its clean shutdown), SIGKILL after `grace` seconds. Returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def restart(self, adapters: Sequence[str | os.PathLike]) -> None:
        """Stop and start again on the same port with `adapters` (their ids on the server renumber)."""
        self.stop()
        self.adapters = [Path(a) for a in adapters]
        self.start()

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
