"""Can a weight-sample fingerprint survive requantisation and still see a fine-tune? (llm/fingerprint.py)

Takes the rows the fingerprint samples from the default model (token_embd, the last block's matrices),
dequantized, jittered off the quantisation grid (stand-in for the float weights a GGUF is made from),
then quantizes them to F16, Q8_0 and Q4_1 with the gguf library and dequantizes again. For a rounding
step of k × each row's RMS it prints: the share of values whose rounded value differs between two
quantisations, whether the rounded hashes agree, and the same for a "tune" (the weights plus a 1 %
relative change, small as instruct tunes go). A usable step would give equal hashes for the
quantisations and different ones for the tune. Also: the fingerprint's own cost on the default model.
Run: .venv/bin/python bench/fingerprint_quant.py
"""

from __future__ import annotations

import hashlib
import os
import time

import _common  # noqa: F401  (puts the repo root on sys.path)
import gguf
import numpy as np
from gguf.quants import dequantize, quantize

from llm.fingerprint import _rows, sampled_tensors, weights_fingerprint
from llm.gguf_meta import read_model_info
from llm.models import default_model_path

T = gguf.GGMLQuantizationType


def sample(reader) -> np.ndarray:
    by = {t.name: t for t in reader.tensors}
    rows = []
    for name in sampled_tensors(list(by)):
        t = by[name]
        if t.data.ndim < 2:
            continue
        idx = _rows(t.data.shape[0])
        rows.extend(dequantize(np.asarray(t.data[idx]), t.tensor_type)[:, :512])  # common width
    return np.stack(rows).astype(np.float32)


def roundtrip(w: np.ndarray, qtype) -> np.ndarray:
    return dequantize(quantize(w, qtype), qtype).astype(np.float32)


def rounded_hash(w: np.ndarray, step: np.ndarray) -> str:
    return hashlib.sha256(np.round(w / step).astype(np.int64).tobytes()).hexdigest()


def main() -> None:
    path = default_model_path()
    reader = gguf.GGUFReader(str(path))
    rng = np.random.default_rng(0)
    w = sample(reader)
    del reader  # unmapped, so the cold read below is cold
    rms = np.sqrt((w ** 2).mean(axis=1, keepdims=True))
    w = w + rng.standard_normal(w.shape).astype(np.float32) * 0.05 * rms  # off the grid
    tune = w + rng.standard_normal(w.shape).astype(np.float32) * 0.01 * rms
    q = {"F16": roundtrip(w, T.F16), "Q8_0": roundtrip(w, T.Q8_0), "Q4_1": roundtrip(w, T.Q4_1)}
    print(f"{w.size} sampled values; quantisation error / row RMS: "
          + ", ".join(f"{k} {np.sqrt(((v - w) ** 2).mean() / (rms ** 2).mean()):.4f}" for k, v in q.items()))
    pairs = [("F16", "Q8_0"), ("Q8_0", "Q4_1"), ("F16", "Q4_1")]
    head = " ".join(f"{a + '/' + b:>16}" for a, b in pairs)
    print(f"{'step×RMS':>9} {head} {'tune/F16 (1 %)':>16}")
    for k in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0):
        step = k * rms
        cells = []
        for a, b in [*pairs, ("tune", "F16")]:
            x, y = (tune if a == "tune" else q[a]), q[b]
            if a == "tune":
                x = roundtrip(tune, T.F16)
            differ = np.mean(np.round(x / step) != np.round(y / step))
            same = rounded_hash(x, step) == rounded_hash(y, step)
            cells.append(f"{differ:>8.2%} {'same' if same else 'diff':>7}")
        print(f"{k:>9g} " + " ".join(cells))

    legacy = read_model_info(path).legacy_fingerprint
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # this file's pages out of the cache: a cold read
    os.close(fd)
    cold = gguf.GGUFReader(str(path))
    t0 = time.perf_counter()
    weights_fingerprint(legacy, cold)
    t1 = time.perf_counter()
    for _ in range(20):
        weights_fingerprint(legacy, cold)
    t2 = time.perf_counter()
    print(f"weights sample on {path.name} ({path.stat().st_size / 1e6:.0f} MB): "
          f"{(t1 - t0) * 1e3:.2f} ms after dropping the file's pages, {(t2 - t1) / 20 * 1e3:.2f} ms warm")


if __name__ == "__main__":
    main()
