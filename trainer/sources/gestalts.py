"""Knowledge examples from the user's gestalts: the distilled facts Home's memory keeps about them.

Storage contract (the memory feature writes it, this module reads it): JSON Lines at
`<vault>/gestalts/<user>.jsonl`, one record per line:

    {"id": "g-0001", "user": "maya", "text": "Prefers tea over coffee.", "kind": "preference",
     "created": "2026-11-24T10:00:00Z", "updated": "2026-11-24T10:00:00Z",
     "sources": ["<session>:<turn>", ...], "deleted": false}

`kind` is free text (preference, fact, habit, goal, relationship, ...; missing means "fact"). The file
is append-only like the logs: a later record with the same `id` is an edit and replaces the earlier one,
`deleted: true` retracts the fact, and a torn last line (an interrupted write) is skipped. Only the
latest live version of each fact is trained on.

Each fact becomes a question about the user answered with the fact's own text, turned into the second
person where a simple rule is safe ("Prefers tea." → "You prefer tea."; "Maya has a dog." → "You have a
dog."); anything the rule is unsure of stays as written, so nothing is invented. The question comes from
templates keyed on the kind, picked by a hash of the fact so the dataset is the same on every run. A
kind with several facts also gets one example listing them all.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from trainer.examples import DatasetReport, Example
from trainer.sources import SourceError

PROMPTS = {
    "preference": ("What do you know about my preferences?", "What are my tastes like?",
                   "Tell me one of my preferences."),
    "fact": ("What do you know about me?", "Tell me something you know about me.",
             "What's one thing you remember about me?"),
    "habit": ("What are some of my habits?", "Remind me of something about my habits.",
              "What do I usually do?"),
    "routine": ("What does my routine look like?", "Remind me of part of my routine."),
    "goal": ("What am I working towards?", "Remind me of one of my goals."),
    "relationship": ("What do you know about the people in my life?", "Who is important to me?"),
    "opinion": ("What do I think about things?", "Remind me of one of my opinions."),
    "dislike": ("What don't I like?", "Tell me something I dislike."),
}
PROMPTS["belief"] = PROMPTS["opinion"]
OTHER = ("What do you know about my {kinds}?", "Remind me of something about my {kinds}.")
LIST_PROMPT = "List everything you know about my {kinds}."
LIST_MAX = 20  # facts per listing example

IRREGULAR = {"is": "are", "was": "were", "has": "have", "does": "do", "goes": "go", "isn't": "aren't",
             "wasn't": "weren't", "hasn't": "haven't", "doesn't": "don't"}
VERBS = set("""prefer like love hate enjoy dislike want need use drink eat live work play read write speak
own keep avoid believe think feel tend run walk cycle swim cook bake watch listen study teach wake sleep
take visit call practise practice collect follow support wear drive travel grow plan spend start try
worry care value remember forget hope wish know understand struggle find get make mean volunteer train
attend meditate journal sing paint draw knit garden commute rent share miss""".split())
ADVERBS = {"usually", "often", "always", "never", "rarely", "sometimes", "generally", "mostly", "still",
           "also", "really", "typically", "occasionally", "seldom", "regularly", "frequently", "only",
           "already", "strongly", "actively"}
PLURAL = {"are", "were", "have", "do", "don't", "aren't", "weren't", "haven't"}  # after "they"
SUBJECTS = {"he", "she", "they", "user", "the user"}
POSSESSIVES = {"his", "her", "their", "the user's", "user's"}
THIRD_PERSON = re.compile(r"\b(?:he|she|him|her|his|hers|they|them|their|theirs)\b", re.I)
REFLEXIVE = re.compile(r"\b(?:himself|herself|themselves|themself)\b", re.I)


def gestalt_files(vault=None, path: str | Path | None = None, user: str | None = None) -> list[Path]:
    """The gestalt files to read: `path` (a file or folder), else the vault's gestalts folder."""
    if path is not None:
        folder = Path(path)
        if folder.is_file():
            return [folder]
    elif vault is not None:
        folder = Path(getattr(vault, "gestalts_dir", None) or Path(vault) / "gestalts")
    else:
        raise SourceError("gestalts: a vault or a path is needed")
    if not folder.is_dir():
        raise SourceError(f"{folder}: no such gestalts file or folder")
    files = sorted(folder.glob("*.jsonl"))
    if user is not None:
        files = [f for f in files if f.stem.casefold() == user.casefold()]
        if not files:
            have = ", ".join(f.stem for f in sorted(folder.glob("*.jsonl"))) or "none"
            raise SourceError(f"{folder}: no gestalts for user {user!r} (users with gestalts: {have})")
    if not files:
        raise SourceError(f"{folder}: no gestalts yet (expected <user>.jsonl files)")
    return files


def _check(rec) -> str | None:
    """Why a record cannot be used, or None."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    text = rec.get("text")
    if not isinstance(text, str):
        return f"text: expected a string, got {'nothing' if text is None else type(text).__name__}"
    if not text.strip() and not rec.get("deleted"):
        return "text: empty"
    for name in ("id", "user", "kind"):
        if rec.get(name) is not None and not isinstance(rec[name], str):
            return f"{name}: expected a string, got {type(rec[name]).__name__}"
    if rec.get("deleted") is not None and not isinstance(rec["deleted"], bool):
        return f"deleted: expected true or false, got {rec['deleted']!r}"
    if rec.get("sources") is not None and not isinstance(rec["sources"], list):
        return f"sources: expected a list of log record ids, got {type(rec['sources']).__name__}"
    return None


def read_gestalts(path: Path, report: DatasetReport) -> list[tuple[int, dict]]:
    """(line, record) for every well-formed record in one file, in file order."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        report.reject(str(path), None, f"cannot read: {exc.strerror or exc}")
        return []
    lines = raw.split(b"\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            torn = n == len(lines) and not raw.endswith(b"\n")
            report.reject(str(path), n, "torn last line (an interrupted write), skipped" if torn
                          else f"invalid JSON: {getattr(exc, 'msg', None) or exc.reason}")
            continue
        if reason := _check(rec):
            report.reject(str(path), n, reason)
            continue
        out.append((n, rec))
    return out


def _base_verb(word: str) -> str | None:
    """"prefers" → "prefer" when the word is a third-person verb we know; else None."""
    w = word.casefold()
    if w in IRREGULAR:
        return IRREGULAR[w]
    if not w.endswith("s"):
        return None
    for cut, add in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("s", "")):
        if w.endswith(cut) and (base := w[: -len(cut)] + add) in VERBS:
            return base
    return None


def second_person(text: str, name: str | None = None) -> str:
    """The fact addressed to the user, or the text unchanged when the rewrite would be a guess."""
    words = text.strip().split(" ")
    lowered = [w.casefold() for w in words]
    names = {n.casefold() for n in (name,) if n}
    two = " ".join(lowered[:2])
    owner = lowered[0].endswith("'s") and lowered[0].removesuffix("'s") in names  # "Maya's sister"
    if two in POSSESSIVES or lowered[0] in POSSESSIVES or owner:
        skip = 2 if two in POSSESSIVES else 1
        rest = " ".join(words[skip:])
        return text if THIRD_PERSON.search(rest) else "Your " + rest
    skip = 2 if two in SUBJECTS else 1 if lowered[0] in SUBJECTS | names else 0
    adverbs = []
    while skip + len(adverbs) < len(words) and lowered[skip + len(adverbs)] in ADVERBS:
        adverbs.append(lowered[skip + len(adverbs)])
    i = skip + len(adverbs)
    if i >= len(words) - 1:
        return text
    plural_subject = lowered[0] == "they"
    verb = lowered[i] if plural_subject and lowered[i] in VERBS | PLURAL else _base_verb(words[i])
    rest = " ".join(words[i + 1:])
    if verb is None or THIRD_PERSON.search(rest):
        return text
    return " ".join(["You", *adverbs, verb, REFLEXIVE.sub("yourself", rest)])


def _plural(kind: str) -> str:
    if kind.endswith("s"):
        return kind
    return kind[:-1] + "ies" if kind.endswith("y") and kind[-2:-1] not in "aeiou" else kind + "s"


def _pick(options: tuple[str, ...], seed: str) -> str:
    return options[int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) % len(options)]


def load_gestalts(vault=None, path: str | Path | None = None, user: str | None = None) -> DatasetReport:
    """Every live gestalt as a question → fact example, plus one listing per kind with several facts."""
    report = DatasetReport()
    latest: dict[str, tuple[str, int, dict]] = {}  # file#id (ids are per user file) → (file, line, record)
    for file in gestalt_files(vault, path, user):
        for n, rec in read_gestalts(file, report):
            if user is not None and rec.get("user") and rec["user"].casefold() != user.casefold():
                continue
            key = f"{file}#{rec['id']}" if rec.get("id") else f"{file}:{n}"
            latest.pop(key, None)  # an edit moves the fact to where it was last written
            latest[key] = (str(file), n, {**rec, "user": rec.get("user") or user or file.stem})
    by_kind: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (user, kind): one listing never mixes users
    for key, (file, n, rec) in latest.items():
        if rec.get("deleted"):
            continue
        kind = (rec.get("kind") or "fact").strip().casefold() or "fact"
        fact = second_person(" ".join(rec["text"].split()), rec["user"])
        prompts = PROMPTS.get(kind) or tuple(p.format(kinds=_plural(kind)) for p in OTHER)
        report.examples.append(Example(({"role": "user", "content": _pick(prompts, key)},), fact, "gestalts",
                                       f"{file}:{n}", tier=kind))
        by_kind.setdefault((rec["user"].casefold(), kind), []).append((f"{file}:{n}", fact))
    for (_, kind), facts in by_kind.items():
        if len(facts) < 2:
            continue
        ask = ("List everything you know about me." if kind == "fact"
               else LIST_PROMPT.format(kinds=_plural(kind)))
        for start in range(0, len(facts), LIST_MAX):
            chunk = facts[start:start + LIST_MAX]
            target = "\n".join(f"- {fact}" for _, fact in chunk)
            report.examples.append(Example(({"role": "user", "content": ask},), target, "gestalts",
                                           chunk[0][0], tier=kind))
    return report
