"""Where the vault lives and what is inside it: the only code that knows the directory layout.

Everything is created private (dirs 0700) on open, so no other module needs to think about modes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import VaultError
from .fsio import ensure_private_dir

ENV_VAR = "HOME_VAULT"
APP_NAME = "home"
SUBDIRS = ("adapters", "logs", "gestalts", "memory", "personas", "runs", "preferences", "locks")


def resolve_root(cli_value: str | os.PathLike | None = None) -> Path:
    """`--vault` wins, then `HOME_VAULT`, then the platform's user data dir (e.g. ~/.local/share/home)."""
    if cli_value:
        return Path(cli_value).expanduser().resolve()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class Vault:
    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike) -> Vault:
        """The vault at `root`, creating any missing directory (0700)."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise VaultError(f"{root}: vault path exists but is not a directory")
        try:
            ensure_private_dir(root)
            for name in SUBDIRS:
                ensure_private_dir(root / name)
        except OSError as exc:
            raise VaultError(f"{root}: cannot create the vault ({exc.strerror or exc})") from None
        return cls(root)

    @property
    def adapters_dir(self) -> Path:
        return self.root / "adapters"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def gestalts_dir(self) -> Path:
        return self.root / "gestalts"

    @property
    def memory_dir(self) -> Path:
        return self.root / "memory"

    @property
    def personas_dir(self) -> Path:
        return self.root / "personas"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def preferences_dir(self) -> Path:
        return self.root / "preferences"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    def lock_path(self, name: str) -> Path:
        """The lock file guarding one resource (e.g. "manifest"), shared with the trainer process."""
        return self.locks_dir / f"{name}.lock"

    def relative(self, path: str | os.PathLike) -> str:
        """A path as the manifest stores it: relative to the vault root."""
        return str(Path(path).resolve().relative_to(self.root.resolve()))
