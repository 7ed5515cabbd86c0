"""`home memory` through the real CLI: search, forget (by id and by query), stats, refusals, private files."""

from __future__ import annotations

import json
import os

from tests.cli_helpers import one_error_line, run_home
from tests.test_session_summary import LONG, OLD, _log
from tests.test_vault_memory import FACTS, FILLERS, conversation
from vault import gestalts as gs
from vault.layout import Vault
from vault.logs import exclusions, read_log
from vault.memory import MemoryStore


def test_search_forget_stats(tmp_path):
    root = tmp_path / "v"
    expected = conversation(Vault.open(root))
    sister, car = expected["where does my sister live?"], expected["what car do I have?"]

    found = run_home(root, "memory", "search", "where does my sister live?", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits[0]["id"] == sister and "Porto" in hits[0]["text"]
    assert set(hits[0]) == {"id", "text", "score", "time", "role", "session", "sources"}

    # a fact learnt from that turn alone goes with it, and the output says so
    (learnt,) = gs.add_gestalts(Vault.open(root), "me", [gs.Draft("The user's sister Ana lives in Porto.",
                                                                  sources=(sister,))])
    gone = run_home(root, "memory", "forget", sister)
    assert gone.returncode == 0 and gone.stdout == (
        f"forgot {sister}: My sister Ana lives in Porto.\nand 1 gestalt learnt from it alone:\n"
        f"  forgot gestalt:{learnt.id}: The user's sister Ana lives in Porto.\n"), gone.stderr
    assert not learnt.path.exists()
    by_query = run_home(root, "memory", "forget", "--query", "what car do I have?", "-k", "2", "--json")
    assert by_query.returncode == 0, by_query.stderr
    assert json.loads(by_query.stdout)["derived"] == []
    forgotten = json.loads(by_query.stdout)["forgotten"]
    assert car in forgotten and len(forgotten) == 2

    stats = run_home(root, "memory", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    total = 2 * (len(FACTS) + len(FILLERS))
    assert (data["items"], data["keyword_items"], data["excluded"]) == (total - 3, total - 3, 3)
    assert data["embedder"] == "all-MiniLM-L6-v2" and data["dim"] == 384
    events = [r for r in read_log(root / "logs" / "s1-facts.jsonl").records if r["role"] == "event"]
    assert {e["target"] for e in events} == {sister, *forgotten}

    for dirpath, dirs, files in os.walk(root / "memory"):
        for name in dirs:
            assert os.stat(os.path.join(dirpath, name)).st_mode & 0o777 == 0o700, name
        for name in files:
            assert os.stat(os.path.join(dirpath, name)).st_mode & 0o777 == 0o600, name


def test_refusals_are_one_line(tmp_path):
    root = tmp_path / "v"
    vault = Vault.open(root)
    conversation(vault)
    unknown = run_home(root, "memory", "forget", "s1-facts:999")
    assert unknown.returncode == 2 and "unknown memory id 's1-facts:999'" in one_error_line(unknown)
    garbage = run_home(root, "memory", "forget", "../etc/passwd")
    assert garbage.returncode == 2 and "unknown memory id" in one_error_line(garbage)
    usage = run_home(root, "memory", "reindex", "--embedder", str(tmp_path))
    assert usage.returncode == 2 and "--embedder needs --rebuild" in one_error_line(usage)
    with MemoryStore.open(vault):  # the chat app holds it
        busy = run_home(root, "memory", "stats")
    assert busy.returncode == 1 and "in use by another Home process" in one_error_line(busy)
    empty = run_home(root, "memory", "stats")
    assert empty.returncode == 0 and "turns: 0" in empty.stdout


def test_forget_with_a_damaged_index_still_forgets_and_refuses_while_the_app_owns_it(tmp_path):
    root = tmp_path / "v"
    vault = Vault.open(root)
    sister = conversation(vault)["where does my sister live?"]
    session = sister.rpartition(":")[0]
    with MemoryStore.open(vault):  # the chat app owns memory and may be writing that very log: refused
        busy = run_home(root, "memory", "forget", sister)
    assert busy.returncode == 1 and "in use by another Home process" in one_error_line(busy)
    assert not [r for r in read_log(root / "logs" / f"{session}.jsonl").records if r["role"] == "event"]

    (root / "memory" / "keyword.sqlite3").write_bytes(b"not a database" * 100)
    gone = run_home(root, "memory", "forget", sister)
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout == f"forgot {sister}: My sister Ana lives in Porto.\nand 0 gestalts learnt from it alone\n"
    assert gone.stderr.startswith("home: warning: memory index not updated: ") and "reindex" in gone.stderr
    events = [r for r in read_log(root / "logs" / f"{session}.jsonl").records if r["role"] == "event"]
    assert [(e["event"], e["target"]) for e in events] == [("exclude", sister)]

    (root / "memory").rename(tmp_path / "damaged-memory")  # what the warning says to do
    rebuilt = run_home(root, "memory", "search", "where does my sister live?", "-k", "5", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert sister not in [h["id"] for h in json.loads(rebuilt.stdout)]


def test_summaries_follow_the_config_and_forget_as_the_turns_they_hold(tmp_path):
    """`[memory] summaries = true`: `search`'s catch-up and `reindex --rebuild` make the session summaries
    the app's indexer would (off: none); `forget summary:<session>`, by id or as a `--query`'s best hit,
    forgets the turns it holds and says which (issue 13)."""
    root = tmp_path / "v"
    vault = Vault.open(root)
    vault.config_path.write_text('user = "maya"\n[memory]\nsummaries = true\n')
    old, long = _log(vault, "old", OLD), _log(vault, "long", LONG)
    found = run_home(root, "memory", "search", "What instrument do I play and what does my brother study?",
                     "-k", "10", "--json")
    assert found.returncode == 0, found.stderr
    assert {"summary:old", "summary:long"} <= {h["id"] for h in json.loads(found.stdout)}

    gone = run_home(root, "memory", "forget", "summary:old")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout == ("forgot summary:old and the 2 turns it held:\n"
                           + "".join(f"  forgot {r['id']}: {r['text'][:80]}\n" for r in (old[0], old[5]))
                           + "and 0 gestalts learnt from them alone\n")
    log = root / "logs" / "old.jsonl"
    assert exclusions(read_log(log).records) == {old[0]["id"], old[5]["id"]}
    before = log.read_bytes()
    again = run_home(root, "memory", "forget", "summary:old")  # nothing about the user is left to summarise
    assert again.returncode == 2 and "'summary:old': session 'old' has no summary" in one_error_line(again)
    assert log.read_bytes() == before

    by_query = run_home(root, "memory", "forget", "--query", "I am a nurse, my brother studies physics, I play "
                        "the cello and autumn is my favourite season", "--json")
    assert by_query.returncode == 0, by_query.stderr
    held = [r["id"] for r in long[:4]]
    assert json.loads(by_query.stdout) == {"forgotten": ["summary:long"], "derived": [],
                                           "held": {"summary:long": held}, "remade": ["summary:long"]}
    assert exclusions(read_log(root / "logs" / "long.jsonl").records) == set(held)

    rebuilt = run_home(root, "memory", "reindex", "--rebuild")
    assert rebuilt.returncode == 0 and "; 1 session summary; " in rebuilt.stdout, rebuilt.stderr
    vault.config_path.write_text('user = "maya"\n[memory]\nsummaries = false\n')
    off = run_home(root, "memory", "reindex", "--rebuild")
    assert off.returncode == 0 and "summar" not in off.stdout, off.stderr
    left = run_home(root, "memory", "search", "bicycle tomatoes balcony", "-k", "10", "--json", "--no-index")
    ids = {h["id"] for h in json.loads(left.stdout)}
    assert long[4]["id"] in ids and not [i for i in ids if i.startswith("summary:")]
