"""Trainer throughput in real (non-padding) tokens/s on a chat-length mix: Home's training step against
the HF+peft padded baseline (`../shared/bench/gpu_lora_baseline.py`'s recipe: LoRA r=16 on all seven
projections, AdamW, random batches padded to their longest, the model's own loss over full logits),
same model shapes, same examples, same completion-only labels, one run.

Home's step is the trainer's (trainer/worker/train.py), without the SFTTrainer around it: batches from
trainer.worker.dataset.LengthGroupedSampler, the micro-batch / activation-checkpointing decision of
trainer.worker.batch_plan.plan_batches, the loss of trainer.worker.loss.target_loss (target rows only, no full
logits), bf16 autocast over fp32 LoRA weights on a GPU, `prepare_model_for_kbit_training` under 4-bit,
and Liger's RMSNorm/SwiGLU/RoPE kernels when liger-kernel is installed (CUDA only; `--liger off` to
measure without). Chat data is short and ragged, so the baseline spends most of its compute on padding.
Each variant runs in its own subprocess so its peak memory is its own.

    .venv/bin/python bench/trainer_throughput.py                       # CPU, SmolLM2-135M shapes
    .venv/bin/python bench/trainer_throughput.py --shape tiny --examples 32   # seconds: a smoke run
    python bench/trainer_throughput.py --device cuda --shape llama-1b --max-len 1024
    python bench/trainer_throughput.py --device cuda --shape llama-8b --batch 4 --qlora --gpu-gib 24
    .venv/bin/python bench/trainer_throughput.py --lengths full --examples 8 --warmup 0 --budgets 1,auto

`--budgets` runs Home's step once per CPU activation budget (each in its own process), for a change of
trainer/worker/batch_plan.py's budget. Measured 2026-11-30 on the shared 2-core box (load 4-7), the
135M shapes, one optimizer step of 8 x 512-token windows (a voice at window 4), issue 16:

    budget 1 GiB (before)   45.4 tok/s  90.2 s  peak 4.43 GiB  micro-batch 4 x 2, activation checkpointing
    budget auto (after)     66.6 tok/s  61.5 s  peak 2.96 GiB  micro-batch 1 x 8, no checkpointing (2.5 GiB)
    auto / 1: 1.47x tokens/s at 0.67x peak memory

(peaks here are the bench process's, without the worker's allocator bounds, trainer/protocol/memwatch.py.
The real run with the new budget, `bench/train_memory.py --steps 2` right after on the same box: train
stage 2.62 GiB, whole run 2.72 GiB (verification), within the 3 GiB goal; checkpointed it was ~1.5 GiB.)
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
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGET_SHARE = 1 / 3  # of each example's tokens carry the loss (the reply; the rest is its context)


def chat_lengths(n: int, max_len: int, seed: int) -> list[int]:
    """Token lengths of chat turns with context: log-normal, median ~90, long tail to max_len."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(mean=4.5, sigma=0.8, size=n), 16, max_len)]


def batches_for(variant: str, lengths: list[int], batch: int, seed: int) -> list[list[int]]:
    import torch

    if variant == "home":
        sys.path.insert(0, str(REPO))
        from trainer.worker.dataset import LengthGroupedSampler

        return LengthGroupedSampler(lengths, batch, seed=seed).batches()
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def quantize_4bit(model, dtype, dev: str) -> None:
    """nf4 storage for every decoder linear, double-quantized: what trainer/worker/base.py's BitsAndBytesConfig
    gives, done in memory (a random model has no file to load from)."""
    import bitsandbytes as bnb
    import torch

    for mod in list(model.model.layers.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=False, compute_dtype=dtype,
                                      quant_type="nf4", compress_statistics=True, device="meta")
                w = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4",
                                      compress_statistics=True)
                q.weight = w._quantize(dev)
                setattr(mod, name, q)
    model.is_loaded_in_4bit = True
    if dev == "cuda":
        torch.cuda.empty_cache()


def use_liger(args: argparse.Namespace) -> bool:
    """Liger's kernels for Home's side: `auto` when liger-kernel imports and the step runs on CUDA."""
    if args.variant != "home" or args.liger == "off" or args.device != "cuda":
        return False
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
    except ImportError:
        if args.liger == "on":
            raise
        return False
    # The loss stays Home's own (target_loss): Liger's fused cross-entropy would replace it.
    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False)
    return True


def run_variant(args: argparse.Namespace) -> dict:
    import contextlib

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, home = args.device, args.variant == "home"
    cuda = dev == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda and args.gpu_gib:  # a smaller card, emulated: the allocator refuses past it
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.gpu_gib * 2**30 / total))
    liger = use_liger(args)
    cfg = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=4096, attn_implementation="sdpa")
    torch.set_default_dtype(dtype)  # built in its training dtype: no fp32 copy of an 8B on the way
    with torch.device(dev):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    if args.qlora:
        quantize_4bit(model, dtype, dev)
    model.config.use_cache = False
    if cuda:  # the peak counts from here: a real 4-bit load never holds the bf16 model whole
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    lengths = ([args.max_len] * args.examples if args.lengths == "full"
               else chat_lengths(args.examples, args.max_len, args.seed))
    batches = batches_for(args.variant, lengths, args.batch, args.seed)
    plan = None
    if home:
        from trainer.worker.batch_plan import plan_batches

        budget = None
        if cuda and args.gpu_gib:  # the plan sees the emulated card, not the whole GPU
            budget = int(0.7 * max(0, args.gpu_gib * 2**30 - torch.cuda.memory_allocated()))
        plan = plan_batches(cfg, args.batch, lengths, 2 if cuda else 4, dev, None, padded=True,
                            budget_bytes=budget)
        if args.qlora:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.checkpointing,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
        elif plan.checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    ids_of = {i: torch.randint(0, cfg.vocab_size, (n,), generator=gen) for i, n in enumerate(lengths)}
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if home and cuda else contextlib.nullcontext

    def tensors(idx: list[int]) -> tuple:
        longest = max(lengths[i] for i in idx)
        ids = torch.zeros((len(idx), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, i in enumerate(idx):
            n = lengths[i]
            ids[row, :n], mask[row, :n] = ids_of[i], 1
            start = n - max(1, round(n * TARGET_SHARE))
            labels[row, start:n] = ids_of[i][start:]
        return ids.to(dev), mask.to(dev), labels.to(dev)

    def step(idx: list[int]) -> tuple[int, int]:
        if not home:
            ids, mask, labels = tensors(idx)
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            real, grid = int(mask.sum()), ids.numel()
        else:
            from trainer.worker.loss import IGNORE, target_loss

            micro = [idx[i:i + plan.micro_batch] for i in range(0, len(idx), plan.micro_batch)]
            parts = [tensors(m) for m in micro]
            n_items = sum(int((lab[:, 1:] != IGNORE).sum()) for _, _, lab in parts)
            real = grid = 0
            for ids, mask, labels in parts:
                with autocast():
                    loss, _, _ = target_loss(model, ids, labels, mask, num_items=n_items)
                loss.backward()
                real, grid = real + int(mask.sum()), grid + ids.numel()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return real, grid

    for b in batches[: args.warmup]:
        step(b)
    if cuda:
        torch.cuda.synchronize()
    real = grid = 0
    t0 = time.perf_counter()
    for b in batches:
        r, g = step(b)
        real, grid = real + r, grid + g
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"variant": args.variant, "budget": os.environ.get("HOME_TRAIN_ACTIVATIONS_GB", "auto"),
            "real_tok_s": real / dt, "padding": 1 - real / grid, "seconds": dt,
            "peak_gib": peak / 2**30, "steps": len(batches), "liger": liger, "qlora": args.qlora,
            "plan": plan.describe() if plan else "one padded batch per step, no checkpointing"}


def measure(args: argparse.Namespace, argv: list[str], variants: tuple[str, ...]) -> dict[str, dict]:
    """Each variant in its own process (its own peak memory, its own Liger patching). Should Home's side
    fail with Liger on, it runs again without, and the row says why (Liger is an option, not the step)."""
    import importlib.util

    liger = args.device == "cuda" and args.liger == "auto" and importlib.util.find_spec("liger_kernel") is not None
    rows = {}
    for variant in variants:
        cmd = [sys.executable, __file__, "--variant", variant, *argv]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        liger_error = None
        if out.returncode != 0 and variant == "home" and liger:
            liger_error = _last(out.stderr, out.returncode)
            out = subprocess.run([*cmd, "--liger", "off"], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            rows[variant] = {"variant": variant, "error": _last(out.stderr, out.returncode)}
            continue
        rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        if liger_error:
            rows[variant]["plan"] += f"; without Liger, which failed: {liger_error[:150]}"
    return rows


def compare_budgets(args: argparse.Namespace, argv: list[str]) -> int:
    """Home's step at each activation budget, each in its own process (its own peak), side by side."""
    rows = []
    for b in [x.strip() for x in args.budgets.split(",") if x.strip()]:
        env = {k: v for k, v in os.environ.items() if k != "HOME_TRAIN_ACTIVATIONS_GB"}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        if b != "auto":
            env["HOME_TRAIN_ACTIVATIONS_GB"] = b
        print(f"budget {b}: running", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--variant", "home", *argv], capture_output=True,
                             text=True, env=env)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps({"shape": args.shape, "batch": args.batch, "max_len": args.max_len, "lengths": args.lengths,
                          "rows": rows}))
        return 0
    print(f"shape {args.shape} on {args.device}, {args.examples} examples ({args.lengths} lengths, max "
          f"{args.max_len}), batch {args.batch}: Home's step by activation budget")
    for r in rows:
        print(f"  budget {r['budget']:>5} GiB  {r['real_tok_s']:7.1f} real tok/s  {r['seconds']:6.1f} s  "
              f"peak {r['peak_gib']:.2f} GiB  {r['plan']}")
    first = rows[0]
    for r in rows[1:]:
        print(f"budget {r['budget']} / {first['budget']}: {r['real_tok_s'] / first['real_tok_s']:.2f}x tokens/s at "
              f"{r['peak_gib'] / first['peak_gib']:.2f}x peak memory")
    return 0


def _last(stderr: str, code: int) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit {code}")[:300]


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
    p.add_argument("--qlora", action="store_true", help="nf4 4-bit base (bitsandbytes), LoRA over it")
    p.add_argument("--gpu-gib", type=float, default=0, help="emulate a card of this many GiB (CUDA)")
    p.add_argument("--liger", choices=("auto", "on", "off"), default="auto", help="Home's side (CUDA)")
    p.add_argument("--only", choices=("home", "baseline"), help="run one side only")
    p.add_argument("--lengths", choices=("chat", "full"), default="chat",
                   help="chat: a log-normal mix (median ~90); full: every example --max-len long (voice windows)")
    p.add_argument("--budgets", default="", help="Home's step only, once per CPU activation budget: GiB "
                   "numbers or 'auto' (the plan's own), e.g. '1,auto': before/after a budget change")
    p.add_argument("--json", action="store_true", help="one JSON object: both rows and the ratios")
    p.add_argument("--variant", choices=("home", "baseline"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:  # child process: one variant, one JSON line
        print(json.dumps(run_variant(args)))
        return 0
    argv = [a for a in sys.argv[1:] if a != "--json"]
    if args.budgets:
        return compare_budgets(args, argv)
    rows = measure(args, argv, (args.only,) if args.only else ("baseline", "home"))
    ok = [r for r in rows.values() if "error" not in r]
    ratio = mem = None
    if len(ok) == 2:
        ratio = rows["home"]["real_tok_s"] / rows["baseline"]["real_tok_s"]
        mem = rows["home"]["peak_gib"] / rows["baseline"]["peak_gib"]
    if args.json:
        print(json.dumps({"shape": args.shape, "device": args.device, "batch": args.batch, "max_len": args.max_len,
                          "examples": args.examples, "qlora": args.qlora, "rows": rows, "ratio": ratio,
                          "memory_ratio": mem}))
        return 0 if len(ok) == len(rows) else 1
    print(f"shape {args.shape} on {args.device}{' (nf4 QLoRA)' if args.qlora else ''}, {args.examples} chat-length "
          f"examples (median ~90 tokens, max {args.max_len}), batch {args.batch}, LoRA r=16 on 7 projections")
    for v, label in (("baseline", "HF+peft, random padded batches"), ("home", "Home's step")):
        r = rows.get(v)
        if r is None:
            continue
        if "error" in r:
            print(f"  {label:<34} failed: {r['error']}")
            continue
        print(f"  {label:<34} {r['real_tok_s']:8.0f} real tok/s  padding {r['padding']:5.1%}  "
              f"{r['seconds']:6.1f} s  peak {r['peak_gib']:.2f} GiB{'  +liger' if r['liger'] else ''}")
        print(f"  {'':<34} {r['plan']}")
    if ratio is not None:
        print(f"ratio Home / baseline = {ratio:.2f}x real tokens/s at {mem:.2f}x peak memory "
              f"(goal on the GPU: >= 2x at <= 1x memory)")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
