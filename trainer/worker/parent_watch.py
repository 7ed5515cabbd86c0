"""The worker's tie to whoever started it (the app or `home train`): when that process dies, the run stops.

Why: a worker whose parent was killed kept training for nobody, then crashed on its next event with a
broken pipe (state "failed", a half-written step). Now a daemon thread polls `os.getppid()` (once a
second): when the parent changes, the worker mutes its events, points its stdout/stderr at /dev/null and
sends itself SIGTERM, which is a stop request: during training a checkpoint is kept and nothing is
registered (`--resume` continues); before or after training the process ends at once, and its run stays
resumable (state "running", a dead pid). Polling rather than `PR_SET_PDEATHSIG`: that fires when the
*thread* that started the worker ends, and the app starts it from a worker thread.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


def watch_parent(on_gone: Callable[[], None], parent: int | None = None, interval: float = 1.0) -> threading.Event:
    """Call `on_gone` once, from a daemon thread, when this process's parent is no longer `parent`
    (default: the parent now). Returns an Event that ends the watch when set."""
    parent = os.getppid() if parent is None else parent
    done = threading.Event()

    def run() -> None:
        while not done.wait(interval):
            if os.getppid() != parent:
                on_gone()
                return

    threading.Thread(target=run, name="parent-watch", daemon=True).start()
    return done


def stop_orphaned_worker(mute: Callable[[], None]) -> None:
    """What the worker does when its parent is gone: nobody reads its output, so silence it, then stop."""
    mute()
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):  # library chatter and tracebacks would hit the same broken pipe
        os.dup2(null, fd)
    os.close(null)
    os.kill(os.getpid(), signal.SIGTERM)
