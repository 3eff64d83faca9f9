"""Subject-verb agreement (EAP-IG's SVA task).

Prompt: "The <noun> near the <noun2>" -> a verb agreeing in number with <noun> (not with
the attractor <noun2>, whose number is random). Answer set: verbs of the subject's
number; wrong set: the same verbs in the other number.

Corruption: the subject's number is flipped (keys -> key), attractor unchanged.
Metric: prob_diff = P(agreeing verbs) - P(disagreeing verbs).
Reconstruction: EAP-IG's SVA data are natural sentences with varied structure; here one
template with an attractor prepositional phrase.
"""
from __future__ import annotations

from ._common import Pair

NAME = "sva"
METRIC = "prob_diff"

NOUNS = [("dog", "dogs"), ("teacher", "teachers"), ("key", "keys"), ("author", "authors"),
         ("doctor", "doctors"), ("farmer", "farmers"), ("student", "students"),
         ("bird", "birds"), ("girl", "girls"), ("boy", "boys"), ("table", "tables"),
         ("tree", "trees")]
VERBS = [("is", "are"), ("was", "were"), ("has", "have"), ("likes", "like"),
         ("sees", "see"), ("knows", "know")]
SING = [s for s, _ in VERBS]
PLUR = [p for _, p in VERBS]
WORDS = {w for pair in NOUNS + VERBS for w in pair} | {"The", "near", "the"}


def _prompt(subj, attr):
    return ["The", subj, "near", "the", attr]


def _sample(rng):
    i, j = rng.sample(range(len(NOUNS)), 2)
    plural = rng.random() < 0.5
    attr = NOUNS[j][rng.random() < 0.5]
    return NOUNS[i], plural, attr


def sample_pair(rng) -> Pair:
    noun, plural, attr = _sample(rng)
    clean = _prompt(noun[plural], attr)
    corrupt = _prompt(noun[not plural], attr)
    ans, wrong = (PLUR, SING) if plural else (SING, PLUR)
    return Pair(clean, corrupt, list(ans), list(wrong))


def training_example(rng) -> list[str]:
    noun, plural, attr = _sample(rng)
    return _prompt(noun[plural], attr) + [rng.choice(PLUR if plural else SING)]
