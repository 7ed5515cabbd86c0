"""Examples from a speaker-labelled transcript: chat logs, interviews, screenplays, plays.

Three layouts are recognised and chosen per file by how many lines each one explains:
inline `NAME: text`, inline `NAME. text` (play editions: `Ham. To be…`), and blocks where the name stands
alone on its line and the speech follows until a blank line or the next name (screenplays, plays).
Abbreviated names (`HAM.`, only where labels carry a stop: plays, not chats where "Ann" and "Annabel" are
two people) are folded into the one known speaker they are a prefix of, unless the two ever answer each
other. Chat exports with dates (`12/03/2024, 10:02 - Ann: hi`, `[12/03/24, 10:02:33] Ann: hi`) count as
inline. The chosen
speaker's speeches are the targets; the speeches before them are context, others prefixed with their
names so several voices survive in one "user" message.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from trainer.data.examples import DatasetReport, Example
from trainer.data.sources import SourceError, merge_roles, read_text, require_file

_DATE = r"\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4},?\s+"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp]\.?[Mm]\.?)?"
_TIME = rf"(?:\[?(?:{_DATE})?{_CLOCK}\]?\s*(?:[-–—]\s+)?)?"  # chat exports: "[10:32] Ann: hi"
_NAME = r"[^\W\d_][\w'’\-. ]{0,38}?"
_EXT = r"(?:\s*\([^)]{1,24}\))?"  # screenplay extensions: (V.O.), (CONT'D)
INLINE = re.compile(rf"^{_TIME}(?P<name>{_NAME}){_EXT}\s*:\s+(?P<text>\S.*)$")
INLINE_DOT = re.compile(r"^(?P<name>[^\W\d_][\w'’\-]*(?: [^\W\d_][\w'’\-]*){0,2})\.\s+(?P<text>\S.*)$")
BLOCK = re.compile(rf"^(?P<name>{_NAME}){_EXT}\s*(?P<punct>[.:])?$")
HEADING = re.compile(r"^(?:#{1,6}\s|(?:ACT|SCENE|CHAPTER|PROLOGUE|EPILOGUE|DRAMATIS PERSONAE)\b"
                     r"|(?:INT|EXT|I/E|INT\./EXT)[.\s]|FADE (?:IN|OUT)|(?:SMASH |MATCH |JUMP )?CUT TO\b"
                     r"|DISSOLVE TO\b|THE END\b)")
NUMBERED_HEADING = re.compile(r"^(?:act|scene|chapter|part)\s+(?:[ivxlc]+|\d+)\b[.:]?", re.I)
DIRECTION = re.compile(r"^(?:\[[^\]]*\]|\([^)]*\))$|^(?:Exeunt|Manet|Manent)\b"
                       r"|^(?:Enter|Re-enter|Re-Enter|Exit)(?:[.,;]|$|\s+[A-Z])")
INLINE_BRACKETS = re.compile(r"\s*\[[^\]]*\]")
LEADING_PAREN = re.compile(r"^\([^)]*\)\s*")
PLACEHOLDER = re.compile(r"^<[^<>]+>$")  # chat exports: "<Media omitted>"
ROMAN = re.compile(r"^[IVXLC]+$")
NOT_LABELS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "no", "yes", "oh", "ah", "well", "ok",
              "okay", "so", "vol", "fig", "pp", "etc", "vs", "note", "ps", "nb"}
LAYOUTS = ("inline", "blocks", "inline-dot")  # tie-break order


@dataclass
class Speech:
    speaker: str
    line: int
    section: int  # headings (ACT, SCENE, INT.) start a new section; context never crosses one
    lines: list[str] = field(default_factory=list)
    breaks: set[int] = field(default_factory=set)  # indexes that start a merged speech: always a newline

    @property
    def text(self) -> str:
        """Lines joined: a lowercase start continues a wrapped sentence; anything else keeps its break."""
        out = ""
        for i, piece in enumerate(self.lines):
            joint = "\n" if i in self.breaks or not piece[:1].islower() else " "
            out = piece if not out else out + joint + piece
        return out


@dataclass
class Parsed:
    layout: str
    speeches: list[Speech]
    marked: set[str] = field(default_factory=set)  # casefolded labels written with a stop ("HAM.")

    def counts(self) -> Counter:
        return Counter(s.speaker for s in self.speeches)


def _is_heading(s: str) -> bool:
    return bool(HEADING.match(s) or NUMBERED_HEADING.match(s))


def _names_match(label: str, speaker: str | None) -> bool:
    """A label is the speaker or an abbreviation of it, or the speaker was given abbreviated."""
    if not speaker:
        return False
    a, b = label.casefold(), speaker.casefold()
    return a == b or b.startswith(a) or a.startswith(b)


def _plausible(name: str, layout: str, punct: str | None) -> bool:
    """Could this be a speaker label at all? (Frequency is checked afterwards.)"""
    words = name.split()
    if not words or len(words) > 4 or ROMAN.match(name) or len(name) < 2 or _is_heading(name):
        return False
    if name.casefold().rstrip(".") in NOT_LABELS:
        return False
    upper = name == name.upper()
    capitalised = all(w[0].isupper() for w in words) and len(words) <= 3
    if layout == "inline-dot":
        return upper or capitalised
    if layout == "blocks":  # "Hor." alone on a line; a mixed-case word needs the label's stop
        return upper or (punct is not None and capitalised and len(words) <= 2)
    return True


def _strong(name: str, layout: str) -> bool:
    """Labels trusted on first sight: an UPPERCASE name (all layouts), a short capitalised `Name:`."""
    words = name.split()
    if name == name.upper():
        return True
    return layout == "inline" and len(words) <= 2 and all(w[0].isupper() for w in words)


def _candidates(lines: list[str], layout: str) -> dict[int, tuple[str, str, bool]]:
    """Line index → (label, text on the same line, written with a stop) for every line shaped like a
    label in this layout."""
    found: dict[int, tuple[str, str, bool]] = {}
    for i, raw in enumerate(lines):
        s = raw.strip()
        if not s or _is_heading(s) or DIRECTION.match(s):
            continue
        if layout == "blocks":
            m = BLOCK.match(s)
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if m and nxt and _plausible(m["name"].strip(), layout, m["punct"]):
                found[i] = (m["name"].strip(), "", m["punct"] is not None)
        else:
            m = (INLINE if layout == "inline" else INLINE_DOT).match(s)
            if m and _plausible(m["name"].strip(), layout, None):
                found[i] = (m["name"].strip(), m["text"], layout == "inline-dot")
    return found


def _clean(text: str, first: bool) -> str:
    text = INLINE_BRACKETS.sub("", text).strip()
    if PLACEHOLDER.match(text):
        return ""
    return LEADING_PAREN.sub("", text).strip() if first else text


def _parse_layout(lines: list[str], layout: str, speaker: str | None) -> Parsed:
    cands = _candidates(lines, layout)
    freq = Counter(c[0].casefold() for c in cands.values())

    def kin(name: str) -> int:  # uses of this name and of its abbreviations or expansions
        key = name.casefold()
        return sum(n for k, n in freq.items() if k.startswith(key) or key.startswith(k))

    labels = {i: c for i, c in cands.items()
               if kin(c[0]) >= 2 or _names_match(c[0], speaker) or _strong(c[0], layout)}
    speeches: list[Speech] = []
    cur: Speech | None = None
    section = 0
    for i, raw in enumerate(lines):
        s = raw.strip()
        if i in labels:
            name, first, _ = labels[i]
            cur = Speech(name, i + 1, section)
            speeches.append(cur)
            if _clean(first, True):
                cur.lines.append(_clean(first, True))
            continue
        if _is_heading(s):
            section += 1
        if not s or _is_heading(s):
            cur = None
            continue
        if DIRECTION.match(s) or cur is None:
            continue
        if cleaned := _clean(s, not cur.lines):
            cur.lines.append(cleaned)
    marked = {labels[sp.line - 1][0].casefold() for sp in speeches if labels[sp.line - 1][2]}
    return Parsed(layout, [sp for sp in speeches if sp.lines], marked)


def _canonical(parsed: Parsed, speaker: str | None) -> None:
    """Fold abbreviations into the one longer known name they begin, and merge a speaker's consecutive
    speeches (a screenplay's CONT'D, a chat message split over lines) into one turn."""
    display: dict[str, str] = {}
    for name, _ in Counter(s.speaker for s in parsed.speeches).most_common():
        display.setdefault(name.casefold(), name)
    known = set(display) | ({speaker.casefold()} if speaker else set())
    sp = parsed.speeches
    talk = {frozenset((a.speaker.casefold(), b.speaker.casefold())) for a, b in pairwise(sp)
            if a.section == b.section}
    for key in [k for k in display if k in parsed.marked]:
        longer = [k for k in known if k != key and k.startswith(key)]
        if len(longer) == 1 and frozenset((key, longer[0])) not in talk:
            target = longer[0]
            display[key] = display.get(target, speaker if target == (speaker or "").casefold() else target)
    merged: list[Speech] = []
    for sp in parsed.speeches:
        sp.speaker = display[sp.speaker.casefold()]
        if merged and merged[-1].speaker == sp.speaker and merged[-1].section == sp.section:
            merged[-1].breaks.add(len(merged[-1].lines))
            merged[-1].lines.extend(sp.lines)
        else:
            merged.append(sp)
    parsed.speeches = merged


def parse_transcript(text: str, speaker: str | None = None) -> Parsed:
    """Parse with every layout and keep the one that attributes the most lines to speakers."""
    lines = text.split("\n")
    best: Parsed | None = None
    for layout in LAYOUTS:
        parsed = _parse_layout(lines, layout, speaker)
        score = sum(len(s.lines) for s in parsed.speeches)
        if best is None or score > sum(len(s.lines) for s in best.speeches):
            best = parsed
    assert best is not None
    _canonical(best, speaker)
    return best


def resolve_speaker(parsed: Parsed, speaker: str, where: str) -> str:
    """The speaker's name as the transcript writes it; unknown → an error listing who does speak."""
    counts = parsed.counts()
    exact = [n for n in counts if n.casefold() == speaker.casefold()]
    prefixed = [n for n in counts if n.casefold().startswith(speaker.casefold())]
    if exact or len(prefixed) == 1:
        return (exact or prefixed)[0]
    found = ", ".join(f"{n} ({c})" for n, c in counts.most_common()) or "none"
    raise SourceError(f"{where}: no speaker {speaker!r} in this transcript; speakers found: {found}")


def load_transcript(path: Path, speaker: str, *, window: int = 10) -> DatasetReport:
    """The speaker's speeches as targets, the up-to-`window` speeches before each as context."""
    report = DatasetReport()
    text = read_text(require_file(Path(path)), report)
    if text is None:
        return report
    parsed = parse_transcript(text, speaker)
    name = resolve_speaker(parsed, speaker, str(path))
    speeches = parsed.speeches
    for i, sp in enumerate(speeches):
        if sp.speaker != name:
            continue
        turns = [("assistant", p.text) if p.speaker == name else ("user", f"{p.speaker}: {p.text}")
                 for p in speeches[max(0, i - window):i] if p.section == sp.section]
        report.examples.append(Example(merge_roles(turns), sp.text, "transcript", f"{path}:{sp.line}"))
    return report
