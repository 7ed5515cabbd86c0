"""vault/forget.py: forgetting writes the sources (logs, gestalt files) first and then tells the memory index,
which writes nothing outside its folder. Without an index, the sources still forget and the index follows them.

Real files, the real ChromaDB store and MiniLM embedder.
"""

from __future__ import annotations

import multiprocessing

import pytest

from tests.test_vault_memory import write_session
from vault import gestalts as gs
from vault.forget import forget
from vault.layout import Vault
from vault.logs import ConversationLog, read_log
from vault.memory import MemoryStore, MemoryStoreError, index_logs, reindex, sync_gestalts

TURNS = [("user", "My bank PIN is 4921.", 0), ("assistant", "Please keep that private.", 0),
         ("user", "I'm allergic to peanuts.", 1), ("assistant", "Noted: no peanuts.", 1)]



@pytest.fixture
def seeded(tmp_path, embedder):
    """Two sessions and two gestalts, indexed; the store closed again."""
    vault = Vault.open(tmp_path / "v")
    write_session(vault, "s1", TURNS)
    write_session(vault, "s2", [("user", "My sister Ana lives in Porto.", 2)])
    tea, city = gs.add_gestalts(vault, "me", [gs.Draft("The user prefers green tea.", "preference"),
                                              gs.Draft("The user lives in Berlin.")])
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        sync_gestalts(vault, store)
        assert store.count() == 7
    return vault, tea, city


def present(store: MemoryStore, ids) -> set[str]:
    return {i for i in ids if store.get(i) is not None}


def events(vault: Vault, session: str) -> list[tuple]:
    return [(r["event"], r["target"]) for r in read_log(vault.logs_dir / f"{session}.jsonl").records
            if r["role"] == "event"]


def test_without_the_index_the_sources_forget_and_the_index_follows(seeded, embedder):
    vault, tea, city = seeded
    every = ["s1:1", "s1:2", "s1:3", "s1:4", "s2:1", f"gestalt:{tea.id}", f"gestalt:{city.id}"]
    done = forget(vault, ["s1:1", f"gestalt:{tea.id}"])  # no store: another process has it, or it is damaged
    assert (done.ids, done.indexed) == (["s1:1", f"gestalt:{tea.id}"], False)
    assert done.texts == {"s1:1": "My bank PIN is 4921.", f"gestalt:{tea.id}": "The user prefers green tea."}
    assert events(vault, "s1") == [("exclude", "s1:1")]
    assert not tea.path.exists() and tea.hash in gs.forgotten(vault, "me")
    assert gs.add_gestalts(vault, "me", [gs.Draft("The user prefers green tea.")]) == []  # never learnt again
    assert forget(vault, ["s1:1"]).ids == ["s1:1"] and events(vault, "s1") == [("exclude", "s1:1")]  # one event

    with MemoryStore.open(vault, embedder) as store:
        assert present(store, every) == set(every)  # the index was not touched: it is behind the sources
        index_logs(vault, store)
        sync_gestalts(vault, store)
        caught_up = present(store, every)
        reindex(vault, store, rebuild=True)
        assert present(store, every) == caught_up == set(every) - {"s1:1", f"gestalt:{tea.id}"}
        assert store.count() == store.keyword_count() == 5
        assert "s1:1" not in [h.id for h in store.search("what is my bank PIN?", k=5)]


def test_with_the_index_it_is_told_and_writes_no_source(seeded, embedder):
    vault, tea, city = seeded

    def sources() -> dict:
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in vault.root.rglob("*")
                if p.is_file() and vault.memory_dir not in p.parents and vault.locks_dir not in p.parents}

    with MemoryStore.open(vault, embedder) as store:
        before = sources()
        store.forgotten(["s1:3", f"gestalt:{city.id}"])  # the index alone: it drops the items and nothing else
        assert sources() == before
        assert present(store, ["s1:3", f"gestalt:{city.id}"]) == set()
        done = forget(vault, ["s1:3", f"gestalt:{city.id}"], store=store)
        assert done.indexed and events(vault, "s1") == [("exclude", "s1:3")] and not city.path.exists()
        assert store.stats()["excluded"] == 1 and store.count() == 5
        index_logs(vault, store)
        assert store.get("s1:3") is None and store.count() == 5
        for bad in ("s1:99", "s9:1", "gestalt:g-nope", "gestalt:../../logs/s1", "../etc/passwd"):
            with pytest.raises(MemoryStoreError, match="unknown memory id"):
                forget(vault, ["s1:1", bad], store=store)
        assert events(vault, "s1") == [("exclude", "s1:3")] and store.get("s1:1") is not None  # nothing changed


def texts(hits) -> str:
    return " ".join(h.text for h in hits)


def test_a_turn_takes_the_gestalts_learnt_from_it_alone(seeded, embedder):
    """A gestalt learnt from a forgotten turn no longer recalls (file, store, search); one that another
    turn still backs stays until that one is forgotten too; hand-written ones (no sources) are untouched."""
    vault, tea, city = seeded
    write_session(vault, "s3", [("user", "Ana, my sister, has lived in Porto since May.", 3)])
    (peanuts,) = gs.add_gestalts(vault, "me", [gs.Draft("The user is allergic to peanuts.", sources=("s1:3",))])
    (porto,) = gs.add_gestalts(vault, "me", [gs.Draft("The user's sister Ana lives in Porto.",
                                                      sources=("s2:1", "s3:1"))])
    allergy, sister = "what am I allergic to?", "where does my sister live?"
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        sync_gestalts(vault, store)
        assert f"gestalt:{peanuts.id}" in [h.id for h in store.search(allergy, k=3)]

        done = forget(vault, ["s1:3"], store=store)
        assert done.derived == [f"gestalt:{peanuts.id}"] and done.texts[done.derived[0]] == peanuts.text
        assert not peanuts.path.exists() and peanuts.hash in gs.forgotten(vault, "me")
        assert present(store, ["s1:3", f"gestalt:{peanuts.id}"]) == set()
        assert "peanut" not in texts(store.search(allergy, k=5)).lower()
        assert sync_gestalts(vault, store).removed == 0  # the store already followed

        assert forget(vault, ["s2:1"], store=store).derived == []  # s3:1 still says it: kept
        assert porto.path.exists() and store.get(f"gestalt:{porto.id}") is not None
        assert forget(vault, ["s3:1"], store=store).derived == [f"gestalt:{porto.id}"]  # its last source
        assert not porto.path.exists() and "Porto" not in texts(store.search(sister, k=5))
        assert tea.path.exists() and city.path.exists()

        # distillation that read a turn before it was forgotten does not write what it drew from it
        assert gs.add_gestalts(vault, "me", [gs.Draft("The user has a nut allergy.", sources=("s1:3",))]) == []
        # a file left behind (a crash between the deletes and the events) goes when the turn is forgotten again
        left = gs.write(vault, gs.Gestalt("g-left", "me", "fact", "The user avoids peanuts.", porto.said,
                                          porto.created, porto.updated, gs.gestalt_hash("avoids peanuts"),
                                          ("s1:3",)))
        sync_gestalts(vault, store)
        assert forget(vault, ["s1:3"], store=store).derived == ["gestalt:g-left"] and not left.path.exists()
        assert events(vault, "s1") == [("exclude", "s1:3")] and store.get("gestalt:g-left") is None
        reindex(vault, store, rebuild=True)
        assert "peanut" not in texts(store.search(allergy, k=5)).lower()
        assert "Porto" not in texts(store.search(sister, k=5))


def test_without_the_index_the_learnt_gestalts_leave_at_the_next_sync(seeded, embedder):
    vault, tea, city = seeded
    (peanuts,) = gs.add_gestalts(vault, "me", [gs.Draft("The user is allergic to peanuts.", sources=("s1:3",))])
    with MemoryStore.open(vault, embedder) as store:
        sync_gestalts(vault, store)
    done = forget(vault, ["s1:3"])
    assert (done.derived, done.indexed) == ([f"gestalt:{peanuts.id}"], False) and not peanuts.path.exists()
    with MemoryStore.open(vault, embedder) as store:
        assert store.get(f"gestalt:{peanuts.id}") is not None  # behind the sources, until it catches up
        assert sync_gestalts(vault, store).removed == 1 and index_logs(vault, store).removed == 1
        assert "peanut" not in texts(store.search("what am I allergic to?", k=5)).lower()


def _chat(root, stop, said) -> None:
    """The app with memory off: its one open log of the session, a question and a reply per turn."""
    log = ConversationLog.open(Vault.open(root), "s1")
    while not stop.is_set() or said.value < 20:
        log.append({"role": "user", "user": "me", "text": f"question {said.value}"})
        log.append({"role": "assistant", "text": f"answer {said.value}"})
        said.value += 1


def test_forget_while_the_app_writes_the_same_log_loses_nothing(tmp_path):
    """`home memory forget` in one process while the app (memory off) appends to the session it names:
    every record of both lands once, turn numbers stay one per record (each append takes the log's lock
    and numbers from the file), and each forgotten turn has one exclude event."""
    vault = Vault.open(tmp_path / "v")
    log = ConversationLog.create(vault, "s1")
    old = [log.append({"role": "user", "user": "me", "text": f"old {i}"})["id"] for i in range(20)]
    ctx = multiprocessing.get_context("fork")
    stop, said = ctx.Event(), ctx.Value("i", 0)
    chat = ctx.Process(target=_chat, args=(vault.root, stop, said))
    chat.start()
    try:
        for ident in old:
            assert forget(vault, [ident]).ids == [ident]
        stop.set()
        chat.join(60)
    finally:
        chat.kill()
    assert chat.exitcode == 0
    read = read_log(log.path)
    assert read.problems == []
    records = read.records
    assert [r["turn"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["id"] for r in records}) == len(records)
    chat_texts = [r["text"] for r in records if r["role"] != "event" and not r["text"].startswith("old")]
    assert chat_texts == [f"{kind} {n}" for n in range(said.value) for kind in ("question", "answer")]
    excluded = [r["target"] for r in records if r.get("event") == "exclude"]
    assert sorted(excluded) == sorted(old)
