"""The router's task and tone classifiers on the real MiniLM embedder: accuracy on labelled messages
that are not among the built-in examples, clear-cut labels, the centroid cache, user-defined labels."""

from __future__ import annotations

from collections import Counter

import pytest

from home.router import Router
from home.router.classify import builtin_examples
from vault.config import parse_config
from vault.errors import ConfigError
from vault.layout import Vault

# (message, task, tone): written for these tests, none of them in home/router/examples.toml.
LABELLED = [
    ("hi there, what have you been up to?", "chat", "neutral"),
    ("do you like jazz or classical music more?", "chat", "neutral"),
    ("I just saw a rainbow over the sea, absolutely gorgeous!", "chat", "upbeat"),
    ("ha, my kid just said the funniest thing, want to hear it?", "chat", "upbeat"),
    ("work is crazy this week and I just need to vent for a minute", "chat", "stressed"),
    ("I've been feeling really lonely this evening, can we just talk?", "chat", "sad"),
    ("ugh, my flatmate ate my leftovers again, I'm so annoyed", "chat", "angry"),
    ("what's the most beautiful place you know of?", "chat", "neutral"),
    ("write a thank-you email to my mentor", "writing", "neutral"),
    ("polish this paragraph for my newsletter", "writing", "neutral"),
    ("write a fun invitation for my housewarming, I'm so excited!", "writing", "upbeat"),
    ("I have to send this report in twenty minutes, please fix the wording now", "writing", "stressed"),
    ("help me write a eulogy for my father, I can barely think", "writing", "sad"),
    ("draft a complaint letter to the airline, they were awful and I'm furious", "writing", "angry"),
    ("write a haiku about the first snow", "writing", "neutral"),
    ("rewrite my bio so it sounds more confident", "writing", "neutral"),
    ("how do I read a CSV file with pandas?", "coding", "neutral"),
    ("write a regex that matches email addresses", "coding", "neutral"),
    ("my first app is live on the store, let's add dark mode next!", "coding", "upbeat"),
    ("production is down, the deploy broke the database migration, help!", "coding", "stressed"),
    ("I've debugged this for hours and I feel like I'll never be a real programmer", "coding", "sad"),
    ("this idiotic compiler error makes no sense, I hate C++", "coding", "angry"),
    ("why is my Go program deadlocking on this channel?", "coding", "neutral"),
    ("add type hints to this python module", "coding", "neutral"),
    ("make a schedule for my week with time for exercise", "planning", "neutral"),
    ("plan a weekend trip to the mountains for two", "planning", "neutral"),
    ("we're getting married next spring, yay! help me plan the steps", "planning", "upbeat"),
    ("I have five assignments due Friday and I'm panicking, what order should I do them in?", "planning",
     "stressed"),
    ("since the divorce I can't get organised, help me plan a simple routine", "planning", "sad"),
    ("my team keeps missing deadlines and I'm fed up, make a project plan that works", "planning", "angry"),
    ("create a grocery list for a week of vegetarian dinners", "planning", "neutral"),
    ("outline the milestones for writing my thesis this year", "planning", "neutral"),
    ("should I buy a new laptop or repair the old one?", "advice", "neutral"),
    ("how do I negotiate a lower price on a used car?", "advice", "neutral"),
    ("I just got promoted, any tips for leading my old teammates?", "advice", "upbeat"),
    ("my landlord wants me out by Monday and I don't know what to do", "advice", "stressed"),
    ("my mum is ill and I feel so helpless, how do I support her?", "advice", "sad"),
    ("my boss yelled at me in front of everyone, I'm livid, should I report him?", "advice", "angry"),
    ("is it rude to leave a party without saying goodbye?", "advice", "neutral"),
    ("what should I consider before adopting a cat?", "advice", "neutral"),
    ("I'm thrilled, we finally finished the renovation!", "chat", "upbeat"),
    ("my visa interview is tomorrow and I'm terrified I'll mess it up", "advice", "stressed"),
    ("I miss my old life back home so much", "chat", "sad"),
    ("the bank charged me fees again for nothing, this is ridiculous", "advice", "angry"),
]

# Clear-cut messages whose labels must be exact (and confident).
CLEAR_TASKS = [
    ("how do I read a CSV file with pandas?", "coding"),
    ("this idiotic compiler error makes no sense, I hate C++", "coding"),
    ("polish this paragraph for my newsletter", "writing"),
    ("make a schedule for my week with time for exercise", "planning"),
    ("create a grocery list for a week of vegetarian dinners", "planning"),
    ("my boss yelled at me in front of everyone, I'm livid, should I report him?", "advice"),
    ("do you like jazz or classical music more?", "chat"),
]
CLEAR_TONES = [
    ("I'm thrilled, we finally finished the renovation!", "upbeat"),
    ("I've been feeling really lonely this evening, can we just talk?", "sad"),
    ("I miss my old life back home so much", "sad"),
    ("draft a complaint letter to the airline, they were awful and I'm furious", "angry"),
    ("my visa interview is tomorrow and I'm terrified I'll mess it up", "stressed"),
    ("create a grocery list for a week of vegetarian dinners", "neutral"),
]


class CountingEmbedder:
    """The real embedder, counting the texts it embeds (to see whether the cache was used)."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.texts = inner, inner.name, inner.dim, 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)



@pytest.fixture(scope="module")
def router(tmp_path_factory, embedder):
    vault = Vault.open(tmp_path_factory.mktemp("router") / "v")
    return Router.load(vault, parse_config(""), embedder)


def test_fixture_covers_every_label_at_least_five_times():
    tasks, tones = Counter(t for _, t, _ in LABELLED), Counter(t for _, _, t in LABELLED)
    assert set(tasks) == set(builtin_examples()["tasks"]) and min(tasks.values()) >= 5
    assert set(tones) == set(builtin_examples()["tones"]) and min(tones.values()) >= 5
    examples = {s for dim in builtin_examples().values() for sents in dim.values() for s in sents}
    assert not examples & {m for m, _, _ in LABELLED}, "fixture messages must be held out"


def test_accuracy_on_held_out_messages(router):
    preds = [router.classify(m) for m, _, _ in LABELLED]
    task_acc = sum(p[0].label == t for p, (_, t, _) in zip(preds, LABELLED, strict=True)) / len(LABELLED)
    tone_acc = sum(p[1].label == t for p, (_, _, t) in zip(preds, LABELLED, strict=True)) / len(LABELLED)
    # Measured with all-MiniLM-L6-v2: tasks 0.91, tones 0.73 (chance: 0.2).
    assert task_acc >= 0.80, task_acc
    assert tone_acc >= 0.65, tone_acc
    for task, tone in preds:
        assert sum(task.probs.values()) == pytest.approx(1, abs=1e-3)
        assert task.confidence == max(task.probs.values()) and tone.label in tone.probs


@pytest.mark.parametrize(("text", "label"), CLEAR_TASKS)
def test_clear_cut_tasks(router, text, label):
    task, _ = router.classify(text)
    assert (task.label, task.confidence >= 0.5) == (label, True), task


@pytest.mark.parametrize(("text", "label"), CLEAR_TONES)
def test_clear_cut_tones(router, text, label):
    _, tone = router.classify(text)
    assert (tone.label, tone.confidence >= 0.5) == (label, True), tone


def test_centroids_are_cached_per_examples_and_embedder(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    first = CountingEmbedder(embedder)
    Router.load(vault, parse_config(""), first)
    n_examples = sum(len(s) for dim in builtin_examples().values() for s in dim.values())
    assert first.texts == n_examples + 1  # every example once, plus the warm-up
    [cache] = (tmp_path / "v" / "router").glob("centroids-*.npz")
    assert oct(cache.stat().st_mode & 0o777) == "0o600"

    again = CountingEmbedder(embedder)
    Router.load(vault, parse_config(""), again)
    assert again.texts == 1  # the warm-up only: the centroids came from the cache

    edited = CountingEmbedder(embedder)
    Router.load(vault, parse_config('[router.task_examples]\ncoding = ["my unit tests hang"]\n'), edited)
    assert edited.texts == n_examples + 2  # the examples changed: rebuilt, and the stale cache removed
    assert [p.name for p in (tmp_path / "v" / "router").glob("centroids-*.npz")] != [cache.name]
    assert len(list((tmp_path / "v" / "router").glob("centroids-*.npz"))) == 1


def test_user_defined_label_from_config(tmp_path, embedder):
    config = parse_config(
        '[router]\ntasks = ["chat", "coding", "cooking"]\n'
        '[router.task_examples]\ncooking = ["how long do I roast a chicken?", "what can I cook with leeks?",\n'
        '  "is this dough supposed to be sticky?", "a quick vegetarian curry recipe please",\n'
        '  "how do I stop my risotto going gluey?"]\n')
    router = Router.load(Vault.open(tmp_path / "v"), config, embedder)
    task, _ = router.classify("how many minutes should I boil an egg for a runny yolk?")
    assert task.label == "cooking" and set(task.probs) == {"chat", "coding", "cooking"}
    assert router.classify("fix this null pointer exception in my Java code")[0].label == "coding"


def test_label_without_examples_names_file_and_field(tmp_path, embedder):
    vault = Vault.open(tmp_path / "v")
    with pytest.raises(ConfigError, match=r"config\.toml: router\.tasks\[1\]: label 'cooking' has no example"):
        Router.load(vault, parse_config('[router]\ntasks = ["chat", "cooking"]\n'), embedder)
    with pytest.raises(ConfigError, match=r"router\.tone_examples\.calm: not one of router\.tones"):
        Router.load(vault, parse_config('[router.tone_examples]\ncalm = ["breathe"]\n'), embedder)
