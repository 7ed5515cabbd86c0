"""The worker's ties to its reader, without training: a parent that dies stops the run as a stop request
does (trainer/worker/parent_watch.py), and a reader that went away never crashes the run (EventWriter).
The full path, a real `home train` killed mid-training, is in test_trainer_e2e.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.cli_helpers import REPO
from trainer.protocol.events import EventWriter

# The middle process starts the worker stand-in and then waits to be killed; the stand-in runs the
# worker's real watch and stop, and a loop that ends on a stop request as Progress does at a step.
MIDDLE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE)
print(child.pid, flush=True)
time.sleep(120)
"""
WORKER = """
import os, sys, time
parent = os.getppid()  # as the worker's main does, before the slow imports
from trainer.protocol.events import event_stream
from trainer.protocol.events import EventWriter
from trainer.worker.parent_watch import stop_orphaned_worker, watch_parent
from trainer.worker.train_progress import StopRequest, stop_on_signals

writer = EventWriter(event_stream())  # the worker's own setup: events on a private duplicate of stdout
watch_parent(lambda: stop_orphaned_worker(writer.mute), parent)
stop = StopRequest()
with stop_on_signals(stop):
    open(sys.argv[1] + ".ready", "w").close()
    while not stop.requested:
        writer("heartbeat", stage="train")
        time.sleep(0.05)
writer("stopped", step=1)  # muted: the reader is gone
print("and library chatter after it")
open(sys.argv[1], "w").write(stop.reason)
"""


def test_a_worker_stops_as_on_sigterm_when_its_parent_is_killed(tmp_path):
    flag = tmp_path / "stopped"
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, textwrap.dedent(WORKER), str(flag)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    child = int(middle.stdout.readline())
    t0 = time.monotonic()
    while not os.path.exists(f"{flag}.ready") and time.monotonic() - t0 < 120:  # the stand-in's imports
        time.sleep(0.05)
    time.sleep(1.5)  # a poll or more while the parent lives: nothing happens
    assert not flag.exists() and running(child)
    os.kill(middle.pid, signal.SIGKILL)
    middle.wait()
    t0 = time.monotonic()
    while not flag.exists() and time.monotonic() - t0 < 15:
        time.sleep(0.05)
    assert flag.exists(), "the worker did not stop after its parent died"
    assert time.monotonic() - t0 < 10  # a 1 s poll, then the stop (slack for a busy box)
    assert flag.read_text() == "SIGTERM"  # the stop request's path, not a crash on the broken pipe
    while running(child) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert not running(child)


def running(pid: int) -> bool:
    """Alive and not a zombie (a reparented worker may wait to be reaped by an init that never does)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_reader_that_went_away_mutes_the_events():
    r, w = os.pipe()
    os.close(r)
    writer = EventWriter(os.fdopen(w, "w"))
    event = writer("step", step=1)  # EPIPE: muted, not raised
    assert event["step"] == 1 and writer.muted
    assert writer("done", id="x")["event"] == "done"
