"""What a GGUF file says about itself: model facts, adapter facts, and whether an adapter fits a model.

Read with the `gguf` library's GGUFReader. It parses every metadata array element into its own numpy
view, which costs seconds on a 49k-token vocabulary, so model facts are cached twice: in-process, and
as JSON in the user cache dir keyed by (real path, size, mtime, inode). A changed file misses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import AdapterError, ModelError
from .fingerprint import legacy_fingerprint, remember, weights_fingerprint

GGUF_MAGIC = b"GGUF"
LORA_TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0")  # what llama.cpp's convert_lora_to_gguf.py writes
_CACHE_VERSION = 3  # 2: fingerprint v2 + legacy_fingerprint; 3: header_sha256
_lock = threading.Lock()
_model_cache: dict[tuple, ModelInfo] = {}
_adapter_cache: dict[tuple, AdapterInfo] = {}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a base model GGUF. `tensors` maps name → logical (numpy-order) shape, e.g. (out, in).

    `fingerprint` names the base adapters are made for (v2: shapes, vocabulary and sampled weights);
    `legacy_fingerprint` is the v1 value (no weights) adapters registered before v2 carry. See
    llm/fingerprint.py. `header_sha256` hashes every byte before the tensor data (all metadata and tensor
    infos): what llama.cpp reads to set up its vocabulary, which the fingerprint does not fully cover
    (the tokenizer type, merges, special ids), so a model's load probe (llm/probe.py) is keyed on it."""

    path: str
    arch: str
    name: str
    n_layers: int
    n_ctx_train: int
    n_embd: int
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    bos_token: str
    eos_token: str
    tensors: dict[str, Shape] = field(repr=False)
    fingerprint: str = ""
    file_size: int = 0
    legacy_fingerprint: str = ""
    header_sha256: str = ""


@dataclass(frozen=True)
class AdapterInfo:
    """Facts about a GGUF LoRA. `tensors` maps base tensor name → (A shape (r, in), B shape (out, r))."""

    path: str
    arch: str
    alpha: float
    rank: int
    tensors: dict[str, tuple[Shape, Shape]] = field(repr=False)
    name: str | None = None
    header_sha256: str = ""  # every byte before the tensor data: what the adapter probe (llm/probe.py) is keyed on


def is_gguf(path: str | os.PathLike) -> bool:
    """True when the file starts with the GGUF magic bytes (cheap; does not parse)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def _open_reader(path: Path, err: type[Exception]) -> Any:
    """GGUFReader over `path`, or `err` naming the file: missing, not GGUF, corrupt or truncated."""
    if not path.is_file():
        raise err(f"{path}: no such file")
    if not is_gguf(path):
        raise err(f"{path}: not a GGUF file (bad magic bytes)")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/IndexError/KeyError/... on damage
        raise err(f"{path}: corrupt or truncated GGUF ({type(exc).__name__}: {exc})") from None
    size = path.stat().st_size
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size or t.data.nbytes != t.n_bytes:
            raise err(f"{path}: truncated GGUF: tensor {t.name} ends at byte {end}, file has {size}")
    return reader


def _scalar(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception:
        return default


def _part_offset(reader: Any, part: Any) -> int:
    return int(part.ctypes.data - reader.data.ctypes.data)


def _vocab_bytes(reader: Any) -> bytes:
    """The raw bytes of `tokenizer.ggml.tokens` (count, then each length and text): no per-token decode."""
    f = reader.fields.get("tokenizer.ggml.tokens")
    if f is None or len(f.parts) < 5:
        return b""
    start = _part_offset(reader, f.parts[4])  # the element count; elements follow contiguously
    last = f.parts[-1]
    end = _part_offset(reader, last) + int(last.nbytes)
    return bytes(reader.data[start:end])


def _cache_dir() -> Path | None:
    env = os.environ.get("HOME_LLM_CACHE")
    if env == "":
        return None
    if env:
        return Path(env)
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("home")) / "gguf-meta"
    except Exception:
        return None


def _cache_file(key: tuple) -> Path | None:
    d = _cache_dir()
    if d is None:
        return None
    return d / (hashlib.sha256(repr((_CACHE_VERSION, key)).encode()).hexdigest()[:32] + ".json")


def _load_disk(key: tuple) -> ModelInfo | None:
    p = _cache_file(key)
    if p is None or not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
        if d.pop("_key") != list(key):
            return None
        d["tensors"] = {k: tuple(v) for k, v in d["tensors"].items()}
        return ModelInfo(**d)
    except Exception:
        return None  # a stale or damaged cache entry is simply re-read


def _save_disk(key: tuple, info: ModelInfo) -> None:
    p = _cache_file(key)
    if p is None:
        return
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"_key": list(key), **asdict(info)}))
        os.replace(tmp, p)
    except OSError:
        pass  # the cache is an optimisation only


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read (or recall) a model GGUF's facts; `ModelError` naming the file if it is not a usable GGUF."""
    path = Path(path)
    try:
        key = _stat_key(path)
    except OSError:
        raise ModelError(f"{path}: no such file") from None
    with _lock:
        hit = _model_cache.get(key)
    if hit is None:
        hit = _load_disk(key)
    if hit is None:
        hit = _read_model_info_uncached(path, key)
        _save_disk(key, hit)
    with _lock:
        _model_cache[key] = hit
    remember(hit.fingerprint, hit.legacy_fingerprint)
    return hit


def _read_model_info_uncached(path: Path, key: tuple) -> ModelInfo:
    reader = _open_reader(path, ModelError)
    gtype = _scalar(reader, "general.type", "model")
    if gtype == "adapter":
        raise ModelError(f"{path}: this GGUF is a LoRA adapter (general.type = adapter), not a model")
    arch = _scalar(reader, "general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelError(f"{path}: general.architecture: missing")
    tensors = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    if not tensors:
        raise ModelError(f"{path}: no tensors: not a model")

    def tok_text(tid: int | None) -> str:
        f = reader.fields.get("tokenizer.ggml.tokens")
        if tid is None or f is None or not (0 <= tid < len(f.data)):
            return ""
        return f.contents(int(tid))

    legacy = legacy_fingerprint(arch, tensors, _vocab_bytes(reader))
    bos = _scalar(reader, "tokenizer.ggml.bos_token_id")
    eos = _scalar(reader, "tokenizer.ggml.eos_token_id")
    return ModelInfo(
        path=str(path),
        arch=arch,
        name=_scalar(reader, "general.name") or path.stem,
        n_layers=int(_scalar(reader, f"{arch}.block_count", 0)),
        n_ctx_train=int(_scalar(reader, f"{arch}.context_length", 0)),
        n_embd=int(_scalar(reader, f"{arch}.embedding_length", 0)),
        chat_template=_scalar(reader, "tokenizer.chat_template"),
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if eos is None else int(eos),
        bos_token=tok_text(bos),
        eos_token=tok_text(eos),
        tensors=tensors,
        fingerprint=weights_fingerprint(legacy, reader),
        file_size=key[1],
        legacy_fingerprint=legacy,
        header_sha256=hashlib.sha256(reader.data[:reader.data_offset]).hexdigest(),
    )


def read_adapter_info(path: str | os.PathLike) -> AdapterInfo:
    """Read a GGUF LoRA's facts; `AdapterError` naming the file (and key) if it is not a usable LoRA."""
    path = Path(path)
    try:
        key = _stat_key(path)
    except OSError:
        raise AdapterError(f"{path}: no such file") from None
    with _lock:
        hit = _adapter_cache.get(key)
    if hit is None:
        hit = _read_adapter_info_uncached(path)
        with _lock:
            _adapter_cache[key] = hit
    return hit


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def peek_general_type(path: Path, limit: int = 64) -> str | None:
    """`general.type` from the first key-value pairs, without building a reader (None: not found there).

    A model handed to `adapters add` would otherwise be parsed whole (its vocabulary field by field: ~5 s
    for a 49k-token vocabulary, tens of seconds on a busy machine) only to be refused as not a LoRA."""
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        if head[:4] != GGUF_MAGIC or struct.unpack_from("<I", head, 4)[0] < 2:
            return None
        pos, n_kv = 24, struct.unpack_from("<Q", head, 16)[0]
        for _ in range(min(n_kv, limit)):
            (klen,) = struct.unpack_from("<Q", head, pos)
            key = head[pos + 8:pos + 8 + klen].decode("utf-8", "replace")
            (vtype,) = struct.unpack_from("<I", head, pos + 8 + klen)
            pos += 12 + klen
            if vtype == 8:
                (vlen,) = struct.unpack_from("<Q", head, pos)
                if key == "general.type":
                    return head[pos + 8:pos + 8 + vlen].decode("utf-8", "replace")
                pos += 8 + vlen
            elif vtype in _SCALAR_SIZES:
                pos += _SCALAR_SIZES[vtype]
            else:
                return None  # an array: the rest is left to the full reader
    except (OSError, struct.error):
        return None
    return None


def _read_adapter_info_uncached(path: Path) -> AdapterInfo:
    got = peek_general_type(path) if path.is_file() else None
    if got not in (None, "adapter"):
        raise AdapterError(f"{path}: general.type: expected 'adapter', got {got!r} (not a LoRA adapter)")
    reader = _open_reader(path, AdapterError)
    for k, want in (("general.type", "adapter"), ("adapter.type", "lora")):
        got = _scalar(reader, k)
        if got != want:
            raise AdapterError(f"{path}: {k}: expected {want!r}, got {got!r} (not a LoRA adapter)")
    arch = _scalar(reader, "general.architecture")
    if not isinstance(arch, str) or not arch:
        raise AdapterError(f"{path}: general.architecture: missing")
    alpha = _scalar(reader, "adapter.lora.alpha", 0.0)
    if not isinstance(alpha, (int, float)):
        raise AdapterError(f"{path}: adapter.lora.alpha: expected a number, got {alpha!r}")
    halves: dict[str, dict[str, Shape]] = {}
    for t in reader.tensors:
        base, _, half = t.name.rpartition(".")
        if half not in ("lora_a", "lora_b") or not base:
            raise AdapterError(f"{path}: tensor {t.name}: not a .lora_a/.lora_b tensor")
        if len(t.shape) != 2:
            raise AdapterError(f"{path}: tensor {t.name}: expected 2 dimensions, got {len(t.shape)}")
        if t.tensor_type.name not in LORA_TENSOR_TYPES:
            # llama.cpp loads e.g. I32/F64 LoRA tensors without complaint, then segfaults in the matmul.
            raise AdapterError(
                f"{path}: tensor {t.name}: type {t.tensor_type.name} cannot be applied "
                f"(use one of {', '.join(LORA_TENSOR_TYPES)})"
            )
        halves.setdefault(base, {})[half] = tuple(int(d) for d in reversed(t.shape.tolist()))
    if not halves:
        raise AdapterError(f"{path}: no LoRA tensors")
    tensors: dict[str, tuple[Shape, Shape]] = {}
    ranks = set()
    for base, h in halves.items():
        if set(h) != {"lora_a", "lora_b"}:
            missing = ({"lora_a", "lora_b"} - set(h)).pop()
            raise AdapterError(f"{path}: tensor {base}.{missing}: missing (each LoRA needs A and B)")
        a, b = h["lora_a"], h["lora_b"]
        if base != "token_embd.weight" and a[0] != b[1]:
            raise AdapterError(f"{path}: tensor {base}: A {a} and B {b} disagree on the rank")
        tensors[base] = (a, b)
        ranks.add(b[1])
    return AdapterInfo(
        path=str(path),
        arch=arch,
        alpha=float(alpha),
        rank=max(ranks),
        tensors=tensors,
        name=_scalar(reader, "general.name"),
        header_sha256=hashlib.sha256(reader.data[:reader.data_offset]).hexdigest(),
    )


def check_adapter_fits(model: ModelInfo, adapter: AdapterInfo, path: str | os.PathLike | None = None) -> None:
    """`AdapterError` unless every LoRA tensor matches a base tensor the way llama.cpp will check it."""
    where = path if path is not None else adapter.path
    if adapter.arch != model.arch:
        raise AdapterError(
            f"{where}: adapter is for arch {adapter.arch} but the model {model.name} is {model.arch}"
        )
    for name, (a, b) in adapter.tensors.items():
        base = model.tensors.get(name)
        if base is None:
            raise AdapterError(f"{where}: tensor {name}: not in the base model {model.name} (another base?)")
        if len(base) != 2:
            raise AdapterError(f"{where}: tensor {name}: base tensor is {len(base)}-D, LoRA needs 2-D")
        out, inp = base
        if name == "token_embd.weight":  # llama.cpp flips A and B for the embedding (llm_build_inp_embd)
            ok = b[0] == inp and a[0] == out
        else:
            ok = a[1] == inp and b[0] == out
        if not ok:
            raise AdapterError(
                f"{where}: tensor {name}: A {a} / B {b} do not fit base {base} "
                f"(need A (r, {inp}) and B ({out}, r))"
            )
