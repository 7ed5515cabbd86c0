"""Generation settings for a turn: config.toml, then the persona's own, then flags or the app's options.

Shared by the CLI (`home ask`, `home app --plain`) and the Textual app, so both resolve a turn's
params the same way and the app need not import a command module.
"""

from __future__ import annotations

import argparse

from llm.params import GenParams


def generation_params(ctx, persona, args: argparse.Namespace) -> GenParams:
    """config.toml < the persona's own settings < flags (a None flag keeps what is below it)."""
    g = ctx.config.generation
    params = GenParams(
        temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
        repeat_penalty=g.repeat_penalty, max_tokens=g.max_tokens, seed=g.seed,
    )
    if persona is not None:
        params = params.merged(**{k: v for k, v in persona.home.get("generation", {}).items()
                                  if k in GenParams.__dataclass_fields__})
    return params.merged(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repeat_penalty=args.repeat_penalty, max_tokens=args.max_tokens, seed=args.seed,
    )
