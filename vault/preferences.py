"""Preference pairs: `<vault>/preferences/<user>.jsonl`, one pick-best choice per line, for later
preference training (DPO and kin: prompt, chosen, rejected).

Why a file per user and the same append discipline as the logs (one `write(2)` with O_APPEND, fsync,
0600): a choice is the user's deliberate judgement and costs them a few seconds each, so a crash must
never lose a finished one, and the pairs of one user are never mixed into another's training. The lock
keeps the line order sane when the app and a script append at the same moment.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from .errors import VaultError
from .fsio import FileLock, append_line_fsync
from .layout import Vault
from .logs import LogRead, read_log

PREFERENCE_VERSION = 1
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class PreferenceError(VaultError):
    """A bad user name or an unreadable preferences file; one line, exit 2."""


def check_user_name(name: str) -> str:
    """A user name becomes a file name here (and a key in the manifest): letters, digits, '_', '.', '-'."""
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise PreferenceError(f"user name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (not starting with '.' or '-')")
    return name


def preferences_path(vault: Vault, user: str) -> Path:
    return vault.preferences_dir / f"{check_user_name(user)}.jsonl"


def append_preference(vault: Vault, record: dict) -> dict:
    """Stamp (v, id, time) and append one pair to its user's file; returns the record as written."""
    user = record.get("user")
    path = preferences_path(vault, user)
    for key in ("prompt", "chosen", "rejected"):
        if key not in record:
            raise PreferenceError(f"{path}: a preference pair needs '{key}'")
    now = datetime.now(UTC)
    full = {"v": PREFERENCE_VERSION, "id": now.strftime("pref-%Y%m%d-%H%M%S-") + secrets.token_hex(3),
            "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"), **record}
    try:
        line = json.dumps(full, ensure_ascii=False, default=str)
        with FileLock(vault.lock_path("preferences"), timeout=10):
            if _torn(path):
                append_line_fsync(path, "")  # a torn last line must not swallow this pair
            append_line_fsync(path, line)
    except OSError as exc:
        raise PreferenceError(f"{path}: cannot append ({exc.strerror or exc})") from None
    return full


def _torn(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if not fh.tell():
                return False
            fh.seek(-1, 2)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def read_preferences(vault: Vault, user: str) -> LogRead:
    """Every pair of `user` (none yet: empty); a torn last line is skipped and named in `problems`."""
    path = preferences_path(vault, user)
    return read_log(path) if path.exists() else LogRead([], [])
