"""Training: a few steps reduce the loss; attn-only MLPs stay exactly zero; outputs are atomic."""
import json

import pytest
import torch

from attrpatch.models.evaluate import accuracy, evaluate_tasks
from attrpatch.models.train import CONFIGS, build_model, train_tiny
from attrpatch.tasks import make_batch
from attrpatch.tasks.vocab import toy_tokenizer

SMALL = dict(n_layer=1, n_head=2, n_embd=32, batch_size=16, warmup=5, eval_every=0,
             early_stop=None, max_seconds=60)


def _losses(out):
    import csv
    with open(out / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_few_steps_reduce_loss_and_write_outputs(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "m"
    info = train_tiny("tiny-gpt2", out, seed=0, steps=40, progress=False, **SMALL)
    L = _losses(out)
    assert len(L) == 40
    assert sum(L[-5:]) / 5 < sum(L[:5]) / 5 - 0.5
    for f in ("config.json", "model.safetensors", "vocab.json", "train_info.json", "tokenizer.json"):
        assert (out / f).exists(), f
    assert json.loads((out / "train_info.json").read_text())["steps_run"] == info["steps_run"] == 40
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed away


def test_deterministic(tmp_path):
    torch.set_num_threads(1)
    a = train_tiny("tiny-gpt2", tmp_path / "a", seed=1, steps=5, progress=False, **SMALL)
    b = train_tiny("tiny-gpt2", tmp_path / "b", seed=1, steps=5, progress=False, **SMALL)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert a["heldout"] == b["heldout"]


def test_attn_only_mlp_output_exactly_zero(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "attn"
    train_tiny("tiny-attn", out, seed=0, steps=10, progress=False, **SMALL)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["attrpatch_attn_only"] is True
    from transformers import GPT2LMHeadModel
    m = GPT2LMHeadModel.from_pretrained(out)
    outs = []
    hooks = [b.mlp.register_forward_hook(lambda mod, i, o: outs.append(o)) for b in m.transformer.h]
    with torch.no_grad():
        m(make_batch("docstring", 4, 0).clean)
    for h in hooks:
        h.remove()
    assert len(outs) == SMALL["n_layer"] and all(float(o.abs().max()) == 0.0 for o in outs)


def test_attn_only_build_freezes_mlps():
    cfg = {**CONFIGS["tiny-attn"], **SMALL}
    m = build_model(cfg, len(toy_tokenizer()))
    for b in m.transformer.h:
        assert all(not p.requires_grad and float(p.abs().max()) == 0 for p in b.mlp.parameters())


def test_accuracy_definition():
    b = make_batch("ioi", 2, 0)
    V = b.n_vocab
    logits = torch.zeros(2, b.clean.shape[1], V)
    logits[0, -1] = b.answer_mask[0].float() * 5  # answer on top
    logits[1, -1] = b.wrong_mask[1].float() * 5  # wrong on top
    assert accuracy(b, logits).tolist() == [True, False]
    g = make_batch("greater_than", 1, 0)
    lg = torch.zeros(1, g.clean.shape[1], V)
    lg[0, -1] = g.answer_mask[0].float() * 3
    assert accuracy(g, lg).tolist() == [True]


def test_evaluate_tasks_table():
    torch.set_num_threads(1)
    cfg = {**CONFIGS["tiny-gpt2"], **SMALL}
    m = build_model(cfg, len(toy_tokenizer())).eval()
    df = evaluate_tasks(m, ["sva", "ioi"], n=8, seed=0, tokenizer=toy_tokenizer())
    assert list(df.columns) == ["task", "accuracy", "mean_metric", "n"]
    assert df.n.tolist() == [8, 8]
    # chunked forwards give the same table (each prompt's logits are its own)
    chunked = evaluate_tasks(m, ["sva", "ioi"], n=8, seed=0, tokenizer=toy_tokenizer(), batch_size=3)
    assert chunked.accuracy.tolist() == df.accuracy.tolist()
    assert chunked.mean_metric.tolist() == pytest.approx(df.mean_metric.tolist(), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        evaluate_tasks(m, ["sva"], n=2, tokenizer=toy_tokenizer(), batch_size=0)


@pytest.mark.parametrize("cfg, reason, step", [
    (dict(max_seconds=1e-9), "max_seconds", 1),                     # the budget runs out after step 1
    (dict(eval_every=2, early_stop=0.0), "early_stop", 2),          # every accuracy >= 0: stops at the first eval
])
def test_early_stop_is_said_with_step_and_reason(tmp_path, capsys, cfg, reason, step):
    """The bar alone ends at step/total (near 10% in the DAG) without saying why: a line says it."""
    torch.set_num_threads(1)
    info = train_tiny("tiny-gpt2", tmp_path / "m", seed=0, steps=10, progress=True,
                      **{**SMALL, "max_seconds": 60, "tasks": {"ioi": 1.0}, **cfg})   # one task: one cheap eval
    assert (info["stop_reason"], info["steps_run"]) == (reason, step)
    want = f"train tiny-gpt2 stopped early at step {step} of 10: "
    assert info["stop_message"].startswith(want)
    assert ("early_stop = 0.0" if reason == "early_stop" else "max_seconds = 1e-09 s") in info["stop_message"]
    assert want in capsys.readouterr().err
    assert json.loads((tmp_path / "m" / "train_info.json").read_text())["stop_message"] == info["stop_message"]


def test_full_run_says_so_and_bad_reason_is_named():
    from attrpatch.models.train import stop_message

    assert stop_message("tiny-attn", "steps", 40, 40, {}) == "train tiny-attn ran all 40 steps"
    with pytest.raises(ValueError, match=r"stop reason must be one of \['steps', 'early_stop', 'max_seconds'\], got 'tired'"):
        stop_message("tiny-attn", "tired", 3, 40, {})
