"""One "Retrain my voice" run from the app: the job, the trainer worker process, its events, cancel.

The same contract as `home train`: the worker is `python -m trainer -` (home.worker.start_worker) in its
own session, its stdout is JSON events (trainer.protocol.events.read_events), and cancelling sends exactly one
SIGINT so it stops at the next step and keeps a checkpoint (`home train --resume` continues it). The
app reads the events in a thread worker; nothing here touches widgets. Whatever happens to the reader,
the worker's stdout is read to its end before it is waited for: a worker blocked writing to a full pipe
never exits, and a wait on it never returns.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator

from home.worker import start_worker
from trainer.protocol.events import read_events
from trainer.protocol.guard import cpu_refusal, cuda_visible, model_params
from trainer.protocol.job import Job


def cpu_refusal_for(job: Job, engine) -> str | None:
    """The trainer's CPU guard, asked before a worker starts: a model over ~1B parameters with no CUDA
    GPU to train on gets the estimated hours instead of a run (unless the job allows the CPU)."""
    if job.allow_cpu or job.device == "cuda" or engine is None or cuda_visible():
        return None
    return cpu_refusal(engine.info.name, model_params(engine.info))


def build_job(session, method: str = "sft") -> Job:
    """The user's voice from their chat logs (sft), or from their pick-best pairs over their current voice
    (dpo, "learn from your picks"), for the model the app runs, with the Job's own defaults (those of
    `home train` with no flags: length and rank by the log's size (trainer/protocol/tiers.py), batch 8,
    lr 1e-3 for a voice, 512 tokens, auto device).
    AppOptions.train_steps / train_args override them (tests train 6 tiny steps on the CPU)."""
    o = session.options
    fields = dict(o.train_args or {})
    if o.train_steps:
        fields["steps"] = o.train_steps
    model = session.engine.path if session.engine is not None else session.ctx.model_path
    source = "preferences" if method == "dpo" else "logs"
    job = Job(vault=str(session.vault.root), source=source, method=method, target="user", user=session.user,
              model=str(model), **fields)
    if method == "dpo":  # the voice's next version, its current version the reference
        voice = _fitting_voice(session)
        if voice is not None:
            job.start, job.name = voice.id, job.name or voice.name
    job.validate("retrain")
    return job


def _fitting_voice(session):
    from llm.fingerprint import same_base

    manifest = session.manifest()
    vid = (manifest.users.get(session.user) or {}).get("voice_adapter")
    entry = manifest.adapters.get(vid) if vid else None
    fp = session.engine.info.fingerprint if session.engine is not None else None
    if entry is None or fp is None or not same_base((entry.base or {}).get("fingerprint"), fp):
        return None
    return entry


def logs_refusal(session, job: Job) -> str | None:
    """Why "Retrain my voice" cannot start (too few of the user's messages in the logs), said before a
    worker starts and loads torch only to refuse; None when it can. The worker checks the same
    (DatasetReport.too_small). Sessions are read newest first and the reading stops at enough: this runs on
    the UI thread, and reading every log of a 10k-session vault took 2.2 s (the worker reads them all)."""
    from trainer.data.examples import MIN_EXAMPLES
    from trainer.data.sources import load_source
    from vault.logs import list_sessions

    def read(path):  # noqa: ANN001, ANN202
        return load_source(job.source, path, vault=session.vault, speaker=job.speaker, target=job.target,
                           persona=job.persona, window=job.context_window, user=job.user)

    found = 0
    for info in list_sessions(session.vault):
        found += len(read(info.path).examples)
        if found >= MIN_EXAMPLES:
            return None
    why = read(job.path).too_small(session.vault.logs_dir)  # few logs: the exact count and the first rejection
    return f"{why}: each message you send is one; chat a little more first" if why else None


def picks_refusal(session) -> str | None:
    """Why "learn from your picks" cannot start (too few usable pairs to hold some out), said before a
    worker starts; None when it can. The worker checks the same (trainer.data.preferences.split_pairs)."""
    from trainer.data.preferences import load_pairs, split_pairs

    fp = session.engine.info.fingerprint if session.engine is not None else None
    report = load_pairs(session.vault, session.user, fp, set(session.manifest().adapters), forgotten=set())
    try:
        split_pairs(report.pairs)
    except ValueError as exc:
        skipped = f" ({len(report.skipped)} skipped: {', '.join(f'{n} {k}' for k, n in report.counts().items())})"
        return f"{exc}{skipped if report.skipped else ''}"
    return None


def picks_waiting(session) -> int:
    """Usable pick-best pairs made since the user's voice last learnt from picks (all of them before the
    first time): what "learn from your picks" is offered on. Reads one small JSONL file and the manifest;
    forgotten turns are not looked up here (the trainer skips them and says so)."""
    from trainer.data.preferences import load_pairs

    manifest = session.manifest()
    fp = session.engine.info.fingerprint if session.engine is not None else None
    last = max((e.created for e in manifest.adapters.values()
                if e.owner == session.user and (e.training or {}).get("method") == "dpo"), default="")
    report = load_pairs(session.vault, session.user, fp, set(manifest.adapters), forgotten=set())
    return sum(1 for p in report.pairs if p.time > last)


class RetrainRun:
    """A started worker. `events()` and `follow()` block (call them from a thread); `cancel()` is safe
    from any thread. `start`: what starts the process (`home.worker.start_worker`; tests start another
    program that speaks the same protocol)."""

    def __init__(self, job: Job, runs_dir, start: Callable[..., subprocess.Popen] = start_worker) -> None:
        self.job = job
        # Library chatter (warnings, progress bars) goes aside; its last line explains a silent death.
        self._chatter = tempfile.TemporaryFile(mode="w+", dir=runs_dir)
        self.proc = start(job, stderr=self._chatter)
        self.interrupted = False
        self.code: int | None = None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def events(self) -> Iterator[dict]:
        assert self.proc.stdout is not None
        yield from read_events(iter(self.proc.stdout.readline, ""))

    def follow(self, on_event: Callable[[dict], None]) -> tuple[int, str | None]:
        """Hand each event to `on_event` until the worker ends, then reap it (see `wait`). If `on_event`
        raises (the app closed under us: RuntimeError; or a bug in the panel), the events that follow
        are read and dropped, so the worker finishes its run (or stops when the app closes it); a
        panel error becomes the `why`."""
        failed: Exception | None = None
        try:
            for event in self.events():
                if failed is None:
                    try:
                        on_event(event)
                    except Exception as exc:  # noqa: BLE001 - whatever the UI did, the pipe is read to its end
                        failed = exc
        finally:
            code, why = self.wait()
        if failed is not None and not isinstance(failed, RuntimeError):
            why = f"the app stopped showing the run ({type(failed).__name__}: {failed})"
        return code, why

    def cancel(self) -> bool:
        """One SIGINT, never two (a second would abort the checkpoint). False if nothing was sent."""
        if self.interrupted or not self.running:
            return False
        self.interrupted = True
        self.proc.send_signal(signal.SIGINT)
        return True

    def wait(self) -> tuple[int, str | None]:
        """The exit code and the worker's last stderr line (for a failure no event explained). What the
        worker still writes on stdout is read and dropped first: unread, a full pipe blocks it forever."""
        self._drain()
        self.code = self.proc.wait()
        self._chatter.seek(0)
        tail = [ln.strip() for ln in self._chatter.read().splitlines() if ln.strip()][-1:]
        self._chatter.close()
        return self.code, (tail[0] if tail else None)

    def _drain(self) -> None:
        out = self.proc.stdout
        if out is None or out.closed:
            return
        try:
            while out.buffer.read(1 << 16):  # bytes: a torn UTF-8 sequence must not stop the draining
                pass
        except (OSError, ValueError):  # closed by another thread meanwhile: nothing left to drain
            pass
        out.close()

    def close(self, timeout: float = 60.0) -> None:
        """The app is closing: ask the worker to stop with a checkpoint, kill it if it will not."""
        if not self.running:
            return
        self.cancel()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
