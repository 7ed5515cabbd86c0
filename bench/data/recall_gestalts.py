"""Gestalts as a distiller that reads every fact right would write them: the ceiling of gestalts as memory
items on the memory-recall set (bench/memory_recall.py --gestalts written; issue 13).

One third-person line per fact of recall_people.FACTS, the lasting part of what was said ("I get dizzy even
on a stepladder" → "The user is afraid of heights."), as home/distil.py asks the model for. Each points to
the turn that said it. Nothing here is measured against the default model: `--gestalts distil` is that.
"""

from __future__ import annotations

from recall_people import FACTS, PEOPLE

WRITTEN = {
    "home": "The user's name is {name} and they live in {city}.",
    "job": "The user works as a {job} at {employer}.",
    "partner": "The user's partner is {partner}; they have been together for five years.",
    "bro": "The user has a brother called {bro}.",
    "sport": "The user goes {sport} on {sportday} mornings.",
    "instrument": "The user plays the {instrument} in a band.",
    "pet": "The user has a grey cat called {pet}, adopted from a shelter.",
    "lang": "The user is learning {lang}.",
    "plant_spring": "The user planted {plant_spring} in their garden.",
    "bro_study": "The user's brother {bro} studied {subject}.",
    "bday": "The user's birthday is on {bday}.",
    "show1": "The user's favourite show is {show1}.",
    "allergy": "The user is allergic to {allergen}.",
    "friend_job": "The user's best friend {friend} works as a {fjob}.",
    "mum_city": "The user's mum {mum} lives alone in {mcity}.",
    "partner_veg": "The user's partner {partner} is vegetarian.",
    "doc": "The user's doctor is Dr {doc}.",
    "new_job": "The user works as {job2} at {employer2}.",
    "heights": "The user is afraid of heights.",
    "car": "The user drives a car: {car}.",
    "walks": "The user loves long walks in {walk}.",
    "bro_uni": "The user's brother {bro} went to university in {ucity}.",
    "mornings": "The user is not a morning person.",
    "food": "The user's comfort food is {food}.",
    "move": "The user lives in {city2}.",
    "sober": "The user does not drink alcohol.",
    "plant_autumn": "The user planted {plant_autumn} in their garden.",
    "friend_move": "The user's best friend {friend} is moving to {fcity}.",
    "sport2": "The user goes {sport} on {sportday2} evenings.",
    "neighbour": "The user's neighbour is {neighbour}.",
    "mum_age": "The user's mum {mum} turns {mum_age}.",
    "budget": "The user is on a tight budget until a loan is paid off.",
    "show2": "The user's favourite show is {show2}.",
    "car2": "The user drives an electric car: {car2}.",
    "crowds": "Big crowds drain the user; they need quiet after a party.",
    "coffee": "The user's usual coffee order is {coffee}.",
    "team": "The user supports {team}.",
}


def written(user: str, sessions: list[dict]) -> list[tuple[str, str]]:
    """(gestalt text, source turn id) for each of `user`'s facts said in `sessions`."""
    from make_memory_recall import fill

    p = PEOPLE[user]
    turns = [(f"{s['id']}:{n}", text.lower()) for s in sessions for n, (role, text) in enumerate(s["turns"], 1)
             if role == "user"]
    out = []
    for key, _, template in FACTS:
        said = fill(template, p).lower()
        source = next((tid for tid, text in turns if said in text), None)
        if source is None:
            continue  # said in a session outside the slice
        if key.startswith("book"):
            text = f"The user's book club read {p['books'][int(key[4:])]}."
        elif key.startswith("trip"):
            text = f"The user travelled to {p['trips'][int(key[4:])]}."
        else:
            text = WRITTEN[key].format(**p)
        out.append((text, source))
    return out
