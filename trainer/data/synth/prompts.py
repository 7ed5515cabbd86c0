"""Scenario prompts per persona and the in-character context they are answered in.

Categories: the common ones every persona gets (greeting, introduction, personal questions, feelings,
advice) and the ones its sheet gives (relationships: one set per person it knows; goals; conflicts).
The order interleaves categories, so a persona with 3 examples already covers three of them, and it
is deterministic: the n-th scenario of a persona is always the same one, which is what lets a stopped
run continue where it left off (attempts are remembered by scenario key).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from vault.personas import Persona

COMMON: dict[str, tuple[str, ...]] = {
    "greeting": (
        "Hello!", "Hi there, how are you today?", "Good morning!", "Hey, long time no see.",
        "Evening. Mind if I sit here?", "Oh, hello, I didn't expect to find you here.", "Hi! Got a minute?",
        "Well met. How's your day been?", "Hey you. What's new?", "Good evening. Busy day?",
    ),
    "introduction": (
        "Who are you?", "Tell me a bit about yourself.", "What do you do all day?",
        "How would you describe yourself in a few words?", "Where are you from?",
        "What should I know about you before we talk?", "What's your name, and what's your story?",
        "How did you end up doing what you do?", "What's a normal day like for you?",
        "If you had to introduce yourself at a party, what would you say?",
    ),
    "personal questions": (
        "What's your favourite place in the world?", "What do you do when you can't sleep?",
        "What's the best thing that happened to you this year?", "What are you proud of?",
        "What's something most people don't know about you?", "What do you eat for breakfast?",
        "What was your childhood like?", "What's your most treasured possession?",
        "What makes you laugh?", "What would you do with a free day?",
    ),
    "feelings": (
        "How are you feeling today, honestly?", "What makes you angry?", "When were you last really happy?",
        "What are you afraid of?", "Do you ever get lonely?", "What do you miss most?",
        "What calms you down when you're upset?", "What makes you nervous?",
        "How do you cope when things go wrong?", "What's been weighing on you lately?",
    ),
    "advice": (
        "I can't decide whether to take a new job far away. What would you do?",
        "My friend and I had a fight. How do I fix it?", "How do I stop putting things off?",
        "I'm nervous about a big day tomorrow. Any advice?", "How do I make new friends in a new town?",
        "What's the best advice you were ever given?", "I made a mistake at work. What now?",
        "How do I know when to give up on something?", "What should I do on a rainy weekend?",
        "How do I tell someone a hard truth?",
    ),
}
RELATIONSHIP = (
    "What do you think of {who}?", "How did you meet {who}?", "What's the best thing about {who}?",
    "What annoys you about {who}?", "Tell me a story about you and {who}.", "What would you say to {who} right now?",
)
GOAL = (
    "What are you working towards these days?", "Someone told me you want this: \"{item}\" Is that right?",
    "Why does this matter to you: \"{item}\"", "What's standing in your way? I mean this: \"{item}\"",
    "What will you do once this is done: \"{item}\"",
)
CONFLICT = (
    "What's troubling you at the moment?", "Someone told me this about you: \"{item}\" Is that true?",
    "How do you deal with this: \"{item}\"", "Does this still bother you: \"{item}\"",
    "What would you change about this, if you could: \"{item}\"",
)
FRAMES = ("", "Hey, ", "Quick question: ", "Be honest with me. ", "Sorry to bother you. ", "{first}, ")
CONTEXT_CHARS = 3000  # the sheet in context, clipped: a small model's context is a few thousand tokens


@dataclass(frozen=True)
class Scenario:
    key: str  # stable id within a persona: "<category>/<hash of the prompt text>"
    category: str
    instruction: str


def sheet_info(persona: Persona) -> dict:
    info = persona.home.get("sheet")
    return info if isinstance(info, dict) else {}


def scenarios(persona: Persona) -> list[Scenario]:
    """Every scenario prompt for `persona`, interleaved by category, unframed ones first."""
    first = persona.name.split()[0]
    info = sheet_info(persona)
    pools: dict[str, list[str]] = {c: list(ts) for c, ts in COMMON.items()}
    people = [r.get("name") for r in info.get("relationships", []) if isinstance(r, dict) and r.get("name")]
    if people:
        pools["relationships"] = [t.format(who=p) for t in RELATIONSHIP for p in people]
    for category, templates, items in (("goals", GOAL, info.get("goals")),
                                       ("conflicts", CONFLICT, info.get("conflicts"))):
        items = [str(x).strip() for x in items or [] if str(x).strip()]
        if items:
            pools[category] = [t.format(item=_quote(item)) for t in templates
                               for k, item in enumerate(items) if "{item}" in t or k == 0]
    out: list[Scenario] = []
    seen: set[str] = set()
    depth = max(len(p) for p in pools.values())
    for frame in FRAMES:
        lead = frame.format(first=first)
        for i in range(depth):
            for category, pool in pools.items():
                if i < len(pool):
                    text = lead + _lower_first(pool[i], lead)
                    key = f"{category}/{hashlib.sha1(text.encode()).hexdigest()[:12]}"
                    if key not in seen:
                        seen.add(key)
                        out.append(Scenario(key, category, text))
    return out


def _quote(item: str) -> str:
    return item.rstrip(" .") + "."


def _lower_first(text: str, lead: str) -> str:
    """"Hey, what do you…" reads better than "Hey, What do you…" (but keep "I" and names)."""
    if not lead or not text[:1].isupper() or text.split()[0] in ("I", "I'm", "I've") or lead.endswith(". "):
        return text
    return text[0].lower() + text[1:] if text[1:2].islower() else text


def fill(text: str, name: str, user: str = "the user") -> str:
    """Card macros as card authors expect them."""
    return re.sub(r"\{\{\s*(char|user)\s*\}\}", lambda m: name if m.group(1).lower() == "char" else user,
                  text or "", flags=re.IGNORECASE).strip()


def character_context(persona: Persona, max_chars: int = CONTEXT_CHARS) -> str:
    """The system message a scenario is answered under: who the persona is (the sheet, else the card)
    and how to answer (in character, first person, short, never as an assistant)."""
    name = persona.name
    info = sheet_info(persona)
    parts: list[str] = []
    for section in info.get("sections", []):
        if isinstance(section, dict) and section.get("text") and section.get("key") not in ("system", "examples"):
            title = "Summary" if section.get("key") == "summary" else section.get("title", "")
            parts.append(f"{title}: {section['text']}")
    if not parts:
        for key in ("description", "personality", "scenario"):
            if persona.data.get(key):
                parts.append(f"{key.capitalize()}: {fill(persona.data[key], name)}")
    sheet = "\n\n".join(parts)
    if len(sheet) > max_chars:
        sheet = sheet[:max_chars].rsplit("\n", 1)[0] + "\n…"
    examples = fill(persona.data.get("mes_example", ""), name, "User").replace("<START>", "").strip()
    rules = (f"You are {name}. Everything below describes you. Answer the user as {name} would, in the first "
             f"person, in {name}'s own voice, in one to four sentences. Stay in character: never say you are an "
             "AI, a model, an assistant or a character, and never speak as anyone else.")
    out = f"{rules}\n\n{sheet}" if sheet else rules
    return f"{out}\n\nHow {name} talks:\n{examples}" if examples else out


def messages_for(persona: Persona, scenario: Scenario, context: str | None = None) -> list[dict]:
    return [{"role": "system", "content": context or character_context(persona)},
            {"role": "user", "content": scenario.instruction}]
