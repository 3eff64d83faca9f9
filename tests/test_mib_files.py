"""MIB's task files (attrpatch.tasks.mib_files) on small files written here in MIB's row
format, read with a word-level tokenizer; then MIB's scores on a random tiny GPT-2."""
from __future__ import annotations

import json

import pytest
import torch

from attrpatch.circuits.mib_submission import SubmissionError, read_submission
from attrpatch.circuits.mib_track import run_track
from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.circuits.mib_metrics import cpr_cmd
from attrpatch.models import load_model
from attrpatch.models.random import save_random_family
from attrpatch.tasks import mib_files as M
from attrpatch.tasks.vocab import SPECIALS, ToyTokenizer

WORDS = SPECIALS + ("When Mary and John went to the store , gave a drink Alice Bob Ann Q : What is 3 4 + - = 7 "
                    "12 Answer A B C colour sky").split()
TOK = ToyTokenizer(WORDS)


def _ioi(io="Mary", s="John", c="Alice", cf_prompt=None):
    p = f"When {io} and {s} went to the store , {s} gave a drink to"
    return {"prompt": p, "metadata": {"indirect_object": io, "subject": s, "random_c": c},
            "s2_io_flip_counterfactual": {"prompt": cf_prompt or f"When {io} and {s} went to the store , {io} gave a drink to"}}


def _write(root, task, split, rows):
    f = root / M.file_of(task, split)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def root(tmp_path):
    _write(tmp_path, "ioi", "validation", [
        _ioi(), _ioi("Alice", "Bob", "Mary"),
        _ioi(c="Mary Ann"),                                  # random_c is two tokens: MIB filters it
        _ioi(cf_prompt="When Mary and John went to the store , Mary gave a drink"),   # shorter: length_differs
        {"prompt": "x"},                                     # no metadata
        "{not json",
    ])
    _write(tmp_path, "arithmetic_addition", "validation", [
        {"prompt": "Q : What is 3 + 4 = ", "label": 7, "operator": "+",
         "random_counterfactual": {"prompt": "Q : What is 4 + 3 = ", "label": 12}},
        {"prompt": "Q : What is 7 - 4 = ", "label": 3, "operator": "-",
         "random_counterfactual": {"prompt": "Q : What is 7 - 3 = ", "label": 4}},     # subtraction: filtered
        {"prompt": "Q : What is 3 + 4 = ", "label": 7, "operator": "+", "random_counterfactual": None},
    ])
    _write(tmp_path, "mcqa", "validation", [
        {"prompt": "What colour is the sky ? A : C B : Ann Answer :", "choices": {"label": ["A", "B"], "text": ["x", "y"]},
         "answerKey": 1, "symbol_counterfactual": {"prompt": "What colour is the sky ? B : C A : Ann Answer :",
                                                   "choices": {"label": ["B", "A"], "text": ["x", "y"]}, "answerKey": 1}},
    ])
    return tmp_path


def test_ioi_rows_as_mib_reads_them(root):
    b = M.load_batch("ioi", None, root, "validation", TOK)
    assert len(b) == 2 and b.metric == "logit_diff" and b.task == "mib_ioi"
    assert b.answer_mask[0].nonzero().flatten().tolist() == [TOK.vocab["Mary"]]
    assert b.wrong_mask[0].nonzero().flatten().tolist() == [TOK.vocab["John"]]
    assert b.answer_mask[1].nonzero().flatten().tolist() == [TOK.vocab["Alice"]]
    assert TOK.decode(b.corrupt[0])[9] == "Mary" and TOK.decode(b.clean[0])[9] == "John"
    assert b.pos.tolist() == [13, 13]
    assert b.meta["reject_reasons"] == {"malformed_row": 2, "filtered": 1, "length_differs": 1}
    assert b.meta["rows_read"] == 6 and b.meta["kept"] == 2
    with pytest.raises(ValueError, match="3 prompts requested but 2 of 6 rows are kept"):
        M.load_batch("ioi", 3, root, "validation", TOK)


def test_arithmetic_and_mcqa(root):
    b = M.load_batch("arithmetic_addition", None, root, "validation", TOK)
    assert len(b) == 1 and b.meta["reject_reasons"]["filtered"] == 2
    assert b.answer_mask[0, TOK.vocab["7"]] and b.wrong_mask[0, TOK.vocab["12"]]
    m = M.load_batch("mcqa", None, root, "validation", TOK, prepend_bos=True)
    assert m.answer_mask[0].nonzero().flatten().tolist() == [TOK.vocab["B"]]     # key 1 -> "B"
    assert m.wrong_mask[0].nonzero().flatten().tolist() == [TOK.vocab["A"]]      # the counterfactual's key 1 -> "A"
    assert m.clean[0, 0] == TOK.bos_id and m.pos.tolist() == [len(m.clean[0]) - 1]


def test_missing_files_are_named_before_any_work(root, tmp_path_factory, monkeypatch):
    with pytest.raises(M.MibDataMissing, match=r"arc_easy/test.jsonl, copycolors_mcqa/test.jsonl"):
        M.require(root, ["arc_easy", "mcqa"], "test")
    monkeypatch.delenv(M.ENV_VAR, raising=False)
    with pytest.raises(M.MibDataMissing, match=r"no data directory \(set \$ATTRPATCH_MIB_DATA"):
        M.read_task("ioi", M.data_dir({}), "validation", TOK)
    monkeypatch.setenv(M.ENV_VAR, str(root))
    assert M.data_dir({}) == root
    with pytest.raises(ValueError, match="unknown MIB task 'ioii'"):
        M.file_of("ioii", "validation")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        M.file_of("ioi", "dev")


def test_mib_scores_on_a_random_tiny_model(root, tmp_path):
    """The mib code path end to end on random weights: MIB's IOI rows -> EAP -> CPR/CMD."""
    model = load_model(save_random_family("gpt2", tmp_path / "m", vocab_size=len(TOK), seed=2), dtype=torch.float64)
    b = M.load_batch("ioi", None, root, "validation", TOK)
    g = Graph.from_model(model)
    out = cpr_cmd(model, g, b, eap_scores(model, g, b))
    assert out["curve_signed"]["faithfulness"][-1] == pytest.approx(1.0) and out["cmd"] >= 0


def test_track_writes_a_submission_mib_accepts(root, tmp_path):
    """Tiny random GPT-2 (ioi_gpt2) and ungrouped Llama-GQA (ioi_llama3, arithmetic-addition_llama3):
    EAP and EAP-IG scored, CPR/CMD computed, and each method's folder passes `read_submission`."""
    out = tmp_path / "sub"
    gpt = load_model(save_random_family("gpt2", tmp_path / "g", vocab_size=len(TOK), seed=2), dtype=torch.float64)
    path = save_random_family("llama-gqa", tmp_path / "l", vocab_size=len(TOK), seed=2)
    llama = load_model(path, dtype=torch.float64, kv_convention="ungrouped")
    ioi = M.load_batch("ioi", None, root, "validation", TOK)
    add = M.load_batch("arithmetic_addition", None, root, "validation", TOK)
    methods, opts = ["eap", "eap_ig"], {"eap_ig": {"steps": 2}}
    rows = run_track(gpt, "gpt2", {"ioi": ioi}, methods, out, options=opts)
    rows += run_track(llama, "llama3", {"ioi": ioi, "arithmetic_addition": add}, methods, out, options=opts)
    assert len(rows) == 6 and all(r["cmd"] >= 0 for r in rows)
    for m in methods:
        sub = read_submission(out / m)
        assert set(sub) == {"ioi_gpt2", "ioi_llama3", "arithmetic-addition_llama3"}
        assert all(v["form"] == "importances" for v in sub.values())
    with pytest.raises(SubmissionError, match="does not score task 'ioi' on model 'qwen'"):
        run_track(gpt, "qwen", {"ioi": ioi}, methods, out)
    with pytest.raises(SubmissionError, match="kv_convention='ungrouped'"):
        run_track(load_model(path, dtype=torch.float64), "llama3", {"ioi": ioi}, methods, out)
