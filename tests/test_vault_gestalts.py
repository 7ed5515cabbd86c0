"""vault.gestalts (one markdown file per fact) and vault.memory.sync_gestalts (the store follows the files).

Real files, the real ChromaDB store and MiniLM embedder, the real watchdog watcher.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from vault import gestalts as gs
from vault.forget import forget
from vault.layout import Vault
from vault.memory import MemoryStore, MemoryStoreError, reindex, sync_gestalts
from vault.watcher import VaultWatcher

DRAFTS = [
    gs.Draft("The user's name is Maya.", "fact", ("s1:1",), "2026-01-05T09:00:00.000Z"),
    gs.Draft("The user lives in Berlin.", "fact", ("s1:3",), "2026-01-05T09:01:00.000Z"),
    gs.Draft("The user prefers green tea.", "preference", ("s1:5",), "2026-01-05T09:02:00.000Z"),
]


@pytest.fixture
def vault(tmp_path):
    return Vault.open(tmp_path / "v")



def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_add_only_with_normalised_hash_dedupe_private_files_and_round_trip(vault):
    written = gs.add_gestalts(vault, "maya", DRAFTS + [gs.Draft("the user LIVES in   Berlin!")])
    assert [g.text for g in written] == [d.text for d in DRAFTS]  # the restated copy was dropped
    folder = vault.gestalts_dir / "maya"
    assert os.stat(folder).st_mode & 0o777 == 0o700
    for g in written:
        assert g.path == folder / f"{g.id}.md" and os.stat(g.path).st_mode & 0o777 == 0o600
        assert gs.read(g.path) == g and g.hash == gs.gestalt_hash(g.text)
    berlin = written[1]
    assert berlin.sources == ("s1:3",) and berlin.said == "2026-01-05T09:01:00.000Z" and berlin.kind == "fact"
    assert gs.render(berlin).splitlines()[-1] == "The user lives in Berlin."
    before = snapshot(folder)
    assert gs.add_gestalts(vault, "maya", DRAFTS) == []  # add-only: nothing rewritten, nothing added
    assert snapshot(folder) == before
    assert [g.text for g in gs.list_gestalts(vault, "maya").gestalts] == [d.text for d in DRAFTS]  # said order
    other = gs.add_gestalts(vault, "theo", DRAFTS[:1])  # the same fact for another user: its own id
    assert other[0].id != written[0].id and len(gs.list_gestalts(vault).gestalts) == 4


GOOD = ("---\nid: g-1\nuser: maya\nkind: fact\nsaid: 2026-01-05T09:00:00Z\ncreated: 2026-01-05T10:00:00Z\n"
        "updated: 2026-01-05T10:00:00Z\nhash: 0123456789abcdef\nsources: [s1:3]\n---\nThe user lives in Berlin.\n")


@pytest.mark.parametrize("old, new, where", [
    ("---\nid", "id", ":1: header: expected '---'"),
    ("kind: fact", "kind: Favourite Things", ":4: kind: expected one lowercase word"),
    ("said: 2026-01-05T09:00:00Z", "said: last tuesday", ":5: said: expected an ISO-8601 time"),
    ("hash: 0123456789abcdef", "hash: xyz", ":8: hash: expected 16 hex digits"),
    ("sources: [s1:3]", "sources: [s1:3, turn three]", ":9: sources: expected log record ids"),
    ("kind: fact", "kidn: fact", ":4: kidn: unknown field"),
    ("user: maya", "user: theo", ":3: user: 'theo' differs from the folder 'maya'"),
    ("id: g-1", "id: g-2", ":2: id: 'g-2' differs from the file name 'g-1'"),
    ("kind: fact", "kind: fact\nkind: habit", ":5: kind: given twice (first on line 4)"),
    ("The user lives in Berlin.\n", "\n", ":10: body: empty"),
    ("sources: [s1:3]\n---\n", "sources: [s1:3]\n", ":1: header: no closing '---' line"),
    ("kind: fact", "just words", ":4: header: expected 'key: value', got 'just words'"),
])
def test_a_malformed_file_is_named_by_line_and_field_skipped_and_never_rewritten(vault, old, new, where):
    folder = vault.gestalts_dir / "maya"
    folder.mkdir(mode=0o700)
    (folder / "g-1.md").write_text(GOOD.replace(old, new, 1))
    (folder / "g-ok.md").write_text(GOOD.replace("id: g-1", "id: g-ok").replace("Berlin", "Porto"))
    before = snapshot(folder)
    listing = gs.list_gestalts(vault, "maya")
    assert [g.id for g in listing.gestalts] == ["g-ok"]
    (problem,) = listing.problems
    assert str(problem).startswith(f"{folder / 'g-1.md'}{where}"), problem
    assert problem.path == folder / "g-1.md" and problem.line == int(where.split(":")[1])
    gs.add_gestalts(vault, "maya", [gs.Draft("The user plays the cello.")])
    assert {k: v for k, v in snapshot(folder).items() if k in before} == before
    with pytest.raises(gs.GestaltError, match=r"g-1\.md:\d+: "):
        gs.get_gestalt(vault, "maya", "g-1")


def test_a_hand_written_file_needs_only_a_header_and_the_fact(vault):
    folder = vault.gestalts_dir / "maya"
    folder.mkdir(mode=0o700)
    (folder / "cello.md").write_text("---\n# mine\nkind: habit   # a comment\n---\nPlays the cello on Sundays.\n")
    (g,) = gs.list_gestalts(vault, "maya").gestalts
    assert (g.id, g.user, g.kind, g.sources, g.hash) == ("cello", "maya", "habit", (), gs.gestalt_hash(g.text))
    assert gs.parse_time(g.created) and g.said == g.created == g.updated


def test_forgetting_and_editing_keep_old_facts_from_coming_back(vault):
    name, berlin, tea = gs.add_gestalts(vault, "maya", DRAFTS)
    assert gs.forget_gestalt(vault, "maya", tea.id) == tea and not tea.path.exists()
    assert gs.add_gestalts(vault, "maya", [gs.Draft("The user prefers GREEN tea")]) == []
    edited = gs.render(berlin).replace("Berlin", "Lisbon")
    new = gs.save_edit(vault, "maya", berlin.id, edited, berlin.path)
    assert new.text == "The user lives in Lisbon." and new.hash == berlin.hash and new.updated >= berlin.updated
    assert gs.save_edit(vault, "maya", new.id, gs.render(new), new.path) is None  # nothing changed
    assert gs.add_gestalts(vault, "maya", [gs.Draft("The user lives in Berlin."),
                                           gs.Draft("The user lives in Lisbon.")]) == []
    with pytest.raises(gs.GestaltError, match=r":\d+: kind: "):
        gs.save_edit(vault, "maya", new.id, gs.render(new).replace("kind: fact", "kind: 42"), new.path)
    assert gs.read(new.path) == new  # a bad edit changed nothing
    with pytest.raises(gs.GestaltError, match="no gestalt 'g-nope' for user 'maya'"):
        gs.forget_gestalt(vault, "maya", "g-nope")
    with pytest.raises(gs.GestaltError, match="user '../x'"):
        gs.list_gestalts(vault, "../x")
    assert os.stat(vault.gestalts_dir / "maya" / gs.FORGOTTEN).st_mode & 0o777 == 0o600


def test_sync_gestalts_adds_changes_deletes_and_is_idempotent(vault, embedder):
    name, berlin, tea = gs.add_gestalts(vault, "maya", DRAFTS)
    gs.add_gestalts(vault, "theo", [gs.Draft("The user lives in Oslo.", said="2026-01-01T00:00:00Z")])
    with MemoryStore.open(vault, embedder) as store:
        assert sync_gestalts(vault, store).to_dict() == {"added": 4, "changed": 0, "removed": 0, "unchanged": 0,
                                                          "problems": []}
        assert sync_gestalts(vault, store).unchanged == 4 and store.count() == 4  # nothing re-embedded
        (hit,) = store.search("which tea does the user prefer?", k=1, user="maya")
        assert (hit.id, hit.role, hit.session, hit.time) == (f"gestalt:{tea.id}", "gestalt", "", tea.said)
        assert [h.text for h in store.search("where does the user live?", k=5, user="theo")] == [
            "The user lives in Oslo."]
        # the user edits one file, breaks another, deletes a third
        berlin.path.write_text(gs.render(berlin).replace("Berlin", "Lisbon").replace(
            f"updated: {berlin.updated}", "updated: 2026-03-01T00:00:00Z"))
        tea.path.write_text(gs.render(tea).replace("kind: preference", "kind: ???"))
        name.path.unlink()
        report = sync_gestalts(vault, store)
        assert (report.added, report.changed, report.removed, report.unchanged) == (0, 1, 1, 1)
        assert report.problems == [f"{tea.path}:4: kind: expected one lowercase word such as fact or "
                                   "preference, got '???'"]
        assert store.get(f"gestalt:{tea.id}") is not None  # the broken file keeps its last good item
        assert store.get(f"gestalt:{name.id}") is None
        assert gs.add_gestalts(vault, "maya", [gs.Draft("The user's name is Maya.")]) == []  # deleted: forgotten
        top = store.search("where does the user live?", k=3, user="maya")[0]
        assert top.text == "The user lives in Lisbon." and top.time == "2026-03-01T00:00:00Z"
        assert sync_gestalts(vault, store).unchanged == 2
        rebuilt = reindex(vault, store, rebuild=True).gestalts  # the broken file has no good copy left
        assert (rebuilt.added, len(rebuilt.problems), store.count()) == (2, 1, 2)
        assert forget(vault, [f"gestalt:{berlin.id}"], store=store).ids == [f"gestalt:{berlin.id}"]
        assert not berlin.path.exists() and store.get(f"gestalt:{berlin.id}") is None
        for bad in ("gestalt:g-nope", "gestalt:../../logs/s1"):
            with pytest.raises(MemoryStoreError, match=f"unknown memory id '{bad}'"):
                forget(vault, [f"gestalt:{tea.id}", bad], store=store)
        assert tea.path.exists()  # the unknown id was refused before anything was forgotten


def test_a_newer_gestalt_ranks_above_the_one_it_replaced(vault, embedder):
    gs.add_gestalts(vault, "maya", [gs.Draft("The user lives in Berlin.", said="2026-01-05T09:00:00Z"),
                                    gs.Draft("The user likes cycling.", said="2026-01-20T09:00:00Z"),
                                    gs.Draft("The user lives in Lisbon.", said="2026-02-10T09:00:00Z")])
    with MemoryStore.open(vault, embedder) as store:
        sync_gestalts(vault, store)
        texts = [h.text for h in store.search("where does the user live?", k=3)]
    assert texts[:2] == ["The user lives in Lisbon.", "The user lives in Berlin."], texts


def test_a_gestalt_found_stands_for_its_source_turns(vault, embedder):
    """A gestalt item keeps the turns it was distilled from: a search that finds both shows the fact once,
    as the gestalt, in the best place either had; editing the sources updates the item, forgetting it
    removes them with it; a keyword database made before the column gains it."""
    import sqlite3

    from home.recall import Recall
    from tests.test_vault_memory import write_session
    from vault.config import MemorySettings
    from vault.memory import index_logs

    (vault.memory_dir).mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(vault.memory_dir / "keyword.sqlite3") as old:  # the table as it was before sources
        old.execute("CREATE TABLE docs (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL, "
                    "session TEXT, turn INTEGER, role TEXT, user TEXT, persona TEXT, time TEXT, epoch REAL)")
    recs = write_session(vault, "s1", [("user", "Hi! I'm Maya and I live in Lisbon. What should I cook tonight?", 0),
                                       ("assistant", "How about grilled sardines?", 0),
                                       ("user", "My sister Ana studies medicine in Porto.", 1)], user="maya")
    (city,) = gs.add_gestalts(vault, "maya", [gs.Draft("The user lives in Lisbon.", "fact", (recs[0]["id"],),
                                                       recs[0]["time"])])
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        sync_gestalts(vault, store)
        assert store.get(f"gestalt:{city.id}").sources == ("s1:1",)
        hits = store.search("Where do I live?", k=5, user="maya", fill=0.67)
        ids = [h.id for h in hits]
        assert f"gestalt:{city.id}" in ids and "s1:1" not in ids, ids  # the fact once, as the gestalt
        got = Recall(vault, store, MemorySettings(k=5, budget_tokens=1000)).recall(
            "Where do I live?", "maya", session=None, count_tokens=lambda s: len(s) // 4)
        assert "known about the user: The user lives in Lisbon." in got.block and "cook tonight" not in got.block
        assert got.hits[got.ids.index(f"gestalt:{city.id}")].sources == ("s1:1",)
        # the user edits the sources: the item follows; forgetting the gestalt takes them with it
        city.path.write_text(gs.render(city).replace("sources: [s1:1]", "sources: [s1:1, s1:3]"))
        assert sync_gestalts(vault, store).changed == 1
        assert store.get(f"gestalt:{city.id}").sources == ("s1:1", "s1:3")
        forget(vault, [f"gestalt:{city.id}"], store=store)
        assert store.get(f"gestalt:{city.id}") is None
        assert "s1:1" in [h.id for h in store.search("Where do I live?", k=5, user="maya", fill=0.67)]
        assert store._db.execute("SELECT count(*) FROM docs WHERE sources IS NOT NULL").fetchone()[0] == 0


def test_the_watcher_fires_for_files_in_a_users_gestalt_folder(vault):
    fired = threading.Event()
    calls = []

    def on_gestalts():
        calls.append(time.monotonic())
        fired.set()

    def wait(what):
        assert fired.wait(5), what
        fired.clear()

    with VaultWatcher(vault, on_gestalts=on_gestalts, debounce=0.1):
        (g,) = gs.add_gestalts(vault, "maya", DRAFTS[:1])  # a new user folder and an atomic write
        wait("new file")
        g.path.write_text(gs.render(g).replace("Maya", "May"))
        wait("edit")
        gs.forget_gestalt(vault, "maya", g.id)  # .forgotten is a dotfile; the unlink is the event
        wait("delete")
        gs.record_forgotten(vault, "maya", ["0123456789abcdef"])  # only a dotfile changes: no call
        assert not fired.wait(0.5)
    assert len(calls) == 3


def test_config_gestalts_section():
    from vault.config import ConfigError, default_text, parse_config

    assert parse_config(default_text("maya")).gestalts.every_n_turns == 10
    assert parse_config("[gestalts]\nenabled = false\nevery_n_turns = 0\n").gestalts.enabled is False
    for text, words in [("[gestalts]\nevery_n_turns = -1\n", "gestalts.every_n_turns: expected >= 0"),
                        ('[gestalts]\nenabled = "no"\n', "gestalts.enabled: expected true or false")]:
        with pytest.raises(ConfigError, match=words):
            parse_config(text)
