"""Every numeric option and input is checked at the entry points, before any forward pass:
a bad value is an error naming the option, the value and what is allowed (never a silent
all-zero result or "index out of range in self")."""
import json

import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.registry import METHODS, OPTIONS, attribute, method_options
from attrpatch.patching import Patcher
from attrpatch.tasks import make_batch
from attrpatch.tasks.base import TaskBatch

from conftest import VOCAB, random_batch


class NoForward:
    """Wraps a model; any forward is a test failure (checks must come first)."""

    def __init__(self, model):
        self._m = model
        self.cfg = model.cfg

    def __getattr__(self, name):
        if name in ("forward", "run_with_hooks", "__call__", "run_with_cache"):
            raise AssertionError("a forward pass ran before the input was checked")
        return getattr(self._m, name)

    def __call__(self, *a, **k):
        raise AssertionError("a forward pass ran before the input was checked")


def test_every_method_option_has_a_meaning_and_a_check():
    for m in METHODS:
        missing = [o for o in method_options(m) if o not in OPTIONS]
        assert not missing, f"method {m!r}: options {missing} have no entry in methods.registry.OPTIONS"


@pytest.mark.parametrize("method,opts,match", [
    ("eap", {"batch_size": -1}, r"batch_size must be an integer >= 1 or None, got -1"),
    ("eap", {"batch_size": 0}, r"batch_size must be an integer >= 1 or None, got 0"),
    ("eap", {"batch_size": 2.5}, r"batch_size must be .* got 2.5 \(float\)"),
    ("eap_ig", {"steps": 2.0}, r"steps must be an integer >= 1, got 2.0 \(float\)"),
    ("eap_ig", {"steps": 0}, r"steps must be an integer >= 1, got 0"),
    ("eap_ig", {"steps": True}, r"steps must be an integer >= 1, got True \(bool\)"),
    ("eap_ig", {"points": "pape"}, r"unknown points 'pape'; allowed: paper, library"),
    ("eap_gp", {"step_size": -1.0}, r"step_size must be a finite number > 0, got -1.0"),
    ("eap_gp", {"step_size": float("nan")}, r"step_size must be a finite number > 0, got nan"),
    ("exact", {"rows_per_forward": 0}, r"rows_per_forward must be an integer >= 1 or None, got 0"),
    ("exact", {"progress": "yes"}, r"progress must be true or false, got 'yes'"),
    ("atp", {"heads": "qk"}, r"unknown heads 'qk'; allowed: output, qkv"),
    ("acdc", {"tau": 0.1, "direct": "yes"}, r"direct must be true or false, got 'yes'"),
    ("atp_qk", {"batch_size": "4"}, r"batch_size must be .* got '4' \(str\)"),
    ("eap", {"metric": "kll"}, r"unknown metric 'kll'; allowed: task, .*kl"),
    ("eap", {"direction": "clean"}, r"unknown direction 'clean'; allowed: corrupt_into_clean, clean_into_corrupt"),
])
def test_bad_option_is_named_before_any_forward(model, method, opts, match):
    with pytest.raises(ValueError, match=match) as e:
        attribute(NoForward(model), random_batch(), method=method, graph=Graph.from_model(model), **opts)
    assert f"method {method!r}" in str(e.value)


def test_batch_size_minus_one_no_longer_gives_zero_scores_in_direct_calls(model):
    from attrpatch.methods.eap import eap_scores

    with pytest.raises(ValueError, match="batch_size must be an integer >= 1 or None, got -1"):
        eap_scores(model, Graph.from_model(model), random_batch(), batch_size=-1)


def test_good_options_still_run(model):
    s = attribute(model, random_batch(), method="eap_ig", steps=2, batch_size=2)
    assert torch.isfinite(s).all() and s.abs().sum() > 0


@pytest.mark.parametrize("n,match", [(0, r"n must be an integer >= 1, got 0"),
                                     (2.5, r"n must be an integer >= 1, got 2.5 \(float\)"),
                                     (-3, r"n must be an integer >= 1, got -3")])
def test_make_batch_n(n, match):
    with pytest.raises(ValueError, match=r"make_batch\('ioi'\): " + match):
        make_batch("ioi", n, 0)


def test_empty_and_malformed_batches():
    b = random_batch()
    with pytest.raises(ValueError, match=r"empty batch \(0 examples of 6 tokens\)"):
        TaskBatch("x", b.clean[:0], b.corrupt[:0], b.answer_mask[:0], b.wrong_mask[:0], "logit_diff")
    with pytest.raises(ValueError, match="pos 6 is outside the prompt \\(positions 0..5\\)"):
        TaskBatch("x", b.clean, b.corrupt, b.answer_mask, b.wrong_mask, "logit_diff", pos=torch.full((4,), 6))
    with pytest.raises(ValueError, match="pos -1 is outside the prompt"):
        TaskBatch("x", b.clean, b.corrupt, b.answer_mask, b.wrong_mask, "logit_diff", pos=torch.full((4,), -1))
    with pytest.raises(ValueError, match="negative token id -2"):
        TaskBatch("x", b.clean - 2 * (b.clean == 0).long(), b.corrupt, b.answer_mask, b.wrong_mask, "logit_diff")
    with pytest.raises(ValueError, match="tokens must be integer ids, got torch.float32"):
        TaskBatch("x", b.clean.float(), b.corrupt.float(), b.answer_mask, b.wrong_mask, "logit_diff")
    with pytest.raises(ValueError, match="answer_mask is over 48 tokens but wrong_mask over 40"):
        TaskBatch("x", b.clean, b.corrupt, b.answer_mask, b.wrong_mask[:, :40] | True, "logit_diff")


def test_batch_that_does_not_fit_the_model(model):
    g = Graph.from_model(model)
    b = random_batch()
    big = TaskBatch("x", b.clean + VOCAB, b.corrupt, b.answer_mask, b.wrong_mask, "logit_diff")
    with pytest.raises(ValueError, match=rf"clean token id \d+ is outside the model's vocabulary \(ids 0..{VOCAB - 1}\)"):
        attribute(NoForward(model), big, graph=g)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        Patcher(NoForward(model), g, big)
    n_ctx = model.cfg.n_ctx
    long = random_batch(P=n_ctx + 1, corrupt_positions=(1,))
    with pytest.raises(ValueError, match=rf"prompts have {n_ctx + 1} tokens but the model's context is {n_ctx} tokens"):
        attribute(NoForward(model), long, graph=g)
    wide = random_batch(V=VOCAB + 7)
    wide = TaskBatch("x", b.clean, b.corrupt, wide.answer_mask, wide.wrong_mask, "logit_diff")
    with pytest.raises(ValueError, match=rf"answer masks are over a vocabulary of {VOCAB + 7} tokens but the model "
                                         rf"outputs {VOCAB} logits"):
        attribute(NoForward(model), wide, graph=g)
    with pytest.raises(ValueError, match="rows_per_forward must be an integer >= 1 or None, got -5"):
        Patcher(NoForward(model), g, b, rows_per_forward=-5)


def test_option_meanings_are_json_friendly():
    """Every check accepts the JSON form of its default (what `--options` parses to)."""
    assert json.loads('{"steps": 2}')["steps"] == OPTIONS["steps"].check(2)
    assert OPTIONS["batch_size"].check(None) is None
