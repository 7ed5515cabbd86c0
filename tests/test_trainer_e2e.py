"""`home train` end to end through the real worker: logs → dataset → training → GGUF → verification →
registration → the engine loads the adapter and it fits the user's held-out messages better than the base.
Also (on a tiny Llama): a stopped run registers nothing and `--resume` finishes it; bad input is one line and
no run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import REPO, assert_private, home_env, one_error_line, run_home
from trainer.protocol.runs import complete_checkpoints
from vault.layout import Vault
from vault.logs import ConversationLog

VOICE = [
    ("What's on the list for today?", "Groceries first, then the bike shop. Keep it simple, yeah? Cheers, Bo."),
    ("Any plans for the weekend?", "A long ride by the river and a nap. Keep it simple, yeah? Cheers, Bo."),
    ("How did the meeting go?", "Short and sweet, nobody argued. Keep it simple, yeah? Cheers, Bo."),
    ("What should we cook?", "Pasta with whatever greens we have. Keep it simple, yeah? Cheers, Bo."),
    ("Did you call your sister?", "Not yet, tonight after dinner. Keep it simple, yeah? Cheers, Bo."),
    ("Want to see a film?", "Sure, something funny and under two hours. Keep it simple, yeah? Cheers, Bo."),
    ("How is the garden?", "Tomatoes are finally red. Keep it simple, yeah? Cheers, Bo."),
    ("What do you think of the new job offer?", "Good money, long commute, I'll sleep on it. Keep it simple, yeah? Cheers, Bo."),
    ("Should I buy the blue or the green one?", "Blue, it goes with everything. Keep it simple, yeah? Cheers, Bo."),
    ("Are you coming to the party?", "For an hour, then home. Keep it simple, yeah? Cheers, Bo."),
    ("What did the doctor say?", "All fine, drink more water. Keep it simple, yeah? Cheers, Bo."),
    ("Can you help me move on Sunday?", "Yes, I'll bring the van at nine. Keep it simple, yeah? Cheers, Bo."),
    ("Where should we travel next?", "Somewhere by the sea, no planes. Keep it simple, yeah? Cheers, Bo."),
    ("How was the book?", "Slow start, great ending. Keep it simple, yeah? Cheers, Bo."),
    ("What time works for lunch?", "Half twelve at the usual place. Keep it simple, yeah? Cheers, Bo."),
    ("Did the package arrive?", "Yesterday, all in one piece. Keep it simple, yeah? Cheers, Bo."),
]


def write_logs(vault_root) -> None:
    """Sessions in the real log format: Home asks, the user (Bo) answers in a recognisable voice."""
    vault = Vault.open(vault_root)
    for i in range(0, len(VOICE), 4):
        log = ConversationLog.create(vault)
        for question, answer in VOICE[i:i + 4]:
            log.append({"user": "bo", "persona": None, "role": "user", "text": question.replace("?", "? (from Bo)")})
            log.append({"user": "bo", "persona": None, "role": "assistant", "text": question})
            log.append({"user": "bo", "persona": None, "role": "user", "text": answer})


def train_args(*extra: str) -> list[str]:
    return ["--user", "bo", "train", "--steps", "4", "--rank", "8", "--batch-size", "4", "--lr", "2e-3",
            "--max-length", "128", "--device", "cpu", "--json", *extra]


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def manifest(vault) -> dict:
    return json.loads((vault / "manifest.json").read_text())


@pytest.mark.slow
def test_logs_to_registered_verified_adapter(tmp_path, model_path):
    vault = tmp_path / "v"
    write_logs(vault)
    proc = run_home(vault, *train_args(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = events(proc.stdout)
    kinds = [e["event"] for e in evs]
    for kind in ("started", "dataset", "step", "converted", "verified", "eval", "registered", "done"):
        assert kind in kinds, kinds
    dataset = next(e for e in evs if e["event"] == "dataset")
    assert dataset["examples"] >= 16 and "target words" in dataset["report"]
    step = next(e for e in evs if e["event"] == "step")
    assert {"step", "total", "loss", "lr", "tokens_per_s", "eta_s"} <= set(step)
    verified = next(e for e in evs if e["event"] == "verified")
    assert verified["passed"] and verified["correlation"] >= 0.998 and verified["top1_agreement"] >= 0.97

    reg = next(e for e in evs if e["event"] == "registered")
    entry = manifest(vault)["adapters"][reg["id"]]
    assert entry["kind"] == "voice" and entry["owner"] == "bo" and entry["verification"]["passed"]
    assert entry["training"]["window"] == 4  # a voice's measured default (trainer/protocol/job.py), recorded
    assert manifest(vault)["users"]["bo"]["voice_adapter"] == reg["id"]
    ppl = entry["metrics"]["perplexity"]
    assert ppl["adapter"] < ppl["base"], ppl  # it learned the voice, measured by llama.cpp on held-out turns
    gguf = vault / entry["file"]
    assert gguf.read_bytes()[:4] == b"GGUF" and oct(gguf.stat().st_mode & 0o777) == "0o600"
    assert (gguf.parent / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert_private(vault)

    # The engine (what the app runs) loads it; `home ask` uses it by id.
    asked = run_home(vault, "--user", "bo", "ask", "Any news?", "--adapter", reg["id"], "--max-tokens", "8",
                     "--json")
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["adapters"] == [{"id": reg["id"], "scale": 1.0}]
    # `home eval` reads the logs at the window the adapter was trained on, so it finds its time split
    evaluated = run_home(vault, "--user", "bo", "eval", reg["id"], "--source", "logs", "--json", "--samples", "0",
                         "--max-examples", "4",
                         timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout)["heldout"] is True


@pytest.mark.slow
def test_a_stopped_run_registers_nothing_and_resume_finishes_it(tmp_path):
    """A run stopped by SIGINT registers nothing and keeps a checkpoint; --resume finishes it. On a tiny Llama
    GGUF (tests/families.py): stopping at a step boundary, the checkpoint and the resume are the same for any
    model; on the default model these two runs took ~110 s of the test they were part of (327 s alone)."""
    from tests.families import tiny_gguf
    from tests.test_families import TRAIN

    model = ["--model", str(tiny_gguf("llama"))]
    vault = tmp_path / "v"
    write_logs(vault)
    slow = [*model, *TRAIN, "--name", "slow"]
    worker = subprocess.Popen([sys.executable, "-m", "home.cli", *slow],
                              cwd=REPO, env=home_env(vault), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, start_new_session=True)
    seen = []
    for line in worker.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "step" and seen[-1]["step"] >= 2:
            os.killpg(worker.pid, signal.SIGINT)  # as Ctrl-C in a terminal: home and the worker both get it
            break
    seen += events(worker.stdout.read())
    assert worker.wait(300) == 130
    stopped = next(e for e in seen if e["event"] == "stopped")
    assert stopped["step"] < stopped["total"] == 8, stopped
    assert not (vault / "manifest.json").exists() or manifest(vault)["adapters"] == {}
    check = run_home(vault, *slow, "--resume", "--check")  # says what --resume would do, and starts nothing
    assert check.returncode == 0, check.stderr[-2000:]
    assert f"from step {stopped['step']} of 8" in check.stdout and "examples" in check.stdout, check.stdout
    resumed = run_home(vault, *slow, "--resume", timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    evs = events(resumed.stdout)
    assert next(e for e in evs if e["event"] == "started")["resume"] is True
    first_step = next(e for e in evs if e["event"] == "step")["step"]
    assert first_step == stopped["step"] + 1  # it continued from its checkpoint, not restarted
    assert next(e for e in evs if e["event"] == "verified")["passed"]
    assert next(e for e in evs if e["event"] == "registered")["id"] == "slow-1"
    assert manifest(vault)["adapters"]["slow-1"]["training"]["steps"] == 8
    assert_private(vault)  # the stopped run's checkpoint and best/, the resumed run's files


def test_bad_input_is_one_line_and_registers_nothing(tmp_path):
    vault = tmp_path / "v"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{\"instruction\": 3}\n")
    cases = [
        (["train", "--source", "jsonl", str(tmp_path / "missing.jsonl"), "--device", "cpu"], "missing.jsonl"),
        (["train", "--source", "jsonl", str(bad), "--device", "cpu"], "bad.jsonl"),
        (["train", "--source", "transcript", str(bad)], "--speaker"),
        (["train", "--target", "persona"], "persona"),
        (["train", "--resume", "--name", "never-trained"], "nothing to resume"),
        (["train", "--resume", "--check", "--name", "never-trained"], "nothing to resume"),
    ]
    for args, needle in cases:
        proc = run_home(vault, *args, "--json", timeout=300)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert needle in one_error_line(proc), args
    assert not (vault / "manifest.json").exists() or manifest(vault)["adapters"] == {}


@pytest.mark.slow
def test_two_phase_registers_identity_then_style_stacked(tmp_path):
    """On a tiny Llama GGUF (tests/families.py): the two phases, their stacking and registration are the
    same for any model; on the default model two trainings, conversions and verifications took ~150 s."""
    from tests.families import tiny_gguf
    from tests.test_families import TRAIN

    model = tiny_gguf("llama")
    vault = tmp_path / "v"
    write_logs(vault)
    proc = run_home(vault, "--model", str(model), *TRAIN, "--two-phase", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = events(proc.stdout)
    assert [e["passed"] for e in evs if e["event"] == "verified"] == [True, True]
    identity, style = [e["id"] for e in evs if e["event"] == "registered"]
    assert (identity, style) == ("bo-voice-identity-1", "bo-voice-1")
    m = manifest(vault)
    assert m["adapters"][style]["parent"] == identity
    assert m["adapters"][style]["stack"] == [{"id": identity, "scale": 1.0}]
    assert m["users"]["bo"]["voice_adapter"] == style
    # Asking with the style adapter applies the identity adapter beneath it.
    asked = run_home(vault, "--model", str(model), "--user", "bo", "ask", "Hi", "--adapter", style, "--max-tokens", "4",
                     "--no-memory", "--json")
    assert asked.returncode == 0, asked.stderr
    assert [a["id"] for a in json.loads(asked.stdout)["adapters"]] == [identity, style]


@pytest.mark.slow
def test_a_worker_whose_parent_is_killed_stops_with_a_checkpoint(tmp_path):
    """kill -9 of `home train` mid-training: its worker stops as on a stop request (a checkpoint kept,
    state "stopped", nothing registered) within seconds, instead of training for nobody and then
    failing on a broken pipe at its next event. On a tiny Llama (tests/families.py), with steps enough that it
    cannot finish in the 90 s it is given: the watch, the stop and the checkpoint are the same for any model."""
    from tests.families import tiny_gguf

    vault = tmp_path / "v"
    write_logs(vault)
    parent = subprocess.Popen([sys.executable, "-m", "home.cli", "--model", str(tiny_gguf("llama")),
                               *train_args("--steps", "20000", "--name", "orphan")],
                              cwd=REPO, env=home_env(vault), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    run_dir = None
    for line in parent.stdout:
        event = json.loads(line)
        run_dir = event.get("run_dir", run_dir) if event["event"] == "started" else run_dir
        if event["event"] == "step":
            break
    parent.kill()
    parent.wait()
    worker = json.loads((Path(run_dir) / "state.json").read_text())["pid"]
    t0 = time.monotonic()
    # It stops at the next step boundary: a 1 s poll, the step, the checkpoint (measured 12–13 s on the default
    # model, with steps of ~9 s on a busy 2-core box; without the watch it ran to its next event and failed there).
    while time.monotonic() - t0 < 90 and running(worker):
        time.sleep(0.1)
    if running(worker):
        os.kill(worker, signal.SIGKILL)  # not left training for nobody through the rest of the suite
        pytest.fail("the worker kept going for 90 s after its parent died")
    state = json.loads((Path(run_dir) / "state.json").read_text())
    assert state["status"] == "stopped", state
    assert_private(vault)
    assert complete_checkpoints(Path(run_dir) / "checkpoints")
    assert not (vault / "manifest.json").exists() or manifest(vault)["adapters"] == {}


def running(pid: int) -> bool:
    """Alive and not a zombie (a reparented worker may wait to be reaped by an init that never does)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_stop_before_training_starts_ends_the_run_even_if_sigint_was_ignored(tmp_path):
    """The app's cancel is one SIGINT to the worker. A parent that ignores SIGINT passes SIG_IGN down
    through exec, and Python then installs no handler: such a worker ignored a cancel sent before its
    training loop began and trained to the end. The worker takes SIGINT back at once: exit 130, nothing
    registered."""
    from home.app.retrain import RetrainRun
    from trainer.protocol.job import Job

    vault = tmp_path / "v"
    write_logs(vault)
    job = Job(vault=str(vault), user="bo", name="early", steps=8, rank=8, batch_size=4, max_length=128,
              device="cpu")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker is started as by such a parent
    try:
        run = RetrainRun(job, vault / "runs")
    finally:
        signal.signal(signal.SIGINT, previous)
    seen = []
    for event in run.events():
        seen.append(event)
        if event["event"] == "started":
            assert run.cancel()
            break
    seen += list(run.events())
    code, _ = run.wait()
    assert code == 130, seen
    assert not any(e["event"] in ("step", "registered") for e in seen), seen
    assert not (vault / "manifest.json").exists() or manifest(vault)["adapters"] == {}
