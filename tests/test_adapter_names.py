"""Adapters named by name (its newest version) or by id (that version), through the real CLI.

Versions are made by the real registration (`trainer.protocol.register.register_adapter`, what `home train`
ends with: `hamlet-1`, `hamlet-2`) and by `home adapters add`; the manifest is the real one on disk.
"""

from __future__ import annotations

import json

import pytest

from llm.gguf_meta import read_model_info
from tests.cli_helpers import one_error_line, run_home
from tests.loras import make_random_lora
from vault.layout import Vault
from vault.manifest import ManifestStore


def register(root, model_path, lora, name: str, kind: str = "persona", set_voice: bool = False) -> str:
    """One version of `name`, registered as `home train` registers it; returns its id."""
    from trainer.protocol.register import register_adapter

    info = read_model_info(model_path)
    return register_adapter(
        Vault.open(root), name=name, gguf=lora, peft_dir=None, extra_files=[],
        base={"fingerprint": info.fingerprint, "name": info.name}, owner="me", kind=kind, tasks=[], tones=[],
        rank=2, alpha=2.0, dataset={}, metrics={}, training={}, verification={}, set_voice=set_voice).id


def ask(root, *args: str) -> list[dict]:
    proc = run_home(root, "ask", "Hi", "--max-tokens", "1", "--no-memory", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["adapters"]


@pytest.fixture()
def lora(tmp_path, model_path):
    return make_random_lora(model_path, tmp_path / "lora.gguf", rank=2, n_layers=1)


def test_a_name_picks_its_newest_version_and_an_id_that_version(tmp_path, model_path, lora):
    root = tmp_path / "v"
    assert [register(root, model_path, lora, "hamlet") for _ in range(2)] == ["hamlet-1", "hamlet-2"]

    assert ask(root, "--adapter", "hamlet") == [{"id": "hamlet-2", "scale": 1.0}]
    assert ask(root, "--adapter", "hamlet-1:0.5") == [{"id": "hamlet-1", "scale": 0.5}]
    shown = run_home(root, "adapters", "show", "hamlet", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == "hamlet-2"

    ghost = run_home(root, "ask", "Hi", "--adapter", "ophelia", "--no-memory")
    assert ghost.returncode == 2  # a name nothing has: exit 2, as in `home adapters` and `home route`
    line = one_error_line(ghost)
    assert "unknown adapter 'ophelia'" in line and "hamlet (hamlet-1, hamlet-2)" in line


def test_a_card_naming_an_adapter_by_name_gets_its_newest_version(tmp_path, model_path, lora):
    root = tmp_path / "v"
    register(root, model_path, lora, "brisk")
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Captain Brisk", "description": "A brisk sea captain.", "personality": "terse", "scenario": "",
        "first_mes": "Aye.", "mes_example": "", "extensions": {"home": {"adapters": [{"id": "brisk"}]}}}}))
    assert run_home(root, "personas", "import", str(card)).returncode == 0
    register(root, model_path, lora, "brisk")  # retrained after the card was written

    assert ask(root, "--persona", "captain-brisk") == [{"id": "brisk-2", "scale": 1.0}]


def test_adding_under_an_existing_name_adds_a_version_and_list_shows_name_and_version(tmp_path, model_path, lora):
    root = tmp_path / "v"
    for kind in (["--kind", "style"], []):  # a new version keeps the name's kind unless told
        added = run_home(root, "adapters", "add", str(lora), "--name", "Style", *kind)
        assert added.returncode == 0, added.stderr
    assert "'style-2', version 2 of 'style'" in added.stdout
    assert register(root, model_path, lora, "style", kind="style") == "style-3"  # `home train` continues it

    listed = json.loads(run_home(root, "adapters", "list", "--json").stdout)
    assert [(e["id"], e["name"], e["version"], e["kind"]) for e in listed] == \
        [("style", "Style", 1, "style"), ("style-2", "Style", 2, "style"), ("style-3", "style", 3, "style")]
    table = run_home(root, "adapters", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "VERSION", "ID", "KIND"]
    assert [row.split()[:3] for row in table[1:4]] == [["style", "1", "style"], ["style", "2", "style-2"],
                                                       ["style", "3*", "style-3"]]
    assert sorted(p.name for p in (root / "adapters").iterdir()) == ["style", "style-2", "style-3"]


def test_a_name_another_kind_holds_is_refused_and_nothing_changes(tmp_path, model_path, lora):
    root = tmp_path / "v"
    register(root, model_path, lora, "hamlet")
    before = (root / "manifest.json").read_bytes()

    added = run_home(root, "adapters", "add", str(lora), "--name", "Hamlet", "--kind", "voice")
    assert added.returncode == 2
    assert "adapter name 'Hamlet' already belongs to a persona adapter (hamlet-1)" in one_error_line(added)
    transcript = tmp_path / "play.txt"
    transcript.write_text("HAMLET: To be, or not to be.\nHORATIO: My lord.\n" * 20)
    trained = run_home(root, "train", "--source", "transcript", str(transcript), "--speaker", "HAMLET",
                       "--name", "hamlet")  # kind voice: refused before any worker starts
    assert trained.returncode == 2
    assert "already belongs to a persona adapter (hamlet-1)" in one_error_line(trained)

    assert (root / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in (root / "adapters").iterdir()) == ["hamlet-1"]
    assert not list((root / "runs").iterdir())


def test_removing_a_name_removes_its_newest_version_and_all_removes_every_one(tmp_path, model_path, lora):
    root = tmp_path / "v"
    for _ in range(3):
        register(root, model_path, lora, "me voice", kind="voice", set_voice=True)
    register(root, model_path, lora, "hamlet")

    removed = run_home(root, "adapters", "remove", "me-voice")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == ["removed adapter 'me-voice-3'", "'me-voice' now means me-voice-2"]
    manifest = ManifestStore(Vault.open(root)).read()
    assert sorted(manifest.adapters) == ["hamlet-1", "me-voice-1", "me-voice-2"]
    assert manifest.users["me"]["voice_adapter"] == "me-voice-2"  # the voice falls back a version
    assert not (root / "adapters" / "me-voice-3").exists()

    everything = run_home(root, "adapters", "remove", "me-voice-1", "--all")
    assert everything.returncode == 0, everything.stderr
    assert everything.stdout.splitlines() == ["removed adapter 'me-voice-2'", "removed adapter 'me-voice-1'"]
    manifest = ManifestStore(Vault.open(root)).read()
    assert sorted(manifest.adapters) == ["hamlet-1"] and manifest.users["me"]["voice_adapter"] is None
    assert sorted(p.name for p in (root / "adapters").iterdir()) == ["hamlet-1"]


def test_a_name_no_adapter_has_is_exit_2_in_every_command(tmp_path):
    """ask, eval, route, drift and `adapters show` gave an unknown adapter exit 3 in some and 2 in others:
    it is a usage error (a corrupt file or one for another base stays exit 3)."""
    data = tmp_path / "held.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    for argv in (["ask", "hi", "--adapter", "ghost", "--no-memory"], ["route", "hi", "--adapter", "ghost"],
                 ["eval", "ghost", "--source", "jsonl", str(data)], ["drift", "--adapter", "ghost"],
                 ["adapters", "show", "ghost"]):
        proc = run_home(tmp_path / "v", *argv)
        assert proc.returncode == 2, (argv, proc.stderr[-500:])
        assert "unknown adapter 'ghost'" in one_error_line(proc), argv
