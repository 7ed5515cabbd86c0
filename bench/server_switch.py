"""The model in a llama-server vs in process: adapter switch cost and decode speed, side by side.

Switch cost: what a persona change adds to the next reply's first token. In process, `set_adapters`
(a pointer swap plus the KV reset) and the prompt evaluated again; through llama-server, a request whose
`lora` scales differ from the previous one (the server clears that slot's cache) against one whose
scales are the same. Both sides: same model, n_ctx, threads, prompt; one-token greedy replies, so the
time is the prompt's evaluation plus the switch. The in-process `set_adapters` call alone is printed too.

New adapter: from an adapter file registered to the first token of a reply that uses it. In process,
`load_adapter` + the reply; through `home serve`'s llama-server, its restart with the longer list
(llama-server cannot add a LoRA while running) + the reply. The watcher's debounce and `home serve`'s
manifest poll (up to 2 s) come on top of the server's number.

Decode: tokens/s of a 128-token greedy reply (the server's own `timings.predicted_per_second`, Home's
`Completion.tok_per_s` in process: both count tokens after the first). Goal: server >= 0.9x in process.

    .venv/bin/python bench/server_switch.py [--iters 40] [--threads 2] [--server PATH]

Measured 2026-11-30 on the quiet 2-core box (load 0.2-1.2; the tests' fast build of llama-server, 20 replies
a row): decode 55.9 tok/s in process vs 53.0 through the server, 0.95x (goal >= 0.9: met); first token
after a switch p50 253 ms vs 243 ms (0.96x; the switch itself adds ~220 ms on both sides, the prompt
evaluated again); a new adapter file to its first token 218 ms in process vs 969 ms with the server's
restart (4x). The same run at load 5-8 read 0.41x decode: both sides crawl (2-5 tok/s) and the server's
threads lose more of it, so read these numbers from a quiet machine only.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common as c

CHAT = [{"role": "system", "content": "You are a helpful assistant who answers briefly."},
        {"role": "user", "content": "What should I cook tonight with leeks, potatoes and some cheese?"}]


def first_token_times(backend, stacks, iters: int, same: bool) -> list[float]:
    """Seconds to the first token of a 1-token greedy reply; the stack changes every call unless `same`."""
    from llm.params import GenParams

    one = GenParams(temperature=0.0, seed=1, max_tokens=1)
    times = []
    for i in range(iters):
        stack = stacks[0] if same else stacks[i % len(stacks)]
        t0 = time.perf_counter()
        for _ in backend.stream(CHAT, one, adapters=stack):
            pass
        times.append(time.perf_counter() - t0)
    return times


def set_calls(engine, stacks, iters: int) -> list[float]:
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        engine.set_adapters(stacks[i % len(stacks)])
        times.append(time.perf_counter() - t0)
    return times


def decode_speed(backend, stack, runs: int = 3) -> float:
    from llm.params import GenParams

    params = GenParams(temperature=0.0, seed=1, max_tokens=128, repeat_penalty=1.0)
    speeds = []
    for _ in range(runs):
        for _ in backend.stream(CHAT, params, adapters=stack):
            pass
        speeds.append(backend.last.tok_per_s)
    return statistics.median(speeds)


def row(name: str, values: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    return f"  {name:<44} p50 {c.pct(values, 50) * scale:8.2f} {unit}   p99 {c.pct(values, 99) * scale:8.2f} {unit}"


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0], iters=40)
    p.add_argument("--server", type=Path, default=None, help="llama-server binary (default: as `home serve` finds it)")
    args = p.parse_args()
    from llm.engine import Engine
    from llm.servers.build import find_server
    from llm.servers.llama_server import LlamaServerBackend
    from llm.servers.process import ServerProcess

    model = c.model_path(args.model)
    binary = args.server or find_server()
    if binary is None:
        print("no llama-server: python -m llm.servers.build, or --server PATH", file=sys.stderr)
        return 1
    threads = args.threads or 2
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(3):
            (Path(tmp) / f"a{i}").mkdir()
            files.append(c.random_adapter(model, Path(tmp) / f"a{i}" / "adapter.gguf", rank=16, seed=i))
        stacks = [[("a0", 1.0)], [("a1", 1.0)], []]
        print(f"model {model.name}, n_ctx {args.n_ctx}, {threads} threads, {args.iters} replies per row, "
              f"2 rank-16 adapters on every projection")
        results = {}
        with ServerProcess(binary, model, files[:2], n_ctx=args.n_ctx, n_threads=threads) as server:
            remote = LlamaServerBackend(server.url, model)
            for i, f in enumerate(files[:2]):
                remote.load_adapter(f"a{i}", f)
            first_token_times(remote, stacks, 3, same=False)  # warm-up
            results["server", "switch"] = first_token_times(remote, stacks, args.iters, same=False)
            results["server", "same"] = first_token_times(remote, stacks, args.iters, same=True)
            results["server", "decode"] = decode_speed(remote, stacks[0])
            t0 = time.perf_counter()
            server.restart(files)
            remote.load_adapter("a2", files[2])
            first_token_times(remote, [[("a2", 1.0)]], 1, same=True)
            results["server", "new"] = time.perf_counter() - t0
            remote.close()
        with Engine(model, n_ctx=args.n_ctx, n_threads=threads) as local:
            for i, f in enumerate(files[:2]):
                local.load_adapter(f"a{i}", f)
            first_token_times(local, stacks, 3, same=False)
            results["local", "switch"] = first_token_times(local, stacks, args.iters, same=False)
            results["local", "same"] = first_token_times(local, stacks, args.iters, same=True)
            results["local", "set"] = set_calls(local, stacks, args.iters)
            results["local", "decode"] = decode_speed(local, stacks[0])
            t0 = time.perf_counter()
            local.load_adapter("a2", files[2])
            first_token_times(local, [[("a2", 1.0)]], 1, same=True)
            results["local", "new"] = time.perf_counter() - t0
    print("\nfirst token of a 1-token reply (prompt evaluation + switch):")
    for side, label in (("local", "in process"), ("server", "llama-server")):
        print(row(f"{label}, stack changes every reply", results[side, "switch"]))
        print(row(f"{label}, same stack (prompt cache reused)", results[side, "same"]))
    print(row("in process, set_adapters call alone", results["local", "set"], 1e6, "us"))
    for side, label in (("local", "in process"), ("server", "llama-server")):
        added = c.pct(results[side, "switch"], 50) - c.pct(results[side, "same"], 50)
        print(f"  switch adds (p50 change - p50 same), {label:<13} {added * 1000:8.2f} ms")
    ratio = c.pct(results["server", "switch"], 50) / c.pct(results["local", "switch"], 50)
    print(f"  server / in process, first token after a switch (p50): {ratio:.2f}x")
    print("\nnew adapter file -> first token of a reply using it:")
    print(f"  in process (load_adapter + reply)        {results['local', 'new'] * 1000:8.1f} ms")
    print(f"  llama-server (restart with it + reply)   {results['server', 'new'] * 1000:8.1f} ms   "
          f"{results['server', 'new'] / results['local', 'new']:.0f}x")
    server_tps, local_tps = results["server", "decode"], results["local", "decode"]
    print("\ndecode, 128 greedy tokens (median of 3):")
    print(f"  in process   {local_tps:8.1f} tok/s")
    print(f"  llama-server {server_tps:8.1f} tok/s   ratio {server_tps / local_tps:.2f}x   "
          f"goal >= 0.9: {c.verdict(server_tps / local_tps >= 0.9)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
