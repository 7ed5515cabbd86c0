"""Starting the trainer worker: `python -m trainer -`, the job on its stdin, JSON events on its stdout.

Shared by `home train` and the app's "Retrain my voice", so both start it the same way (its own session,
the allocator tunables) and the app need not import a command module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import IO

from trainer.protocol.job import Job
from trainer.protocol.memwatch import worker_env


def worker_command() -> list[str]:
    return [sys.executable, "-m", "trainer", "-"]


def start_worker(job: Job, stderr: IO[str] | int | None = subprocess.DEVNULL) -> subprocess.Popen:
    """Start `python -m trainer -` with the job on stdin; its stdout (text) carries the events.

    Its own session: a terminal's Ctrl-C reaches only the caller, which passes exactly one SIGINT on (a
    second one would abort the worker instead of letting it checkpoint). `home train` and the app use it.
    """
    proc = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                            text=True, env=worker_env({**os.environ, "PYTHONUNBUFFERED": "1"}),
                            start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(job.to_dict()))
    proc.stdin.close()
    return proc
