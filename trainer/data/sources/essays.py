"""Examples from the user's essays: how they open, build, revise and sum up an argument.

Each markdown/text file under the folder becomes up to four tiers (Example.tier), all written as a user
request answered by the essay's own text, so the adapter learns the voice and never invented content:

- "opening": the text so far (the opening paragraph, later the preceding ~300 words) → the next chunk
  of at most ~300 words, so long essays become several moderate targets instead of one huge one;
- "body": "Write an essay titled '…'" plus its thesis (the first sentences) → the essay (its first ~600
  words);
- "revision": a draft → its final version, where the two pair up by name (`foo.draft.md`/`foo.md`,
  `foo-draft.md`/`foo-final.md`, `drafts/foo.md`/`foo.md`); long pairs are aligned paragraph by
  paragraph and only the passages that changed are kept;
- "note": "In a few sentences, what is your view on …?" → the conclusion paragraph when it is short,
  else its first sentences (≤ ~60 words), else the thesis.

A draft that has a final is used only for the revision tier (the final is the voice to learn); a draft
with no final is an ordinary essay. Unreadable files are rejections naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from itertools import pairwise
from pathlib import Path

from trainer.data.examples import DatasetReport, Example
from trainer.data.sources import SourceError, read_text
from vault.frontmatter import read_front_matter

SUFFIXES = (".md", ".markdown", ".txt")
CHUNK_WORDS = 300  # opening/revision targets and the context before a continuation
BODY_WORDS = 600  # the body tier's target: the essay's beginning up to about this many words
NOTE_WORDS = 60
THESIS_WORDS = 50
TITLE_WORDS = 12

COMMENT = re.compile(r"<!--.*?-->", re.S)
ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SETEXT = re.compile(r"^(=+|-+)\s*$")
RULE = re.compile(r"^(?:[-*_]\s*){3,}$")
FENCE = re.compile(r"^(```|~~~)")
IMAGE_ONLY = re.compile(r"^!\[[^\]]*\]\([^)]*\)$")
LIST_ITEM = re.compile(r"^(?:[-*+]\s|\d+[.)]\s|>)")
SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
DRAFT = re.compile(r"[._ -]+(?:draft|rough)[._ -]?\d*$", re.I)
FINAL = re.compile(r"[._ -]+(?:final|published)$", re.I)
DRAFT_DIRS = ("drafts", "draft")


@dataclass(frozen=True)
class Para:
    text: str
    line: int
    heading: bool = False

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class Essay:
    path: Path
    title: str
    paras: list[Para]  # after the title; headings kept as markdown lines

    @property
    def prose(self) -> list[Para]:
        return [p for p in self.paras if not p.heading]

    def text(self) -> str:
        return "\n\n".join(p.text for p in self.paras)


def essay_files(root: Path) -> list[Path]:
    """Essay files under `root` (or `root` itself), skipping hidden folders such as `.obsidian`."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise SourceError(f"{root}: no such essays folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise SourceError(f"{root}: no essays found (expected {', '.join(SUFFIXES)} files)")
    return files


def pair_key(path: Path) -> tuple[tuple[Path, str], str]:
    """((folder, base name), role) where role is draft, final or plain: how drafts meet their finals."""
    stem, folder, role = path.stem, path.parent, "plain"
    if DRAFT.search(stem):
        stem, role = DRAFT.sub("", stem), "draft"
    if folder.name.casefold() in DRAFT_DIRS:
        folder, role = folder.parent, "draft"
    if role == "plain" and FINAL.search(stem):
        stem, role = FINAL.sub("", stem), "final"
    return (folder, stem.casefold()), role


def _blocks(lines: list[str], first_line: int) -> list[Para]:
    """Paragraphs split at blank lines; headings are their own blocks; fenced code stays verbatim."""
    out: list[Para] = []
    cur: list[str] = []
    start = 0
    fence: str | None = None

    def flush() -> None:
        nonlocal cur
        if cur:
            out.append(Para(_join(cur), start))
            cur = []

    for n, raw in enumerate(lines, first_line):
        line = raw.rstrip()
        if fence:
            cur.append(line)
            if line.startswith(fence):
                out.append(Para("\n".join(cur), start))
                cur, fence = [], None
            continue
        if FENCE.match(line):
            flush()
            cur, start, fence = [line], n, line[:3]
            continue
        if ATX.match(line.strip()):
            flush()
            out.append(Para(line.strip(), n, heading=True))
            continue
        if SETEXT.match(line.strip()) and len(cur) == 1:  # "Title\n=====": the line above is a heading
            marker = "#" if line.strip()[0] == "=" else "##"
            out.append(Para(f"{marker} {cur[0].strip()}", start, heading=True))
            cur = []
            continue
        if not line.strip() or RULE.match(line.strip()):
            flush()
            continue
        if not cur:
            start = n
        cur.append(raw)  # trailing spaces kept: two of them are a markdown hard break
    if fence:  # an unclosed fence: keep what was there
        out.append(Para("\n".join(cur), start))
    else:
        flush()
    return [p for p in out if not IMAGE_ONLY.match(p.text)]


def _join(lines: list[str]) -> str:
    """Markdown soft wraps become spaces; list items, quotes and hard breaks keep their newline."""
    text = lines[0].strip()
    for prev, line in pairwise(lines):
        hard = prev.endswith(("  ", "\\")) or LIST_ITEM.match(line.strip())
        text = text.rstrip("\\ ") + ("\n" if hard else " ") + line.strip()
    return text


def parse_essay(text: str, path: Path) -> Essay | str:
    """The essay's title and paragraphs, or the reason there is nothing to learn from."""
    header = read_front_matter(text, strict=False)  # an essay's YAML may hold lists: only the title counts
    title = header.get("title") or None
    offset, text = header.body_line, header.body
    text = COMMENT.sub(lambda c: "\n" * c.group(0).count("\n"), text)
    paras = _blocks(text.split("\n"), offset)
    top = ATX.match(paras[0].text) if paras and paras[0].heading else None
    if top and top.group(1) == "#":
        paras.pop(0)
        title = title or top.group(2)
    elif paras and title is None and _looks_like_title(paras[0]) and len(paras) > 1:
        title = paras.pop(0).text
    if not any(not p.heading for p in paras):
        return "no paragraphs after the title" if paras or title else "no text"
    return Essay(path, title or _title_from_name(path), paras)


def _looks_like_title(p: Para) -> bool:
    ends = p.text.rstrip()[-1:]
    return "\n" not in p.text and p.words <= TITLE_WORDS and ends not in (".", ",", ";", ":")


def _title_from_name(path: Path) -> str:
    stem = FINAL.sub("", DRAFT.sub("", path.stem))
    words = re.sub(r"[-_]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else path.stem


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def first_sentences(text: str, limit: int) -> str | None:
    """The longest run of whole leading sentences within `limit` words (None if the first is longer)."""
    taken: list[str] = []
    for s in sentences(text):
        if len(" ".join(taken + [s]).split()) > limit:
            break
        taken.append(s)
    return " ".join(taken) or None


def units(essay: Essay) -> list[Para]:
    """Chunkable pieces: paragraphs, each heading glued to what follows, long paragraphs split at
    sentence ends into pieces of at most CHUNK_WORDS."""
    out: list[Para] = []
    pending: Para | None = None
    for p in essay.paras:
        if p.heading:
            pending = Para(f"{pending.text}\n\n{p.text}", pending.line, True) if pending else p
            continue
        pieces = [p] if p.words <= CHUNK_WORDS else _split_long(p)
        if pending:
            pieces[0] = Para(f"{pending.text}\n\n{pieces[0].text}", pending.line)
            pending = None
        out.extend(pieces)
    if pending and out:
        out[-1] = Para(f"{out[-1].text}\n\n{pending.text}", out[-1].line)
    return out


def _split_long(p: Para) -> list[Para]:
    pieces: list[list[str]] = [[]]
    for s in sentences(p.text):
        if pieces[-1] and len(" ".join(pieces[-1] + [s]).split()) > CHUNK_WORDS:
            pieces.append([])
        pieces[-1].append(s)
    return [Para(" ".join(ss), p.line) for ss in pieces if ss]


def _pack(parts: list[Para], limit: int) -> list[list[Para]]:
    """Consecutive parts grouped greedily into groups of at most `limit` words (at least one each)."""
    groups: list[list[Para]] = []
    size = 0
    for p in parts:
        if groups and size + p.words <= limit:
            groups[-1].append(p)
            size += p.words
        else:
            groups.append([p])
            size = p.words
    return groups


def _text(parts: list[Para]) -> str:
    return "\n\n".join(p.text for p in parts)


def _subject(title: str) -> str:
    """A title as the object of "what is your view on …": "On walking" → "walking"; a Title Case
    title is quoted instead of lowercased, since its capitals may be names."""
    s = re.sub(r"^(?:on|about|concerning)\s+", "", title.strip(), flags=re.I).rstrip(" .!:;")
    words = s.split()
    capitals = sum(w[:1].isupper() for w in words[1:])
    if capitals and capitals * 2 >= len(words) - 1:
        return f"'{s}'"
    first = words[0] if words else ""
    if first and first != "I" and first != first.upper() and not first[1:2].isupper():
        s = s[0].lower() + s[1:]
    return s


def essay_examples(essay: Essay) -> list[Example]:
    """The opening, body and note tiers for one essay."""
    out: list[Example] = []
    origin = str(essay.path)

    def add(prompt: str, target: str, line: int, tier: str) -> None:
        out.append(Example(({"role": "user", "content": prompt},), target, "essays", f"{origin}:{line}",
                           tier=tier))

    parts = units(essay)
    if len(parts) == 1:  # one paragraph: its first third opens, the rest continues
        ss = sentences(parts[0].text)
        cut = max(1, len(ss) // 3)
        if len(ss) >= 3:
            parts = [Para(" ".join(ss[:cut]), parts[0].line), Para(" ".join(ss[cut:]), parts[0].line)]
    title = essay.title
    done = 1
    for group in _pack(parts[1:], CHUNK_WORDS):
        before = _pack(list(reversed(parts[:done])), CHUNK_WORDS)[0][::-1]
        lead = "" if len(before) == done else "…"
        add(f"Continue this essay titled '{title}':\n\n{lead}{_text(before)}", _text(group), group[0].line,
            "opening")
        done += len(group)

    prose = essay.prose
    thesis = first_sentences(prose[0].text, THESIS_WORDS)
    body = _pack(units(essay), BODY_WORDS)[0]
    if body:
        ask = f"Write an essay titled '{title}'." + (f" Its main point: {thesis}" if thesis else "")
        add(ask, _text(body), body[0].line, "body")

    last = prose[-1]
    if len(prose) > 1 and 8 <= last.words <= NOTE_WORDS:
        note, line = last.text, last.line
    else:
        note, line = first_sentences(last.text, NOTE_WORDS) if len(prose) > 1 else None, last.line
        if note is None:
            note, line = first_sentences(prose[0].text, NOTE_WORDS), prose[0].line
    if note:
        ask = (f"{title.strip()} Answer in a few sentences." if title.rstrip().endswith("?")
               else f"In a few sentences, what is your view on {_subject(title)}?")
        add(ask, note, line, "note")
    return out


def revision_examples(draft: Essay, final: Essay) -> list[Example]:
    """Draft → final: whole texts when short, else the aligned passages that changed."""
    title = final.title

    def ex(prompt: str, target: str, line: int) -> Example:
        return Example(({"role": "user", "content": prompt},), target, "essays", f"{final.path}:{line}",
                       tier="revision")

    d_text, f_text = draft.text(), final.text()
    if d_text == f_text:
        return []
    if len(f_text.split()) <= BODY_WORDS and len(d_text.split()) <= BODY_WORDS * 3 // 2:
        return [ex(f"Revise this draft of my essay '{title}':\n\n{d_text}", f_text, final.paras[0].line)]
    d, f = draft.paras, final.paras
    norm = [[" ".join(p.text.casefold().split()) for p in ps] for ps in (d, f)]
    spans: list[tuple[int, int, int, int] | None] = []  # None: an unchanged stretch, which ends a passage
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, norm[0], norm[1], autojunk=False).get_opcodes():
        if tag == "equal":
            spans.append(None)
        elif tag == "replace" and i2 - i1 == j2 - j1:  # edited in place: pair paragraph by paragraph
            spans.extend((i1 + k, i1 + k + 1, j1 + k, j1 + k + 1) for k in range(i2 - i1))
        else:
            spans.append((i1, i2, j1, j2))
    out: list[Example] = []
    group: list[tuple[int, int, int, int]] = []

    def emit() -> None:
        if not group:
            return
        i1, i2, j1, j2 = group[0][0], group[-1][1], group[0][2], group[-1][3]
        if i1 == i2 or j1 == j2:  # a pure insertion or deletion: show it with the paragraph before it
            if i1 and j1:
                i1, j1 = i1 - 1, j1 - 1
            else:
                i2, j2 = min(i2 + 1, len(d)), min(j2 + 1, len(f))
        before, after = d[i1:i2], f[j1:j2]
        if before and after and _text(before) != _text(after):
            out.append(ex(f"Revise this passage from my draft of '{title}':\n\n{_text(before)}",
                          _text(after), after[0].line))
        group.clear()

    for span in spans:
        if span is None:
            emit()
            continue
        size = sum(p.words for g in group for p in f[g[2]:g[3]])
        if size and size + sum(p.words for p in f[span[2]:span[3]]) > CHUNK_WORDS:
            emit()
        group.append(span)
    emit()
    return out


def load_essays(path: Path) -> DatasetReport:
    """Every essay under `path` (a folder, searched recursively, or one file) as tiered examples."""
    report = DatasetReport()
    root = Path(path)
    parsed: dict[Path, Essay] = {}
    for file in essay_files(root):
        text = read_text(file, report)
        if text is None:
            continue
        essay = parse_essay(text, file)
        if isinstance(essay, str):
            report.reject(str(file), None, essay)
        else:
            parsed[file] = essay
    groups: dict[tuple[Path, str], dict[str, list[Path]]] = {}
    for file in parsed:
        key, role = pair_key(file)
        groups.setdefault(key, {}).setdefault(role, []).append(file)
    for roles in groups.values():
        finals = roles.get("final") or roles.get("plain") or []
        for file in roles.get("final", []) + roles.get("plain", []):
            report.examples.extend(essay_examples(parsed[file]))
        for draft in roles.get("draft", []):
            if not finals:  # no final version: the draft is the only text we have
                report.examples.extend(essay_examples(parsed[draft]))
                continue
            pairs = revision_examples(parsed[draft], parsed[finals[0]])
            if not pairs:
                report.reject(str(draft), None,
                              f"draft is identical to {finals[0].name}; no revision to learn")
            report.examples.extend(pairs)
    return report
