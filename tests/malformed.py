"""Hypothesis strategies of malformed inputs, one per thing a user hands Home (tests and bench share them).

Each strategy draws a `Case` (tests/malformed_run.py): the files to lay down in a sandbox and the `home`
command that reads them. Mutations: truncated, wrong types, huge, binary, wrong encodings, path tricks
(`../`, absolute paths in ids and fields), symlinks out of the vault. `size` scales the "huge" inputs
(the suite uses small ones, the bench large ones). GGUF adapters are in tests/malformed_gguf.py.
"""

from __future__ import annotations

import copy
import json

from hypothesis import strategies as st

from tests.malformed_run import GOOD_CARD, Case, Link

TRICKS = ("../../outside/pwn", "{root}/outside/pwn", "/etc/passwd", "..", "a/../../b", "~/.bashrc",
          "..\\..\\outside\\pwn", "outside/../../../pwn")
WRONG = (0, -1, 2.5, True, None, "", "x", [], [1], ["a", 2], {}, {"a": 1}, "../../outside/pwn")
HUGE_INT = "9" * 5000  # past Python's 4300-digit int parsing limit


def _set(doc, path: tuple, value):
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _field_name(path: tuple) -> str:
    return str([p for p in path if isinstance(p, str)][-1])


@st.composite
def encoded(draw, text: str) -> bytes:
    """The text in an encoding Home does not read (or with bytes no encoding explains)."""
    how = draw(st.sampled_from(("utf-16", "utf-32", "latin-1", "bad-utf8", "nul")))
    if how == "latin-1":
        return text.replace("e", "é", 1).encode("latin-1", "replace")
    if how == "bad-utf8":
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xfe\xfe"))) + raw[at:]
    if how == "nul":
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + b"\x00" + raw[at:]
    return text.encode(how)


def binary(prefix: bytes = b"") -> st.SearchStrategy[bytes]:
    return st.binary(min_size=1, max_size=300).map(lambda b: prefix + b"\x00" + b)


@st.composite
def truncated(draw, data: bytes) -> bytes:
    return data[:draw(st.integers(0, len(data) - 1))]


def huge_json(size: int) -> st.SearchStrategy[tuple[str, object]]:
    """(kind, replacement) for a JSON value: a long string, deep nesting, a number Python refuses."""
    return st.sampled_from((
        ("long-string", "x" * (size * 1024)),
        ("deep-nesting", None),
        ("huge-int", None),
        ("huge-float", None),
    ))


def _json_with(doc, path: tuple, how: str, value, size: int) -> bytes:
    """doc with the value at path replaced; "deep"/"huge" values are spliced into the text."""
    marker = "@@HUGE@@"
    text = json.dumps(_set(doc, path, marker if how in ("deep-nesting", "huge-int", "huge-float") else value))
    depth = 2000 + size * 50
    splice = {"deep-nesting": "[" * depth + "]" * depth, "huge-int": HUGE_INT, "huge-float": "1e999"}
    return text.replace(json.dumps(marker), splice.get(how, "")).encode()


@st.composite
def json_doc(draw, good: dict, paths: list[tuple], size: int, strict: tuple[tuple, ...] = ()) -> tuple[str, bytes, str | None]:
    """(mutation, bytes, field name or None) of a JSON document. `strict`: paths where any other type is refused."""
    text = json.dumps(good, indent=1)
    kind = draw(st.sampled_from(("truncated", "wrong-type", "huge", "binary", "encoding", "path-trick")))
    if kind == "truncated":
        return kind, draw(truncated(text.encode())), None
    if kind == "binary":
        return kind, draw(binary(draw(st.sampled_from((b"", b"{", b"\x89PNG\r\n\x1a\n"))))), None
    if kind == "encoding":
        return kind, draw(encoded(text)), None
    path = draw(st.sampled_from(paths))
    if kind == "huge":
        how, value = draw(huge_json(size))
        return f"huge-{how}", _json_with(good, path, how, value, size), _field_name(path)
    value = draw(st.sampled_from(TRICKS if kind == "path-trick" else WRONG))
    return kind, json.dumps(_set(good, path, value)).encode(), _field_name(path)


# --- character cards (JSON, PNG) ---

CARD_PATHS = [("data", k) for k in ("name", "description", "personality", "scenario", "first_mes", "mes_example",
                                      "tags", "alternate_greetings", "extensions", "character_book")] + [
    ("spec",), ("data",), ("data", "extensions", "home"), ("data", "extensions", "home", "hotkey"),
    ("data", "extensions", "home", "adapters"), ("data", "extensions", "home", "generation"),
    ("data", "extensions", "home", "tasks"), ("data", "extensions", "home", "adapters", 0, "id"),
    ("data", "extensions", "home", "adapters", 0, "scale"), ("data", "extensions", "home", "generation", "top_k")]
CARD = {**GOOD_CARD, "data": {**GOOD_CARD["data"], "name": "Newcomer",
                              "extensions": {"home": {"hotkey": "f8", "adapters": [{"id": "a", "scale": 0.5}],
                                                      "generation": {"top_k": 20}}}}}


@st.composite
def card_json(draw, size: int = 64) -> Case:
    if draw(st.integers(0, 7)) == 0:  # a persona named on the command line (as --persona and config do)
        which, name = draw(st.sampled_from([("trick", t) for t in TRICKS] + [("huge", "x" * size * 1024)]))
        return Case("card-json", f"name-arg-{which}", {}, ["personas", "show", name], ("unknown persona",),
                    must_fail=True)
    kind, data, fld = draw(json_doc(CARD, CARD_PATHS, size))
    names = ("card.json",)
    if draw(st.booleans()) and kind in ("wrong-type", "path-trick"):  # the same card over a link out of the vault
        return Case("card-json", "symlink", {"vault/personas/newcomer.json": Link("{root}/outside/victim.json"),
                                             "inputs/card.json": json.dumps(CARD).encode()},
                    ["personas", "import", "{root}/inputs/card.json", "--overwrite"], names)
    return Case("card-json", kind, {"inputs/card.json": data}, ["personas", "import", "{root}/inputs/card.json"],
                names, must_fail=kind in ("truncated", "binary", "encoding"))


def png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    import struct
    import zlib

    out = b"\x89PNG\r\n\x1a\n"
    for ctype, body in [(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)), *chunks,
                        (b"IDAT", zlib.compress(b"\x00\x00")), (b"IEND", b"")]:
        out += struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))
    return out


@st.composite
def card_png(draw, size: int = 64) -> Case:
    import base64
    import zlib

    kind = draw(st.sampled_from(("truncated", "payload", "bad-base64", "bad-crc", "no-chunk", "ztxt", "itxt",
                                 "binary", "huge-chunk")))
    good = base64.b64encode(json.dumps(CARD).encode())
    if kind == "payload":  # a PNG whose card JSON is itself malformed
        kind, payload, _ = draw(json_doc(CARD, CARD_PATHS, size))
        data = png([(b"tEXt", b"chara\0" + base64.b64encode(payload))])
    elif kind == "truncated":
        data = draw(truncated(png([(b"tEXt", b"chara\0" + good)])))
    elif kind == "bad-base64":
        data = png([(b"tEXt", b"chara\0" + draw(st.sampled_from((b"!!!", b"e30=\xff", good[:-3] + b"*"))))])
    elif kind == "bad-crc":
        raw = bytearray(png([(b"tEXt", b"chara\0" + good)]))
        at = raw.index(b"tEXt") + 4 + draw(st.integers(0, len(good)))
        raw[at] ^= 0x01
        data = bytes(raw)
    elif kind == "no-chunk":
        data = png([(b"tEXt", b"Comment\0hello")])
    elif kind == "ztxt":
        which, body = draw(st.sampled_from((
            ("no-checksum", b"\0" + zlib.compress(good)[:-4]), ("cut", b"\0" + zlib.compress(good)[:-20]),
            ("garbage", b"\0garbage"), ("method", b"\x07" + zlib.compress(good)),
            ("bomb", b"\0" + zlib.compress(b"\0" * (40 * 1024 * 1024))))))
        data, kind = png([(b"zTXt", b"chara\0" + body)]), f"ztxt-{which}"
    elif kind == "itxt":
        data = png([(b"iTXt", b"chara\0\0\0en\0\0" + draw(st.sampled_from((b"\xff\xfe", b"e30", good + b"\xc3"))))])
    elif kind == "huge-chunk":
        data = png([(b"tEXt", b"chara\0" + base64.b64encode(b'{"name": "' + b"x" * (size * 1024) + b'"'))])
    else:
        data = draw(binary(b"\x89PNG\r\n\x1a\n"))
    return Case("card-png", kind, {"inputs/card.png": data}, ["personas", "import", "{root}/inputs/card.png"],
                ("card.png",), must_fail=kind not in ("wrong-type", "path-trick", "ztxt-no-checksum")  # every byte of the card is there
                and not kind.startswith("huge"))


# --- manifest.json, read at the start of every command that uses it ---

MANIFEST = {"schema": 1, "users": {"me": {"name": "me", "created": "2026-11-24T10:00:00Z", "voice_adapter": None}},
            "personas": {"keeper": {"id": "keeper", "file": "personas/keeper.json"}},
            "adapters": {"a-1": {"id": "a-1", "name": "a", "file": "adapters/a-1/adapter.gguf", "sha256": "",
                                 "base": {"fingerprint": "f", "name": "m"}, "owner": "me", "kind": "style",
                                 "users": [], "tasks": ["chat"], "tones": [], "priority": 0, "scale": 1.0,
                                 "parent": None, "stack": [], "rank": 8, "alpha": 16.0, "dataset": {},
                                 "metrics": {}, "created": "2026-11-24T10:00:00Z"}}}
MANIFEST_PATHS = [("schema",), ("users",), ("personas",), ("adapters",), ("users", "me"), ("personas", "keeper"),
                  ("adapters", "a-1")] + [("adapters", "a-1", k) for k in (
                      "id", "name", "file", "sha256", "base", "owner", "kind", "users", "tasks", "tones",
                      "priority", "scale", "parent", "stack", "rank", "alpha", "dataset", "metrics", "created")] + [
                  ("adapters", "a-1", "base", "fingerprint")]
MANIFEST_COMMANDS = (["adapters", "list"], ["adapters", "show", "a"], ["personas", "import", "{root}/inputs/ok.json"],
                     ["adapters", "remove", "a"])


@st.composite
def manifest(draw, size: int = 64) -> Case:
    kind, data, fld = draw(json_doc(MANIFEST, MANIFEST_PATHS, size))
    argv = draw(st.sampled_from(MANIFEST_COMMANDS))
    files = {"vault/manifest.json": data, "inputs/ok.json": json.dumps(CARD).encode()}
    if kind == "path-trick" and draw(st.booleans()):  # an adapter folder that is a link out of the vault
        files = {"vault/manifest.json": json.dumps(MANIFEST).encode(),
                 "vault/adapters/a-1": Link("{root}/outside"), "inputs/ok.json": files["inputs/ok.json"]}
        kind, argv = "symlink", ["adapters", "remove", "a"]
    return Case("manifest", kind, files, argv, ("manifest.json", "unknown adapter 'a'"),
                must_fail=kind in ("truncated", "binary", "encoding"))


# --- config.toml ---

CONFIG_KEYS = ("user", "model", "persona", "generation.temperature", "generation.top_k", "generation.max_tokens",
               "context.n_ctx", "context.gpu_layers", "memory.enabled", "memory.k", "router.tasks",
               "router.min_confidence", "router.task_examples", "gestalts.every_n_turns", "keys.quit")
TOML_WRONG = ('"high"', "-3", "2.5", "true", "[1, 2]", '["a", "a"]', "{ a = 1 }", '""', HUGE_INT, "nan", "inf")


@st.composite
def config(draw, size: int = 64) -> Case:
    from vault.config import default_text

    good = default_text("me")
    kind = draw(st.sampled_from(("truncated", "wrong-type", "huge", "binary", "encoding", "path-trick", "syntax",
                                 "unknown-key")))
    must_fail, key = kind in ("binary", "encoding", "syntax"), None
    if kind == "truncated":
        data = draw(truncated(good.encode()))
    elif kind == "binary":
        data = draw(binary())
    elif kind == "encoding":
        data = draw(encoded(good))
    elif kind == "unknown-key":  # a typo in [keys] (the last table)
        data = (good + draw(st.sampled_from(('qiut = "ctrl+x"\n', 'user = "x"\n')))).encode()
        must_fail = True
    elif kind == "syntax":
        data = (good + draw(st.sampled_from(("\n[generation]\n", "\nuser = 'x'\n", "\n= 3\n", "\n[a\n",
                                             "\nfoo = \n", '\nmodel = """\n')))).encode()
    else:
        key = draw(st.sampled_from(CONFIG_KEYS))
        section, _, name = key.rpartition(".")
        if kind == "huge":
            which, value = draw(st.sampled_from((("string", f'"{"x" * size * 1024}"'), ("int", HUGE_INT),
                                                 ("deep", "[" * 3000 + "]" * 3000))))
            kind = f"huge-{which}"
        elif kind == "path-trick":
            value = json.dumps(draw(st.sampled_from(TRICKS)))
        else:
            value = draw(st.sampled_from(TOML_WRONG))
        data = _toml_set(good, section, name, value).encode()
        must_fail = (kind == "wrong-type" and key in ("generation.max_tokens", "context.n_ctx", "memory.enabled")
                     or kind == "huge-int")
        kind = f"{kind}:{key}"
    files = {"vault/config.toml": data}
    argv = ["gestalts", "list"]
    if key == "model":  # the model setting is read by what checks an adapter against the model
        from tests.malformed_gguf import good_adapter

        files["inputs/x.gguf"], argv = good_adapter(), ["adapters", "add", "{root}/inputs/x.gguf", "--name", "x"]
    return Case("config", kind, files, argv,
                ("config.toml",), must_fail=must_fail)


def _toml_set(text: str, section: str, name: str, value: str) -> str:
    """The default config with one setting's value replaced (or added at the top of its table)."""
    lines, current = text.splitlines(), ""
    for n, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[] ")
        if current == section and line.partition("=")[0].strip() == name:
            lines[n] = f"{name} = {value}"
            return "\n".join(lines) + "\n"
    at = lines.index(f"[{section}]") + 1
    return "\n".join(lines[:at] + [f"{name} = {value}"] + lines[at:]) + "\n"


def targets(size: int = 64) -> dict:
    """name → strategy of Cases, every input the campaign covers."""
    from tests.malformed_data import datasets, gestalt, preferences, sheet
    from tests.malformed_gguf import adapter

    return {"card-json": card_json(size), "card-png": card_png(size), "manifest": manifest(size),
            "config": config(size), "gestalt": gestalt(size), "sheet": sheet(size), "dataset": datasets(size),
            "adapter-gguf": adapter(), "preferences": preferences(size)}
