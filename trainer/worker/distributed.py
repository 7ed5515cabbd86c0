"""`home train --gpus N` (or `--processes N --device cpu`): the training stage on N processes, the rest of
the recipe (convert, verify, evaluate, register) once, here, in the worker as for one process.

The worker starts N ranks (`python -m trainer.worker.rank`, trainer/worker/rank.py) itself, with the
environment torchrun would give them on one machine (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT),
rather than through `accelerate launch` or `torchrun`. Why: their agent turns a stop signal into a kill
of every rank after a fixed 30 s grace (a checkpoint of a large model being written is torn) and ends in
a traceback; here the worker owns the ranks, so a Ctrl-C reaches each of them once as a stop request
(checkpoint at the same step everywhere, exit 130, `--resume` continues) and a second one aborts, as for
one process. Nothing else differs: the Trainer finds the process group the ranks joined (gloo on the CPU,
nccl on GPUs) and runs DDP over it, or FSDP when the base is to be sharded (trainer/worker/sharding.py
says when, and how the adapter is then saved whole).

Rank 0's events are passed on as this worker's own; the others are silent. `--batch-size` stays the
global batch: each rank takes batch/N of it, so the step count, the learning-rate schedule and each
step's gradient are those of one process on the same data. Memory: the worker's memory watch adds the
ranks' resident sets to its own (each stage's peak is the machine's, summed), and the result's
`peak_memory_bytes` is the sum of the ranks' peaks (each listed in `peak_memory_per_rank`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from trainer.protocol.events import read_events
from trainer.protocol.job import Job
from vault.fsio import atomic_write_json, ensure_private_dir

GRACE_S = 15.0  # after one rank fails, how long the others get to notice before they are ended


class RanksFailed(RuntimeError):
    exit_code = 1


def check_processes(job: Job) -> None:
    """Refuse, in one line and before the data is read, N processes this machine cannot run."""
    if job.processes <= 1:
        return
    from trainer.worker.base import BaseModelError

    if job.device == "cuda":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n < job.processes:
            raise BaseModelError(f"--gpus {job.processes}: torch sees {n} CUDA GPU{'' if n == 1 else 's'} on this "
                                 "machine (for a test on the CPU: --processes N --device cpu)")


def train_distributed(job: Job, model_path: Path, settings: Any, train_ex: list, val_ex: list, out_dir: Path,
                      resume: bool, emit: Any) -> tuple[Any, Any]:
    """Train on `job.processes` ranks; returns (TrainResult without a model in memory, a tokenizer-only Base)."""
    from trainer.worker.base import load_base, pick_device
    from trainer.worker.loop import TrainResult

    out_dir = Path(out_dir)
    # The tokenizer (what verification needs here), loaded first: on the way it builds the GGUF's
    # dequantized copy if it is missing, so the ranks never race to build it (the first two-rank run
    # here, which had to build it, lost a rank before training began).
    base = load_base(model_path, pick_device(job.device, job.four_bit), job.base, tokenizer_only=True)
    from trainer.worker.sharding import decide

    settings.fsdp, why = decide(job.fsdp, job.device, job.processes, job.four_bit, model_path)
    if settings.fsdp and resume and not job.four_bit:
        from trainer.worker.loop import TrainError

        raise TrainError(f"{out_dir}: a run with the base sharded at load (FSDP) cannot resume: transformers "
                         "checkpoints no optimizer state for it; start it again without --resume")
    ranks_dir = ensure_private_dir(out_dir / "ranks")
    result_path = ranks_dir / "result.json"
    result_path.unlink(missing_ok=True)  # an earlier, stopped attempt's
    spec = {"device": job.device, "four_bit": job.four_bit, "model_path": str(model_path), "hf_base": job.base,
            "out_dir": str(out_dir), "resume": resume, "settings": dataclasses.asdict(settings),
            "train": [dataclasses.asdict(e) for e in train_ex], "val": [dataclasses.asdict(e) for e in val_ex]}
    spec_path = atomic_write_json(ranks_dir / "spec.json", spec)
    emit("phase", name="ranks", detail=f"starting {job.processes} training processes "
         f"({'nccl on CUDA GPUs' if job.device == 'cuda' else 'gloo on the CPU'}), "
         + (f"the base sharded over them (FSDP{'-QLoRA' if job.four_bit else ''}: {why})" if settings.fsdp
            else "each with the whole base (DDP)"))
    procs = _start(job, spec_path, ranks_dir)
    watch = getattr(emit, "watch_children", None)  # the memory watch counts the ranks' memory as the run's
    if watch:
        watch([p.pid for p in procs])
    failure: dict | None = None
    try:
        with _forward_signals(procs) as stops:
            ender = threading.Thread(target=_end_all_if_one_fails, args=(procs,), daemon=True)
            ender.start()
            for event in read_events(iter(procs[0].stdout.readline, "")):
                kind = event.pop("event", None)
                event.pop("t", None)
                if kind == "error":
                    failure = event  # said once, by this worker, when it fails below
                elif kind not in (None, "log"):
                    emit(kind, **event)
            codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if watch:
            watch([])
    if result_path.is_file():
        data = json.loads(result_path.read_text(encoding="utf-8"))
        data["adapter_dir"] = Path(data["adapter_dir"]) if data["adapter_dir"] else None
        for key in ("train_losses", "val_losses"):
            data[key] = [tuple(x) for x in data[key]]
        result = TrainResult(peft_model=None, **data)
        if result.peak_memory_per_rank:
            each = " + ".join(f"{b / 2**30:.2f}" for b in result.peak_memory_per_rank)
            emit("phase", name="ranks-done", detail=f"{job.processes} processes, peak memory {each} = "
                 f"{result.peak_memory_bytes / 2**30:.2f} GiB")
        if not result.stopped and any(codes):
            first = next(r for r, c in enumerate(codes) if c)
            raise RanksFailed(f"{ranks_dir / f'rank-{first}.log'}: training process {first} failed after rank 0 "
                              f"finished (exit codes {codes}){_last_line(ranks_dir / f'rank-{first}.log')}")
    elif stops[0] and all(c in (0, 130, -signal.SIGINT, -signal.SIGTERM) for c in codes):
        raise KeyboardInterrupt  # stopped before training began: nothing to resume from
    else:
        raise _failed(failure, codes, ranks_dir)
    return result, base


def _failed(failure: dict | None, codes: list[int], ranks_dir: Path) -> RanksFailed:
    """Why the ranks failed, in one line: rank 0's error event when it is the first to fail, else the
    last line of the first failed rank's log (a peer's death is all rank 0 saw)."""
    first = next((r for r, c in enumerate(codes) if c not in (0, 130)), 0)
    if failure is not None and (first == 0 or "closed by peer" not in str(failure.get("message"))):
        exc = RanksFailed(failure.get("message") or "a training process failed")
        exc.exit_code = int(failure.get("code") or 1)
        return exc
    log = ranks_dir / f"rank-{first}.log"
    return RanksFailed(f"{log}: training process {first} failed (exit code {codes[first]}){_last_line(log)}")


def _last_line(log: Path) -> str:
    """': <the log's last line>', which says why a rank died, or '' when it said nothing."""
    try:
        tail = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        tail = []
    return f": {tail[-1]}" if tail else ""


def _start(job: Job, spec_path: Path, ranks_dir: Path) -> list[subprocess.Popen]:
    """The ranks, with torchrun's single-machine environment; rank 0's stdout is the event pipe, each
    rank's stderr (the libraries' chatter, a traceback) its log `ranks/rank-N.log`."""
    port = _free_port()
    n = job.processes
    procs: list[subprocess.Popen] = []
    for rank in range(n):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(n),
               "LOCAL_WORLD_SIZE": str(n), "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "PYTHONUNBUFFERED": "1"}
        if job.device == "cpu":
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        with open(ranks_dir / f"rank-{rank}.log", "a", encoding="utf-8", opener=_private) as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "trainer.worker.rank", str(spec_path)], env=env,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if rank == 0 else log,
                                          stderr=log, text=True))
    return procs


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _forward_signals:
    """While the ranks run, SIGINT/SIGTERM to this worker go on to each rank (their first one is a stop
    request, a second aborts); `stops[0]` counts them."""

    def __init__(self, procs: list[subprocess.Popen]):
        self.procs, self.stops, self.previous = procs, [0], {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.stops[0] += 1
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signum)

    def __enter__(self) -> list[int]:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self._handler)
        return self.stops

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


def _end_all_if_one_fails(procs: list[subprocess.Popen], interval: float = 0.5) -> None:
    """A rank that failed leaves the others blocked in their next collective: after a grace, end them.
    130 is no failure: a stopped rank is done while rank 0 may still be writing the checkpoint."""
    while any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0, 130) for p in procs):
            for end in ("terminate", "kill"):
                time.sleep(GRACE_S)
                for p in procs:
                    if p.poll() is None:
                        getattr(p, end)()
            return
        time.sleep(interval)
