"""Task registry: seven tasks, each one module with the same interface.

Each task module defines NAME, METRIC (a metrics kind), WORDS (every word it can emit),
``sample_pair(rng) -> Pair`` (clean/corrupted word lists, answer and wrong words) and
``training_example(rng) -> list[str]`` (a clean prompt followed by a correct answer word,
the tiny models' training text). ``make_batch`` tokenizes pairs with the toy tokenizer
(tiny models) or a Hugging Face tokenizer (paper profile).
"""
from __future__ import annotations

from ..validate import integer
from . import country_capital, docstring, gender_bias, greater_than, hypernymy, ioi, sva
from ._common import Pair, build_batch, words_to_text
from .base import METRIC_KINDS, TaskBatch
from .eapig_files import PAPER_TASKS

TASKS = {
    m.NAME: m
    for m in (ioi, greater_than, docstring, sva, gender_bias, country_capital, hypernymy)
}

# Every task name a profile may use: the generated tasks above, and the EAP-IG paper's own
# prompt files (tasks.eapig_files; `<task>_eapig`, read from a data directory the user supplies).
ALL_TASK_NAMES = tuple(TASKS) + tuple(PAPER_TASKS)


def get_task(task: str):
    """The task module named `task`; ValueError listing the valid names otherwise."""
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}") from None


def make_batch(task: str, n: int, seed: int, tokenizer=None) -> TaskBatch:
    """n seeded clean/corrupted pairs of `task`.

    tokenizer: None for the toy tokenizer (tiny models), a vocab.ToyTokenizer, or a Hugging
    Face tokenizer (pairs that do not tokenize cleanly are rejected and counted in
    ``meta["rejected"]``).
    """
    mod = get_task(task)
    n = integer("n", n, where=f"make_batch({task!r})")
    seed = integer("seed", seed, minimum=0, where=f"make_batch({task!r})")
    return build_batch(mod.NAME, mod.METRIC, mod.sample_pair, n, seed, tokenizer)


def training_example(task: str, rng) -> list[str]:
    return get_task(task).training_example(rng)


__all__ = ["TASKS", "PAPER_TASKS", "ALL_TASK_NAMES", "TaskBatch", "METRIC_KINDS", "Pair", "make_batch", "get_task",
           "training_example", "words_to_text"]
