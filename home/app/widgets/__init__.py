"""One widget per file: the message list and its messages, the prompt, the status and persona bars."""
