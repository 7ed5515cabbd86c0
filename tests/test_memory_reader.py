"""`home memory search` beside the running app: the store searched read-only (vault/memory_reader.py).

The app is a real second process that owns the store (MemoryStore.open, real ChromaDB and MiniLM), idle
or writing turns while the CLI searches. The search must give the hits the owner's own search gives and
leave every file of the memory folder as it was; forget and reindex stay refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from home.commands.memory import READ_ONLY_NOTE
from tests.cli_helpers import REPO, home_env, one_error_line, run_home
from tests.test_vault_memory import conversation
from vault.layout import Vault
from vault.vector_file import VectorFile

# The app, reduced to its memory store: owns it, indexes the logs, then answers on stdin:
# "search K QUERY" -> its own hits as JSON; "write" -> a thread logs and indexes a turn every 50 ms, as the
# app indexes each turn, until "stop" -> how many it wrote.
APP = textwrap.dedent("""
    import json, sys, threading, time
    from vault.layout import Vault
    from vault.logs import ConversationLog
    from vault.memory import MemoryStore, index_logs
    vault = Vault.open(sys.argv[1])
    stop, wrote = threading.Event(), []
    def writing():
        log = ConversationLog.create(vault, "live")
        while not stop.is_set():
            n = len(wrote)
            log.append({"role": "user", "user": "me", "persona": "sage",
                        "text": f"Note {n}: my parrot Captain Flint learnt his word number {n} today."})
            index_logs(vault, store)
            wrote.append(n)
            time.sleep(0.05)
    with MemoryStore.open(vault) as store:
        index_logs(vault, store)
        store.warm()
        print("ready", flush=True)
        for line in sys.stdin:
            verb, _, rest = line.strip().partition(" ")
            if verb == "search":
                k, _, query = rest.partition(" ")
                print(json.dumps([h.to_dict() for h in store.search(query, k=int(k))]), flush=True)
            elif verb == "write":
                writer = threading.Thread(target=writing)
                writer.start()
                print("writing", flush=True)
            elif verb == "stop":
                stop.set()
                writer.join()
                print(len(wrote), flush=True)
""")


class App:
    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", APP, str(root)], cwd=REPO, env=home_env(root),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.ask(None) == "ready", self.proc.stderr.read()

    def ask(self, line: str | None) -> str:
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        out = self.proc.stdout.readline().strip()
        assert out, self.proc.stderr.read()
        return out

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0, self.proc.stderr.read()


def files(folder: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every file and folder under `folder` (itself included): size, mtime, ctime (a chmod too), mode."""
    out = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = path.lstat()
        out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
    return out


def search(root: Path, query: str, *more: str) -> subprocess.CompletedProcess:
    return run_home(root, "memory", "search", query, *more)


def test_search_beside_the_running_app_is_read_only_and_finds_what_the_app_finds(tmp_path):
    root = tmp_path / "v"
    expected = conversation(Vault.open(root))
    memory = root / "memory"
    app = App(root)
    try:
        before = files(memory)
        found = {}
        for query in ("where does my sister live?", "what car do I have?", "when is my birthday?"):
            got = search(root, query, "-k", "3", "--json")
            assert got.returncode == 0, got.stderr  # MemoryBusyError before: the app owns the store
            assert got.stderr.strip() == READ_ONLY_NOTE
            found[query] = json.loads(got.stdout)
            own = json.loads(app.ask(f"search 3 {query}"))  # the owner's search, on the same state
            assert [h["id"] for h in found[query]] == [h["id"] for h in own] and own
            assert [h["score"] for h in found[query]] == pytest.approx([h["score"] for h in own], abs=1e-5)
            assert found[query][0] == {**own[0], "score": found[query][0]["score"]}  # same shape and fields
        assert found["where does my sister live?"][0]["id"] == expected["where does my sister live?"]
        table = search(root, "what car do I have?", "-k", "2")
        assert table.returncode == 0 and table.stderr.strip() == READ_ONLY_NOTE, table.stderr
        assert table.stdout.startswith("ID (home memory forget ID)") and expected["what car do I have?"] in table.stdout
        assert files(memory) == before  # nothing written, created, truncated or chmodded

        sister = expected["where does my sister live?"]
        for refused in (run_home(root, "memory", "forget", sister), run_home(root, "memory", "reindex")):
            assert refused.returncode == 1 and "in use by another Home process" in one_error_line(refused)

        assert app.ask("write") == "writing"  # the app indexes turn after turn while searches run
        during = [search(root, "what is my parrot called?", "-k", "2", "--json") for _ in range(3)]
        wrote = int(app.ask("stop"))
        assert wrote > 10, wrote
        for got in during:  # no busy error, no torn state: the hits of some committed state
            assert got.returncode == 0 and got.stderr.strip() == READ_ONLY_NOTE, got.stderr
            assert all(h["text"] and h["id"] for h in json.loads(got.stdout))
        assert json.loads(during[-1].stdout)[0]["id"].startswith("live:")
        after = json.loads(search(root, "what is my parrot called?", "-k", "1", "--json").stdout)
        assert after and after[0]["id"].startswith("live:") and "Captain Flint" in after[0]["text"]
        assert [h["id"] for h in after] == [h["id"] for h in json.loads(app.ask("search 1 what is my parrot called?"))]

        # a vector file the app would rebuild (moved away here): refused in one line, nothing rebuilt
        moved = tmp_path / "moved"
        moved.mkdir()
        for path in memory.glob("vectors-*.f32"):
            path.rename(moved / path.name)
        before = files(memory)
        stale = search(root, "where does my sister live?", "--json")
        assert stale.returncode == 1 and "vector file is missing or out of date" in one_error_line(stale)
        assert stale.stdout == "" and files(memory) == before
        for path in moved.iterdir():
            path.rename(memory / path.name)
    finally:
        app.close()


def test_a_read_only_vector_file_codes_in_memory_and_finds_what_the_owner_finds(tmp_path, monkeypatch):
    """Past SIGN_ROWS a search reads the sign codes (vault/sign_codes.py), which the owner writes as it
    searches: the reader takes the file's codes, codes the rows they lack in memory, re-centres in memory
    when the rows doubled or the owner re-centred under it, cuts no torn tail, and writes nothing."""
    import sqlite3

    import vault.vector_file as vfm

    monkeypatch.setattr(vfm, "SIGN_ROWS", 500)
    monkeypatch.setattr(vfm, "CANDIDATES", 200)
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 64)) + 0.5
    vecs = (centres[rng.integers(0, 40, 9000)] + 0.3 * rng.normal(size=(9000, 64))).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids, users = [f"s:{j}" for j in range(9000)], ["me" if j % 3 else "kim" for j in range(9000)]
    owner = VectorFile(tmp_path, sqlite3.connect(tmp_path / "k.sqlite3"), 64)
    owner.rebuild([(ids[:3000], users[:3000], vecs[:3000])])
    owner.warm()  # codes and mean on disk for 3000 rows
    owner.upsert(ids[3000:4000], users[3000:4000], vecs[3000:4000])  # not coded on disk yet
    owner.delete(["s:5"])
    user_file = tmp_path / "vectors-1.user"
    with open(user_file, "ab") as fh:  # an append in flight: half a row's user code
        fh.write(b"\xff\xff")
    ro = sqlite3.connect(f"{(tmp_path / 'k.sqlite3').as_uri()}?mode=ro", uri=True, isolation_level=None)
    qs = vecs[rng.integers(0, 4000, 12)] + 0.05 * rng.normal(size=(12, 64)).astype(np.float32)

    def read(snapshot: dict) -> list:
        reader = VectorFile(tmp_path, ro, 64, readonly=True)
        got = reader.top_many(qs, 10) + reader.top_many(qs, 5, "kim")
        assert files(tmp_path) == snapshot
        with pytest.raises(RuntimeError, match="read-only"):
            reader.upsert(["x"], ["me"], vecs[:1])
        return got

    got = read(files(tmp_path))
    os.truncate(user_file, 4000 * 4)  # the owner cuts its torn tail; its own search codes the new rows, on disk
    assert got == owner.top_many(qs, 10) + owner.top_many(qs, 5, "kim")
    assert "s:5" not in sum(got, [])
    assert (tmp_path / "vectors-1.sign").stat().st_size == 4000 * 8

    owner.upsert(ids[4000:9000], users[4000:9000], vecs[4000:9000])  # the rows more than doubled
    got = read(files(tmp_path))
    assert got == owner.top_many(qs, 10) + owner.top_many(qs, 5, "kim")  # re-centred the same way, on disk

    mean = tmp_path / "vectors-1.mean"  # the owner re-centred between the reader's reads of mean and codes
    mean.write_bytes(np.append(vecs[:10].mean(axis=0), np.float32(9000)).astype(np.float32).tobytes())
    reader = VectorFile(tmp_path, ro, 64, readonly=True)
    snapshot = files(tmp_path)
    reader.warm()
    codes = reader._signs
    assert files(tmp_path) == snapshot and not np.array_equal(codes._mean, vecs[:10].mean(axis=0))
    np.testing.assert_array_equal(codes._codes, codes._bits(reader.matrix))  # all coded around its own mean
