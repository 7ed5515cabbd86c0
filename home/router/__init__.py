"""The router: which adapter stack serves this turn, from who is talking, the persona, and the message.

    from home.router import Router, Decision, explicit_choice
    router = Router.load(vault, config, embedder)      # once; embedder shared with memory (None → default)
    decision = router.decide(manifest, user=..., persona=persona_or_None, text=...,
                             explicit=explicit_choice(persona, args.adapter, args.no_adapters),
                             model_fingerprint=info.fingerprint, model_name=info.name)
    decision.stack        # [(adapter_id, scale)] for home.stack.activate / Conversation.send
    decision.to_dict()    # the log record's "router" field

classify.py: task/tone classifiers; score.py: candidates and the stack; decide.py: Router, Decision;
drift.py: usage over time and loss on recent logs (`home drift`).
"""

from home.router.classify import Prediction
from home.router.decide import Decision, Router, explicit_choice
from home.router.score import Candidate

__all__ = ["Candidate", "Decision", "Prediction", "Router", "explicit_choice"]
