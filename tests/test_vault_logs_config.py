"""vault.logs and vault.config: per-turn durable records, torn lines, settings errors with file:field."""

from __future__ import annotations

import json

import pytest

from vault.config import Config, load_config, parse_config
from vault.errors import ConfigError, LogError
from vault.layout import Vault
from vault.logs import ConversationLog, list_sessions, new_session_id, read_log


def test_records_are_numbered_stamped_and_one_line_each(tmp_path):
    v = Vault.open(tmp_path / "v")
    log = ConversationLog.create(v)
    a = log.append({"role": "user", "text": "hi\nthere"})
    b = log.append({"role": "assistant", "text": "hello"})
    assert (a["turn"], b["turn"]) == (1, 2) and a["id"] == f"{log.session}:1" and a["v"] == 1
    lines = log.path.read_text().splitlines()
    assert [json.loads(x)["text"] for x in lines] == ["hi\nthere", "hello"]
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"


def test_torn_last_line_is_reported_and_continuing_starts_a_fresh_line(tmp_path):
    v = Vault.open(tmp_path / "v")
    log = ConversationLog.create(v)
    log.append({"role": "user", "text": "one"})
    with open(log.path, "ab") as fh:
        fh.write(b'{"role": "assistant", "te')  # power cut mid-write
    read = read_log(log.path)
    assert [r["text"] for r in read.records] == ["one"]
    assert read.problems == [f"{log.path}:2: torn last line (interrupted write)"]
    again = ConversationLog.open(v, log.session)
    rec = again.append({"role": "user", "text": "two"})
    assert rec["turn"] == 2
    assert [r["text"] for r in read_log(log.path).records] == ["one", "two"]


def test_sessions_sort_newest_first_and_bad_ids_are_refused(tmp_path):
    v = Vault.open(tmp_path / "v")
    ids = []
    for _ in range(3):
        log = ConversationLog.create(v)
        log.append({"role": "user", "text": "x"})
        ids.append(log.session)
    assert sorted(ids) == ids and len(set(ids)) == 3 and new_session_id() > ids[-1]
    assert list_sessions(v)[0].id == ids[-1]
    with pytest.raises(LogError, match="no session 'nope'"):
        ConversationLog.open(v, "nope")
    with pytest.raises(LogError, match="only lowercase"):
        ConversationLog.open(v, "../../etc")


def test_config_default_is_written_once_and_parses(tmp_path):
    v = Vault.open(tmp_path / "v")
    cfg = load_config(v)
    assert isinstance(cfg, Config) and cfg.context.n_ctx == 4096 and cfg.generation.seed == -1
    assert oct(v.config_path.stat().st_mode & 0o777) == "0o600"
    v.config_path.write_text(v.config_path.read_text().replace('persona = ""', 'persona = "sage"'))
    assert load_config(v).persona == "sage"  # never rewritten


@pytest.mark.parametrize("text, message", [
    ("user = \n", "config.toml: invalid TOML: "),
    ("[generation]\ntemperature = \"warm\"\n", "config.toml: generation.temperature: expected a number, got 'warm'"),
    ("[generation]\ntemprature = 1\n", "config.toml: generation.temprature: unknown setting"),
    ("[context]\nn_ctx = 10\n", "config.toml: context.n_ctx: expected at least 256"),
    ("user = 3\n", "config.toml: user: expected a string, got 3"),
    ("colour = 1\n", "config.toml: colour: unknown setting"),
    ("[context]\ngpu_layers = -2\n", "config.toml: context.gpu_layers: expected -1 (all) or a number of layers >= 0, got -2 (line 2)"),
    ("[context]\n\ngpu_layers = \"all\"  # on the GPU\n", "config.toml: context.gpu_layers: expected a whole number, got 'all' (line 3)"),
    ("[generation]\ntemperature = 1\n[context]\nn_ctx = 10\n", "context.n_ctx: expected at least 256, got 10 (line 4)"),
    ("[backend]\nurl = \"gpu-box:8080\"\n", "config.toml: backend.url: expected http://HOST:PORT or \"\", got 'gpu-box:8080' (line 2)"),
    ("[backend]\ntimeout = 0\n", "config.toml: backend.timeout: expected a number of seconds > 0, got 0.0 (line 2)"),
    ("[backend]\nkey = \"x\"\n", "config.toml: backend.key: unknown setting (known: url, api_key, timeout, kind)"),
    ("[backend]\nkind = \"ollama\"\n", "config.toml: backend.kind: expected one of auto, llama-server, vllm, got 'ollama' (line 2)"),
])
def test_bad_config_names_file_and_field(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "config.toml")
    assert message in str(err.value)


def test_invalid_toml_names_the_line():
    with pytest.raises(ConfigError, match=r"line 2"):
        parse_config('user = "me"\nmodel = \n', "config.toml")
    assert parse_config("[generation]\ntemperature = 1\n").generation.temperature == 1.0


def test_backend_defaults_to_in_process_and_takes_a_server_url(tmp_path):
    v = Vault.open(tmp_path / "v")
    assert load_config(v).backend.url == ""
    assert "[backend]" in v.config_path.read_text()
    cfg = parse_config('[backend]\nurl = "http://gpu-box:8080"\napi_key = "k"\ntimeout = 30\n')
    assert (cfg.backend.url, cfg.backend.api_key, cfg.backend.timeout) == ("http://gpu-box:8080", "k", 30.0)
    assert cfg.backend.kind == "auto" and parse_config('[backend]\nkind = "vllm"\n').backend.kind == "vllm"


def test_gpu_layers_setting_defaults_to_all_and_old_configs_keep_working(tmp_path):
    v = Vault.open(tmp_path / "v")
    assert load_config(v).context.gpu_layers == -1
    assert "gpu_layers = -1" in v.config_path.read_text()  # the commented default mentions it
    assert parse_config("[context]\nn_ctx = 2048\n").context.gpu_layers == -1  # written before the field
    assert parse_config("[context]\ngpu_layers = 0\n").context.gpu_layers == 0
    assert parse_config("[context]\ngpu_layers = 20\n").context.gpu_layers == 20


def test_two_writers_of_one_session_never_share_a_turn_number(tmp_path):
    """`home ask --continue` while the app (or another ask) writes the same session: each opened the log
    and counted on from the turn it saw. Both logged turn 3 (found by bench/reliability/two_procs.py: the
    repeated id then made every memory catch-up fail with chromadb's DuplicateIDError)."""
    import threading

    vault = Vault.open(tmp_path / "v")
    log = ConversationLog.create(vault, "s1")
    log.append({"role": "user", "text": "hello"})
    log.append({"role": "assistant", "text": "hi"})
    a, b = ConversationLog.open(vault, "s1"), ConversationLog.open(vault, "s1")
    assert [a.append({"role": "user", "text": "from a"})["turn"], b.append({"role": "user", "text": "from b"})["turn"],
            a.append({"role": "assistant", "text": "to a"})["turn"]] == [3, 4, 5]

    def write(who: str) -> None:
        mine = ConversationLog.open(vault, "s1")
        for n in range(40):
            mine.append({"role": "user", "text": f"{who} {n}"})

    threads = [threading.Thread(target=write, args=(w,)) for w in "xy"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = read_log(log.path).records
    assert [r["turn"] for r in records] == list(range(1, 86))
    assert len({r["id"] for r in records}) == 85
