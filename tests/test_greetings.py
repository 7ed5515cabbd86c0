"""A persona's card greeting opens a new chat, and its example dialogue goes into the prompt by the
budget rule (home/prompt.py): whole `<START>` blocks while the system prompt stays within n_ctx // 4."""

from __future__ import annotations

import json

from home.prompt import EXAMPLES_SHARE, build_messages, example_blocks, greeting, prompt_budget, system_prompt
from home.turn import Conversation
from llm.params import GenParams
from llm.template import NEW_CHAT, ChatTemplate
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.memory_store import indexable
from vault.personas import Persona

CARD = {
    "name": "Wren", "description": "{{char}} is a gardener who talks to {{user}} about plants.",
    "first_mes": "Morning, {{user}}! The tomatoes are up.", "alternate_greetings": ["Back again?"],
    "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Hello there, sprout.\n<START>\n{{user}}: Rain?\n"
                   "{{char}}: Good for the beans.\n<START>\n\n<START>\n{{user}}: Bye\n{{char}}: Mind the slugs.",
}


def words(text: str) -> int:
    return len(text.split())


def test_greeting_is_the_first_mes_else_the_first_alternate():
    assert greeting(Persona("wren", dict(CARD)), "Ana") == "Morning, Ana! The tomatoes are up."
    assert greeting(Persona("wren", {**CARD, "first_mes": " "}), "Ana") == "Back again?"
    assert greeting(Persona("wren", {**CARD, "first_mes": "", "alternate_greetings": [3, ""]}), "Ana") is None
    assert greeting(None, "Ana") is None


def test_example_dialogue_fits_whole_blocks_within_the_budget():
    wren = Persona("wren", dict(CARD))
    blocks = example_blocks(wren, "Ana")
    assert blocks == ["Ana: Hi\nWren: Hello there, sprout.", "Ana: Rain?\nWren: Good for the beans.",
                      "Ana: Bye\nWren: Mind the slugs."]  # macros filled, the empty block dropped
    plain = system_prompt(wren, "Ana")
    assert "Example dialogue" not in plain  # no budget (roundtable, eval): the card alone
    room = words(plain)
    everything = system_prompt(wren, "Ana", (words, 1000))
    assert everything.endswith("Ana: Bye\nWren: Mind the slugs.") and words(everything) <= 1000
    one = system_prompt(wren, "Ana", (words, room + 10))  # "Example dialogue:" + block 1 = 8 words
    assert one.endswith("Wren: Hello there, sprout.") and "Rain?" not in one
    assert system_prompt(wren, "Ana", (words, room + 7)) == plain  # not even one whole block fits
    # Never a block cut in half, never one skipped for a later one that happens to fit.
    assert "Mind the slugs" not in system_prompt(wren, "Ana", (words, room + 17))


def test_the_budget_is_a_quarter_of_the_window_and_the_prompt_a_stable_prefix(engine):
    count, limit = prompt_budget(engine)
    assert limit == engine.n_ctx // EXAMPLES_SHARE and count("Hello there") == len(engine.tokenize("Hello there"))
    wren = Persona("wren", dict(CARD))
    short = build_messages(wren, [], "Hi", "Ana", budget=prompt_budget(engine))
    history = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}] * 3
    long = build_messages(wren, history, "Hi", "Ana", budget=prompt_budget(engine))
    assert short[0] == long[0] and "Mind the slugs" in short[0]["content"]  # the history never changes it
    big = Persona("wren", {**CARD, "description": "leaf " * (limit + 10)})
    assert "Example dialogue" not in build_messages(big, [], "Hi", "Ana", budget=prompt_budget(engine))[0]["content"]


def test_a_new_chat_opens_with_the_greeting_logged_as_the_personas(tmp_path, engine):
    vault = Vault.open(tmp_path / "v")
    wren = Persona("wren", dict(CARD))
    convo = Conversation(engine, ConversationLog.create(vault), "ana", wren)
    assert convo.greet() == "Morning, ana! The tomatoes are up."
    convo.persona = Persona("sage", {"name": "Sage", "first_mes": "Hello. What shall we work through?"})
    assert convo.greet() == "Hello. What shall we work through?"  # switched before a word: Sage opens instead
    assert [m["content"] for m in convo.history] == ["Hello. What shall we work through?"]
    reply = "".join(convo.send("Hi!", GenParams(max_tokens=4, temperature=0.0, seed=1), []))
    assert convo.greet() is None  # the user has spoken: no greeting mid-chat
    assert [m["role"] for m in convo.history] == ["assistant", "user", "assistant"] and convo.history[2]["content"] == reply
    logged = [json.loads(line) for line in convo.log.path.read_text().splitlines()]
    greetings = [r for r in logged if r.get("greeting")]
    assert [(r["persona"], r["role"]) for r in greetings] == [("wren", "assistant"), ("sage", "assistant")]
    assert not any(indexable(r) for r in greetings)  # the same words every chat: not memory
    assert indexable(logged[-1])


def test_a_template_that_wants_a_user_turn_first_still_renders_a_greeting():
    strict = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
              "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
              "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    text = ChatTemplate(strict).render([{"role": "assistant", "content": "Morning!"}, {"role": "user", "content": "Hi"}])
    assert text == f"[user] {NEW_CHAT}\n[assistant] Morning!\n[user] Hi\n"
    chatml = ChatTemplate(None).render([{"role": "assistant", "content": "Morning!"}, {"role": "user", "content": "Hi"}])
    assert NEW_CHAT not in chatml  # templates that accept it get the chat as it is
