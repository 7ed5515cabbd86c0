"""`home train`: start the trainer worker (`python -m trainer`), draw its events as a progress bar.

Home never imports training code: the worker is a separate process (torch stays out of the app), and
its JSON events are the whole interface, the same ones the app's retrain screen reads.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile

from home.context import Context
from home.errors import UsageError
from home.progress import ProgressPrinter
from home.worker import start_worker
from trainer.protocol.events import read_events
from trainer.protocol.job import METHODS, MODULES, SCHEDULES, SOURCES, Job
from trainer.protocol.tiers import tiers_help


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a LoRA adapter (your voice, a persona) from logs or imported text",
        description="Train a LoRA adapter for the model Home runs: dataset QA report → peft/trl training "
                    "with live progress → GGUF conversion → verification against transformers → held-out "
                    "evaluation (plot) → registration. Exits 0 only when the adapter is verified and "
                    "registered. Ctrl-C stops at the next step with a checkpoint; --resume continues.",
        epilog="examples:\n  home train                                   # your voice, from your chat logs\n"
               "  home train --source transcript play.txt --speaker HAMLET --name hamlet\n"
               "  home train --source jsonl data.jsonl --persona quill --target persona quill\n"
               "  home train --source jsonl cast/train.jsonl --per-persona      # one adapter per persona\n"
               "  home train --method dpo --source preferences          # learn from your pick-best choices\n"
               "  home train --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", choices=SOURCES, default=None,
                   help="where the examples come from (default logs; preferences: your pick-best pairs, for dpo)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="sft: learn the examples (default); dpo: learn from your pick-best choices "
                        "(--source preferences), starting from your voice adapter, which is the reference")
    p.add_argument("--beta", type=float, default=0.1, metavar="B",
                   help="dpo: how far the adapter may move from where it starts (default 0.1)")
    p.add_argument("--start", metavar="ADAPTER", help="dpo: the voice adapter to start from (default: your voice)")
    p.add_argument("path", nargs="?", help="the file or folder for transcript, essays, jsonl (logs/gestalts: optional)")
    p.add_argument("--speaker", metavar="NAME", help="transcript: whose lines to learn")
    p.add_argument("--target", nargs="+", metavar=("user|persona", "NAME"), default=["user"],
                   help="logs: learn your own messages (user, default) or a persona's replies (persona NAME)")
    p.add_argument("--persona", metavar="NAME", help="jsonl: only records of this persona")
    p.add_argument("--name", metavar="NAME", help="adapter name (default: <user>-voice or <persona>-persona)")
    p.add_argument("--kind", choices=("voice", "persona", "task", "style", "other"),
                   help="what the adapter is, for the router and the app (default: persona with --target persona, "
                        "else voice)")
    p.add_argument("--tasks", nargs="*", default=[], metavar="TASK",
                   help="task classes the router may pick it for (e.g. coding writing)")
    p.add_argument("--tones", nargs="*", default=[], metavar="TONE",
                   help="tones the router may pick it for (e.g. upbeat stressed)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, metavar="N", help="optimizer steps")
    length.add_argument("--epochs", type=float, metavar="N",
                        help=f"passes over the data (default for a voice, by its size: {tiers_help('epochs')}; "
                             f"3 for other kinds; trainer/protocol/tiers.py)")
    p.add_argument("--rank", type=int, default=None, metavar="R",
                   help=f"LoRA rank, alpha 2×rank (default for a voice, by its size: {tiers_help('rank')}; "
                        "16 for other kinds)")
    p.add_argument("--window", type=int, default=None, metavar="N",
                   help="earlier turns of context per example (default: 4 for a voice, as measured on the voice "
                        "bench; 10 for other kinds)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="examples per optimizer step (default 8)")
    p.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="learning rate (default 1e-3 for a voice adapter, 2e-4 for other kinds and dpo: "
                        "bench/voice/RESULTS.md)")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="the learning rate after warmup: cosine to zero (default) or constant")
    p.add_argument("--neftune", type=float, default=0.0, metavar="ALPHA",
                   help="NEFTune: noise on the input embeddings while training (e.g. 5; default 0, none)")
    p.add_argument("--modules", choices=MODULES, default="all",
                   help="the projections LoRA adapts: all seven (default), attention (q/k/v/o) or mlp "
                        "(gate/up/down); bench/voice/RESULTS.md measures them")
    p.add_argument("--max-length", type=int, default=512, metavar="TOKENS",
                   help="longest example; a longer one loses its oldest context, never its target (default 512)")
    p.add_argument("--seed", type=int, default=0, help="for the split, the shuffle and the LoRA init (default 0)")
    p.add_argument("--base", metavar="DIR", help="train on this Hugging Face model directory instead of the GGUF")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (default auto: a CUDA GPU when there is one)")
    procs = p.add_mutually_exclusive_group()
    procs.add_argument("--gpus", type=int, metavar="N",
                       help="train on N CUDA GPUs of this machine, one process each (DDP over nccl); "
                            "--batch-size is the global batch, split over them, so steps and learning rate "
                            "are those of one GPU. Conversion, verification and registration run once after")
    procs.add_argument("--processes", type=int, metavar="N",
                       help="with --device cpu: N CPU processes over gloo, the --gpus path without GPUs (testing)")
    p.add_argument("--fsdp", action=argparse.BooleanOptionalAction, default=None,
                   help="with --gpus N: shard the base over the GPUs (FSDP; with --4bit, FSDP-QLoRA) instead of "
                        "a whole copy on each (DDP). Default: shard when the base's weights exceed half of one "
                        "GPU's free memory")
    p.add_argument("--4bit", dest="four_bit", action="store_true",
                   help="QLoRA: nf4 weights (bitsandbytes), from the GGUF alone (dequantized once into a cache); "
                        "on the GPU, or with --device cpu on bitsandbytes' CPU backend (slow, for testing)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="train a model over ~1B parameters on the CPU anyway (refused by default, with the "
                        "estimated hours)")
    p.add_argument("--two-phase", action="store_true", help="identity phase, then style on top of it")
    p.add_argument("--per-persona", action="store_true",
                   help="jsonl persona records: one adapter per persona in one run (owner = the persona, kind "
                        "persona); each persona's card then points at its adapter")
    p.add_argument("--personas", metavar="A,B", help="with --per-persona: only these personas")
    p.add_argument("--resume", action="store_true", help="continue the last stopped run of this adapter")
    p.add_argument("--json", action="store_true", help="print the worker's JSON events instead of a progress bar")
    p.add_argument("--check", action="store_true",
                   help="read the source and print the dataset report (examples, every rejected line with its "
                        "file and line); train nothing. Exit 2 when a line is rejected or there are too few examples "
                        "to train (under 4). With --resume: the stopped run it would continue, from which step, "
                        "and that run's dataset")
    p.set_defaults(func=run)


def build_job(ctx: Context, args: argparse.Namespace) -> Job:
    method, source = training_method(args)
    target = args.target[0]
    if target not in ("user", "persona") or (target == "user" and len(args.target) > 1) or len(args.target) > 2:
        raise UsageError(f"--target {' '.join(args.target)}: expected `user` or `persona NAME`")
    persona = args.target[1] if target == "persona" and len(args.target) == 2 else args.persona
    if args.path and source == "logs" and not os.path.exists(args.path):
        raise UsageError(f"{args.path}: no such log file or folder")
    model = getattr(args, "model", None) or ctx.config.model or None
    job = Job(
        vault=str(ctx.vault.root), source=source, method=method, beta=args.beta,
        path=os.path.abspath(args.path) if args.path else None,
        speaker=args.speaker, target=target, persona=persona, user=ctx.user, name=args.name, kind=args.kind,
        tasks=args.tasks, tones=args.tones, model=str(ctx.model_path) if model is None else model,
        base=args.base, steps=args.steps, epochs=args.epochs, rank=args.rank, window=args.window,
        batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, neftune=args.neftune,
        modules=args.modules, max_length=args.max_length, seed=args.seed, device=training_device(args),
        processes=args.gpus or args.processes or 1, fsdp=args.fsdp, four_bit=args.four_bit,
        allow_cpu=args.allow_cpu, two_phase=args.two_phase,
        resume=args.resume,
        per_persona=args.per_persona,
        personas=[n.strip() for n in (args.personas or "").split(",") if n.strip()],
    )
    try:
        job.validate("home train")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if method == "dpo":
        dpo_start(ctx, job, args.start)
    if not job.per_persona:  # a name another kind holds would be refused at registration, after the training
        manifest = ctx.manifest()
        manifest.check_name(job.adapter_name, job.adapter_kind)
        if job.two_phase:
            manifest.check_name(f"{job.adapter_name}-identity", "persona")
    return job


def check_dataset(ctx: Context, job: Job) -> int:
    """`--check`: the report the worker prints first, read here with the same `load_source` (torch-free),
    so bad data is found in a second, not after the model has loaded."""
    if job.method == "dpo":
        return check_pairs(ctx, job)
    from trainer.data.sources import load_source, source_place

    report = load_source(job.source, job.path, vault=ctx.vault, speaker=job.speaker, target=job.target,
                         persona=None if job.per_persona else job.persona, window=job.context_window, user=job.user)
    print(report.render())
    where = source_place(job.source, job.path, ctx.vault, job.user)
    if report.rejected:
        more = f" (and {len(report.rejected) - 1} more)" if len(report.rejected) > 1 else ""
        print(f"home: error: {report.rejected[0]}{more}", file=sys.stderr)
        return 2
    too_small = report.too_small(where)  # the worker's own refusal: a check that passes is a run that starts
    if too_small:
        print(f"home: error: {too_small}", file=sys.stderr)
        return 2
    return 0


def check_resume(ctx: Context, job: Job) -> int:
    """`--resume --check`: which stopped run would continue, from which step, and its dataset as that run
    reads it again (its own job, not today's flags): what `--resume` would do, with nothing started."""
    from trainer.protocol.job import JobError
    from trainer.protocol.runs import complete_checkpoints, find_resumable

    try:
        run_dir, old = find_resumable(ctx.vault, job)
    except JobError as exc:
        print(f"home: error: {exc}", file=sys.stderr)
        return 2
    print(f"resumes {run_dir}:")
    for ckpt_dir in sorted(run_dir.glob("**/checkpoints")):
        done = complete_checkpoints(ckpt_dir)
        if done:
            state = json.loads((done[-1] / "trainer_state.json").read_text())
            where = ckpt_dir.parent.relative_to(run_dir).as_posix()
            phase = "" if where == "." else f"{where}: "
            print(f"  {phase}from step {state.get('global_step')} of {state.get('max_steps')}")
    return check_dataset(ctx, old)


def check_pairs(ctx: Context, job: Job) -> int:
    """`--check` for `--method dpo`: the pairs kept and skipped (and why), as the worker will see them."""
    from trainer.data.preferences import load_pairs, split_pairs

    report = load_pairs(ctx.vault, job.user, ctx.model_info.fingerprint, set(ctx.manifest().adapters))
    print(report.render())
    try:
        split_pairs(report.pairs)
    except ValueError as exc:
        print(f"home: error: {report.file}: {exc}", file=sys.stderr)
        return 2
    return 0


def training_device(args: argparse.Namespace) -> str:
    """--gpus N means CUDA; --processes N is for the CPU (gloo), said out loud with --device cpu."""
    gpus, processes = getattr(args, "gpus", None), getattr(args, "processes", None)
    for flag, n in (("--gpus", gpus), ("--processes", processes)):
        if n is not None and n < 1:
            raise UsageError(f"{flag} {n}: expected at least 1")
    if gpus is not None:
        if args.device == "cpu":
            raise UsageError(f"--gpus {gpus} --device cpu: --gpus trains on CUDA GPUs; for CPU processes "
                             f"use --processes {gpus} --device cpu")
        return "cuda"
    if processes is not None and processes > 1 and args.device != "cpu":
        raise UsageError(f"--processes {processes}: CPU processes over gloo need --device cpu "
                         f"(on GPUs: --gpus {processes})")
    return args.device


def training_method(args: argparse.Namespace) -> tuple[str, str]:
    """(method, source): `--method dpo` alone means the preferences, `--source preferences` alone means dpo."""
    method, source = getattr(args, "method", None), getattr(args, "source", None)
    if method is None:
        method = "dpo" if source == "preferences" else "sft"
    if source is None:
        source = "preferences" if method == "dpo" else "logs"
    return method, source


def dpo_start(ctx: Context, job: Job, start: str | None) -> None:
    """The adapter DPO starts from (and measures against): `--start`, else the user's voice when it fits
    the model; its name is the new version's name, so the result is the voice's next version."""
    from llm.fingerprint import base_refusal

    manifest = ctx.manifest()
    if start:
        entry = manifest.resolve(start)
        if entry.kind != "voice":
            raise UsageError(f"--start {start}: {entry.id} is of kind {entry.kind}, not a voice adapter")
    else:
        vid = (manifest.users.get(job.user) or {}).get("voice_adapter")
        entry = manifest.adapters.get(vid) if vid else None
    if entry is not None and base_refusal(entry.base, ctx.model_info.fingerprint, ctx.model_info.name):
        if start:
            raise UsageError(f"--start {start}: " + base_refusal(entry.base, ctx.model_info.fingerprint,
                                                                 ctx.model_info.name))
        entry = None  # a voice for another model: start from the base
    if entry is not None:
        job.start = entry.id
        job.name = job.name or entry.name


def run(args: argparse.Namespace) -> int:
    ctx = Context(args)
    job = build_job(ctx, args)
    if args.check:
        return check_resume(ctx, job) if job.resume else check_dataset(ctx, job)
    # The worker's stderr is library chatter (warnings, progress bars): kept aside, shown only if it dies
    # without saying why in an error event.
    chatter = tempfile.TemporaryFile(mode="w+", dir=ctx.vault.runs_dir)
    proc = start_worker(job, stderr=chatter)
    last_error = None
    interrupted = False
    show = ProgressPrinter(sys.stderr, sys.stderr.isatty())
    while True:
        try:
            for event in read_events(iter(proc.stdout.readline, "")):
                if args.json:
                    print(json.dumps(event), flush=True)
                else:
                    show(event)
                if event.get("event") == "error":
                    last_error = event
            break
        except KeyboardInterrupt:  # ask the worker to stop at the next step with a checkpoint
            if interrupted:
                proc.send_signal(signal.SIGKILL)
                break
            interrupted = True
            print("\nhome: stopping at the next step (Ctrl-C again to kill)…", file=sys.stderr)
            proc.send_signal(signal.SIGINT)
    code = proc.wait()
    if code != 0 and last_error is None:
        chatter.seek(0)
        tail = [ln for ln in chatter.read().splitlines() if ln.strip()][-1:]
        why = f": {tail[0].strip()}" if tail else ""
        print(f"home: error: the trainer exited with code {code}{why}", file=sys.stderr)
    elif code != 0 and args.json:
        print(f"home: error: {last_error.get('message')}", file=sys.stderr)
    chatter.close()
    return code
