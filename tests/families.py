"""Tiny random-weight models of every family Home claims, as GGUFs written by llama.cpp's own converter.

Why llama.cpp's converter and not a GGUF writer of ours: the point is to train on exactly what a user
downloads. The layout, the q/k permutation, the norms and the metadata of a real Llama, Qwen, Gemma or
Phi GGUF are whatever `convert_hf_to_gguf.py` makes them, so the tests run that very script (as shipped
in the llama-cpp-python sdist Home pins, so converter and runtime agree) on a tiny transformers model.

Everything is cached outside the repository (`$HOME_TEST_CACHE`, else `~/.cache/home-tests`):
- `sdist/`: the llama-cpp-python sdist (~76 MB), fetched once by `pip download`;
- `llama.cpp-<version>/`: only `convert_hf_to_gguf.py`, `conversion/` and `gguf-py/` from it (~2 MB);
- `tokenizer-2048/`: the default model's tokenizer re-saved by transformers from its GGUF, its
  vocabulary cut to 2,048 tokens (`tokenizer_dir` says why);
- `models/<family>-<key>.gguf` (~1 MB each): one per family, keyed by the family's config, the converter
  version and `FIXTURE_VERSION`, so a change to any of them builds a new one (the old one is deleted).
Without network and without a cached sdist the tests skip, saying why; they never fail for it.

All families share the SmolLM2 vocabulary (a byte-level BPE) so no SentencePiece model is needed: Gemma3
and Phi3's converters write a BPE vocabulary when the tokenizer is not SentencePiece, and a tiny
SentencePiece model trained on the spot crashed llama.cpp (Gemma2) or was refused (Phi3). The converter
identifies a BPE pre-tokenizer by hashing how it splits a test string; a tokenizer re-saved by
transformers hashes as unknown, so the converter is run with that one lookup falling back to `smollm`,
the name of this vocabulary's pre-tokenizer. A family whose converter only takes SentencePiece (Gemma2)
is built with Gemma3's BPE path: its tensors and metadata are still Gemma2's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LLAMA_CPP_PYTHON = "0.3.36"  # = the pinned runtime in pyproject.toml: converter and runtime agree
FIXTURE_VERSION = 1  # bump when how a model is built changes (the cache key includes it)
OUTTYPE = "f32"  # exact weights on both sides: verification then measures the adapter, not rounding
PRE_TOKENIZER = "smollm"  # the SmolLM2 vocabulary's pre-tokenizer, by its llama.cpp name
VOCAB = 2048  # SmolLM2's first 2,048 tokens (see tokenizer_dir)
_SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
_SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=2048,
              rms_norm_eps=1e-6, initializer_range=0.02)


@dataclass(frozen=True)
class Family:
    """One model family: how to build it in transformers and what llama.cpp calls it in a GGUF."""

    name: str
    config_class: str  # the transformers config class
    arch: str  # `general.architecture` the converter writes
    config: dict = field(default_factory=dict)
    tokenizer_class: str | None = None  # written into tokenizer_config.json (Phi3 reads it)
    bpe_vocab_for: str | None = None  # `module.Class` of a converter that only writes SentencePiece
    # general.name. Not "phi3"/"phi-3": llama.cpp then marks Phi-3's SentencePiece tokens (`<s>`, `</s>`,
    # `<unk>`) by name and fails to load a vocabulary without them (`unordered_map::at`).
    label: str = ""

    def key(self) -> str:
        """What the cached GGUF depends on: a change to any part builds a new file."""
        raw = json.dumps([self.name, self.config_class, self.config, self.tokenizer_class, self.bpe_vocab_for,
                          self.label, LLAMA_CPP_PYTHON, FIXTURE_VERSION, OUTTYPE, PRE_TOKENIZER, VOCAB],
                         sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    # Llama and Mistral: GQA (4 query heads, 2 kv heads) so the q/k permutation uses both counts.
    Family("llama", "LlamaConfig", "llama",
           dict(_SMALL, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    # The converter writes Mistral as `llama` (same permutation); untied output, as real Mistrals.
    Family("mistral", "MistralConfig", "llama",
           dict(_SMALL, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                sliding_window=None)),
    Family("qwen2", "Qwen2Config", "qwen2",
           dict(_SMALL, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    # head_dim 128, as every real Qwen3: transformers' GGUF loader ignores the GGUF's key_length.
    Family("qwen3", "Qwen3Config", "qwen3",
           dict(_SMALL, num_attention_heads=2, num_key_value_heads=1, head_dim=128, tie_word_embeddings=True)),
    # head_dim = query_pre_attn_scalar = 256, as real Gemma2/3: transformers' GGUF loader takes the
    # scalar from its config defaults (256), not from the file.
    Family("gemma2", "Gemma2Config", "gemma2",
           dict(_SMALL, num_attention_heads=1, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                sliding_window=4096, hidden_activation="gelu_pytorch_tanh"),
           bpe_vocab_for="gemma.Gemma2Model"),
    Family("gemma3", "Gemma3TextConfig", "gemma3",
           dict(_SMALL, num_attention_heads=1, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                sliding_window=4096)),
    Family("phi3", "Phi3Config", "phi3",
           dict(_SMALL, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
                original_max_position_embeddings=2048, rope_scaling=None),
           tokenizer_class="GPT2Tokenizer", label="Tiny Phi 3"),
)}

# A family llama.cpp runs but Home does not train for (transformers cannot load an OLMo2 GGUF): the
# trainer must refuse it before training, naming it.
UNSUPPORTED: dict[str, Family] = {f.name: f for f in (
    Family("olmo2", "Olmo2Config", "olmo2", dict(_SMALL, num_attention_heads=4, num_key_value_heads=4)),
)}


# --- the cache and the converter -----------------------------------------------------------------


def cache_dir() -> Path:
    root = os.environ.get("HOME_TEST_CACHE") or Path.home() / ".cache" / "home-tests"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lock(name: str):
    """One builder at a time per cache entry (parallel test processes share the cache)."""
    from vault.fsio import FileLock

    return FileLock(cache_dir() / "locks" / f"{name}.lock", timeout=900)


_unreachable: list[str] = []  # why the download failed, once per test process (then every test skips)


def sdist() -> Path:
    """The llama-cpp-python sdist, downloaded once; skip (never fail) when it cannot be fetched."""
    folder = cache_dir() / "sdist"
    found = folder / f"{_SDIST}.tar.gz"
    if found.is_file():
        return found
    if _unreachable:
        pytest.skip(_unreachable[0])
    with _lock("sdist"):
        if found.is_file():
            return found
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(folder), "--quiet", "--timeout", "30",
               "--retries", "1"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        except subprocess.TimeoutExpired:
            proc, why = None, "timed out"
        if proc is None or proc.returncode != 0 or not found.is_file():
            _unreachable.append(f"llama-cpp-python {LLAMA_CPP_PYTHON} sdist: cannot download it and none is "
                                f"cached in {folder} ({why})")
            pytest.skip(_unreachable[0])
    return found


def converter() -> Path:
    """The folder holding llama.cpp's `convert_hf_to_gguf.py` with what it imports, extracted once."""
    dest = cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    script = dest / "convert_hf_to_gguf.py"
    if script.is_file():
        return dest
    tar_path = sdist()
    with _lock("converter"):
        if script.is_file():
            return dest
        inner = f"{_SDIST}/vendor/llama.cpp/"
        keep = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/")
        tmp = dest.with_name(dest.name + ".partial")
        with tarfile.open(tar_path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(inner)
                       and m.name[len(inner):].startswith(keep)]
            for m in members:
                m.name = m.name[len(inner):]
            tar.extractall(tmp, members=members, filter="data")
        tmp.rename(dest)  # whole or not at all: a half-extracted converter is never used
    return dest


def tokenizer_dir() -> Path:
    """The default model's tokenizer and chat template, its vocabulary cut to the first `VOCAB` tokens.

    Why cut: transformers reads a GGUF's whole vocabulary and merges with gguf's pure-Python reader,
    three times per training load: ~27 s of a family's run at SmolLM2's 49,152 tokens, under 2 s at
    2,048. The cut keeps SmolLM2's specials, its 256 byte tokens and the merges whose parts and result
    survive, in their order: still the same byte-level BPE (pre-tokenizer `smollm`), with shorter words.
    """
    dest = cache_dir() / f"tokenizer-{VOCAB}"
    if (dest / "tokenizer.json").is_file():
        return dest
    with _lock("tokenizer"):
        if not (dest / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            from llm.models import default_model_path

            gguf = default_model_path()
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            tmp = dest.with_name(dest.name + ".partial")
            tok.save_pretrained(tmp)
            spec = json.loads((tmp / "tokenizer.json").read_text())
            bpe = spec["model"]
            bpe["vocab"] = {t: i for t, i in bpe["vocab"].items() if i < VOCAB}
            bpe["merges"] = [m for m in bpe["merges"] if all(p in bpe["vocab"] for p in (*m, "".join(m)))]
            spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < VOCAB]
            (tmp / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
            tmp.rename(dest)
    return dest


# --- the models ----------------------------------------------------------------------------------

# Run as `python -c`: llama.cpp's converter with one lookup softened. Only an *unknown* pre-tokenizer
# hash falls back to the given name; a known one keeps the converter's own answer.
_RUN_CONVERTER = """
import runpy, sys
conv, pre, bpe_for = sys.argv[1:4]
sys.path[:0] = [conv, conv + "/gguf-py"]
import importlib
from conversion import base
original = base.TextModel.get_vocab_base_pre
def named(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        return pre
base.TextModel.get_vocab_base_pre = named
if bpe_for:
    module, cls = bpe_for.rsplit(".", 1)
    setattr(getattr(importlib.import_module("conversion." + module), cls), "set_vocab",
            base.TextModel._set_vocab_gpt2)
sys.argv = [conv + "/convert_hf_to_gguf.py", *sys.argv[4:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def tiny_gguf(name: str) -> Path:
    """The cached GGUF of family `name`, built (seconds) when missing."""
    family = FAMILIES.get(name) or UNSUPPORTED[name]
    out = cache_dir() / "models" / f"{family.name}-{family.key()}.gguf"
    if out.is_file():
        return out
    conv, tok = converter(), tokenizer_dir()
    with _lock(f"model-{family.name}"):
        if out.is_file():
            return out
        work = out.with_suffix(".hf")
        _build_hf(family, tok, work)
        tmp = out.with_suffix(".partial")
        cmd = [sys.executable, "-c", _RUN_CONVERTER, str(conv), PRE_TOKENIZER, family.bpe_vocab_for or "",
               str(work), "--outfile", str(tmp), "--outtype", OUTTYPE,
               "--model-name", family.label or f"Tiny {family.name}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not tmp.is_file():
            raise RuntimeError(f"convert_hf_to_gguf.py failed for {family.name}:\n{proc.stderr[-3000:]}")
        tmp.rename(out)
        _rmtree(work)
        for stale in out.parent.glob(f"{family.name}-*.gguf"):  # older keys: never used again
            if stale != out:
                stale.unlink(missing_ok=True)
    return out


def _build_hf(family: Family, tok: Path, dest: Path) -> None:
    """A random-weight transformers model of `family` with the shared tokenizer, saved to `dest`."""
    import shutil

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _rmtree(dest)
    tokenizer = AutoTokenizer.from_pretrained(tok)
    config_cls = getattr(transformers, family.config_class)
    config = config_cls(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        **family.config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(dest)
    shutil.copytree(tok, dest, dirs_exist_ok=True)
    if family.tokenizer_class:
        cfg_path = dest / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["tokenizer_class"] = family.tokenizer_class
        cfg_path.write_text(json.dumps(cfg, indent=2))


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
