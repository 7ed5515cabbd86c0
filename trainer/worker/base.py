"""The training base: by default the app's own GGUF, dequantized by transformers, so the adapter learns
against the very weights llama.cpp will run it on; or a Hugging Face directory given with `--base`.

Also decides the device and dtype once (GPU: bf16; CPU: fp32; `--4bit`: QLoRA, nf4 weights computing in
that dtype), so every stage agrees on them. `--4bit` works from the GGUF alone: it is dequantized once
into a cache (trainer/worker/base_cache.py) that bitsandbytes quantizes on load. On the CPU, `--4bit` needs
`--device cpu` said out loud: bitsandbytes' CPU backend works (it is how CI tests the QLoRA path) but is
slower than plain fp32 LoRA, so nobody should land on it by accident. Plain runs load such a copy
too, in their own dtype (fp32 holds the dequantized values exactly): 2 s instead of 36 s per load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.worker.base_cache import enabled as cache_enabled


class BaseModelError(ValueError):
    """The base model cannot be loaded for training (missing, unsupported architecture, no GPU for 4-bit)."""

    exit_code = 3


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" | "cuda"
    dtype: Any  # torch dtype
    four_bit: bool = False

    @property
    def label(self) -> str:
        import torch

        name = torch.cuda.get_device_name(0) if self.kind == "cuda" else "cpu"
        dt = str(self.dtype).removeprefix("torch.")
        dt = f"nf4+{dt}" if self.four_bit else dt
        return f"{self.kind} ({name}, {dt})"


def pick_device(requested: str = "auto", four_bit: bool = False) -> Device:
    """auto → CUDA when torch sees a GPU, else CPU. bf16 on GPUs that support it, fp32 on CPU.
    `four_bit` on the CPU only with `requested="cpu"`, and only when bitsandbytes' CPU backend works."""
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise BaseModelError(f"--device: expected auto, cpu or cuda, got {requested!r}")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise BaseModelError("--device cuda: torch sees no CUDA GPU on this machine")
    kind = "cuda" if (requested == "cuda" or (requested == "auto" and has_cuda)) else "cpu"
    if four_bit:
        if kind == "cpu" and requested == "auto":
            raise BaseModelError("--4bit: torch sees no CUDA GPU; add --device cpu to use bitsandbytes' CPU "
                                 "backend (slow, for testing), or drop --4bit to train in fp32 on the CPU")
        _check_bitsandbytes(kind)
    if kind == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    return Device(kind, dtype, four_bit)


def _check_bitsandbytes(kind: str) -> None:
    """Refuse `--4bit` up front, in one line, when bitsandbytes is missing or cannot quantize here."""
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        raise BaseModelError("--4bit needs bitsandbytes: pip install bitsandbytes "
                             "(or the project's gpu extra), or drop --4bit") from None
    if kind != "cpu":
        return
    import torch

    try:  # a tiny round trip: an install without a working CPU backend fails here, not mid-load
        packed, state = bnbf.quantize_4bit(torch.ones(64, 64), quant_type="nf4")
        bnbf.dequantize_4bit(packed, state)
    except Exception as exc:  # noqa: BLE001 - any failure means the same: no 4-bit on this CPU
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BaseModelError(f"--4bit --device cpu: bitsandbytes cannot quantize on this CPU ({first}); "
                             "drop --4bit to train in fp32") from None


@dataclass
class Base:
    model: Any  # a transformers PreTrainedModel (None when loaded with tokenizer_only)
    tokenizer: Any
    source: str  # the GGUF or directory it came from
    gguf_path: Path | None  # the GGUF llama.cpp runs (for conversion names and verification)


def _quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def keep_nf4_differentiable(model: Any) -> int:
    """Stop bitsandbytes repacking nf4 weights for its AVX512-BF16 CPU kernel; returns the layers told.

    Why: on a CPU with AVX512-BF16 (Zen 4, Sapphire Rapids) a Linear4bit's first forward outside training
    mode with no grad (our validation passes, the baseline's first) converts its weight in place to a packed
    layout for good, and every later forward, training ones included, runs `gemv_4bit`, which has no
    backward: the gradient stops at every base linear and the loss is computed in bf16. A run then trains
    the wrong thing, silently (two ranks stopped matching one process, tests/test_trainer_ranks_4bit.py).
    Left unpacked, the weight is dequantized per forward as on any other CPU (bitsandbytes' MatMul4Bit)."""
    told = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            told += 1
    return told


def load_base(gguf_path: str | os.PathLike | None, device: Device, hf_dir: str | os.PathLike | None = None,
              tokenizer_only: bool = False, shard: bool = False) -> Base:
    """Load the model and tokenizer to train on. `hf_dir` (from --base) wins over the GGUF for the weights;
    the GGUF is still what the adapter is converted for and verified against. `tokenizer_only`: the
    tokenizer exactly as training sees it, no weights (`model` None: the ranks of --gpus N hold those).
    `shard`: a rank of a sharded run (trainer/worker/sharding.py): 1/N of the plain weights, placed by
    transformers, or all the nf4 weights stored in the compute dtype for FSDP to shard."""
    _quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": device.dtype}
    if device.four_bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=device.dtype,
            # FSDP shards float tensors only: the packed nf4 bytes viewed as the compute dtype (FSDP-QLoRA)
            **({"bnb_4bit_quant_storage": device.dtype} if shard else {}),
        )
        # quantized where it will run (bitsandbytes packs the weights for that device as they load)
        kwargs["device_map"] = {"": torch.cuda.current_device() if device.kind == "cuda" else "cpu"}
    if shard:  # this rank's share only (trainer/worker/sharding.py)
        from trainer.worker.sharding import load_kwargs

        kwargs |= load_kwargs(device.four_bit)
    if hf_dir is None and gguf_path is not None and (device.four_bit or cache_enabled()):
        # from the GGUF alone: its dequantized copy, built on first use (bf16 under nf4)
        src = Path(gguf_path)
        dtype = "bfloat16" if device.four_bit else _copy_dtype(src, str(device.dtype).removeprefix("torch."))
        where: dict[str, Any] = {"pretrained_model_name_or_path": str(_cached_base(src, dtype))}
    elif hf_dir is not None:
        src = Path(hf_dir)
        if not (src / "config.json").is_file():
            raise BaseModelError(f"{src}: --base must be a Hugging Face model directory with config.json")
        where = {"pretrained_model_name_or_path": str(src)}
    else:
        if gguf_path is None:
            raise BaseModelError("no base model: give the GGUF the app runs or --base DIR")
        src = Path(gguf_path)
        where = {"pretrained_model_name_or_path": str(src.parent), "gguf_file": src.name}
        # Dense weights, and no GGUF quantizer left on the model: the Trainer refuses to train a model
        # whose quantizer is not trainable, even one transformers has already dequantized.
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        model = None if tokenizer_only else AutoModelForCausalLM.from_pretrained(**where, **kwargs)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BaseModelError(f"{src}: transformers cannot load it for training ({first})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        # A base (pre-RLHF) model's GGUF carries no chat template: train in the one llama.cpp then falls
        # back to (llm/template.py), so the adapter learns the format it will be run with.
        from llm.template import CHATML_TEMPLATE

        tokenizer.chat_template = CHATML_TEMPLATE
    if model is None:
        return Base(None, tokenizer, str(src), Path(gguf_path) if gguf_path is not None else None)
    if device.kind == "cuda" and not device.four_bit and not shard:
        model.to("cuda")
    if device.four_bit and device.kind == "cpu":
        keep_nf4_differentiable(model)
    model.config.use_cache = False
    torch.manual_seed(0)
    return Base(model, tokenizer, str(src), Path(gguf_path) if gguf_path is not None else None)


def _copy_dtype(gguf_path: Path, dtype: str) -> str:
    from llm.errors import LLMError
    from trainer.worker.base_cache import copy_dtype

    if not gguf_path.is_file():
        raise BaseModelError(f"{gguf_path}: no such model file")
    try:
        return copy_dtype(gguf_path, dtype)
    except LLMError as exc:  # names the file already
        raise BaseModelError(str(exc).strip().splitlines()[0]) from None
    except (ValueError, OSError) as exc:
        raise BaseModelError(f"{gguf_path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None


def _cached_base(gguf_path: Path, dtype: str) -> Path:
    """The GGUF's dequantized copy in `dtype` (built on first use), as a one-line error if it fails."""
    from trainer.worker.base_cache import dequantized_base

    if not gguf_path.is_file():
        raise BaseModelError(f"{gguf_path}: no such model file")
    try:
        return dequantized_base(gguf_path, dtype)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BaseModelError(f"{gguf_path}: transformers cannot load it for training ({first})") from None
