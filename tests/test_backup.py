"""`home backup` / `home restore` (vault/backup.py, vault/restore.py) on a vault built by Home's own writers:
logs (ConversationLog), a gestalt, a manifest with a real LoRA registered, the memory store (real ChromaDB and
MiniLM). The round trip must give the same bytes and the same memory hits; a backup taken while a thread
appends turns holds whole lines only; a damaged, unsafe or misdirected restore writes nothing."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.cli_helpers import one_error_line, run_home
from tests.loras import make_random_lora
from tests.test_vault_memory import conversation
from vault.fsio import file_sha256, private_tree
from vault.gestalts import Draft, add_gestalts
from vault.layout import Vault
from vault.logs import ConversationLog, read_log
from vault.manifest import AdapterEntry, ManifestStore
from vault.memory import MemoryStore, reindex


@pytest.fixture
def built(tmp_path, model_path, embedder):
    """A vault with logs, a gestalt, an adapter in the manifest, memory indexed, and a run's checkpoint."""
    from llm.gguf_meta import read_model_info

    vault = Vault.open(tmp_path / "v")
    queries = conversation(vault)
    add_gestalts(vault, "me", [Draft("Ana, my sister, lives in Porto.", sources=("s1-facts:1",))])
    lora = make_random_lora(model_path, tmp_path / "a.gguf", rank=1, n_layers=1)
    (vault.adapters_dir / "me-voice-1").mkdir(mode=0o700)
    (vault.adapters_dir / "me-voice-1" / "adapter.gguf").write_bytes(lora.read_bytes())

    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry(id="me-voice-1", name="me-voice", file="adapters/me-voice-1/adapter.gguf",
                                   sha256=file_sha256(lora), kind="voice", owner="me",
                                   base={"fingerprint": read_model_info(model_path).fingerprint}))
    with ManifestStore(vault).update() as m:  # a second write: manifest.json.bak exists too
        m.ensure_user("me")["voice_adapter"] = "me-voice-1"
    ckpt = vault.runs_dir / "me-voice-run" / "checkpoints" / "checkpoint-1"
    ckpt.mkdir(parents=True)
    (ckpt / "weights.bin").write_bytes(os.urandom(4096))
    (vault.runs_dir / "me-voice-run" / "state.json").write_text('{"status": "done"}\n')
    private_tree(vault.root)  # as Home leaves its files (the test wrote some with the umask)
    with MemoryStore.open(vault, embedder) as store:
        reindex(vault, store)  # logs and gestalts, as `home memory reindex`
        hits = {q: [h.id for h in store.search(q, k=3)] for q in queries}
    return vault, queries, hits


def _tree(root: Path, skip: tuple[str, ...] = ("locks", "memory")) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in skip}


def test_round_trip_same_bytes_same_hits_and_doctor_clean(built, tmp_path, embedder):
    vault, queries, hits = built
    arc = tmp_path / "b.tar.gz"
    out = run_home(vault.root, "backup", str(arc))
    assert out.returncode == 0, out.stderr
    assert "left out: runs/ checkpoints" in out.stdout and "peak memory" in out.stdout
    assert arc.stat().st_mode & 0o777 == 0o600
    names = tarfile.open(arc).getnames()
    assert "runs/me-voice-run/state.json" in names and not any("checkpoints" in n for n in names)
    assert "memory/keyword.sqlite3" in names  # the app was not running: memory taken under its lock

    new = tmp_path / "restored"
    out = run_home(tmp_path / "unused", "restore", str(arc), "--vault", str(new))
    assert out.returncode == 0, out.stderr
    want = {k: v for k, v in _tree(vault.root).items() if "checkpoints" not in k}
    assert _tree(new) == want
    for p in new.rglob("*"):
        assert p.stat().st_mode & 0o777 == (0o700 if p.is_dir() else 0o600), p
    with MemoryStore.open(Vault.open(new), embedder) as store:
        assert {q: [h.id for h in store.search(q, k=3)] for q in queries} == hits
    assert all(hits.values()) and sum(ident in hits[q] for q, ident in queries.items()) >= len(queries) // 2
    doc_old, doc_new = run_home(vault.root, "doctor"), run_home(new, "doctor")
    assert doc_new.returncode == doc_old.returncode == 0, doc_old.stdout + doc_old.stderr
    same = [re.sub(r"\d+\.\d+ s", "T", d.stdout.replace(str(root), "V")) for d, root in ((doc_new, new), (doc_old, vault.root))]
    assert same[0] == same[1]

    arc2 = tmp_path / "b2.tar.gz"
    out = run_home(vault.root, "backup", str(arc2), "--with-runs", "--no-adapters")
    names = tarfile.open(arc2).getnames()
    assert any("checkpoints" in n for n in names) and not any(n.startswith("adapters/") for n in names)


def test_backup_while_the_app_runs_holds_whole_lines_and_memory_is_reindexed(built, tmp_path, embedder):
    """The app owns the memory store and a thread appends turns: the logs come back whole, memory is left out
    (it cannot be copied consistently while ChromaDB writes it) and `home memory reindex` gives the same hits."""
    from vault.backup import backup
    from vault.restore import restore

    vault, queries, hits = built
    log, stop, wrote = ConversationLog.create(vault, "live"), threading.Event(), []

    def writing() -> None:
        while not stop.is_set():
            wrote.append(log.append({"role": "user", "user": "me", "persona": "sage",
                                     "text": f"turn {len(wrote)} " + "long words " * 400}))

    with MemoryStore.open(vault, embedder):
        t = threading.Thread(target=writing)
        t.start()
        try:
            while len(wrote) < 20:
                time.sleep(0.01)  # not a bare spin: it would take the GIL from the writer it waits on
            rep = backup(vault, tmp_path / "live.tar.gz")
        finally:
            stop.set()
            t.join()
    assert any("memory/" in w and "reindex" in w for w in rep.left_out)
    assert not any(n.startswith("memory/") for n in tarfile.open(tmp_path / "live.tar.gz").getnames())
    restore(tmp_path / "live.tar.gz", tmp_path / "r")
    raw = (tmp_path / "r" / "logs" / "live.jsonl").read_bytes()
    assert raw.endswith(b"\n") and all(json.loads(line) for line in raw.splitlines())
    got = read_log(tmp_path / "r" / "logs" / "live.jsonl").records
    assert len(got) >= 20 and [r["id"] for r in got] == [r["id"] for r in wrote[:len(got)]]

    (tmp_path / "r" / "logs" / "live.jsonl").unlink()  # the turns written after the original was indexed
    assert run_home(tmp_path / "r", "memory", "reindex").returncode == 0
    with MemoryStore.open(Vault.open(tmp_path / "r"), embedder) as store:
        assert {q: [h.id for h in store.search(q, k=3)] for q in queries} == hits


def _refused(arc: Path, tmp_path: Path, target: Path | None = None) -> str:
    target = target or tmp_path / "new"
    out = run_home(tmp_path / "unused", "restore", str(arc), "--vault", str(target))
    assert out.returncode != 0
    assert not target.exists() or not any(target.iterdir())
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]  # no temp left
    return one_error_line(out)


def test_corrupt_truncated_unsafe_or_nonempty_is_refused_with_nothing_written(built, tmp_path):
    from vault.backup import backup

    vault = built[0]
    arc = tmp_path / "b.tar.gz"
    backup(vault, arc)
    data = arc.read_bytes()
    raw = gzip.decompress(data)
    # a byte flipped inside a member's content: gzip's CRC or the member's sha256 catches it
    i = raw.index(b"Porto")
    flipped = tmp_path / "flipped.tar.gz"
    flipped.write_bytes(gzip.compress(raw[:i] + b"Q" + raw[i + 1:]))
    line = _refused(flipped, tmp_path)
    assert str(flipped) in line and "sha256" in line
    bad_gz = tmp_path / "badgz.tar.gz"
    bad_gz.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:])
    line = _refused(bad_gz, tmp_path)
    assert str(bad_gz) in line and ("corrupt" in line or "sha256" in line)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    line = _refused(cut, tmp_path)
    assert str(cut) in line and "member" in line

    for name, kind in (("../escape.txt", tarfile.REGTYPE), ("/etc/x", tarfile.REGTYPE), ("logs/l", tarfile.SYMTYPE)):
        evil = tmp_path / "evil.tar.gz"
        with tarfile.open(evil, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
        line = _refused(evil, tmp_path)
        assert name in line and ("unsafe" in line or "regular file" in line)
        assert not (tmp_path / "escape.txt").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    out = run_home(tmp_path / "unused", "restore", str(arc), "--vault", str(busy))
    assert out.returncode == 2 and str(busy) in one_error_line(out) and "not empty" in one_error_line(out)
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
