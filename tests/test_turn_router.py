"""The router on the turn path, CLI and app: with nothing chosen by hand it picks the stack per message
(the log says which and why); a persona's adapters, the voice toggle and --adapter/--no-adapters win."""

from __future__ import annotations

import json

from llm.models import default_model_path
from tests.cli_helpers import run_home
from tests.loras import make_random_lora
from tests.test_app import drive, make_app, records, say, wait_ready

CODING = "Why does my Python function raise a KeyError when the dict key is missing?"
CHAT = "hey, how was your weekend?"


def vault_with_code_helper(tmp_path):
    vault = tmp_path / "v"
    lora = make_random_lora(default_model_path(), tmp_path / "code.gguf", rank=2, n_layers=1)
    added = run_home(vault, "adapters", "add", str(lora), "--name", "code helper", "--kind", "task",
                     "--tasks", "coding", "--owner", "me")
    assert added.returncode == 0, added.stderr
    return vault


def test_home_ask_routes_per_message_and_explicit_choices_win(tmp_path):
    vault = vault_with_code_helper(tmp_path)
    ask = lambda *a: run_home(vault, "--user", "me", "ask", *a, "--max-tokens", "2", "--temperature", "0", "--json")  # noqa: E731
    coding = json.loads(ask(CODING).stdout)
    assert coding["adapters"] == [{"id": "code-helper", "scale": 1.0}]
    route = coding["router"]
    assert route["task"]["label"] == "coding" and not route["explicit"]
    assert [c["id"] for c in route["candidates"] if c["chosen"]] == ["code-helper"]
    assert "code-helper" in route["reason"]
    chat = json.loads(ask(CHAT).stdout)
    assert chat["adapters"] == [] and "base model" in chat["router"]["reason"]
    forced = json.loads(ask(CODING, "--no-adapters").stdout)
    assert forced["adapters"] == [] and forced["router"]["explicit"]
    assert forced["router"]["reason"].startswith("explicit choice wins")
    # the log keeps the same decision next to the turn
    logged = [json.loads(line) for p in sorted((vault / "logs").glob("*.jsonl"))
              for line in p.read_text().splitlines()]
    assert sum(1 for r in logged if r["role"] == "assistant" and r["router"]) == 3


def test_app_routes_when_nothing_is_chosen_and_the_voice_toggle_wins(tmp_path):
    vault = vault_with_code_helper(tmp_path)
    lora = make_random_lora(default_model_path(), tmp_path / "voice.gguf", rank=2, n_layers=1, seed=3)
    assert run_home(vault, "adapters", "add", str(lora), "--name", "me voice", "--kind", "voice",
                    "--owner", "me").returncode == 0
    from vault.layout import Vault
    from vault.manifest import ManifestStore

    with ManifestStore(Vault.open(vault)).update() as m:
        m.ensure_user("me")["voice_adapter"] = "me-voice"
    app = make_app(vault, max_tokens=2)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await say(pilot, app, CODING)
        assert app.session.stack == [("code-helper", 1.0)]
        await say(pilot, app, CHAT)
        assert app.session.stack == []
        app.chat.action_toggle_voice()  # by hand: the voice adapter, whatever the message
        await say(pilot, app, CODING)

    drive(app, scenario)
    replies = [r for r in records(vault) if r.get("role") == "assistant"]
    assert [r["adapters"] for r in replies] == [[{"id": "code-helper", "scale": 1.0}], [],
                                                [{"id": "me-voice", "scale": 1.0}]]
    assert [r["router"]["explicit"] for r in replies] == [False, False, True]
