"""Chat templates: render the GGUF's own `tokenizer.chat_template` (sandboxed Jinja2) into prompt text.

Same environment as Hugging Face's `apply_chat_template` (trim_blocks, lstrip_blocks, loopcontrols,
`raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII), so GGUF templates render the way
their authors tested them. A GGUF without a template gets ChatML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# End-of-turn markers used by common templates; those that occur in a template become stop strings.
END_MARKERS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<|END_OF_TURN_TOKEN|>",
)

Message = Mapping[str, Any]


class TemplateError(ValueError):
    """The template itself raised (e.g. `raise_exception('Conversation roles must alternate')`)."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def merge_late_system(messages: list[dict]) -> list[dict]:
    """Every system message but a leading one folded into the next user message (or dropped into the
    previous one when none follows)."""
    out: list[dict] = []
    carry: list[str] = []
    for i, m in enumerate(messages):
        if m.get("role") == "system" and i > 0:
            carry.append(str(m.get("content") or ""))
            continue
        if carry and m.get("role") == "user":
            m = {**m, "content": "\n\n".join([*carry, str(m.get("content") or "")])}
            carry = []
        out.append(m)
    if carry and out:
        out[-1] = {**out[-1], "content": "\n\n".join([str(out[-1].get("content") or ""), *carry])}
    return out


NEW_CHAT = "[Start a new chat]"


def lead_with_user(messages: list[dict]) -> list[dict]:
    """A user turn (NEW_CHAT) before a chat whose first turn after the system prompt is the assistant's."""
    first = next((i for i, m in enumerate(messages) if m.get("role") != "system"), None)
    if first is None or messages[first].get("role") != "assistant":
        return messages
    return [*messages[:first], {"role": "user", "content": NEW_CHAT}, *messages[first:]]


class ChatTemplate:
    """A compiled chat template plus the text markers that end an assistant turn."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.is_fallback = not source
        self.source = source or CHATML_TEMPLATE
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(self.source)  # compile errors surface here, once

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """Prompt text for `messages` ([{role, content}, …]), ending with the assistant header.

        A system message after the first position (Home puts the turn's memory there, so the history
        before it stays a cached prefix) is kept where it is when the template accepts it; a template
        that refuses one ("roles must alternate", "system role not supported") gets it merged into the
        user message that follows it; one that refuses a chat opened by the assistant (a greeting) gets a
        user turn before it."""
        msgs = [dict(m) for m in messages]
        try:
            return self._render(msgs, add_generation_prompt)
        except TemplateError as exc:
            error = exc
        # A persona's greeting opens the chat as the assistant; templates that insist on a user turn first
        # get the marker card users know from SillyTavern before it.
        for attempt in (merge_late_system(msgs), lead_with_user(merge_late_system(msgs))):
            if attempt == msgs:
                continue
            try:
                return self._render(attempt, add_generation_prompt)
            except TemplateError as exc:
                error = exc
        raise error

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Text that ends a reply if the model writes it as plain text: eos plus the template's end markers."""
        found = [m for m in END_MARKERS if m in self.source]
        if self.eos_token and self.eos_token not in found:
            found.insert(0, self.eos_token)
        return tuple(found)
