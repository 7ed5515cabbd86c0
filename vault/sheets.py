"""Character sheets: markdown bios → Character Card V2 `data`, so a folder of sheets becomes personas.

Why a tolerant format: people write bios in whatever shape they like. A sheet is markdown:

    ---                          optional front matter, `key: value` lines (name, hotkey, tags, nickname)
    name: Wren Alder
    ---
    # Wren Alder                 the first level-1 heading is the name when front matter gives none
    Text before the first section: a summary (→ description).
    ## Traits                    level-1/2 headings start sections, matched by meaning (aliases below),
    ## Speech habits             case, punctuation and order do not matter; deeper headings stay in the
    ## Background                text of the section they are in; unknown sections are kept as they are
    ## Relationships             (bullets: "**Name** — note", "Name: note", "Name (sister): note")
    ## Goals / ## Conflicts      (bullets or sentences: each one a scenario for `home data synth`)

Plain `Key: value` lines right under the name heading (before any prose) are front matter too. Every
section is kept verbatim under `extensions.home.sheet.sections`, so nothing the author wrote is lost
and `home data synth` can build prompts from it later.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PersonaError
from .frontmatter import FrontMatterError, parse_field, read_front_matter
from .personas import V2_FIELDS, Persona, slug

SUFFIXES = (".md", ".markdown", ".txt")
# canonical section → heading aliases (normalised: lowercase words, no punctuation)
SECTIONS: dict[str, tuple[str, ...]] = {
    "summary": ("summary", "overview", "about", "introduction", "in short"),
    "traits": ("traits", "personality", "personality traits", "character", "temperament", "quirks",
               "character traits"),
    "speech": ("speech habits", "speech", "voice", "way of speaking", "speaking style", "how they speak",
               "dialogue style", "manner of speech", "speech patterns", "verbal tics"),
    "background": ("background", "history", "backstory", "biography", "bio", "past", "life story"),
    "appearance": ("appearance", "looks", "physical description"),
    "relationships": ("relationships", "relations", "family", "friends", "connections", "people",
                      "family and friends"),
    "goals": ("goals", "wants", "desires", "motivations", "ambitions", "dreams", "hopes"),
    "conflicts": ("conflicts", "fears", "struggles", "flaws", "secrets", "enemies", "tensions", "problems",
                  "inner conflict"),
    "scenario": ("scenario", "setting", "situation", "world", "where"),
    "greeting": ("greeting", "first message", "first mes", "opening line", "opening", "hello"),
    "examples": ("example dialogue", "examples", "sample dialogue", "dialogue", "mes example",
                 "example messages", "sample lines"),
    "system": ("system prompt", "instructions", "system"),
    "tags": ("tags", "keywords"),
}
_ALIAS = {alias: key for key, aliases in SECTIONS.items() for alias in aliases}
META_KEYS = ("name", "hotkey", "tags", "nickname", "creator", "version")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*)$")


class SheetError(PersonaError):
    """A sheet that cannot become a persona; the message names the file and what is missing."""


@dataclass
class Section:
    title: str  # the heading as written
    key: str | None  # canonical name (SECTIONS) or None for an unknown section
    text: str


@dataclass
class Sheet:
    path: Path
    name: str
    meta: dict[str, str] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    sha256: str = ""

    @property
    def id(self) -> str:
        return slug(self.name)

    def get(self, key: str) -> str:
        """All text of one canonical section (several sections of the same kind are joined)."""
        return "\n\n".join(s.text for s in self.sections if s.key == key and s.text).strip()

    def items(self, key: str) -> list[str]:
        """A section as items: its bullets, or else its sentences (goals, conflicts, relationships)."""
        return split_items(self.get(key))

    def relationships(self) -> list[tuple[str, str]]:
        """(who, note) from the relationships section's items."""
        out = []
        for item in self.items("relationships"):
            who, note = split_entity(item)
            if who:
                out.append((who, note))
        return out


def normalise_heading(text: str) -> str:
    text = re.sub(r"[*_`]", "", text).lower().replace("&", " and ")
    return " ".join(re.findall(r"[a-z0-9']+", text))


def section_key(title: str) -> str | None:
    norm = normalise_heading(title)
    if norm in _ALIAS:
        return _ALIAS[norm]
    stripped = re.sub(r"s$", "", norm)  # "Goal" / "Fear" / "Relationship"
    return next((k for a, k in _ALIAS.items() if re.sub(r"s$", "", a) == stripped), None)


def read_sheet(path: str | Path) -> Sheet:
    """Parse one sheet; `SheetError` names the file and what is missing (no name, not text, empty)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise SheetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if b"\x00" in blob[:8192]:
        raise SheetError(f"{path}: binary file, not a markdown character sheet")
    try:
        text = blob.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise SheetError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise SheetError(f"{path}: empty file; a character sheet needs at least a name")
    return parse_sheet(text, path, hashlib.sha256(blob).hexdigest())


def parse_sheet(text: str, path: Path, sha256: str = "") -> Sheet:
    try:
        header = read_front_matter(text)
    except FrontMatterError as exc:
        raise SheetError(f"{path}:{exc.line}: front matter: {exc.reason}") from None
    meta = {f.key.lower(): f.value for f in header.fields}
    lines = text.split("\n")
    i = header.body_line - 1
    name = meta.get("name", "").strip()
    sections: list[Section] = [Section("(summary)", "summary", "")]
    body: list[str] = []
    prose_seen = False

    def close() -> None:
        sections[-1].text = _clean("\n".join(body))
        body.clear()

    for n in range(i, len(lines)):
        line = lines[n]
        m = _HEADING.match(line)
        level, title = (len(m.group(1)), m.group(2).strip()) if m else (0, "")
        if m and level == 1 and section_key(title) is None and (
                not name or normalise_heading(title) == normalise_heading(name)):
            name = name or re.sub(r"[*_`]", "", title).strip()  # the title heading, not a section
            continue
        if m and level <= 2:
            close()
            sections.append(Section(title, section_key(title), ""))
            prose_seen = False
            continue
        if not prose_seen and len(sections) == 1 and line.strip():
            if _meta_line(line, meta):
                name = name or meta.get("name", "").strip()
                continue
        if line.strip():
            prose_seen = True
        body.append(line)
    close()
    if not name:
        raise SheetError(f"{path}: no name: start the sheet with '# Name' (or a 'name: …' line)")
    if not slug(name):
        raise SheetError(f"{path}: name {name!r} has no letters or digits to make a persona id from")
    if not any(s.text for s in sections):
        raise SheetError(f"{path}: '{name}' has a name but no text; describe the character in sections "
                         "(## Traits, ## Background, ## Speech habits, …)")
    return Sheet(path, name, meta, [s for s in sections if s.text or s.key != "summary"], sha256)


def _meta_line(line: str, meta: dict[str, str]) -> bool:
    """A known `key: value` line right under the sheet's name (what front matter would hold)."""
    pair = parse_field(line)
    if pair is None or pair[0].lower() not in META_KEYS:
        return False
    meta[pair[0].lower()] = pair[1]
    return True


def _clean(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_items(text: str) -> list[str]:
    """Bullets when the text has any (continuation lines joined), else its sentences."""
    if not text:
        return []
    bullets: list[str] = []
    for line in text.split("\n"):
        m = _BULLET.match(line)
        if m:
            bullets.append(m.group(1).strip())
        elif bullets and line.strip():
            bullets[-1] += " " + line.strip()
    if bullets:
        return [b for b in bullets if b]
    flat = " ".join(text.split())
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", flat) if len(s.strip()) > 3]


def split_entity(item: str) -> tuple[str, str]:
    """"**Tobias Quill** — old friend" / "Tobias Quill: old friend" / "Mara (sister): …" → (who, note)."""
    plain = item.strip()
    m = re.match(r"^\*\*(.+?)\*\*\s*[:—–-]?\s*(.*)$", plain)
    if m:
        who, note = m.group(1), m.group(2)
    else:
        m = re.match(r"^(.{1,60}?)\s*(?:\s[—–-]\s|:\s|—|–)\s*(.*)$", plain)
        if not m:
            return "", plain
        who, note = m.group(1), m.group(2)
    role = re.match(r"^\((.+?)\)\s*[:—–-]?\s*(.*)$", note.strip())
    if role:  # "**Juniper Okafor** (niece): visits" → the role leads the note
        note = f"{role.group(1)}: {role.group(2)}"
    paren = re.search(r"\((.+?)\)", who)
    if paren and not role:  # "Wren Alder (aunt): gruff" → "aunt: gruff"
        note = f"{paren.group(1)}: {note}" if note else paren.group(1)
    who = re.sub(r"\s*\(.*?\)\s*", " ", who).strip(" *_:")
    if not who or len(who.split()) > 5:
        return "", plain
    return who, note.strip()


# --- sheet → card ---

def card_data(sheet: Sheet, existing: Persona | None = None) -> dict:
    """The V2 `data` for a sheet. Fields the sheet fills are replaced; everything else an existing card
    has (its adapters, hotkey, generation settings, other apps' extensions) is kept."""
    data = dict(existing.data) if existing is not None and not existing.builtin else {}
    for key, default in V2_FIELDS.items():
        if data.get(key) is None:
            data[key] = copy.deepcopy(default)
    name = sheet.name
    desc = [sheet.get("summary"), _labelled("Background", sheet.get("background")),
            _labelled("Appearance", sheet.get("appearance")),
            _labelled("Relationships", sheet.get("relationships"))]
    desc += [f"{s.title}: {s.text}" for s in sheet.sections if s.key is None and s.text]
    personality = [sheet.get("traits"), _labelled("Speech", sheet.get("speech"))]
    data.update({
        "name": name,
        "description": "\n\n".join(p for p in desc if p),
        "personality": "\n\n".join(p for p in personality if p),
        "scenario": sheet.get("scenario"),
        "first_mes": sheet.get("greeting") or data.get("first_mes") or "",
        "mes_example": mes_example(sheet.get("examples"), name) or data.get("mes_example") or "",
        "system_prompt": sheet.get("system") or default_system_prompt(sheet),
    })
    tags = sheet.meta.get("tags") or sheet.get("tags")
    if tags:
        data["tags"] = [t.strip(" -*#") for t in re.split(r"[,\n]", tags) if t.strip(" -*#")]
    data.setdefault("creator", sheet.meta.get("creator", ""))
    if sheet.meta.get("version"):
        data["character_version"] = sheet.meta["version"]
    ext = dict(data.get("extensions") or {})
    home = dict(ext.get("home") or {})
    home.setdefault("adapters", [])
    if sheet.meta.get("hotkey"):
        home["hotkey"] = sheet.meta["hotkey"].lower()
    home["sheet"] = {
        "file": str(sheet.path), "sha256": sheet.sha256,
        "sections": [{"title": s.title, "key": s.key, "text": s.text} for s in sheet.sections],
        "relationships": [{"name": who, "note": note} for who, note in sheet.relationships()],
        "goals": sheet.items("goals"), "conflicts": sheet.items("conflicts"),
        "nickname": sheet.meta.get("nickname", ""),
        "lore_ids": list(home.get("sheet", {}).get("lore_ids", [])) if isinstance(home.get("sheet"), dict) else [],
    }
    ext["home"] = home
    data["extensions"] = ext
    return data


def _labelled(label: str, text: str) -> str:
    return f"{label}: {text}" if text else ""


def default_system_prompt(sheet: Sheet) -> str:
    """Short on purpose: small models follow a short instruction better than a long one."""
    speech = " ".join(sheet.get("speech").split())
    line = "You are {{char}}. Speak as {{char}} in the first person, in your own voice; never as an AI assistant."
    return f"{line} How you speak: {speech}" if speech else line


def mes_example(text: str, name: str) -> str:
    """Example dialogue as V2 `mes_example`: `<START>` blocks with {{user}}/{{char}} speaker labels."""
    if not text:
        return ""
    first = name.split()[0]
    out: list[str] = []
    for line in text.split("\n"):
        s = line.strip()
        if not s:
            continue
        if re.fullmatch(r"(?i)<start>|-{3,}", s):
            out.append("<START>")
            continue
        s = re.sub(r"^[-*]\s+", "", s)
        m = re.match(r"^\**([^:*]{1,40}?)\**\s*:\s*(.*)$", s)
        if m:
            who = m.group(1).strip()
            label = "{{char}}" if who.casefold() in (name.casefold(), first.casefold(), "{{char}}", "char") \
                else "{{user}}"
            s = f"{label}: {m.group(2)}"
        out.append(s)
    if out and out[0] != "<START>":
        out.insert(0, "<START>")
    return "\n".join(out)


def find_sheets(folder: str | Path) -> list[Path]:
    """The sheets in a folder (not recursive), sorted; hidden files and READMEs are not characters."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SheetError(f"{folder}: not a folder of character sheets")
    found = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in SUFFIXES
             and not p.name.startswith(".") and p.stem.lower() != "readme"]
    if not found:
        raise SheetError(f"{folder}: no character sheets ({', '.join(SUFFIXES)} files)")
    return found
