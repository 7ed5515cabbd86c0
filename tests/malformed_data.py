"""Malformed gestalt files, character sheets, training datasets and preference files (see tests/malformed.py).

Datasets go through `home train --source KIND PATH --check`: the trainer's own `load_source`, whose
contract is a rejection per bad line naming the file and line, and exit 2 when anything was rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import strategies as st

from tests.malformed import HUGE_INT, TRICKS, WRONG, binary, encoded, truncated
from tests.malformed_run import GOOD_GESTALT, Case, Link

# --- gestalt files: `home gestalts show ID`, and the trainer's gestalts source ---

NEW_GESTALT = (GOOD_GESTALT.replace("g-keep", "g-new").replace("keeps bees", "grows figs")
               .replace("sources:", "hash: 0123456789abcdef\nsources:"))
GESTALT_BAD = {"id": ("../../outside/pwn", "G-NEW", "g-other"), "user": ("someone", "../me"),
               "kind": ("Fact!", "two words", ""), "said": ("yesterday", "2026-13-45T99:00:00Z", HUGE_INT),
               "created": ("soon",), "updated": ("0",), "hash": ("zz", "../../outside"),
               "sources": ("[../../outside:1]", "[a b c]", "[/etc/passwd:3]")}


@st.composite
def gestalt_text(draw, size: int) -> tuple[str, bytes, tuple[str, ...], bool]:
    kind = draw(st.sampled_from(("truncated", "bad-field", "unknown-field", "twice", "huge", "binary", "encoding",
                                 "no-header", "nul")))
    lines = NEW_GESTALT.split("\n")
    if kind == "truncated":
        return kind, draw(truncated(NEW_GESTALT.encode())), ("g-new.md",), False
    if kind == "bad-field":
        name = draw(st.sampled_from(sorted(GESTALT_BAD)))
        n = next(i for i, ln in enumerate(lines) if ln.startswith(f"{name}:"))
        lines[n] = f"{name}: {draw(st.sampled_from(GESTALT_BAD[name]))}"
        return kind, "\n".join(lines).encode(), (f"g-new.md:{n + 1}: {name}",), True
    if kind in ("unknown-field", "twice"):
        extra = draw(st.sampled_from(("path: ../../outside/pwn", "owner: me"))) if kind == "unknown-field" else "kind: fact"
        lines.insert(2, extra)
        return kind, "\n".join(lines).encode(), ("g-new.md:3" if kind == "unknown-field" else "given twice",), True
    if kind == "huge":
        return kind, (NEW_GESTALT + "x" * (size * 1024)).encode(), ("g-new.md",), True
    if kind == "binary":
        return kind, draw(binary(b"---\n")), ("g-new.md",), True
    if kind == "nul":  # valid UTF-8, but a NUL byte: a binary file, not a fact
        at = draw(st.integers(0, len(NEW_GESTALT)))
        return kind, (NEW_GESTALT[:at] + "\x00" + NEW_GESTALT[at:]).encode(), ("g-new.md",), True
    if kind == "encoding":
        return kind, draw(encoded(NEW_GESTALT)), ("g-new.md",), True
    return kind, b"The user grows figs.\n", ("g-new.md:1",), True


@st.composite
def gestalt(draw, size: int = 64) -> Case:
    how = draw(st.sampled_from(("show", "show", "show", "link", "arg")))
    if how == "link":  # a gestalt that is a link out of the vault: read as text, forgotten by removing the link
        verb = draw(st.sampled_from(("show", "forget")))
        return Case("gestalt", f"symlink-{verb}", {"vault/gestalts/me/g-new.md": Link("{root}/outside/secret.txt")},
                    ["gestalts", verb, "g-new"], ("g-new.md",))
    if how == "arg":
        trick = draw(st.sampled_from(TRICKS))
        verb = draw(st.sampled_from(("show", "forget")))
        return Case("gestalt", f"path-trick-{verb}", {}, ["gestalts", verb, trick],
                    ("gestalt id",), must_fail=True)
    kind, data, names, must = draw(gestalt_text(size))
    return Case("gestalt", kind, {"vault/gestalts/me/g-new.md": data}, ["gestalts", "show", "g-new"], names,
                must_fail=must)


# --- character sheets: `home personas from-sheets DIR` ---

SHEET = ("# Wren Alder\nA quiet archivist who keeps the town's letters.\n\n## Traits\n- careful\n- dry humour\n\n"
         "## Speech\nShort sentences, few adjectives.\n\n## Relationships\n- **Bram**: her brother\n")


@st.composite
def sheet(draw, size: int = 64) -> Case:
    kind = draw(st.sampled_from(("truncated", "binary", "encoding", "front-matter", "path-trick", "huge",
                                 "symlink-file", "symlink-folder", "symlink-card")))
    files: dict = {}
    must, names = kind in ("binary", "encoding", "front-matter"), ("wren.md",)
    if kind == "truncated":
        data = draw(truncated(SHEET.encode()))
    elif kind == "binary":
        data = draw(binary())
    elif kind == "encoding":
        data = draw(encoded(SHEET))
    elif kind == "front-matter":
        data = ("---\nname: Wren\n" + draw(st.sampled_from(("", "hotkey f2\n", "tags: [a\n"))) + SHEET).encode()
    elif kind == "path-trick":
        data = SHEET.replace("Wren Alder", draw(st.sampled_from(TRICKS)), 1).encode()
    elif kind == "huge":
        data = (SHEET + "\n## Background\n" + "word " * (size * 200)).encode()
    elif kind == "symlink-file":
        data = Link("{root}/outside/secret.txt")
    elif kind == "symlink-card":  # the persona file it would update is a link out of the vault
        data = SHEET.encode()
        files["vault/personas/wren-alder.json"] = Link("{root}/outside/victim.json")
        names = ("wren-alder.json",)
    else:
        files["inputs/sheets"] = Link("{root}/outside")
        names = ("sheets",)
        data = None
    if data is not None:
        files["inputs/sheets/wren.md"] = data
    return Case("sheet", kind, files, ["personas", "from-sheets", "{root}/inputs/sheets", "--no-lore"], names,
                must_fail=must or kind == "symlink-folder")


# --- training datasets: `home train --source … --check` ---

JSONL_GOOD = [
    {"instruction": "Say hi", "input": "", "output": "Hello there, friend."},
    {"persona": "wren", "category": "greeting", "instruction": "Greet me", "input": "", "output": "Well met, traveller."},
    {"messages": [{"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "Quite well, thanks."}]},
    {"conversations": [{"from": "human", "value": "Any plans?"}, {"from": "gpt", "value": "A long walk by the sea."}]},
    {"instruction": ["hi", "hello", "what now?"], "response": "Now we make tea."},
    {"prompt": [{"role": "user", "content": "Name a fruit"}], "completion": [{"role": "assistant", "content": "A fig."}]},
]
JSONL_PATHS = [(0, "instruction"), (0, "output"), (1, "persona"), (1, "category"), (2, "messages"),
               (2, "messages", 0), (2, "messages", 1, "role"), (2, "messages", 1, "content"), (3, "conversations"),
               (3, "conversations", 1, "from"), (4, "instruction"), (4, "response"), (5, "prompt"), (5, "completion")]
LOG_SESSION = "20261124-100000-000000-ab12"


def _log_records() -> list[dict]:
    out = []
    # Five of the user's messages: a harmless mutation leaves at least the four a training run needs.
    for n, (role, text) in enumerate([("user", "I planted figs today."), ("assistant", "Lovely. Where?"),
                                      ("user", "By the south wall, where it is warm."), ("assistant", "Good spot."),
                                      ("user", "They should fruit next summer."), ("assistant", "And then?"),
                                      ("user", "Jam, if the wasps leave any."), ("assistant", "Ha."),
                                      ("user", "I will net them in June.")], 1):
        out.append({"v": 1, "id": f"{LOG_SESSION}:{n}", "session": LOG_SESSION, "turn": n,
                    "time": f"2026-11-24T10:00:0{n}Z", "user": "me", "persona": None, "role": role, "text": text})
    return out


@st.composite
def jsonl_lines(draw, records: list[dict], paths: list[tuple], size: int) -> tuple[str, bytes, int | None, bool]:
    """(mutation, file bytes, the 1-based line at fault or None, certainly rejected)."""
    kind = draw(st.sampled_from(("wrong-type", "truncated-line", "binary-line", "encoding-line", "huge", "path-trick",
                                 "not-object", "truncated-file", "binary-file", "encoding-file")))
    lines = [json.dumps(r) for r in records]
    text = "\n".join(lines) + "\n"
    if kind == "truncated-file":
        return kind, draw(truncated(text.encode())), None, False
    if kind == "binary-file":
        return kind, draw(binary()), None, True
    if kind == "encoding-file":
        return kind, draw(encoded(text)), None, False
    at = draw(st.integers(0, len(lines) - 1))
    raw = [ln.encode() for ln in lines]
    if kind == "truncated-line":
        raw[at] = raw[at][:draw(st.integers(1, len(raw[at]) - 1))]
    elif kind == "binary-line":
        raw[at] = draw(binary(b"{"))
    elif kind == "encoding-line":
        raw[at] = draw(encoded(lines[at]))
    elif kind == "not-object":
        raw[at] = draw(st.sampled_from((b"[1, 2]", b'"text"', b"3", b"null")))
    elif kind == "huge":
        which, text = draw(st.sampled_from((("deep", "[" * 100_000 + "]" * 100_000), ("int", HUGE_INT), ("float", "1e999"),
                                            ("string", json.dumps({"output": "x" * size * 1024})))))
        raw[at], kind = text.encode(), f"huge-{which}"
    else:
        path = draw(st.sampled_from([p for p in paths if p[0] == at] or [(at,)]))
        rec = json.loads(lines[at])
        value = draw(st.sampled_from(TRICKS if kind == "path-trick" else WRONG))
        if len(path) == 1:
            rec = value
        else:
            node = rec
            for key in path[1:-1]:
                node = node[key]
            node[path[-1]] = value
        raw[at] = json.dumps(rec).encode()
    certain = kind in ("truncated-line", "binary-line", "not-object", "huge-deep", "huge-int", "huge-float")
    return kind, b"\n".join(raw) + b"\n", at + 1, certain


@st.composite
def datasets(draw, size: int = 64) -> Case:
    source = draw(st.sampled_from(("jsonl", "jsonl", "logs", "logs", "transcript", "essays", "gestalts")))
    check = ["--check"]
    if source in ("jsonl", "logs"):
        records = JSONL_GOOD if source == "jsonl" else _log_records()
        paths = JSONL_PATHS if source == "jsonl" else [(i, k) for i in range(len(records)) for k in ("role", "text", "user", "turn", "id")]
        kind, data, line, certain = draw(jsonl_lines(records, paths, size))
        rel = "inputs/data.jsonl" if source == "jsonl" else f"vault/logs/{LOG_SESSION}.jsonl"
        name = Path(rel).name
        argv = ["train", "--source", "jsonl", "{root}/" + rel, *check] if source == "jsonl" else ["train", *check]
        if kind.endswith("-file") and draw(st.booleans()):
            return Case("dataset", f"{source}-symlink", {rel: Link("{root}/outside/secret.txt")}, argv, (name,),
                        must_fail=True)
        names = (f"{name}:{line}",) if certain and line and kind != "binary-line" else (name,)
        return Case("dataset", f"{source}-{kind}", {rel: data}, argv, names, must_fail=certain)
    if source == "transcript":
        good = ("ANN: I planted figs today.\nBOB: Where?\nANN: By the south wall.\nBOB: Warm there.\nANN: Yes.\n"
                "BOB: And then?\nANN: Jam.\nBOB: Wasps?\nANN: Nets.\n")
        kind = draw(st.sampled_from(("binary", "encoding", "truncated", "huge-line", "speaker-trick", "symlink")))
        speaker = draw(st.sampled_from(TRICKS)) if kind == "speaker-trick" else "ANN"
        data = {"binary": lambda: draw(binary()), "encoding": lambda: draw(encoded(good)),
                "truncated": lambda: draw(truncated(good.encode())),
                "huge-line": lambda: (good + "ANN: " + "word " * size * 200 + "\n").encode(),
                "speaker-trick": lambda: good.encode(), "symlink": lambda: Link("{root}/outside/secret.txt")}[kind]()
        return Case("dataset", f"transcript-{kind}", {"inputs/play.txt": data},
                    ["train", "--source", "transcript", "{root}/inputs/play.txt", "--speaker", speaker, *check],
                    ("play.txt",), must_fail=kind in ("binary", "speaker-trick", "symlink"))
    if source == "essays":
        kind = draw(st.sampled_from(("binary", "encoding", "empty", "symlink-file", "symlink-loop", "huge")))
        good = "# On figs\n\nFigs want a warm wall and patience.\n\nIn the end, patience is the whole trick.\n"
        files = {"inputs/essays/good.md": good.encode(),  # two good essays: at least the four examples a run needs
                 "inputs/essays/good2.md": good.replace("figs", "pears").encode()}
        bad = {"binary": lambda: draw(binary()), "encoding": lambda: draw(encoded(good)), "empty": lambda: b"  \n",
               "symlink-file": lambda: Link("{root}/outside/secret.txt"), "symlink-loop": lambda: Link("{root}/inputs/essays"),
               "huge": lambda: (good + "word " * size * 200).encode()}[kind]()
        files["inputs/essays/bad.md" if kind != "symlink-loop" else "inputs/essays/loop"] = bad
        return Case("dataset", f"essays-{kind}", files,
                    ["train", "--source", "essays", "{root}/inputs/essays", *check], ("bad.md", "loop"),
                    must_fail=kind in ("binary", "empty"))
    kind, data, names, must = draw(gestalt_text(size))
    more = {f"vault/gestalts/me/{gid}.md": GOOD_GESTALT.replace("g-keep", gid).replace("keeps bees", fact).encode()
            for gid, fact in (("g-dawn", "walks at dawn"), ("g-bed", "reads in bed"))}  # with g-keep: the 4 a run needs
    return Case("dataset", f"gestalts-{kind}", {**more, "vault/gestalts/me/g-new.md": data},
                ["train", "--source", "gestalts", *check], names, must_fail=must)


# --- preference pairs: the app's pick-best appends, preference training reads ---

PAIR = {"user": "me", "persona": None, "session": LOG_SESSION, "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": {"text": "Hello!", "candidate": 1}, "rejected": {"text": "Go away.", "candidate": 2}}


@st.composite
def preferences(draw, size: int = 64) -> Case:
    good = json.dumps({"v": 1, "id": "pref-1", **PAIR})
    kind = draw(st.sampled_from(("torn", "binary", "encoding", "huge-deep", "huge-int", "huge-string", "not-object",
                                 "user-trick", "symlink")))
    user = draw(st.sampled_from(TRICKS)) if kind == "user-trick" else "me"
    data = {"torn": lambda: draw(truncated((good + "\n" + good).encode())), "binary": lambda: draw(binary()),
            "encoding": lambda: draw(encoded(good + "\n")), "not-object": lambda: b"[1]\n" + good.encode() + b"\n",
            "huge-deep": lambda: ("[" * 100_000 + "]" * 100_000).encode(), "huge-int": lambda: HUGE_INT.encode(),
            "huge-string": lambda: json.dumps({**PAIR, "x": "x" * size * 1024}).encode(),
            "user-trick": lambda: good.encode() + b"\n", "symlink": lambda: Link("{root}/outside/secret.txt")}[kind]()

    def act(root: Path) -> tuple[int, str]:
        from vault.layout import Vault
        from vault.preferences import append_preference, read_preferences

        vault = Vault.open(root / "vault")
        written = append_preference(vault, {**PAIR, "user": user})
        read = read_preferences(vault, user)
        if written["id"] not in [r.get("id") for r in read.records]:
            raise AssertionError(f"the appended pair {written['id']} was lost")
        for problem in read.problems:
            if "me.jsonl:" not in problem:
                return 1, f"unclear problem: {problem}"
        return 0, "\n".join(f"home: warning: {p}" for p in read.problems)

    return Case("preferences", kind, {"vault/preferences/me.jsonl": data}, names=("me.jsonl", "user name"),
                must_fail=kind == "user-trick", action=act)
