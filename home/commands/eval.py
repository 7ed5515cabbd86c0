"""`home eval`: is an adapter worth using? Base vs adapter (and base + persona prompt) on the user's data.

A thin command: it checks the request (adapter known and made for this model, data present), then
hands the measuring to `trainer.evaluation.evaluate` (torch-free; the trainer worker uses the same function) and
prints the report as a table or one JSON object. The report and its plot are always written to the vault.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time

from home.commands import eval_compare, positive_int
from home.context import Context
from home.errors import UsageError
from home.prompt import system_prompt
from home.stack import StackSpec, resolve_stack
from trainer.data.sources import KINDS
from trainer.protocol.job import trained_window
from vault.personas import get_persona


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="measure an adapter against the base model on your data (perplexity, style, samples)",
        description="Evaluate a registered adapter on examples from a data source:\n"
                    "- perplexity of the base, the adapter, and the base with the persona's system prompt\n"
                    "  (llama.cpp, target tokens only);\n"
                    "- vocabulary overlap, distinct-2, catchphrase and assistant-cliché rates of greedy samples;\n"
                    "- the samples side by side, base vs adapter.\n"
                    "Writes report.json and report.png under <vault>/runs/eval-<adapter>-<time>/.",
        epilog="examples:\n  home eval me-voice-1 --source logs\n"
               "  home eval me-voice-3 --source preferences   # preference accuracy on held-out pick-best pairs\n"
               "  home eval quill-persona-1 --source jsonl quill.jsonl --persona quill --json\n"
               "  home eval --compare base.gguf --source essays essays/   # two bases x (base, adapter)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("adapter", metavar="ADAPTER", nargs="?",
                   help="a registered adapter: an id (that version) or a name (its newest version); "
                        "see `home adapters list` (none with --compare)")
    p.add_argument("--source", nargs="+", required=True, metavar=("SOURCE", "PATH"),
                   help=f"where the examples come from ({', '.join(KINDS)}, or preferences: your pick-best pairs, "
                        "for preference accuracy and reward margin) and the file or folder "
                        "(logs/gestalts: optional, default the vault)")
    p.add_argument("path", nargs="?", help=argparse.SUPPRESS)  # `home eval ID PATH --source jsonl` works too
    p.add_argument("--speaker", metavar="NAME", help="transcript: whose lines are the targets")
    p.add_argument("--persona", metavar="NAME",
                   help="persona for 'base with persona' (default: the adapter's persona, else config.toml's); "
                        "for a persona adapter it also selects that persona's records/replies")
    p.add_argument("--window", type=positive_int, default=None, metavar="N",
                   help="context turns per example (default: the adapter's own, as it was trained)")
    p.add_argument("--samples", type=int, default=4, metavar="N", help="prompts to generate from (default 4)")
    p.add_argument("--max-tokens", type=positive_int, metavar="N", help="tokens per greedy sample (default 48)")
    p.add_argument("--max-examples", type=int, default=64, metavar="N",
                   help="examples to score, spread evenly over the data (default 64)")
    p.add_argument("--all-data", action="store_true",
                   help="score the whole source even when it is the adapter's own training data (default there: "
                        "only the validation split its run held out, the latest examples for a voice adapter)")
    p.add_argument("--exact", action="store_true",
                   help="score every example in its own context window, as trained (slower); default: "
                        "consecutive examples of a conversation share one pass, each target seeing at least its window")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    eval_compare.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer.data.sources import SourceError, load_source
    from trainer.evaluation.chains import MAX_GROUP as RUN
    from trainer.evaluation.evaluate import (
        SAMPLE_PARAMS,
        adapter_persona,
        evaluate_adapter,
        pick_examples,
        validation_split,
        write_report,
    )

    if args.compare:  # two bases × (base, adapter)
        return eval_compare.run(args)
    if not args.adapter:
        raise UsageError("which adapter? home eval ADAPTER --source …, or --compare MODEL2 to train and compare")
    if args.source and args.source[0] == "preferences":  # pick-best pairs: preference accuracy, not perplexity
        from home.commands import eval_preferences

        return eval_preferences.run(args)
    if args.samples < 0 or args.max_examples < 1 or (args.max_tokens is not None and args.max_tokens < 1):
        raise UsageError("--samples must be >= 0, --max-examples and --max-tokens >= 1")
    source, path = source_and_path(args)
    ctx = Context(args)
    manifest = ctx.manifest()
    info = ctx.model_info
    [(adapter_id, scale)] = resolve_stack(manifest, [StackSpec(args.adapter)], info.fingerprint, info.name)
    entry = manifest.adapters[adapter_id]

    persona = get_persona(ctx.vault, args.persona) if args.persona else adapter_persona(ctx.vault, entry)
    if persona is None and ctx.config.persona and entry.kind != "voice":
        # a voice adapter speaks as the user: the assistant's persona prompt is no bar for it (a pass saved)
        persona = get_persona(ctx.vault, ctx.config.persona)
    # A persona adapter is judged on its persona's lines: its replies in the logs, or (when --persona
    # names it) its records in a jsonl file; otherwise the persona only sets the comparison's prompt.
    own = entry.kind == "persona" and persona is not None and (source == "logs" or bool(args.persona))
    try:
        data = load_source(source, path, vault=ctx.vault, speaker=args.speaker,
                           target="persona" if own and source == "logs" else "user",
                           persona=persona.id if own else None, user=ctx.user,
                           window=args.window or trained_window(entry.training))
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    if not data.examples:
        why = f"; first rejection: {data.rejected[0]}" if data.rejected else ""
        raise UsageError(f"{path or source}: no examples to evaluate on "
                         f"({len(data.rejected)} rejected{why})")
    held = None if args.all_data else validation_split(entry, data.examples, data.dataset_hash())
    examples = pick_examples(held or data.examples, args.max_examples, run=1 if args.exact else RUN)

    report = evaluate_adapter(
        ctx.engine(), ctx.vault, adapter_id, scale, examples,
        persona_system=system_prompt(persona, ctx.user), samples=args.samples,
        persona_name=persona.id if persona else None, dataset_hash=data.dataset_hash(), source=source,
        params=SAMPLE_PARAMS.merged(max_tokens=args.max_tokens), progress=progress_line(), shared=not args.exact,
        validation=held is not None,
    )
    report["data"] = {"source": source, "path": path, "available": len(data.examples),
                      "rejected": len(data.rejected)}
    write_report(ctx.vault, report)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(render(report))
    return 0


def progress_line():
    """Progress on stderr (stdout stays the report or its JSON), each line with the time since the start."""
    t0 = time.monotonic()

    def say(line: str) -> None:
        print(f"eval [{time.monotonic() - t0:5.0f} s] {line}", file=sys.stderr, flush=True)

    return say


def source_and_path(args: argparse.Namespace) -> tuple[str, str | None]:
    """`--source KIND [PATH]` (or the path as a positional): argparse alone cannot put an optional
    positional after an option, so the path travels with --source."""
    kind, *rest = args.source
    if kind not in KINDS:
        raise UsageError(f"--source {kind!r}: expected one of {', '.join(KINDS)}")
    if len(rest) > 1 or (rest and args.path):
        raise UsageError(f"--source {' '.join(args.source)}: expected SOURCE [PATH] and one path at most")
    return kind, rest[0] if rest else args.path


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def render(report: dict) -> str:
    """The report as a table people can read in a terminal."""
    a, ppl = report["adapter"], report["perplexity"]
    d = report.get("data", {})
    where = f"{d.get('source')} {d.get('path') or ''}".strip()
    persona = f"+ {report['persona']}" if report["persona"] else "+ persona"
    lines = [
        f"eval of '{a['id']}' (scale {a['scale']:g}) on {report['examples']} of {d.get('available', '?')} "
        f"examples from {where}, {report['scored_tokens']} target tokens"
        + (" (each reply after the conversation before it, as the retrain panel measures; --exact for "
           "windows alone)" if report.get("scoring") == "shared"
           else " (--exact: each example in its own window, not the retrain panel's measure)"),
        f"{'held-out' if report['heldout'] else 'NOT held-out'}: {report['heldout_note']}",
        *([f"sounds {report['likeness']:g}% more like {'you' if a.get('kind') == 'voice' else 'them'} than the base "
           f"(held-out perplexity {_num(ppl['base'])} → {_num(ppl['adapter'])})"]
          if report.get("likeness") is not None else []),
        "",
        f"{'':<22}{'base':>10}{persona:>14}{'adapter':>10}{'targets':>10}",
        f"{'perplexity':<22}{_num(ppl['base']):>10}{_num(ppl['base_with_persona']):>14}"
        f"{_num(ppl['adapter']):>10}{'':>10}",
    ]
    for label, key in (("vocab overlap", "vocab_overlap"), ("distinct-2", "distinct_2"),
                       ("catchphrases / sample", "catchphrases"), ("clichés / sample", "cliches")):
        m = report[key]
        lines.append(f"{label:<22}{_num(m['base']):>10}{'':>14}{_num(m['adapter']):>10}"
                     f"{_num(m.get('targets')):>10}")
    phrases = report["catchphrases"]["phrases"]
    lines.append("catchphrases: " + (", ".join(f'"{p}"' for p in phrases) if phrases else "none recur"))
    found = report["cliches"]["found"]
    if found["base"] or found["adapter"]:
        lines.append(f"clichés: base {found['base'] or '-'}, adapter {found['adapter'] or '-'}")
    for i, s in enumerate(report["samples"], 1):
        lines += ["", f"[{i}] {_clip(s['prompt'])}  ({s['origin']})"]
        for who in ("target", "base", "adapter"):
            lines.append(textwrap.fill(_clip(s[who], 300), 100, initial_indent=f"  {who:>7}: ",
                                       subsequent_indent=" " * 11))
    lines += ["", f"report: {report['files']['json']}", f"plot:   {report['files']['png']}"]
    return "\n".join(lines)


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
