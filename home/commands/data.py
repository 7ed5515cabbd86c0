"""`home data`: in-character training sets for personas (`synth`) and how the persona adapters compare
(`eval`). Thin: the work is in trainer/data/synth/ and trainer/evaluation/persona_eval.py (torch-free)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from home.commands import data_eval, non_negative_float, positive_int
from home.context import Context
from home.errors import UsageError
from home.progress import fmt_duration
from vault.personas import Persona, get_persona, list_personas

BAR = 24


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthetic in-character datasets for personas, and their evaluation",
                       description="Build and judge persona training data: `synth` writes in-character "
                                   "examples per persona; `eval` compares the persona adapters.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    s = verbs.add_parser(
        "synth", help="generate in-character examples per persona (local model or an OpenAI-compatible endpoint)",
        description="Per persona: scenario prompts (greeting, introduction, personal questions, feelings, advice, "
                    "and from its sheet: relationships, goals, conflicts) answered in character with the sheet "
                    "in context; replies that break character, sound like an assistant, claim another persona, "
                    "are too short/long, loop or repeat are dropped and counted. Output: <out>/personas/<id>.jsonl, "
                    "all.jsonl, train.jsonl, heldout.jsonl, report.json. Re-running continues where it stopped.",
        epilog="examples:\n"
               "  home data synth --all --tiers tiers.toml\n"
               "  home data synth --personas wren-alder,barnaby-fitch --tiers tiers.toml --out ./cast\n"
               "  home data synth --all --tiers tiers.toml --endpoint http://127.0.0.1:8080/v1 --model local\n"
               "then: home train --source jsonl <out>/train.jsonl --per-persona\n\n"
               "tiers.toml:\n  [counts]\n  main = 150\n  major = 100\n  supporting = 60\n  minor = 30\n"
               "  [personas]\n  wren-alder = \"main\"\n  barnaby-fitch = \"minor\"",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--personas", metavar="A,B,C", help="persona ids or names, comma-separated")
    who.add_argument("--all", action="store_true", help="every persona in the vault (not the built-ins)")
    s.add_argument("--tiers", metavar="FILE", required=True, help="TOML: [counts] per tier, [personas] id = tier")
    s.add_argument("--endpoint", metavar="URL", help="an OpenAI-compatible server (…/v1); default: the local model")
    s.add_argument("--model", dest="endpoint_model", metavar="NAME",
                   help="the endpoint's model name (with --endpoint; a local GGUF is `home --model PATH data …`)")
    s.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds per endpoint request")
    s.add_argument("--out", metavar="DIR", help="output folder (default <vault>/runs/synth)")
    s.add_argument("--max-tokens", type=positive_int, default=160, metavar="N", help="tokens per reply (default 160)")
    s.add_argument("--temperature", type=non_negative_float, default=0.8, metavar="T",
                   help="sampling temperature of the replies (default 0.8)")
    s.add_argument("--min-words", type=int, default=3, metavar="N", help="shorter replies are dropped")
    s.add_argument("--max-words", type=int, default=160, metavar="N", help="longer replies are dropped")
    s.add_argument("--holdout", type=float, default=0.1, metavar="F",
                   help="share of each persona's records kept out of train.jsonl (default 0.1)")
    s.add_argument("--json", action="store_true", help="print the report as one JSON object")
    s.set_defaults(func=run_synth)
    data_eval.register(verbs)


def pick_personas(ctx: Context, names: str | None, every: bool) -> list[Persona]:
    if every:
        found = [p for p in list_personas(ctx.vault) if not p.builtin]
        if not found:
            raise UsageError("--all: the vault has no personas yet (`home personas from-sheets DIR` or `import`)")
        return found
    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    if not wanted:
        raise UsageError("--personas: expected persona ids or names, comma-separated")
    out: list[Persona] = []
    for name in wanted:
        p = get_persona(ctx.vault, name)
        if all(o.id != p.id for o in out):
            out.append(p)
    return out


def run_synth(args: argparse.Namespace) -> int:
    from trainer.data.synth import SynthError
    from trainer.data.synth.filters import Limits
    from trainer.data.synth.run import PARAMS, Plan, synthesize
    from trainer.data.synth.tiers import read_tiers

    if args.endpoint_model and not args.endpoint:
        raise UsageError("--model NAME names the endpoint's model and needs --endpoint URL; for a local GGUF "
                         "use `home --model PATH data synth …`")
    if args.endpoint and not args.endpoint_model:
        raise UsageError("--endpoint needs --model NAME (the model the server should use)")
    if args.max_tokens < 8 or args.min_words < 1 or args.max_words < args.min_words or args.timeout <= 0:
        raise UsageError("--max-tokens must be >= 8, --min-words >= 1, --max-words >= --min-words, --timeout > 0")
    if not 0 <= args.holdout < 0.5:
        raise UsageError(f"--holdout {args.holdout}: expected from 0 to 0.5")
    if args.temperature < 0:
        raise UsageError(f"--temperature {args.temperature}: expected >= 0")
    ctx = Context(args)
    tiers = read_tiers(args.tiers)
    personas = pick_personas(ctx, args.personas, args.all)
    names = {p.name for p in list_personas(ctx.vault, errors=[])}
    plans = []
    for p in personas:
        tier = tiers.tier_of(p.id, p.name)
        if tier is None:
            raise SynthError(f"{tiers.path}: personas: '{p.id}' has no tier; add `{p.id} = \"<tier>\"` under "
                             "[personas] or a top-level default = \"<tier>\"")
        related = {r.get("name", "") for r in (p.home.get("sheet") or {}).get("relationships", [])
                   if isinstance(r, dict)}
        others = sorted(n for n in names | related if n and n.casefold() != p.name.casefold())
        plans.append(Plan(p, tier, tiers.counts[tier], others))

    if args.endpoint:
        from trainer.data.synth.openai_client import OpenAIGenerator

        generate = OpenAIGenerator(args.endpoint, args.endpoint_model, timeout=args.timeout)
    else:
        from trainer.data.synth.local import LocalGenerator

        generate = LocalGenerator(ctx.engine())
    out = args.out or str(ctx.vault.runs_dir / "synth")
    params = PARAMS.merged(max_tokens=args.max_tokens, temperature=args.temperature)
    bar = SynthBar(sys.stderr, sys.stderr.isatty(), quiet=args.json)
    try:
        report = synthesize(plans, generate, out, params=params,
                            limits=Limits(args.min_words, args.max_words), holdout=args.holdout,
                            on_progress=bar.update)
    except KeyboardInterrupt:
        bar.clear()
        print(f"home: stopped; what was kept is in {out}: run the same command again to continue", file=sys.stderr)
        return 130
    bar.clear()
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(render_synth(report))
    return 0


class SynthBar:
    """One redrawn line per persona on a terminal; a line per finished persona elsewhere."""

    def __init__(self, out, tty: bool, quiet: bool = False) -> None:
        self.out, self.tty, self.quiet = out, tty, quiet
        self.current: str | None = None
        self.started = time.monotonic()
        self.first = 0

    def update(self, r) -> None:
        if self.quiet:
            return
        if r.persona != self.current:
            self.current, self.started, self.first = r.persona, time.monotonic(), r.attempts
        done = min(r.kept, r.target)
        filled = round(BAR * done / max(1, r.target))
        rate = (time.monotonic() - self.started) / max(1, r.new)
        eta = fmt_duration(rate * (r.target - done)) if r.new else "?"
        line = (f"[{'#' * filled}{'·' * (BAR - filled)}] {done}/{r.target} {r.persona} ({r.tier}): "
                f"{r.attempts} tried, {sum(r.dropped.values())} dropped, eta {eta}")
        if self.tty:
            self.out.write("\r" + line + "\033[K")
            self.out.flush()
        elif done >= r.target or (r.attempts - self.first) % 10 == 0 and r.attempts > self.first:
            self.out.write(line + "\n")
            self.out.flush()

    def clear(self) -> None:
        if self.tty and not self.quiet:
            self.out.write("\r\033[K")
            self.out.flush()


def render_synth(report: dict) -> str:
    lines = [f"generator: {report['generator']}", "",
             f"{'persona':<22}{'tier':<12}{'kept':>10}{'new':>6}{'tried':>7}  dropped"]
    for r in report["personas"]:
        dropped = ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "-"
        lines.append(f"{r['persona']:<22}{r['tier']:<12}{r['kept']:>5}/{r['target']:<4}{r['new']:>6}"
                     f"{r['attempts']:>7}  {dropped}")
        if r["stopped_early"] and r["kept"] < r["target"]:
            lines.append(f"  ! {r['persona']}: {r['kept']} of {r['target']}: {r['stopped_early']}")
    total = report["dropped"]
    lines.append("dropped by filter: " + (", ".join(f"{k} {v}" for k, v in total.items()) or "none"))
    files = report["files"]
    lines += ["", f"all:      {files['all']}", f"train:    {files['train']}", f"held out: {files['heldout']}",
              f"then: home train --source jsonl {files['train']} --per-persona"]
    return "\n".join(lines)
