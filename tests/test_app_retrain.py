""""Retrain my voice" from the app with the real trainer worker at tiny settings: the panel follows the
run to a registered adapter, the watcher hot-loads it, the chat says so and keeps answering meanwhile;
cancelling (palette start, Esc on the panel) sends one SIGINT, the panel says where it stopped and
nothing is registered."""

from __future__ import annotations

import json

import pytest

from home.app.commands import HomeCommands
from home.app.screens.confirm import ConfirmScreen
from home.app.widgets.train_panel import TrainPanel, TrainView
from tests.test_app import drive, footer, make_app, records, say, wait_for, wait_ready
from tests.test_app_palette import run_command
from tests.test_trainer_e2e import write_logs

TINY = dict(rank=8, batch_size=4, lr=2e-3, max_length=128, device="cpu")


def manifest(vault) -> dict:
    path = vault / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"adapters": {}, "users": {}}


@pytest.mark.slow
def test_retrain_registers_hot_loads_and_announces_while_the_chat_answers(tmp_path):
    # The app on a tiny random Llama (tests/families.py): the panel, the hot-load, the announcement and the
    # chat answering beside the worker are the same for any model; the trainer then trains what the app runs.
    from tests.families import tiny_gguf

    vault = tmp_path / "v"
    write_logs(vault)
    app = make_app(vault, model=tiny_gguf("llama"), user="bo", train_steps=3, train_args=TINY)
    chat_log: list[str] = []

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await wait_for(pilot, lambda: app.watcher is not None)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")  # "Retrain your voice from your chat logs?"
        panel = app.chat.query_one(TrainPanel)
        assert panel.display and app.training_running
        assert "Cancel training" in [name for name, _, _ in HomeCommands(app.screen)._commands()]
        await say(pilot, app, "hello")  # the worker is another process: the chat keeps answering
        assert app.training_running
        assert footer(app)["escape"] == "Cancel training"  # no reply to stop: Esc would stop the training
        chat_log.append(app.session.conversation.log.session)
        await wait_for(pilot, lambda: panel.view.finished and not app.training_running, timeout=300)
        view = panel.view
        assert view.outcome.startswith("registered bo-voice-1 · held-out perplexity"), panel.text
        assert view.step == view.total == 3 and len(view.losses) >= 1 and view.base_val_loss is not None
        assert app.retrain.code == 0 and "stage: done" in panel.text
        assert "escape" not in footer(app)
        await wait_for(pilot, lambda: "bo-voice-1" in app.session.engine.loaded_adapters, timeout=30)
        await wait_for(pilot, lambda: any("your new voice adapter bo-voice-1 is loaded" in str(w.render())
                                          for w in app.chat.query("SystemLine")), timeout=30)
        await pilot.press("ctrl+v")
        await wait_for(pilot, lambda: app.chat.stack_applied == [("bo-voice-1", 1.0)])

    drive(app, scenario)
    m = manifest(vault)
    assert "bo-voice-1" in m["adapters"] and m["users"]["bo"]["voice_adapter"] == "bo-voice-1"
    (reply,) = [r for r in records(vault) if r["session"] == chat_log[0] and r["role"] == "assistant"]
    assert reply["text"] and reply["partial"] is False  # answered while the worker trained


@pytest.mark.slow
def test_cancel_stops_with_a_checkpoint_and_registers_nothing(tmp_path):
    from tests.families import tiny_gguf

    vault = tmp_path / "v"
    write_logs(vault)
    # the tiny Llama's steps take milliseconds: enough of them that the cancel lands mid-training
    app = make_app(vault, model=tiny_gguf("llama"), user="bo", train_steps=2000, train_args=TINY)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await run_command(pilot, app, "Retrain my voice")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        panel = app.chat.query_one(TrainPanel)
        await wait_for(pilot, lambda: panel.view.step >= 1 or panel.view.finished, timeout=240)
        panel.query_one("#train-cancel").focus()
        assert footer(app)["escape"] == "Cancel training"
        await pilot.press("escape")  # the panel's own Esc: cancel training (not the reply)
        assert app.retrain.interrupted, panel.text
        await wait_for(pilot, lambda: panel.view.finished and not app.training_running, timeout=120)
        assert "stopped at step" in panel.view.outcome and "home train --resume" in panel.view.outcome
        assert app.retrain.code == 130
        assert footer(app)["escape"] == "Close"  # the panel's Esc now closes it
        await pilot.click("#train-cancel")  # now "Close"
        assert not panel.display

    drive(app, scenario)
    assert manifest(vault)["adapters"] == {}


def test_panel_state_follows_trainer_events():
    view = TrainView()
    for e in [{"event": "started", "adapter": "bo-voice", "source": "logs", "model": "M"},
              {"event": "dataset", "examples": 16},
              {"event": "eval", "step": 0, "total_steps": 6, "val_loss": 3.0, "base": True},
              {"event": "phase", "name": "train", "detail": "6 steps"},
              {"event": "step", "step": 3, "total": 6, "loss": 2.5, "tokens_per_s": 200.0, "eta_s": 9},
              {"event": "eval", "step": 3, "total": 6, "val_loss": 2.2},
              {"event": "converted", "tensors": 60, "rank": 8}]:
        view.apply(e)
    assert (view.stage, view.step, view.total, view.losses) == ("verifying", 3, 6, [2.5])
    assert view.stats() == "step 3/6 · loss 2.500 · 200 tok/s · eta 0m09s"
    assert view.validation() == "validation loss: base 3.000 → 2.200@3"
    view.apply({"event": "eval", "stage": "heldout", "perplexity_base": 9.0, "perplexity_adapter": 4.5})
    view.apply({"event": "registered", "id": "bo-voice-1"})
    view.apply({"event": "done", "id": "bo-voice-1"})
    assert view.finished and view.outcome == ("registered bo-voice-1 · held-out perplexity 9.00 → 4.50 · "
                                         "sounds 50% more like you than the base")
    stopped = TrainView()
    stopped.apply({"event": "stopped", "step": 2, "total": 40})
    stopped.apply({"event": "error", "message": "late"})
    assert stopped.outcome == "stopped at step 2 — resume with `home train --resume`"
