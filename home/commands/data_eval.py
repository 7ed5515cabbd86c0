"""`home data eval`: the persona adapters side by side on every persona's held-out lines (perplexity
matrix), and whether their replies can be told apart (attribution accuracy, confusion matrix PNG)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from home.commands import positive_int
from home.context import Context
from home.errors import UsageError
from vault.errors import VaultError
from vault.personas import get_persona, slug


def register(verbs: argparse._SubParsersAction) -> None:
    e = verbs.add_parser(
        "eval", help="compare persona adapters across personas: perplexity matrix and attribution",
        description="For each persona: its adapter's perplexity on its own held-out lines vs the other personas' "
                    "(llama.cpp), and attribution: a TF-IDF + logistic-regression classifier trained on the "
                    "training lines tells which persona wrote the replies each adapter generates. Writes "
                    "report.json, confusion.png and perplexity.png under <vault>/runs/persona-eval-<time>/.",
        epilog="examples:\n  home data eval                         # <vault>/runs/synth/{train,heldout}.jsonl\n"
               "  home data eval ./cast --personas wren-alder,barnaby-fitch\n"
               "  home data eval --train t.jsonl --heldout h.jsonl --adapter wren-alder=wren-alder-persona-2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("folder", nargs="?", metavar="DIR", help="a `home data synth` output folder (default "
                                                            "<vault>/runs/synth)")
    e.add_argument("--train", metavar="FILE", help="training lines for the classifier (default DIR/train.jsonl)")
    e.add_argument("--heldout", metavar="FILE", help="held-out persona records (default DIR/heldout.jsonl)")
    e.add_argument("--personas", metavar="A,B", help="only these personas (default: all in the held-out file)")
    e.add_argument("--adapter", action="append", default=[], metavar="PERSONA=ID",
                   help="use this adapter for a persona, an id or a name (its newest version); default: "
                        "the persona adapter its card lists")
    e.add_argument("--samples", type=int, default=8, metavar="N", help="replies generated per persona (default 8)")
    e.add_argument("--max-tokens", type=positive_int, default=48, metavar="N", help="tokens per greedy reply (default 48)")
    e.add_argument("--max-examples", type=int, default=32, metavar="N", help="held-out lines scored per persona")
    e.add_argument("--json", action="store_true", help="print the report as one JSON object")
    e.set_defaults(func=run_eval)


def _load(path: Path, what: str) -> dict[str, list]:
    from trainer.data.sources import SourceError
    from trainer.data.sources.jsonl import load_jsonl

    try:
        report = load_jsonl(path)
    except SourceError as exc:
        raise UsageError(f"{exc} ({what})") from None
    out: dict[str, list] = {}
    for ex in report.examples:
        if ex.persona:
            out.setdefault(slug(ex.persona), []).append(ex)
    if not out:
        why = f"; first rejection: {report.rejected[0]}" if report.rejected else ""
        raise UsageError(f"{path}: no persona records ({what}){why}")
    return out


def persona_adapter(ctx: Context, manifest, pid: str) -> str | None:
    """The first adapter on the persona's card that is a persona adapter (its own, when there are several)."""
    try:
        card = get_persona(ctx.vault, pid)
    except Exception:  # noqa: BLE001 - an unknown persona simply has no card adapter
        return None
    entries = []
    for ref in [a.get("id") for a in card.home.get("adapters", []) if isinstance(a, dict)]:
        try:  # an id, or a name for its newest version, as the chat applies the card
            entries.append(manifest.resolve(ref))
        except VaultError:
            continue
    mine = [e for e in entries if e.kind == "persona" and e.owner == pid] or [e for e in entries if e.kind == "persona"]
    return mine[0].id if mine else None


def run_eval(args: argparse.Namespace) -> int:
    from trainer.evaluation.evaluate import pick_examples
    from trainer.evaluation.persona_eval import SAMPLE_PARAMS, evaluate_personas, write_report

    if args.samples < 0 or args.max_tokens < 1 or args.max_examples < 1:
        raise UsageError("--samples must be >= 0, --max-tokens and --max-examples >= 1")
    ctx = Context(args)
    folder = Path(args.folder) if args.folder else ctx.vault.runs_dir / "synth"
    train_path = Path(args.train) if args.train else folder / "train.jsonl"
    heldout_path = Path(args.heldout) if args.heldout else folder / "heldout.jsonl"
    heldout = _load(heldout_path, "held-out lines")
    train = _load(train_path, "training lines")
    wanted = [slug(n) for n in (args.personas or "").split(",") if n.strip()] or sorted(heldout)
    for pid in wanted:
        if pid not in heldout:
            raise UsageError(f"{heldout_path}: no held-out records for persona '{pid}' "
                             f"(found: {', '.join(sorted(heldout))})")
        if pid not in train:
            raise UsageError(f"{train_path}: no training records for persona '{pid}' (the classifier needs them)")
    manifest = ctx.manifest()
    adapters: dict[str, str] = {}
    for spec in args.adapter:
        pid, sep, aid = spec.partition("=")
        if not sep or not pid.strip() or not aid.strip():
            raise UsageError(f"--adapter {spec!r}: expected PERSONA=ADAPTER_ID or PERSONA=NAME")
        try:
            adapters[slug(pid)] = manifest.resolve(aid.strip()).id  # a name: its newest version
        except VaultError as exc:
            raise UsageError(f"--adapter {spec!r}: {exc}") from None
    for pid in wanted:
        if pid not in adapters:
            found = persona_adapter(ctx, manifest, pid)
            if found is None:
                raise UsageError(f"persona '{pid}' has no persona adapter: train one with `home train --source "
                                 f"jsonl {train_path} --per-persona`, or pass --adapter {pid}=ID")
            adapters[pid] = found
    adapters = {p: adapters[p] for p in wanted}
    if len(wanted) < 2:
        raise UsageError(f"comparing personas needs at least two; got {', '.join(wanted) or 'none'}")

    report = evaluate_personas(
        ctx.engine(), ctx.vault, adapters, {p: pick_examples(heldout[p], args.max_examples) for p in wanted},
        {p: [ex.target for ex in train[p]] for p in wanted}, samples=args.samples,
        params=SAMPLE_PARAMS.merged(max_tokens=args.max_tokens))
    report["data"] = {"train": str(train_path), "heldout": str(heldout_path)}
    write_report(ctx.vault, report)
    print(json.dumps(report, ensure_ascii=False) if args.json else render(report))
    return 0


def _num(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def render(report: dict) -> str:
    ppl, att = report["perplexity"], report["attribution"]
    cols = ppl["cols"]
    width = max(14, *(len(c) + 2 for c in cols))
    lines = [f"persona eval on {report['model']['name']}: {len(cols)} personas, held-out lines "
             + ", ".join(f"{p} {n}" for p, n in report["heldout_examples"].items()),
             "adapters: " + ", ".join(f"{p} → {a}" for p, a in report["adapters"].items()), "",
             "perplexity (rows: model, columns: held-out lines of; * lowest in the column)",
             f"{'':<24}" + "".join(f"{c:>{width}}" for c in cols)]
    for row in ppl["rows"]:
        column_best = {c: min((r for r in ppl["rows"] if ppl["matrix"][r].get(c) is not None),
                              key=lambda r, c=c: ppl["matrix"][r][c], default=None) for c in cols}
        cells = "".join(f"{('*' if column_best[c] == row else '') + _num(ppl['matrix'][row].get(c)):>{width}}"
                        for c in cols)
        label = row if row == "base" else f"{row} adapter"
        lines.append(f"{label[:23]:<24}{cells}")
    lines.append("")
    lines.append("own vs others (adapter perplexity / base perplexity on the same lines; lower is better):")
    for p, o in ppl["own"].items():
        own = f"{o['gain_own']:.2f}×" if o["gain_own"] is not None else "-"
        others = f"{o['gain_others']:.2f}×" if o["gain_others"] is not None else "-"
        best = "lowest" if o["lowest_in_column"] else "NOT lowest"
        lines.append(f"  {p}: {own} on its own lines, {others} on the others'; {best} on its own lines")
    gen, ref = att["generated"], att["reference"]
    lines += ["", f"attribution (chance {att['chance']:.0%}): replies under each adapter "
                  f"{gen['accuracy']:.0%} of {gen['n']}" if gen else "attribution: no replies generated (--samples 0)",
              f"  the classifier on held-out reference lines: {ref['accuracy']:.0%} of {ref['n']} (its ceiling)"]
    if gen:
        labels = gen["labels"]
        lines.append(f"  {'written as / says':<22}" + "".join(f"{lab[:14]:>16}" for lab in labels))
        for lab, row in zip(labels, gen["matrix"], strict=True):
            lines.append(f"  {lab[:22]:<22}" + "".join(f"{v:>16}" for v in row))
    files = report["files"]
    lines += ["", f"report:     {files['json']}", f"confusion:  {files['confusion']}",
              f"perplexity: {files['perplexity']}"]
    return "\n".join(lines)
