"""The default MiniLM run by onnxruntime: the same weights as vault/bert_numpy.py, a graph built here.

Why: indexing embeds every turn once, and on 2 cores numpy spends a third of its time in separate passes
(GELU's erf, layer norms, softmax) between the matmuls; onnxruntime fuses them (attention, skip layer
norm, bias GELU) and runs the products in its own kernels, so bulk embedding is several times faster
(`bench/memory_search.py` prints both). The graph is built from the sentence-transformers folder's
`model.safetensors` at load (no export, no torch, no download), so the vectors are the same as the numpy
encoder's to float32 rounding (tests/test_vault_embedder.py checks cos > 0.999 on every row).

Threads: one intra-op thread per call (llama.cpp owns the cores while the app runs, as vault/blas.py
says); inside `vault.blas.all_blas_threads()` (foreground bulk indexing) batches run on every core at
once, each on its own thread (onnxruntime releases the GIL).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .bert_numpy import NumpyBert, pad_batch
from .blas import threads_now


def available() -> bool:
    """Both onnxruntime (a chromadb dependency) and onnx (the graph builder) import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxBert(NumpyBert):
    """Mean-pooled, L2-normalised BERT sentence vectors from onnxruntime; config checks and tokenizer
    are NumpyBert's (an unsupported folder raises `UnsupportedModel` the same way)."""

    def __init__(self, path: str | Path, name: str | None = None, batch_size: int = 32) -> None:
        super().__init__(path, name=name, batch_size=batch_size)
        import onnxruntime as ort

        model, weights = self._graph()
        opts = ort.SessionOptions()
        # the numpy arrays themselves, not a serialized copy (the graph marks them as external data)
        opts.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(v) for v in weights.values()])
        self._weights = weights  # add_initializer borrows the buffers: they must outlive the session
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no spinning beside llama.cpp
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self._pool: ThreadPoolExecutor | None = None
        # the numpy copies of the weights are in the graph now: keep only what the tokenizer side needs
        self._layers = []
        self._word = self._pos = None

    def _graph(self) -> tuple[bytes, dict[str, np.ndarray]]:
        """The graph (weights as named inputs, a few KB) and the weights to bind to those names."""
        from onnx import TensorProto, helper, numpy_helper

        nodes, weights, small = [], {}, {}

        def const(name: str, value: np.ndarray) -> str:
            value = np.ascontiguousarray(value)
            if value.size > 16:
                weights[name] = value
                t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(value.dtype),
                                dims=list(value.shape), data_location=TensorProto.EXTERNAL)
                for key, val in (("location", "bound-at-load"), ("offset", "0"), ("length", str(value.nbytes))):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, val
                small[name] = t
            else:
                small[name] = numpy_helper.from_array(value, name)
            return name

        def node(op: str, inputs: list[str], out: str, domain: str = "", **attrs) -> str:  # noqa: ANN003
            nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs))
            return out

        h, dim = self._heads, self.dim
        d = dim // h
        word = node("Gather", [const("word", self._word), "input_ids"], "word_emb")
        pos = node("Gather", [const("pos", self._pos), "position_ids"], "pos_emb")
        x = node("Add", [node("Add", [word, pos], "wp"), const("type0", self._type0)], "emb")
        x = node("LayerNormalization", [x, const("emb_ln_w", self._emb_ln[0]), const("emb_ln_b", self._emb_ln[1])],
                 "emb_ln", axis=-1, epsilon=self._eps)
        # padded keys get no attention: (1 - mask) * -1e9, shaped (n, 1, 1, t)
        inv = node("Sub", [const("one", np.float32(1.0)), "attention_mask"], "inv_mask")
        bias = node("Mul", [inv, const("neg", np.float32(-1e9))], "mask_bias")
        bias = node("Unsqueeze", [bias, const("ax12", np.array([1, 2], dtype=np.int64))], "mask_bias4")
        heads = const("heads_shape", np.array([0, 0, h, d], dtype=np.int64))
        merged = const("merged_shape", np.array([0, 0, dim], dtype=np.int64))
        scale = const("scale", np.float32(1.0 / np.sqrt(d)))
        for i, (qkv_w, qkv_b, o_w, o_b, ln1_w, ln1_b, i_w, i_b, f_w, f_b, ln2_w, ln2_b) in enumerate(self._layers):
            p = f"l{i}_"
            qkv = node("Add", [node("MatMul", [x, const(p + "qkv_w", qkv_w)], p + "qkv_mm"),
                               const(p + "qkv_b", qkv_b)], p + "qkv")
            nodes.append(helper.make_node("Split", [qkv, const(p + "split", np.array([dim] * 3, dtype=np.int64))],
                                          [p + "q", p + "k", p + "v"], name=p + "split_qkv", axis=-1))
            q = node("Transpose", [node("Reshape", [p + "q", heads], p + "q4")], p + "qt", perm=[0, 2, 1, 3])
            k = node("Transpose", [node("Reshape", [p + "k", heads], p + "k4")], p + "kt", perm=[0, 2, 3, 1])
            v = node("Transpose", [node("Reshape", [p + "v", heads], p + "v4")], p + "vt", perm=[0, 2, 1, 3])
            scores = node("Add", [node("Mul", [node("MatMul", [q, k], p + "qk"), scale], p + "qk_s"), bias],
                          p + "scores")
            probs = node("Softmax", [scores], p + "probs", axis=-1)
            ctx = node("Transpose", [node("MatMul", [probs, v], p + "ctx4")], p + "ctx_t", perm=[0, 2, 1, 3])
            ctx = node("Reshape", [ctx, merged], p + "ctx")
            attn = node("Add", [node("MatMul", [ctx, const(p + "o_w", o_w)], p + "o_mm"), const(p + "o_b", o_b)],
                        p + "o")
            x = node("LayerNormalization", [node("Add", [x, attn], p + "res1"), const(p + "ln1_w", ln1_w),
                                            const(p + "ln1_b", ln1_b)], p + "ln1", axis=-1, epsilon=self._eps)
            inter = node("Add", [node("MatMul", [x, const(p + "i_w", i_w)], p + "i_mm"), const(p + "i_b", i_b)],
                         p + "i")
            act = node("Gelu", [inter], p + "gelu")  # exact (erf) GELU, opset 20
            out = node("Add", [node("MatMul", [act, const(p + "f_w", f_w)], p + "f_mm"), const(p + "f_b", f_b)],
                       p + "f")
            x = node("LayerNormalization", [node("Add", [x, out], p + "res2"), const(p + "ln2_w", ln2_w),
                                            const(p + "ln2_b", ln2_b)], p + "ln2", axis=-1, epsilon=self._eps)
        m3 = node("Unsqueeze", ["attention_mask", const("ax2", np.array([2], dtype=np.int64))], "mask3")
        summed = node("ReduceSum", [node("Mul", [x, m3], "masked"), const("ax1", np.array([1], dtype=np.int64))],
                      "summed", keepdims=0)
        count = node("ReduceSum", ["attention_mask", "ax1"], "count", keepdims=1)
        node("Div", [summed, node("Max", [count, const("tiny", np.float32(1e-9))], "count_c")], "pooled")
        graph = helper.make_graph(
            nodes, "minilm",
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["n", "t"]),
             helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["t"]),
             helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["n", "t"])],
            [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["n", dim])], list(small.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
        model.ir_version = 9
        return model.SerializeToString(), weights

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encs = self._tok.encode_batch(list(texts))
        # similar lengths pad little; longest first, so the last batches (run while the other threads
        # have nothing left to take) are the shortest
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids), reverse=True)
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        workers = min(threads_now(), len(batches))
        if workers > 1:
            if self._pool is None or self._pool._max_workers < workers:
                self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="home-embed")
            results = self._pool.map(lambda idx: self._forward([encs[i].ids for i in idx]), batches)
        else:
            results = (self._forward([encs[i].ids for i in idx]) for idx in batches)
        for idx, vecs in zip(batches, results, strict=True):
            out[idx] = vecs
        return out

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        ids, mask = pad_batch(batch)
        t = ids.shape[1]
        pooled = self._session.run(None, {"input_ids": ids, "position_ids": np.arange(t, dtype=np.int64),
                                          "attention_mask": mask})[0]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
