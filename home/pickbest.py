"""Pick-best: two candidate replies to the last user message; the one the user picks becomes the
reply, and the pair is kept as a preference (prompt, chosen, rejected) for preference training.

What differs between the two (shown above each):
- the user has a voice adapter: the same seed and params, without and with the voice adapter (at
  its current scale) — a clean comparison of the adapter alone, and the pairs say whether it helps;
- otherwise: two seeds; if the params are greedy (temperature 0, where any seed gives the same text)
  the second candidate samples at temperature 0.8.

Logging when the user picks (never before: a pair that is dismissed changes nothing): a fresh user
record with the same text (as regenerate does), the chosen reply as an assistant record with
`pick_best: {candidate, preference}`, and the pair appended to `<vault>/preferences/<user>.jsonl`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from home.prompt import build_messages, prompt_budget
from home.reply import Reply
from home.stack import Stack
from home.turn import TurnResult
from llm.params import GenParams
from vault.layout import Vault
from vault.preferences import append_preference

SAMPLE_TEMPERATURE = 0.8


@dataclass
class Candidate:
    label: str  # what sets it apart, e.g. "seed 42 · t 0.7" or "with your voice ×1.0"
    stack: Stack
    params: GenParams
    reply: Reply | None = None

    def describe(self) -> dict:
        """How it was made (for the preference record)."""
        return {"label": self.label, "adapters": [{"id": i, "scale": s} for i, s in self.stack],
                "params": self.params.to_dict()}


def _seed(params: GenParams, rng: random.Random) -> int:
    return params.seed if params.seed >= 0 else rng.randrange(2**31)


def plan(stack: Stack, params: GenParams, voice: Stack | None = None,
         rng: random.Random | None = None) -> list[Candidate]:
    """The two candidates for the current `stack` and `params`. `voice` is the user's voice adapter as
    resolved for stacking (last; anything it was trained over before it)."""
    rng = rng or random.Random()
    seed = _seed(params, rng)
    if voice:
        ids = {i for i, _ in voice}
        without = [(i, s) for i, s in stack if i not in ids]
        same = params.merged(seed=seed)
        vid, vscale = voice[-1]
        return [Candidate("without your voice adapter", without, same),
                Candidate(f"with your voice {vid}×{vscale:g}", [*without, *voice], same)]
    first = params.merged(seed=seed)
    other = seed + 1 if params.seed >= 0 else rng.randrange(2**31)
    second = params.merged(seed=other, temperature=params.temperature or SAMPLE_TEMPERATURE)
    return [Candidate(f"seed {first.seed} · t {first.temperature:g}", list(stack), first),
            Candidate(f"seed {second.seed} · t {second.temperature:g}", list(stack), second)]


@dataclass
class Pick:
    """A pick-best round on one conversation: which message, what the model sees, the candidates."""

    conversation: object  # home.turn.Conversation
    text: str  # the user message both candidates answer
    messages: list[dict]
    candidates: list[Candidate]
    replaced: str | None = None  # the id of the reply the choice replaces
    memory_ids: list[str] | None = None

    @classmethod
    def for_last_message(cls, conversation, candidates: list[Candidate]) -> Pick | None:
        """None when there is no user message with a reply yet."""
        history = conversation.history
        if len(history) < 2 or history[-2]["role"] != "user":
            return None
        text = history[-2]["content"]
        messages = build_messages(conversation.persona, history[:-2], text, conversation.user,
                                  budget=prompt_budget(conversation.engine))
        last = conversation.last
        replaced = last.record.get("id") if last is not None and last.text == history[-1]["content"] else None
        return cls(conversation, text, messages, candidates, replaced)

    def recall(self) -> None:
        """Put memory into the prompt as a normal turn would (a worker thread: it may embed). Once."""
        convo = self.conversation
        if self.memory_ids is not None or getattr(convo, "recall", None) is None:
            return
        recalled = convo.recall.recall(self.text, convo.user, convo.log.session,
                                       lambda s: len(convo.engine.tokenize(s)),
                                       persona=convo.persona.id if convo.persona else None)
        self.memory_ids = list(recalled.ids or [])
        if recalled.block:
            self.messages = build_messages(convo.persona, convo.history[:-2], self.text, convo.user, recalled.block,
                                           prompt_budget(convo.engine))

    def reply(self, k: int) -> Reply:
        c = self.candidates[k]
        c.reply = Reply(self.conversation.engine, self.messages, c.params, c.stack)
        return c.reply

    def choose(self, vault: Vault, k: int) -> tuple[dict, dict]:
        """Candidate `k` (0 or 1) becomes the reply: log it, keep the pair. Returns (record, pair)."""
        convo = self.conversation
        chosen, rejected = self.candidates[k], self.candidates[1 - k]
        persona = convo.persona.id if convo.persona else None
        user_record = convo.log.append({"user": convo.user, "persona": persona, "role": "user", "text": self.text,
                                        "adapters": chosen.reply.adapters, "pick_best": {"replaces": self.replaced}})
        record = chosen.reply.record(convo.user, persona)
        record["pick_best"] = {"candidate": k + 1, "label": chosen.label}
        record["memory_ids"] = self.memory_ids or []
        record = convo.log.append(record)
        pair = append_preference(vault, {
            "user": convo.user, "persona": persona, "session": convo.log.session,
            "prompt": self.messages,
            "chosen": {"text": chosen.reply.text, "candidate": k + 1, **chosen.describe(),
                       "finish_reason": chosen.reply.finish_reason},
            "rejected": {"text": rejected.reply.text, "candidate": 2 - k, **rejected.describe(),
                         "finish_reason": rejected.reply.finish_reason},
            "turn_ids": {"user": user_record["id"], "chosen": record["id"], "replaced": self.replaced},
            "model": record["model"],
        })
        del convo.history[-2:]
        convo.history += [{"role": "user", "content": self.text}, {"role": "assistant", "content": chosen.reply.text}]
        convo.last = TurnResult(chosen.reply.text, record, user_record)
        if getattr(convo, "recall", None) is not None:
            convo.recall.index_soon(convo.log.session)
        return record, pair
