"""Dual mode on the turn path (issue 14 item 2): the mode's prompt line reaches the model, and the app pins a
mode from the palette and the f9 key (status bar, the logged router record, the persona adapter's scale)."""

from __future__ import annotations

from home.app.widgets.status_bar import StatusBar
from home.turn import Conversation
from llm.models import default_model_path
from llm.params import GenParams
from tests.cli_helpers import run_home
from tests.loras import make_random_lora
from tests.test_app import drive, make_app, records, say, wait_ready
from tests.test_app_palette import run_command
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.personas import get_persona

CODING = "Why does my Python function raise a KeyError when the dict key is missing?"
LINE = "Answer the task directly and correctly, in your own voice."


def test_the_mode_line_goes_to_the_model_next_to_the_question(tmp_path, engine):
    vault = Vault.open(tmp_path / "v")
    params = GenParams(max_tokens=1, temperature=0.0, seed=1)
    sage = get_persona(vault, "sage")
    plain = Conversation(engine, ConversationLog.create(vault), "me", sage)
    list(plain.send("hi", params, [], router={"mode": {"name": "character", "system": ""}}))
    focused = Conversation(engine, ConversationLog.create(vault), "me", sage)
    list(focused.send("hi", params, [], router={"mode": {"name": "focused", "system": LINE}}))
    extra = focused.last.record["tokens"]["prompt"] - plain.last.record["tokens"]["prompt"]
    assert extra >= len(engine.tokenize(LINE)), extra
    assert focused.last.record["router"]["mode"]["system"] == LINE


def test_pin_a_mode_from_the_palette_and_the_key(tmp_path):
    vault = tmp_path / "v"
    # neither memory nor distillation: this is about the mode alone
    Vault.open(vault).config_path.write_text('user = "me"\n[memory]\nenabled = false\n[gestalts]\nenabled = false\n')
    lora = make_random_lora(default_model_path(), tmp_path / "sage.gguf", rank=2, n_layers=1)
    added = run_home(vault, "adapters", "add", str(lora), "--name", "sage persona", "--kind", "persona",
                     "--owner", "me")
    assert added.returncode == 0, added.stderr
    app = make_app(vault, persona="sage", max_tokens=2)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        bar = app.chat.query_one(StatusBar)
        assert "mode " not in bar.render()  # automatic: nothing shown
        await run_command(pilot, app, "Mode: in character")
        assert app.session.mode_pin == "character" and "mode character (pinned)" in bar.render()
        await say(pilot, app, CODING)
        await pilot.press("f9")  # character → auto
        await pilot.pause()
        assert app.session.mode_pin == "auto" and "mode " not in bar.render()
        await say(pilot, app, CODING)
        await pilot.press("f9")  # auto → focused
        await pilot.pause()
        assert "mode focused (pinned)" in bar.render()

    drive(app, scenario)
    pinned, auto = [r for r in records(vault) if r["role"] == "assistant" and not r.get("greeting")]
    assert pinned["router"]["mode"]["name"] == "character" and pinned["router"]["mode"]["pinned"]
    assert pinned["adapters"] == [{"id": "sage-persona", "scale": 1.0}]
    assert auto["router"]["mode"]["name"] == "focused" and "task coding" in auto["router"]["mode"]["reason"]
    assert auto["adapters"] == [{"id": "sage-persona", "scale": 0.6}]
