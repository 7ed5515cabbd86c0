"""vault/vector_file.py: the store's vectors memory-mapped beside it (issue 13: a cost that stays flat).

A reopened store searches without reading a single embedding back from ChromaDB; the file follows
upserts, replacements and deletes across reopenings, and is rebuilt from ChromaDB (the store of record)
when it is missing, torn or stale. Real ChromaDB and the real embedder, a few dozen items.
"""

from __future__ import annotations

import numpy as np
import pytest

from vault.layout import Vault
from vault.memory import MemoryStore, index_logs
from vault.vector_file import VectorFile

from .test_vault_memory import conversation


class Spy:
    """Counts ChromaDB reads of embeddings (the whole-matrix load this file replaces)."""

    def __init__(self, store: MemoryStore) -> None:
        self.reads = 0
        real = store._col.get

        def get(*args, **kwargs):  # noqa: ANN002, ANN003
            if "embeddings" in (kwargs.get("include") or []):
                self.reads += 1
            return real(*args, **kwargs)

        store._col.get = get


def test_a_reopened_store_maps_its_vectors_and_never_reloads_them(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    expected = conversation(vault)
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        before = {q: [h.id for h in store.search(q, k=3)] for q in expected}
        n = store._col.count()  # items, sentence parts included
    with MemoryStore.open(vault, embedder) as store:
        spy = Spy(store)
        assert store._matrix is None  # nothing loaded until a search
        after = {q: [h.id for h in store.search(q, k=3)] for q in expected}
        assert after == before and spy.reads == 0
        vf = store._matrix
        assert isinstance(vf.matrix, np.memmap) and len(vf) == n and vf.rebuilds == 0
        store.upsert([{"id": "s1-facts:1", "session": "s1-facts", "turn": 1, "role": "user", "user": "me",
                       "time": "2026-03-01T10:00:00Z", "text": "My sister Ana moved from Porto to Lisbon."}])
        store.delete(["s1-facts:3"])
    with MemoryStore.open(vault, embedder) as store:
        spy = Spy(store)
        top = store.search("where does my sister live?", k=3)
        assert top[0].id == "s1-facts:1" and "Lisbon" in top[0].text  # the replaced row, not the old one
        assert store.get("s1-facts:3") is None and "s1-facts:3" not in store._matrix.top(
            embedder.embed(["what am I allergic to?"])[0], 50)
        assert len(store._matrix) == n - 1 and store._matrix.rebuilds == 0 and spy.reads == 0
        assert store._matrix.top(embedder.embed(["x"])[0], 5, user="nobody") == []


def test_a_missing_torn_or_stale_file_is_rebuilt_from_chromadb(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    expected = conversation(vault)
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        want = {q: [h.id for h in store.search(q, k=3)] for q in expected}
        gen = store._matrix.gen
    files = sorted(vault.memory_dir.glob("vectors-*"))
    assert [p.name for p in files] == [f"vectors-{gen}.f32", f"vectors-{gen}.user"]
    for damage in ("missing", "torn", "stale"):
        f32 = vault.memory_dir / f"vectors-{gen}.f32"
        if damage == "missing":
            f32.unlink()
        elif damage == "torn":  # a kill mid-append: a partial row, cut off at open
            with open(f32, "ab") as fh:
                fh.write(b"\0" * 100)
        else:  # the id map says fewer items than ChromaDB holds (a batch that never reached the file)
            import sqlite3

            db = sqlite3.connect(vault.memory_dir / "keyword.sqlite3")
            with db:
                db.execute("UPDATE vec_meta SET value = value - 1 WHERE key = 'items'")
            db.close()
        with MemoryStore.open(vault, embedder) as store:
            got = {q: [h.id for h in store.search(q, k=3)] for q in expected}
            vf = store._matrix
            assert got == want, damage
            assert vf.rebuilds == (0 if damage == "torn" else 1), damage
            gen = vf.gen
        assert sorted(p.name for p in vault.memory_dir.glob("vectors-*")) == [f"vectors-{gen}.f32",
                                                                             f"vectors-{gen}.user"]


def test_vector_file_is_exact_and_keeps_users_apart(tmp_path):
    import sqlite3

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(300, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    db = sqlite3.connect(tmp_path / "k.sqlite3")
    vf = VectorFile(tmp_path, db, 8)
    assert not vf.valid(0)
    vf.rebuild([])
    for i in range(0, 300, 7):
        vf.upsert([f"s:{j}" for j in range(i, min(i + 7, 300))],
                  ["me" if j % 2 else "kim" for j in range(i, min(i + 7, 300))], vecs[i:i + 7])
    q = vecs[42]
    assert vf.top(q, 3) == [f"s:{j}" for j in np.argsort(-(vecs @ q))[:3]]
    assert "s:42" not in vf.top(q, 5, user="me") and vf.top(q, 1, user="kim") == ["s:42"]
    vf.upsert(["s:42", "s:42"], ["kim", "kim"], np.stack([q, -q]))  # the last version of a repeated id wins
    assert len(vf) == 300 and vf.top(q, 1)[0] != "s:42"
    np.testing.assert_allclose(vf.vector("s:42"), -q)
    vf.delete(["s:42", "nope"])
    assert len(vf) == 299 and vf.vector("s:42") is None
    again = VectorFile(tmp_path, db, 8)
    assert again.valid(299) and again.top(q, 3) == vf.top(q, 3)
    assert not VectorFile(tmp_path, db, 16).valid(299)  # another width: rebuilt by the store


def test_past_sign_rows_a_search_scores_the_sign_codes_candidates_exactly(tmp_path, monkeypatch):
    """vault/sign_codes.py: a large file's search scores only its sign codes' nearest rows, exactly; the codes
    follow appends, replacements, deletes and users, are recoded when torn, re-centred when the rows double,
    and go with their generation."""
    import sqlite3

    import vault.vector_file as vfm

    monkeypatch.setattr(vfm, "SIGN_ROWS", 500)
    monkeypatch.setattr(vfm, "CANDIDATES", 200)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 64)) + 0.5  # not centred on zero, as MiniLM's dimensions are not
    vecs = (centres[rng.integers(0, 40, 4000)] + 0.3 * rng.normal(size=(4000, 64))).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    users = ["me" if j % 3 else "kim" for j in range(4000)]
    db = sqlite3.connect(tmp_path / "k.sqlite3")
    vf = VectorFile(tmp_path, db, 64)
    vf.rebuild([([f"s:{j}" for j in range(1500)], users[:1500], vecs[:1500])])

    def exact(q, n, upto, user=None, dead=()):
        order = [j for j in np.argsort(-(vecs[:upto] @ q), kind="stable")
                 if j not in dead and (user is None or users[j] == user)]
        return [f"s:{j}" for j in order[:n]]

    queries = [vecs[j] + 0.05 * rng.normal(size=64).astype(np.float32) for j in rng.integers(0, 1500, 30)]
    assert [vf.top(q, 10) for q in queries] == [exact(q, 10, 1500) for q in queries]
    sign = tmp_path / "vectors-1.sign"
    assert sign.stat().st_size == 1500 * 8 and (tmp_path / "vectors-1.mean").exists()
    for i in range(1500, 2500, 100):  # appended rows are coded at the next search and found
        vf.upsert([f"s:{j}" for j in range(i, i + 100)], users[i:i + 100], vecs[i:i + 100])
        assert vf.top(vecs[i + 7], 1) == [f"s:{i + 7}"] and sign.stat().st_size == (i + 100) * 8
    vf.delete(["s:1507"])
    assert "s:1507" not in vf.top(vecs[1507], 5) and vf.top(vecs[1508], 3, user="kim") == exact(
        vecs[1508], 3, 2500, "kim", {1507})
    vf.upsert(["s:9"], ["me"], vecs[2600:2601])  # a replaced row: its new vector (a new row) is found, the old never
    assert vf.top(vecs[2600], 1) == ["s:9"] and "s:9" not in vf.top(vecs[9], 3)
    os_size = sign.stat().st_size
    with open(sign, "r+b") as fh:  # a torn append, zeros where the last codes were (a power loss): recoded
        fh.truncate(os_size - 3)
        fh.seek(os_size - 3 - 16)
        fh.write(bytes(16))
    again = VectorFile(tmp_path, db, 64)
    assert again.top(queries[0], 10) == vf.top(queries[0], 10) and sign.stat().st_size == os_size
    codes = again._signs
    np.testing.assert_array_equal(codes._codes, codes._bits(again.matrix))  # the zeroed codes were redone
    vf.upsert([f"s:{j}" for j in range(2500, 3200)], users[2500:3200], vecs[2500:3200])  # rows doubled: re-centred
    assert vf.top(vecs[3100], 1) == ["s:3100"]
    assert np.frombuffer((tmp_path / "vectors-1.mean").read_bytes(), np.float32)[-1] == vf._rows
    vf.rebuild([([f"s:{j}" for j in range(600)], users[:600], vecs[:600])])
    assert sorted(p.name for p in tmp_path.glob("vectors-*")) == ["vectors-2.f32", "vectors-2.user"]
    vf.warm()  # the store's warm-up codes a large file before the first search
    assert (tmp_path / "vectors-2.sign").stat().st_size == 600 * 8
    assert vf.top(queries[1], 5) == exact(queries[1], 5, 600)


def test_a_turns_rows_are_appended_without_mapping_the_file_again(tmp_path, monkeypatch):
    """After each turn the store appends a few rows; the next search reads them through the mapping it
    already has (the .f32 file keeps room past its rows) and the sign codes take them in place. Mapping
    the whole file again per append made that search fault in every page it read (3x slower at 160k rows:
    bench/memory_search.py). Counted, not timed: how many times the rows file is mapped."""
    import sqlite3
    import sys

    import vault.vector_file as vfm

    monkeypatch.setattr(vfm, "SIGN_ROWS", 500)
    monkeypatch.setattr(vfm, "CANDIDATES", 200)
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(1700, 64)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vf = VectorFile(tmp_path, sqlite3.connect(tmp_path / "k.sqlite3"), 64)
    vf.rebuild([([f"s:{j}" for j in range(1500)], ["me"] * 1500, vecs[:1500])])
    assert vf.top(vecs[3], 1) == ["s:3"]
    lengths: list[int] = []
    counting = [True]
    sys.addaudithook(lambda event, args: lengths.append(args[1]) if counting[0] and event == "mmap.__new__" else None)
    for i in range(1500, 1700, 4):  # a turn's rows: the user's message, its sentences, the reply
        vf.upsert([f"s:{j}" for j in range(i, i + 4)], ["me"] * 4, vecs[i:i + 4])
        assert vf.top(vecs[i + 2], 1) == [f"s:{i + 2}"]
        if i == 1500:
            codes = vf._signs._cols
    counting[0] = False
    rows_maps = [n for n in lengths if n >= 1500 * 64 * 4]  # the .user file's maps are 64x smaller
    assert len(rows_maps) == 1, rows_maps  # once, when the first append made room (4096 rows)
    assert vf._signs._cols is codes and len(vf._signs._codes) == 1700
    assert (tmp_path / "vectors-1.f32").stat().st_size == (1500 + 4096) * 64 * 4
    again = VectorFile(tmp_path, vf.db, 64)  # reopened: the room is not rows
    assert len(again.matrix) == 1700 and again.top(vecs[1699], 1) == ["s:1699"]



def test_a_questions_parts_share_one_sign_code_scan_and_find_what_one_by_one_finds(tmp_path, monkeypatch, embedder):
    """home/recall.py searches a two-part question's whole and parts together (`MemoryStore.search_many`):
    each word of the sign codes read once for them all (`SignCodes.candidates_many`), each part's rows
    scored as `top` scores them, so the ids, and the hits, are those of one search after another."""
    import sqlite3

    import vault.sign_codes as scm
    import vault.vector_file as vfm

    monkeypatch.setattr(vfm, "SIGN_ROWS", 500)
    monkeypatch.setattr(vfm, "CANDIDATES", 200)
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(30, 64)) + 0.5
    vecs = (centres[rng.integers(0, 30, 3000)] + 0.3 * rng.normal(size=(3000, 64))).astype(np.float32)
    vecs[2000:2400] = vecs[7]  # repeated texts: many rows tied at the Hamming cut
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    db = sqlite3.connect(tmp_path / "k.sqlite3")
    vf = VectorFile(tmp_path, db, 64)
    vf.rebuild([([f"s:{j}" for j in range(3000)], ["me" if j % 3 else "kim" for j in range(3000)], vecs)])
    scans = []
    real = scm.SignCodes.candidates_many
    monkeypatch.setattr(scm.SignCodes, "candidates_many", lambda self, qs, n, mask: scans.append(len(qs))
                        or real(self, qs, n, mask))
    for rows in ([7, 8, 9], [2100, 5], [11]):
        qs = vecs[rows] + 0.05 * rng.normal(size=(len(rows), 64)).astype(np.float32)
        for user in (None, "me"):
            scans.clear()
            together = vf.top_many(qs, 12, user)
            assert scans == [len(rows)]  # one scan for all the parts
            assert together == [vf.top(q, 12, user) for q in qs] and all(len(t) == 12 for t in together)
    assert vf.top_many(qs, 5, "nobody") == [[]]

    vault = Vault.open(tmp_path / "v")  # the store: the same hits as one search after another
    conversation(vault)
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        queries = ["where does my sister live?", "what car do I have?", "when is my birthday?"]
        vectors = embedder.embed(queries)
        ids = lambda hits: [(h.id, h.text) for h in hits]  # noqa: E731
        together = [ids(h) for h in store.search_many(queries, vectors, k=6, fill=0.2)]
        assert all(together) and together == [
            ids(store.search(q, k=6, vector=v, fill=0.2)) for q, v in zip(queries, vectors, strict=True)]


@pytest.mark.parametrize("dim", [64, 200, 448])  # 1, 4 and 7 words: a lone word, a group and a part one, two groups and one
def test_sign_code_candidates_are_the_nearest_by_hamming_distance_at_any_width(tmp_path, dim):
    """vault/sign_codes.py sums words' bit counts in bytes, a group at a time, and finds the n-th nearest
    distance by bisection: the candidates are still the rows nearest by Hamming distance (masked-out rows
    never; all rows tied at the cut, or the first n of them when they are many), whatever the width."""
    from vault.sign_codes import SignCodes

    rng = np.random.default_rng(dim)
    rows = rng.normal(size=(3000, dim)).astype(np.float32) + 0.3
    rows[1000:1400] = rows[5]  # repeated texts: many rows tied at the cut
    codes = SignCodes(tmp_path, 1, dim)
    codes.update(rows)
    qs = np.concatenate([rows[[5, 17]], rng.normal(size=(2, dim)).astype(np.float32)])
    mask = rng.random(3000) > 0.2
    words = codes._codes
    for n in (1, 40, 300):
        for use in (None, mask):
            got = codes.candidates_many(qs, n, use)
            for q, rows_got in zip(codes._bits(qs), got, strict=True):
                dist = np.bitwise_count(words ^ q).sum(axis=1)
                live = np.flatnonzero(use) if use is not None else np.arange(3000)
                cut = np.sort(dist[live])[n - 1]
                near, at = live[dist[live] < cut], live[dist[live] == cut]
                want = np.concatenate([near, at]) if len(near) + len(at) <= 2 * n else np.concatenate(
                    [near, at[:n - len(near)]])
                np.testing.assert_array_equal(rows_got, np.sort(want))


def test_a_search_does_not_look_up_the_rows_of_the_vectors_it_found(tmp_path, embedder):
    """The vector file's hits come with their rows (`VectorFile.top_many_rows`): the search reads their
    vectors from those rows, and looks up by id only the rows of what the keywords (or a date window) added
    (0.4 ms of SQL a search at 100k items)."""
    import re

    vault = Vault.open(tmp_path / "v")
    conversation(vault)
    with MemoryStore.open(vault, embedder) as store:
        index_logs(vault, store)
        query = "where does my sister live?"
        v = embedder.embed([query])[0]
        found = store._vectors().top(v, 20)
        sql: list[str] = []
        store._db.set_trace_callback(sql.append)
        hits = store.search(query, k=5, vector=v, fill=0.2)
        store._db.set_trace_callback(None)
    assert hits and found
    looked_up = {i for s in sql if "FROM vec_rows WHERE id IN" in s for i in re.findall(r"'([^']*)'", s)}
    assert not looked_up & set(found)
