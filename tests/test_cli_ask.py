"""`home ask` end to end: real CLI process, real llama.cpp, real default model, a temp vault."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.cli_helpers import one_error_line, popen_home, run_home


def session_logs(vault):
    return sorted((vault / "logs").glob("*.jsonl"))


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_ask_streams_logs_and_reports_json(tmp_path):
    vault = tmp_path / "v"
    proc = run_home(vault, "ask", "Say hello.", "--max-tokens", "8", "--temperature", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"].strip()
    assert out["tokens"]["completion"] <= 8
    (log,) = session_logs(vault)
    recs = records(log)
    assert [r["role"] for r in recs] == ["user", "assistant"]
    assert recs[0]["text"] == "Say hello."
    assert recs[1]["text"] == out["text"]
    assert recs[1]["id"] == out["id"] and recs[1]["params"]["temperature"] == 0
    assert recs[1]["model"]["fingerprint"] and recs[1]["timings"]["tok_per_s"] > 0
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert oct(vault.stat().st_mode & 0o777) == "0o700"


def test_ask_greedy_is_reproducible_and_continue_keeps_history(tmp_path):
    vault = tmp_path / "v"
    # --no-memory: else the second call would recall the first and see another prompt
    a = run_home(vault, "ask", "Name a fruit.", "--max-tokens", "6", "--temperature", "0", "--no-memory")
    b = run_home(vault, "ask", "Name a fruit.", "--max-tokens", "6", "--temperature", "0", "--no-memory")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and a.stdout.strip()
    c = run_home(vault, "ask", "Another one?", "--max-tokens", "6", "--temperature", "0", "--continue")
    assert c.returncode == 0, c.stderr
    logs = session_logs(vault)
    assert len(logs) == 2  # --continue appended to the latest session
    latest = max(logs, key=lambda p: p.name)
    assert [r["turn"] for r in records(latest)] == [1, 2, 3, 4]


def test_unknown_persona_is_one_line_exit_2(tmp_path):
    proc = run_home(tmp_path / "v", "ask", "hi", "--persona", "nobody-here")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "unknown persona 'nobody-here'" in line and "known:" in line


def test_corrupt_model_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    proc = run_home(tmp_path / "v", "--model", str(bad), "ask", "hi")
    assert proc.returncode == 3
    assert str(bad) in one_error_line(proc)


def test_missing_model_and_offline_reference(tmp_path):
    proc = run_home(tmp_path / "v", "--model", str(tmp_path / "nope.gguf"), "ask", "hi")
    assert proc.returncode == 3 and "nope.gguf" in one_error_line(proc)
    proc = run_home(tmp_path / "v", "--model", "someone/some-repo/model.gguf", "ask", "hi")
    assert proc.returncode == 3 and "someone/some-repo" in one_error_line(proc)


def test_unknown_adapter_is_refused(tmp_path):
    proc = run_home(tmp_path / "v", "ask", "hi", "--adapter", "ghost:0.5")
    assert proc.returncode == 2  # as `home adapters show ghost` and `home route` give it
    assert "unknown adapter 'ghost'" in one_error_line(proc)


def test_kill_9_mid_generation_loses_no_completed_turn(tmp_path):
    vault = tmp_path / "v"
    first = run_home(vault, "ask", "Count to three.", "--max-tokens", "8", "--temperature", "0")
    assert first.returncode == 0, first.stderr
    proc = popen_home(vault, "ask", "Write a very long story about the sea.", "--max-tokens", "2000",
                      "--continue")
    # Wait until the reply is streaming: the user's message has been fsynced by then.
    deadline = time.time() + 60
    while time.time() < deadline and not proc.stdout.read(1):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (log,) = session_logs(vault)
    recs = records(log)  # every line parses
    assert [r["role"] for r in recs] == ["user", "assistant", "user"]
    assert recs[1]["partial"] is False and recs[2]["text"].startswith("Write a very long story")


@pytest.mark.parametrize("args", [["ask"], ["adapters"], ["personas", "frobnicate"]])
def test_usage_errors_exit_2(tmp_path, args):
    proc = run_home(tmp_path / "v", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # a missing argument shows the usage; a mistyped verb is one line naming it (home/cli.py Parser)
    assert "usage:" in proc.stderr or "home personas: error: unknown command 'frobnicate'" in proc.stderr


def test_gpu_layers_flag_and_config_setting(tmp_path):
    """`--gpu-layers 0` (all on the CPU) answers like any run; a bad count is a usage error, and a bad
    `[context] gpu_layers` is refused in one line naming the file, the field and its line."""
    vault = tmp_path / "v"
    proc = run_home(vault, "--gpu-layers", "0", "ask", "Say hello.", "--max-tokens", "6", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    bad = run_home(vault, "--gpu-layers", "-3", "ask", "hi")
    assert bad.returncode == 2 and "--gpu-layers: expected -1 (all)" in bad.stderr
    config = vault / "config.toml"
    config.write_text(config.read_text().replace("gpu_layers = -1", "gpu_layers = -7"))
    line = one_error_line(run_home(vault, "ask", "hi"))
    assert f"{config}: context.gpu_layers: expected -1 (all)" in line and "(line " in line


def test_home_creates_everything_private_whoever_writes_it(tmp_path):
    """The CLI sets umask 077 before any command runs, so files a library creates itself (ChromaDB's
    segments, SQLite journals) are private from birth, not only after Home fixes their modes (a kill -9
    mid-indexing left 0644 files)."""
    import subprocess
    import sys

    from tests.cli_helpers import REPO, home_env

    code = ("import os; from home.cli import main; main(['personas', 'list']); "
            "open('probe', 'w').close(); os.mkdir('folder'); print(oct(os.umask(0o022)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**home_env(tmp_path / "v"),
                          "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0o77"
    assert oct((tmp_path / "probe").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "folder").stat().st_mode & 0o777) == "0o700"
