"""Writes bench/data/memory_recall.json: the conversation set bench/memory_recall.py measures (issue 13).

Deterministic (a fixed seed; run it again and the file is byte-identical): three people (recall_people.py)
× 15 sessions × 30 turns, one session every ~25 days through 2025. Each session holds that session's facts
(some said in passing inside a longer request) among filler requests, small talk about other people
(distractors: other cities, pets, languages), and the assistant's replies. Questions are asked in a new
chat on 2026-01-12; evidence is the user turn that says the fact, as `<session>:<turn>`.

    .venv/bin/python bench/data/make_memory_recall.py          # rewrite the set
    .venv/bin/python bench/data/make_memory_recall.py --check  # exit 1 if the committed file differs
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recall_people import BOOK_SESSIONS, FACTS, PEOPLE, QUESTIONS, TRIP_SESSIONS  # noqa: E402

OUT = Path(__file__).resolve().parent / "memory_recall.json"
SEED = 13
SESSIONS, USER_TURNS = 15, 15
START = datetime(2025, 1, 6, 18, 0, tzinfo=UTC)
ASKED = "2026-01-12T09:00:00.000Z"

REQUESTS = [
    "Can you suggest a quick weeknight pasta recipe?", "How do I center a div in CSS?",
    "What's the difference between a list and a tuple in Python?", "Give me a 20 minute workout plan.",
    "How long should I boil an egg for a runny yolk?", "Summarise the plot of Hamlet in three sentences.",
    "What are some tips for sleeping better?", "Explain compound interest simply.",
    "Write a haiku about autumn rain.", "How do I remove a coffee stain from a white shirt?",
    "Which planets can I see tonight without a telescope?", "How do I make cold brew coffee?",
    "Translate 'see you tomorrow' into French.", "What board games are fun for four people?",
    "How often should I water a cactus?", "Help me write an email asking for a day off.",
    "How do vaccines work?", "Give me ideas for a rainy Sunday.", "How do I fix a squeaky door hinge?",
    "Suggest a podcast about history.", "What's the best way to learn touch typing?",
    "Explain what a black hole is.", "How do I make my bread rise more?", "Write a limerick about a sleepy owl.",
    "What's a polite way to decline a meeting?", "How do I sort a dictionary by value in Python?",
    "What's the capital of Canada?", "Give me three ideas for a team-building activity.",
    "How many cups are in a litre?", "What's a good stretch for a stiff neck?",
    "Help me name a spreadsheet that tracks expenses.", "Why is the sky blue?",
    "What should I pack for a two-day work trip?", "How do I write a good cover letter?",
    "What's the difference between baking soda and baking powder?", "Recommend a documentary about the ocean.",
    "Can you explain how a mortgage works?", "How do I get rid of fruit flies in the kitchen?",
    "What are good questions to ask in a job interview?", "Write a short toast for a colleague's farewell.",
    "How do I make a git branch from an old commit?", "What's a healthy snack for the afternoon?",
    "How do I clean a cast iron pan?", "Explain the offside rule in two sentences.",
    "Suggest a name for a book club newsletter.", "What's the fastest way to defrost chicken safely?",
    "How do I stop procrastinating on small tasks?", "What's a good present for a five-year-old?",
    "Can you check this sentence: 'their going to the market tomorrow'?", "How do solar panels work?",
    "What's an easy houseplant for a dark room?", "Give me a packing list for a camping weekend.",
    "How do I politely remind someone they owe me money?", "What is the Pythagorean theorem?",
    "Plan a three-course dinner menu for six people.", "How do I unclog a bathroom sink?",
    "What's a good way to memorise vocabulary?", "Write a two-line birthday card message.",
]
OPENERS = ["", "", "", "Quick one: ", "Okay, next thing. ", "Random question: ", "Sorry to bother you again. ",
           "Morning! ", "Ugh, what a week. ", "Before I forget, "]
OTHERS = [
    "My colleague {o} just moved to {c}, she says the rent is crazy.", "My neighbour's dog {d} barked all night.",
    "{o} at work is learning {l} for a trip.", "{o} from the office lives in {c} and commutes two hours.",
    "My cousin {o} got a {p} as a pet, which seems like a lot of work.",
    "{o} from my old school is getting married in {c}.", "A friend of a friend, {o}, is allergic to cats.",
    "My manager {o} keeps talking about her holiday in {c}.",
]
OTHER_NAMES = ["Rui", "Sara", "Ben", "Chloe", "Marta", "Lukas", "Nadia", "Pete", "Hana", "Omar"]
OTHER_CITIES = ["Berlin", "Madrid", "Dublin", "Oslo", "Athens", "Lyon", "Zurich", "Cardiff", "Naples"]
OTHER_LANGS = ["Korean", "Greek", "Dutch", "Portuguese", "Swedish"]
OTHER_PETS = ["rabbit", "parrot", "tortoise", "hamster"]
DOGS = ["Rex", "Bolt", "Luna", "Toby"]
REPLIES = [
    "Here's a simple way to go about it: start small and adjust as you go.", "Good question! In short, yes.",
    "Sure, here are a few ideas you could try.", "That sounds like a lot to juggle; one thing at a time.",
    "Happy to help. The short version is below.", "It depends a little, but the usual advice works well.",
    "Here's a quick answer, and tell me if you want more detail.", "Of course. Try this first.",
]
ACKS = ["That's good to know, thanks for telling me.", "Noted!", "Oh, that's lovely to hear.",
        "Thanks for sharing that.", "I'll keep that in mind.", "That sounds like quite something!"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


NAMES = {str(v) for p in PEOPLE.values() for v in p.values()} | {"Dr"}


def session_start(user_index: int, s: int) -> datetime:
    return START + timedelta(days=25 * s + 2 * user_index, hours=user_index)


def fill(template: str, p: dict) -> str:
    obj = {"she": "her", "he": "him"}
    return template.format(**p, fpr_obj=obj[p["fpr"]])


def lower_first(text: str) -> str:
    """"My brother…" → "my brother…" inside a sentence; names and "I" keep their capital."""
    first = text.split()[0]
    return text if first in NAMES or first.startswith("I") and first[1:2] in ("", "'") else text[0].lower() + text[1:]


def filler(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return rng.choice(OTHERS).format(o=rng.choice(OTHER_NAMES), c=rng.choice(OTHER_CITIES),
                                         l=rng.choice(OTHER_LANGS), p=rng.choice(OTHER_PETS), d=rng.choice(DOGS))
    return rng.choice(OPENERS) + rng.choice(REQUESTS)


def person(user: str, ui: int, rng: random.Random) -> tuple[list[dict], dict[str, str]]:
    """The 15 sessions of one person and {fact key: evidence turn id}."""
    p = PEOPLE[user]
    sessions, where = [], {}
    for s in range(SESSIONS):
        sid = f"{user}-s{s + 1:02d}"
        facts = [(k, fill(t, p)) for k, at, t in FACTS if at == s]
        slots = [0] + rng.sample(range(1, USER_TURNS), len(facts) - 1) if s == 0 else \
            rng.sample(range(USER_TURNS), len(facts))
        by_slot = dict(zip(slots, facts, strict=True))
        turns = []
        for slot in range(USER_TURNS):
            if slot in by_slot:
                key, text = by_slot[slot]
                if key != "home" and rng.random() < 0.4:  # said in passing, inside a request
                    req = rng.choice(REQUESTS)
                    text = f"{text} Anyway, {lower_first(req)}" if rng.random() < 0.5 else \
                        f"{req} Also, {lower_first(text)}"
                where[key] = f"{sid}:{len(turns) + 1}"
                turns += [["user", text], ["assistant", rng.choice(ACKS) + " " + rng.choice(REPLIES)]]
            else:
                turns += [["user", filler(rng)], ["assistant", rng.choice(REPLIES)]]
        start = session_start(ui, s)
        sessions.append({"id": sid, "start": start.isoformat(timespec="seconds").replace("+00:00", "Z"),
                         "turns": turns})
    return sessions, where


def month_of(ui: int, s: int) -> str:
    return MONTHS[session_start(ui, s).month - 1]


def questions(user: str, ui: int, where: dict[str, str]) -> list[dict]:
    p = dict(PEOPLE[user])
    p.update({f"trip_month{i}": month_of(ui, s) for i, s in enumerate(TRIP_SESSIONS)})
    p.update({f"book_month{i}": month_of(ui, s) for i, s in enumerate(BOOK_SESSIONS)})
    out = []
    for n, (kind, text, evidence, stale) in enumerate(QUESTIONS, 1):
        out.append({"id": f"{user}-q{n:02d}", "user": user, "type": kind, "question": fill(text, p),
                    "evidence": [where[k] for k in evidence], "stale": [where[k] for k in stale], "asked": ASKED})
    return out


def build() -> dict:
    rng = random.Random(SEED)
    users, qs = [], []
    for ui, user in enumerate(PEOPLE):
        sessions, where = person(user, ui, rng)
        users.append({"user": user, "sessions": sessions})
        qs += questions(user, ui, where)
    return {"version": 1, "generator": "bench/data/make_memory_recall.py", "seed": SEED,
            "turn_minutes": 2, "users": users, "questions": qs}


def render(data: dict) -> str:
    """One session or question per line: small diffs, readable in review."""
    head = {k: data[k] for k in ("version", "generator", "seed", "turn_minutes")}
    lines = [json.dumps(head)[:-1] + ', "users": [']
    for ui, u in enumerate(data["users"]):
        lines.append(' {"user": ' + json.dumps(u["user"]) + ', "sessions": [')
        for si, s in enumerate(u["sessions"]):
            lines.append("  " + json.dumps(s, ensure_ascii=False) + ("," if si < len(u["sessions"]) - 1 else ""))
        lines.append(" ]}" + ("," if ui < len(data["users"]) - 1 else ""))
    lines.append('], "questions": [')
    for qi, q in enumerate(data["questions"]):
        lines.append(" " + json.dumps(q, ensure_ascii=False) + ("," if qi < len(data["questions"]) - 1 else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render(build())
    assert json.loads(text)["questions"]
    if "--check" in sys.argv:
        same = OUT.exists() and OUT.read_text("utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'differs from the generator: run it again'}")
        return 0 if same else 1
    OUT.write_text(text, "utf-8")
    data = json.loads(text)
    turns = sum(len(s["turns"]) for u in data["users"] for s in u["sessions"])
    print(f"wrote {OUT} ({len(text) // 1024} KiB): {len(data['users'])} users, {turns} turns, "
          f"{len(data['questions'])} questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
