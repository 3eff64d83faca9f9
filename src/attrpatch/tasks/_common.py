"""Shared machinery of the task generators: word-level pairs -> token batches.

Every task samples a `Pair` of *word lists* (clean prompt, corrupted prompt, answer words,
wrong words) from real English word lists. The same pair is then tokenized by either

* the toy tokenizer (`vocab.ToyTokenizer`: one word = one token, used by the tiny models), or
* a Hugging Face tokenizer (GPT-2's for the paper profile): each word is encoded with a
  leading space except the first one and except words marked with the glue prefix
  ``"##"`` (e.g. the two-digit year ``"##32"`` in "the year 17##32", which GPT-2 writes as
  " 17" + "32"). A pair whose clean and corrupted prompts tokenize to different lengths,
  or whose answer/wrong words are not single tokens, is *rejected*; the number rejected is
  returned in ``TaskBatch.meta["rejected"]`` and logged, so a tokenizer that silently
  shrinks a data set is visible.

Why words rather than token ids: one generator serves both model families, and the
corruption is defined once on words, as in the papers.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import torch

from .base import TaskBatch
from .vocab import ToyTokenizer, toy_tokenizer

log = logging.getLogger("attrpatch.tasks")

GLUE = "##"  # word prefix: no space before this word in running text


@dataclass
class Pair:
    clean: list[str]
    corrupt: list[str]
    answers: list[str]
    wrongs: list[str]


def surface(word: str) -> str:
    """The word as written (glue prefix removed)."""
    return word[len(GLUE):] if word.startswith(GLUE) else word


def words_to_text(words: list[str]) -> str:
    """Running text of a word list (first word no space; glued words no space)."""
    out = []
    for i, w in enumerate(words):
        if i == 0 or w.startswith(GLUE):
            out.append(surface(w))
        else:
            out.append(" " + w)
    return "".join(out)


def _hf_piece(word: str, first: bool) -> str:
    if first or word.startswith(GLUE):
        return surface(word)
    return " " + word


def _hf_encode(tok, words: list[str]) -> list[int]:
    ids: list[int] = []
    for i, w in enumerate(words):
        ids.extend(tok.encode(_hf_piece(w, i == 0), add_special_tokens=False))
    return ids


def _hf_single(tok, word: str) -> int | None:
    ids = tok.encode(_hf_piece(word, False), add_special_tokens=False)
    unk = getattr(tok, "unk_token_id", None)
    if len(ids) != 1 or (unk is not None and ids[0] == unk):
        return None  # several tokens, or unknown to the tokenizer
    return ids[0]


def _vocab_size(tok) -> int:
    return len(tok)


def build_batch(task: str, metric: str, sample_pair, n: int, seed: int, tokenizer=None,
                max_tries_factor: int = 50) -> TaskBatch:
    """n pairs of `task` tokenized by `tokenizer` (None = the toy tokenizer).

    Deterministic for `seed` (a local random.Random; no global state). For a Hugging Face
    tokenizer, pairs that do not tokenize cleanly are rejected and counted.
    """
    rng = random.Random(f"{task}:{seed}")
    tok = toy_tokenizer() if tokenizer is None else tokenizer
    toy = isinstance(tok, ToyTokenizer)
    V = len(tok)
    cleans, corrupts, ans_rows, wrong_rows = [], [], [], []
    rejected = 0
    reasons: dict[str, int] = {}
    tries = 0
    while len(cleans) < n:
        tries += 1
        if tries > max_tries_factor * max(n, 1):
            raise RuntimeError(
                f"task {task!r}: only {len(cleans)} of {n} pairs tokenize cleanly with "
                f"{type(tok).__name__} after {tries - 1} tries ({rejected} rejected: {reasons})"
            )
        p = sample_pair(rng)
        if toy:
            c, k = tok.encode(p.clean), tok.encode(p.corrupt)
            a = [tok.token_id(w) for w in p.answers]
            wr = [tok.token_id(w) for w in p.wrongs]
        else:
            c, k = _hf_encode(tok, p.clean), _hf_encode(tok, p.corrupt)
            a = [_hf_single(tok, w) for w in p.answers]
            wr = [_hf_single(tok, w) for w in p.wrongs]
            why = None
            if len(c) != len(k):
                why = "clean/corrupt length differ"
            elif any(x is None for x in a) or any(x is None for x in wr):
                why = "answer not a single token"
            elif cleans and len(c) != len(cleans[0]):
                why = "prompt length differs from the batch"
            elif set(a) & set(wr):
                why = "answer and wrong token coincide"
            if why:
                rejected += 1
                reasons[why] = reasons.get(why, 0) + 1
                continue
        am = torch.zeros(V, dtype=torch.bool)
        wm = torch.zeros(V, dtype=torch.bool)
        am[a] = True
        wm[wr] = True
        wm &= ~am
        cleans.append(c)
        corrupts.append(k)
        ans_rows.append(am)
        wrong_rows.append(wm)
    if rejected:
        log.warning("task %s: rejected %d pairs that do not tokenize cleanly (%s)", task, rejected, reasons)
    meta = {"rejected": rejected, "reject_reasons": reasons, "seed": seed,
            "tokenizer": "toy" if toy else getattr(tok, "name_or_path", type(tok).__name__)}
    return TaskBatch(
        task=task,
        clean=torch.tensor(cleans, dtype=torch.long),
        corrupt=torch.tensor(corrupts, dtype=torch.long),
        answer_mask=torch.stack(ans_rows),
        wrong_mask=torch.stack(wrong_rows),
        metric=metric,
        meta=meta,
    )
