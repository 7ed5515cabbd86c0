"""`home gestalts` through the real CLI: list, show, edit ($EDITOR), forget, distil; `home memory search`
finds gestalts, edited ones included."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from tests.cli_helpers import REPO, home_env, one_error_line
from vault import gestalts as gs
from vault.layout import Vault
from vault.logs import ConversationLog

DRAFTS = [gs.Draft("The user lives in Berlin.", "fact", ("s1:3",), "2026-01-05T09:01:00Z"),
          gs.Draft("The user prefers green tea.", "preference", ("s1:5",), "2026-01-05T09:02:00Z")]


def run(root, *args, editor: str | None = None) -> subprocess.CompletedProcess:
    env = home_env(root)
    env.pop("VISUAL", None)
    if editor is not None:
        env["EDITOR"] = editor
    return subprocess.run([sys.executable, "-m", "home.cli", "--user", "maya", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def sed(expr: str) -> str:
    """An $EDITOR that edits the file in place without a terminal."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(SED)} {shlex.quote(expr)}"


SED = ("import re, sys; a, b = sys.argv[1].split('=>'); p = sys.argv[2]; t = open(p).read(); "
       "open(p, 'w').write(re.sub(a, b, t, flags=re.M))")


@pytest.mark.slow  # a dozen CLI subprocesses (2-12 s on 2 shared cores)
def test_list_show_edit_forget_and_memory_search(tmp_path):
    root = tmp_path / "v"
    vault = Vault.open(root)
    berlin, tea = gs.add_gestalts(vault, "maya", DRAFTS)

    listed = run(root, "gestalts", "list")
    assert listed.returncode == 0, listed.stderr
    assert [ln.split()[0] for ln in listed.stdout.splitlines()] == [berlin.id, tea.id]
    assert "preference" in listed.stdout and "2026-01-05  The user prefers green tea." in listed.stdout
    shown = run(root, "gestalts", "show", tea.id)
    assert shown.returncode == 0 and shown.stdout.endswith(gs.render(tea)), shown.stderr

    edited = run(root, "gestalts", "edit", berlin.id, editor=sed("Berlin=>Lisbon"))
    assert edited.returncode == 0, edited.stderr
    assert "saved " + berlin.id in edited.stdout and "memory: 2 added" in edited.stdout
    now = gs.read(berlin.path)
    assert now.text == "The user lives in Lisbon." and now.hash == berlin.hash and now.updated > berlin.updated
    assert not list(berlin.path.parent.glob(".*.edit.md"))  # the draft is gone

    before = berlin.path.read_bytes()
    broken = run(root, "gestalts", "edit", berlin.id, editor=sed("^kind: .*=>kind: Places I Lived"))
    assert broken.returncode == 2
    line = one_error_line(broken)
    assert f".{berlin.id}.edit.md:4: kind: expected one lowercase word" in line and "is unchanged" in line
    assert berlin.path.read_bytes() == before  # nothing overwritten
    fixed = run(root, "gestalts", "edit", berlin.id, editor=sed("^kind: .*=>kind: place"))  # reopens the draft
    assert fixed.returncode == 0 and "reopening your unsaved edit" in fixed.stderr, fixed.stderr
    assert gs.read(berlin.path).kind == "place"

    tea.path.write_text(gs.render(tea).replace("Berlin", "x").replace("green tea", "oolong tea"))  # by hand
    found = run(root, "memory", "search", "which tea does the user prefer?", "-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    (hit,) = json.loads(found.stdout)
    assert (hit["id"], hit["role"], hit["text"]) == (f"gestalt:{tea.id}", "gestalt", "The user prefers oolong tea.")

    gone = run(root, "gestalts", "forget", tea.id)
    assert gone.returncode == 0 and gone.stdout.startswith(f"forgot {tea.id}: The user prefers oolong tea."), gone
    assert "memory: 0 added, 0 changed, 1 removed" in gone.stdout and not tea.path.exists()
    after = run(root, "memory", "search", "which tea does the user prefer?", "--json")
    assert f"gestalt:{tea.id}" not in after.stdout

    tea2 = run(root, "gestalts", "list", "--json")
    assert [g["id"] for g in json.loads(tea2.stdout)] == [berlin.id]


def test_refusals_are_one_line_and_broken_files_are_named(tmp_path):
    root = tmp_path / "v"
    vault = Vault.open(root)
    (g,) = gs.add_gestalts(vault, "maya", DRAFTS[:1])
    bad = g.path.with_name("g-bad.md")
    bad.write_text("---\nkind: fact\nsources: [yesterday]\n---\nLikes figs.\n")
    listed = run(root, "gestalts", "list")
    assert listed.returncode == 0 and listed.stdout.startswith(g.id)
    assert listed.stderr.strip() == f"home: warning: skipped {bad}:3: sources: expected log record ids " \
                                    "<session>:<turn>, got 'yesterday'"
    for args, words in [(("gestalts", "show", "g-nope"), "no gestalt 'g-nope' for user 'maya'"),
                        (("gestalts", "show", "g-bad"), "g-bad.md:3: sources:"),
                        (("gestalts", "forget", "../x"), "gestalt id '../x': expected"),
                        (("gestalts", "edit", "g-nope"), "no gestalt 'g-nope'")]:
        proc = run(root, *args)
        assert proc.returncode == 2 and words in one_error_line(proc), proc.stderr
    aborted = run(root, "gestalts", "edit", g.id, editor=f"{shlex.quote(sys.executable)} -c 'raise SystemExit(1)'")
    assert aborted.returncode == 1 and "is unchanged" in aborted.stderr and gs.read(g.path) == g
    fixed = run(root, "gestalts", "edit", "g-bad", editor=sed(r"\[yesterday\]=>[]"))  # editing fixes a broken file
    assert fixed.returncode == 0 and gs.read(bad).text == "Likes figs.", fixed.stderr


@pytest.mark.slow  # loads the model in a subprocess
def test_distil_the_latest_session(tmp_path):
    root = tmp_path / "v"
    vault = Vault.open(root)
    log = ConversationLog.create(vault, "s1")
    for role, text in [("user", "I live in Berlin, in a flat in Kreuzberg."), ("assistant", "Nice."),
                       ("user", "Can you suggest a recipe?"), ("user", "I prefer tea over coffee, especially green tea.")]:
        log.append({"role": role, "text": text, "user": "maya"})
    proc = run(root, "gestalts", "distil", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["session"], out["turns"], out["asked"]) == ("s1", 3, 2)
    assert {g["text"] for g in out["gestalts"]} <= {"The user lives in Berlin.", "The user prefers green tea."}
    assert out["new"] == len(out["gestalts"]) >= 1 and len(out["candidates"]) == 2
    again = run(root, "gestalts", "distil", "--session", "s1")
    assert again.returncode == 0 and f"{out['grounded']} grounded, 0 new" in again.stdout, again.stdout
    assert "session s1: 3 turns of yours" in again.stdout
    nothing = run(root, "gestalts", "distil", "--session", "nope")
    assert nothing.returncode == 2 and "no session 'nope'" in one_error_line(nothing)
