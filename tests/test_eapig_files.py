"""The EAP-IG paper's prompt files as task batches: rows kept / rejected per reason, BOS,
the authors' metrics against hand computations, the missing-data error, and that right
padding with a per-row metric position leaves the methods exact."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.metrics import task_metric
from attrpatch.patching import Patcher
from attrpatch.tasks import eapig_files as E
from attrpatch.tasks import make_batch
from attrpatch.tasks.base import TaskBatch
from attrpatch.tasks.vocab import ToyTokenizer

ROOT = Path(__file__).resolve().parents[1]
needs_data = pytest.mark.paper_data     # skipped without the files; a skip fails under CI (tests/paper_data.py)


# ---- the real files ----------------------------------------------------------------------

# (rows read, kept, rejected per reason) with the stand-in tokenizer: its words split "Kabul,"
# into two tokens where GPT-2 has one, so a few Country-Capital / Hypernymy pairs differ in length
REAL_COUNTS = {
    "ioi_eapig": (1000, 1000, {}),
    "greater_than_eapig": (1000, 1000, {}),
    "sva_eapig": (12400, 12400, {}),
    "gender_bias_eapig": (986, 986, {}),
    "country_capital_eapig": (190, 137, {"length_differs": 53}),
    "hypernymy_eapig": (198, 175, {"length_differs": 23}),
}


@needs_data
@pytest.mark.parametrize("task", list(E.PAPER_TASKS))
def test_every_real_file_loads_with_counts_per_reason(task, paper_data):
    data = paper_data
    tok = E.standin_tokenizer(data)
    b = E.load_batch(task, 8, data, tok, prepend_bos=True)
    rows, kept, rejected = REAL_COUNTS[task]
    assert b.meta["rows_read"] == rows and b.meta["kept"] == kept
    assert b.meta["reject_reasons"] == {r: rejected.get(r, 0) for r in E.REJECT_REASONS}
    assert b.meta["rejected"] + b.meta["kept"] == rows
    assert len(b) == 8 and (b.clean[:, 0] == tok.bos_id).all()
    assert not (b.clean == tok.unk_id).any(), "the stand-in covers every word of the files"
    assert bool(b.answer_mask.any(1).all()) and bool(b.wrong_mask.any(1).all())
    # right padding: everything after the metric position is padding
    after = torch.arange(b.clean.shape[1]) > b.pos[:, None]
    assert (b.clean[after] == tok.pad_id).all() and (b.clean[~after] != tok.pad_id).all()


@needs_data
def test_standin_maps_each_file_id_to_one_token(paper_data):
    """A file's answer id N is the stand-in token <id:N> in every task (IOI and Gender-Bias
    share GPT-2's name / pronoun ids with no text in the row)."""
    data = paper_data
    tok = E.standin_tokenizer(data)
    b = E.load_batch("ioi_eapig", 5, data, tok, prepend_bos=False)
    with open(data / "data" / "ioi" / "gpt2.csv", newline="") as f:
        rows = [r for _, r in zip(range(5), csv.DictReader(f))]
    for i, r in enumerate(rows):
        assert tok.decode(b.answer_mask[i].nonzero()[:, 0]) == [f"<id:{r['correct_idx']}>"]
        assert tok.decode(b.wrong_mask[i].nonzero()[:, 0]) == [f"<id:{r['incorrect_idx']}>"]
    assert tok.decode(b.clean[0, : b.pos[0] + 1]) == E.split_words(rows[0]["clean"])


@needs_data
def test_too_many_prompts_is_an_error_naming_the_counts(paper_data):
    data = paper_data
    with pytest.raises(ValueError, match="keeps only 137 of 190 rows"):
        E.load_batch("country_capital_eapig", 150, data, E.standin_tokenizer(data), prepend_bos=True)


@needs_data
def test_full_sva_file_is_closed_under_the_swap_and_its_head_is_not(paper_data):
    """Why the paper profile runs SVA on the whole file (config/paper.yaml, n_by_task.sva_eapig):
    the authors' GPT-2 SVA baselines are exact negatives of each other, which every model gives
    on a swap-closed prompt set (tasks.eapig_files.swap_pairs) and no model need give on the
    released script's first 3,000 rows, of which only 780 have their swap."""
    tok = E.standin_tokenizer(paper_data)
    full = E.load_batch("sva_eapig", None, paper_data, tok, prepend_bos=True)
    assert len(full) == 12400 and E.swap_pairs(full) == 12400
    head = full.subset(slice(0, 3000))
    assert E.swap_pairs(head) == 780


# ---- constructed files: every reason, the GPT-2 (Hugging Face) code path, the metrics -------

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "When", "Amy", "and", "Laura", "Nick", "got", "a", "snack", ",",
         "gave", "it", "to", "The", "war", "lasted", "from", "year", "1352", "1301", "keys", "key", "near",
         "poet", "man", "was", "promoted", "because", "he", "she", "Kabul", "London", "the", "capital", "of",
         "Afghanistan", "United", "gems", "moths", "other", "gem", "insects", "bugs", "is", "are", "has", "have",
         "sees", "see", "big"] + [f"{y:02d}" for y in range(100)]


def _hf_tok():
    return ToyTokenizer(WORDS).to_hf()   # a Hugging Face tokenizer: the GPT-2 code path, offline


def _write(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six small files in the paper's layouts; ids are the test tokenizer's."""
    d = tmp_path_factory.mktemp("paper")
    v = {w: i for i, w in enumerate(WORDS)}
    V = len(WORDS)
    ioi_c = "When Amy and Laura got a snack , Laura gave it to"
    _write(d / "data/ioi/gpt2.csv", ["", "clean", "corrupted", "corrupted_hard", "correct_idx", "incorrect_idx"], [
        [0, ioi_c, ioi_c.replace(", Laura", ", Nick"), "", v["Amy"], v["Laura"]],
        [1, "When Laura and Amy got a snack , Amy gave it", "When Laura and Amy got a snack , Nick gave it", "",
         v["Laura"], v["Amy"]],
        [2, ioi_c, ioi_c, "", v["Amy"], V + 5],                                   # answer_outside_vocab
        [3, ioi_c, "When Amy and Laura got a snack , Nick", "", v["Amy"], v["Laura"]],   # length_differs
        [4, ioi_c, ioi_c, "", "Amy", v["Laura"]],                                 # malformed_row
    ])
    gt = "The war lasted from the year 1352 to the year 13"
    _write(d / "data/greater-than/gpt2.csv", ["clean", "corrupted", "correct_idx"], [
        [gt, gt.replace("1352", "1301"), 52], [gt.replace("1352", "1301"), gt, 1], [gt, gt, 99]])  # 99: no year above
    _write(d / "data/sva/gpt2.csv", ["clean", "corrupted", "group", "plural"], [
        ["The keys near the man", "The key near the man", "g", 1],
        ["The key near the man", "The keys near the man", "g", 0],
        ["The key near the man", "The keys near the man", "g", 2]])               # malformed label
    _write(d / "data/sva/combined_verb_list.csv", ["idx", "sing", "plur", "freq"], [
        ["_", "is", "are", "_"], ["_", "has", "have", "_"], ["_", "sees", "see", "_"],
        ["_", "zorps", "big", "_"]])   # singular not one token: its plural is left out (strict)
    _write(d / "data/gender-bias/gpt2.csv", ["clean", "corrupted", "clean_answer_idx", "corrupted_answer_idx", "label"],
           [["The poet was promoted because", "The man was promoted because", v["she"], v["he"], 0]])
    _write(d / "data/fact-retrieval-comma/gpt2.csv",
           ["clean", "capital", "country", "country_idx", "corrupted", "corrupted_capital", "corrupted_country",
            "corrupted_country_idx"],
           [[" Kabul , the capital of", "Kabul", "Afghanistan", v["Afghanistan"], " London , the capital of",
             "London", "United Kingdom", v["United"]]])
    hyp = ["clean", "h1", "hypernym", "answers", "answers_idx", "corrupted", "c1", "corrupted_hypernym",
           "corrupted_answers", "corrupted_answers_idx", "clean2", "corrupted2", "prob_diff"]
    _write(d / "data/hypernymy-comma/gpt2.csv", hyp, [
        [", gems and other", "gems", "gem", "['gem', 'gems']", f"[{v['gem']}, {v['gems']}]", ", moths and other",
         "moths", "bug", "['insects', 'bugs']", f"[{v['insects']}, {v['bugs']}]", "", "", 0.1],
        [", gems and other", "gems", "gem", "['gem', 'moths']", f"[{v['gem']}, {v['moths']}]", ", moths and other",
         "moths", "bug", "['insects']", f"[{v['insects']}]", "", "", 0.1]])            # 'moths' not a valid gem
    (d / "data/hypernymy-comma/valid_answers.json").write_text(json.dumps(
        {"gem": [["gem", 0.2], ["gems", 0.1]], "bug": [["insects", 0.3], ["bugs", 0.1]]}))
    return d, v


def test_constructed_rows_are_kept_or_rejected_per_reason(files):
    d, v = files
    want = {"ioi_eapig": (2, {"answer_outside_vocab": 1, "length_differs": 1, "malformed_row": 1}),
            "greater_than_eapig": (2, {"malformed_row": 1}), "sva_eapig": (2, {"malformed_row": 1}),
            "gender_bias_eapig": (1, {}), "country_capital_eapig": (1, {}), "hypernymy_eapig": (1, {"malformed_row": 1})}
    for task, (kept, rejected) in want.items():
        b = E.load_batch(task, None, d, _hf_tok(), prepend_bos=False)
        assert len(b) == kept == b.meta["kept"], task
        assert b.meta["reject_reasons"] == {r: rejected.get(r, 0) for r in E.REJECT_REASONS}, task


def test_bos_changes_tokens_and_metric_position_exactly(files):
    d, _ = files
    tok = _hf_tok()
    for task in E.PAPER_TASKS:
        off = E.load_batch(task, None, d, tok, prepend_bos=False)
        on = E.load_batch(task, None, d, tok, prepend_bos=True)
        assert on.clean.shape[1] == off.clean.shape[1] + 1
        assert (on.clean[:, 0] == tok.bos_token_id).all() and (on.corrupt[:, 0] == tok.bos_token_id).all()
        assert torch.equal(on.clean[:, 1:], off.clean) and torch.equal(on.corrupt[:, 1:], off.corrupt)
        assert torch.equal(on.pos, off.pos + 1)
        assert torch.equal(on.answer_mask, off.answer_mask) and torch.equal(on.wrong_mask, off.wrong_mask)
        assert on.meta["prepend_bos"] and not off.meta["prepend_bos"]
    # generated tasks: TaskBatch.with_bos does the same
    g = make_batch("ioi", 3, seed=0)
    gb = g.with_bos(7)
    assert torch.equal(gb.clean, torch.cat([torch.full((3, 1), 7), g.clean], 1)) and torch.equal(gb.pos, g.pos + 1)
    with pytest.raises(ValueError, match="already starts with a BOS"):
        gb.with_bos(7)


def _softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def test_paper_metrics_equal_hand_computations(files):
    """Each task's metric on random logits against the authors' definition written out by hand
    (metrics.py of hannamw/eap-ig-faithfulness): indices from the rows, not from our masks."""
    d, v = files
    tok = _hf_tok()
    V = len(WORDS)
    g = torch.Generator().manual_seed(0)
    year = [v[f"{y:02d}"] for y in range(100)]
    sing, plur = [v["is"], v["has"], v["sees"]], [v["are"], v["have"], v["see"]]   # "big": singular not one token
    # per task: (answer ids, wrong ids) per kept row, and whether the metric is on probabilities
    hand = {
        "ioi_eapig": ([[v["Amy"]], [v["Laura"]]], [[v["Laura"]], [v["Amy"]]], False),
        "greater_than_eapig": ([year[53:], year[2:]], [year[:53], year[:2]], True),
        "sva_eapig": ([plur, sing], [sing, plur], True),
        "gender_bias_eapig": ([[v["she"]]], [[v["he"]]], False),
        "country_capital_eapig": ([[v["Afghanistan"]]], [[v["United"]]], False),
        "hypernymy_eapig": ([[v["gem"], v["gems"]]], [[v["insects"], v["bugs"]]], True),
    }
    for task, (ans, wrong, prob) in hand.items():
        b = E.load_batch(task, None, d, tok, prepend_bos=True)
        logits = torch.randn(len(b), b.clean.shape[1], V, generator=g, dtype=torch.float64)
        got = task_metric(b)(logits)
        for i in range(len(b)):
            row = logits[i, int(b.pos[i])].tolist()
            x = _softmax(row) if prob else row
            want = sum(x[j] for j in ans[i]) - sum(x[j] for j in wrong[i])
            assert got[i].item() == pytest.approx(want, rel=1e-9, abs=1e-12), (task, i)
    # SVA's sign: label 1 (plural) is P(plural) - P(singular), label 0 the opposite, on the same logits
    b = E.load_batch("sva_eapig", None, d, tok, prepend_bos=False)
    same = torch.randn(1, b.clean.shape[1], V, generator=g, dtype=torch.float64).repeat(2, 1, 1)
    m = task_metric(b)(same)
    assert m[0].item() == pytest.approx(-m[1].item()) and m[0].item() != 0


def test_swap_closed_batch_gives_corrupted_baseline_minus_clean(files):
    """On a swap-closed batch the mean corrupted metric is minus the mean clean one for any
    model (here a random one); a batch missing a row's swap is reported, and breaks it."""
    from attrpatch.models.random import random_bridge

    d, _ = files
    b = E.load_batch("sva_eapig", None, d, _hf_tok(), prepend_bos=True)   # two rows, each the other's swap
    assert len(b) == 2 and E.swap_pairs(b) == 2
    one = b.subset(slice(0, 1))
    assert E.swap_pairs(one) == 0
    wrong_sets = TaskBatch(b.task, b.clean, b.corrupt, b.answer_mask, b.answer_mask.roll(1, dims=1), b.metric,
                           pos=b.pos)
    assert E.swap_pairs(wrong_sets) == 0, "the answer sets must be exchanged too"
    model = random_bridge(n_layer=1, n_head=2, n_embd=16, vocab_size=len(WORDS), weight_scale=0.5, seed=3,
                          dtype=torch.float64)
    m = task_metric(b)
    with torch.no_grad():
        clean, corrupt = m(model(b.clean)), m(model(b.corrupt))
    assert abs(clean[0].item()) > 1e-6
    torch.testing.assert_close(corrupt, -clean.flip(0), rtol=1e-12, atol=0)   # row i's swap is row 1 - i
    assert corrupt.mean().item() == pytest.approx(-clean.mean().item(), abs=1e-15)
    assert corrupt[0].item() != pytest.approx(-clean[0].item(), rel=1e-3), "alone, a row is not its own swap"


def test_metric_reads_the_last_real_token_of_each_row(files):
    d, _ = files
    b = E.load_batch("ioi_eapig", None, d, _hf_tok(), prepend_bos=True)
    assert b.pos.tolist() == [12, 11]          # BOS + 12 and BOS + 11 words, right padded to 13
    logits = torch.zeros(2, 13, len(WORDS), dtype=torch.float64)
    logits[0, 12] = torch.arange(len(WORDS), dtype=torch.float64)
    logits[1, 11] = torch.arange(len(WORDS), dtype=torch.float64)
    logits[1, 12] = 1e6                         # the padding position must not be read
    v = {w: i for i, w in enumerate(WORDS)}
    assert task_metric(b)(logits).tolist() == [v["Amy"] - v["Laura"], v["Laura"] - v["Amy"]]


# ---- methods need no change: right padding and a per-row position are exact --------------

def test_padded_rows_give_the_unpadded_scores_and_effects(model):
    """A batch of rows of different lengths (right padded, pos = each row's last token, as the
    paper files give) has the mean of the per-row EAP scores and exact edge effects of the
    unpadded rows: methods and patching read only positions up to pos (causal model)."""
    from conftest import VOCAB

    g = torch.Generator().manual_seed(4)
    lens = [6, 4]
    rows = []
    for L in lens:
        c = torch.randint(4, VOCAB, (L,), generator=g)
        k = c.clone()
        k[1] = (c[1] + 3) % VOCAB
        rows.append((c, k))
    am = torch.zeros(2, VOCAB, dtype=torch.bool)
    wm = torch.zeros(2, VOCAB, dtype=torch.bool)
    am[0, 5], wm[0, 9], am[1, 7], wm[1, 11] = True, True, True, True
    pad = lambda x: torch.cat([x, torch.zeros(6 - len(x), dtype=torch.long)])   # noqa: E731
    padded = TaskBatch("pad", torch.stack([pad(c) for c, _ in rows]), torch.stack([pad(k) for _, k in rows]),
                       am, wm, "logit_diff", pos=torch.tensor([5, 3]))
    single = [TaskBatch("one", c[None], k[None], am[i:i + 1], wm[i:i + 1], "logit_diff")
              for i, (c, k) in enumerate(rows)]
    graph = Graph.from_model(model)
    s_pad = eap_scores(model, graph, padded)
    s_one = sum(eap_scores(model, graph, b) for b in single) / 2
    torch.testing.assert_close(s_pad, s_one, rtol=1e-9, atol=1e-12)
    edges = graph.edge_index[:: max(1, graph.n_edges // 12)]
    e_pad = Patcher(model, graph, padded).edge_effects(edges)
    e_one = sum(Patcher(model, graph, b).edge_effects(edges) for b in single) / 2
    torch.testing.assert_close(e_pad, e_one, rtol=1e-9, atol=1e-12)
    assert e_one.abs().max() > 1e-4, "the test needs edges with real effects"


# ---- missing data stops the run, naming the files ----------------------------------------

def test_missing_data_names_every_file_and_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv(E.ENV_VAR, str(tmp_path))
    cfg = {"experiments": {"eapig_faith": {"tasks": {t: "gpt2" for t in E.PAPER_TASKS}}}}
    msg = E.missing_paper_data(cfg)
    for t in E.PAPER_TASKS.values():
        for f in t.files:
            assert f in msg
    assert E.PAPER_REPO in msg and E.PAPER_COMMIT in msg and E.ENV_VAR in msg
    monkeypatch.delenv(E.ENV_VAR)
    assert "no data directory" in E.missing_paper_data(cfg)
    assert E.missing_paper_data({"experiments": {"eap_roc": {"tasks": {"ioi": "gpt2"}}}}) is None
    # random models build the stand-in tokenizer from all six tasks' files, so all are required
    one = {"experiments": {"eapgp_gain": {"tasks": {"ioi_eapig": "gpt2"}}}}
    assert "data/sva/gpt2.csv" not in E.missing_paper_data(one)
    assert "data/sva/gpt2.csv" in E.missing_paper_data({**one, "models": {"gpt2": {"random": "gpt2"}}})
    with pytest.raises(E.PaperDataMissing, match="data/ioi/gpt2.csv"):
        E.load_batch("ioi_eapig", 2, tmp_path, _hf_tok(), prepend_bos=True)


def test_snakemake_stops_before_any_work_without_the_data(tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="0", **{E.ENV_VAR: str(tmp_path / "nowhere")})
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(ROOT / "Snakefile"),
                        "--config", "profile=paper_random"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "data/sva/combined_verb_list.csv" in out and E.PAPER_REPO in out
    assert not (tmp_path / "results").exists()
