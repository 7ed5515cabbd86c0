"""`home data synth --endpoint`: against a REAL OpenAI-compatible server on loopback — llama-cpp-python's
own server (the `server` extra) serving the default model. Also its failures: a wrong path (HTTP 404), a
closed port, a timeout — each one line naming the URL."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from llm.params import GenParams
from tests.cli_helpers import one_error_line, run_home
from trainer.data.synth import EndpointError
from trainer.data.synth.openai_client import OpenAIGenerator, chat_url
from trainer.data.synth.run import read_jsonl
from vault.layout import Vault
from vault.personas import Persona, save_persona
from vault.sheets import card_data, read_sheet

SHEETS = Path(__file__).parent / "fixtures" / "sheets"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    """`python -m llama_cpp.server` on a free loopback port; yields its base URL (…/v1)."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail(f"llama_cpp.server did not start: {log.read()[-2000:]}")
        time.sleep(0.3)
    yield url
    proc.kill()  # a test server: no state to save, and it may still be generating for a timed-out request
    proc.wait(10)
    log.close()


def test_chat_url_forms():
    assert chat_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_url("https://api.example.com/v1/chat/completions") == "https://api.example.com/v1/chat/completions"


@pytest.mark.slow
def test_synth_through_a_real_openai_compatible_server(tmp_path, server):
    vault = tmp_path / "v"
    sheet = read_sheet(SHEETS / "wren-alder.md")
    save_persona(Vault.open(vault), Persona(sheet.id, card_data(sheet)))
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[counts]\nmain = 2\n[personas]\nwren-alder = "main"\n')
    out = tmp_path / "out"
    proc = run_home(vault, "data", "synth", "--personas", "Wren Alder", "--tiers", str(tiers), "--endpoint",
                    server, "--model", "smollm", "--max-tokens", "40", "--out", str(out), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["generator"] == f"openai:{server}/chat/completions model=smollm"
    assert report["personas"][0]["kept"] == 2
    rows = read_jsonl(out / "all.jsonl")
    assert [r["persona"] for r in rows] == ["wren-alder", "wren-alder"] and all(r["output"] for r in rows)
    assert all(r["generator"].startswith("openai:") for r in rows)

    # the client itself: a seeded request gives the same reply twice (the server honours the seed)
    gen = OpenAIGenerator(server, "smollm", timeout=60)
    msgs = [{"role": "user", "content": "Say hello."}]
    params = GenParams(max_tokens=12, seed=7, temperature=0.8)
    first = gen(msgs, params)
    assert first.text and first.finish_reason in ("stop", "length")
    assert gen(msgs, params).text == first.text


@pytest.mark.slow
def test_endpoint_failures_are_one_line_naming_the_url(tmp_path, server):
    root = server.removesuffix("/v1")
    with pytest.raises(EndpointError) as err:
        OpenAIGenerator(f"{root}/wrong", "smollm", timeout=30)([{"role": "user", "content": "hi"}], GenParams())
    assert str(err.value).startswith(f"{root}/wrong/v1/chat/completions: HTTP 404 Not Found")
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError) as err:
        OpenAIGenerator(closed, "smollm", timeout=5)([{"role": "user", "content": "hi"}], GenParams())
    assert str(err.value) == f"{closed}/chat/completions: cannot connect (Connection refused)"
    with pytest.raises(EndpointError) as err:
        OpenAIGenerator(server, "smollm", timeout=0.05, retries=0)(
            [{"role": "user", "content": "Write a long story."}], GenParams(max_tokens=400))
    assert str(err.value) == f"{server}/chat/completions: no answer within 0.05 s (timed out)"

    # through the CLI: one line on stderr, exit 1, nothing kept
    vault = tmp_path / "v"
    sheet = read_sheet(SHEETS / "wren-alder.md")
    save_persona(Vault.open(vault), Persona(sheet.id, card_data(sheet)))
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[counts]\nmain = 2\n[personas]\nwren-alder = "main"\n')
    proc = run_home(vault, "data", "synth", "--all", "--tiers", str(tiers), "--endpoint", closed, "--model", "m")
    assert proc.returncode == 1
    assert one_error_line(proc) == f"home: error: {closed}/chat/completions: cannot connect (Connection refused)"
    assert read_jsonl(vault / "runs" / "synth" / "personas" / "wren-alder.jsonl") == []
