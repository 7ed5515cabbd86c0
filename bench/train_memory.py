"""Peak memory of a real `home train` run, stage by stage, measured from outside the worker.

The issue's case: the default model trained on a two-speaker transcript of 278 examples (batch 8,
512-token windows, CPU, fp32) — a run that peaked at 18 GB and was once killed by the OOM killer. This
script writes such a transcript (seeded, plain English-like lines with a long tail of lengths), runs
`home train --source transcript … --json` in a fresh vault, samples the worker's resident set every
50 ms (/proc), and prints the peak of each stage (stages are the worker's `phase` events) beside the
peaks the worker reports itself. Goal: ≤ 3 GiB for the whole run on the CPU.

    .venv/bin/python bench/train_memory.py                 # 278 examples, 4 steps
    .venv/bin/python bench/train_memory.py --steps 0       # the default length (3 epochs: ~30 min here)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the a of to and in that it was for on are with as his they be at one have this from or had by "
         "word but what some we can out other were all there when up use your how said an each she which "
         "do their time if will way about many then them write would like so these her long make thing see "
         "him two has look more day could go come did number sound no most people my over know water than "
         "call first who may down side been now find garden rain kettle lighthouse harbour letter bread "
         "window morning evening quiet river station winter summer ticket market lantern paper").split()


def transcript(n_examples: int, seed: int) -> str:
    """Two speakers taking turns; Maya's lines are the targets (n_examples of them)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_examples):
        for who in ("Theo", "Maya"):
            n = max(3, min(90, int(rng.lognormvariate(3.0, 0.7))))
            words = [rng.choice(WORDS) for _ in range(n)]
            lines.append(f"{who}: {' '.join(words).capitalize()}.")
    return "\n".join(lines) + "\n"


def rss_of_tree(pid: int) -> int:
    """Resident bytes of `pid` and its children (the worker may spawn none, but a probe might)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=278)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps (0: the default, 3 epochs)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", metavar="DIR", help="use this vault directory and keep it")
    args = ap.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="home-train-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    text_path = work / "transcript.txt"
    text_path.write_text(transcript(args.examples, args.seed))
    cmd = [str(REPO / ".venv/bin/home"), "--vault", str(work / "vault"), "train", "--source", "transcript",
           str(text_path), "--speaker", "Maya", "--name", "mem-bench", "--json",
           "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--device", "cpu"]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

    stage = ["dataset"]
    peaks: dict[str, int] = {}
    reported: dict[str, dict] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = rss_of_tree(proc.pid)  # `home train` and its worker child together
            peaks[stage[0]] = max(peaks.get(stage[0], 0), rss)
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.time()
    last = None
    for line in proc.stdout:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("memory"):
            reported[ev["memory"]["stage"]] = ev["memory"]
        if ev.get("event") == "phase":
            stage[0] = ev.get("name", "?")
        elif ev.get("event") in ("converted", "verified", "registered"):
            stage[0] = "after-" + ev["event"]
        last = ev
    code = proc.wait()
    done.set()
    t.join()
    print(f"home train --source transcript: {args.examples} examples, batch {args.batch_size} x "
          f"{args.max_length}, {'default length' if not args.steps else f'{args.steps} steps'}, cpu fp32; "
          f"exit {code} in {time.time() - t0:.0f} s")
    if code != 0 and last:
        print(f"  last event: {json.dumps(last)[:300]}")
    print(f"  {'stage':<18} {'peak RSS (sampled)':>19} {'worker says (host)':>19} {'seconds':>8}")
    for name, peak in peaks.items():
        mine = reported.get(name, {})
        host = f"{mine['peak_host_bytes'] / 2**30:>15.2f} GiB" if mine.get("peak_host_bytes") else ""
        secs = f"{mine['seconds']:>8.0f}" if mine.get("seconds") is not None else ""
        print(f"  {name:<18} {peak / 2**30:>15.2f} GiB {host:>19} {secs:>8}")
    top = max(peaks.values()) if peaks else 0
    print(f"peak of the whole run: {top / 2**30:.2f} GiB (goal <= 3 GiB: {'PASS' if top <= 3 * 2**30 else 'FAIL'})")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
