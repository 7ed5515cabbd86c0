"""Home on a llama-server: the app chatting through the session's server with F-key personas, and
`home serve` (start with the vault's adapters, restart for a new one, Ctrl-C)."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import threading
import time

from llm.gguf_meta import read_model_info
from llm.servers.http import Http
from tests.cli_helpers import popen_home, run_home
from tests.servers import SERVER_KEY
from tests.test_app import drive, make_app, records, say, wait_ready
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore


def register(vault: Vault, ident: str, source, model_path) -> None:
    """`source` copied to `adapters/<ident>/adapter.gguf` and registered for the default model."""
    target = vault.adapters_dir / ident / "adapter.gguf"
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry(id=ident, name=ident, file=f"adapters/{ident}/adapter.gguf", kind="style",
                                   base={"fingerprint": read_model_info(model_path).fingerprint}))


def test_the_app_chats_through_the_server_and_f_keys_switch_persona(tmp_path, model_path, llama_server,
                                                                     server_adapters, monkeypatch):
    monkeypatch.setenv("HOME_API_KEY", SERVER_KEY)
    vault = Vault.open(tmp_path / "v")
    register(vault, "a", server_adapters["a"], model_path)
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Ada", "extensions": {"home": {"hotkey": "f6", "adapters": [{"id": "a", "scale": 1.0}]}}}}
    (vault.personas_dir / "ada.json").write_text(json.dumps(card))
    app = make_app(vault.root, backend=llama_server.url)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        assert app.session.engine.backend == f"llama-server {llama_server.url}"
        await pilot.press("f6")
        assert app.session.persona.id == "ada"
        await say(pilot, app, "hi")
        await pilot.press("f1")
        assert app.session.persona is None
        await say(pilot, app, "hi")

    drive(app, scenario)
    replies = [r for r in records(vault.root) if r["role"] == "assistant"]
    assert [r["persona"] for r in replies] == ["ada", None]
    assert [r["adapters"] for r in replies] == [[{"id": "a", "scale": 1.0}], []]
    assert {r["backend"] for r in replies} == {f"llama-server {llama_server.url}"}
    assert all(r["text"].strip() and not r["partial"] for r in replies)


def _lines(proc) -> queue.Queue:
    out: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [out.put(line) for line in proc.stdout], daemon=True).start()
    return out


def _wait_line(out: queue.Queue, start: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = out.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line.startswith(start):
            return line
    raise AssertionError(f"no line starting {start!r} within {timeout} s")


def test_home_serve_holds_the_vaults_adapters_restarts_for_a_new_one_and_stops_on_ctrl_c(
        tmp_path, model_path, server_adapters, monkeypatch):
    from tests.servers import server_binary

    monkeypatch.setenv("HOME_LLAMA_SERVER", str(server_binary()))
    vault = Vault.open(tmp_path / "v")
    register(vault, "a", server_adapters["a"], model_path)
    proc = popen_home(vault.root, "serve", "--port", "0", "--threads", "1", "--ctx", "512")
    try:
        out = _lines(proc)
        url = _wait_line(out, "serving at").split()[2]
        assert url.startswith("http://127.0.0.1:")
        held = Http(url).get("/lora-adapters")
        assert [a["path"].split("/")[-2:] for a in held] == [["a", "adapter.gguf"]]
        asked = run_home(vault.root, "--backend", url, "ask", "hi", "--adapter", "a", "--max-tokens", "4")
        assert asked.returncode == 0, asked.stderr
        register(vault, "b", server_adapters["b"], model_path)  # as `home train` registers one
        _wait_line(out, "adapters changed: restarting with 2")
        _wait_line(out, "serving at")
        assert [a["path"].split("/")[-2] for a in Http(url).get("/lora-adapters")] == ["a", "b"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert _wait_line(out, "stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
    (reply,) = [r for r in records(vault.root) if r["role"] == "assistant"]
    assert reply["backend"] == f"llama-server {url}" and reply["adapters"] == [{"id": "a", "scale": 1.0}]


def test_ask_through_a_server_that_is_not_there_is_one_line(tmp_path):
    from llm.servers.process import free_port
    from tests.cli_helpers import one_error_line

    url = f"http://127.0.0.1:{free_port()}"
    proc = run_home(tmp_path / "v", "--backend", url, "ask", "hello")
    assert proc.returncode == 1
    assert one_error_line(proc) == (f"home: error: {url}: connection refused (is the server running? "
                                    "`home serve` starts one)")


def _children(pid: int) -> list[int]:
    from pathlib import Path

    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def _gone(pid: int, timeout: float = 15) -> bool:
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True  # exited; its reaper (init here) has not waited yet
        except (FileNotFoundError, IndexError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_home_serve_stopped_by_sigterm_or_killed_takes_its_llama_server_along(tmp_path, monkeypatch):
    """A `home serve` ended with SIGTERM (a closed terminal's SIGHUP, a service manager) stops its server
    cleanly as Ctrl-C does; one killed with SIGKILL takes it along too (PR_SET_PDEATHSIG). Before, both
    left llama-server running with the port and the model's memory."""
    from tests.servers import server_binary

    monkeypatch.setenv("HOME_LLAMA_SERVER", str(server_binary()))
    vault = Vault.open(tmp_path / "v")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = popen_home(vault.root, "serve", "--port", "0", "--threads", "1", "--ctx", "256")
        server = None
        try:
            out = _lines(proc)
            url = _wait_line(out, "serving at").split()[2]
            (server,) = _children(proc.pid)
            assert Http(url).get("/health")
            proc.send_signal(sig)
            code = proc.wait(30)
            assert _gone(server), f"llama-server {server} outlived `home serve` ended by {sig.name}"
            if sig == signal.SIGTERM:
                assert code == 0 and _wait_line(out, "stopped"), code
                assert not (vault.root / "serve" / "server.json").exists()
        finally:
            if proc.poll() is None:
                proc.kill()
            if server is not None and not _gone(server, 0):
                import os

                os.kill(server, signal.SIGKILL)
