"""Does the converted GGUF LoRA do in llama.cpp what the peft adapter does in transformers?

Both sides get the same token ids (llama.cpp's tokenizer) and the logits at every position are
compared: transformers + peft in fp32 on the CPU over the dequantized base, against llama.cpp over the
quantized base with the GGUF LoRA. The weights are the same numbers on both sides (transformers
dequantizes the very GGUF), but llama.cpp quantizes activations for its matmuls, so logits differ by
noise (~0.13 logits rms on SmolLM2 Q4_1) and the check is on agreement, not equality:

- correlation: mean over positions of the Pearson correlation of the two logit vectors (≥ 0.998);
- top-1 agreement: share of positions where llama.cpp's top token is transformers' top token, or
  scores within TIE_NOISE × the base noise of it in transformers: a near-tie that the noise between
  the two engines flips on its own, adapter or not (≥ 0.97);
- moved: 1 − mean correlation(base logits, adapter logits), on each side; a zero or lost adapter
  scores exactly 0. (llama.cpp's value includes noise, so transformers' is the adapter's true size.)
- excess noise: rms(llama.cpp − transformers) with the adapter over the same without it (both
  centred per position). It stays ~1 when llama.cpp changes the logits the way transformers does
  (same direction and size); a wrong q/k permutation, tensor layout or scale adds its own error and
  pushes it up, even where the adapter is too small to spoil the plain correlation.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_CORRELATION = 0.998
MIN_TOP1 = 0.97
TIE_NOISE = 1.5  # near-tie: within 1.5 × the per-logit noise rms (~0.2 logits on SmolLM2 Q4_1)
MIN_MOVED = 2e-4  # 1 - corr(base, adapter), each side; a no-op scores exactly 0, 6 real steps ~0.08
MAX_EXCESS_NOISE = 1.25  # measured 0.97-1.09 when right; 1.5-2.2 without the q/k permutation
DEFAULT_PROBES = (
    "The quick brown fox jumps over the lazy dog because it wanted to see what was on the other side.",
    "Question: What is the capital of France?\nAnswer: The capital of France is Paris, its largest city.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Dear diary, today I finally learned how to bake bread. The dough was sticky at first, but",
    "<|im_start|>user\nCan you recommend a good book about the history of science?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "In 1969, Neil Armstrong became the first person to walk on the Moon. The mission, called Apollo 11,",
)


@dataclass(frozen=True)
class VerifyResult:
    passed: bool
    correlation: float  # llama.cpp vs transformers, both with the adapter
    top1_agreement: float  # near-ties (TIE_NOISE) count as agreement
    moved_llama: float  # 1 - corr(base, adapter) in llama.cpp
    moved_hf: float  # the same in transformers
    n_positions: int
    reason: str = ""  # "" when passed; else each failed metric with its value and threshold
    excess_noise: float = 0.0
    top1_exact: float = 0.0  # plain argmax agreement, for the record
    delta_correlation: float = 0.0  # corr of (adapter - base) between the sides; noise-limited, informative
    base_correlation: float = 0.0  # llama.cpp vs transformers without the adapter (the noise floor)

    def to_dict(self) -> dict[str, Any]:
        """For the manifest's `verification` field (floats rounded, JSON-ready)."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _centred(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - x.mean(axis=-1, keepdims=True)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt((x * x).mean()))


def row_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of x with the same row of y (1 where a row is constant)."""
    xc, yc = _centred(x), _centred(y)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1.0), 1.0)


def compare(
    hf_base: np.ndarray, hf_adapted: np.ndarray, ll_base: np.ndarray, ll_adapted: np.ndarray
) -> VerifyResult:
    """The metrics and verdict for logits of shape (positions, vocab) from both sides."""
    n = int(ll_adapted.shape[0])
    corr = float(row_correlation(ll_adapted, hf_adapted).mean())
    picks = ll_adapted.argmax(-1)
    top1_exact = float((picks == hf_adapted.argmax(-1)).mean())
    noise_base = _rms(_centred(ll_base - hf_base))  # per-logit disagreement of the engines, no adapter
    gap = hf_adapted.max(-1) - hf_adapted[np.arange(n), picks]
    top1 = float((gap <= TIE_NOISE * noise_base).mean())
    moved_ll = float(1.0 - row_correlation(ll_base, ll_adapted).mean())
    moved_hf = float(1.0 - row_correlation(hf_base, hf_adapted).mean())
    noise_adapted = _rms(_centred(ll_adapted - hf_adapted))
    excess = noise_adapted / noise_base if noise_base > 0 else (1.0 if noise_adapted == 0 else float("inf"))
    d_ll, d_hf = _centred(ll_adapted - ll_base), _centred(hf_adapted - hf_base)
    d_den = _rms(d_ll) * _rms(d_hf)
    d_corr = float((d_ll * d_hf).mean() / d_den) if d_den > 0 else 0.0

    fails = []
    if corr < MIN_CORRELATION:
        fails.append(
            f"correlation {corr:.5f} < {MIN_CORRELATION} (llama.cpp vs transformers logits with the adapter)"
        )
    if top1 < MIN_TOP1:
        fails.append(f"top-1 agreement {top1:.3f} < {MIN_TOP1} over {n} positions")
    for side, moved in (("transformers", moved_hf), ("llama.cpp", moved_ll)):
        if moved < MIN_MOVED:
            fails.append(
                f"moved {moved:.2e} < {MIN_MOVED:.0e} in {side} (the adapter barely changes the logits)"
            )
    if excess > MAX_EXCESS_NOISE:
        fails.append(
            f"excess noise {excess:.3f} > {MAX_EXCESS_NOISE} (llama.cpp changes the logits differently from "
            "transformers: q/k permutation, tensor layout or scale?)"
        )
    return VerifyResult(
        passed=not fails,
        correlation=corr,
        top1_agreement=top1,
        moved_llama=moved_ll,
        moved_hf=moved_hf,
        n_positions=n,
        reason="; ".join(fails),
        excess_noise=excess,
        top1_exact=top1_exact,
        delta_correlation=d_corr,
        base_correlation=float(row_correlation(ll_base, hf_base).mean()),
    )


def _load_peft_model(base_gguf: Path, peft_dir: Path) -> Any:
    from peft import PeftModel

    from trainer.base import load_base, pick_device

    base = load_base(base_gguf, pick_device("cpu"))
    return PeftModel.from_pretrained(base.model, str(peft_dir))


def _hf_logits(model: Any, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]
    return out.float().numpy()


def verify_adapter(
    base_gguf: Path,
    peft_model: Any,
    adapter_gguf: Path,
    tokenizer: Any = None,
    probes: list[str] | None = None,
    *,
    engine: Any = None,
    under: list[tuple[str, float]] | None = None,
) -> VerifyResult:
    """Compare llama.cpp (base GGUF + `adapter_gguf`) with transformers + peft on `probes`.

    `peft_model` is the in-memory PeftModel or a peft save directory. It is run in fp32 on the CPU in
    eval mode (moved there and back if it lives elsewhere; a 4-bit model cannot be, so pass its saved
    directory instead). `tokenizer` is accepted for the trainer's convenience but unused: token ids
    come from llama.cpp so both sides see exactly the same input. `engine`: an existing Engine on the
    same base (its adapter stack is restored afterwards); else a small one is opened and closed.
    `under`: adapters already loaded in `engine` that the peft model's base has merged in (two-phase
    training): llama.cpp applies them beneath the candidate on both of its sides.
    """
    import torch

    from llm.engine import Engine

    del tokenizer
    base_gguf, adapter_gguf = Path(base_gguf), Path(adapter_gguf)
    probes = list(probes or DEFAULT_PROBES)
    if isinstance(peft_model, (str, os.PathLike)):
        peft_model = _load_peft_model(base_gguf, Path(peft_model))
    if getattr(peft_model, "is_loaded_in_4bit", False) or getattr(peft_model, "is_loaded_in_8bit", False):
        raise ValueError(
            "verify: a quantized (4/8-bit) model cannot run in fp32; pass its saved peft directory"
        )
    param = next(peft_model.parameters())
    device, dtype, training = param.device, param.dtype, peft_model.training
    own_engine = engine is None
    if own_engine:
        engine = Engine(base_gguf, n_ctx=512)
    adapter_id = f"verify-{uuid.uuid4().hex[:8]}"
    previous = list(engine.adapters)
    try:
        peft_model.to("cpu", torch.float32).eval()
        engine.load_adapter(adapter_id, adapter_gguf)
        tokens = [ids for ids in (engine.tokenize(t)[: engine.n_ctx] for t in probes) if len(ids) >= 2]
        if not tokens:
            raise ValueError("verify: no probe text gave 2 or more tokens")
        # One side at a time: alternating torch and llama.cpp makes their thread pools fight for cores.
        sides: dict[str, list[np.ndarray]] = {"hf": [_hf_logits(peft_model, ids) for ids in tokens]}
        with peft_model.disable_adapter():
            sides["hf_base"] = [_hf_logits(peft_model, ids) for ids in tokens]
        engine.set_adapters([*(under or []), (adapter_id, 1.0)])
        sides["ll"] = [engine.logits(ids, all_positions=True) for ids in tokens]
        engine.set_adapters(list(under or []))
        sides["ll_base"] = [engine.logits(ids, all_positions=True) for ids in tokens]
    finally:
        peft_model.to(device, dtype).train(training)
        engine.set_adapters(previous)
        if adapter_id in engine.loaded_adapters:
            engine.unload_adapter(adapter_id)
        if own_engine:
            engine.close()
    cat = {k: np.concatenate(v) for k, v in sides.items()}
    if cat["hf"].shape[-1] != cat["ll"].shape[-1]:
        n = cat["ll"].shape[0]
        return VerifyResult(
            False,
            0.0,
            0.0,
            0.0,
            0.0,
            n,
            reason=(
                f"vocabulary sizes differ: transformers {cat['hf'].shape[-1]}, llama.cpp {cat['ll'].shape[-1]}"
            ),
        )
    return compare(cat["hf_base"], cat["hf"], cat["ll_base"], cat["ll"])
