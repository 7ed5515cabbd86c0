"""One screen per file: the chat, the error screen, the adapters modal."""
