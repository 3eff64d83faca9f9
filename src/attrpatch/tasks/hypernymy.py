"""Hypernymy (EAP-IG's Hypernymy task).

Prompt: "A <hyponym> is a type of" -> its category; the answer set is the category's
words (1-2 synonyms, e.g. {animal, creature}).
Corruption: a hyponym of a different category. Metric: logit_diff of the answer set (mean
logit) minus the corrupted hyponym's category set (mean logit). EAP-IG sums logits over
the sets; with sets of different sizes the mean is the size-independent reading (ours).
"""
from __future__ import annotations

from ._common import Pair

NAME = "hypernymy"
METRIC = "logit_diff"

CATEGORIES = {
    ("animal", "creature"): ["lion", "tiger", "horse", "rabbit", "wolf"],
    ("fruit",): ["apple", "banana", "mango", "cherry", "grape"],
    ("vehicle",): ["car", "truck", "bus", "bicycle", "train"],
    ("instrument",): ["piano", "guitar", "violin", "drum", "flute"],
    ("bird",): ["sparrow", "eagle", "robin", "owl", "parrot"],
    ("tool",): ["hammer", "wrench", "saw", "drill", "shovel"],
    ("flower", "plant"): ["rose", "tulip", "daisy", "lily", "orchid"],
    ("sport", "game"): ["tennis", "soccer", "golf", "hockey", "baseball"],
}
CATS = list(CATEGORIES)
WORDS = {w for k, v in CATEGORIES.items() for w in list(k) + v} | {"A", "is", "a", "type", "of"}


def _prompt(h):
    return ["A", h, "is", "a", "type", "of"]


def sample_pair(rng) -> Pair:
    i, j = rng.sample(range(len(CATS)), 2)
    h = rng.choice(CATEGORIES[CATS[i]])
    h2 = rng.choice(CATEGORIES[CATS[j]])
    return Pair(_prompt(h), _prompt(h2), list(CATS[i]), list(CATS[j]))


def training_example(rng) -> list[str]:
    cat = rng.choice(CATS)
    return _prompt(rng.choice(CATEGORIES[cat])) + [rng.choice(cat)]
