"""Vault errors: one line each, naming the file, and the line and field where they apply."""


class VaultError(Exception):
    """Base for bad or unreadable user data; the CLI prints it and exits non-zero."""

    exit_code = 2


class ManifestError(VaultError):
    """manifest.json is malformed or an entry is invalid; the file is left as it is."""


class PersonaError(VaultError):
    """A persona is unknown or its card cannot be read."""


class ConfigError(VaultError):
    """config.toml is malformed or a field has the wrong type."""


class LogError(VaultError):
    """A conversation log cannot be written or read."""
