"""peft LoRA → GGUF LoRA that llama.cpp hot-swaps over the app's own base GGUF.

Why our own converter rather than llama.cpp's `convert_lora_to_gguf.py`: that script needs the base
model's Hugging Face directory, and Home's base is a GGUF. Everything it does that matters is small:

- names: peft's `base_model.model.<hf module>.lora_A.weight` → `<gguf base tensor>.lora_a`, through the
  `gguf` library's own HF→GGUF tensor map for the base's architecture; the families Home trains for
  are the ones in `SUPPORTED_ARCHS`, each tested end to end on a GGUF made by llama.cpp's converter;
- shapes: A (r, in) and B (out, r) go in unchanged (see llm/lora_gguf.py);
- q/k rows: for the llama family, llama.cpp's HF→GGUF converter permutes the rows of q_proj / k_proj
  head-wise (`permute` below) so its rotary embedding can rotate adjacent pairs. transformers undoes
  that permutation when it loads such a GGUF (its LlamaTensorProcessor), so an adapter trained on the
  loaded model lives in HF row order; B's rows (its output side) get the same permutation as the base
  weights, A is untouched;
- scale: llama.cpp applies `alpha / rank` per tensor with one `adapter.lora.alpha` per file (rank read
  from each tensor). peft's scale is `lora_alpha / r` per module (`/ sqrt(r)` with rsLoRA), with
  per-module r/alpha from rank_pattern/alpha_pattern. Where a module's peft scale differs from
  `file_alpha / its rank`, the ratio is folded into its B, so every module's effective scale is exact.

What a GGUF LoRA cannot express is refused by `check_lora_config` before any training starts.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm.errors import AdapterError, LLMError
from llm.gguf_meta import check_adapter_fits, read_adapter_info, read_model_info
from llm.lora_gguf import write_lora_gguf
from trainer.protocol.families import SUPPORTED_ARCHS, family_refusal  # noqa: F401 (tests read it here)

# The families Home trains for (anything else is refused before training, `check_architecture`: an
# untested layout would fail only after the training it wasted) live in trainer/protocol/families.py.

# GGUF architectures whose llama.cpp converter permutes q/k rows (LlamaModel and its subclasses that
# keep `undo_permute`). Others (qwen2/3, gemma, phi3, …) use NEOX rotary and store rows as-is. A wrong
# entry here cannot slip through: verification against transformers fails on it.
PERMUTED_ARCHS = frozenset({"llama", "granite", "granitemoe", "smollm3"})
_PEFT_PREFIX = "base_model.model."
_EMBEDDING_NAMES = ("embed_tokens", "lm_head", "wte", "wpe", "word_embeddings", "embed_out", "tok_embeddings")


class ConvertError(ValueError):
    """The adapter cannot be turned into a GGUF LoRA for this base (one line, naming the field/tensor)."""

    exit_code = 3


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    arch: str
    rank: int  # the largest rank of any tensor (what read_adapter_info reports)
    alpha: float  # adapter.lora.alpha as written
    n_tensors: int  # LoRA pairs written
    permuted: list[str] = field(default_factory=list)  # module kinds whose B rows were permuted
    folded: int = 0  # modules whose peft scale was folded into B (rank/alpha patterns, rsLoRA)


# --- refusing what GGUF LoRA cannot express ------------------------------------------------------


def _cfg(peft_config: Any, key: str, default: Any = None) -> Any:
    if isinstance(peft_config, Mapping):
        return peft_config.get(key, default)
    return getattr(peft_config, key, default)


def _is_embedding_name(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last in _EMBEDDING_NAMES


def check_lora_config(peft_config: Any, model: Any = None) -> None:
    """Raise `ConvertError` (one line) if the peft config asks for something a GGUF LoRA cannot hold.

    `peft_config` is a `LoraConfig` or its `adapter_config.json` dict; `model` (the base model or the
    PeftModel) lets targets given as a regex or `all-linear` be resolved to real modules.
    """
    ptype = str(_cfg(peft_config, "peft_type", "LORA") or "LORA")
    if ptype.rsplit(".", 1)[-1].upper() != "LORA":
        raise ConvertError(f"peft_type: {ptype}: only plain LoRA converts to GGUF")
    refusals = (
        ("use_dora", "DoRA's magnitude vector has no GGUF LoRA equivalent; set use_dora=False"),
        ("modules_to_save", "fully trained modules cannot ride in a GGUF LoRA; drop modules_to_save"),
        ("trainable_token_indices", "trained token embeddings cannot ride in a GGUF LoRA"),
        ("lora_bias", "a trained LoRA bias cannot ride in a GGUF LoRA; set lora_bias=False"),
        ("target_parameters", "LoRA on raw parameters (MoE experts) is not convertible; use target_modules"),
        ("layer_replication", "replicated layers do not exist in the base GGUF"),
        ("alora_invocation_tokens", "activated LoRA (aLoRA) is not supported by llama.cpp adapters"),
        ("use_qalora", "QA-LoRA pools its input; llama.cpp applies plain LoRA"),
        ("arrow_config", "Arrow routing is not supported by llama.cpp adapters"),
    )
    for key, why in refusals:
        if _cfg(peft_config, key):
            raise ConvertError(f"{key}: {why}")
    bias = _cfg(peft_config, "bias", "none") or "none"
    if bias != "none":
        raise ConvertError(f"bias={bias!r}: trained biases cannot ride in a GGUF LoRA; use bias='none'")
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    why_tied = " (tied here: embed_tokens and lm_head share one matrix)" if tied else ""
    for name in _target_names(peft_config, model):
        if _is_embedding_name(name):
            raise ConvertError(
                f"target_modules: {name}: LoRA on embeddings or lm_head{why_tied} is not supported; "
                "target the attention/MLP projections"
            )


def _target_names(peft_config: Any, model: Any) -> list[str]:
    """The module names LoRA targets: real ones when a model is given, else the config's list."""
    targets = _cfg(peft_config, "target_modules")
    if model is None or not hasattr(model, "named_modules"):
        if isinstance(targets, str):
            return [] if targets == "all-linear" else [t for t in _EMBEDDING_NAMES if re.search(targets, t)]
        return list(targets or [])
    import torch

    names: list[str] = []
    embeds = {
        id(m)
        for m in (_call(model, "get_input_embeddings"), _call(model, "get_output_embeddings"))
        if m is not None
    }
    for name, module in model.named_modules():
        if name.endswith(".base_layer") or not _matches(targets, name.removeprefix(_PEFT_PREFIX)):
            continue
        base = getattr(module, "base_layer", module)  # a module peft already wrapped
        if isinstance(base, torch.nn.Embedding) or id(base) in embeds:
            names.append(name.rsplit(".", 1)[-1] if _is_embedding_name(name) else f"{name} (an embedding)")
        else:
            names.append(name)
    return names


def _call(obj: Any, method: str) -> Any:
    try:
        return getattr(obj, method)()
    except Exception:  # noqa: BLE001 - a model without that accessor simply has none
        return None


def _matches(targets: Any, name: str) -> bool:
    """peft's own rule: a string is a full-match regex (`all-linear` excludes the output layer); a
    list matches a module whose name is, or ends with `.`, one of its entries."""
    if not targets:
        return False
    if isinstance(targets, str):
        return targets != "all-linear" and re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def check_architecture(arch: str, model: Path | str) -> None:
    """Refuse, before any training, a base whose family is not in `SUPPORTED_ARCHS` (one line)."""
    why = family_refusal(arch, model)
    if why:
        raise ConvertError(why)


# --- reading the base GGUF's head counts ---------------------------------------------------------

_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def read_gguf_keys(path: Path, wanted: set[str]) -> dict[str, Any]:
    """Scalar metadata `wanted` from a GGUF header, skipping everything else without decoding it.

    gguf.GGUFReader decodes every vocabulary entry (seconds on a 49k vocab) to give us two integers.
    """
    found: dict[str, Any] = {}
    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = fh.read(size)
            if len(data) != size:
                raise ConvertError(f"{path}: truncated GGUF header")
            return struct.unpack(fmt, data)[0]

        def skip(vtype: int, keep: bool) -> Any:
            if vtype == 8:
                n = read("<Q")
                raw = fh.read(n)
                return raw.decode("utf-8", "replace") if keep else None
            if vtype == 9:
                etype, count = read("<I"), read("<Q")
                if etype in _SCALAR and not keep:
                    fh.seek(count * struct.calcsize(_SCALAR[etype]), 1)
                    return None
                return [skip(etype, keep) for _ in range(count)]
            if vtype not in _SCALAR:
                raise ConvertError(f"{path}: unknown GGUF value type {vtype}")
            return read(_SCALAR[vtype])

        if fh.read(4) != b"GGUF":
            raise ConvertError(f"{path}: not a GGUF file")
        read("<I")  # version
        read("<Q")  # tensor count
        for _ in range(read("<Q")):
            key = fh.read(read("<Q")).decode("utf-8", "replace")
            value = skip(read("<I"), key in wanted)
            if key in wanted:
                found[key] = value
                if len(found) == len(wanted):
                    break
    return found


# --- the conversion ------------------------------------------------------------------------------


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py), on the rows of `weights`: per head,
    interleave the two rotary halves. k uses the kv head count."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    if rows % (2 * n_head):
        raise ConvertError(f"cannot permute {rows} rows into {n_head} heads of rotary pairs")
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _gguf_arch(arch: str) -> Any:
    import gguf

    for enum, name in gguf.MODEL_ARCH_NAMES.items():
        if name == arch:
            return enum
    raise ConvertError(f"general.architecture: {arch}: unknown to the gguf library's tensor map")


def _scale(cfg: Mapping[str, Any], module: str, rank: int) -> float:
    """peft's scaling for `module`: its (pattern) alpha over r, or over sqrt(r) with rsLoRA."""
    from peft.utils.other import get_pattern_key

    alpha_pattern = cfg.get("alpha_pattern") or {}
    alpha = float(alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), cfg.get("lora_alpha", 8)))
    return alpha / (math.sqrt(rank) if cfg.get("use_rslora") else rank)


def _load_peft_dir(peft_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    cfg_path, st_path = peft_dir / "adapter_config.json", peft_dir / "adapter_model.safetensors"
    for p in (cfg_path, st_path):
        if not p.is_file():
            raise ConvertError(f"{p}: missing (expected peft save_pretrained output)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConvertError(f"{cfg_path}: unreadable ({exc})") from None
    from safetensors.torch import load_file  # torch, not numpy: a GPU run may save bf16, numpy has none

    try:
        weights = {k: v.float().numpy() for k, v in load_file(str(st_path)).items()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ConvertError(f"{st_path}: unreadable ({exc})") from None
    return cfg, weights


def convert_peft_to_gguf(
    peft_dir: Path, base_gguf: Path, out_path: Path, *, name: str | None = None
) -> ConvertResult:
    """Write the peft adapter in `peft_dir` as a GGUF LoRA for `base_gguf` at `out_path`."""
    peft_dir, base_gguf, out_path = Path(peft_dir), Path(base_gguf), Path(out_path)
    cfg, weights = _load_peft_dir(peft_dir)
    check_lora_config(cfg)
    try:
        info = read_model_info(base_gguf)
    except LLMError as exc:
        raise ConvertError(str(exc)) from None
    import gguf

    tmap = gguf.get_tensor_name_map(_gguf_arch(info.arch), info.n_layers)
    heads: dict[str, int] = {}
    if info.arch in PERMUTED_ARCHS:
        keys = {f"{info.arch}.attention.head_count", f"{info.arch}.attention.head_count_kv"}
        meta = read_gguf_keys(base_gguf, keys)
        n_head = meta.get(f"{info.arch}.attention.head_count")
        if not isinstance(n_head, int):
            raise ConvertError(f"{base_gguf}: {info.arch}.attention.head_count: missing or not one integer")
        n_kv = meta.get(f"{info.arch}.attention.head_count_kv", n_head)
        if not isinstance(n_kv, int):
            raise ConvertError(
                f"{base_gguf}: {info.arch}.attention.head_count_kv: per-layer counts not supported"
            )
        heads = {"attn_q": n_head, "attn_k": n_kv}

    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        m = re.fullmatch(r"(.+)\.lora_([AB])\.weight", key)
        if m is None or not m.group(1).startswith(_PEFT_PREFIX):
            raise ConvertError(
                f"{peft_dir}: tensor {key}: not a LoRA A/B weight (unsupported adapter content)"
            )
        halves.setdefault(m.group(1).removeprefix(_PEFT_PREFIX), {})[m.group(2)] = value

    alpha = float(cfg.get("lora_alpha") or cfg.get("r") or 8)
    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    permuted: set[str] = set()
    folded = 0
    for module, ab in sorted(halves.items()):
        if set(ab) != {"A", "B"}:
            raise ConvertError(f"{peft_dir}: {module}: has lora_{next(iter(ab))} but not its pair")
        a, b = ab["A"].astype(np.float32), ab["B"].astype(np.float32)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ConvertError(f"{peft_dir}: {module}: A {a.shape} / B {b.shape} are not (r, in) / (out, r)")
        gname = tmap.get_name(module + ".weight", try_suffixes=(".weight",))
        if gname is None:
            raise ConvertError(
                f"{peft_dir}: {module}: no {info.arch} GGUF tensor for this module (another model?)"
            )
        base_shape = info.tensors.get(gname)
        if base_shape is None:
            raise ConvertError(f"{peft_dir}: {module}: base tensor {gname} is not in {base_gguf.name}")
        if base_shape != (b.shape[0], a.shape[1]):
            raise ConvertError(
                f"{peft_dir}: {module}: A {a.shape} / B {b.shape} do not fit {gname} {base_shape} "
                f"(need A (r, {base_shape[1]}) and B ({base_shape[0]}, r))"
            )
        rank = a.shape[0]
        fold = _scale(cfg, module, rank) * rank / alpha  # peft scale / llama.cpp's alpha/rank
        if not math.isclose(fold, 1.0, rel_tol=1e-6):
            b, folded = b * np.float32(fold), folded + 1
        kind = gname.split(".")[-2]
        if kind in heads:
            b = permute(b, heads["attn_q"], heads[kind])
            permuted.add(kind)
        tensors[gname] = (a, b)
    if not tensors:
        raise ConvertError(f"{peft_dir}: no LoRA tensors")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_lora_gguf(out_path, info.arch, alpha, tensors, name=name)
    try:  # the same check the runtime will make, on the file as written
        check_adapter_fits(info, read_adapter_info(out_path), out_path)
    except AdapterError as exc:
        out_path.unlink(missing_ok=True)
        raise ConvertError(str(exc)) from None
    return ConvertResult(
        path=out_path,
        arch=info.arch,
        rank=max(a.shape[0] for a, _ in tensors.values()),
        alpha=alpha,
        n_tensors=len(tensors),
        permuted=sorted(permuted),
        folded=folded,
    )
