"""Pick-best: what differs between the two candidates, the preference file, and the screen through the
real app (ctrl+b, Esc leaves everything as it was, 2 picks: log, history, screen and preference pair)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from home.app.screens.pick_best import PickBestScreen
from home.app.widgets.messages import MessageList
from home.pickbest import plan
from llm.params import GenParams
from tests.test_app import drive, make_app, records, say, wait_for, wait_ready
from vault.errors import VaultError
from vault.layout import Vault
from vault.preferences import append_preference, read_preferences


def test_two_seeds_and_a_sampled_second_when_greedy():
    rng = random.Random(0)
    a, b = plan([("p", 1.0)], GenParams(temperature=0.7, seed=-1), rng=rng)
    assert a.params.seed != b.params.seed and a.params.seed >= 0 and a.stack == b.stack == [("p", 1.0)]
    assert a.params.temperature == b.params.temperature == 0.7
    a, b = plan([], GenParams(temperature=0.0, seed=5))
    assert (a.params.seed, a.params.temperature) == (5, 0.0) and (b.params.seed, b.params.temperature) == (6, 0.8)
    assert a.label == "seed 5 · t 0" and b.label == "seed 6 · t 0.8"


def test_with_a_voice_adapter_only_the_adapter_differs():
    a, b = plan([("persona", 1.0), ("v", 1.2)], GenParams(temperature=0.7, seed=-1), voice=[("v", 1.2)])
    assert a.stack == [("persona", 1.0)] and b.stack == [("persona", 1.0), ("v", 1.2)]
    assert a.params == b.params and a.params.seed >= 0
    assert "without" in a.label and "v×1.2" in b.label


def test_preferences_append_private_and_refuse_a_bad_user(tmp_path):
    vault = Vault.open(tmp_path / "v")
    pair = {"user": "me", "prompt": [{"role": "user", "content": "hi"}], "chosen": {"text": "a"},
            "rejected": {"text": "b"}}
    written = append_preference(vault, pair)
    path = vault.preferences_dir / "me.jsonl"
    assert oct(path.stat().st_mode & 0o777) == "0o600" and written["id"].startswith("pref-")
    with open(path, "a") as fh:
        fh.write('{"torn')  # a crash mid-write: readers skip it, the next append starts a fresh line
    append_preference(vault, pair)
    read = read_preferences(vault, "me")
    assert len(read.records) == 2 and len(read.problems) == 1
    with pytest.raises(VaultError, match="user name"):
        append_preference(vault, {**pair, "user": "../etc"})
    with pytest.raises(VaultError, match="needs 'rejected'"):
        append_preference(vault, {"user": "me", "prompt": [], "chosen": {}})


def test_ctrl_b_shows_two_candidates_and_the_pick_becomes_the_reply(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault, temperature=0.7, seed=None)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("ctrl+b")  # nothing to pick for yet
        await pilot.pause()
        assert not isinstance(app.screen, PickBestScreen)
        assert any("Send a message first" in str(n.message) for n in app._notifications)
        await say(pilot, app, "Name a fruit.")
        first = app.session.conversation.last

        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, PickBestScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.done)
        await pilot.press("escape")  # dismissed: nothing logged, nothing changed
        await wait_for(pilot, lambda: app.chat is not None)
        assert app.session.conversation.last is first and len(records(vault)) == 2

        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, PickBestScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.done)
        texts = [c.reply.text for c in screen.pick.candidates]
        labels = [c.label for c in screen.pick.candidates]
        assert all(f"{k + 1} · {labels[k]}" == p.message.border_title for k, p in enumerate(screen.panes))
        await pilot.press("2")
        await wait_for(pilot, lambda: app.chat is not None)
        await pilot.pause()
        shown = app.chat.query_one(MessageList).last_reply
        assert shown.text == texts[1] and "picked 2 of 2" in shown.border_subtitle
        assert len(app.chat.query("AssistantMessage")) == 1
        history = app.session.conversation.history
        assert history == [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": texts[1]}]
        nonlocal_state["texts"], nonlocal_state["first"] = texts, first.record["id"]
        await say(pilot, app, "Another?")  # the chat goes on after the pick

    nonlocal_state: dict = {}
    drive(app, scenario)
    recs = records(vault)
    assert [r["role"] for r in recs] == ["user", "assistant"] * 3
    chosen = recs[3]
    assert chosen["text"] == nonlocal_state["texts"][1] and chosen["pick_best"]["candidate"] == 2
    assert recs[2]["text"] == "Name a fruit." and recs[2]["pick_best"] == {"replaces": nonlocal_state["first"]}
    path = Path(vault) / "preferences" / "me.jsonl"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    (pair,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert pair["chosen"]["text"] == nonlocal_state["texts"][1] and pair["rejected"]["text"] == nonlocal_state["texts"][0]
    assert pair["prompt"][-1] == {"role": "user", "content": "Name a fruit."}
    assert pair["user"] == "me" and pair["persona"] is None and pair["session"] == chosen["session"]
    assert pair["turn_ids"] == {"user": recs[2]["id"], "chosen": chosen["id"], "replaced": nonlocal_state["first"]}
    assert pair["chosen"]["params"]["seed"] != pair["rejected"]["params"]["seed"]
    assert pair["chosen"]["adapters"] == pair["rejected"]["adapters"] == []
    assert pair["chosen"]["params"] == chosen["params"]


def test_with_a_voice_adapter_the_pair_is_without_and_with_it(tmp_path, model_path):
    from tests.loras import register_voice

    vault = Vault.open(tmp_path / "v")
    register_voice(vault, model_path, "me", scale=0.8)
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await say(pilot, app, "hi")
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, PickBestScreen))
        await wait_for(pilot, lambda: app.screen.done)
        await pilot.click("#pick-2")
        await wait_for(pilot, lambda: app.chat is not None)
        await wait_for(pilot, lambda: app.session.engine.adapters == [])  # the chat's own stack is back

    drive(app, scenario)
    (pair,) = [json.loads(line) for line in (vault.preferences_dir / "me.jsonl").read_text().splitlines()]
    assert pair["rejected"]["adapters"] == [] and pair["chosen"]["adapters"] == [{"id": "me-voice", "scale": 0.8}]
    assert pair["chosen"]["params"] == pair["rejected"]["params"]
    assert records(vault.root)[-1]["adapters"] == [{"id": "me-voice", "scale": 0.8}]


def test_ctrl_q_while_candidates_generate_quits_and_logs_no_pick(tmp_path):
    vault = tmp_path / "v"
    app = make_app(vault, max_tokens=8)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await say(pilot, app, "Write a long story about the sea.")
        app.options.max_tokens = 300  # the candidates run long: ctrl+q lands mid-generation
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, PickBestScreen) and app.screen.panes
                       and app.screen.panes[0].message.text)
        assert not app.screen.done
        await pilot.press("ctrl+q")

    drive(app, scenario)
    assert [r["role"] for r in records(vault)] == ["user", "assistant"]
    assert not (Path(vault) / "preferences" / "me.jsonl").exists()
