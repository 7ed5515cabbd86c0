"""The dequantized copy of a GGUF that training loads, built once per model and dtype and kept.

Why a copy: bitsandbytes quantizes to nf4 while transformers loads a checkpoint, and transformers'
GGUF loader dequantizes into memory instead, with its own quantizer attached; the two do not combine.
So the GGUF is dequantized once into a plain transformers directory (config, tokenizer, safetensors)
and every `--4bit` run loads that with a BitsAndBytesConfig. The user needs no Hugging Face download
and no `--base DIR`: the adapter still learns against the weights llama.cpp runs.
Plain (fp32/bf16) runs and verification's reference load such a copy too, in their own dtype: reading
a GGUF through transformers parses its whole vocabulary twice (tokenizer, config) and dequantizes
every tensor, 36 s for the 135M default on 2 cores against ~2 s from the copy, on every retrain.

Where: `$HOME_CACHE/bases/<fingerprint>/` (default platformdirs `user_cache_dir("home")`), outside the
vault: it is derived data, rebuilt from the GGUF at will, and as large as the model in bf16. Keyed by
the GGUF's weight fingerprint (llm/fingerprint.py) and the dtype, so another quantization or a tune
gets its own. `--4bit` uses the bf16 copy (nf4 quantization on load throws away far more than bf16
rounding); an fp32 copy holds the dequantized values exactly, as transformers' loader makes them.
`HOME_BASE_CACHE=0` loads from the GGUF every time instead (no disk used).

Written atomically: built in a private temp folder beside the final one, then renamed; a folder at
the final name is therefore complete, and a crashed build leaves only a temp folder, swept by the
next build. Folders 0700, files 0600 (weights of a model the user may have fine-tuned privately).
A process that uses a copy holds it (trainer/protocol/base_copies.py, a shared flock until it exits), so
`home cache clean`, which trims copies of deleted models or unused ones, never deletes it under a run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from trainer.protocol.base_copies import CACHE_ENV, FORMAT, cache_root, hold
from vault.fsio import ensure_private_dir, fsync_dir, pid_alive, private_tree

__all__ = ["CACHE_ENV", "FORMAT", "base_dir", "cache_root", "dequantized_base", "enabled", "is_complete"]
DTYPES = ("bfloat16", "float16", "float32")
FP32_COPY_MAX_BYTES = 4 * 2**30  # up to ~1B parameters; the CPU guard keeps bigger models off CPU training


def enabled() -> bool:
    """Whether plain training loads go through the copy (`HOME_BASE_CACHE=0` turns it off)."""
    return os.environ.get("HOME_BASE_CACHE", "1").strip().lower() not in ("0", "no", "off", "false")


def param_count(gguf_path: str | os.PathLike) -> int:
    """The model's weights, counted from the GGUF's tensor shapes (no weight is read)."""
    from math import prod

    from llm.gguf_meta import read_model_info

    return sum(prod(int(d) for d in shape) for shape in read_model_info(Path(gguf_path)).tensors.values())


def copy_dtype(gguf_path: str | os.PathLike, dtype: str) -> str:
    """Which copy a run in `dtype` loads: its own, except fp32 beyond FP32_COPY_MAX_BYTES, which loads
    the bf16 copy upcast (an 8B in fp32 is 32 GB of disk; bf16 rounding of the weights is far below the
    GGUF's own quantization, and the fp32 arithmetic, which verification's precision hangs on, stays)."""
    if dtype == "float32" and param_count(gguf_path) * 4 > FP32_COPY_MAX_BYTES:
        return "bfloat16"
    return dtype


def base_dir(gguf_path: str | os.PathLike, dtype: str = "bfloat16") -> Path:
    """Where the dequantized copy of this GGUF in `dtype` lives (whether or not it is built yet)."""
    from llm.gguf_meta import read_model_info

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    info = read_model_info(Path(gguf_path))
    # The weights' fingerprint and the header's hash: two files with the same weights but another chat
    # template or vocabulary metadata (a re-uploaded GGUF, a base with its template removed) are two copies,
    # or the tokenizer saved with the first would train the second in the wrong format.
    key = f"{info.fingerprint}-{info.header_sha256[:12]}" if info.header_sha256 else info.fingerprint
    return cache_root() / "bases" / (key if dtype == "bfloat16" else f"{key}-{dtype}")


def is_complete(folder: Path, dtype: str | None = None) -> bool:
    """A finished build of the current format: its stamp, a config and the weights are all there."""
    try:
        stamp = json.loads((folder / "home-cache.json").read_text())
    except (OSError, ValueError):
        return False
    weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    same_dtype = dtype is None or stamp.get("dtype") == dtype
    return stamp.get("format") == FORMAT and same_dtype and (folder / "config.json").is_file() and weights


def dequantized_base(gguf_path: str | os.PathLike, dtype: str = "bfloat16") -> Path:
    """The cached transformers directory for `gguf_path` in `dtype`, built on first use. Safe against a
    concurrent build of the same model: each builds in its own temp folder and the first rename wins."""
    gguf_path = Path(gguf_path)
    final = base_dir(gguf_path, dtype)
    hold(final)  # before looking: a `home cache clean` under way finishes first, then this rebuilds
    if is_complete(final, dtype):
        return final
    root = ensure_private_dir(final.parent)
    ensure_private_dir(root.parent)
    _sweep(root, final.name)
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        _build(gguf_path, tmp, dtype)
        private_tree(tmp)  # synced and 0600/0700 before the rename publishes it
        if final.exists() and not is_complete(final, dtype):  # a stale format or a folder someone emptied
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final, dtype):  # not another build's finished copy: a real failure
                raise
        fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _build(gguf_path: Path, out: Path, dtype: str = "bfloat16") -> None:
    """Dequantize through transformers' own GGUF loader (its name maps and q/k un-permutation) and save."""
    import gc

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    where = {"pretrained_model_name_or_path": str(gguf_path.parent), "gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(**where)
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=getattr(torch, dtype),
                                                 quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del model
    gc.collect()
    stamp = {"format": FORMAT, "source": str(gguf_path), "dtype": dtype,
             "transformers": transformers.__version__}
    (out / "home-cache.json").write_text(json.dumps(stamp, indent=1) + "\n")


def _sweep(root: Path, fingerprint: str) -> None:
    """Remove temp folders of this model left by builds whose process is gone (a crash, a kill)."""
    for leftover in root.glob(f".{fingerprint}.*.tmp"):
        pid = leftover.name.split(".")[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
