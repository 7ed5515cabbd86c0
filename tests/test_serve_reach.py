"""`home serve` holds the adapters in reach, not every version ever trained: a voice retrained three
times starts the server with its newest version only; a turn that names the oldest has the vault's own
`home serve` restart with it between turns (the reply is made with it), and a server Home did not start
refuses it in one line saying what to do. A real llama-server on 127.0.0.1, the default model."""

from __future__ import annotations

import shutil
import signal

from llm.gguf_meta import read_model_info
from llm.servers.http import Http
from tests.cli_helpers import one_error_line, popen_home, run_home
from tests.servers import SERVER_KEY
from tests.test_app import records
from tests.test_app_server import _lines, _wait_line
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore


def voice_versions(vault: Vault, sources: list, model_path) -> list[str]:
    """`me-voice-1` … `me-voice-N` (one per source file), the user's voice the newest, as retrainings leave it."""
    fingerprint = read_model_info(model_path).fingerprint
    ids = [f"me-voice-{v}" for v in range(1, len(sources) + 1)]
    with ManifestStore(vault).update() as m:
        for v, (ident, source) in enumerate(zip(ids, sources, strict=True), start=1):
            target = vault.adapters_dir / ident / "adapter.gguf"
            target.parent.mkdir(parents=True)
            shutil.copyfile(source, target)
            m.add_adapter(AdapterEntry(id=ident, name="me-voice", file=f"adapters/{ident}/adapter.gguf",
                                       kind="voice", owner="me", base={"fingerprint": fingerprint},
                                       created=f"2026-01-{v:02d}T00:00:00Z"))
        m.ensure_user("me")["voice_adapter"] = ids[-1]
    return ids


def held(url: str) -> list[str]:
    return [a["path"].split("/")[-2] for a in Http(url).get("/lora-adapters")]


def test_home_serve_starts_with_the_newest_version_and_restarts_for_an_older_one_a_turn_names(
        tmp_path, model_path, server_adapters, monkeypatch):
    from tests.servers import server_binary

    monkeypatch.setenv("HOME_LLAMA_SERVER", str(server_binary()))
    vault = Vault.open(tmp_path / "v")
    ids = voice_versions(vault, [server_adapters[k] for k in ("a", "b", "c")], model_path)
    proc = popen_home(vault.root, "serve", "--port", "0", "--threads", "1", "--ctx", "512")
    try:
        out = _lines(proc)
        assert " with 1 adapter(s) " in _wait_line(out, "starting llama-server")
        url = _wait_line(out, "serving at").split()[2]
        assert held(url) == ["me-voice-3"]
        asked = run_home(vault.root, "--backend", url, "ask", "hi", "--adapter", ids[0], "--max-tokens", "4", timeout=300)
        assert asked.returncode == 0, asked.stderr
        _wait_line(out, "adapters changed: restarting with 2")
        assert held(url) == ["me-voice-1", "me-voice-3"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    (reply,) = [r for r in records(vault.root) if r["role"] == "assistant"]
    assert reply["adapters"] == [{"id": "me-voice-1", "scale": 1.0}] and not reply["partial"]
    assert not (vault.root / "serve" / "server.json").exists()


def test_a_server_home_did_not_start_refuses_an_adapter_it_lacks_in_one_line(
        tmp_path, model_path, llama_server, server_adapters, monkeypatch):
    monkeypatch.setenv("HOME_API_KEY", SERVER_KEY)
    vault = Vault.open(tmp_path / "v")
    voice_versions(vault, [server_adapters["c"]], model_path)  # the session server holds a and b only
    asked = run_home(vault.root, "--backend", llama_server.url, "ask", "hi", "--adapter", "me-voice-1",
                     "--max-tokens", "4")
    assert asked.returncode != 0
    line = one_error_line(asked)
    assert f"adapter 'me-voice-1': the server at {llama_server.url} does not hold it" in line, line
    assert "`home serve --adapter me-voice-1`" in line, line


def test_the_vaults_server_is_known_by_any_name_of_the_loopback(tmp_path):
    """`home --backend http://localhost:PORT` on the vault `home serve` announced as 127.0.0.1:PORT is that
    server (before, the URLs were compared as strings and the older version was refused)."""
    from home.serve_link import announce, serve_dir, served_by_home

    vault = Vault.open(tmp_path / "v")
    serve_dir(vault).mkdir(mode=0o700)
    announce(vault, "http://127.0.0.1:8093")
    for url in ("http://127.0.0.1:8093", "http://localhost:8093/", "http://[::1]:8093", "HTTP://LOCALHOST:8093"):
        assert served_by_home(vault, url), url
    for url in ("http://127.0.0.1:8094", "https://127.0.0.1:8093", "http://gpu-box:8093", "not a url"):
        assert not served_by_home(vault, url), url
