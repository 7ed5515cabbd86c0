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

The backlog rows: a turn, `--backlog` distillations in a row (as after a resume with turns left undistilled),
the next turn; the chat's cells copied out and back around every call aside (eager, as before) against once
out before the run and once back at the next turn (lazy, Home's). Prints the KV bytes copied (the engine's
`aside_copies`: exact), the backlog's wall time and prompt tokens read, and the next turn's time to first
token (which includes the lazy restore), alternating eager and lazy blocks.

    .venv/bin/python bench/long_session.py [--n-ctx 4096] [--turns 8] [--iters 2] [--backlog 8] [--backlog-only]
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


def chat_turn(engine, system: dict, chat: list[dict], n: int, params) -> dict:  # noqa: ANN001
    """Turn `n` of the chat: its time to first token and the prompt tokens read past the cached prefix."""
    "".join(engine.stream([system, *chat[: 2 * n], message(n, "user")], params))
    done = engine.last
    return {"ttft_s": done.ttft_s, "read": done.prompt_tokens - done.cached_tokens}


def run_backlog(engine, system: dict, chat: list[dict], start: int, backlog: int, params,  # noqa: ANN001
                lazy: bool) -> dict:
    """A fresh chat's turn `start`, `backlog` distillations aside (of the user's earlier turns), turn `start + 1`."""
    from home.distil import distil_messages

    engine.reset()
    engine.lazy_aside = lazy
    try:
        chat_turn(engine, system, chat, start, params)
        before, read, t0 = engine.aside_copies, 0, time.perf_counter()
        for k in range(backlog):
            turn = message(start - backlog + k, "user")["content"]
            "".join(engine.stream(distil_messages(turn), params, adapters=[], aside=True))
            read += engine.last.prompt_tokens - engine.last.cached_tokens
        backlog_s = time.perf_counter() - t0
        nxt = chat_turn(engine, system, chat, start + 1, params)
        after = engine.aside_copies
    finally:
        engine.lazy_aside = True
    return {"backlog_s": backlog_s, "backlog_read": read, "next_ttft_s": nxt["ttft_s"], "next_read": nxt["read"],
            "bytes": after.bytes - before.bytes, "saves": after.saves - before.saves,
            "restores": after.restores - before.restores}


def backlog_starts(engine, system: dict, chat: list[dict], first: int, params) -> dict[str, int]:  # noqa: ANN001
    """A turn from `first` on after which the history's cut holds (the next turn continues the cached prompt:
    the copy is worth putting back) and one after which it moves on the grid (it is not)."""
    def cut(n: int) -> int:
        return engine.fit([system, *chat[: 2 * n], message(n, "user")], params.max_tokens)[1]

    found: dict[str, int] = {}
    for n in range(first, len(chat) // 2 - 1):
        found.setdefault("cut holds" if cut(n) == cut(n + 1) else "cut moves", n)
        if len(found) == 2:
            return dict(sorted(found.items()))  # holds, moves
    raise SystemExit(f"bench/long_session.py: no turn from {first} on where the cut holds and one where it moves")


def backlog_rows(engine, system: dict, chat: list[dict], args, params) -> dict:  # noqa: ANN001
    """Eager and lazy backlogs, the next turn continuing the chat or after the cut moved, in alternating blocks;
    prints their table and returns the medians."""
    modes = {"eager (before)": False, "lazy (Home)": True}
    starts = backlog_starts(engine, system, chat, args.pairs, params)
    rows: dict[tuple[str, str], list[dict]] = {(case, mode): [] for case in starts for mode in modes}
    for i in range(args.iters):
        for case, mode in (rows if i % 2 == 0 else reversed(list(rows))):
            rows[case, mode].append(run_backlog(engine, system, chat, starts[case], args.backlog, params, modes[mode]))
    med = {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for key, rs in rows.items()}
    print(f"backlog: {args.backlog} distillations aside between two turns, {args.iters} blocks each (medians; "
          "a lazy restore is inside the next turn's time to first token)")
    print(f"{'next turn':<11}{'aside':<16}{'KV copied':>12}{'saves':>7}{'restores':>9}{'backlog s':>11}"
          f"{'backlog read':>14}{'next TTFT s':>13}{'next read':>11}")
    for (case, mode), m in med.items():
        print(f"{case:<11}{mode:<16}{m['bytes'] / 2**20:>8.1f} MiB{m['saves']:>7.0f}{m['restores']:>9.0f}"
              f"{m['backlog_s']:>11.3f}{m['backlog_read']:>14.0f}{m['next_ttft_s']:>13.3f}{m['next_read']:>11.0f}")
    for case in starts:
        eager, lazy = med[case, "eager (before)"], med[case, "lazy (Home)"]
        both = lambda m: m["backlog_s"] + m["next_ttft_s"]  # noqa: E731
        print(f"{case}, eager / lazy: KV copied {eager['bytes'] / max(lazy['bytes'], 1):.1f}x, backlog + next "
              f"first token {both(eager):.2f} s / {both(lazy):.2f} s = {both(eager) / both(lazy):.2f}x")
    return {f"{case}, {mode}": m for (case, mode), m in med.items()}


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], iters=2)
    p.add_argument("--turns", type=int, default=8, help="consecutive turns per block (default %(default)s)")
    p.add_argument("--pairs", type=int, default=600, help="exchanges in the chat before the first measured "
                   "turn (default %(default)s: several windows' worth)")
    p.add_argument("--backlog", type=int, default=8, help="distillations in a row for the backlog rows "
                   "(default %(default)s)")
    p.add_argument("--backlog-only", action="store_true", help="only the backlog rows")
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
        print(f"model: {model.name}  n_ctx={args.n_ctx}  {args.pairs} exchanges before, greedy, 8 tokens a reply")
        backlog = backlog_rows(engine, system, chat, args, params) if args.backlog else None
        if args.backlog_only:
            print(json.dumps({"bench": "long_session", "model": model.name, "n_ctx": args.n_ctx, "backlog": backlog}))
            return 0
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
                      "aside_ratio_read": aside_read, "backlog": backlog}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
