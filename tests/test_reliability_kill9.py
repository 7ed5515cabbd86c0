"""Slices of the kill -9 campaign (bench/reliability/): a few real kills of the cheap kinds with every
invariant checked, and the checks themselves catching planted faults (so a clean verdict means something).

The kill -9 of `home ask` mid-generation is in test_cli_ask.py, of indexing in test_vault_memory.py, of
training in test_trainer_e2e.py, of registrations and folder swaps in test_vault_orphans.py.
"""

from __future__ import annotations

import json

import pytest

from bench.reliability.invariants import Ledger, check
from bench.reliability.kill9 import campaign
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.manifest import AdapterEntry, ManifestStore


@pytest.mark.parametrize(("kind", "runs"), [("manifest", 3), ("index", 2)])
def test_kill_9_at_random_moments_loses_and_corrupts_nothing(tmp_path, embedder, kind, runs):
    lines: list[str] = []
    result = campaign(kind, runs, seed=7, workdir=tmp_path, embedder=embedder,
                      say=lambda line, **_: lines.append(line))
    assert result["runs"] == runs and result["killed"] + result["completed"] == runs
    assert result["losses"] == result["corruptions"] == 0, "\n".join(lines)
    assert json.loads(lines[-1])["kind"] == kind  # the JSON line comes last


def vault_with_a_session(tmp_path) -> tuple[Vault, ConversationLog, Ledger]:
    vault = Vault.open(tmp_path / "v")
    log = ConversationLog.create(vault, "s1")
    for n in range(3):
        log.append({"role": "user", "user": "me", "text": f"message {n}"})
        log.append({"role": "assistant", "user": "me", "text": f"reply {n}"})
    ledger = Ledger()
    assert check(vault, ledger, memory=False).ok
    return vault, log, ledger


def test_the_checks_catch_a_lost_a_repeated_and_a_torn_record(tmp_path):
    vault, log, ledger = vault_with_a_session(tmp_path)
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text("".join(lines[:2] + lines[3:] + lines[4:5]) + '{"v": 1, "id": "s1:9"')
    found = check(vault, ledger, memory=False)
    assert any("s1:3" in x and "gone" in x for x in found.losses), found
    assert any("torn last line" in x for x in found.corruptions), found
    assert any("s1:5 appears 2 times" in x for x in found.corruptions), found
    assert any("are not 1.." in x for x in found.corruptions), found


def test_the_checks_catch_a_reply_never_logged_and_a_message_lost(tmp_path):
    vault, log, ledger = vault_with_a_session(tmp_path)
    log.append({"role": "user", "user": "me", "text": "was streaming"})
    ledger.said += ["was streaming", "never logged"]
    ledger.answered.append("was streaming")
    found = check(vault, ledger, memory=False)
    assert found.losses == ["log: the user's 'never logged' (reply was streaming) is not in the log",
                            "log: the completed reply to 'was streaming' is not in the log"], found


def test_the_checks_catch_a_manifest_naming_a_changed_file_and_sweep_dead_temps(tmp_path):
    vault, _, ledger = vault_with_a_session(tmp_path)
    folder = vault.adapters_dir / "a-1"
    folder.mkdir(mode=0o700)
    (folder / "adapter.gguf").write_bytes(b"not what was registered")
    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry.from_dict({
            "id": "a-1", "name": "a", "file": "adapters/a-1/adapter.gguf", "sha256": "0" * 64,
            "base": {"fingerprint": "f", "name": "n"}, "owner": "me", "kind": "style"}, "test"))
    dead = vault.root / ".config.toml.tmp-999999999"  # a temp whose writer (no such pid) is gone
    dead.write_text("half")
    (vault.logs_dir / "notes.txt~").write_text("an editor's backup")
    ledger.dropped("b-1")
    found = check(vault, ledger, memory=False)
    assert any("a-1: adapters/a-1/adapter.gguf is not the file registered" in x for x in found.corruptions), found
    assert found.cleaned == [f"removed {dead.name} (dead temp)"] and not dead.exists()
    assert any("stray file after the sweep: logs/notes.txt~" in x for x in found.corruptions), found


def test_the_checks_catch_memory_holding_what_the_logs_lost(tmp_path, embedder):
    vault, log, ledger = vault_with_a_session(tmp_path)
    assert check(vault, ledger, embedder=embedder).memory == 6
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text("".join(lines[:-1]))  # the last reply vanished after it was indexed
    found = check(vault, ledger, embedder=embedder, rebuild=True)
    assert any("s1:6" in x for x in found.losses), found
    assert any("memory (vector): 1 items the sources do not hold" in x for x in found.corruptions), found
    assert any("memory: rebuilt 5/5 items, caught up 6/6; differing: ['s1:6']" in x for x in found.corruptions), found
