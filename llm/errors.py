"""Runtime errors. Each message is one line naming the file (and field) at fault, fit for a CLI."""


class LLMError(Exception):
    """Base for everything the runtime refuses; the CLI prints it and exits non-zero."""

    exit_code = 1


class ModelError(LLMError):
    """The model is missing, corrupt, or cannot be downloaded."""

    exit_code = 3


class AdapterError(LLMError):
    """An adapter file is corrupt, made for another base, or does not fit the loaded model."""

    exit_code = 3


class UnknownAdapterError(AdapterError):
    """A name no adapter in the manifest has: a usage error (exit 2) in every command, as `home adapters` and
    `home route` give it, while a corrupt file or one for another base stays exit 3."""

    exit_code = 2


class ContextError(LLMError):
    """The prompt cannot fit the context window even after dropping history."""
