"""The training base: by default the app's own GGUF, dequantized by transformers, so the adapter learns
against the very weights llama.cpp will run it on; or a Hugging Face directory given with `--base`.

Also decides the device and dtype once (GPU: bf16, optional 4-bit QLoRA; CPU: fp32), so every stage
agrees on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
        dt = "nf4+bf16" if self.four_bit else str(self.dtype).removeprefix("torch.")
        return f"{self.kind} ({name}, {dt})"


def pick_device(requested: str = "auto", four_bit: bool = False) -> Device:
    """auto → CUDA when torch sees a GPU, else CPU. bf16 on GPUs that support it, fp32 on CPU."""
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise BaseModelError(f"--device: expected auto, cpu or cuda, got {requested!r}")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise BaseModelError("--device cuda: torch sees no CUDA GPU on this machine")
    kind = "cuda" if (requested == "cuda" or (requested == "auto" and has_cuda)) else "cpu"
    if four_bit and kind != "cuda":
        raise BaseModelError("--4bit needs a CUDA GPU (bitsandbytes QLoRA); drop --4bit to train on the CPU")
    if kind == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    return Device(kind, dtype, four_bit)


@dataclass
class Base:
    model: Any  # a transformers PreTrainedModel
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


def load_base(gguf_path: str | os.PathLike | None, device: Device, hf_dir: str | os.PathLike | None = None) -> Base:
    """Load the model and tokenizer to train on. `hf_dir` (from --base) wins over the GGUF for the weights;
    the GGUF is still what the adapter is converted for and verified against."""
    _quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": device.dtype}
    if device.four_bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=device.dtype,
        )
    if hf_dir is not None:
        src = Path(hf_dir)
        if not (src / "config.json").is_file():
            raise BaseModelError(f"{src}: --base must be a Hugging Face model directory with config.json")
        where: dict[str, Any] = {"pretrained_model_name_or_path": str(src)}
    else:
        if gguf_path is None:
            raise BaseModelError("no base model: give the GGUF the app runs or --base DIR")
        src = Path(gguf_path)
        if device.four_bit:
            raise BaseModelError(
                f"{src}: --4bit needs an unquantized base; pass --base with the model's Hugging Face directory"
            )
        where = {"pretrained_model_name_or_path": str(src.parent), "gguf_file": src.name}
        # Dense weights, and no GGUF quantizer left on the model: the Trainer refuses to train a model
        # whose quantizer is not trainable, even one transformers has already dequantized.
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        model = AutoModelForCausalLM.from_pretrained(**where, **kwargs)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BaseModelError(f"{src}: transformers cannot load it for training ({first})") from None
    if device.kind == "cuda" and not device.four_bit:
        model.to("cuda")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.use_cache = False
    torch.manual_seed(0)
    return Base(model, tokenizer, str(src), Path(gguf_path) if gguf_path is not None else None)
