"""`home route` and `home drift` through the real CLI: a vault with real adapter files, logs, the model."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from home.commands.drift import render as render_drift
from llm.gguf_meta import read_model_info
from llm.models import default_model_path
from tests.cli_helpers import one_error_line, run_home
from tests.loras import make_random_lora
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore

CODING = "my python script throws an IndexError when the list is empty"
USER_LINES = ["morning! coffee first, then the garden", "the tomatoes are finally red", "rain again, so no digging",
              "I moved the basil to the sunny side", "the snails ate half the lettuce", "garlic goes in next week"]


def make_vault(root, adapters) -> Vault:
    """A vault holding `adapters` ((id, kind, fields) with real GGUF LoRA files for the default model)."""
    vault = Vault.open(root)
    info = read_model_info(default_model_path())
    with ManifestStore(vault).update() as m:
        for ident, kind, kw in adapters:
            path = vault.adapters_dir / ident / "adapter.gguf"
            path.parent.mkdir()
            make_random_lora(default_model_path(), path, rank=2, n_layers=2, seed=len(ident), scale_std=0.05)
            base = {"fingerprint": info.fingerprint, "name": info.name}
            m.add_adapter(AdapterEntry(id=ident, name=ident, file=f"adapters/{ident}/adapter.gguf", base=base,
                                       owner="me", kind=kind, rank=2, alpha=2.0, **kw))
    vault.config_path.write_text('user = "me"\n')
    return vault


@pytest.fixture(scope="module")
def route_vault(tmp_path_factory):
    root = tmp_path_factory.mktemp("route") / "v"
    vault = make_vault(root, [("code-helper", "task", {"tasks": ["coding"]}),
                              ("foreign", "task", {"tasks": ["coding"], "priority": 3})])
    with ManifestStore(vault).update() as m:
        m.adapters["foreign"].base = {"fingerprint": "f" * 64, "name": "Llama 3 8B"}
    return root


def test_route_prints_the_decision(route_vault):
    proc = run_home(route_vault, "route", CODING)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "user me, no persona"
    assert lines[1].startswith("task  coding ") and lines[2].startswith("tone  ")
    helper = next(ln for ln in lines if "code-helper" in ln and ln.startswith("  "))
    assert helper.startswith("  * code-helper") and "task coding" in helper
    foreign = next(ln for ln in lines if ln.startswith("  - foreign"))
    assert "made for base 'Llama 3 8B'" in foreign
    assert "stack  code-helper:1" in lines and any(ln.startswith("reason user me, task coding") for ln in lines)


def test_route_json_is_the_logged_record(route_vault):
    proc = run_home(route_vault, "route", CODING, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["chosen"] == [{"id": "code-helper", "scale": 1.0}] and d["explicit"] is False
    assert d["task"]["label"] == "coding" and set(d["tone"]["probs"]) == {"neutral", "upbeat", "stressed", "sad",
                                                                         "angry"}
    [foreign] = [c for c in d["candidates"] if c["id"] == "foreign"]
    assert foreign["score"] is None and not foreign["chosen"] and "Llama 3 8B" in foreign["why"]
    # dual mode (issue 14 item 2): a coding task is answered focused, and the record says why
    assert d["mode"]["name"] == "focused" and "task coding" in d["mode"]["reason"] and not d["mode"]["pinned"]

    base = json.loads(run_home(route_vault, "route", CODING, "--no-adapters", "--json").stdout)
    assert base["chosen"] == [] and base["reason"].startswith("explicit choice wins")


def test_route_mode_pinned(route_vault):
    proc = run_home(route_vault, "route", CODING, "--mode", "character")
    assert proc.returncode == 0, proc.stderr
    assert "mode   character   (pinned by the user (character); no persona, nothing to adjust)" in proc.stdout


def test_route_refusals_are_one_line(route_vault):
    bad = run_home(route_vault, "route", CODING, "--adapter", "foreign")
    assert bad.returncode == 3 and "made for base 'Llama 3 8B'" in one_error_line(bad)
    who = run_home(route_vault, "route", CODING, "--persona", "nobody")
    assert who.returncode == 2 and "nobody" in one_error_line(who)


@pytest.mark.parametrize(("config", "field"), [
    ('[router]\nmin_confidence = "high"\n', "router.min_confidence: expected a number"),
    ('[router]\ntasks = ["chat", "cooking"]\n', "router.tasks[1]: label 'cooking' has no example sentences"),
    ('[router]\nmax_adapter = 2\n', "router.max_adapter: unknown setting"),
])
def test_malformed_router_config_names_file_and_field(tmp_path, config, field):
    root = tmp_path / "v"
    Vault.open(root).config_path.write_text(config)
    proc = run_home(root, "route", "hello")
    line = one_error_line(proc)
    assert proc.returncode == 2 and "config.toml: " in line and field in line, line
    assert (root / "config.toml").read_text() == config  # never rewritten


def _write_logs(vault: Vault) -> None:
    """Six recent turns with quill's replies (some under the voice adapter) and three from 60 days ago."""
    now = datetime.now(UTC)
    lines = []
    for session, start, texts in (("old", now - timedelta(days=60), USER_LINES[:3]),
                                  ("new", now - timedelta(hours=3), USER_LINES)):
        turn = 0
        for i, text in enumerate(texts):
            adapters = [{"id": "me-voice-1", "scale": 1.0}] if i % 2 == 0 else []
            for role, body, who in (("user", text, None), ("assistant", f"Noted: {text.lower()}.", "quill")):
                turn += 1
                when = (start + timedelta(minutes=turn)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                lines.append(json.dumps({"v": 1, "id": f"{session}:{turn}", "session": session, "turn": turn,
                                         "time": when, "user": "me", "persona": who and "quill", "role": role,
                                         "text": body, "adapters": adapters}))
        (vault.logs_dir / f"{session}.jsonl").write_text("\n".join(lines) + "\n")
        lines = []


@pytest.fixture(scope="module")
def drift_vault(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift") / "v"
    vault = make_vault(root, [
        ("me-voice-1", "voice", {"metrics": {"perplexity": {"base": 2.0, "adapter": 1.5}}}),
        ("steady-voice", "voice", {"metrics": {"perplexity": {"base": 1e6, "adapter": 1e6}}}),
        ("quill-persona-1", "persona", {}),
        ("code-helper", "task", {"tasks": ["coding"]}),
    ])
    _write_logs(vault)
    # few turns, few tokens (one turn of context): the two voices share one base score, so 3 x 4 + 4
    # scored examples in all, ~50 tokens each
    proc = run_home(root, "drift", "--json", "--max-examples", "4", "--min-turns", "3", "--window", "1",
                    timeout=300)
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout)


@pytest.mark.slow  # loads the model and scores turns (~6-10 s on 2 busy cores)
def test_drift_usage_counts_turns_per_week(drift_vault):
    _, report = drift_vault
    use = report["usage"]
    assert use["by"] == "week" and len(use["periods"]) == 8
    voice, base = use["adapters"]["me-voice-1"], use["adapters"]["(base)"]
    assert (voice["total"], base["total"]) == (3 + 2, 3 + 1)  # turns 0, 2, 4 of each session ran under it
    assert voice["counts"][use["periods"][-1]] + voice["counts"].get(use["periods"][-2], 0) >= 3
    assert sum(voice["counts"].values()) == 3  # the 60-day-old turns fall outside the 8 weeks shown


@pytest.mark.slow  # loads the model and scores turns (~6-10 s on 2 busy cores)
def test_drift_flags_a_loss_above_training_time(drift_vault):
    _, report = drift_vault
    d = {r["id"]: r for r in report["drift"]}
    voice = d["me-voice-1"]
    assert voice["status"] == "drift" and voice["recent"]["turns"] == 4  # the newest 4 of 6 recent turns
    assert voice["training"]["loss"] == pytest.approx(math.log(1.5))
    assert voice["delta"] == pytest.approx(voice["recent"]["loss"] - math.log(1.5)) and voice["delta"] > 0.2
    assert voice["base_delta"] == pytest.approx(voice["recent"]["base_loss"] - math.log(2.0))
    assert math.isfinite(voice["recent"]["loss"]) and voice["recent"]["loss"] != voice["recent"]["base_loss"]
    assert d["steady-voice"]["status"] == "ok" and d["steady-voice"]["delta"] < 0

    persona = d["quill-persona-1"]
    assert persona["status"] == "no-training-loss" and "no training-time loss recorded" in persona["note"]
    assert persona["recent"]["turns"] == 4 and persona["recent"]["of"] == "persona quill's replies"
    assert d["code-helper"]["status"] == "no-log-target" and "added by hand" in d["code-helper"]["note"]

    text = render_drift(report["usage"], report["drift"], None)
    assert "DRIFT" in text and "consider retraining" in text and "me-voice-1" in text.splitlines()[1] + text


@pytest.mark.slow  # loads the model and scores turns (~6-10 s on 2 busy cores)
def test_drift_too_few_turns_and_usage_only(drift_vault):
    root, _ = drift_vault
    few = run_home(root, "drift", "--adapter", "me-voice-1", "--min-turns", "50", "--json", timeout=300)
    assert few.returncode == 0, few.stderr
    [r] = json.loads(few.stdout)["drift"]
    assert r["status"] == "too-few-turns" and "6 of me's messages in the last 30 days (need 50)" in r["note"]
    assert r["recent"] is None
    use = run_home(root, "drift", "--usage-only", "--by", "day", "--periods", "3")
    assert use.returncode == 0, use.stderr
    assert "per day" in use.stdout and "drift:" not in use.stdout and "me-voice-1" in use.stdout
    unknown = run_home(root, "drift", "--adapter", "ghost")
    assert unknown.returncode == 2 and "unknown adapter 'ghost'" in one_error_line(unknown)
