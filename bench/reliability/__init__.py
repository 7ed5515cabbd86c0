"""The reliability campaign of issue 15: kill -9 at random moments and two processes on one vault.

    .venv/bin/python bench/reliability/kill9.py --kind KIND --runs N [--seed S]
        KIND: ask (mid-generation `home ask`), app (the Textual app in tmux), train (`home train` at tiny
        settings, its worker killed with it), index (`home memory reindex`), distil (`home gestalts
        distil`), manifest (registrations and removals). Prints runs / losses / corruptions and a JSON line.
    .venv/bin/python bench/reliability/malformed.py
        generated malformed inputs through the real entry points (see its docstring).
    .venv/bin/python bench/reliability/two_procs.py --minutes M
        the app-like `home ask` loop and `home ask`/`train`/`memory`/`adapters` in a loop at once: lost
        records, torn manifest, and every distinct refusal line.

`invariants.py` holds the checks (shared with tests/test_reliability_kill9.py), `procs.py` starting and
killing processes, `kinds.py` / `kinds_heavy.py` one class per kind, `manifest_writer.py` the process the
manifest kind kills.
"""
