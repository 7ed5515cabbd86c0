"""`python -m trainer JOB.json`: the training worker. Events go to stdout, one JSON object per line.

stdout is reserved for events: the libraries' own chatter (progress bars, warnings, prints) is sent to
stderr by pointing file descriptor 1 at 2 and keeping a private duplicate for events. Exit codes: 0 the
adapter is verified and registered; 130 stopped (a checkpoint is kept, `--resume` continues); 2 bad job
or data; 3 model or conversion refused; 1 anything else. Every failure also ends with an `error` event.
If the process that started the worker dies, the run stops as on SIGTERM (trainer/worker/parent_watch.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.splitlines()[0])
    parser.add_argument("job", help="the job JSON file, or - for standard input")
    parent = os.getppid()  # before anything slow: a parent that dies during the imports is still seen
    # A stop request (SIGINT) before training starts ends the run at once (130, nothing registered). A
    # parent that ignores SIGINT passes SIG_IGN down through exec, and Python then installs no handler of
    # its own: such a worker ignored an early cancel and trained to the end.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = parser.parse_args(argv)
    # Everything the run writes in the vault (checkpoints, best/, what torch, trl and peft create) is
    # private from birth: 0700 folders, 0600 files, like the rest of the vault.
    os.umask(0o077)

    from trainer.protocol.events import EventWriter, event_stream
    from trainer.protocol.memwatch import MemoryWatch, bound_allocator
    from trainer.worker.parent_watch import stop_orphaned_worker, watch_parent

    bound_allocator()  # before torch allocates anything: freed activations go back to the OS

    # Each `phase` event then carries the peak memory of the stage it closes; `done`/`error` the run's.
    writer = EventWriter(event_stream())
    emit = MemoryWatch(writer, first_stage="dataset")
    watch_parent(lambda: stop_orphaned_worker(writer.mute), parent)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Spinning OpenMP threads starve each other (and the app's llama.cpp) on small machines: measured
    # 3–40 tok/s with the default policy under load vs a steady ~100 with PASSIVE on 2 cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from trainer.protocol.job import Job, read_job
    from trainer.worker.run import run
    from trainer.worker.stages import RunStopped

    try:
        job = Job.from_dict(json.load(sys.stdin), "<stdin>") if args.job == "-" else read_job(args.job)
        entry = run(job, emit)
        emit("done", id=entry["id"], perplexity=entry["metrics"].get("perplexity"))
        return 0
    except RunStopped:
        return 130  # the `stopped` event already said where and how to resume
    except Exception as exc:  # noqa: BLE001 - every failure becomes one error event and an exit code
        return _failed(emit, exc)
    except KeyboardInterrupt:
        emit("error", message="interrupted before training started: nothing was registered", code=130)
        return 130
    finally:
        emit.stop()


def _failed(emit, exc: Exception) -> int:
    """The worker's contract for failures: one error event, an exit code."""
    code = int(getattr(exc, "exit_code", 1))
    message = str(exc).strip() or type(exc).__name__
    emit("error", message=message.splitlines()[0], kind=type(exc).__name__, code=code)
    if code == 1 and os.environ.get("HOME_TRAINER_DEBUG"):
        raise exc
    return code


if __name__ == "__main__":
    sys.exit(main())
