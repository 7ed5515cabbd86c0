"""Malformed GGUF LoRA adapters for `home adapters add` (see tests/malformed.py): truncated, wrong
architecture, wrong shapes, wrong types. `adapters add` checks the header and shapes against the model's
header (`llm.gguf_meta`), so no case loads the model into llama.cpp."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from tests.malformed import TRICKS, binary, truncated
from tests.malformed_run import Case, Link


@functools.lru_cache(maxsize=1)
def model_tensors() -> tuple[str, dict]:
    from llm.gguf_meta import read_model_info
    from llm.models import default_model_path

    info = read_model_info(default_model_path())
    return info.arch, info.tensors


def gguf_bytes(arch: str = "", tensors: dict | None = None, *, gtype: object = "adapter", atype: object = "lora",
               alpha: object = 8.0, dtype=np.float32, suffixes=("lora_a", "lora_b"), dims: int = 2) -> bytes:
    """A GGUF LoRA written with the gguf library, every field overridable (None leaves it out)."""
    import gguf

    arch = arch or model_tensors()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "a.gguf")
        w = gguf.GGUFWriter(path, arch)
        for key, value in (("general.type", gtype), ("adapter.type", atype), ("adapter.lora.alpha", alpha)):
            if isinstance(value, str):
                w.add_string(key, value)
            elif isinstance(value, float):
                w.add_float32(key, value)
            elif isinstance(value, int):
                w.add_int32(key, value)
        for name, (a, b) in (tensors or {}).items():
            for suffix, arr in zip(suffixes, (a, b), strict=False):
                arr = np.zeros(arr, dtype=dtype) if dims == 2 else np.zeros((2, *arr), dtype=dtype)
                w.add_tensor(f"{name}.{suffix}", arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return Path(path).read_bytes()


@functools.lru_cache(maxsize=1)
def good_adapter() -> bytes:
    """A LoRA `adapters add` takes for the default model."""
    return gguf_bytes(tensors=_good_shapes(2))


def _good_shapes(rank: int) -> dict:
    _, tensors = model_tensors()
    out, inp = tensors["blk.0.attn_q.weight"]
    return {"blk.0.attn_q.weight": ((rank, inp), (out, rank))}


@st.composite
def adapter(draw) -> Case:
    rank = draw(st.integers(1, 4))
    good = _good_shapes(rank)
    (name, ((r, inp), (out, _))), = good.items()
    kind = draw(st.sampled_from(("truncated", "wrong-arch", "wrong-shape", "wrong-type", "binary", "name-trick",
                                 "symlink", "model-as-adapter")))
    argv_name, must, data = "x", True, None
    if kind == "truncated":
        data = draw(truncated(gguf_bytes(tensors=good)))
    elif kind == "wrong-arch":
        data = gguf_bytes(draw(st.sampled_from(("qwen2", "gemma2", "../../outside/pwn", "x" * 300))), good)
    elif kind == "wrong-shape":
        k = draw(st.integers(1, 7))
        shapes = draw(st.sampled_from((
            {name: ((r, inp + k), (out, r))}, {name: ((r, inp), (out + k, r))}, {name: ((r, inp), (out, r + k))},
            {name: ((inp, r), (r, out))}, {"blk.999.attn_q.weight": ((r, inp), (out, r))},
            {"token_embd.weight": ((r, inp), (out, r))}, {"output_norm.weight": ((r, inp), (inp, r))})))
        data = gguf_bytes(tensors=shapes)
    elif kind == "wrong-type":
        data = draw(st.sampled_from(("model", "ia3", "alpha", "int32", "float64", "3d", "names", "one-half", "none")))
        data = {"model": lambda: gguf_bytes(tensors=good, gtype="model"),
                "ia3": lambda: gguf_bytes(tensors=good, atype="ia3"),
                "alpha": lambda: gguf_bytes(tensors=good, alpha="high"),
                "int32": lambda: gguf_bytes(tensors=good, dtype=np.int32),
                "float64": lambda: gguf_bytes(tensors=good, dtype=np.float64),
                "3d": lambda: gguf_bytes(tensors=good, dims=3),
                "names": lambda: gguf_bytes(tensors=good, suffixes=("weight_a", "weight_b")),
                "one-half": lambda: gguf_bytes(tensors=good, suffixes=("lora_a",)),
                "none": lambda: gguf_bytes(tensors={})}[data]()
    elif kind == "binary":
        data = draw(binary(draw(st.sampled_from((b"", b"GGUF", b"GGUF\x03\x00\x00\x00")))))
    elif kind == "name-trick":  # a good adapter under a name that looks like a path
        data, argv_name, must = gguf_bytes(tensors=good), draw(st.sampled_from(TRICKS)), False
    elif kind == "symlink":  # its folder in the vault is already a link out of the vault
        files = {"inputs/a.gguf": gguf_bytes(tensors=good), "vault/adapters/x": Link("{root}/outside")}
        return Case("adapter-gguf", kind, files, ["adapters", "add", "{root}/inputs/a.gguf", "--name", "x"], ("a.gguf",))
    else:
        from llm.models import default_model_path

        data = Link(str(default_model_path()))
    return Case("adapter-gguf", kind, {"inputs/a.gguf": data},
                ["adapters", "add", "{root}/inputs/a.gguf", "--name", argv_name], ("a.gguf",), must_fail=must)
