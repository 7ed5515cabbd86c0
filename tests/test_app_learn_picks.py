""""Learn from your picks" in the app: after [training] learn_from_picks_after new pick-best pairs the retrain
panel offers it; its button builds a DPO job over the user's current voice; too few pairs to hold some out
are refused on the panel before any worker starts; enough start the real worker (cancelled here). Fewer new pairs (or pairs older than the last DPO voice) offer nothing."""

from __future__ import annotations

import pytest

from home.app.retrain import build_job, picks_waiting
from home.app.widgets.train_panel import TrainPanel, TrainView
from llm.gguf_meta import read_model_info
from llm.models import default_model_path
from tests.loras import make_random_lora
from tests.test_app import drive, make_app, wait_for, wait_ready
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore
from vault.preferences import append_preference


def add_pairs(vault: Vault, n: int, fp: str, first: int = 0) -> None:
    side = {"candidate": 1, "label": "a", "adapters": [], "params": {}, "finish_reason": "stop"}
    for i in range(first, first + n):
        append_preference(vault, {"user": "bo", "prompt": [{"role": "user", "content": f"q{i}?"}],
                                  "chosen": {**side, "text": f"yes {i}"}, "rejected": {**side, "text": "no"},
                                  "model": {"name": "SmolLM2", "fingerprint": fp}})


def add_voice(vault: Vault, fp: str) -> None:
    (vault.adapters_dir / "bo-voice-1").mkdir(mode=0o700)
    path = make_random_lora(default_model_path(), vault.adapters_dir / "bo-voice-1" / "adapter.gguf", scale_std=0.001)
    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry(id="bo-voice-1", name="bo-voice", file="adapters/bo-voice-1/adapter.gguf",
                                   base={"fingerprint": fp, "name": "SmolLM2"}, owner="bo", kind="voice"))
        m.ensure_user("bo")["voice_adapter"] = "bo-voice-1"
    assert path.is_file()


@pytest.mark.slow
def test_the_panel_offers_learning_from_picks_and_starts_a_dpo_run(tmp_path):
    root = tmp_path / "v"
    vault = Vault.open(root)
    (root / "config.toml").write_text("[training]\nlearn_from_picks_after = 3\n")
    fp = read_model_info(default_model_path()).fingerprint
    add_voice(vault, fp)
    add_pairs(vault, 2, fp)
    app = make_app(root, user="bo", train_steps=40, train_args=dict(rank=8, batch_size=4, device="cpu"))

    async def scenario(pilot):
        await wait_ready(pilot, app)
        panel = app.chat.query_one(TrainPanel)
        app.offer_picks()
        assert not panel.display  # 2 new pairs < 3
        add_pairs(vault, 1, fp, first=2)
        assert picks_waiting(app.session) == 3
        app.offer_picks()
        assert panel.display and "3 new pick-best choices" in panel.text
        assert panel.query_one("#train-picks").display
        await pilot.pause(0.1)  # the panel is laid out before the click lands
        await pilot.click("#train-picks")
        # 3 pairs cannot hold some out: said on the panel at once, no worker started
        assert app.retrain is None and not panel.query_one("#train-picks").display
        assert "at least 6 are needed" in panel.view.outcome, panel.text
        job = build_job(app.session, "dpo")
        assert (job.method, job.source, job.start, job.name) == ("dpo", "preferences", "bo-voice-1", "bo-voice")
        add_pairs(vault, 3, fp, first=3)
        await pilot.click("#train-cancel")  # "Close"
        app.offer_picks()
        await pilot.pause(0.1)
        await pilot.click("#train-picks")
        assert app.training_running and app.retrain.job.method == "dpo"  # the real worker, on 6 pairs
        app.action_cancel_training()
        await wait_for(pilot, lambda: not app.training_running, timeout=240)
        assert app.retrain.code in (130, -2), panel.text  # stopped before registering anything

    drive(app, scenario)
    assert list(ManifestStore(vault).read().adapters) == ["bo-voice-1"]


def test_panel_says_why_a_new_voice_was_kept_as_a_candidate():
    view = TrainView()
    for e in [{"event": "eval", "stage": "preference", "accuracy_before": 0.25, "accuracy_after": 0.75},
              {"event": "eval", "stage": "promotion", "decision": "candidate", "replaces": "bo-voice-1",
               "why": "kept as a candidate, not made your voice: perplexity 9.1 vs 8.0 for bo-voice-1"},
              {"event": "registered", "id": "bo-voice-2"}, {"event": "done"}]:
        view.apply(e)
    assert view.outcome.startswith("registered bo-voice-2 · picks agreed with 25% → 75%")
    assert "kept as a candidate" in view.outcome and "home adapters voice bo-voice-2" in view.outcome
