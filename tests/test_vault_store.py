"""vault.fsio, vault.layout, vault.manifest: atomic writes, the lock, validation that names the field."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vault.errors import ManifestError, VaultError
from vault.fsio import FileLock, LockTimeout, append_line_fsync, atomic_write_bytes
from vault.layout import SUBDIRS, Vault, resolve_root
from vault.manifest import AdapterEntry, ManifestStore


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_vault_is_private_and_root_resolution(tmp_path, monkeypatch):
    v = Vault.open(tmp_path / "v")
    assert mode(v.root) == 0o700
    assert all(mode(v.root / d) == 0o700 for d in SUBDIRS)
    os.chmod(v.logs_dir, 0o755)
    Vault.open(v.root)  # reopening tightens what someone loosened
    assert mode(v.logs_dir) == 0o700
    monkeypatch.setenv("HOME_VAULT", str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    assert resolve_root(str(tmp_path / "cli")) == tmp_path / "cli"
    (tmp_path / "file").write_text("x")
    with pytest.raises(VaultError, match="not a directory"):
        Vault.open(tmp_path / "file")


def test_atomic_write_replaces_whole_and_private(tmp_path):
    p = tmp_path / "d" / "f.json"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and mode(p) == 0o600
    assert [x.name for x in p.parent.iterdir()] == ["f.json"]  # no temp files left behind
    append_line_fsync(tmp_path / "log", "a")
    append_line_fsync(tmp_path / "log", "b")
    assert (tmp_path / "log").read_text() == "a\nb\n" and mode(tmp_path / "log") == 0o600
    with pytest.raises(ValueError):
        append_line_fsync(tmp_path / "log", "two\nlines")


def _hold_lock(path, ready, release):
    with FileLock(path):
        ready.set()
        release.wait(10)


def test_lock_excludes_other_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(tmp_path / "m.lock", ready, release))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockTimeout, match="m.lock"):
            FileLock(tmp_path / "m.lock", timeout=0.2).acquire()
    finally:
        release.set()
        proc.join(10)
    with FileLock(tmp_path / "m.lock", timeout=1):
        pass


def test_lock_semantics_the_app_and_the_trainer_rely_on(tmp_path):
    """A holder killed by SIGKILL leaves no stale lock; a second lock on one path waits in the same thread
    too (not re-entrant); any thread may release (the memory store's lock is released by whoever closes
    the store: filelock's default thread-local holds would keep it); the file 0600 in a 0700 folder."""
    path = tmp_path / "locks" / "k.lock"
    code = ("import sys, time; from vault.fsio import FileLock\n"
            f"lock = FileLock({str(path)!r}); lock.acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout, match="k.lock: still locked by another process after 0.1 s"):
            FileLock(path, timeout=0.1).acquire()
    finally:
        proc.kill()
        proc.wait(10)
    lock = FileLock(path, timeout=0)
    lock.acquire()  # the dead holder's lock went with it
    with pytest.raises(LockTimeout):
        FileLock(path, timeout=0.05).acquire()
    releaser = threading.Thread(target=lock.release)
    releaser.start()
    releaser.join()
    with FileLock(path, timeout=0):
        pass
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


def _entry(ident: str, **kw) -> AdapterEntry:
    return AdapterEntry(id=ident, name=ident, file=f"adapters/{ident}/adapter.gguf", **kw)


def _add_many(root, prefix, n):
    store = ManifestStore(Vault.open(root))
    for i in range(n):
        with store.update() as m:
            m.add_adapter(_entry(f"{prefix}-{i}"))


def test_concurrent_updates_lose_nothing(tmp_path):
    root = tmp_path / "v"
    Vault.open(root)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_many, args=(root, f"p{k}", 15)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    m = ManifestStore(Vault.open(root)).read()
    assert len(m.adapters) == 45


def test_manifest_roundtrip_bak_and_unknown_keys(tmp_path):
    v = Vault.open(tmp_path / "v")
    store = ManifestStore(v)
    assert store.read().adapters == {}
    with store.update() as m:
        m.ensure_user("me")
        m.add_adapter(_entry("a", kind="voice", tasks=["email"], scale=0.8))
    first = v.manifest_path.read_bytes()
    data = json.loads(first)
    data["adapters"]["a"]["future_field"] = {"x": 1}
    data["future_top"] = [1]
    v.manifest_path.write_text(json.dumps(data))
    with store.update() as m:
        m.add_adapter(_entry("b", parent="a", stack=[{"id": "a", "scale": 0.5}]))
    again = json.loads(v.manifest_path.read_text())
    assert again["adapters"]["a"]["future_field"] == {"x": 1} and again["future_top"] == [1]
    assert json.loads((v.root / "manifest.json.bak").read_text())["future_top"] == [1]
    assert mode(v.manifest_path) == 0o600 and mode(v.root / "manifest.json.bak") == 0o600
    with pytest.raises(ManifestError, match="used by b"):
        with store.update() as m:
            m.remove_adapter("a")
    assert "a" in store.read().adapters  # the failed update wrote nothing


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["adapters"]["a"].__setitem__("scale", "high"), 'adapters.a.scale: expected a number, got "high"'),
    (lambda d: d["adapters"]["a"].__setitem__("kind", "voices"), "adapters.a.kind: expected one of"),
    (lambda d: d["adapters"]["a"].pop("file"), "adapters.a.file: missing"),
    (lambda d: d["adapters"]["a"].__setitem__("file", "../../etc/passwd"), "adapters.a.file: must be a path inside"),
    (lambda d: d["adapters"]["a"].__setitem__("tones", ["ok", 3]), "adapters.a.tones[1]: expected a string"),
    (lambda d: d["adapters"]["a"].__setitem__("parent", "ghost"), 'adapters.a.parent: no adapter "ghost"'),
    (lambda d: d.__setitem__("schema", 7), "schema: expected 1, got 7"),
    (lambda d: d.__setitem__("adapters", []), "adapters: expected an object"),
])
def test_invalid_manifest_names_the_field_and_is_never_overwritten(tmp_path, mutate, message):
    v = Vault.open(tmp_path / "v")
    store = ManifestStore(v)
    with store.update() as m:
        m.add_adapter(_entry("a"))
    data = json.loads(v.manifest_path.read_text())
    mutate(data)
    v.manifest_path.write_text(json.dumps(data))
    before = v.manifest_path.read_bytes()
    with pytest.raises(ManifestError) as err:
        store.read()
    assert message in str(err.value) and str(v.manifest_path) in str(err.value)
    with pytest.raises(ManifestError):
        with store.update() as m:
            m.add_adapter(_entry("b"))
    assert v.manifest_path.read_bytes() == before


def test_truncated_manifest_names_line_and_backup(tmp_path):
    v = Vault.open(tmp_path / "v")
    store = ManifestStore(v)
    for ident in ("a", "b"):
        with store.update() as m:
            m.add_adapter(_entry(ident))
    v.manifest_path.write_text('{"schema": 1,\n "adapters": {')
    with pytest.raises(ManifestError, match=r"manifest.json: line 2 column \d+: invalid JSON .*manifest.json.bak"):
        store.read()


def test_a_lock_timeout_reaches_the_user_as_one_line(tmp_path, capsys):
    """`home adapters add` while a training registers (the adapters lock, 120 s) ended in a traceback."""
    from home.errors import report_error

    with FileLock(tmp_path / "a.lock"):
        try:
            FileLock(tmp_path / "a.lock", timeout=0).acquire()
        except LockTimeout as exc:
            assert report_error(exc) == 1
    assert capsys.readouterr().err == f"home: error: {tmp_path / 'a.lock'}: still locked by another process after 0 s\n"
