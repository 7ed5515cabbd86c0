"""Training data: sources (logs, transcripts, essays, JSONL, gestalts) into normalised `Example`s with a
QA report, synthetic persona datasets (`synth`), and text statistics.

Torch-free. Imports only `vault`, `llm` and this room: `home data`, `home eval` and the worker use it.
"""
