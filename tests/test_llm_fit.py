"""The context policy over a long chat: the kept history's start moves in steps, so the KV prefix stays
cached for several turns in a row (llm/fit.py), and every prompt still fits."""

from __future__ import annotations

from llm.fit import cut_on_grid, fit_messages


def words(messages) -> int:  # noqa: ANN001 - a token count: one per word, four per message's template
    return sum(len(m["content"].split()) + 4 for m in messages)


def test_a_long_chat_moves_its_cut_every_few_turns_not_every_turn():
    system = {"role": "system", "content": "You are Sage. " * 20}
    history: list[dict] = []
    starts, fills, n_ctx, max_tokens = [], [], 1024, 128
    for turn in range(300):
        history.append({"role": "user", "content": f"message {turn} " + "word " * (5 + turn % 17)})
        kept, dropped = fit_messages([system, *history], max_tokens, n_ctx, words)
        assert kept[0] == system and kept[1:] == history[dropped:] and kept[-1] is history[-1]
        assert words(kept) + max_tokens <= n_ctx
        assert dropped % 2 == 0  # whole exchanges
        starts.append(dropped)
        fills.append(words(kept) / (n_ctx - max_tokens))
        history.append({"role": "assistant", "content": f"reply {turn} " + "word " * (10 + turn % 23)})
    assert all(a <= b for a, b in zip(starts, starts[1:], strict=False))  # a cut moving back re-reads the window too
    moved = sum(a != b for a, b in zip(starts, starts[1:], strict=False))
    first_drop = next(i for i, d in enumerate(starts) if d)
    assert moved <= (300 - first_drop) // 4, moved  # one pair a turn moved it every turn: 270-odd times
    assert min(fills[first_drop:]) >= 0.45, min(fills[first_drop:])  # at least about half the window in use


def test_the_grid_keeps_a_fitting_chat_whole_and_never_passes_the_last_cut():
    assert cut_on_grid(0, 50) == 0  # all fits: nothing dropped
    assert cut_on_grid(1, 1) == 1
    assert cut_on_grid(9, 41) == 16  # 32 fit: steps of 16
    assert cut_on_grid(17, 41) == 24  # 24 fit: steps of 8
    assert cut_on_grid(40, 41) == 40  # one fits: no room to step
    assert all(k <= cut_on_grid(k, last) <= last for last in range(1, 60) for k in range(last + 1))


def test_the_long_session_bench_reads_fewer_tokens_on_the_grid(capsys):
    """bench/long_session.py end to end on the bundled model, small: the grid reads fewer prompt tokens a
    turn than moving one exchange a turn, and a distillation between turns made aside fewer than one not
    aside, as the real engine reports them."""
    import json
    import sys

    from tests.cli_helpers import REPO

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import long_session
    finally:
        sys.path.remove(str(REPO / "bench"))
    assert long_session.main(["--n-ctx", "1024", "--pairs", "40", "--turns", "5", "--iters", "1", "--backlog", "3"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    read = report["mean_tokens_read"]
    assert read["grid (Home)"] * 2 < read["one exchange a turn"], read
    assert report["ratio_read"] > 2
    assert read["grid, distil aside (Home)"] * 2 < read["grid, distil not aside"], read  # llm/kv_aside.py
    eager, lazy = report["backlog"]["cut holds, eager (before)"], report["backlog"]["cut holds, lazy (Home)"]
    assert (eager["saves"], lazy["saves"], lazy["restores"]) == (3, 1, 1) and lazy["bytes"] < eager["bytes"]
