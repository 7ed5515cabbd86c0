"""Knowledge examples from the user's gestalts: the distilled facts Home's memory keeps about them.

Storage (vault/gestalts.py owns it; this module only reads through it): one markdown file per fact,
`<vault>/gestalts/<user>/<id>.md`, a small front-matter header (id, user, kind, said, created, updated,
hash, sources) and the fact as the body. The files are the current truth: an edit is in the file, a
forgotten fact has no file. A malformed file is a rejection naming its line and field, never an error.

`kind` is free text (preference, fact, habit, goal, relationship, ...). Each fact becomes a question
about the user answered with the fact's own text, turned into the second person where a simple rule is
safe ("Prefers tea." → "You prefer tea."; "The user has a dog." → "You have a dog."); anything the rule
is unsure of stays as written, so nothing is invented. The question comes from templates keyed on the
kind, picked by a hash of the fact's user and id so the dataset is the same on every run. A kind with
several facts also gets one example listing them all.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from trainer.data.examples import DatasetReport, Example
from trainer.data.sources import SourceError
from vault import gestalts as gs

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
    """The gestalt files to read: `path` (one .md file, a user's folder, or a gestalts folder of user
    folders), else the vault's gestalts folder; only `user`'s when given."""
    if path is not None:
        root = Path(path)
        if root.is_file():
            return [root]
    elif vault is not None:
        root = Path(getattr(vault, "gestalts_dir", None) or Path(vault) / "gestalts")
    else:
        raise SourceError("gestalts: a vault or a path is needed")
    if not root.is_dir():
        raise SourceError(f"{root}: no such gestalts file or folder")
    folders = [root] if _md(root) else sorted(p for p in root.iterdir() if p.is_dir() and _md(p))
    if user is not None:
        have = ", ".join(f.name for f in folders) or "none"
        folders = [f for f in folders if f.name.casefold() == user.casefold()]
        if not folders:
            raise SourceError(f"{root}: no gestalts for user {user!r} (users with gestalts: {have})")
    if not folders:
        raise SourceError(f"{root}: no gestalts yet (expected <user>/<id>.md files)")
    return [f for folder in folders for f in _md(folder)]


def _md(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.md") if p.is_file() and not p.name.startswith("."))


def read_gestalts(files: list[Path], report: DatasetReport) -> list[gs.Gestalt]:
    """Every well-formed gestalt in `files`, by user, then when it was said; the rest are rejections."""
    out = []
    for path in files:
        try:
            out.append(gs.read(path))
        except gs.GestaltError as exc:
            report.reject(str(path), exc.line or None, exc.detail)
    return sorted(out, key=lambda g: (g.user, gs.parse_time(g.said).timestamp(), g.id))


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
    """Every gestalt as a question → fact example, plus one listing per kind with several facts."""
    report = DatasetReport()
    by_kind: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (user, kind): one listing never mixes users
    for g in read_gestalts(gestalt_files(vault, path, user), report):
        origin = str(g.path)
        fact = second_person(" ".join(g.text.split()), g.user)
        prompts = PROMPTS.get(g.kind) or tuple(p.format(kinds=_plural(g.kind)) for p in OTHER)
        report.examples.append(Example(({"role": "user", "content": _pick(prompts, f"{g.user}/{g.id}")},), fact,
                                       "gestalts", origin, tier=g.kind))
        by_kind.setdefault((g.user.casefold(), g.kind), []).append((origin, fact))
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
