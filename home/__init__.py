"""Home: the Textual app and the `home` CLI. Imports llm and vault; starts the trainer as a subprocess."""

__version__ = "0.1.0"
