"""A roundtable: two or more personas take turns on a topic the user set; the user may interject.

How a turn is put to the model (small chat models follow one user/assistant exchange well and a
multi-party script badly): the speaker's own earlier lines are `assistant` messages; everything else
(the topic, the other personas, the user's interjections) arrives as `user` messages prefixed with the
speaker's name ("Spark: …"), consecutive ones merged so roles alternate as every chat template
expects. The system prompt is the speaker's persona prompt plus who is at the table and the topic.
Stop strings on "\\nName:" keep a model from writing the others' lines, and a reply that starts with
"Name:" (its own or, as a 135M model often does, the last speaker's) has it cut.

Logged like any conversation, in its own session: an `event` record (topic, personas, rounds), the
topic and every interjection as the user's records, each turn as an assistant record with its
persona, adapters and params (plus `roundtable: {round, seat}`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from home.prompt import system_prompt
from home.reply import Reply
from home.stack import Stack
from llm.params import GenParams
from vault.logs import ConversationLog
from vault.personas import Persona

DEFAULT_ROUNDS = 2
MAX_ROUNDS = 20
TURN_MAX_TOKENS = 200  # a roundtable line is a few sentences, whatever the persona's chat limit


@dataclass(frozen=True)
class Seat:
    """A persona at the table with the stack and params its turns use."""

    persona: Persona
    stack: Stack
    params: GenParams

    @property
    def name(self) -> str:
        return self.persona.name


@dataclass
class Line:
    who: str  # display name
    persona: str | None  # persona id; None for the user
    text: str
    partial: bool = False


def framing(seat: Seat, seats: list[Seat], user: str, topic: str) -> str:
    others = [s.name for s in seats if s.persona.id != seat.persona.id]
    return (f"This is a roundtable discussion between {', '.join(others)}, {user} and you. Topic: {topic}\n"
            f"You are {seat.name}. Speak only as {seat.name}: answer what was said last in two to four "
            f"sentences, add something new, and never write anyone else's lines.")


def messages_for(seat: Seat, seats: list[Seat], lines: list[Line], user: str, topic: str) -> list[dict]:
    """The chat messages for `seat`'s next turn (pure: no model, no files)."""
    system = "\n\n".join(p for p in (system_prompt(seat.persona, user), framing(seat, seats, user, topic)) if p)
    turns: list[dict] = [{"role": "user", "content": f"{user}: {topic}"}]
    for line in lines:
        if line.persona is not None and line.persona == seat.persona.id:
            turns.append({"role": "assistant", "content": line.text})
        else:
            turns.append({"role": "user", "content": f"{line.who}: {line.text}"})
    merged: list[dict] = []
    for t in turns:
        if merged and merged[-1]["role"] == t["role"]:
            merged[-1]["content"] += "\n\n" + t["content"]
        else:
            merged.append(dict(t))
    if merged[-1]["role"] == "assistant":
        merged.append({"role": "user", "content": f"{user}: go on, {seat.name}."})
    return [{"role": "system", "content": system}, *merged]


def turn_params(seat: Seat, seats: list[Seat], user: str) -> GenParams:
    stops = tuple(f"\n{n}:" for n in [*(s.name for s in seats if s is not seat), user])
    return seat.params.merged(max_tokens=min(seat.params.max_tokens, TURN_MAX_TOKENS),
                              stop=tuple(dict.fromkeys(seat.params.stop + stops)))


def strip_name_prefix(pieces: Iterator[str], names: list[str]) -> Iterator[str]:
    """Drop a leading "Name:" (any name at the table): small models echo the transcript's format,
    even another speaker's name, before their own words."""
    prefixes = [f"{n}:".lower() for n in names]
    longest = max(len(p) for p in prefixes)
    head, deciding = "", True
    for piece in pieces:
        if not deciding:
            yield piece
            continue
        head += piece
        probe = head.lstrip()
        low = probe.lower()
        hit = next((p for p in prefixes if low.startswith(p)), None)
        if hit is not None:
            rest = probe[len(hit):].lstrip()
            if rest:
                deciding = False
                yield rest
            continue
        if len(probe) >= longest or not any(p.startswith(low) for p in prefixes):
            deciding = False
            yield head
    if deciding and head:
        probe = head.lstrip()
        hit = next((p for p in prefixes if probe.lower().startswith(p)), None)
        yield probe[len(hit):].lstrip() if hit else head


class Roundtable:
    """The table's state and its turns. `speak` runs on a worker thread; `interject` may be called
    from any thread (it only queues: the worker logs it before the next turn, so one thread writes)."""

    def __init__(self, engine, log: ConversationLog, user: str, seats: list[Seat], topic: str,
                 rounds: int = DEFAULT_ROUNDS, prepare: Callable[[Stack], None] | None = None) -> None:
        if len(seats) < 2:
            raise ValueError("a roundtable needs at least two personas")
        self.engine, self.log, self.user, self.seats, self.topic = engine, log, user, seats, topic
        self.rounds = rounds
        self.prepare = prepare  # loads a seat's adapters on the engine (once) before its turn
        self.lines: list[Line] = []
        self.turns = 0  # persona turns taken, partial ones included
        self.opened = False
        self._pending: list[str] = []
        self._lock = threading.Lock()

    @property
    def next_seat(self) -> Seat:
        return self.seats[self.turns % len(self.seats)]

    @property
    def round(self) -> int:
        """1-based round of the next turn."""
        return self.turns // len(self.seats) + 1

    @property
    def remaining(self) -> int:
        return max(0, self.rounds * len(self.seats) - self.turns)

    def more(self) -> None:
        """Go on: one more round if the table had finished; a stopped table just continues."""
        if self.remaining == 0:
            self.rounds += 1

    def interject(self, text: str) -> None:
        with self._lock:
            self._pending.append(text)

    @property
    def has_pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def open(self) -> None:
        """Log the table (event + the topic as the user's words). Idempotent."""
        if self.opened:
            return
        names = ", ".join(s.name for s in self.seats)
        self.log.append({"user": self.user, "persona": None, "role": "event", "event": "roundtable",
                         "text": f"Roundtable: {names} — {self.topic}", "topic": self.topic,
                         "personas": [s.persona.id for s in self.seats], "rounds": self.rounds})
        self.log.append({"user": self.user, "persona": None, "role": "user", "text": self.topic,
                         "adapters": [], "roundtable": {"round": 0, "topic": True}})
        self.opened = True

    def drain(self) -> list[dict]:
        """Log the queued interjections; they become part of the transcript."""
        with self._lock:
            pending, self._pending = self._pending, []
        out = []
        for text in pending:
            out.append(self.log.append({"user": self.user, "persona": None, "role": "user", "text": text,
                                        "adapters": [], "roundtable": {"round": self.round}}))
            self.lines.append(Line(self.user, None, text))
        return out

    def speak(self, cancel: threading.Event | None = None) -> Iterator[str]:
        """The next seat's turn: stream it, then log it and add it to the transcript."""
        self.open()
        self.drain()
        seat, n, rnd = self.next_seat, self.turns % len(self.seats), self.round
        if self.prepare is not None:
            self.prepare(seat.stack)
        messages = messages_for(seat, self.seats, self.lines, self.user, self.topic)
        reply = Reply(self.engine, messages, turn_params(seat, self.seats, self.user), seat.stack)
        shown: list[str] = []
        try:
            names = [seat.name, *(s.name for s in self.seats if s is not seat), self.user]
            for piece in strip_name_prefix(reply.stream(cancel), names):
                shown.append(piece)
                yield piece
        finally:
            if reply.finish_reason is not None:  # the stream started: log what was said, even partial
                text = "".join(shown).strip()
                record = reply.record(self.user, seat.persona.id, text)
                self.log.append({**record, "roundtable": {"round": rnd, "seat": n}})
                self.lines.append(Line(seat.name, seat.persona.id, text, reply.partial))
                self.turns += 1
