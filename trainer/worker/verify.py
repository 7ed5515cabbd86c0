"""Does the converted GGUF LoRA do in llama.cpp what the peft adapter does in transformers?

Both sides get the same token ids (llama.cpp's tokenizer) and the logits at every position are
compared: transformers + peft over the dequantized base (fp32 on the CPU; bf16 on a GPU, where the
noise floor below grows with it), against llama.cpp over the quantized base with the GGUF LoRA. A
4-bit training model is no reference: a clean full-precision one is loaded from the GGUF and the saved
LoRA weights. The logits are folded in one probe at a time (`Agreement`), so memory stays at one
probe's logits at any vocabulary size. The weights are the same numbers on both sides (transformers
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
  pushes it up, even where the adapter is too small to spoil the plain correlation. It fails only with
  a change error (rms of the difference between the two engines' changes over transformers' change)
  above rounding: on an unquantized base the ratio's denominator is rounding alone.
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
# ... but only where the two engines' changes differ by more than rounding: on an f32/f16 base the base
# noise is float rounding alone, and a right adapter's own rounding lifts the ratio with its size (1.4-3.6
# at B std 0.05-0.2, change error <= 0.0011); a wrong q/k layout there errs by 0.017-0.25 (tiny models,
# B std 0.01-0.2), on Q4_1 by 0.43-0.81, where right ones err by 0.09-1.3 from quantization alone.
MIN_DELTA_ERROR = 0.005
# A bf16 reference (a GPU without room for fp32) rounds its own change: right adapters measured 0.006-0.027
# on an f32 tiny Llama (ratio 1.03-1.27), wrong layouts 0.024-0.25 (ratio 1.27-63).
MIN_DELTA_ERROR_HALF = 0.01
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
    delta_error: float = 0.0  # rms(llama.cpp's change - transformers' change) / rms(transformers' change)
    # log-probs of the tokens that actually follow, on both sides (informative): mean |llama.cpp -
    # transformers| with the adapter, and each side's mean NLL with and without it
    next_token: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        """For the manifest's `verification` field (floats rounded, JSON-ready)."""
        def rounded(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: rounded(x) for k, x in v.items()}
            return round(v, 6) if isinstance(v, float) else v

        return {k: rounded(v) for k, v in asdict(self).items()}


ROW_CHUNK = 64  # positions compared at a time in float64: 64 × a 128k vocabulary is 65 MB


def _centred(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - x.mean(axis=-1, keepdims=True)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt((x * x).mean()))


def row_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of x with the same row of y (1 where a row is constant)."""
    xc, yc = _centred(x), _centred(y)
    return _corr_centred(xc, yc)


def _corr_centred(xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1.0), 1.0)


def _log_softmax_at(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log p(ids[i]) under rows[i] (float64 rows), without keeping a normalised copy of the rows."""
    top = rows.max(-1)
    lse = np.log(np.exp(rows - top[:, None]).sum(-1)) + top
    return rows[np.arange(len(ids)), ids] - lse


class Agreement:
    """Running sums of the verification metrics, fed one probe (or a few positions) at a time.

    Why sums: every metric is a per-position reduction or a global sum of squares, so streaming the
    logits through in chunks gives exactly the numbers the whole arrays would, while memory stays at
    one probe's logits (an 8B's 128k vocabulary × 6 probes × 4 sides in float64 was ~12 GB)."""

    def __init__(self) -> None:
        self.n = 0
        self.vocab = 0
        self.sums = dict.fromkeys(("corr", "base_corr", "moved_ll", "moved_hf", "exact", "noise_base",
                                   "noise_adapted", "d_ll", "d_hf", "d_prod", "lp_gap", "nll_ll", "nll_hf",
                                   "nll_ll_base", "nll_hf_base"), 0.0)
        self.gaps: list[np.ndarray] = []  # transformers' margin of its top token over llama.cpp's pick
        self.n_next = 0

    def add(self, hf_base: np.ndarray, hf: np.ndarray, ll_base: np.ndarray, ll: np.ndarray,
            next_ids: np.ndarray | None = None) -> None:
        """Logits of shape (positions, vocab) from the four sides; `next_ids[i]` is the token that
        follows position i (for the log-probs of the actual next tokens), or None."""
        if ll.shape[-1] != hf.shape[-1]:
            raise _VocabMismatch(hf.shape[-1], ll.shape[-1])
        self.vocab = int(ll.shape[-1])
        s = self.sums
        for a in range(0, ll.shape[0], ROW_CHUNK):
            b = min(a + ROW_CHUNK, ll.shape[0])
            hb, ha, lb, la = (_centred(x[a:b]) for x in (hf_base, hf, ll_base, ll))
            s["corr"] += float(_corr_centred(la, ha).sum())
            s["base_corr"] += float(_corr_centred(lb, hb).sum())
            s["moved_ll"] += float((1.0 - _corr_centred(lb, la)).sum())
            s["moved_hf"] += float((1.0 - _corr_centred(hb, ha)).sum())
            picks = ll[a:b].argmax(-1)
            s["exact"] += float((picks == hf[a:b].argmax(-1)).sum())
            self.gaps.append(ha.max(-1) - ha[np.arange(b - a), picks])
            s["noise_base"] += float(((lb - hb) ** 2).sum())
            s["noise_adapted"] += float(((la - ha) ** 2).sum())
            d_ll, d_hf = la - lb, ha - hb
            s["d_ll"] += float((d_ll * d_ll).sum())
            s["d_hf"] += float((d_hf * d_hf).sum())
            s["d_prod"] += float((d_ll * d_hf).sum())
            m = 0 if next_ids is None else max(0, min(b, len(next_ids)) - a)  # rows with a next token
            if m:
                ids = np.asarray(next_ids[a:a + m])
                sides = (("ll", la), ("hf", ha), ("ll_base", lb), ("hf_base", hb))
                lp = {k: _log_softmax_at(x[:m], ids) for k, x in sides}
                s["lp_gap"] += float(np.abs(lp["ll"] - lp["hf"]).sum())
                for k, v in lp.items():
                    s[f"nll_{k}"] -= float(v.sum())
                self.n_next += m
            self.n += b - a

    def result(self, min_delta_error: float = MIN_DELTA_ERROR) -> VerifyResult:
        n, s = self.n, self.sums
        if n == 0:
            return VerifyResult(False, 0.0, 0.0, 0.0, 0.0, 0, reason="no positions compared")
        cells = n * self.vocab
        noise_base = float(np.sqrt(s["noise_base"] / cells))
        noise_adapted = float(np.sqrt(s["noise_adapted"] / cells))
        gaps = np.concatenate(self.gaps)
        d_den = np.sqrt(s["d_ll"] * s["d_hf"])
        excess = noise_adapted / noise_base if noise_base > 0 else (1.0 if noise_adapted == 0 else float("inf"))
        m = max(1, self.n_next)
        return _verdict(
            n, corr=s["corr"] / n, top1=float((gaps <= TIE_NOISE * noise_base).mean()),
            moved_ll=s["moved_ll"] / n, moved_hf=s["moved_hf"] / n, excess=excess, top1_exact=s["exact"] / n,
            d_corr=float(s["d_prod"] / d_den) if d_den > 0 else 0.0, base_corr=s["base_corr"] / n,
            d_err=float(np.sqrt(max(0.0, s["d_ll"] + s["d_hf"] - 2 * s["d_prod"]) / s["d_hf"])) if s["d_hf"] > 0
            else float("inf"),
            next_token=None if not self.n_next else {
                "positions": self.n_next, "logprob_gap": s["lp_gap"] / m,
                "nll_llama": s["nll_ll"] / m, "nll_llama_base": s["nll_ll_base"] / m,
                "nll_hf": s["nll_hf"] / m, "nll_hf_base": s["nll_hf_base"] / m},
            min_d_err=min_delta_error,
        )


class _VocabMismatch(ValueError):
    def __init__(self, hf: int, ll: int):
        super().__init__(f"vocabulary sizes differ: transformers {hf}, llama.cpp {ll}")


def _verdict(n: int, *, corr: float, top1: float, moved_ll: float, moved_hf: float, excess: float,
             top1_exact: float, d_corr: float, base_corr: float, next_token: dict | None,
             d_err: float = 0.0, min_d_err: float = MIN_DELTA_ERROR) -> VerifyResult:
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
                f"moved {moved:.2e} < {MIN_MOVED:.0e} in {side} (the adapter barely changes the logits: "
                "train more steps or at a higher --lr)"
            )
    if excess > MAX_EXCESS_NOISE and d_err > min_d_err:
        fails.append(
            f"excess noise {excess:.3f} > {MAX_EXCESS_NOISE} and change error {d_err:.4f} > {min_d_err} "
            "(llama.cpp changes the logits differently from transformers: q/k permutation, tensor layout "
            "or scale?)"
        )
    return VerifyResult(
        passed=not fails, correlation=corr, top1_agreement=top1, moved_llama=moved_ll, moved_hf=moved_hf,
        n_positions=n, reason="; ".join(fails), excess_noise=excess, top1_exact=top1_exact,
        delta_correlation=d_corr, base_correlation=base_corr, next_token=next_token, delta_error=d_err,
    )


def compare(
    hf_base: np.ndarray, hf_adapted: np.ndarray, ll_base: np.ndarray, ll_adapted: np.ndarray
) -> VerifyResult:
    """The metrics and verdict for logits of shape (positions, vocab) from both sides."""
    acc = Agreement()
    acc.add(hf_base, hf_adapted, ll_base, ll_adapted)
    return acc.result()


def _load_peft_model(base_gguf: Path, peft_dirs: list[Path]) -> Any:
    """A clean reference: the base dequantized from the GGUF in full precision (bf16 on a GPU, fp32 on
    the CPU) plus the saved LoRA weights, whatever the training model was (4-bit, FlashAttention).
    All but the last of `peft_dirs` are merged in first (two-phase: the identity under the style)."""
    from peft import PeftModel

    from trainer.worker.base import load_base

    model = load_base(base_gguf, _reference_device(base_gguf)).model
    for below in peft_dirs[:-1]:
        model = PeftModel.from_pretrained(model, str(below)).merge_and_unload()
    return PeftModel.from_pretrained(model, str(peft_dirs[-1]))


def _reference_device(base_gguf: Path) -> Any:
    """fp32 wherever it fits: a GPU with room for the model in fp32 beside what is already there (the
    training model may still be resident), else one with room in bf16, else the CPU. bf16 rounding in
    the reference lifts the change error of a right adapter on an unquantized base to 0.006-0.027."""
    import torch

    from trainer.worker.base import Device
    from trainer.worker.base_cache import param_count

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        params = param_count(base_gguf)
        for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
            if free > 1.3 * params * size and (dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()):
                return Device("cuda", dtype)
    return Device("cpu", torch.float32)


def _hf_logits(model: Any, ids: list[int]) -> np.ndarray:
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long, device=device)).logits[0]
    return out.float().cpu().numpy()


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

    `peft_model` is an in-memory PeftModel in full precision, run where it is, in eval mode (its mode is
    put back), or a peft save directory (or a list: the ones beneath merged first): then a clean reference
    model is loaded (`_load_peft_model`), which is what a 4-bit or FlashAttention training model needs. `tokenizer` is accepted for the trainer's
    convenience but unused: token ids come from llama.cpp so both sides see exactly the same input.
    `engine`: an existing Engine on the same base (its adapter stack is restored afterwards); else a small
    one is opened and closed. `under`: adapters already loaded in `engine` that the peft model's base has
    merged in (two-phase training): llama.cpp applies them beneath the candidate on both of its sides.

    One probe at a time, both engines, then its logits are folded into running sums (`Agreement`):
    memory is one probe's logits, whatever the number of probes.
    """
    from llm.engine import Engine

    del tokenizer
    base_gguf, adapter_gguf = Path(base_gguf), Path(adapter_gguf)
    probes = list(probes or DEFAULT_PROBES)
    if isinstance(peft_model, (str, os.PathLike)):
        peft_model = _load_peft_model(base_gguf, [Path(peft_model)])
    elif isinstance(peft_model, list):
        peft_model = _load_peft_model(base_gguf, [Path(p) for p in peft_model])
    if getattr(peft_model, "is_loaded_in_4bit", False) or getattr(peft_model, "is_loaded_in_8bit", False):
        raise ValueError("verify: a quantized (4/8-bit) model is no reference; pass its saved peft directory")
    training = peft_model.training
    own_engine = engine is None
    if own_engine:
        engine = Engine(base_gguf, n_ctx=512)
    adapter_id = f"verify-{uuid.uuid4().hex[:8]}"
    previous = list(engine.adapters)
    below = list(under or [])
    acc = Agreement()
    try:
        peft_model.eval()
        engine.load_adapter(adapter_id, adapter_gguf)
        tokens = [ids for ids in (engine.tokenize(t)[: engine.n_ctx] for t in probes) if len(ids) >= 2]
        if not tokens:
            raise ValueError("verify: no probe text gave 2 or more tokens")
        for ids in tokens:
            hf = _hf_logits(peft_model, ids)
            with peft_model.disable_adapter():
                hf_base = _hf_logits(peft_model, ids)
            engine.set_adapters([*below, (adapter_id, 1.0)])
            ll = engine.logits(ids, all_positions=True)
            engine.set_adapters(below)
            ll_base = engine.logits(ids, all_positions=True)
            acc.add(hf_base, hf, ll_base, ll, next_ids=np.asarray(ids[1:]))
            del hf, hf_base, ll, ll_base
    except _VocabMismatch as exc:
        return VerifyResult(False, 0.0, 0.0, 0.0, 0.0, acc.n, reason=str(exc))
    finally:
        peft_model.train(training)
        engine.set_adapters(previous)
        if adapter_id in engine.loaded_adapters:
            engine.unload_adapter(adapter_id)
        if own_engine:
            engine.close()
    half = str(next(peft_model.parameters()).dtype) in ("torch.bfloat16", "torch.float16")
    return acc.result(MIN_DELTA_ERROR_HALF if half else MIN_DELTA_ERROR)
