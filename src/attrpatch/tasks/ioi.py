"""Indirect Object Identification (Wang et al. 2022; data as in ACDC / EAP-IG).

Prompt: "When Mary and John went to the store , John gave a drink to" -> " Mary" (the
indirect object IO; S = John is the repeated subject). Templates: a few of one fixed
word count (14), in both ABBA and BABA name orders, so clean and corrupted prompts of a
batch have equal length.

Corruption (ABC, as in ACDC's IOI data): IO, S1 and S2 are replaced by three other,
distinct random names, so the corrupted prompt has no repeated name.
Metric: logit_diff = logit(IO) - logit(S) at the last position.
Reconstruction: the original IOI templates are longer and more varied; these are
shortened templates in the same form, with real first names.
"""
from __future__ import annotations

from ._common import Pair

NAME = "ioi"
METRIC = "logit_diff"

NAMES = [
    "Mary", "John", "Tom", "James", "Anna", "Paul", "Kate", "Mark", "Sarah", "David",
    "Laura", "Peter", "Lisa", "Michael", "Emma", "Daniel", "Alice", "Robert", "Rachel",
    "Steven", "Jessica", "Brian", "Amy", "Kevin", "Susan", "Jack", "Linda", "Eric",
    "Helen", "George",
]
# (place, verb, object) fill "{A} and {B} went to the {place} , {S} {verb} a {object} to"
PLACES = ["store", "park", "school", "station", "garden"]
ACTIONS = [("gave", "drink"), ("handed", "book"), ("gave", "ring"), ("sent", "letter"), ("handed", "ball")]
OPENERS = ["When", "After", "While"]

WORDS = set(NAMES) | set(PLACES) | {w for a in ACTIONS for w in a} | set(OPENERS) | {
    "and", "went", "to", "the", ",", "a"}


def _prompt(opener, a, b, place, s2, verb, obj):
    return [opener, a, "and", b, "went", "to", "the", place, ",", s2, verb, "a", obj, "to"]


def _sample(rng):
    io, s = rng.sample(NAMES, 2)
    order = rng.random() < 0.5  # ABBA (IO first) or BABA
    opener = rng.choice(OPENERS)
    place = rng.choice(PLACES)
    verb, obj = rng.choice(ACTIONS)
    a, b = (io, s) if order else (s, io)
    return io, s, opener, place, verb, obj, a, b


def sample_pair(rng) -> Pair:
    io, s, opener, place, verb, obj, a, b = _sample(rng)
    clean = _prompt(opener, a, b, place, s, verb, obj)
    x, y, z = rng.sample([n for n in NAMES if n not in (io, s)], 3)
    corrupt = _prompt(opener, x, y, place, z, verb, obj)
    return Pair(clean, corrupt, [io], [s])


def training_example(rng) -> list[str]:
    io, s, opener, place, verb, obj, a, b = _sample(rng)
    return _prompt(opener, a, b, place, s, verb, obj) + [io]
