"""The Textual chat app (`home`, `home chat`): app.py wires screens/, widgets/ and home.tcss."""

from home.app.app import HomeApp, run_app
from home.app.session import AppOptions, ChatSession

__all__ = ["AppOptions", "ChatSession", "HomeApp", "run_app"]
