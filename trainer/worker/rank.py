"""`python -m trainer.worker.rank SPEC.json`: one process of `home train --gpus N`, started by
trainer/worker/distributed.py with the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

Each rank loads the base and runs the same `train_adapter` as a single-process run, on its share of every
global batch. Rank 0 alone writes events (stdout, one JSON line each, read by the worker that started
it), checkpoints, best/ and peft/, and at the end `ranks/result.json` with the run's numbers; the others are
silent. Exit codes: 0 trained, 130 stopped (checkpoint kept) or interrupted, else the failure's code
(rank 0 first says why in an `error` event).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a stop before training: end at once (130)
    os.umask(0o077)  # the vault is private from birth, what torch and peft write included
    spec_path = Path((argv if argv is not None else sys.argv[1:])[0])
    rank = int(os.environ["RANK"])

    from trainer.protocol.events import EventWriter, event_stream
    from trainer.protocol.memwatch import bound_allocator
    from trainer.worker.parent_watch import stop_orphaned_worker, watch_parent

    bound_allocator()
    writer = EventWriter(event_stream())
    if rank != 0:
        writer.mute()
    watch_parent(lambda: stop_orphaned_worker(writer.mute), parent)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    from trainer.worker import ranks

    try:
        ranks.init(spec["device"])
        result = _train(spec, writer)
        if rank == 0:
            _write_result(Path(spec["out_dir"]) / "ranks" / "result.json", result)
        ranks.close()  # in order, every rank done (ranks.close says why)
        return 130 if result.stopped else 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one error event (rank 0), an exit code
        code = int(getattr(exc, "exit_code", 1))
        message = str(exc).strip() or type(exc).__name__
        writer("error", message=message.splitlines()[0], kind=type(exc).__name__, code=code)
        traceback.print_exc()  # into this rank's log (ranks/rank-N.log), whose last line says why
        return code


def _train(spec: dict, emit):
    from trainer.data.examples import Example
    from trainer.worker.base import load_base, pick_device
    from trainer.worker.train import TrainSettings, train_adapter

    settings = spec["settings"]
    settings["targets"] = tuple(settings["targets"])
    settings = TrainSettings(**settings)
    if spec["device"] == "cpu":  # the cores shared out: oversubscribed OpenMP threads spin against each other
        settings.cpu_threads = max(1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"]))
    device = pick_device(spec["device"], spec["four_bit"])
    base = load_base(spec["model_path"], device, spec["hf_base"], shard=settings.fsdp)

    def examples(rows: list[dict]) -> list[Example]:
        return [Example(**{**r, "context": tuple(r["context"])}) for r in rows]

    return train_adapter(base, examples(spec["train"]), examples(spec["val"]), settings, Path(spec["out_dir"]),
                         emit=emit, resume=spec["resume"])


def _write_result(path: Path, result) -> None:
    from vault.fsio import atomic_write_json, ensure_private_dir

    ensure_private_dir(path.parent)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "peft_model"}
    fields["adapter_dir"] = str(result.adapter_dir) if result.adapter_dir else None
    atomic_write_json(path, fields)


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Past this point nothing of the run is left to write (result.json is atomic and fsynced, events
    # flushed): skip the interpreter's teardown, where torch's and gloo's threads and static objects
    # unwind in an order that can abort a process whose work is done.
    os._exit(status)
