"""Greater-Than (Hanna, Liu, Variengien 2023; data as in ACDC / EAP-IG).

Prompt: "The war lasted from the year 17YY to the year 17" -> a year YY' > YY. The
century "17" and the two-digit "YY" are separate tokens (GPT-2 writes " 17" + "32"; the
toy vocabulary has "17" and the glued tokens "##00".."##99"). YY is sampled in 02..98.
Answer set: the two-digit tokens > YY; wrong set: those <= YY.

Corruption: YY -> "01" (so almost every year is "greater").
Metric: prob_diff = P(years > YY) - P(years <= YY) at the last position.
Reconstruction: the paper uses many event nouns and years 1100-1999; here a few nouns and
the 17th century only.
"""
from __future__ import annotations

from ._common import GLUE, Pair

NAME = "greater_than"
METRIC = "prob_diff"

NOUNS = ["war", "expedition", "contract", "drought", "festival", "voyage"]
YEARS = [f"{GLUE}{i:02d}" for i in range(100)]
WORDS = set(NOUNS) | set(YEARS) | {"The", "lasted", "from", "the", "year", "17", "to"}


def _prompt(noun, yy):
    return ["The", noun, "lasted", "from", "the", "year", "17", yy, "to", "the", "year", "17"]


def sample_pair(rng) -> Pair:
    noun = rng.choice(NOUNS)
    y = rng.randint(2, 98)
    yy = YEARS[y]
    return Pair(_prompt(noun, yy), _prompt(noun, YEARS[1]), YEARS[y + 1:], YEARS[: y + 1])


def training_example(rng) -> list[str]:
    noun = rng.choice(NOUNS)
    y = rng.randint(1, 98)
    return _prompt(noun, YEARS[y]) + [YEARS[rng.randint(y + 1, 99)]]
