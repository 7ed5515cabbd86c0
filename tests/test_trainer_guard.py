"""The CPU guard: models over the limit are refused on the CPU with the estimated hours, by `home train`
(after reading the data, before loading the model) and by the app's retrain panel (before any worker
starts). The real 135M model is refused by lowering the limit with HOME_CPU_TRAIN_LIMIT."""

from __future__ import annotations

import json

from home.app.widgets.train_panel import TrainPanel
from tests.cli_helpers import one_error_line, popen_home, run_home
from tests.test_app import drive, make_app, wait_ready
from tests.test_trainer_e2e import train_args, write_logs
from trainer.protocol.guard import cpu_refusal, cpu_tokens_per_s


def test_refusal_names_the_size_the_hours_and_the_way_out():
    assert cpu_refusal("Small", 135_000_000) is None
    why = cpu_refusal("Qwen2.5 7B Instruct", 7_600_000_000, tokens=2_000_000, cores=8)
    assert why.startswith("Qwen2.5 7B Instruct has 7.6B parameters") and "--allow-cpu" in why
    hours = 2_000_000 / cpu_tokens_per_s(7_600_000_000, 8) / 3600
    assert f"about {hours:,.0f} hours for this data" in why and hours > 50
    assert "per 1,000 chat turns" in cpu_refusal("Llama 3B", 3_200_000_000, cores=2)
    assert cpu_tokens_per_s(270e6, 2) == cpu_tokens_per_s(135e6, 2) / 2  # scales with the parameters


def test_home_train_refuses_on_the_cpu_and_allow_cpu_goes_on(tmp_path, monkeypatch):
    vault = tmp_path / "v"
    write_logs(vault)
    monkeypatch.setenv("HOME_CPU_TRAIN_LIMIT", "1e8")  # the 135M default counts as "big" here
    proc = run_home(vault, *train_args())
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert "parameters: training it on the CPU would take about" in line and "--allow-cpu" in line
    kinds = [json.loads(x)["event"] for x in proc.stdout.splitlines() if x.strip()]
    assert "dataset" in kinds and "step" not in kinds and not (vault / "manifest.json").exists()
    # --allow-cpu passes the guard: the model starts loading (the run is stopped there)
    proc = popen_home(vault, *train_args("--allow-cpu"))
    try:
        for line in proc.stdout:
            event = json.loads(line)
            assert event["event"] != "error", event
            if event["event"] == "phase" and event.get("name") == "load":
                break
    finally:
        proc.kill()
        proc.wait()
    assert event.get("name") == "load"


def test_the_retrain_panel_shows_the_refusal_instead_of_starting(tmp_path, monkeypatch):
    vault = tmp_path / "v"
    write_logs(vault)
    monkeypatch.setenv("HOME_CPU_TRAIN_LIMIT", "1e8")
    app = make_app(vault, user="bo", train_steps=6, train_args={"device": "auto"})

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("ctrl+t")
        panel = app.chat.query_one(TrainPanel)
        assert panel.display and app.retrain is None and not app.training_running
        assert "would take about" in panel.view.outcome and "--allow-cpu" in panel.view.outcome
        assert "stage: not started" in panel.text
        await pilot.click("#train-cancel")  # "Close"
        assert not panel.display

    drive(app, scenario)
