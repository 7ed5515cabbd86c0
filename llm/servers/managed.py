"""`ManagedServer`: what a server process Home starts itself needs, whichever server it is (llama-server
in `home serve`, vLLM in the tests and benches): a free port, the output kept for error lines, ready when
`GET /health` answers, a server that exits first reported with what it printed, stopped with SIGINT (each
server's clean shutdown) and then SIGKILL of its process group (vLLM's engine core is a child process;
llama-server has none, and the same kill ends it). Started from the main thread on Linux, the server is
tied to Home's life (`tie_to_parent`): a `home serve` killed with SIGKILL used to leave its llama-server
running, holding the port and the model's memory (GBs on an 8B) until found by hand. Subclasses say how
it is started (`command`, `environment`) and check what it needs (`_check`)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from .http import Http, ServerError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


PR_SET_PDEATHSIG = 1


def tie_to_parent() -> Callable[[], None] | None:
    """A `preexec_fn` asking the kernel to SIGTERM the child when this process dies (Linux), or None.

    Only from the main thread: the kernel sends it when the *thread* that forked the child ends (the
    trainer's worker polls its parent instead for that reason, trainer/worker/parent_watch.py). A parent
    that died between the fork and the prctl is caught by comparing the parent pid after it."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return tie


class ManagedServer(ABC):
    name = "server"  # in its error lines
    grace_s = 10.0  # from SIGINT to SIGKILL
    poll_s = 0.2  # between /health probes

    def __init__(self, host: str, port: int, api_key: str | None, ready_timeout: float) -> None:
        self.host = host
        self.port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.api_key = api_key
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.started_s: float | None = None  # seconds from launch to ready, the first time
        self._t0 = 0.0
        self._log = tempfile.TemporaryFile(prefix=f"{self.name.split()[0]}-")  # what it printed, for errors

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    def environment(self) -> dict[str, str] | None:
        return None  # this process's own

    def _check(self) -> None:  # noqa: B027 - a hook: most servers need nothing checked
        """Raise ServerError, in one line, when the server cannot be started at all."""

    def start(self) -> ManagedServer:
        return self.launch().wait_ready()

    def launch(self) -> ManagedServer:
        """Start the server and return at once (vLLM takes a minute or more: do other work, then `wait_ready`)."""
        self._check()
        self._log.seek(0)
        self._log.truncate()
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.environment(), start_new_session=True,
                                     preexec_fn=tie_to_parent())
        return self

    def wait_ready(self) -> ManagedServer:
        probe = Http(self.url, self.api_key, timeout=5, connect_timeout=2)
        deadline = self._t0 + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                self.proc = None
                raise ServerError(f"{self.name} exited ({code}) before it was ready: {self.output_tail()}")
            try:
                probe.get("/health")
                self.started_s = self.started_s or time.monotonic() - self._t0
                return self
            except ServerError:
                time.sleep(self.poll_s)
        self.stop()
        raise ServerError(f"{self.name} at {self.url} not ready within {self.ready_timeout:g} s: {self.output_tail()}")

    def output_tail(self, lines: int = 3) -> str:
        """The last lines it printed that say something (an error, not a Python traceback's frames)."""
        self._log.flush()
        self._log.seek(0)
        text = [ln.strip() for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        said = [ln for ln in text if not ln.startswith(("File ", "Traceback", "^", "~"))]
        return " | ".join(said[-lines:]) or "no output"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float | None = None) -> int | None:
        """SIGINT, then SIGKILL of the whole group after `grace` seconds. Returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(self.grace_s if grace is None else grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left in its group
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        return proc.returncode

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
