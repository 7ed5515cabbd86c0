"""`home drift`: how each adapter is used over time, and whether it still fits the user's recent turns."""

from __future__ import annotations

import argparse
import json

from home.context import Context
from home.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drift", help="adapter usage over time, and loss on recent logs vs at training (flags drift)",
        description="Usage: your turns per week (or day) by the adapters they ran under, from the logs.\n"
                    "Drift: each adapter's loss (llama.cpp, target tokens) on recent turns of the kind it\n"
                    "learned (your messages for a voice, a persona's replies for a persona adapter), against\n"
                    "the loss recorded at training time; flagged past config.toml's router.drift_threshold.",
        epilog="examples:\n  home drift\n  home drift --adapter me-voice-1 --days 14 --json\n"
               "  home drift --usage-only --by day --periods 14",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--adapter", metavar="ID|NAME",
                   help="only this adapter (a name: its newest version; default: every registered one)")
    p.add_argument("--by", choices=("week", "day"), default="week", help="usage period (default week)")
    p.add_argument("--periods", type=int, default=8, metavar="N", help="usage periods shown (default 8)")
    p.add_argument("--days", type=int, default=30, metavar="N", help="what counts as recent (default 30 days)")
    p.add_argument("--min-turns", type=int, default=5, metavar="N",
                   help="recent turns needed to measure a loss (default 5)")
    p.add_argument("--max-examples", type=int, default=32, metavar="N",
                   help="newest recent turns scored per adapter (default 32)")
    p.add_argument("--window", type=int, default=None, metavar="N",
                   help="earlier turns of context per scored turn (default: each adapter's own, as trained)")
    p.add_argument("--usage-only", action="store_true", help="skip the loss (no model is loaded)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from home.router.drift import drift_one, read_turns, usage

    for name in ("periods", "days", "min_turns", "max_examples", "window"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: expected at least 1, got {getattr(args, name)}")
    ctx = Context(args)
    manifest = ctx.manifest()
    entries = [manifest.adapter(args.adapter)] if args.adapter else list(manifest.adapters.values())
    turns = read_turns(ctx.vault)
    use = usage(turns, args.by, args.periods)
    if args.adapter:
        use["adapters"] = {k: v for k, v in use["adapters"].items() if k == entries[0].id}
    reports = []
    if not args.usage_only and entries:
        engine, base_cache = ctx.engine(), {}
        reports = [drift_one(engine, ctx.vault, manifest, e, turns, user=ctx.user, days=args.days,
                             max_examples=args.max_examples, min_turns=args.min_turns,
                             threshold=ctx.config.router.drift_threshold, window=args.window,
                             base_cache=base_cache)
                   for e in entries]
    if args.json:
        print(json.dumps({"usage": use, "drift": reports}, ensure_ascii=False))
    else:
        text = render(use, reports, args.adapter)
        if not entries and not args.usage_only:
            text += "\n\ndrift: no adapters registered (see `home adapters add`, `home train`)"
        print(text)
    return 0


def render(use: dict, reports: list[dict], only: str | None) -> str:
    periods = use["periods"]
    lines = [f"usage: your turns per {use['by']} by adapter (last {len(periods)}: {periods[0]} … {periods[-1]})"]
    if not use["adapters"]:
        lines.append(f"  no logged turns{' used ' + only if only else ''}")
    width = max([len(k) for k in use["adapters"]] + [10])
    for ident, row in sorted(use["adapters"].items(), key=lambda kv: -kv[1]["total"]):
        counts = " ".join(f"{n:>3}" for n in row["counts"].values())
        lines.append(f"  {ident:<{width}} {counts}   total {row['total']}, last {row['last_used'][:10]}")
    if reports:
        lines += ["", "drift: loss on recent logs vs at training"]
    for r in reports:
        flag = {"drift": "DRIFT", "ok": "ok"}.get(r["status"], r["status"])
        lines.append(f"  {r['id']:<{width}} {r['kind']:<8} {flag:<16} {r['note']}")
    return "\n".join(lines)
