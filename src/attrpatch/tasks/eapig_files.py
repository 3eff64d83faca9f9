"""The EAP-IG paper's own prompt files as task batches (Hanna, Pezzelle, Belinkov 2024).

The paper ran GPT-2 on fixed CSV files published in hannamw/eap-ig-faithfulness
(``data/<folder>/gpt2.csv``; the project tests against commit ``PAPER_COMMIT``). They are
data the user supplies, like weights: the directory comes from the environment variable
``ATTRPATCH_PAPER_DATA`` or else the profile key ``paper_data_dir`` (a relative path is
taken from the repository root). Nothing here is generated: each row is one clean /
corrupted pair with the paper's answer and wrong-answer token sets.

Rows are read in file order (the authors' ``ds.head(n)``, no shuffle) and every row is
judged: kept, or rejected for one counted reason (``REJECT_REASONS``), never silently kept
or dropped. The counts are over the whole file, in ``TaskBatch.meta``.

Tokenization as the authors' code did it: the text of each prompt is tokenized as it
stands (no spaces added), a BOS token is prepended when ``prepend_bos`` (TransformerLens
did so for the authors' GPT-2), prompts of one batch are right-padded, and the metric
reads the last real token (``pos``). Right padding is exact for causal models: later
positions cannot change the metric position. Clean and corrupted prompts of one row must
have the same token length.

Two tokenizers can read the files: GPT-2's own (a Hugging Face tokenizer; the answer ids
in the files are GPT-2 ids and are used as they are) or the offline stand-in
(`standin_tokenizer`: one word = one token over the files' words; a file's answer id N
becomes its token ``<id:N>``, so one id maps to one token in every task).
"""
from __future__ import annotations

import ast
import csv
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .base import TaskBatch
from .vocab import SPECIALS, ToyTokenizer, all_words

PAPER_REPO = "hannamw/eap-ig-faithfulness"
PAPER_COMMIT = "d42fea6aa2c7acca39007c9c94923770669cb9ae"
ENV_VAR = "ATTRPATCH_PAPER_DATA"
CONFIG_KEY = "paper_data_dir"
REJECT_REASONS = ("malformed_row", "length_differs", "answer_outside_vocab")
ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class PaperTask:
    """One task of the paper: its folder under data/, metric, and the files it reads."""

    name: str
    folder: str
    metric: str
    columns: tuple[str, ...]
    answer_col: str | None = None     # file answer ids (GPT-2 vocabulary); None: from a rule
    wrong_col: str | None = None
    extra_files: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        return (f"data/{self.folder}/gpt2.csv",) + tuple(f"data/{self.folder}/{f}" for f in self.extra_files)


# Metrics: the authors' metrics.py (hannamw/eap-ig-faithfulness), with the metric each task
# was run with in results/pareto/gpt2/csv/<task>.csv. The files do not name it (pareto.py takes
# --metric), so it is read off the baselines: a probability difference lies in [-1, 1], so
# fact-retrieval-comma (6.12 / -6.72) is a logit difference, and hypernymy-comma (0.206 /
# -0.072, the data file's own `prob_diff` column) a probability difference summed over the sets.
#   logit_diff (IOI, Gender-Bias, Country-Capital): logit(answer) - logit(wrong answer)
#       (metrics.logit_diff; one token each, so our mean over a set equals it);
#   prob_diff (Greater-Than): P(years > YY) - P(years <= YY), the year tokens being the first
#       token of "00".."99" (metrics.get_logit_diff_greater_than, prob=True);
#   prob_diff (SVA): total probability of the singular verb list minus the plural one, signed
#       by the row's label `plural` (metrics.get_logit_diff_sva, prob=True, strict);
#   prob_diff (Hypernymy): summed probability of the answer set minus that of the corrupted
#       hypernym's set (metrics.logit_diff_hypernymy, prob=True).
PAPER_TASKS: dict[str, PaperTask] = {t.name: t for t in (
    PaperTask("ioi_eapig", "ioi", "logit_diff", ("clean", "corrupted", "correct_idx", "incorrect_idx"),
              "correct_idx", "incorrect_idx"),
    PaperTask("greater_than_eapig", "greater-than", "prob_diff", ("clean", "corrupted", "correct_idx")),
    PaperTask("sva_eapig", "sva", "prob_diff", ("clean", "corrupted", "plural"),
              extra_files=("combined_verb_list.csv",)),
    PaperTask("gender_bias_eapig", "gender-bias", "logit_diff",
              ("clean", "corrupted", "clean_answer_idx", "corrupted_answer_idx"),
              "clean_answer_idx", "corrupted_answer_idx"),
    PaperTask("country_capital_eapig", "fact-retrieval-comma", "logit_diff",
              ("clean", "corrupted", "country_idx", "corrupted_country_idx"), "country_idx", "corrupted_country_idx"),
    PaperTask("hypernymy_eapig", "hypernymy-comma", "prob_diff",
              ("clean", "corrupted", "hypernym", "answers", "answers_idx", "corrupted_hypernym",
               "corrupted_answers", "corrupted_answers_idx"), "answers_idx", "corrupted_answers_idx",
              ("valid_answers.json",)),
)}


class PaperDataMissing(FileNotFoundError):
    """The paper's data directory is not set or lacks files; the message names them."""


# ---- where the data are ------------------------------------------------------------------

def data_dir(cfg: dict | None = None) -> Path | None:
    """The data directory: $ATTRPATCH_PAPER_DATA, else the profile's ``paper_data_dir``
    (relative to the repository root); None when neither is set."""
    raw = os.environ.get(ENV_VAR) or (cfg or {}).get(CONFIG_KEY)
    if not raw:
        return None
    p = Path(os.path.expanduser(str(raw)))
    return p if p.is_absolute() else ROOT / p


def paper_tasks_of(cfg: dict) -> list[str]:
    """Paper-file tasks any experiment of the profile uses (config order, no repeats)."""
    seen: list[str] = []
    for spec in cfg.get("experiments", {}).values():
        for t in (spec or {}).get("tasks", {}) or {}:
            if t in PAPER_TASKS and t not in seen:
                seen.append(t)
    return seen


def missing_files(root: Path | None, tasks) -> list[str]:
    """Files of `tasks` absent under `root` (all of them when root is None)."""
    files = [f for t in tasks for f in PAPER_TASKS[t].files]
    if root is None:
        return files
    return [f for f in files if not (Path(root) / f).is_file()]


def missing_message(root: Path | None, missing: list[str]) -> str:
    where = (f"the data directory {root}" if root is not None else
             f"no data directory (set ${ENV_VAR} or `{CONFIG_KEY}:` in the profile)")
    return (f"the EAP-IG paper's prompt files are missing from {where}: {', '.join(missing)}. "
            f"They come from the public repository {PAPER_REPO} (commit {PAPER_COMMIT}): "
            f"clone it and point ${ENV_VAR} (or `{CONFIG_KEY}:`) at the clone.")


def missing_paper_data(cfg: dict) -> str | None:
    """None when every paper-file task of the profile has its files, else the error text."""
    tasks = paper_tasks_of(cfg)
    if not tasks:
        return None
    if any("random" in (spec or {}) for spec in cfg.get("models", {}).values()):
        tasks = list(PAPER_TASKS)    # the stand-in tokenizer of random models reads every task's files
    root = data_dir(cfg)
    missing = missing_files(root, tasks)
    return missing_message(root, missing) if missing else None


def require(root: Path | None, task: str) -> Path:
    missing = missing_files(root, [task])
    if missing:
        raise PaperDataMissing(missing_message(root, missing))
    return Path(root)


# ---- tokenizers --------------------------------------------------------------------------

WORD_RE = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """The stand-in's pre-tokenization: runs of word characters, and each other non-space."""
    return WORD_RE.findall(text)


def id_token(i: int) -> str:
    return f"<id:{int(i)}>"


class StandInTokenizer(ToyTokenizer):
    """Offline stand-in for GPT-2's tokenizer: the toy vocabulary (so generated tasks still
    tokenize) plus every word of the paper files, the year tokens "00".."99", the SVA verbs,
    and one token ``<id:N>`` per answer id N of the files. Deterministic for the files."""

    name_or_path = "stand-in word-level tokenizer over the EAP-IG paper files"


def _file_vocab(root: Path) -> set[str]:
    words: set[str] = {f"{y:02d}" for y in range(100)}
    for task in PAPER_TASKS.values():
        with open(root / task.files[0], newline="") as f:
            for row in csv.DictReader(f):
                words.update(split_words(row.get("clean") or ""))
                words.update(split_words(row.get("corrupted") or ""))
                for col in (task.answer_col, task.wrong_col):
                    if col:
                        words.update(id_token(i) for i in _ints(row.get(col)) or [])
    with open(root / PAPER_TASKS["sva_eapig"].files[1], newline="") as f:
        for row in csv.DictReader(f):
            words.update(w for w in (row.get("sing"), row.get("plur")) if w)
    return words


@lru_cache(maxsize=4)
def _standin(root: str) -> StandInTokenizer:
    base = all_words()
    extra = sorted(_file_vocab(Path(root)) - set(base) - set(SPECIALS))
    return StandInTokenizer(base + extra)


def standin_tokenizer(root) -> StandInTokenizer:
    """The stand-in tokenizer of the files under `root` (every task's files must exist)."""
    for t in PAPER_TASKS:
        require(Path(root), t)
    return _standin(str(Path(root).resolve()))


class _Text:
    """What the loader needs of a tokenizer, for GPT-2's (HF) or a word-level one."""

    def __init__(self, tok):
        self.tok = tok
        self.word_level = isinstance(tok, ToyTokenizer)
        self.n_vocab = len(tok)
        if self.word_level:
            self.bos_id, self.pad_id, self.unk_id = tok.bos_id, tok.pad_id, tok.unk_id
        else:
            self.bos_id = tok.bos_token_id
            self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            self.unk_id = getattr(tok, "unk_token_id", None)

    def encode(self, text: str) -> list[int]:
        if self.word_level:
            return [self.tok.vocab.get(w, self.unk_id) for w in split_words(text)]
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def file_id(self, i: int) -> int | None:
        """A file's answer id (GPT-2 vocabulary) in this tokenizer; None if outside it."""
        if self.word_level:
            return self.tok.vocab.get(id_token(i))
        return int(i) if 0 <= int(i) < self.n_vocab else None

    def year_id(self, yy: int) -> int | None:
        """The authors' year token: the first token of f"{yy:02d}" (no leading space)."""
        if self.word_level:
            return self.tok.vocab.get(f"{yy:02d}")
        ids = self.tok(f"{yy:02d}", add_special_tokens=False)["input_ids"]
        return ids[0] if ids else None

    def verb_id(self, verb: str) -> int | None:
        """The verb as one token after a space, or None (several tokens / unknown)."""
        if self.word_level:
            return self.tok.vocab.get(verb)
        ids = self.tok(" " + verb, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 and ids[0] != self.unk_id else None


# ---- rows -> answer sets -----------------------------------------------------------------

def _ints(value) -> list[int] | None:
    """An int or a Python list of ints as written in the files; None if unreadable."""
    if value is None or str(value).strip() == "":
        return None
    try:
        v = ast.literal_eval(str(value).strip())
    except (ValueError, SyntaxError):
        return None
    v = v if isinstance(v, list) else [v]
    return [int(x) for x in v] if v and all(isinstance(x, int) and not isinstance(x, bool) for x in v) else None


def sva_verb_ids(text: _Text, verbs_csv: Path) -> tuple[list[int], list[int]]:
    """Singular and plural verb tokens as the authors' get_singular_and_plural (strict):
    every verb of the list that is one token; a plural only if its singular is one token too."""
    sing, plur = [], []
    with open(verbs_csv, newline="") as f:
        for row in csv.DictReader(f):
            s, p = text.verb_id(row["sing"]), text.verb_id(row["plur"])
            if s is not None:
                sing.append(s)
                if p is not None:
                    plur.append(p)
    return sorted(set(sing)), sorted(set(plur))


def _valid_answers(path: Path) -> dict[str, set[str]]:
    return {k: {w for w, _ in v} for k, v in json.loads(path.read_text()).items()}


def _answers(task: PaperTask, row: dict, text: _Text, ctx: dict):
    """(answer ids, wrong ids) of a row, or a reject reason (a REJECT_REASONS entry)."""
    cols = task.columns
    if any(row.get(c) in (None, "") for c in cols):
        return "malformed_row"
    if task.folder == "greater-than":
        yy = _ints(row["correct_idx"])
        if yy is None or len(yy) != 1 or not 0 <= yy[0] < 99:
            return "malformed_row"
        ans = [text.year_id(y) for y in range(yy[0] + 1, 100)]
        wrong = [text.year_id(y) for y in range(yy[0] + 1)]
    elif task.folder == "sva":
        label = _ints(row["plural"])
        if label is None or label[0] not in (0, 1):
            return "malformed_row"
        sing, plur = ctx["verbs"]
        ans, wrong = (plur, sing) if label[0] == 1 else (sing, plur)
    else:
        if task.folder == "hypernymy-comma":
            valid = ctx["valid"]
            for words, hyp in (("answers", "hypernym"), ("corrupted_answers", "corrupted_hypernym")):
                try:
                    ws = ast.literal_eval(row[words])
                except (ValueError, SyntaxError):
                    return "malformed_row"
                if not isinstance(ws, list) or not set(ws) <= valid.get(row[hyp], set()):
                    return "malformed_row"
        a_raw, w_raw = _ints(row[task.answer_col]), _ints(row[task.wrong_col])
        if a_raw is None or w_raw is None or len(set(a_raw)) < len(a_raw) or len(set(w_raw)) < len(w_raw):
            return "malformed_row"   # a repeated id would count twice in the authors' sum, once in a mask
        ans, wrong = [text.file_id(i) for i in a_raw], [text.file_id(i) for i in w_raw]
    if not ans or not wrong:
        return "malformed_row"
    if None in ans or None in wrong:
        return "answer_outside_vocab"
    return ans, wrong


def read_task(task: str, root, tokenizer):
    """Every row of `task`'s file judged: (kept rows [(clean ids, corrupted ids, answer ids,
    wrong ids)], rejected counts per reason, rows read)."""
    t = PAPER_TASKS[task]
    root = require(Path(root) if root is not None else None, task)
    text = _Text(tokenizer)
    ctx = {}
    if t.folder == "sva":
        ctx["verbs"] = sva_verb_ids(text, root / t.files[1])
    if t.folder == "hypernymy-comma":
        ctx["valid"] = _valid_answers(root / t.files[1])
    kept, reasons, n_rows = [], {r: 0 for r in REJECT_REASONS}, 0
    with open(root / t.files[0], newline="") as f:
        for row in csv.DictReader(f):
            n_rows += 1
            got = _answers(t, row, text, ctx)
            if isinstance(got, str):
                reasons[got] += 1
                continue
            c, k = text.encode(row["clean"]), text.encode(row["corrupted"])
            if len(c) != len(k) or not c:
                reasons["length_differs" if c else "malformed_row"] += 1
                continue
            kept.append((c, k, got[0], got[1]))
    return kept, reasons, n_rows


def swap_pairs(batch: TaskBatch) -> int:
    """How many rows of `batch` can be paired one-to-one with their *swap*: the row whose clean
    prompt is this row's corrupted prompt and back, with answer and wrong sets exchanged.

    Why it matters: a metric of the form f(answer set) - f(wrong set) changes sign when the sets
    are exchanged, so on a batch where every row has its swap (``swap_pairs(b) == len(b)``) the
    mean corrupted metric is exactly minus the mean clean metric, for any model. The EAP-IG
    paper's GPT-2 SVA baselines are such a pair to the last digit (0.1572799533605575 and its
    negative, results/pareto/gpt2/csv/sva.csv of hannamw/eap-ig-faithfulness@d42fea6): its
    whole file is closed under the swap, its first 3,000 rows are not (tests/test_eapig_files.py).
    """
    c, k = batch.clean.cpu().numpy(), batch.corrupt.cpu().numpy()
    a = np.packbits(batch.answer_mask.cpu().numpy(), axis=1)
    w = np.packbits(batch.wrong_mask.cpu().numpy(), axis=1)
    p = batch.pos.cpu().numpy()
    rows = Counter((c[i].tobytes(), k[i].tobytes(), a[i].tobytes(), w[i].tobytes(), int(p[i])) for i in range(len(c)))
    swaps = Counter((k[i].tobytes(), c[i].tobytes(), w[i].tobytes(), a[i].tobytes(), int(p[i])) for i in range(len(c)))
    return sum((rows & swaps).values())


def describe(batch: TaskBatch) -> dict:
    """What a result file records about a batch's data: size, positions, BOS, and for paper
    files their source and the rows kept and rejected per reason."""
    keep = ("source", "rows_read", "kept", "rejected", "reject_reasons", "prepend_bos", "tokenizer", "seed")
    out = {"n": len(batch), "n_pos": int(batch.clean.shape[1]), "metric": batch.metric,
           "prepend_bos": bool(batch.meta.get("prepend_bos", False))}
    out.update({k: batch.meta[k] for k in keep if k in batch.meta})
    return out


def _set_masks(sets: list[list[int]], V: int) -> torch.Tensor:
    """[len(sets), V] bool masks of token-id sets, each distinct set built once (SVA's 12,400
    rows share two verb lists of ~900 tokens)."""
    distinct: dict[tuple, int] = {}
    row_of = torch.tensor([distinct.setdefault(tuple(s), len(distinct)) for s in sets], dtype=torch.long)
    masks = torch.zeros(len(distinct), V, dtype=torch.bool)
    for s, j in distinct.items():
        masks[j, list(s)] = True
    return masks[row_of]


def load_batch(task: str, n: int | None, root, tokenizer, prepend_bos: bool) -> TaskBatch:
    """The first `n` kept rows of the paper's file for `task` (all when n is None) as a batch.

    Right-padded to the longest prompt; ``pos`` = the last real token (+1 with BOS).
    ``meta``: rows_read, kept (in the whole file), rejected, reject_reasons, source, prepend_bos.
    """
    if task not in PAPER_TASKS:
        raise ValueError(f"unknown paper task {task!r}; valid: {', '.join(PAPER_TASKS)}")
    t = PAPER_TASKS[task]
    text = _Text(tokenizer)
    rows, reasons, n_rows = read_task(task, root, tokenizer)
    if n is not None and int(n) > len(rows):
        raise ValueError(f"task {task!r}: {n} prompts requested but the file keeps only {len(rows)} of "
                         f"{n_rows} rows (rejected: {reasons})")
    rows = rows if n is None else rows[: int(n)]
    if prepend_bos and text.bos_id is None:
        raise ValueError(f"task {task!r}: prepend_bos is set but the tokenizer has no BOS token")
    bos = [text.bos_id] if prepend_bos else []
    P = max(len(c) for c, *_ in rows) + len(bos)
    V = text.n_vocab

    def padded(ids):
        x = bos + ids
        return x + [text.pad_id] * (P - len(x))

    am, wm = _set_masks([r[2] for r in rows], V), _set_masks([r[3] for r in rows], V)
    meta = {"rows_read": n_rows, "kept": n_rows - sum(reasons.values()), "rejected": sum(reasons.values()),
            "reject_reasons": reasons, "prepend_bos": bool(prepend_bos),
            "source": f"{PAPER_REPO}@{PAPER_COMMIT[:7]}:{t.files[0]}",
            "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__)}
    return TaskBatch(
        task=task,
        clean=torch.tensor([padded(c) for c, *_ in rows], dtype=torch.long),
        corrupt=torch.tensor([padded(k) for _, k, *_ in rows], dtype=torch.long),
        answer_mask=am, wrong_mask=wm, metric=t.metric,
        pos=torch.tensor([len(c) - 1 + len(bos) for c, *_ in rows], dtype=torch.long),
        meta=meta,
    )
