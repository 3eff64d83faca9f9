'''Docstring as ACDC built it: the paper profile's Docstring task (Conmy et al. 2023; the EAP paper's
ROC, R^2 and EAP -> ACDC numbers on Docstring come from these prompts).

Source, read at ArthurConmy/Automatic-Circuit-Discovery commit ``ACDC_COMMIT``:
``acdc/docstring/prompts.py`` (``docstring_induction_prompt_generator``,
``docstring_prompt_templ``, ``BatchedPrompts``) and ``acdc/docstring/utils.py``
(``get_all_docstring_things``). Written here from that definition; the two word lists are
ACDC's data (``attrpatch/data/acdc_docstring_words.yaml``, in their source order).

One prompt per seed (ACDC seeds Python's ``random`` with the prompt's index; its data set of N
prompts is seeds 0..2N-1, the first N the validation set the experiments use). With a
``random.Random(seed)``, in this order of draws:

1. 15 distinct names from the variable names: the method name, one spare name, three
   corrupted def names, two corrupted doc names, two further names (ACDC's ``not_matching``
   args, unused by this corruption), the three *matching* args, two def prefix args, one def
   suffix arg (ACDC's ``n_matching_args=3, n_def_prefix_args=2, n_def_suffix_args=1,
   n_doc_prefix_args=0``);
2. three nouns for the method description (``met_desc_len=3``);
3. two nouns for each documented argument (``arg_desc_len=2``).

Clean prompt, multi-line Python ("rest" style)::

    <newline>def {method}(self, {p1}, {p2}, {m1}, {m2}, {m3}, {s1}):
        """{w} {w} {w}
    <empty line>
        :param {m1}: {w} {w}
        :param {m2}: {w} {w}
        :param

Answer: " {m3}", the next def argument not yet documented. Wrong answers: every other drawn
name but the method name (13; ACDC's ``wrong_answers``). Corruption ``random_random``: the
three matching def args become the three corrupted def names and the two documented names the
two corrupted doc names; method, prefix and suffix args and every description stay. Metric:
logit of the answer minus the largest wrong logit at the last position
(``raw_docstring_metric``, negated there), ``logit_diff_max`` here. Tokens: the whole text, BOS
prepended (``model.to_tokens(prompt, prepend_bos=True)``); an answer is the first token of
" name" (ACDC's ``to_tokens(...)[:, 0]``).
'''
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import yaml

from .base import TaskBatch
from .vocab import SPECIALS, ToyTokenizer, all_words

ACDC_REPO = "ArthurConmy/Automatic-Circuit-Discovery"
ACDC_COMMIT = "bc99ace817974b5584b7ee203d596a8e2bbcd399"
METRIC = "logit_diff_max"
# the `docstring_prompts` setting: "toy" (tasks.docstring, the tiny models' task) or "acdc" (this module)
PROMPT_SETS = ("toy", "acdc")
DEFAULT_PROMPT_SET = "toy"
WORDS_FILE = Path(__file__).resolve().parents[1] / "data" / "acdc_docstring_words.yaml"

# ACDC's get_all_docstring_things: docstring_induction_prompt_generator("rest", **these, seed=i)
N_MATCHING, N_DEF_PREFIX, N_DEF_SUFFIX, N_DOC_PREFIX = 3, 2, 1, 0
MET_DESC_LEN, ARG_DESC_LEN = 3, 2
N_DEF_ARGS = N_DEF_PREFIX + N_MATCHING + N_DEF_SUFFIX      # 6
N_DOC_ARGS = N_DOC_PREFIX + N_MATCHING - 1                  # 2
INDENT = "    "


@lru_cache(maxsize=1)
def acdc_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(variable names, nouns) in ACDC's order."""
    d = yaml.safe_load(WORDS_FILE.read_text())
    return tuple(d["variable_names"]), tuple(d["common_single_token_nouns"])


@dataclass(frozen=True)
class DocstringPrompt:
    """One ACDC Docstring prompt: the clean and ``random_random`` texts and their parts."""

    seed: int
    method: str
    def_args: tuple[str, ...]
    doc_args: tuple[str, ...]
    corrupt_def_args: tuple[str, ...]
    corrupt_doc_args: tuple[str, ...]
    answer: str
    wrongs: tuple[str, ...]
    clean: str
    corrupt: str


def render(method: str, desc: list[str], def_args, doc_args, doc_desc: list[list[str]]) -> str:
    """The "rest"-style prompt text: def line, description, one ``:param`` line per documented
    argument, and a last open ``:param``."""
    lines = [f"def {method}(self, {', '.join(def_args)}):", f'{INDENT}"""{" ".join(desc)}', ""]
    lines += [f"{INDENT}:param {a}: {' '.join(d)}" for a, d in zip(doc_args, doc_desc)]
    return "\n" + "\n".join(lines) + f"\n{INDENT}:param"


def acdc_prompt(seed: int) -> DocstringPrompt:
    """The prompt ACDC's generator gives for `seed` (module docstring: the draws, in order)."""
    names, nouns = acdc_words()
    rng = random.Random(seed)
    n_not_matching = N_MATCHING - 1
    drawn = rng.sample(names, 2 + N_MATCHING + 2 * n_not_matching + N_MATCHING + N_DEF_PREFIX + N_DEF_SUFFIX
                       + N_DOC_PREFIX)
    method, args = drawn[0], drawn[1:]
    rest = args[1:]                                          # args[0]: ACDC's random_answer (a wrong answer only)
    cut = [N_MATCHING, n_not_matching, n_not_matching, N_MATCHING, N_DEF_PREFIX, N_DEF_SUFFIX, N_DOC_PREFIX]
    parts, i = [], 0
    for c in cut:
        parts.append(rest[i:i + c])
        i += c
    rr_def, rr_doc, _not_matching, matching, prefix, suffix, doc_prefix = parts
    def_args = prefix + matching + suffix
    doc_args = doc_prefix + matching[:-1]
    desc = rng.sample(nouns, MET_DESC_LEN)
    doc_desc = [rng.sample(nouns, ARG_DESC_LEN) for _ in doc_args]
    corrupt_def = prefix + rr_def + suffix
    corrupt_doc = doc_prefix + rr_doc
    answer = matching[-1]
    return DocstringPrompt(
        seed=int(seed), method=method, def_args=tuple(def_args), doc_args=tuple(doc_args),
        corrupt_def_args=tuple(corrupt_def), corrupt_doc_args=tuple(corrupt_doc), answer=answer,
        wrongs=tuple(a for a in args if a != answer),
        clean=render(method, desc, def_args, doc_args, doc_desc),
        corrupt=render(method, desc, corrupt_def, corrupt_doc, doc_desc))


# ---- tokens -------------------------------------------------------------------------------

# Word-level stand-in pieces (random-weight models of paper_random): newline, indent, the
# docstring quotes and ``:param`` as one piece each, then words and single punctuation.
PIECE_RE = re.compile(r'\n|    |"""|:param|\w+|[^\w\s]')
STRUCTURE = ("\n", INDENT, '"""', ":param", "def", "self", "(", ")", ",", ":")


def word_pieces(text: str) -> list[str]:
    return PIECE_RE.findall(text)


def stand_in_words() -> list[str]:
    """Every piece a word-level stand-in tokenizer needs for these prompts (sorted)."""
    names, nouns = acdc_words()
    return sorted(set(STRUCTURE) | set(names) | set(nouns))


@lru_cache(maxsize=1)
def stand_in_tokenizer():
    """Word-level stand-in for random-weight models (paper_random): the toy vocabulary (so the
    toy tasks still tokenize) followed by every piece of these prompts (`word_pieces`)."""
    base = all_words()
    return ToyTokenizer(base + sorted(set(stand_in_words()) - set(base) - set(SPECIALS)))


def _encoder(tok):
    """(encode text, answer id of a name, BOS id) for a word-level (ToyTokenizer) or Hugging Face tokenizer."""
    if isinstance(tok, ToyTokenizer):
        return (lambda text: [tok.token_id(w) for w in word_pieces(text)],
                tok.token_id, tok.bos_id)
    return (lambda text: list(tok(text, add_special_tokens=False)["input_ids"]),
            lambda name: tok(" " + name, add_special_tokens=False)["input_ids"][0], tok.bos_token_id)


def make_acdc_batch(n: int, seed: int, tokenizer, prepend_bos: bool = True, task: str = "docstring") -> TaskBatch:
    """ACDC's Docstring prompts ``seed .. seed+n-1`` as a batch (seed 0: ACDC's validation set).

    A prompt whose clean and corrupted texts tokenize to different lengths is rejected and
    counted (``meta["rejected"]``) and the next seed taken; prompts of different lengths are
    right-padded with the metric at each one's last token (``pos``).
    """
    encode, answer_id, bos_id = _encoder(tokenizer)
    if prepend_bos and bos_id is None:
        raise ValueError(f"task {task!r}: prepend_bos is set but the tokenizer has no BOS token")
    bos = [int(bos_id)] if prepend_bos else []
    rows, seeds, rejected, s = [], [], 0, int(seed)
    while len(rows) < n:
        if rejected > 10 * max(n, 1):
            raise RuntimeError(f"task {task!r}: only {len(rows)} of {n} ACDC prompts have clean and corrupted "
                               f"texts of equal token length ({rejected} rejected)")
        p = acdc_prompt(s)
        s += 1
        c, k = bos + encode(p.clean), bos + encode(p.corrupt)
        if len(c) != len(k):
            rejected += 1
            continue
        a = answer_id(p.answer)
        w = sorted({answer_id(x) for x in p.wrongs} - {a})
        rows.append((c, k, a, w))
        seeds.append(p.seed)
    V = len(tokenizer)
    pad = getattr(tokenizer, "pad_id", None)
    pad = (getattr(tokenizer, "pad_token_id", None) or getattr(tokenizer, "eos_token_id", 0)) if pad is None else pad
    P = max(len(c) for c, *_ in rows)
    am = torch.zeros(len(rows), V, dtype=torch.bool)
    wm = torch.zeros(len(rows), V, dtype=torch.bool)
    for i, (_, _, a, w) in enumerate(rows):
        am[i, a] = True
        wm[i, w] = True
    meta = {"source": f"{ACDC_REPO}@{ACDC_COMMIT[:7]}:acdc/docstring/prompts.py (random_random)",
            "seeds": seeds, "rejected": rejected, "prepend_bos": bool(prepend_bos), "seed": int(seed),
            "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__)}
    return TaskBatch(
        task=task,
        clean=torch.tensor([c + [pad] * (P - len(c)) for c, *_ in rows], dtype=torch.long),
        corrupt=torch.tensor([k + [pad] * (P - len(k)) for _, k, *_ in rows], dtype=torch.long),
        answer_mask=am, wrong_mask=wm, metric=METRIC,
        pos=torch.tensor([len(c) - 1 for c, *_ in rows], dtype=torch.long), meta=meta)
