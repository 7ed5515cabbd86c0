"""Persona switch latency: Home's hot swap (`Engine.set_adapters`) against reloading llama-cpp-python.

Why this is the number that matters: without hot swap, a persona change means what Ollama and a plain
`Llama(lora_path=…)` do, building a new model+context with the adapter baked in. Home keeps adapters
loaded and swaps the active stack; the measured call includes the KV and prompt-cache reset the engine
does on every change, so nothing is left out. Both sides use the same model, n_ctx and threads.

Goals (printed as PASS/FAIL): switch p99 <= 5 ms, and reloading is >= 100x slower than the switch p99.
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common as c


def measure_switches(model: Path, adapters: list[Path], iters: int, n_ctx: int, threads: int | None) -> list[float]:
    """Seconds per `set_adapters` call, cycling adapter 1 → adapter 2 → base, so every call changes the stack."""
    from llm.engine import Engine
    from llm.params import GenParams

    with Engine(model, n_ctx=n_ctx, n_threads=threads) as eng:
        for i, path in enumerate(adapters):
            eng.load_adapter(f"a{i}", path)
        stacks = [[("a0", 1.0)], [("a1", 1.0)], []]
        chat = [{"role": "user", "content": "Hello!"}]
        eng.generate_text(chat, GenParams(temperature=0.0, max_tokens=4))  # a warm, non-empty context
        for stack in stacks:  # warm-up: first use of each stack
            eng.set_adapters(stack)
        times = []
        for i in range(iters):
            stack = stacks[i % len(stacks)]
            t0 = time.perf_counter()
            changed = eng.set_adapters(stack)
            times.append(time.perf_counter() - t0)
            assert changed, "every call in the cycle must change the stack"
        return times


def measure_reloads(model: Path, adapter: Path, iters: int, n_ctx: int, threads: int | None) -> list[float]:
    """Seconds to construct `llama_cpp.Llama(model_path, lora_path)`: the switch without hot swap."""
    import llama_cpp

    times = []
    for _ in range(iters):
        gc.collect()
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(
            model_path=str(model), lora_path=str(adapter), n_ctx=n_ctx, n_threads=threads, verbose=False
        )
        times.append(time.perf_counter() - t0)
        llm.close()
        del llm
    return times


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], iters=600)
    p.add_argument("--reload-iters", type=int, default=3, help="Llama(lora_path=…) constructions (default 3)")
    args = p.parse_args(argv)
    model = c.model_path(args.model)
    with tempfile.TemporaryDirectory(prefix="home-bench-") as tmp:
        adapters = [c.random_adapter(model, Path(tmp) / f"r16-{s}.gguf", rank=16, seed=s) for s in (1, 2)]
        sw = measure_switches(model, adapters, args.iters, args.n_ctx, args.threads)
        rl = measure_reloads(model, adapters[0], args.reload_iters, args.n_ctx, args.threads)

    ms = [t * 1000 for t in sw]
    p50, p99 = c.pct(ms, 50), c.pct(ms, 99)
    reload_ms = [t * 1000 for t in rl]
    reload_med = statistics.median(reload_ms)
    print(f"model: {model.name}  n_ctx={args.n_ctx}  threads={args.threads or 'default'}  adapters: 2 x r=16")
    print(f"hot swap  Engine.set_adapters ({args.iters} switches, a0 -> a1 -> base):"
          f" p50 {p50:.3f} ms  p99 {p99:.3f} ms  max {max(ms):.3f} ms")
    print(f"reload    Llama(model_path, lora_path) ({args.reload_iters} runs):"
          f" median {reload_med:.1f} ms  min {min(reload_ms):.1f} ms")
    print(f"ratio     reload median / switch p50 = {reload_med / p50:,.0f}x;"
          f"  reload min / switch p99 = {min(reload_ms) / p99:,.0f}x")
    ok_p99, ok_ratio = p99 <= 5.0, min(reload_ms) / p99 >= 100
    print(f"goal      switch p99 <= 5 ms: {c.verdict(ok_p99)};"
          f"  >= 100x faster (reload min / switch p99): {c.verdict(ok_ratio)}")
    return 0 if ok_p99 and ok_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
