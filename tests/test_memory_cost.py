"""The cost of memory per turn stays flat as the logs grow (issue 13): after a turn only that session's
log is read (from where the checkpoint left off) and one checkpoint row written; no other log is opened or
stat'd and `index.json` is not rewritten. The start-up distillation backlog stops at its cutoff.

Real ChromaDB and the real embedder; the many logs hold only event records (nothing to embed), written
directly so that building 300 sessions takes no time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from home.distil_schedule import DistilSchedule
from home.recall import Recall
from vault.config import GestaltSettings, MemorySettings
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.memory import MemoryStore, index_logs

N_LOGS = 300


class FileAccess:
    """Which files under `folder` are opened or listed (audit hook) or stat'd (os.stat, wrapped) meanwhile."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder, self.opened, self.statted, self.listed, self.on = str(folder), [], [], [], False
        sys.addaudithook(self._audit)  # cannot be removed: it records only while `on`
        real = os.stat

        def stat(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            if self.on and str(path).startswith(self.folder + os.sep):
                self.statted.append(Path(path).name)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", stat)

    def _audit(self, event: str, args: tuple) -> None:
        if not (self.on and args and isinstance(args[0], str | Path) and str(args[0]).startswith(self.folder)):
            return
        if event == "open":
            self.opened.append(Path(args[0]).name)
        elif event in ("os.listdir", "os.scandir"):  # a directory scan: O(sessions) by itself
            self.listed.append(Path(args[0]).name)

    def __enter__(self) -> FileAccess:
        self.opened.clear()
        self.statted.clear()
        self.listed.clear()
        self.on = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.on = False


def many_logs(vault: Vault, n: int, days_ago: float = 0) -> None:
    """`n` sessions of one event record each (never indexed, never distilled), last written `days_ago`."""
    when = time.time() - days_ago * 86400
    for i in range(n):
        path = vault.logs_dir / f"old-{i:05d}.jsonl"
        path.write_text(json.dumps({"v": 1, "id": f"old-{i:05d}:1", "turn": 1, "role": "event", "event": "persona",
                                    "time": datetime.fromtimestamp(when, UTC).isoformat()}) + "\n")
        os.utime(path, (when, when))



def test_a_turn_reads_only_its_own_log_and_rewrites_no_index_json(tmp_path, embedder, monkeypatch):
    vault = Vault.open(tmp_path / "v")
    many_logs(vault, N_LOGS)
    live = ConversationLog.create(vault, "live")
    live.append({"role": "user", "text": "My sister Ana lives in Porto.", "user": "me"})
    with MemoryStore.open(vault, embedder) as store:
        assert index_logs(vault, store).indexed == 1 and len(store.state["sessions"]) == N_LOGS + 1
        recall = Recall(vault, store, MemorySettings())
        state = vault.memory_dir / "index.json"
        before = state.stat()
        access = FileAccess(vault.logs_dir, monkeypatch)
        for n, text in enumerate(["I'm allergic to peanuts.", "My dog is called Biscuit."], 2):
            live.append({"role": "user", "text": text, "user": "me"})
            size = live.path.stat().st_size
            with access:
                recall.index_soon("live")
                assert recall.wait_idle(60)
            assert store.count() == n and store.get(f"live:{n}").text == text
            assert access.opened == ["live.jsonl"] and set(access.statted) <= {"live.jsonl"}, access.statted
            assert store.state["sessions"]["live"] == {"turn": n, "bytes": size}
        after = state.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten

        # a session another process started meanwhile (`home ask` beside the app) is found by a listing
        other = ConversationLog.create(vault, "asked")
        other.append({"role": "user", "text": "I drive an old blue Honda Civic.", "user": "me"})
        with access:
            recall.index_soon("live")
            assert recall.wait_idle(60)
        assert store.get("asked:1") is not None and sorted(access.opened) == ["asked.jsonl"]
        assert set(access.statted) <= {"live.jsonl", "asked.jsonl"}
        other.path.unlink()  # and one deleted leaves memory
        with access:
            recall.index_soon("live")
            assert recall.wait_idle(60)
        assert store.get("asked:1") is None and access.opened == []
        recall.close()


def test_the_backlog_scan_stops_at_the_cutoff(tmp_path, monkeypatch):
    vault = Vault.open(tmp_path / "v")
    many_logs(vault, N_LOGS, days_ago=60)  # older than the 30-day backlog: none of these is opened
    recent = []
    for name in ("r1", "r2"):
        log = ConversationLog.create(vault, name)
        recent.append(log.append({"role": "user", "text": "I live in Lisbon with my partner Sam.", "user": "me"}))
    schedule = DistilSchedule(vault, GestaltSettings())
    schedule.mark("r2", recent[1]["turn"])  # r2 was read to its end: only its last record is looked at
    access = FileAccess(vault.logs_dir, monkeypatch)
    with access:
        work = schedule.backlog("me")
    assert [s for s, _ in work] == ["r1"]
    assert sorted(set(access.opened)) == ["r1.jsonl", "r2.jsonl"] and access.opened.count("r2.jsonl") == 1
    old = datetime.now(UTC) - timedelta(days=40)
    os.utime(vault.logs_dir / "r1.jsonl", (old.timestamp(), old.timestamp()))
    with access:
        assert schedule.backlog("me") == []
    assert access.opened == ["r2.jsonl"]


def test_a_whole_turn_touches_no_other_log(tmp_path, engine, embedder, monkeypatch):
    """The turn path end to end (log the message, embed, search, prompt, generate, log the reply, index it):
    at 300 sessions as at 3, the only log it opens or stats is its own, and it lists neither the logs nor the
    gestalts folder."""
    from home.turn import Conversation
    from llm.params import GenParams

    vault = Vault.open(tmp_path / "v")
    many_logs(vault, N_LOGS)
    ConversationLog.create(vault, "before").append({"role": "user", "text": "My sister Ana lives in Porto.",
                                                    "user": "me"})
    with MemoryStore.open(vault, embedder) as store:
        recall = Recall(vault, store, MemorySettings())
        recall.index_soon()  # start-up: the one full pass
        assert recall.wait_idle(60)
        engine.set_adapters([])
        chat = Conversation(engine, ConversationLog.create(vault, "live"), "me", recall=recall)
        params = GenParams(max_tokens=2, temperature=0.0)
        list(chat.send("Hello, I'm planning a trip this weekend.", params, []))  # creates its log: one listing
        assert recall.wait_idle(60)
        access = FileAccess(vault.root, monkeypatch)
        for text in ("Where does my sister live?", "What should I pack for Porto?"):
            with access:
                list(chat.send(text, params, []))
                assert recall.wait_idle(60)
            assert chat.last.record["timings"]["memory_ms"] is not None  # it searched
            logs = [n for n in access.opened + access.statted if n.endswith(".jsonl")]
            # (the memory folder's few files are walked for their modes after a write: not one per session)
            assert set(logs) == {"live.jsonl"} and not {"logs", "gestalts"} & set(access.listed), (logs, access.listed)
        assert "before:1" in chat.last.record["memory_ids"] or "before:1" in str(chat.history)
        recall.close()


def test_a_turn_embeds_once_for_the_router_and_memory(tmp_path, model_path, monkeypatch):
    """The app's turn embeds the message and what memory searches for it ("Where do I live?" is searched
    blended with "i live") in one MiniLM batch, which the router shares: a second call cost ~8 ms of the
    turn's own work (one short text costs about what three do: reading the weights dominates)."""
    import threading

    from home.app.session import AppOptions, ChatSession

    vault = Vault.open(tmp_path / "v")
    ConversationLog.create(vault, "before").append({"role": "user", "text": "I live in Lisbon with Sam.", "user": "me"})
    session = ChatSession(AppOptions(vault=vault.root, model=model_path, user="me", max_tokens=2, n_ctx=1024,
                                     temperature=0.0, seed=1))
    session.load()
    try:
        session.open_memory()
        assert session.router is not None and session.recall is not None
        assert session.recall.wait_idle(60)
        embedder, turn, calls = session.router.embedder, threading.current_thread(), []
        real = embedder.embed
        monkeypatch.setattr(embedder, "embed", lambda texts: (threading.current_thread() is turn
                                                              and calls.append(list(texts))) or real(texts))
        "".join(session.send("Where do I live?", threading.Event()))
        assert calls == [["Where do I live?", "i live"]]  # not [[message], [statement]]
        assert session.conversation.last.record["memory_ids"] == ["before:1"]
    finally:
        session.close_memory()
        session.engine.close()


def test_the_memory_block_is_counted_once_when_every_line_fits():
    """Fitting the block used to count the growing block once per hit (~2 ms of a turn with llama.cpp's
    tokenizer); when every line fits, one count of the whole block says so. Over budget, lines are still
    chosen hit by hit in rank order, a long one skipped and shorter ones after it kept."""
    from vault.retrieval import Hit, fit_memory

    hits = [Hit(f"s:{i}", f"Fact number {i} about my week at the office.", 1.0 - i / 10, f"2026-01-0{i + 1}T09:00:00Z",
                "user", "s") for i in range(5)]
    hits[2] = Hit("s:2", "long " * 80, 0.8, "2026-01-03T09:00:00Z", "user", "s")
    calls: list[str] = []
    count = lambda text: calls.append(text) or len(text.split())  # noqa: E731 - a stand-in tokenizer

    block, used = fit_memory(hits, 500, count)
    assert used == hits and len(calls) == 1
    whole = len(block.split())
    calls.clear()
    block, used = fit_memory(hits, whole - 60, count)  # the long line no longer fits; the others do
    assert len(calls) == 1 + 5  # the whole, then hit by hit
    assert used == [hits[0], hits[1], hits[3], hits[4]] and len(block.split()) <= whole - 60
    assert "long long" not in block


def test_home_ask_embeds_once_for_the_router_and_memory(tmp_path, model_path, monkeypatch, capsys):
    """`home ask` as the app: the router's embedding and memory's ("Where do I live?" with "i live") in one
    batch. It opened memory after the router had embedded the message, and paid a second call."""
    from home.cli import main
    from vault.bert_numpy import NumpyBert
    from vault.bert_onnx import OnnxBert
    from vault.embedder import SentenceTransformerEmbedder

    vault = Vault.open(tmp_path / "v")
    ConversationLog.create(vault, "before").append({"role": "user", "text": "I live in Lisbon with Sam.", "user": "me"})
    monkeypatch.setenv("HOME_VAULT", str(vault.root))
    calls = []
    for cls in (NumpyBert, OnnxBert, SentenceTransformerEmbedder):  # whichever runtime loads the MiniLM here
        monkeypatch.setattr(cls, "embed", lambda self, texts, real=cls.embed: calls.append(list(texts))
                            or real(self, texts))
    assert main(["--model", str(model_path), "--user", "me", "ask", "--max-tokens", "2", "--json",
                 "Where do I live?"]) == 0
    asked = [c for c in calls if "i live" in c or c == ["Where do I live?"]]
    assert asked == [["Where do I live?", "i live"]], calls  # not [[message], [statement]]
    assert json.loads(capsys.readouterr().out)["memory_ids"] == ["before:1"]
