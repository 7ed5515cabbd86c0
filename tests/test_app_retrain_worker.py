"""The app's side of the trainer worker's pipe: whatever happens to the reader, the worker's stdout is read
to its end and the worker is reaped. A real child process that speaks the worker's protocol (JSON events
on stdout, far more than a pipe holds) stands in for a training run, which takes minutes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from home.app.retrain import RetrainRun
from trainer.protocol.job import Job

# ~1.5 MB of step events, then a done event: a pipe holds 64 KB, so an unread worker blocks mid-run.
CHATTY = ("import json\n"
          "for i in range(6000): print(json.dumps({'event': 'step', 'step': i, 'loss': 1.0, 'pad': 'x' * 200}))\n"
          "print(json.dumps({'event': 'done', 'id': 'me-voice-1'}))\n")


def chatty_worker(job: Job, stderr) -> subprocess.Popen:  # noqa: ARG001 - start_worker's signature
    return subprocess.Popen([sys.executable, "-c", CHATTY], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


def finishes(fn, timeout: float = 60.0):
    """Run `fn` on a thread; its result, or AssertionError if it is still blocked after `timeout`."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} still blocked after {timeout}s"
    return out[0]


def test_wait_after_a_reader_gave_up_drains_the_pipe_and_reaps_the_worker(tmp_path):
    run = RetrainRun(Job(vault=str(tmp_path)), tmp_path, start=chatty_worker)
    try:
        first = next(run.events())  # the reader takes one event, then stops (the UI callback raised)
        assert first["event"] == "step"
        code, why = finishes(run.wait)
        assert code == 0 and why is None and run.proc.poll() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_a_panel_that_raises_does_not_leave_the_worker_blocked(tmp_path):
    """Not a RuntimeError (which means the app closed): the run goes on unseen, is reaped, and the panel
    is told why it stopped following."""
    run = RetrainRun(Job(vault=str(tmp_path)), tmp_path, start=chatty_worker)
    shown: list[dict] = []

    def panel(event: dict) -> None:
        shown.append(event)
        raise KeyError("stage")

    try:
        code, why = finishes(lambda: run.follow(panel))
        assert code == 0 and run.code == 0 and len(shown) == 1
        assert why == "the app stopped showing the run (KeyError: 'stage')"
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_every_event_reaches_a_panel_that_keeps_up(tmp_path):
    run = RetrainRun(Job(vault=str(tmp_path)), tmp_path, start=chatty_worker)
    shown: list[dict] = []
    code, why = finishes(lambda: run.follow(shown.append))
    assert code == 0 and why is None
    assert len(shown) == 6001 and shown[-1] == json.loads('{"event": "done", "id": "me-voice-1"}')
