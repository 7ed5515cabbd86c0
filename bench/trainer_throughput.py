"""Trainer throughput in real (non-padding) tokens/s on a chat-length mix: Home's batching against the
HF+peft padded baseline (`../shared/bench/gpu_lora_baseline.py`'s recipe: LoRA r=16 on all seven
projections, AdamW, random batches padded to their longest), same model shapes, same examples, one run.

Chat data is short and ragged, so the baseline spends most of its compute on padding; Home groups
batches by length (trainer.data.LengthGroupedSampler) and, on CUDA with FlashAttention, packs them
padding-free. Each variant runs in its own subprocess so its peak memory is its own.

    .venv/bin/python bench/trainer_throughput.py                       # CPU, SmolLM2-135M shapes
    python bench/trainer_throughput.py --device cuda --shape llama-1b  # a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {  # random weights: throughput does not depend on their values
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def chat_lengths(n: int, max_len: int, seed: int) -> list[int]:
    """Token lengths of chat turns with context: log-normal, median ~90, long tail to max_len."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(mean=4.5, sigma=0.8, size=n), 16, max_len)]


def batches_for(variant: str, lengths: list[int], batch: int, seed: int) -> list[list[int]]:
    import torch

    if variant == "home":
        sys.path.insert(0, str(REPO))
        from trainer.data import LengthGroupedSampler

        return LengthGroupedSampler(lengths, batch, seed=seed).batches()
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def run_variant(args: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    cfg = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=4096, attn_implementation="sdpa")
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(dtype)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    lengths = chat_lengths(args.examples, args.max_len, args.seed)
    batches = batches_for(args.variant, lengths, args.batch, args.seed)
    gen = torch.Generator().manual_seed(1)

    def step(idx: list[int]) -> tuple[int, int]:
        longest = max(lengths[i] for i in idx)
        ids = torch.randint(0, cfg.vocab_size, (len(idx), longest), generator=gen).to(dev)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            mask[row, : lengths[i]] = 1
        labels = ids.masked_fill(mask == 0, -100)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(mask.sum()), ids.numel()

    for b in batches[: args.warmup]:
        step(b)
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    real = grid = 0
    t0 = time.perf_counter()
    for b in batches:
        r, g = step(b)
        real, grid = real + r, grid + g
    if dev == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if dev == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"variant": args.variant, "real_tok_s": real / dt, "padding": 1 - real / grid, "seconds": dt,
            "peak_gib": peak / 2**30, "steps": len(batches)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument("--examples", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", choices=("home", "baseline"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:  # child process: one variant, one JSON line
        print(json.dumps(run_variant(args)))
        return 0
    rows = {}
    for variant in ("baseline", "home"):
        cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"shape {args.shape} on {args.device}, {args.examples} chat-length examples (median ~90 tokens, "
          f"max {args.max_len}), batch {args.batch}, LoRA r=16 on 7 projections")
    for v, label in (("baseline", "HF+peft, random padded batches"), ("home", "Home, length-grouped batches")):
        r = rows[v]
        print(f"  {label:<34} {r['real_tok_s']:8.0f} real tok/s  padding {r['padding']:5.1%}  "
              f"{r['seconds']:6.1f} s  peak {r['peak_gib']:.2f} GiB")
    ratio = rows["home"]["real_tok_s"] / rows["baseline"]["real_tok_s"]
    mem = rows["home"]["peak_gib"] / rows["baseline"]["peak_gib"]
    print(f"ratio Home / baseline = {ratio:.2f}x real tokens/s at {mem:.2f}x peak memory "
          f"(goal on the GPU: >= 2x at <= 1x memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
