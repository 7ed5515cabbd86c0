"""The memory store read-only beside the process that owns it (vault/memory_reader.py): finds what the
owner finds, writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vault.vector_file import VectorFile


def files(folder: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every file and folder under `folder` (itself included): size, mtime, ctime (a chmod too), mode."""
    out = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = path.lstat()
        out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
    return out


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
