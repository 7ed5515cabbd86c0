"""The planted facts of the knowledge-conflict bench (bench/knowledge_conflict.py), the logs an adapter
learns the stale ones from, and how a reply is judged: it follows memory (names the new value only), the
adapter (the stale value only), both, or neither.

Values are single distinctive words, each in one fact only, so a reply is judged by whole-word matches
and no fact's value can be mistaken for another's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    key: str
    stale: str  # what the adapter learnt (the old logs)
    new: str  # what memory holds (said later)
    said_stale: tuple[str, ...]  # the user's words in the old logs, {v} = the stale value
    said_new: str  # the user's later words, stored in memory, {v} = the new value
    questions: tuple[str, ...]  # asked at the end, by the user

    def stale_lines(self) -> list[str]:
        return [s.format(v=self.stale) for s in self.said_stale]

    def new_line(self) -> str:
        return self.said_new.format(v=self.new)


FACTS = [
    Fact("city", "Berlin", "Lisbon", ("I live in {v}.", "Home is {v}, has been for years.",
                                      "Here in {v} it rained all day.", "I love living in {v}."),
         "I moved to {v} last month, I live in {v} now.", ("Where do I live?", "Which city is my home?")),
    Fact("job", "nurse", "teacher", ("I work as a {v}.", "Being a {v} is tiring but I love it.",
                                     "Long shift today, the life of a {v}.", "I'm a {v}, that's my job."),
         "I changed careers: I work as a {v} now.", ("What is my job?", "What do I do for work?")),
    Fact("pet", "Miso", "Pepper", ("My cat is called {v}.", "{v} my cat slept on my keyboard again.",
                                   "I fed {v} before breakfast.", "{v} is the best cat in the world."),
         "My new pet is called {v}.", ("What is my pet called?", "What's the name of my pet?")),
    Fact("car", "Volvo", "Tesla", ("I drive a {v}.", "My {v} needs new tyres.", "I drove my {v} to work.",
                                   "The {v} is my car, old but reliable."),
         "I sold my old car and drive a {v} now.", ("What car do I drive?", "Which car do I have?")),
    Fact("drink", "coffee", "tea", ("My favourite drink is {v}.", "I need my {v} every morning.",
                                    "Nothing beats a hot {v}.", "I had three cups of {v} today."),
         "These days my favourite drink is {v}.", ("What is my favourite drink?", "What do I like to drink?")),
    Fact("sport", "tennis", "football", ("I play {v} every Sunday.", "{v} again this Sunday, I won!",
                                         "My {v} club meets on Sundays.", "I love playing {v}."),
         "I switched sports, I play {v} on Sundays now.", ("What sport do I play?", "Which sport do I play on Sundays?")),
    Fact("friend", "Tom", "Raj", ("My best friend is {v}.", "{v} and I have been best friends since school.",
                                  "I had lunch with {v}, my best friend.", "{v} is my closest friend."),
         "My best friend is {v} now.", ("Who is my best friend?", "What's my best friend's name?")),
    Fact("language", "Spanish", "Japanese", ("I am learning {v}.", "My {v} lessons are on Tuesdays.",
                                             "I practised my {v} today.", "Learning {v} is hard but fun."),
         "I stopped that and I am learning {v} now.", ("Which language am I learning?", "What language do I study?")),
    Fact("food", "pizza", "sushi", ("My favourite food is {v}.", "I could eat {v} every day.",
                                    "Had {v} for dinner again.", "Nothing beats {v}."),
         "My favourite food is {v} these days.", ("What is my favourite food?", "What food do I like best?")),
    Fact("instrument", "violin", "guitar", ("I play the {v}.", "I practised the {v} for an hour.",
                                            "My {v} tutor says I'm improving.", "Playing the {v} relaxes me."),
         "I gave that up and I play the {v} now.", ("Which instrument do I play?", "What instrument do I play?")),
]

CHATTER = [  # what Home said before the user's words in the old logs (the adapter's prompts)
    "Tell me about yourself.", "What's new with you?", "How was your day?", "Anything on your mind?",
]

CATEGORIES = ("memory", "adapter", "both", "neither")


def old_log_turns(facts: Iterable[Fact] = FACTS) -> list[tuple[str, str]]:
    """(Home's line, the user's stale words) pairs: the voice adapter's training data. Each fact also
    appears as the answer to its own questions, so the adapter learns to answer them the old way."""
    turns = []
    for f in facts:
        for i, line in enumerate(f.stale_lines()):
            turns.append((CHATTER[i % len(CHATTER)], line))
        for q in f.questions:
            turns.append((q.replace(" I ", " you ").replace(" my ", " your ").replace(" am ", " are "),
                          f.stale_lines()[0]))
    return turns


def _has(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word.lower())}\b", text.lower()) is not None


def classify(reply: str, fact: Fact) -> str:
    """memory: names the new value only; adapter: the stale one only; both; neither."""
    new, stale = _has(reply, fact.new), _has(reply, fact.stale)
    return "both" if new and stale else "memory" if new else "adapter" if stale else "neither"


def tally(labels: Iterable[str]) -> dict:
    """Counts per category and the share that follows memory."""
    counts = Counter(labels)
    n = sum(counts.values())
    out = {c: counts.get(c, 0) for c in CATEGORIES}
    out["n"] = n
    out["memory_rate"] = round(out["memory"] / n, 3) if n else 0.0
    return out


def table(rows: dict[str, dict]) -> str:
    """One line per condition: counts and the share that follows memory, side by side."""
    head = f"{'condition':<52} {'n':>3} {'memory':>7} {'adapter':>8} {'both':>5} {'neither':>8} {'follows memory':>15}"
    lines = [head, "-" * len(head)]
    for name, t in rows.items():
        lines.append(f"{name:<52} {t['n']:>3} {t['memory']:>7} {t['adapter']:>8} {t['both']:>5} {t['neither']:>8} "
                     f"{t['memory_rate']:>14.0%}")
    return "\n".join(lines)
