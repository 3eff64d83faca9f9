"""MIB's circuit-track tasks (IOI, MCQA, arithmetic, ARC) read from files the user supplies.

MIB publishes its tasks as Hugging Face datasets (``mib-bench/<name>``,
MIB_circuit_track/utils.py ``TASKS_TO_HF_NAMES``, hannamw/MIB-circuit-track commit
b759df34). Like the EAP-IG paper's files (`tasks.eapig_files`) and model weights, they are
never downloaded or committed here: the user exports each split once, on a connected machine,
as JSON lines, ``ROOT/<name>/<split>.jsonl`` (``datasets.load_dataset("mib-bench/ioi",
split="validation").to_json("ROOT/ioi/validation.jsonl")``; MCQA from its
``4_answer_choices`` configuration), and points ``$ATTRPATCH_MIB_DATA`` or the profile key
``mib_data_dir`` at ROOT. Every missing file is named before any work (`require`).

What a row becomes, as MIB's ``HFEAPDataset`` reads it (MIB_circuit_track/dataset.py):

* ioi: clean ``prompt``; corrupted ``s2_io_flip_counterfactual.prompt``; answer the first
  token of " " + ``metadata.indirect_object``, wrong answer that of " " + ``metadata.subject``;
  kept only when the IO, subject and ``metadata.random_c`` names tokenize to equally many
  tokens (with a leading space);
* mcqa, arc_easy, arc_challenge: clean ``prompt``; corrupted ``symbol_counterfactual.prompt``;
  answer the first token of ``choices.label[answerKey]``, wrong answer that of the
  counterfactual's ``choices.label[answerKey]``; kept when the two labels have equally many tokens;
* arithmetic_addition / _subtraction: clean ``prompt``; corrupted
  ``random_counterfactual.prompt``; answer ``str(label)``, wrong ``str(random_counterfactual.label)``;
  kept when ``operator`` is "+" (addition) or "-" (subtraction), the counterfactual and its
  prompt exist, and both labels are one token.

The metric is MIB's logit difference (answer minus wrong answer) at the last real token.
One difference, counted: MIB pads clean and corrupted prompts separately; our batches patch
position by position, so a row whose clean and corrupted prompts tokenize to different
lengths is rejected (``length_differs``), never silently kept or dropped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .base import TaskBatch
from .eapig_files import ROOT, _Text, split_words
from .vocab import SPECIALS, ToyTokenizer

SOURCE = "hannamw/MIB-circuit-track, MIB_circuit_track/dataset.py and utils.py, commit b759df34"
ENV_VAR = "ATTRPATCH_MIB_DATA"
CONFIG_KEY = "mib_data_dir"
HF_NAMES = {"ioi": "ioi", "mcqa": "copycolors_mcqa", "arithmetic_addition": "arithmetic_addition",
            "arithmetic_subtraction": "arithmetic_subtraction", "arc_easy": "arc_easy", "arc_challenge": "arc_challenge"}
TASK_NAMES = tuple(HF_NAMES)
SPLITS = ("train", "validation", "test")
# MIB's own defaults (b759df34): run_attribution.py scores --num-examples 100 rows of the train
# split; run_evaluation.py measures CPR/CMD on the validation split
DEFAULT_ATTRIBUTION_SPLIT = "train"
DEFAULT_ATTRIBUTION_ROWS = 100
DEFAULT_EVAL_SPLIT = "validation"
REJECT_REASONS = ("malformed_row", "filtered", "length_differs")
COUNTERFACTUAL = {"ioi": "s2_io_flip_counterfactual", "mcqa": "symbol_counterfactual",
                  "arc_easy": "symbol_counterfactual", "arc_challenge": "symbol_counterfactual"}


class MibDataMissing(FileNotFoundError):
    """MIB's data directory is not set or lacks files; the message names them."""


def data_dir(cfg: dict | None = None) -> Path | None:
    """$ATTRPATCH_MIB_DATA, else the profile's ``mib_data_dir`` (relative to the repository
    root); None when neither is set."""
    raw = os.environ.get(ENV_VAR) or (cfg or {}).get(CONFIG_KEY)
    if not raw:
        return None
    p = Path(os.path.expanduser(str(raw)))
    return p if p.is_absolute() else ROOT / p


def _check(task: str, split: str) -> None:
    if task not in HF_NAMES:
        raise ValueError(f"unknown MIB task {task!r}; valid: {', '.join(HF_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def file_of(task: str, split: str) -> str:
    """The file of `task`'s `split`, relative to the data directory."""
    _check(task, split)
    return f"{HF_NAMES[task]}/{split}.jsonl"


def missing_files(root: Path | None, tasks, split: str) -> list[str]:
    """Files of `tasks` absent under `root` (all of them when root is None)."""
    files = [file_of(t, split) for t in tasks]
    return files if root is None else [f for f in files if not (Path(root) / f).is_file()]


def require(root: Path | None, tasks, split) -> Path:
    """`root` when every task's file of `split` (a split, or several) is there, else
    MibDataMissing naming all missing files."""
    missing = [f for s in ((split,) if isinstance(split, str) else split) for f in missing_files(root, tasks, s)]
    if missing:
        where = (f"the data directory {root}" if root is not None else
                 f"no data directory (set ${ENV_VAR} or `{CONFIG_KEY}:` in the profile)")
        raise MibDataMissing(
            f"MIB's task files are missing from {where}: {', '.join(missing)}. Export each split once on a "
            f"connected machine: datasets.load_dataset('mib-bench/<name>', split=...).to_json('<dir>/<name>/<split>.jsonl') "
            f"(MCQA: configuration '4_answer_choices'), then point ${ENV_VAR} at <dir>.")
    return Path(root)


def _texts(task: str, row: dict):
    """(clean, corrupted, answer text, wrong text, texts that must tokenize equally long, one
    token required) of a row, or a reject reason."""
    try:
        if task == "ioi":
            m = row["metadata"]
            io, s, c = (" " + str(m[k]) for k in ("indirect_object", "subject", "random_c"))
            return row["prompt"], row[COUNTERFACTUAL[task]]["prompt"], io, s, (io, s, c), False
        if task in COUNTERFACTUAL:                                   # mcqa, arc
            cf = row[COUNTERFACTUAL[task]]
            a = str(row["choices"]["label"][row["answerKey"]])
            w = str(cf["choices"]["label"][cf["answerKey"]])
            return row["prompt"], cf["prompt"], a, w, (a, w), False
        cf = row.get("random_counterfactual")                       # arithmetic
        op = "+" if task == "arithmetic_addition" else "-"
        if row.get("operator") != op or not cf or cf.get("prompt") is None:
            return "filtered"
        return row["prompt"], cf["prompt"], str(row["label"]), str(cf["label"]), (), True
    except (KeyError, IndexError, TypeError):
        return "malformed_row"


def read_task(task: str, root, split: str, tokenizer):
    """Every row judged: (kept [(clean ids, corrupted ids, answer id, wrong id)], rejected
    counts per reason, rows read)."""
    root = require(Path(root) if root is not None else None, [task], split)
    text = _Text(tokenizer)
    kept, reasons, n_rows = [], {r: 0 for r in REJECT_REASONS}, 0
    with open(root / file_of(task, split)) as f:
        for line in f:
            if not line.strip():
                continue
            n_rows += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                reasons["malformed_row"] += 1
                continue
            got = _texts(task, row) if isinstance(row, dict) else "malformed_row"
            if isinstance(got, str):
                reasons[got] += 1
                continue
            clean, corrupt, a, w, same_len, one_token = got
            ids_a, ids_w = text.encode(a), text.encode(w)
            lens = {len(text.encode(t)) for t in same_len}
            if not ids_a or not ids_w or len(lens) > 1 or (one_token and (len(ids_a) != 1 or len(ids_w) != 1)):
                reasons["filtered"] += 1
                continue
            c, k = text.encode(clean), text.encode(corrupt)
            if len(c) != len(k) or not c:
                reasons["length_differs" if c else "malformed_row"] += 1
                continue
            kept.append((c, k, ids_a[0], ids_w[0]))
    return kept, reasons, n_rows


def load_batch(task: str, n: int | None, root, split: str, tokenizer, prepend_bos: bool = False) -> TaskBatch:
    """The first `n` kept rows (all when None) of `task`'s `split` as a logit-difference batch,
    right-padded; ``pos`` the last real token; ``meta`` counts the rows kept and rejected."""
    rows, reasons, n_rows = read_task(task, root, split, tokenizer)
    if not rows or (n is not None and int(n) > len(rows)):
        raise ValueError(f"MIB task {task!r} ({split}): {n if n is not None else 'some'} prompts requested but "
                         f"{len(rows)} of {n_rows} rows are kept (rejected: {reasons})")
    rows = rows if n is None else rows[: int(n)]
    text = _Text(tokenizer)
    if prepend_bos and text.bos_id is None:
        raise ValueError(f"MIB task {task!r}: prepend_bos is set but the tokenizer has no BOS token")
    bos = [text.bos_id] if prepend_bos else []
    P = max(len(c) for c, *_ in rows) + len(bos)

    def padded(ids):
        x = bos + ids
        return x + [text.pad_id] * (P - len(x))

    am = torch.zeros(len(rows), text.n_vocab, dtype=torch.bool)
    wm = torch.zeros(len(rows), text.n_vocab, dtype=torch.bool)
    for i, (_, _, a, w) in enumerate(rows):
        am[i, a] = True
        wm[i, w] = True
    meta = {"rows_read": n_rows, "kept": n_rows - sum(reasons.values()), "rejected": sum(reasons.values()),
            "reject_reasons": reasons, "prepend_bos": bool(prepend_bos), "source": f"{SOURCE}; {file_of(task, split)}",
            "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__)}
    return TaskBatch(task=f"mib_{task}", clean=torch.tensor([padded(c) for c, *_ in rows], dtype=torch.long),
                     corrupt=torch.tensor([padded(k) for _, k, *_ in rows], dtype=torch.long),
                     answer_mask=am, wrong_mask=wm, metric="logit_diff",
                     pos=torch.tensor([len(c) - 1 + len(bos) for c, *_ in rows], dtype=torch.long), meta=meta)


class MibStandInTokenizer(ToyTokenizer):
    """Word-level stand-in for a random model run on MIB's files: one token per word (`split_words`)
    of every string and number in the files' rows. Deterministic for the files."""

    name_or_path = "stand-in word-level tokenizer over MIB's task files"


def _leaves(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, list):
        for v in x:
            yield from _leaves(v)
    elif isinstance(x, (str, int, float)) and not isinstance(x, bool):
        yield str(x)


def standin_tokenizer(root, files) -> MibStandInTokenizer:
    """The stand-in tokenizer over `files` (paths relative to `root`, `file_of`), which must exist."""
    words: set[str] = set()
    for rel in sorted(set(files)):
        with open(Path(root) / rel) as f:
            for line in f:
                try:
                    row = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    continue
                for leaf in _leaves(row):
                    words.update(split_words(leaf))
    return MibStandInTokenizer(list(SPECIALS) + sorted(words - set(SPECIALS)))
