"""Personas: Character Card V2 files — the built-ins shipped with Home plus the cards in the vault.

Why Character Cards: people already have them (from other chat front-ends), so import accepts V1/V2/V3
JSON and PNGs with a `chara`/`ccv3` text chunk, and nothing another app stored (`extensions`, V3 extras)
is dropped. Home's own settings live under `extensions.home`; they are validated on the way in so a
typo fails at import, naming the file and field, not later in the middle of a conversation.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PersonaError
from .fsio import atomic_write_json
from .jsonparse import JSONProblem, loads
from .layout import Vault
from .png_text import PNG_SIGNATURE, png_text_chunks

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_personas"
SPEC_V2, SPEC_V3 = "chara_card_v2", "chara_card_v3"
CARD_KEYWORDS = ("ccv3", "chara")  # preference order: the V3 spec says ccv3 wins when both are present

# V2 `data` fields in spec order, with the value a missing (or null) field gets.
V2_FIELDS: dict[str, Any] = {
    "name": "", "description": "", "personality": "", "scenario": "", "first_mes": "", "mes_example": "",
    "creator_notes": "", "system_prompt": "", "post_history_instructions": "", "alternate_greetings": [],
    "character_book": None, "tags": [], "creator": "", "character_version": "", "extensions": {},
}
# Pygmalion-era V1 names, mapped only when the V2 name is absent.
V1_ALIASES = {"char_name": "name", "char_persona": "description", "world_scenario": "scenario",
              "char_greeting": "first_mes", "example_dialogue": "mes_example"}
# extensions.home.generation: the GenParams fields a persona may set, with (type, check, rule).
GENERATION: dict[str, tuple[type, Any, str]] = {
    "temperature": (float, lambda v: v >= 0, ">= 0"),
    "top_p": (float, lambda v: 0 <= v <= 1, "between 0 and 1"),
    "top_k": (int, lambda v: v >= 0, ">= 0"),
    "repeat_penalty": (float, lambda v: v > 0, "> 0"),
    "max_tokens": (int, lambda v: v >= 1, ">= 1"),
    "seed": (int, lambda v: True, ""),
}
# extensions.home.modes: how the persona answers a task ("focused") and everything else ("character"):
# {"system": a line added to the prompt, "scale": a factor on its adapters' scales}; home/router/mode.py.
MODES = ("focused", "character")


@dataclass
class Persona:
    """One card: `data` is the V2 `data` object, kept whole so saving never loses a field."""

    id: str
    data: dict
    builtin: bool = False
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.data.get("name") or self.id

    @property
    def home(self) -> dict:
        """Home's settings (hotkey, adapters, generation, tasks, tones, modes); {} when the card has none."""
        ext = self.data.get("extensions")
        home = ext.get("home") if isinstance(ext, dict) else None
        return home if isinstance(home, dict) else {}

    def to_card(self) -> dict:
        return {"spec": SPEC_V2, "spec_version": "2.0", "data": copy.deepcopy(self.data)}


def slug(name: str) -> str:
    """A file-safe id: lowercase, non-alphanumeric runs become "-" ("Captain Brisk" → "captain-brisk")."""
    text = unicodedata.normalize("NFKC", str(name)).lower()
    return re.sub(r"[\W_]+", "-", text).strip("-")[:64].strip("-")


# --- listing and lookup ---


def list_personas(vault: Vault, errors: list[str] | None = None) -> list[Persona]:
    """Built-ins and vault cards, sorted by id; a vault card with a built-in's id replaces it.

    A broken vault card raises `PersonaError` naming it (never hidden). A caller that must go on (the app's
    picker) passes `errors=[]`: broken cards are then skipped and their one-line messages appended there.
    """
    found = {p.id: p for p in _builtins()}
    for pid, path in _vault_files(vault).items():
        try:
            found[pid] = _load(path, pid)
        except PersonaError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return [found[k] for k in sorted(found)]


def hotkeys(personas: list[Persona]) -> dict[str, str]:
    """Hotkey → the persona it picks in the app: the first (by id) of the cards that name it, F1 being the
    base model's. Two cards naming one key (an imported card's f2 beside Sage's) left the second
    unreachable while the persona bar showed both on F2."""
    owners: dict[str, str] = {"f1": ""}
    for p in personas:
        key = p.home.get("hotkey")
        if key and key not in owners:
            owners[key] = p.id
    del owners["f1"]
    return owners


def get_persona(vault: Vault, name: str) -> Persona:
    """By id, by slug(name), or by the card's name (case-insensitive).

    The id/slug case reads just that one card, so a broken unrelated card cannot stop `--persona sage`.
    """
    key = str(name or "").strip()
    sid = slug(key)
    path = _vault_files(vault).get(sid)
    if path is not None:
        return _load(path, sid)
    for p in _builtins():
        if p.id == sid:
            return p
    errors: list[str] = []
    personas = list_personas(vault, errors)
    wanted = key.casefold()
    for p in personas:
        if p.id in (key, sid) or str(p.data.get("name", "")).strip().casefold() == wanted:
            return p
    known = ", ".join(p.id for p in personas) or "none"
    broken = f"; unreadable: {' | '.join(errors)}" if errors else ""
    shown = str(name) if len(str(name)) <= 60 else str(name)[:59] + "…"  # a name may be megabytes
    raise PersonaError(f"unknown persona '{shown}' (known: {known}){broken}")


def _builtins() -> list[Persona]:
    return [_load(path, slug(path.stem), builtin=True) for path in sorted(BUILTIN_DIR.glob("*.json"))]


def _vault_files(vault: Vault) -> dict[str, Path]:
    """id → card file; hidden files (our own temp files while writing) are not cards."""
    files: dict[str, Path] = {}
    for path in sorted(vault.personas_dir.glob("*.json")):
        if not path.name.startswith(".") and slug(path.stem):
            files[slug(path.stem)] = path
    return files


def _load(path: Path, pid: str, builtin: bool = False) -> Persona:
    return Persona(id=pid, data=read_card(path), builtin=builtin, path=path)


# --- import and save ---


def import_card(vault: Vault, file: str | Path, overwrite: bool = False) -> Persona:
    """Read a V1/V2/V3 card (JSON or PNG), store it as `personas/<slug(name)>.json` (a V2 card)."""
    path = Path(file)
    data = read_card(path)
    pid = slug(data["name"])
    if not pid:
        raise PersonaError(f"{path}: name: {_show(data['name'])} has no letters or digits to make an id from")
    if not overwrite:
        existing = _vault_files(vault).get(pid)
        builtin = next((p for p in _builtins() if p.id == pid), None)
        where = existing or (f"built-in {builtin.path}" if builtin else None)
        if where:
            raise PersonaError(f"persona '{pid}' already exists ({where}); use --overwrite to replace it")
    persona = Persona(id=pid, data=data, builtin=False, path=vault.personas_dir / f"{pid}.json")
    save_persona(vault, persona)
    return persona


def save_persona(vault: Vault, persona: Persona) -> Path:
    """Validate, then write `personas/<id>.json` atomically (0600); the id must already be a slug."""
    if not persona.id or slug(persona.id) != persona.id:
        raise PersonaError(f"persona id {persona.id!r} is not a valid id (try {slug(persona.id)!r})")
    path = vault.personas_dir / f"{persona.id}.json"
    data = normalise_card({"spec": SPEC_V2, "data": persona.data}, str(path))
    try:
        atomic_write_json(path, Persona(persona.id, data).to_card())
    except OSError as exc:
        raise PersonaError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


# --- reading cards ---


def read_card(path: Path) -> dict:
    """The normalised V2 `data` of a card file (JSON, or PNG by signature or suffix)."""
    src = str(path)
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise PersonaError(f"{src}: cannot read ({exc.strerror or exc})") from None
    if blob.startswith(PNG_SIGNATURE) or Path(path).suffix.lower() == ".png":
        raw = _card_from_png(blob, src)
    else:
        raw = _parse_json(blob, src)
    return normalise_card(raw, src)


def normalise_card(raw: Any, src: str) -> dict:
    """V1 (flat), V2 or V3 → a V2 `data` dict: V2 fields first, then every other key kept as it was."""
    if not isinstance(raw, dict):
        raise PersonaError(f"{src}: expected a JSON object (a character card), got {_kind(raw)}")
    spec, prefix = raw.get("spec"), "data."
    if spec in (SPEC_V2, SPEC_V3):
        data = raw.get("data")
        if not isinstance(data, dict):
            raise PersonaError(f"{src}: data: expected an object, got {_kind(data)}")
    elif spec is None:
        prefix = ""
        alias = {k: v for k, v in V1_ALIASES.items() if v not in raw}
        data = {alias.get(k, k): v for k, v in raw.items()}
    else:
        raise PersonaError(f"{src}: spec: unsupported {_show(spec)} (expected {SPEC_V2} or {SPEC_V3})")
    out = {k: copy.deepcopy(default) if data.get(k) is None else data[k] for k, default in V2_FIELDS.items()}
    out.update({k: v for k, v in data.items() if k not in out})
    _check_data(out, src, prefix)
    return out


def _check_data(data: dict, src: str, prefix: str) -> None:
    for key, default in V2_FIELDS.items():
        if isinstance(default, str):
            _expect(data[key], str, src, prefix + key)
        elif isinstance(default, list):
            _expect_str_list(data[key], src, prefix + key)
    if not data["name"].strip():
        raise PersonaError(f"{src}: {prefix}name: missing or empty; a persona needs a name")
    if data["character_book"] is not None:
        _expect(data["character_book"], dict, src, prefix + "character_book")
    _expect(data["extensions"], dict, src, prefix + "extensions")
    if "home" in data["extensions"]:
        _check_home(data["extensions"]["home"], src, prefix + "extensions.home")


def _check_home(home: Any, src: str, where: str) -> None:
    """extensions.home: the settings `home ask` and the app act on, so their types must be right."""
    _expect(home, dict, src, where)
    if home.get("hotkey") is not None:
        _expect(home["hotkey"], str, src, f"{where}.hotkey")
    for i, entry in enumerate(_expect(home.get("adapters", []), list, src, f"{where}.adapters")):
        at = f"{where}.adapters[{i}]"
        _expect(entry, dict, src, at)
        if not isinstance(entry.get("id"), str) or not entry["id"].strip():
            raise PersonaError(f"{src}: {at}.id: expected an adapter id string, got {_show(entry.get('id'))}")
        if entry.get("scale") is not None:
            _expect(entry["scale"], float, src, f"{at}.scale")
    gen = _expect(home.get("generation", {}), dict, src, f"{where}.generation")
    for key, value in gen.items():
        at = f"{where}.generation.{key}"
        if key == "stop":
            if not isinstance(value, str):
                _expect_str_list(value, src, at)
            continue
        if key not in GENERATION:
            raise PersonaError(f"{src}: {at}: unknown setting (known: {', '.join([*GENERATION, 'stop'])})")
        kind, ok, rule = GENERATION[key]
        if value is not None and not ok(_expect(value, kind, src, at)):
            raise PersonaError(f"{src}: {at}: expected {rule}, got {_show(value)}")
    for key in ("tasks", "tones"):
        _expect_str_list(home.get(key, []), src, f"{where}.{key}")
    modes = _expect(home.get("modes", {}), dict, src, f"{where}.modes")
    for mode, settings in modes.items():
        at = f"{where}.modes.{mode}"
        if mode not in MODES:
            raise PersonaError(f"{src}: {at}: unknown mode (known: {', '.join(MODES)})")
        for key, value in _expect(settings, dict, src, at).items():
            if key not in ("system", "scale"):
                raise PersonaError(f"{src}: {at}.{key}: unknown setting (known: system, scale)")
            if key == "system" and value is not None:
                _expect(value, str, src, f"{at}.system")
            if key == "scale" and value is not None and _expect(value, float, src, f"{at}.scale") < 0:
                raise PersonaError(f"{src}: {at}.scale: expected >= 0, got {_show(value)}")


_KIND_NAMES = {str: "a string", dict: "an object", list: "a list", float: "a number", int: "an integer"}


def _expect(value: Any, kind: type, src: str, where: str) -> Any:
    """`value` if it is a `kind` (float means any finite number; bools are never numbers), else raise."""
    if kind in (float, int):
        ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
        ok = ok and not (isinstance(value, float) and not math.isfinite(value))
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise PersonaError(f"{src}: {where}: expected {_KIND_NAMES[kind]}, got {_show(value)}")
    return value


def _expect_str_list(value: Any, src: str, where: str) -> None:
    for i, item in enumerate(_expect(value, list, src, where)):
        _expect(item, str, src, f"{where}[{i}]")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), "a number")


def _parse_json(blob: bytes, src: str, where: str = "") -> Any:
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PersonaError(f"{src}: {where}not UTF-8 text (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise PersonaError(f"{src}: {where}empty; expected a character card (JSON)")
    try:
        return loads(text)
    except JSONProblem as exc:
        at = f"line {exc.line}, column {exc.column}: " if exc.line is not None else ""
        raise PersonaError(f"{src}: {where}not valid JSON ({at}{exc.msg})") from None


# --- PNG cards ---


def _card_from_png(blob: bytes, src: str) -> Any:
    """The card JSON from a PNG's `ccv3` (preferred) or `chara` text chunk: base64 of a V3/V2 card."""
    chunks = png_text_chunks(blob, src, CARD_KEYWORDS)
    keyword = next((k for k in CARD_KEYWORDS if k in chunks), None)
    if keyword is None:
        raise PersonaError(f"{src}: PNG has no character card (no 'chara' or 'ccv3' text chunk)")
    text = chunks[keyword].strip()
    if text.startswith("{"):  # a few writers store the JSON itself rather than base64
        return _parse_json(text.encode("utf-8"), src, f"'{keyword}' chunk: ")
    compact = "".join(text.split())
    try:
        payload = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise PersonaError(f"{src}: '{keyword}' chunk: not valid base64") from None
    return _parse_json(payload, src, f"'{keyword}' chunk: ")
