"""The next chat turn's first token after a call aside (a gestalt distillation) on llama-server: Home's
layout (llm/servers/process.py: two slots of one unified KV pool, calls aside in slot 0, the chat in
the other) against one slot as before, with the server's host-RAM prompt cache moving the chat's KV out
and back (`--cache-ram`, llama-server's default 8 GiB) and without it (`--cache-ram 0`: as when the
chat's state is over that cache's limit, e.g. a large model at a long context).

Why: a call aside in the chat's only slot moves the chat's cells out of the way. Each layout runs the same
chat, filled to ~85% of the window, on a fresh server, twice (the layouts in order, then back): a first
turn (read in full, left out), then `--iters` cycles of a turn with nothing before it and a turn after
one distillation aside. Prints, per layout, the prompt tokens a turn reads past the cached prefix
(exact) and the time to the first token (load on a shared machine moves it), medians, the ratios to
Home's layout, and one JSON line.

Measured (SmolLM2-135M, n_ctx 4096, the chat ~3.6k tokens, 2 cores, 6 turns each): after an aside
two slots 0.49 s and 107 tokens read, one slot with the RAM cache 0.51 s and 107, one slot without it
12.5 s and 3513 (25x); with nothing before the turn all three ~0.38 s. The RAM cache's copy is small
for this model (~0.1 s for 150 MiB at 6.7k tokens, the server's own log) and grows with model and context.

    .venv/bin/python bench/server_aside.py [--n-ctx 4096] [--iters 3] [--threads 2] [--server PATH]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import _common as c
from long_session import history, message

LAYOUTS = ("two slots (Home)", "one slot, RAM cache", "one slot, --cache-ram 0")


def one_slot(cls):  # noqa: ANN001, ANN201 - a ServerProcess subclass
    class OneSlot(cls):
        def slot_args(self) -> list[str]:
            return ["-c", str(self.n_ctx), "--parallel", "1"]  # the layout before two slots
    return OneSlot


def run_layout(server, model: Path, system: dict, pairs: int, iters: int, params) -> dict:  # noqa: ANN001
    from home.distil import distil_messages
    from llm.servers.llama_server import LlamaServerBackend

    with server:
        remote = LlamaServerBackend(server.url, model)
        chat = history(pairs + 2 * iters + 1)

        def turn(n: int) -> dict:
            "".join(remote.stream([system, *chat[: 2 * n], message(n, "user")], params))
            done = remote.last
            return {"ttft_s": done.ttft_s, "read": done.prompt_tokens - done.cached_tokens,
                    "prompt": done.prompt_tokens}

        turn(pairs)  # the whole window read once
        rows = {"plain": [], "after aside": []}
        n = pairs
        for k in range(iters):
            n += 1
            rows["plain"].append(turn(n))
            "".join(remote.stream(distil_messages(f"I moved to Porto {k + 1} springs ago."), params,
                                  adapters=[], aside=True))
            n += 1
            rows["after aside"].append(turn(n))
        remote.close()
    return rows


def medians(rows: dict[str, list[dict]]) -> dict:
    return {kind: {"ttft_s": statistics.median(r["ttft_s"] for r in rs), "read": statistics.median(r["read"] for r in rs),
                   "prompt": rs[-1]["prompt"]} for kind, rs in rows.items()}


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], iters=3)
    p.add_argument("--server", type=Path, default=None, help="llama-server binary (default: as `home serve` finds it)")
    p.add_argument("--fill", type=float, default=0.85, help="the chat's share of the window (default %(default)s)")
    args = p.parse_args(argv)
    from llm.params import GenParams
    from llm.servers.build import find_server
    from llm.servers.llama_server import LlamaServerBackend
    from llm.servers.process import ServerProcess

    model = c.model_path(args.model)
    binary = args.server or find_server()
    if binary is None:
        print("no llama-server: python -m llm.servers.build, or --server PATH", file=sys.stderr)
        return 1
    threads = args.threads or 2
    params = GenParams(temperature=0.0, max_tokens=8, seed=1, repeat_penalty=1.0)
    system = {"role": "system", "content": "You are Sage, a calm and careful assistant who answers briefly."}
    with ServerProcess(binary, model, n_ctx=args.n_ctx, n_threads=threads) as probe:  # size the chat
        counter = LlamaServerBackend(probe.url, model)
        pairs = 1
        while counter.count_tokens([system, *history(pairs + 2 * args.iters + 1)]) < args.fill * args.n_ctx:
            pairs += 4
    servers = {LAYOUTS[0]: lambda: ServerProcess(binary, model, n_ctx=args.n_ctx, n_threads=threads),
               LAYOUTS[1]: lambda: one_slot(ServerProcess)(binary, model, n_ctx=args.n_ctx, n_threads=threads),
               LAYOUTS[2]: lambda: one_slot(ServerProcess)(binary, model, n_ctx=args.n_ctx, n_threads=threads,
                                                           extra=["--cache-ram", "0"])}
    rows: dict[str, dict[str, list[dict]]] = {name: {"plain": [], "after aside": []} for name in LAYOUTS}
    for name in [*LAYOUTS, *reversed(LAYOUTS)]:  # there and back: load drifting on a shared machine hits all
        for kind, got in run_layout(servers[name](), model, system, pairs, args.iters, params).items():
            rows[name][kind] += got
        print(f"[{time.strftime('%H:%M:%S')}] {name}: block done", flush=True)
    res = {name: medians(r) for name, r in rows.items()}
    home = res[LAYOUTS[0]]["after aside"]["ttft_s"]
    print(f"model {model.name}, n_ctx {args.n_ctx}, {threads} threads, {pairs} exchanges (the chat "
          f"~{res[LAYOUTS[0]]['plain']['prompt']} tokens), {2 * args.iters} turns each kind, greedy, 8 tokens a reply")
    for name, r in res.items():
        plain, aside = r["plain"], r["after aside"]
        print(f"{name:<26} next turn after an aside: {aside['ttft_s']:.3f} s to first token, {aside['read']:.0f} "
              f"tokens read; with nothing before it: {plain['ttft_s']:.3f} s, {plain['read']:.0f} read; "
              f"after aside / Home's: {aside['ttft_s'] / home:.1f}x")
    print(json.dumps({"bench": "server_aside", "model": model.name, "n_ctx": args.n_ctx, "pairs": pairs,
                      "iters": args.iters, "results": res}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
