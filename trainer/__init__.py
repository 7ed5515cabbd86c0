"""The trainer: turns the user's data into verified LoRA adapters, in four rooms.

`protocol` (what the app and the worker say to each other), `data` (sources into examples),
`evaluation` (how good an adapter is) are torch-free and are all that `home` imports; `worker` (the
torch training run, `python -m trainer`) may import everything. tests/test_layout.py holds the rules.
"""
