"""A BERT sentence encoder in plain numpy, for the default memory embedder (all-MiniLM-L6-v2).

Why not sentence-transformers: importing it (torch, transformers) costs ~7 s before the first query,
and its per-call overhead makes one short query ~20 ms on a laptop CPU; this is six small matmul
layers, so numpy answers a query in a few ms and imports in a fraction of a second. The vectors match
sentence-transformers' to float32 rounding (tests/test_vault_embedder.py checks it), so a store indexed
by either is searchable by the other.

Reads a sentence-transformers folder holding a BERT `model.safetensors`, `config.json`, `tokenizer.json`
and mean pooling; anything else is refused so the caller can fall back to sentence-transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .blas import one_blas_thread
from .errors import VaultError


class UnsupportedModel(VaultError):
    """The folder is not a plain BERT + mean-pooling model this encoder can run."""


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # exact (erf) GELU, as BERT's "gelu"

    return 0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))


def pad_batch(batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids right-padded with 0 to the longest row, and the mask of real tokens (1.0)."""
    n, t = len(batch), max(len(ids) for ids in batch)
    ids = np.zeros((n, t), dtype=np.int64)
    mask = np.zeros((n, t), dtype=np.float32)
    for i, row in enumerate(batch):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1.0
    return ids, mask


class NumpyBert:
    """Mean-pooled, L2-normalised BERT sentence vectors (float32)."""

    def __init__(self, path: str | Path, name: str | None = None, batch_size: int = 32) -> None:
        one_blas_thread()
        path = Path(path)
        self.path = path
        self.name = name or str(path)
        self.batch_size = batch_size
        cfg = self._read_config(path)
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer

            w = load_file(str(path / "model.safetensors"))
            self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # corrupt weights or tokenizer: one line
            raise VaultError(f"{path}: cannot load the embedding model ({type(exc).__name__}: {exc})") from None
        self._tok.no_padding()
        self._tok.enable_truncation(self._max_len)
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
        get = lambda k: np.ascontiguousarray(w[prefix + k], dtype=np.float32)  # noqa: E731
        self._eps = float(cfg.get("layer_norm_eps", 1e-12))
        self._heads = int(cfg["num_attention_heads"])
        self._word = get("embeddings.word_embeddings.weight")
        self._pos = get("embeddings.position_embeddings.weight")
        self._type0 = get("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self._layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            q, k, v = (get(p + f"attention.self.{n}.weight") for n in ("query", "key", "value"))
            qb, kb, vb = (get(p + f"attention.self.{n}.bias") for n in ("query", "key", "value"))
            self._layers.append((
                np.concatenate([q, k, v]).T.copy(), np.concatenate([qb, kb, vb]),  # one fused QKV matmul
                get(p + "attention.output.dense.weight").T.copy(), get(p + "attention.output.dense.bias"),
                get(p + "attention.output.LayerNorm.weight"), get(p + "attention.output.LayerNorm.bias"),
                get(p + "intermediate.dense.weight").T.copy(), get(p + "intermediate.dense.bias"),
                get(p + "output.dense.weight").T.copy(), get(p + "output.dense.bias"),
                get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias"),
            ))
        self.dim = int(self._word.shape[1])

    def _read_config(self, path: Path) -> dict:
        try:
            cfg = json.loads((path / "config.json").read_text())
            pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
            st = json.loads((path / "sentence_bert_config.json").read_text())
            modules = [m.get("type", "").rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())]
        except (OSError, ValueError) as exc:
            raise UnsupportedModel(f"{path}: not a BERT sentence-transformers folder ({exc})") from None
        if modules not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) \
                or cfg.get("model_type") != "bert" or cfg.get("position_embedding_type", "absolute") != "absolute" \
                or cfg.get("hidden_act") != "gelu" or not pooling.get("pooling_mode_mean_tokens") \
                or any(pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                                "pooling_mode_mean_sqrt_len_tokens")) \
                or not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
            raise UnsupportedModel(f"{path}: not a plain BERT mean-pooling model")
        self._max_len = int(st.get("max_seq_length") or cfg.get("max_position_embeddings", 512))
        return cfg

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encs = self._tok.encode_batch(list(texts))
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # similar lengths pad little
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._forward([encs[i].ids for i in idx])
        return out

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        ids, mask = pad_batch(batch)
        n, t = ids.shape
        # 2-D activations (tokens × features): numpy sends 2-D @ 2-D to one BLAS gemm, while a 3-D
        # operand becomes a loop of small products (measured 2.5× slower).
        x = (self._word[ids] + self._pos[:t] + self._type0).reshape(n * t, self.dim)
        x = _layer_norm(x, *self._emb_ln, self._eps)
        h, d = self._heads, self.dim // self._heads
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # padded keys get no attention
        scale = np.float32(1.0 / np.sqrt(d))
        for qkv_w, qkv_b, o_w, o_b, ln1_w, ln1_b, i_w, i_b, f_w, f_b, ln2_w, ln2_b in self._layers:
            qkv = (x @ qkv_w + qkv_b).reshape(n, t, 3, h, d).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n * t, h * d)
            x = _layer_norm(x + ctx @ o_w + o_b, ln1_w, ln1_b, self._eps)
            x = _layer_norm(x + _gelu(x @ i_w + i_b) @ f_w + f_b, ln2_w, ln2_b, self._eps)
        x = x.reshape(n, t, self.dim)
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
