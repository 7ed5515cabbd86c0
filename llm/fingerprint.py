"""The base-model fingerprint: which base model an adapter was made for, and whether it fits another.

v1 (now `legacy_fingerprint`) hashed the architecture, tensor names and shapes and the vocabulary. A
base and its instruct tune share all of those, so an adapter trained on one was accepted on the other.
v2 (`fingerprint`) adds a sample of the weights: a few rows of the token embedding, the output tensor
and each matrix of the last block (a LoRA merged into a tune can leave the embeddings untouched).

The rows are hashed as stored, not dequantized. Rounding dequantized rows so that a Q4_1, a Q8_0 and
an F16 of one model agree cannot work: Q4_1's error (about 1/30 of a row's range) moves thousands of
values across any rounding boundary, and a precision coarse enough to absorb it no longer sees the
small steps an instruct tune takes from its base (`bench/fingerprint_quant.py` measures both). So
another quantisation of the same model is another base: its adapters are refused with both names.

Cost: the file is memory-mapped and only the sampled rows are read, whatever the model's size: on
the default model ~1 ms with the pages cached, 45-80 ms from a cold page cache (readahead), once per
file (read_model_info caches it with the model's other facts; parsing the metadata costs seconds).
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any

Shape = tuple[int, ...]
ROWS_PER_TENSOR = 8
_legacy_of: dict[str, str] = {}  # v2 fingerprint → the same file's v1 fingerprint
_lock = threading.Lock()


def legacy_fingerprint(arch: str, tensors: dict[str, Shape], vocab: bytes) -> str:
    """v1: sha256 over arch, sorted (name, logical shape) and the vocabulary. Unchanged, so adapters
    registered before v2 can be recognised (see `same_base`)."""
    h = hashlib.sha256()
    h.update(b"home-gguf-fingerprint-v1\0" + arch.encode() + b"\0")
    for name in sorted(tensors):
        h.update(f"{name}:{','.join(map(str, tensors[name]))}\n".encode())
    h.update(b"\0vocab\0")
    h.update(vocab)
    return h.hexdigest()


def sampled_tensors(names: list[str]) -> list[str]:
    """The tensors whose rows v2 hashes: token_embd, output (when not tied) and the last block's matrices."""
    blocks = [int(m.group(1)) for n in names if (m := re.match(r"blk\.(\d+)\.", n))]
    last = f"blk.{max(blocks)}." if blocks else None
    return [n for n in sorted(names) if n in ("token_embd.weight", "output.weight")
            or (last and n.startswith(last) and n.endswith(".weight"))]


def _rows(n: int, k: int = ROWS_PER_TENSOR) -> list[int]:
    """k row indices spread over n rows, the first and the last included."""
    return sorted({i * (n - 1) // (k - 1) for i in range(k)}) if n > 1 else [0]


def weights_fingerprint(legacy: str, reader: Any) -> str:
    """v2: sha256 over the v1 fingerprint and sampled rows of the sampled tensors as stored (type + bytes).

    `reader` is a gguf.GGUFReader: its tensor data are views of a memory map, so indexing a row reads
    only that row's pages."""
    by_name = {t.name: t for t in reader.tensors}
    h = hashlib.sha256(b"home-gguf-fingerprint-v2\0" + legacy.encode() + b"\0")
    for name in sampled_tensors(list(by_name)):
        t = by_name[name]
        data = t.data
        if data.ndim < 2:  # a 1-D norm weight: hash it whole (a few kB at most)
            h.update(f"{name}:{t.tensor_type.name}:all\n".encode() + data.tobytes())
            continue
        rows = data.reshape(-1, data.shape[-1])
        for i in _rows(rows.shape[0]):
            h.update(f"{name}:{t.tensor_type.name}:{i}\n".encode() + rows[i].tobytes())
    return h.hexdigest()


def remember(fingerprint: str, legacy: str) -> None:
    """Record a model's v1 fingerprint beside its v2 one (read_model_info calls this for every model)."""
    with _lock:
        _legacy_of[fingerprint] = legacy


def legacy_of(fingerprint: str) -> str | None:
    """The v1 fingerprint of the model whose v2 fingerprint this is, if this process has read it."""
    with _lock:
        return _legacy_of.get(fingerprint)


def same_base(recorded: str | None, model_fingerprint: str) -> bool:
    """Whether an adapter recorded for base `recorded` fits the model `model_fingerprint`: none recorded,
    the same fingerprint, or the model's own v1 fingerprint (an adapter registered before v2; v1 cannot
    tell a base from its tune, so such an adapter keeps working on both, as it did).

    Callers hold only the model's fingerprint string, which always comes from `read_model_info`, so the
    v1 value is looked up here rather than threaded through every signature."""
    if not recorded or recorded == model_fingerprint:
        return True
    return recorded == legacy_of(model_fingerprint)


def short(fingerprint: str | None) -> str:
    """The first 12 hex digits, as messages show a fingerprint."""
    return (fingerprint or "?")[:12]


def base_refusal(base: dict | None, model_fingerprint: str, model_name: str) -> str | None:
    """None when an adapter made for `base` (the manifest's {"fingerprint", "name"}) fits the model;
    else one line naming both models with their short fingerprints."""
    recorded = (base or {}).get("fingerprint")
    if same_base(recorded, model_fingerprint):
        return None
    name = (base or {}).get("name") or "?"
    why = (f"made for base '{name}' (fingerprint {short(recorded)}), "
           f"the loaded model is '{model_name}' (fingerprint {short(model_fingerprint)})")
    if name == model_name:
        why += ": same name, other weights (another quantisation or fine-tune of it)"
    return why
