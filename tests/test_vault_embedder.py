"""The numpy MiniLM must give sentence-transformers' vectors: a store indexed by one is searched by the other."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vault.bert_numpy import NumpyBert, UnsupportedModel
from vault.embedder import DEFAULT_NAME, SentenceTransformerEmbedder, default_embedder_path, load_embedder

TEXTS = [
    "hi",
    "My sister Ana moved to Lisbon last spring and works nights as a nurse.",
    "What's the name of my dog again? " * 4,
    "ünïcödé, emoji 🙂 and punctuation?!",
    "A long paragraph about tomatoes, soil acidity and watering in a dry summer. " * 30,  # past 256 tokens
    "",
]


@pytest.fixture(scope="module")
def reference():
    return SentenceTransformerEmbedder(default_embedder_path()).embed(TEXTS)


def test_numpy_bert_matches_sentence_transformers(reference):
    ours = load_embedder()
    assert isinstance(ours, NumpyBert) and ours.name == DEFAULT_NAME and ours.dim == 384
    got = ours.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (got * reference).sum(1)
    assert cos.min() > 0.99999, cos
    # batching (length-sorted, padded) changes nothing: one at a time gives the same rows
    one_by_one = np.vstack([ours.embed([t]) for t in TEXTS])
    np.testing.assert_allclose(one_by_one, got, atol=2e-6)
    assert ours.embed([]).shape == (0, 384)


def test_other_architectures_fall_back_to_sentence_transformers(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(default_embedder_path(), folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModel, match="not a plain BERT"):
        NumpyBert(folder)
    (folder / "modules.json").write_text(json.dumps([m for m in modules if m["path"] != "2_Dense"]))
    assert isinstance(load_embedder(folder), NumpyBert)
    pooling = folder / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    pooling.write_text(json.dumps(cfg | {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    cls_pooled = load_embedder(folder)  # CLS pooling: sentence-transformers runs it
    assert isinstance(cls_pooled, SentenceTransformerEmbedder)
    assert cls_pooled.embed(["hi"]).shape == (1, 384)


def test_a_gguf_embedder_through_llama_cpp_feeds_memory_search(tmp_path, model_path):
    """`[memory] embedder = "x.gguf"`: llama.cpp embeddings (the default chat GGUF stands in for an
    embedding model here); the store records it and search finds a planted fact with it."""
    from vault.embedder import LlamaCppEmbedder
    from vault.layout import Vault
    from vault.memory import MemoryStore

    emb = load_embedder(model_path)
    assert isinstance(emb, LlamaCppEmbedder) and emb.name == f"gguf:{model_path.name}"
    vecs = emb.embed(["My sister lives in Lisbon.", "My sister lives in Lisbon.", "Quarterly tax forms.", ""])
    assert vecs.shape == (4, emb.dim) and np.allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vecs[0], vecs[1], atol=1e-6)  # deterministic
    vault = Vault.open(tmp_path / "v")
    with MemoryStore.open(vault, emb) as store:
        store.upsert([{"id": f"s:{i}", "session": "s", "turn": i, "role": "user", "user": "me",
                       "time": "2026-11-20T10:00:00Z", "text": t}
                      for i, t in enumerate(["My sister Ana lives in Lisbon.", "The tax forms are due in May."], 1)])
        assert store.search("Lisbon sister", k=1, user="me")[0].id == "s:1"
        assert store.state["embedder"]["ref"] == str(model_path)
    with pytest.raises(Exception, match="no such GGUF"):
        load_embedder(tmp_path / "missing.gguf")


def test_onnx_runtime_gives_the_numpy_encoders_vectors_one_thread_and_in_bulk():
    """The default runs on onnxruntime (issue 13: ingest speed); its graph is built here from the same
    safetensors, so every row must match the numpy encoder's, also when batches run on every core."""
    from vault.bert_onnx import OnnxBert
    from vault.blas import all_blas_threads, threads_now

    ours = load_embedder()
    assert isinstance(ours, OnnxBert) and ours.dim == 384
    ref = NumpyBert(default_embedder_path()).embed(TEXTS)
    ours.batch_size = 2  # several batches, so the bulk path really runs them on threads
    got = ours.embed(TEXTS)
    assert (got * ref).sum(1).min() > 0.999
    with all_blas_threads():
        assert threads_now() >= 1
        bulk = ours.embed(TEXTS)
    np.testing.assert_allclose(bulk, got, atol=2e-6)
    assert threads_now() == 1 and ours.embed([]).shape == (0, 384)
