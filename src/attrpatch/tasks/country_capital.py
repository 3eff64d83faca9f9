"""Country-Capital (EAP-IG's factual-recall task).

Prompt: "The capital of <country> is" -> its capital.
Corruption: another country. Metric: prob_diff = P(capital) - P(the corrupted country's
capital), as in EAP-IG's data (the corrupted answer is the other country's capital).
"""
from __future__ import annotations

from ._common import Pair

NAME = "country_capital"
METRIC = "prob_diff"

PAIRS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
         ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"),
         ("Greece", "Athens"), ("Canada", "Ottawa"), ("Poland", "Warsaw"),
         ("Austria", "Vienna"), ("Portugal", "Lisbon"), ("Sweden", "Stockholm"),
         ("Norway", "Oslo"), ("Ireland", "Dublin"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
         ("Cuba", "Havana"), ("Iran", "Tehran")]
WORDS = {w for p in PAIRS for w in p} | {"The", "capital", "of", "is"}


def _prompt(country):
    return ["The", "capital", "of", country, "is"]


def sample_pair(rng) -> Pair:
    (c, cap), (c2, cap2) = rng.sample(PAIRS, 2)
    return Pair(_prompt(c), _prompt(c2), [cap], [cap2])


def training_example(rng) -> list[str]:
    c, cap = rng.choice(PAIRS)
    return _prompt(c) + [cap]
