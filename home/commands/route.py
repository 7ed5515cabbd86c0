"""`home route TEXT`: what the router would do with a message, and why, without generating anything.

The model's weights are never loaded: the base fingerprint comes from the GGUF's metadata
(Context.model_info), which is all the router compares adapters against.
"""

from __future__ import annotations

import argparse
import json

from home.context import Context
from home.errors import require_text
from vault.personas import get_persona


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "route", help="show which adapters the router picks for a message, and why (no generation)",
        description="Classify TEXT's task and tone, score every registered adapter for this user and "
                    "persona, and print the stack a turn would use, with the reason. Explicit choices "
                    "(--adapter, --no-adapters, a persona's own adapters) win, as in a chat.",
        epilog="examples:\n  home route \"my python script crashes with a KeyError\"\n"
               "  home route \"draft a note to Sam\" --json\n  home route \"plan my week\" --persona sage",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("text", help="the message to route")
    p.add_argument("--persona", metavar="NAME", help="the active persona (default: config.toml's)")
    p.add_argument("--adapter", metavar="ID[:SCALE]", action="append", default=[],
                   help="an explicit choice, as `home ask --adapter` (repeatable)")
    p.add_argument("--no-adapters", action="store_true", help="an explicit choice of the base model alone")
    p.add_argument("--mode", choices=("auto", "focused", "character"), default="auto",
                   help="pin the reply mode (default auto: the task class picks focused or character)")
    p.add_argument("--json", action="store_true", help="print the decision as one JSON object (as logged)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from home.router import Router, explicit_choice

    require_text(args.text, 'home route "my script crashes with a KeyError"')
    ctx = Context(args)
    name = args.persona or ctx.config.persona or None
    persona = get_persona(ctx.vault, name) if name else None
    explicit = explicit_choice(persona, args.adapter, args.no_adapters)
    manifest = ctx.manifest()
    info = ctx.model_info
    router = Router.load(ctx.vault, ctx.config)
    decision = router.decide(manifest, user=ctx.user, persona=persona, text=args.text, explicit=explicit,
                             model_fingerprint=info.fingerprint, model_name=info.name, mode=args.mode)
    if args.json:
        print(json.dumps(decision.to_dict(), ensure_ascii=False))
    else:
        print(render(decision.to_dict(), ctx.user, persona.id if persona else None))
    return 0


def _runners_up(probs: dict, best: str) -> str:
    others = sorted(((p, label) for label, p in probs.items() if label != best), reverse=True)[:2]
    return ", ".join(f"{label} {p:.2f}" for p, label in others)


def render(d: dict, user: str, persona: str | None) -> str:
    lines = [f"user {user}" + (f", persona {persona}" if persona else ", no persona")]
    for key in ("task", "tone"):
        label = d[key]
        lines.append(f"{key:<5} {label['label']} {label['confidence']:.2f}   "
                     f"(then {_runners_up(label['probs'], label['label'])})")
    lines.append("candidates" if d["candidates"] else "candidates: none registered")
    for c in d["candidates"]:
        mark = "*" if c["chosen"] else ("+" if c["fits"] else "-")
        score = f"{c['score']:.2f}" if c["score"] is not None else "-"
        lines.append(f"  {mark} {c['id']:<24} {c['kind']:<8} {score:>5}  {c['why']}")
    stack = ", ".join(f"{a['id']}:{a['scale']:g}" for a in d["chosen"]) or "(base model, no adapters)"
    mode = d.get("mode")
    if mode:
        scaled = f", persona adapters x{mode['scale']:g}" if mode["scaled"] else ""
        lines.append(f"mode   {mode['name']}{scaled}   ({mode['reason']})")
    lines += [f"stack  {stack}", f"reason {d['reason']}", f"({d['ms']:.1f} ms; * chosen, + fits, - turned down)"]
    return "\n".join(lines)
