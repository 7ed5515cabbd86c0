"""What every command needs, resolved once and lazily: the vault, its config, the model, the engine.

Lazy so that `home personas list` never loads a model and `home --help` never touches the vault.
"""

from __future__ import annotations

import argparse
from functools import cached_property
from pathlib import Path

from vault.config import Config, load_config
from vault.layout import Vault, resolve_root
from vault.manifest import Manifest, ManifestStore


class Context:
    def __init__(self, args: argparse.Namespace):
        self.args = args

    @cached_property
    def vault(self) -> Vault:
        return Vault.open(resolve_root(getattr(self.args, "vault", None)))

    @cached_property
    def config(self) -> Config:
        return load_config(self.vault)

    @property
    def user(self) -> str:
        return getattr(self.args, "user", None) or self.config.user

    @property
    def manifests(self) -> ManifestStore:
        return ManifestStore(self.vault)

    def manifest(self) -> Manifest:
        return self.manifests.read()

    @cached_property
    def model_path(self) -> Path:
        from llm.errors import ModelError
        from llm.models import resolve_model

        flag = getattr(self.args, "model", None)
        ref = flag or self.config.model or None
        try:
            return resolve_model(ref)
        except ModelError as exc:
            if flag or ref is None:
                raise
            raise ModelError(f"{self.vault.config_path}: model: {exc}") from None  # say where "high" came from

    @cached_property
    def model_info(self):
        from llm.gguf_meta import read_model_info

        return read_model_info(self.model_path)

    @property
    def backend_url(self) -> str:
        """`--backend URL` > config `[backend] url`; "" = the model runs in this process."""
        return getattr(self.args, "backend", None) or self.config.backend.url

    def backend(self, n_ctx: int | None = None):
        """What chats reply through: with a backend URL a `LlamaServerBackend` or a `VllmBackend` (the
        model in that server, its kind from `[backend] kind` or asked of the server; same protocol,
        llm/backend.py), else the in-process `engine()`. Commands that need the model's logits (eval,
        drift) call `engine()` and so always run the model here."""
        if not self.backend_url:
            return self.engine(n_ctx)
        if "_backend" not in self.__dict__:
            import os

            from llm.servers.select import open_backend

            cfg = self.config.backend
            key = os.environ.get("HOME_API_KEY") or cfg.api_key or None
            self._backend = open_backend(self.backend_url, self.model_path, api_key=key, timeout=cfg.timeout,
                                         kind=cfg.kind)
            if hasattr(self._backend, "fetch"):  # a llama-server: the vault's `home serve` adds older versions
                from home.serve_link import fetcher

                self._backend.fetch = fetcher(self.vault, self.backend_url, key)
        return self._backend

    def engine(self, n_ctx: int | None = None):
        """Load the model once per process; adapters come and go on it afterwards."""
        if "_engine" not in self.__dict__:
            from llm.engine import Engine

            ctx = self.config.context
            self._engine = Engine(
                self.model_path,
                n_ctx=n_ctx or ctx.n_ctx,
                n_threads=ctx.n_threads or None,
                gpu_layers=self.gpu_layers,
            )
        return self._engine

    @property
    def gpu_layers(self) -> int | None:
        """`--gpu-layers` > config `[context] gpu_layers`; -1 there means "all when llama.cpp can
        offload", so it becomes None: the engine's own default, 0 on a CPU build."""
        wanted = getattr(self.args, "gpu_layers", None)
        if wanted is None:
            wanted = self.config.context.gpu_layers
        return None if wanted == -1 else wanted
