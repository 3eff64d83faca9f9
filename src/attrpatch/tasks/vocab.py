"""The toy vocabulary and tokenizer shared by all tiny models.

One word = one token, no external tokenizer: the vocabulary is every word any task can
emit (collected from the task modules' ``WORDS``), a few filler words for language-model
text, and special tokens. Built deterministically (specials first, then sorted words),
and frozen into each checkpoint's ``vocab.json`` so later edits of word lists cannot
silently re-map a trained model's tokens.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]

# Filler words: random sequences of them are the "plain language" part of the training text.
FILLER = [
    "the", "a", "and", "of", "to", "in", "it", "was", "on", "with", "for", "at", "by",
    "this", "that", "day", "time", "house", "city", "water", "old", "new", "good", "small",
    "big", "long", "little", "very", "then", "there", "here", "went", "came", "saw", ".",
]


class ToyTokenizer:
    """Word-level tokenizer: a list of words <-> a list of ids (one each)."""

    def __init__(self, words: list[str]):
        self.words = list(words)
        self.vocab = {w: i for i, w in enumerate(self.words)}
        if len(self.vocab) != len(self.words):
            raise ValueError("toy vocabulary has duplicate words")
        self.pad_id = self.vocab["<pad>"]
        self.bos_id = self.vocab["<bos>"]
        self.eos_id = self.vocab["<eos>"]
        self.unk_id = self.vocab["<unk>"]

    def __len__(self) -> int:
        return len(self.words)

    def token_id(self, word: str) -> int:
        try:
            return self.vocab[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the toy vocabulary ({len(self)} words)") from None

    def encode(self, words: list[str]) -> list[int]:
        return [self.token_id(w) for w in words]

    def decode(self, ids) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"words": self.words}, indent=0))

    @classmethod
    def load(cls, path) -> "ToyTokenizer":
        return cls(json.loads(Path(path).read_text())["words"])

    def to_hf(self):
        """The same vocabulary as a transformers PreTrainedTokenizerFast (word level,
        whitespace split), saved next to the tiny checkpoints so that
        TransformerBridge.boot_transformers(dir) finds a tokenizer offline."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        t = Tokenizer(models.WordLevel(vocab=dict(self.vocab), unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(
            tokenizer_object=t, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
            unk_token="<unk>", model_max_length=1024,
        )


def all_words() -> list[str]:
    """Specials, then every task word and filler word, sorted (deterministic)."""
    from . import TASKS  # lazy: the task registry imports this module (tasks._common, tasks.eapig_files)

    words: set[str] = set(FILLER)
    for mod in TASKS.values():
        words.update(mod.WORDS)
    words -= set(SPECIALS)
    return SPECIALS + sorted(words)


@lru_cache(maxsize=1)
def toy_tokenizer() -> ToyTokenizer:
    """The current toy tokenizer (built from the task word lists)."""
    return ToyTokenizer(all_words())
