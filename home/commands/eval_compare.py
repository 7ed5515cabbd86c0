"""`home eval --compare MODEL2 --source …`: the same data, two bases, four columns.

(The model Home runs, with and without an adapter trained on the data) beside (MODEL2, with and without
its own): held-out perplexity and bits per byte, the samples' text statistics, and the samples side by
side for the same prompts (`trainer.evaluation.compare`). Both bases are checked before anything trains:
a missing or corrupt GGUF, or a family Home cannot train for, is one line and exit 3. An adapter already
registered for a base from exactly this data (same dataset hash, a recorded time split) is taken as it is;
otherwise one is trained there (`python -m trainer`, kind style: neither the user's voice nor a router
pick) with a time split, so both bases are held out on the same latest examples.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap

from home.context import Context
from home.errors import UsageError
from home.progress import ProgressPrinter
from home.worker import start_worker
from llm.errors import ModelError
from trainer.protocol.events import read_events
from trainer.protocol.job import DEVICES, Job, default_window


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("two bases (--compare MODEL2)",
                             "an adapter per base is trained here when none from this data is registered")
    g.add_argument("--compare", metavar="MODEL2",
                   help="a second base GGUF (path or owner/repo/file.gguf): the four-way table base, base + adapter "
                        "for the model Home runs and for MODEL2")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, metavar="N", help="optimizer steps per training")
    length.add_argument("--epochs", type=float, metavar="N", help="passes over the data (default 3)")
    g.add_argument("--rank", type=int, default=16, metavar="R", help="LoRA rank (default 16)")
    g.add_argument("--lr", type=float, default=2e-4, metavar="LR", help="learning rate (default 2e-4)")
    g.add_argument("--batch-size", type=int, default=8, metavar="N", help="examples per optimizer step (default 8)")
    g.add_argument("--max-length", type=int, default=512, metavar="TOKENS", help="longest example (default 512)")
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to train (default auto: a CUDA GPU when there is one)")
    g.add_argument("--retrain", action="store_true", help="train on both bases even when adapters are registered")


class Side:
    """One base: its context (the model resolved and checked), and the adapter that speaks for the data there."""

    def __init__(self, ctx: Context, label: str):
        self.ctx, self.label = ctx, label
        self.adapter_id: str | None = None
        self.how = ""

    @property
    def name(self) -> str:
        return self.ctx.model_info.name or self.ctx.model_path.name


def check_base(ctx: Context, label: str) -> Side:
    """The model resolved, its header read, llama.cpp's probe passed and its family trainable: or one line."""
    from llm.probe import probe_model
    from trainer.protocol.families import family_refusal

    try:
        path, info = ctx.model_path, ctx.model_info
        probe_model(path, info)
    except ModelError as exc:
        raise ModelError(f"{label}: {exc}") from None
    why = family_refusal(info.arch, path)
    if why:
        raise ModelError(f"{label}: {why}")
    return Side(ctx, label)


def run(args: argparse.Namespace) -> int:
    from home.commands.eval import progress_line, source_and_path
    from llm.fingerprint import same_base
    from trainer.data.sources import SourceError, load_source
    from trainer.evaluation.chains import MAX_GROUP as RUN
    from trainer.evaluation.compare import four_way, target_bytes, write_compare
    from trainer.evaluation.evaluate import SAMPLE_PARAMS, evaluate_adapter, pick_examples, validation_split

    if args.adapter:
        raise UsageError(f"--compare takes no ADAPTER ({args.adapter}): on each base the adapter made from "
                         "this data is taken when registered, else trained")
    if args.samples < 0 or args.max_examples < 1 or (args.max_tokens is not None and args.max_tokens < 1):
        raise UsageError("--samples must be >= 0, --max-examples and --max-tokens >= 1")
    source, path = source_and_path(args)
    if source == "preferences":
        raise UsageError("--compare measures perplexity on examples: --source preferences has none")
    first = Context(args)
    sides = [check_base(first, "the model Home runs"),
             check_base(Context(argparse.Namespace(**{**vars(args), "model": args.compare})), f"--compare {args.compare}")]
    if same_base(sides[0].ctx.model_info.fingerprint, sides[1].ctx.model_info.fingerprint):
        raise UsageError(f"--compare {args.compare}: the same model as the one Home runs ({sides[0].name})")
    try:
        data = load_source(source, path, vault=first.vault, speaker=args.speaker, target="user",
                           persona=args.persona, window=args.window or default_window("style"), user=first.user)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    if not data.examples:
        why = f"; first rejection: {data.rejected[0]}" if data.rejected else ""
        raise UsageError(f"{path or source}: no examples to compare on ({len(data.rejected)} rejected{why})")
    digest = data.dataset_hash()

    for side in sides:
        found = None if args.retrain else registered(side.ctx, digest)
        if found:
            side.adapter_id, side.how = found, "registered"
            print(f"compare: {side.name}: taking {found} (registered, trained on this data)", file=sys.stderr)
        else:
            side.adapter_id, side.how = train(side, args, source, path), "trained"
    manifest = first.manifest()
    held = None
    for side in sides:
        mine = validation_split(manifest.adapters[side.adapter_id], data.examples, digest) or []
        keys = {ex.key() for ex in mine}
        held = mine if held is None else [ex for ex in held if ex.key() in keys]
    if not held:
        raise UsageError(f"{path or source}: the two adapters hold out no example in common: nothing to compare on")
    examples = pick_examples(held, args.max_examples, run=1 if args.exact else RUN)

    reports, say = [], progress_line()
    for side in sides:
        say(f"{side.name}: base and {side.adapter_id} on {len(examples)} held-out examples")
        engine = side.ctx.engine()
        try:
            reports.append(evaluate_adapter(
                engine, side.ctx.vault, side.adapter_id, 1.0, examples, persona_system=None, samples=args.samples,
                dataset_hash=digest, source=source, params=SAMPLE_PARAMS.merged(max_tokens=args.max_tokens),
                progress=say, shared=not args.exact, validation=True))
        finally:
            engine.close()
    report = four_way(reports, target_bytes(examples), [s.how for s in sides])
    report["data"] = {"source": source, "path": path, "available": len(data.examples), "rejected": len(data.rejected)}
    write_compare(first.vault, report)
    if args.json:
        import json

        print(json.dumps(report, ensure_ascii=False))
    else:
        print(render(report))
    return 0


def registered(ctx: Context, digest: str) -> str | None:
    """The newest adapter for this base trained on exactly this data with a time split (its held-out part
    known), its file present; None when there is none."""
    from llm.fingerprint import same_base

    fp = ctx.model_info.fingerprint
    fits = [e for e in ctx.manifest().adapters.values()
            if e.base.get("fingerprint") and same_base(e.base["fingerprint"], fp) and (e.dataset or {}).get("hash") == digest
            and (e.dataset or {}).get("split") == "time" and (ctx.vault.root / e.file).is_file()]
    return max(fits, key=lambda e: e.created).id if fits else None


def train(side: Side, args: argparse.Namespace, source: str, path: str | None) -> str:
    """Train on this base with the worker (progress on stderr); the registered adapter's id, or the
    worker's own error line and exit code."""
    import os

    from trainer.protocol.job import JobError

    ctx = side.ctx
    slug = re.sub(r"[^a-z0-9]+", "-", side.name.casefold()).strip("-") or "model"
    job = Job(vault=str(ctx.vault.root), source=source, path=os.path.abspath(path) if path else None,
              speaker=args.speaker, target="user", persona=args.persona, user=ctx.user, name=f"compare-{slug}",
              kind="style", model=str(ctx.model_path), steps=args.steps, epochs=args.epochs, rank=args.rank,
              window=args.window, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
              device=args.device, split="time")
    try:
        job.validate("home eval --compare")
    except JobError as exc:
        raise UsageError(str(exc)) from None
    ctx.manifest().check_name(job.adapter_name, job.adapter_kind)
    print(f"compare: {side.name}: training {job.adapter_name} on {source}", file=sys.stderr, flush=True)
    proc = start_worker(job)
    show, error, reg = ProgressPrinter(sys.stderr, sys.stderr.isatty()), None, None
    for event in read_events(iter(proc.stdout.readline, "")):
        show(event)
        if event.get("event") == "error":
            error = event
        elif event.get("event") == "registered":
            reg = event["id"]
    code = proc.wait()
    if code != 0 or reg is None:
        why = error.get("message") if error else f"the trainer exited with code {code}"
        raise TrainingFailed(f"{side.label}: training on {side.name} failed: {why}", code or 1)
    return reg


class TrainingFailed(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def render(report: dict) -> str:
    """The four-way table, the adapters used, and the samples side by side."""
    from trainer.evaluation.compare import METRICS, column_labels

    keys = [c["key"] for c in report["columns"]]
    labels = column_labels(report, 16)
    w = max(12, *(len(lab) + 2 for lab in labels))
    d = report["data"]
    lines = [f"four-way comparison on {report['examples']} of {d['available']} examples from "
             f"{(d['source'] + ' ' + (d['path'] or '')).strip()} ({report['target_bytes']} target bytes)",
             f"{'held-out' if report['heldout'] else 'NOT held-out'}: {report['heldout_note']}", "",
             f"{'':<24}" + "".join(f"{lab:>{w}}" for lab in labels) + f"{'targets':>10}"]
    for label, key in (("perplexity (per token)", "perplexity"), ("bits per byte", "bits_per_byte")):
        lines.append(f"{label:<24}" + "".join(f"{_num(report[key][k]):>{w}}" for k in keys))
    for label, key in METRICS:
        lines.append(f"{label:<24}" + "".join(f"{_num(report[key][k]):>{w}}" for k in keys)
                     + f"{_num(report[key].get('targets')):>10}")
    for col in report["columns"]:
        if col["adapter"]:
            lines.append(f"{col['model']}: adapter {col['adapter']} ({col['adapter_source']})")
    for i, s in enumerate(report["samples"], 1):
        lines += ["", f"[{i}] {_clip(s['prompt'])}  ({s['origin']})"]
        for who, text in [("target", s["target"])] + [(lab, s["outputs"][k]) for lab, k in zip(labels, keys,
                                                                                                strict=True)]:
            lines.append(textwrap.fill(_clip(text, 300) or "(nothing)", 110, initial_indent=f"  {who}: ",
                                       subsequent_indent="      "))
    lines += ["", f"report: {report['files']['json']}", f"plot:   {report['files']['png']}"]
    return "\n".join(lines)


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
