"""The contract between the app (or `home train`) and the worker process: the job, the JSON events,
run folders, registration into the vault, the CPU guard and the worker's memory settings.

Torch-free. Imports only `vault`, `llm` and this room: the app imports it to start and follow runs.
"""
