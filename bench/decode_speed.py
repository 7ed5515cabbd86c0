"""Decode speed: Home's `Engine.stream` against bare llama-cpp-python, and one adapter against none.

Why: the engine adds per-token work on top of `Llama.generate` (incremental UTF-8 detokenising, stop
string hold-back, cancel checks, a lock); this shows what that costs. The bare side runs
`Llama.generate` on the very same prompt tokens with the same sampler settings, n_ctx, batch and
threads, for as many tokens as the engine sampled. Both count decode speed the same way: tokens after
the first over the time after the first (prompt evaluation excluded). Runs are interleaved in pairs
(alternating which goes first) and the ratio is the median of the per-pair ratios, so load drifting
on a shared machine hits both sides of a pair alike.

Goal (printed as PASS/FAIL): Engine / bare >= 0.95. The adapter ratio is llama.cpp's own LoRA cost.
`--gpu-layers N` (default: all when llama.cpp can offload, as Home does) is given to both sides alike,
so on a GPU this is the same comparison with the model on the GPU.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common as c

CHAT = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]  # 128+ greedy tokens


def bare_decode(llm, prompt: list[int], n: int, params, min_p: float) -> tuple[float, list[int]]:
    """tok/s of `Llama.generate` over `n` sampled tokens (EOS does not stop it), and the tokens."""
    llm.set_seed(params.seed)
    gen = llm.generate(prompt, top_k=params.top_k, top_p=params.top_p, min_p=min_p,
                       temp=params.temperature, repeat_penalty=params.repeat_penalty)
    out: list[int] = []
    t_first = t_last = 0.0
    for tok in gen:
        t_last = time.perf_counter()
        if not out:
            t_first = t_last
        out.append(tok)
        if len(out) >= n:
            break
    gen.close()
    return (len(out) - 1) / (t_last - t_first), out


def engine_decode(eng, params) -> tuple[float, int, str]:
    """tok/s of one `Engine.stream` reply (its own Completion.tok_per_s), tokens sampled, and the text."""
    text = "".join(eng.stream(CHAT, params))
    last = eng.last
    sampled = last.completion_tokens + (1 if last.finish_reason == "stop" else 0)  # EOS was sampled too
    return last.tok_per_s, sampled, text


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], iters=5)
    p.add_argument("--tokens", type=int, default=128, help="tokens per reply (default 128)")
    p.add_argument("--gpu-layers", type=int, default=None, metavar="N",
                   help="layers on the GPU for both sides: -1 all, 0 none (default: Home's, all when offload is built in)")
    args = p.parse_args(argv)
    model = c.model_path(args.model)

    import llama_cpp

    from llm.engine import MIN_P, Engine
    from llm.params import GenParams

    params = GenParams(temperature=0.0, top_k=40, top_p=0.9, repeat_penalty=1.0, seed=1, max_tokens=args.tokens)
    res: dict[str, list[float]] = {"engine": [], "bare": [], "adapter": [], "none": []}
    with tempfile.TemporaryDirectory(prefix="home-bench-") as tmp, Engine(
        model, n_ctx=args.n_ctx, n_threads=args.threads, gpu_layers=args.gpu_layers
    ) as eng:
        eng.load_adapter("r16", c.random_adapter(model, Path(tmp) / "r16.gguf", rank=16, seed=1))
        bare = llama_cpp.Llama(
            model_path=str(model), n_ctx=args.n_ctx, n_batch=eng.n_batch, n_ubatch=eng.n_batch,
            n_threads=args.threads, n_threads_batch=args.threads, logits_all=False, verbose=False,
            n_gpu_layers=eng.offload.requested,  # the engine's resolved setting, not the default of 0
        )
        offload = eng.offload
        prompt = eng.tokenize(eng.render(CHAT))
        _, n, text = engine_decode(eng, params)  # warm-up; fixes the token count both sides decode
        _, toks = bare_decode(bare, prompt, n, params, MIN_P)
        same = bare.detokenize(toks).decode("utf-8", "replace").startswith(text)
        for i in range(args.iters):
            for side in (("engine", "bare") if i % 2 == 0 else ("bare", "engine")):
                if side == "engine":
                    res["engine"].append(engine_decode(eng, params)[0])
                else:
                    res["bare"].append(bare_decode(bare, prompt, n, params, MIN_P)[0])
            for stack in (([("r16", 1.0)], []) if i % 2 == 0 else ([], [("r16", 1.0)])):
                eng.set_adapters(stack)
                res["adapter" if stack else "none"].append(engine_decode(eng, params)[0])
        eng.set_adapters([])
        bare.close()

    med = {k: statistics.median(v) for k, v in res.items()}
    ratio = statistics.median(e / b for e, b in zip(res["engine"], res["bare"], strict=True))
    lora_ratio = statistics.median(a / b for a, b in zip(res["adapter"], res["none"], strict=True))
    print(f"model: {model.name}  n_ctx={args.n_ctx}  threads={args.threads or 'default'}"
          f"  prompt {len(prompt)} tokens, {n} decoded, greedy, {args.iters} interleaved pairs")
    print(f"offload (both sides): {offload}")
    print(f"same greedy text on both sides: {'yes' if same else 'no'}")
    print(f"bare llama-cpp-python Llama.generate: {med['bare']:.1f} tok/s  (all: {_fmt(res['bare'])})")
    print(f"Home Engine.stream:                   {med['engine']:.1f} tok/s  (all: {_fmt(res['engine'])})")
    print(f"ratio Engine / bare (median of pairs) = {ratio:.3f}   goal >= 0.95: {c.verdict(ratio >= 0.95)}")
    print(f"Engine, no adapter:                   {med['none']:.1f} tok/s  (all: {_fmt(res['none'])})")
    print(f"Engine, one r=16 adapter (all layers): {med['adapter']:.1f} tok/s  (all: {_fmt(res['adapter'])})")
    print(f"ratio adapter / none (median of pairs) = {lora_ratio:.3f}   (llama.cpp's LoRA cost, informational)")
    return 0 if ratio >= 0.95 else 1


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
