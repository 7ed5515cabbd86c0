"""A chat that has outgrown the context window: the time to the first token of each turn, with the kept
history's start moving in steps (llm/fit.py's grid, Home's policy) against moving one exchange a turn; and
with a gestalt distillation between turns, made aside (llm/kv_aside.py, Home's) or not.

Why: the engine reuses the KV cache up to the first token that differs. Dropping the oldest exchange each
turn moves the start of the history every turn, so every reply of a long session re-reads the whole window
(in the app a resumed 400-exchange session took 16-18 s a turn at n_ctx 4096). On the grid the
start stays put for several turns and only the new exchange is read. Both policies run the same turns of
the same synthetic history on one engine, in alternating blocks (each block a fresh chat, then `--turns`
consecutive turns), so load drifting on a shared machine hits both alike. Prints, per policy, the prompt
tokens a turn reads past the prefix left cached (the engine's prompt minus cached tokens: exact, load does
not touch it) and the time to the first token (which load does), their ratios, and one JSON line.
The distillation rows call the engine between turns with the prompt home/distil.py sends for one message.
A block's first turn reads the whole window under either policy and is left out.

    .venv/bin/python bench/long_session.py [--n-ctx 4096] [--turns 8] [--iters 2]
"""

from __future__ import annotations

import json
import statistics
import time

import _common as c

WORDS = ("the river bends past the mill where my sister keeps bees and a small garden of beans and "
         "tomatoes that never ripen before the first frost comes down from the hills in october").split()


def message(i: int, role: str) -> dict:
    """A chat message of 12-60 words, the same for the same `i` in every run."""
    n = 12 + (i * 37 + (role == "assistant") * 11) % 49
    return {"role": role, "content": f"{role} {i}: " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(n))}


def history(pairs: int) -> list[dict]:
    return [m for i in range(pairs) for m in (message(i, "user"), message(i, "assistant"))]


def run_block(engine, system: dict, chat: list[dict], start: int, turns: int, params,  # noqa: ANN001
              distil: bool | None = None) -> list[dict]:
    """A fresh chat, then `turns` consecutive turns from exchange `start` on: one reply each; `distil`: a
    distillation call after each (aside when True)."""
    from home.distil import distil_messages

    engine.reset()
    rows = []
    for t in range(turns):
        n = start + t
        messages = [system, *chat[: 2 * n], message(n, "user")]
        t0 = time.perf_counter()
        "".join(engine.stream(messages, params))
        done = engine.last
        rows.append({"turn": n, "ttft_s": done.ttft_s, "total_s": time.perf_counter() - t0,
                     "prompt_tokens": done.prompt_tokens, "dropped": done.dropped_turns,
                     "read": done.prompt_tokens - done.cached_tokens})  # past the prefix left cached
        if distil is not None:
            "".join(engine.stream(distil_messages("I moved to Porto last spring."), params, adapters=[], aside=distil))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], iters=2)
    p.add_argument("--turns", type=int, default=8, help="consecutive turns per block (default %(default)s)")
    p.add_argument("--pairs", type=int, default=600, help="exchanges in the chat before the first measured "
                   "turn (default %(default)s: several windows' worth)")
    args = p.parse_args(argv)
    model = c.model_path(args.model)

    import llm.fit as fit
    from llm.engine import Engine
    from llm.params import GenParams

    grid = fit.cut_on_grid
    one = lambda k, last: k  # noqa: E731 - the policy before the grid
    policies = {"grid (Home)": (grid, None), "one exchange a turn": (one, None),
                "grid, distil aside (Home)": (grid, True), "grid, distil not aside": (grid, False)}
    params = GenParams(temperature=0.0, max_tokens=8, seed=1)
    system = {"role": "system", "content": "You are Sage, a calm and careful assistant who answers briefly."}
    chat = history(args.pairs + args.turns)
    res: dict[str, list[dict]] = {name: [] for name in policies}
    with Engine(model, n_ctx=args.n_ctx, n_threads=args.threads) as engine:
        for i in range(args.iters):
            for name in (policies if i % 2 == 0 else reversed(list(policies))):
                fit.cut_on_grid, distil = policies[name]
                try:
                    res[name] += run_block(engine, system, chat, args.pairs, args.turns, params, distil)
                finally:
                    fit.cut_on_grid = grid
                c_last = res[name][-1]
                print(f"[{time.strftime('%H:%M:%S')}] {name}: block {i + 1}/{args.iters}, last turn "
                      f"{c_last['ttft_s']:.2f} s to first token, {c_last['prompt_tokens']} prompt tokens", flush=True)
    # the first turn of each block reads the whole window under either policy: the steady state is the rest
    steady = {name: [r["ttft_s"] for k, r in enumerate(rows) if k % args.turns] for name, rows in res.items()}
    read = {name: statistics.mean(r["read"] for k, r in enumerate(rows) if k % args.turns) for name, rows in res.items()}
    med = {name: statistics.median(v) for name, v in steady.items()}
    fill = {name: statistics.median(r["prompt_tokens"] for r in rows) / args.n_ctx for name, rows in res.items()}
    print(f"model: {model.name}  n_ctx={args.n_ctx}  {args.pairs} exchanges before, {args.turns} turns a block, "
          f"{args.iters} blocks per policy, greedy, 8 tokens a reply")
    for name in policies:
        print(f"{name:<26} prompt tokens read a turn: mean {read[name]:.0f}; time to first token: median "
              f"{med[name]:.3f} s, p90 {c.pct(steady[name], 90):.3f} s; prompt fills {fill[name]:.0%} of the window")
    ratio = med["one exchange a turn"] / med["grid (Home)"]
    read_ratio = read["one exchange a turn"] / read["grid (Home)"]
    aside_ttft = med["grid, distil not aside"] / med["grid, distil aside (Home)"]
    aside_read = read["grid, distil not aside"] / read["grid, distil aside (Home)"]
    print(f"ratio one-exchange / grid: tokens read {read_ratio:.1f}x, median time to first token {ratio:.1f}x")
    print(f"ratio distil not aside / aside: tokens read {aside_read:.1f}x, median time to first token "
          f"{aside_ttft:.1f}x")
    print(json.dumps({"bench": "long_session", "model": model.name, "n_ctx": args.n_ctx, "turns": args.turns,
                      "iters": args.iters, "median_ttft_s": med, "mean_tokens_read": read, "fill": fill,
                      "ratio_ttft": ratio, "ratio_read": read_ratio, "aside_ratio_ttft": aside_ttft,
                      "aside_ratio_read": aside_read}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
