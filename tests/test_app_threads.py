"""The app's threads against each other, without the screen: the UI thread's stack choices, the watcher's
adapter reloads, the turn worker, and the background workers' lazy starts. Real engine and model."""

from __future__ import annotations

import random
import sys
import threading

import pytest

from home.app import AppOptions, HomeApp
from home.app.gestalt_jobs import GestaltJobs, LogTail
from home.app.session import ChatSession
from home.stack import StackSpec
from llm.errors import AdapterError
from tests.loras import make_random_lora
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.manifest import AdapterEntry, ManifestStore


def one_adapter_vault(root, model_path) -> Vault:
    """A vault with one registered adapter, `a` (kind style, no tasks or tones: the router never picks it)."""
    from llm.gguf_meta import read_model_info

    vault = Vault.open(root)
    (vault.adapters_dir / "a").mkdir()
    for name in ("a.gguf", "a2.gguf"):  # the same adapter under two files: a "replaced" file reloads it
        make_random_lora(model_path, vault.adapters_dir / "a" / name, rank=4, seed=1)
    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry(id="a", name="a", file="adapters/a/a.gguf", kind="style",
                                   base={"fingerprint": read_model_info(model_path).fingerprint}))
    return vault


def session_for(vault: Vault, model_path) -> ChatSession:
    session = ChatSession(AppOptions(vault=vault.root, model=model_path, user="me", max_tokens=2, n_ctx=1024,
                                     temperature=0.0, seed=1))
    session.load()
    return session


@pytest.fixture
def fast_switches():
    """Switch threads every microsecond, so check-then-act windows of a few bytecodes are hit."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_a_reload_waits_for_the_turn_so_no_turn_loses_its_adapter(tmp_path, model_path):
    """The watcher reloads `a` (its file replaced, as the trainer does) while turns on a manual stack
    [a] run: each reload waits for the turn in progress, so every turn runs with `a` and says so."""
    vault = one_adapter_vault(tmp_path / "v", model_path)
    session = session_for(vault, model_path)
    app = HomeApp(AppOptions(vault=vault.root))
    app.session = session
    try:
        session.set_manual([StackSpec("a")])
        session.apply_stack()
        stop, store = threading.Event(), ManifestStore(vault)

        def watcher() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                with store.update() as m:
                    m.adapters["a"].file = f"adapters/a/{'a2' if n % 2 else 'a'}.gguf"
                app.sync_adapters(announce=False)  # what the watcher's callback runs

        thread = threading.Thread(target=watcher)
        thread.start()
        errors: list[str] = []
        try:
            for _ in range(8):
                try:
                    "".join(session.send("Tell me about the sea.", threading.Event()))
                except AdapterError as exc:
                    errors.append(str(exc))
        finally:
            stop.set()
            thread.join()
        replies = [r for r in session.conversation.log.records() if r["role"] == "assistant"]
        assert not errors, f"{len(errors)} turns lost their adapter to a reload: {errors[0]}"
        assert len(replies) == 8 and all(r["adapters"] == [{"id": "a", "scale": 1.0}] for r in replies)
    finally:
        session.engine.close()


def test_a_manual_pick_made_while_the_router_decides_is_kept(tmp_path, model_path):
    """The turn worker writes the router's stack; a pick in the palette landing meanwhile must win (it was
    overwritten: the next turns ran on the router's stack while the status bar said manual)."""
    vault = one_adapter_vault(tmp_path / "v", model_path)
    session = session_for(vault, model_path)
    try:
        session.open_memory()
        assert session.router is not None, session.router_note
        rng, lost = random.Random(1), 0
        for _ in range(10):
            session.set_manual(None)  # automatic: the router picks (here: the base model)
            turn = threading.Thread(target=lambda: "".join(session.send("Plan my week, please.", threading.Event())))
            turn.start()
            threading.Event().wait(rng.uniform(0.0, 0.03))
            session.set_manual([StackSpec("a")])  # the palette, mid-routing or not
            turn.join()
            lost += session.stack != session.compute_stack()
        assert lost == 0, f"{lost} of 10 manual picks were overwritten by the router's stack"
    finally:
        session.close_memory()
        session.engine.close()


def test_jobs_put_from_many_threads_start_one_worker(tmp_path, fast_switches):
    session = ChatSession(AppOptions(vault=tmp_path / "v", user="me"))  # no model: jobs only re-sync
    extra = 0
    for _ in range(30):
        jobs = GestaltJobs(session)
        before = sum(t.name == "home-gestalts" for t in threading.enumerate())
        gate = threading.Barrier(8)

        def put(jobs=jobs, gate=gate) -> None:
            gate.wait()
            jobs.files_changed()

        putters = [threading.Thread(target=put) for _ in range(8)]
        for t in putters:
            t.start()
        for t in putters:
            t.join()
        extra += sum(t.name == "home-gestalts" for t in threading.enumerate()) - before - 1
        for _ in range(8):
            jobs._jobs.put(None)  # ends every worker this round started, however many
        jobs.stop()
    assert extra == 0, f"{extra} extra gestalt workers started"


def test_index_soon_from_many_threads_starts_one_indexer(tmp_path, fast_switches):
    """The turn worker and the loader both ask for a pass; the first asks start the indexer thread."""
    from home.recall import Recall
    from vault.config import MemorySettings

    owner = Recall.open(Vault.open(tmp_path / "v"), MemorySettings())
    assert owner.store is not None
    try:
        extra = 0
        for _ in range(30):
            recall = Recall(owner.vault, owner.store, owner.settings)  # a fresh one: no indexer yet
            before = sum(t.name == "home-memory-indexer" for t in threading.enumerate())
            gate = threading.Barrier(8)

            def ask(gate=gate, recall=recall) -> None:
                gate.wait()
                recall.index_soon()

            askers = [threading.Thread(target=ask) for _ in range(8)]
            for t in askers:
                t.start()
            for t in askers:
                t.join()
            extra += sum(t.name == "home-memory-indexer" for t in threading.enumerate()) - before - 1
            recall.wait_idle(30)
            recall.store = None  # `owner` releases the shared store
            recall.close()  # every indexer it started sees the stop
        assert extra == 0, f"{extra} extra indexer threads started"
    finally:
        owner.close()


def test_the_every_n_check_reads_only_new_records_off_the_ui_thread(tmp_path, model_path):
    """A resumed session of 2,000 records: after each reply the check parses only the records added
    since the last one, on the worker (the UI thread's after_turn reads nothing)."""
    vault = Vault.open(tmp_path / "v")
    log = ConversationLog.create(vault)
    for i in range(1000):
        log.append({"user": "me", "role": "user", "text": f"What is {i}?"})
        log.append({"user": "me", "role": "assistant", "text": "No idea."})
    session = session_for(vault, model_path)
    session.new_conversation(log.session)
    jobs = GestaltJobs(session)
    jobs.schedule.settings = type(jobs.schedule.settings)(enabled=True, every_n_turns=10_000)
    opened: list[int] = []
    ui = threading.get_ident()

    def audit(event: str, args: tuple) -> None:
        if event == "open" and str(args[0]) == str(log.path) and threading.get_ident() == ui and not done:
            opened.append(1)

    done = False
    sys.addaudithook(audit)
    try:
        for turn in range(3):
            def reply(turn=turn) -> None:  # the turn worker logs the exchange
                session.conversation.log.append({"user": "me", "role": "user", "text": f"I like tea {turn}."})
                session.conversation.log.append({"user": "me", "role": "assistant", "text": "Nice."})

            worker = threading.Thread(target=reply)
            worker.start()
            worker.join()
            jobs.after_turn()
            assert jobs.wait_idle(30)
    finally:
        done = True
        jobs.stop()
        session.engine.close()
    assert not opened, "the UI thread read the log"
    assert jobs.tail is not None and jobs.tail.read_records == 2000 + 6  # each record parsed once
    assert len([r for r in jobs.tail.records if r["role"] == "user"]) == 1003  # none distilled yet


def test_log_tail_waits_for_a_whole_line_and_starts_over_on_a_rewrite(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"turn": 1, "role": "user"}\n{"turn": 2, "ro')
    tail = LogTail("s", path)
    assert [r["turn"] for r in tail.read_new()] == [1]
    with open(path, "ab") as fh:
        fh.write(b'le": "assistant"}\n')
    assert [r["turn"] for r in tail.read_new()] == [1, 2]
    assert [r["turn"] for r in tail.read_new(after_turn=1)] == [2]
    path.write_bytes(b'{"turn": 1, "role": "user"}\n')  # rewritten shorter (a forget): read again
    assert [r["turn"] for r in tail.read_new()] == [1] and tail.read_records == 3


def test_a_failed_background_indexing_pass_is_shown(tmp_path):
    """The indexer runs on its own thread; a pass that fails (here a log it cannot read) is a
    notification in the chat, not a line nobody reads."""
    from tests.test_app import drive, make_app, wait_ready

    vault = Vault.open(tmp_path / "v")
    (vault.logs_dir / "20200101-000000-000000-dead.jsonl").mkdir()  # a "log" that cannot be read
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)

    drive(app, scenario)
    shown = [f"{n.title}: {n.message}" for n in app._notifications]
    assert any(s.startswith("Memory: memory indexing failed") and "dead.jsonl" in s for s in shown), shown


def test_a_callback_that_fails_does_not_end_the_indexer(tmp_path):
    """The indexer tells the app after each pass; while the app closes that call can raise (its screens
    are gone). The indexer lived on its thread alone: it died, and no later pass ever ran."""
    from home.recall import Recall
    from vault.config import MemorySettings

    recall = Recall.open(Vault.open(tmp_path / "v"), MemorySettings())
    told: list[int] = []

    def on_indexed(count: int) -> None:
        told.append(count)
        if len(told) == 1:
            raise RuntimeError("no screens on stack")

    recall.on_indexed = on_indexed
    try:
        for _ in range(2):
            recall.index_soon()
            assert recall.wait_idle(30), "the indexer is gone"
        assert len(told) == 2
    finally:
        recall.close()


def test_the_chat_is_none_once_the_screens_are_gone(tmp_path):
    """Workers call back (`_refresh_status`) while the app closes; `chat` must not raise then."""
    app = HomeApp(AppOptions(vault=tmp_path / "v"))  # not running: no screen at all, as at the very end
    assert app.chat is None
    app._refresh_status()
