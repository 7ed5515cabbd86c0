"""Which server backend a URL gets: `[backend] kind` in config.toml, or, with "auto", the server's own
word: vLLM's `/v1/models` says `"owned_by": "vllm"`, llama-server's says `"llamacpp"`."""

from __future__ import annotations

import os

from .http import Http

KINDS = ("auto", "llama-server", "vllm")


def detect_kind(http: Http) -> str:
    """"vllm" when the server's `/v1/models` says vLLM owns its model, else "llama-server"."""
    models = http.get("/v1/models", timeout=min(30.0, http.timeout))
    owners = {m.get("owned_by") for m in (models or {}).get("data") or [] if isinstance(m, dict)}
    return "vllm" if "vllm" in owners else "llama-server"


def open_backend(url: str, model_path: str | os.PathLike, api_key: str | None = None, timeout: float = 600.0,
                 kind: str = "auto"):
    """A `LlamaServerBackend` or a `VllmBackend` on `url` for the base model at `model_path`."""
    if kind not in KINDS:
        raise ValueError(f"backend kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = detect_kind(Http(url, api_key, timeout))
    if kind == "vllm":
        from .vllm import VllmBackend

        return VllmBackend(url, model_path, api_key=api_key, timeout=timeout)
    from .llama_server import LlamaServerBackend

    return LlamaServerBackend(url, model_path, api_key=api_key, timeout=timeout)
