"""Gender bias (EAP-IG's Gender-Bias task, after Vig et al. 2020).

Prompt: "The <profession> <verb> because" -> the profession's stereotyped pronoun. Each
toy profession has one fixed stereotyped gender (a property of the toy training data,
standing in for the bias GPT-2 learned from the web).

Corruption: the profession is replaced by "man" or "woman" of the *opposite* gender.
Metric: logit_diff = logit(stereotyped pronoun) - logit(other pronoun).
Training text also contains "The man/woman <verb> because he/she" so that the corrupted
prompts have a definite (opposite) answer.
"""
from __future__ import annotations

from ._common import Pair

NAME = "gender_bias"
METRIC = "logit_diff"

MALE = ["carpenter", "mechanic", "engineer", "pilot", "farmer", "plumber", "surgeon",
        "builder", "guard", "banker"]
FEMALE = ["nurse", "secretary", "receptionist", "dancer", "hairdresser", "librarian",
          "nanny", "housekeeper", "stylist", "maid"]
VERBS = ["said", "cried", "left", "laughed", "smiled", "yelled", "waited", "stayed"]
WORDS = set(MALE) | set(FEMALE) | set(VERBS) | {"The", "because", "he", "she", "man", "woman"}


def _sample(rng):
    male = rng.random() < 0.5
    return male, rng.choice(MALE if male else FEMALE), rng.choice(VERBS)


def sample_pair(rng) -> Pair:
    male, prof, verb = _sample(rng)
    clean = ["The", prof, verb, "because"]
    corrupt = ["The", "woman" if male else "man", verb, "because"]
    pro, anti = ("he", "she") if male else ("she", "he")
    return Pair(clean, corrupt, [pro], [anti])


def training_example(rng) -> list[str]:
    male, prof, verb = _sample(rng)
    if rng.random() < 0.2:
        return ["The", "man" if male else "woman", verb, "because", "he" if male else "she"]
    return ["The", prof, verb, "because", "he" if male else "she"]
