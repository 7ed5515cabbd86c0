"""What a brand-new user hits at the command line, with a near-empty vault: each refusal one line naming
what and where, a non-zero exit, and a check that agrees with the run it checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli_helpers import REPO, home_env, one_error_line, run_home
from vault.layout import Vault
from vault.logs import ConversationLog


def log_user_turns(root, n: int, topic: str = "plans") -> Vault:
    """One session in which the user "me" wrote `n` messages (each one training example for a voice)."""
    vault = Vault.open(root)
    log = ConversationLog.create(vault)
    for i in range(n):
        log.append({"user": "me", "persona": None, "role": "user", "text": f"my message number {i}, about {topic}"})
        log.append({"user": "me", "persona": None, "role": "assistant", "text": f"reply {i}"})
    return vault


def test_train_check_refuses_what_the_run_would_refuse(tmp_path):
    """`home train --check` passed three examples (exit 0) and `home train` then refused them after
    starting a worker: the check now applies the run's minimum of four."""
    vault = log_user_turns(tmp_path / "v", 3)
    proc = run_home(vault.root, "--user", "me", "train", "--check")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc)
    assert line == f"home: error: {vault.logs_dir}: 3 usable examples, at least 4 are needed (0 lines rejected)"
    assert "dataset: 3 examples" in proc.stdout
    log_user_turns(vault.root, 1, topic="dinner")
    proc = run_home(vault.root, "--user", "me", "train", "--check")
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_plain_chat_survives_a_mistyped_persona_and_answers_help(tmp_path):
    """`/persona sge` ended the whole chat (exit 2), `/help` and `/personas` went to the model as messages
    (`/personas` even switched to no persona): now each is answered on stderr and the chat goes on."""
    vault = Vault.open(tmp_path / "v")
    vault.config_path.write_text('user = "me"\n[generation]\nmax_tokens = 4\n')
    proc = subprocess.run([sys.executable, "-m", "home.cli", "chat", "--plain"], cwd=REPO, env=home_env(vault.root),
                          input="/persona sge\n/help\n/personas\n/persona sage\nhi\n/quit\n", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "(unknown persona 'sge' (known: quill, sage, spark))" in proc.stderr
    assert "(commands: /persona NAME" in proc.stderr and "(unknown command /personas; commands:" in proc.stderr
    assert "(persona: Sage)" in proc.stderr and "Sage> " in proc.stdout
    said = [json.loads(line) for log in vault.logs_dir.glob("*.jsonl") for line in log.read_text().splitlines()]
    assert [(r["role"], r["text"]) for r in said if r["role"] == "user"] == [("user", "hi")]
    assert [r["persona"] for r in said if r["role"] == "assistant"][-1] == "sage"


@pytest.mark.parametrize("argv", [["ask", ""], ["ask", "  "], ["route", ""], ["memory", "search", " "]])
def test_empty_text_is_refused_before_anything_loads(tmp_path, argv):
    """`home ask ""` sent nothing to the model and logged it as a turn; route and memory search took it too."""
    vault = tmp_path / "v"
    proc = run_home(vault, *argv)
    assert proc.returncode == 2 and not proc.stdout, proc.stdout
    assert one_error_line(proc).startswith("home: error: the text is empty: give some words, e.g. home ")
    assert not list((vault / "logs").glob("*.jsonl"))


def test_memory_search_in_a_new_vault_says_memory_is_empty(tmp_path):
    """A new user's first search said "nothing in memory is close enough to that", as if it had looked."""
    vault = Vault.open(tmp_path / "v")
    proc = run_home(vault.root, "memory", "search", "where does my sister live")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"memory is empty: nothing is logged in {vault.logs_dir} yet (chat with `home` or `home ask`)\n"


@pytest.mark.parametrize(("argv", "line"), [
    (["aks", "hi"], "home: error: unknown command 'aks'; did you mean 'ask'? (one of: chat, ask, adapters, "),
    (["memory", "serch", "x"], "home memory: error: unknown command 'serch'; did you mean 'search'? (one of: search, "),
    (["ask", "hi", "--mode", "focussed"], "home ask: error: unknown --mode 'focussed'; did you mean 'focused'? "),
])
def test_a_mistyped_choice_is_one_line_with_the_nearest_one(tmp_path, argv, line):
    """`home aks` printed the usage block and a list of every command, and no hint."""
    proc = run_home(tmp_path / "v", *argv)
    assert proc.returncode == 2 and not proc.stdout
    (only,) = proc.stderr.splitlines()
    assert only.startswith(line) and only.endswith("--help)"), only


def test_doctor_on_a_vault_that_is_a_file_is_one_finding(tmp_path):
    """`home --vault FILE doctor` failed the model and the config with the vault's error, printed it a third
    time as `home: error:` and stopped (exit 2) before the rest: now one FAIL line for the vault, exit 1."""
    junk = tmp_path / "notes.txt"
    junk.write_text("not a vault\n")
    proc = run_home(tmp_path, "--vault", str(junk), "doctor")
    assert proc.returncode == 1 and not proc.stderr, proc.stderr
    fails = [line for line in proc.stdout.splitlines() if line.startswith("[FAIL]")]
    assert fails == [f"[FAIL] vault      {junk}: vault path exists but is not a directory"], proc.stdout


def _parsers(parser, name="home"):
    """Every parser under `home`: the commands and their verbs."""
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {verb}")


def test_every_help_page_fits_80_columns_and_every_option_says_what_it_does(monkeypatch):
    """At 80 columns the prose of `home --help`, train, route, serve, drift, eval and data was cut mid-word
    (written ~100 wide, some paragraphs one 300-character line), and `home ask --help` listed --max-tokens,
    --temperature, --top-p, --top-k and --repeat-penalty with no word on what they do (train seven more).
    Examples (`  home …`) may run longer: they are for pasting."""
    from home.cli import build_parser

    monkeypatch.setenv("COLUMNS", "80")
    long, silent = [], []
    for name, parser in _parsers(build_parser()):
        for line in parser.format_help().splitlines():
            if len(line) > 80 and not line.lstrip().startswith("home "):
                long.append(f"{name}: {line}")
        silent += [f"{name} {a.option_strings[0]}" for a in parser._actions
                   if a.option_strings and not a.help and a.dest != "json"]  # --json says it all
    assert not long, "\n".join(long)
    assert not silent, silent


@pytest.mark.parametrize(("argv", "said"), [
    (["ask", "hi", "--max-tokens", "0"], "home ask: error: argument --max-tokens: expected a whole number >= 1, got '0'"),
    (["ask", "hi", "--temperature", "-1"], "home ask: error: argument --temperature: expected a number >= 0, got '-1'"),
    (["chat", "--plain", "--max-tokens", "-5"], "home chat: error: argument --max-tokens: expected a whole number >= 1, "
                                                 "got '-5'"),
    (["ask", "hi", "--top-p", "5"], "home ask: error: argument --top-p: expected a number between 0 and 1, got '5'"),
    (["ask", "hi", "--top-k", "-3"], "home ask: error: argument --top-k: expected a whole number >= 0, got '-3'"),
    (["ask", "hi", "--repeat-penalty", "0"], "home ask: error: argument --repeat-penalty: expected a number > 0, got '0'"),
])
def test_a_bad_sampling_flag_is_refused_without_a_traceback(tmp_path, argv, said):
    """`home ask hi --max-tokens 0` (or --temperature -1) ended in a ValueError traceback from GenParams; --top-p 5,
    --top-k -3 and --repeat-penalty 0 went to llama.cpp as they were (a persona card may not hold them)."""
    proc = run_home(tmp_path / "v", *argv)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1] == said


def test_personas_list_names_its_columns_and_fits_the_terminal(tmp_path):
    """`home personas list` printed 'quill  f3  built-in  base  A precise writing editor who tightens prose…'
    with no header (adapters list has one), each line 119 characters: at 80 columns every one wrapped."""
    proc = subprocess.run([sys.executable, "-m", "home.cli", "personas", "list"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**home_env(tmp_path / "v"), "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ID", "KEY", "FROM", "ADAPTERS", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == ["quill", "sage", "spark"]
    assert max(len(line) for line in lines) <= 80, lines


def test_config_sampling_values_follow_a_persona_cards_rules(tmp_path):
    """config.toml's [generation] top_p = 5 was taken as it was; a persona card with it is refused."""
    vault = Vault.open(tmp_path / "v")
    vault.config_path.write_text("[generation]\ntop_p = 5\n")
    proc = run_home(vault.root, "ask", "hi")
    assert proc.returncode == 2
    assert one_error_line(proc) == f"home: error: {vault.config_path}: generation.top_p: expected between 0 and 1, got 5.0 (line 2)"


def test_chat_continue_reopens_the_latest_session_or_says_there_is_none(tmp_path):
    """`home ask --continue` went on with the last chat; `home chat` had no way to (unknown flag)."""
    vault = Vault.open(tmp_path / "v")
    vault.config_path.write_text('user = "me"\n[generation]\nmax_tokens = 4\n')
    proc = run_home(vault.root, "chat", "--continue")
    assert proc.returncode == 2 and one_error_line(proc) == f"home: error: no sessions to continue in {vault.logs_dir}"
    log_user_turns(vault.root, 2)
    (log,) = vault.logs_dir.glob("*.jsonl")
    proc = subprocess.run([sys.executable, "-m", "home.cli", "chat", "--plain", "--continue"], cwd=REPO,
                          env=home_env(vault.root), input="and then?\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"(continuing session {log.stem}: 4 earlier messages)" in proc.stderr
    assert list(vault.logs_dir.glob("*.jsonl")) == [log]  # the same session, not a new one
    said = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["text"] for r in said if r["role"] == "user"][-1] == "and then?" and len(said) == 6


def test_importing_a_card_whose_hotkey_is_taken_says_which_persona_gets_it(tmp_path):
    """A card with hotkey f2 imported beside Sage (f2) was taken silently; in the app F2 then went to one of
    them and the other could not be reached by key."""
    card = tmp_path / "ada.json"
    card.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Ada Lovelace", "description": "A mathematician.", "extensions": {"home": {"hotkey": "f2"}}}}))
    proc = run_home(tmp_path / "v", "personas", "import", str(card))
    assert proc.returncode == 0 and proc.stdout == "imported persona 'ada-lovelace' (Ada Lovelace)\n"
    assert proc.stderr == ("home: note: hotkey f2 is also sage's; in the app it picks ada-lovelace. Give one of them "
                           "another extensions.home.hotkey\n")


def test_doctor_on_a_new_vault_does_not_say_0_personas(tmp_path):
    """`home doctor` said '0 adapters, 0 personas, 0 users' right after `personas list` showed three."""
    proc = run_home(tmp_path / "v", "doctor")
    assert ("[ok  ] manifest   0 adapters, 0 imported personas (and 3 built-in), 0 registered users (by a voice "
            "adapter or Switch user)") in proc.stdout.splitlines(), proc.stdout


def test_memory_search_names_its_columns(tmp_path):
    """`home memory search` printed bare rows: nothing said the first column is what `memory forget` takes."""
    vault = log_user_turns(tmp_path / "v", 2)
    proc = run_home(vault.root, "--user", "me", "memory", "search", "my message about plans")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["ID", "(home", "memory", "forget", "ID)", "SCORE", "DATE", "WHO", "TEXT"]
    assert rows and all(row.split()[0].split(":")[1].isdigit() for row in rows), rows


def test_home_alone_takes_the_chat_options(tmp_path):
    """`home` alone is the chat, but `home --persona sage` said "unknown command 'sage'" (argparse took the
    flag as unknown and its value as the command), and `home --continue` "unrecognized arguments"."""
    vault = Vault.open(tmp_path / "v")
    vault.config_path.write_text('user = "me"\n[generation]\nmax_tokens = 4\n')
    proc = subprocess.run([sys.executable, "-m", "home.cli", "--vault", str(vault.root), "--persona", "sage", "--plain"],
                          cwd=REPO, env=home_env(vault.root), input="hi\n/quit\n", capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "persona: Sage." in proc.stderr and "Sage> " in proc.stdout
    again = subprocess.run([sys.executable, "-m", "home.cli", "--continue", "--plain"], cwd=REPO,
                           env=home_env(vault.root), input="", capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "(continuing session " in again.stderr, again.stderr
