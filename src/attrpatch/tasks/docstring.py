'''Docstring (Heimersheim & Janiak 2023; data as in ACDC, run on an attention-only model).

Prompt (word tokens): ``def load ( self , A , B , C ) : """ d d :param A : d d :param B :
d d :param`` -> C, the next def argument not yet documented.

Corruption (ACDC's ``random_random``): the three def arguments and the two docstring
arguments are all replaced by random parameter names (five distinct names, none of
them A, B or C), so the prompt no longer says which argument comes next.
Metric: logit_diff_max = logit(C) - max logit over the wrong set; the wrong set is the
other def arguments (A, B) and the corrupted prompt's argument names, as in ACDC's
"correct logit minus max wrong logit" (ACDC's wrong tokens are the other argument names
of the prompt; adding the corrupted names is our reading).
Reconstruction: the original prompts are real multi-line Python with indentation and
more varied descriptions; here they are one line of words of fixed length (26 tokens).
'''
from __future__ import annotations

from ._common import Pair

NAME = "docstring"
METRIC = "logit_diff_max"

PARAMS = [
    "file", "name", "path", "data", "size", "mode", "key", "value", "user", "text",
    "line", "port", "host", "url", "token", "count", "index", "width", "height", "color",
    "source", "target", "config", "query", "label", "image", "model", "state", "event", "field",
]
FUNCS = ["load", "run", "get", "update", "parse", "check", "send", "build", "read", "save"]
DESC = ["the", "new", "current", "given", "first", "main", "number", "string", "list",
        "object", "of", "default"]
WORDS = set(PARAMS) | set(FUNCS) | set(DESC) | {
    "def", "(", "self", ",", ")", ":", '"""', ":param"}


def _prompt(fn, defs, docs, desc):
    a, b, c = defs
    da, db = docs
    return (["def", fn, "(", "self", ",", a, ",", b, ",", c, ")", ":", '"""', desc[0], desc[1],
             ":param", da, ":", desc[2], desc[3], ":param", db, ":", desc[4], desc[5], ":param"])


def _sample(rng):
    fn = rng.choice(FUNCS)
    a, b, c = rng.sample(PARAMS, 3)
    desc = [rng.choice(DESC) for _ in range(6)]
    return fn, (a, b, c), desc


def sample_pair(rng) -> Pair:
    fn, (a, b, c), desc = _sample(rng)
    clean = _prompt(fn, (a, b, c), (a, b), desc)
    others = rng.sample([p for p in PARAMS if p not in (a, b, c)], 5)
    corrupt = _prompt(fn, others[:3], others[3:], desc)
    return Pair(clean, corrupt, [c], [a, b] + others)


def training_example(rng) -> list[str]:
    fn, (a, b, c), desc = _sample(rng)
    return _prompt(fn, (a, b, c), (a, b), desc) + [c]
