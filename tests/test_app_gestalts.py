"""Gestalts in the app: distilled in the background (start-up backlog, every N turns, session end),
indexed in memory, re-synced when a file is edited by hand; a reply never waits for more than one call."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from home.distil_schedule import DistilSchedule
from tests.test_app import drive, make_app, say, wait_for, wait_ready
from vault.config import GestaltSettings
from vault.gestalts import list_gestalts
from vault.layout import Vault
from vault.logs import ConversationLog

EARLIER = ["My name is Dana Whitfield.", "I live in Rotterdam, near the harbour.", "thanks!",
           "I work as a carpenter, mostly on boats."]


def log_session(vault: Vault, texts: list[str], user: str = "me") -> list[dict]:
    log = ConversationLog.create(vault)
    out = []
    for text in texts:
        out.append(log.append({"role": "user", "text": text, "user": user}))
        out.append(log.append({"role": "assistant", "text": "I see.", "user": user}))
    return out


async def idle(app) -> None:
    await asyncio.to_thread(app.gestalts.wait_idle, 120)
    await asyncio.to_thread(app.session.recall.wait_idle, 60)


@pytest.mark.slow  # a few real distillation calls
def test_backlog_every_n_turns_and_hand_edits_reach_memory(tmp_path):
    root = tmp_path / "v"
    vault = Vault.open(root)
    (root / "config.toml").write_text('user = "me"\n[gestalts]\nevery_n_turns = 2\n')
    earlier = log_session(vault, EARLIER)  # e.g. `home ask` turns, never distilled
    app = make_app(root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await idle(app)
        texts = {g.text: g for g in list_gestalts(vault, "me").gestalts}
        assert any("Rotterdam" in t for t in texts), texts
        rotterdam = next(g for t, g in texts.items() if "Rotterdam" in t)
        assert rotterdam.sources == (earlier[2]["id"],)
        hits = app.session.recall.store.search("Which city do I live in?", user="me")
        assert any(h.id == f"gestalt:{rotterdam.id}" for h in hits)
        marks = json.loads((root / "gestalts" / ".distilled.json").read_text())["sessions"]
        assert marks[earlier[0]["session"]] == earlier[-1]["turn"]

        # every 2 user turns of the chat in progress
        await say(pilot, app, "I have a sister called Mira who is a pilot.")
        assert not any("cello" in g.text for g in list_gestalts(vault, "me").gestalts)
        await say(pilot, app, "I play the cello in an amateur orchestra.")
        await idle(app)
        assert any("cello" in g.text for g in list_gestalts(vault, "me").gestalts)

        # deleting a gestalt file by hand: the watcher re-syncs memory
        rotterdam.path.unlink()
        store = app.session.recall.store
        await wait_for(pilot, lambda: store.get(f"gestalt:{rotterdam.id}") is None, timeout=30)

    drive(app, scenario)


def test_a_reply_interrupts_a_distillation_which_then_resumes(tmp_path, engine):
    vault = Vault.open(tmp_path / "v")
    records = log_session(vault, EARLIER)
    schedule = DistilSchedule(vault, GestaltSettings())
    assert len(schedule.pending(records[0]["session"], records, "me")) == 3  # "thanks!" is not read
    assert schedule.backlog("me")[0][0] == records[0]["session"]
    cancel, lock = threading.Event(), threading.RLock()
    cancel.set()  # a reply wants the engine: the run waits, reads nothing, marks nothing
    done: list[int] = []
    runner = threading.Thread(target=lambda: done.append(
        schedule.run(engine, "me", records[0]["session"], records, cancel, lock)))
    runner.start()
    time.sleep(0.3)
    assert not done and records[0]["session"] not in schedule.marks
    cancel.clear()  # the reply is over
    runner.join(120)
    assert done and schedule.marks[records[0]["session"]] == records[-1]["turn"]
    assert DistilSchedule(vault, GestaltSettings()).backlog("me") == []  # the marks are on disk
    assert not schedule.due(records[0]["session"], records, "me")
    off = DistilSchedule(vault, GestaltSettings(every_n_turns=0))
    assert not off.due("any", records, "me") and off.backlog("me") == []  # nothing pending anyway
