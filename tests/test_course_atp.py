"""Checks of notebook 04 (when gradients mislead): the right implementation of each exercise
passes; each known mistake, written out as a student would write it, is rejected with its
own hint; broken code is one line and zero points."""
import math
import time

import pytest
import torch

from attrpatch.activations import capture_outputs, input_gradients
from attrpatch.course.check_atp import (FN_RATIO, check_find_false_negative, check_graddrop_scores,
                                        check_qk_fix_key, saturated_random_model)
from attrpatch.course.inputs import random_batch
from attrpatch.methods.eap import eap_scores
from attrpatch.metrics import task_metric
from attrpatch.patching import Patcher


# ---- exercise 1: the QK fix for one head's keys ---------------------------------------------------
def _pattern(scores, causal=True):
    P = scores.shape[-1]
    if causal:
        scores = scores.masked_fill(~torch.ones(P, P, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(-1)


def key_fix(q, k, k_src, g, sign=1.0, at_once=False, causal=True, scaled=True):
    r = math.sqrt(q.shape[-1]) if scaled else 1.0
    S = q @ k.transpose(1, 2) / r
    A = _pattern(S, causal)
    S_src = q @ k_src.transpose(1, 2) / r
    if at_once:
        return sign * float(((_pattern(S_src, causal) - A) * g).sum())
    total = 0.0
    for s in range(k.shape[1]):
        Ss = S.clone()
        Ss[:, :, s] = S_src[:, :, s]
        total += float(((_pattern(Ss, causal) - A) * g).sum())
    return sign * total


def key_fix_linearised(q, k, k_src, g):
    """Plain AtP of the key: the gradient of sum(A * g) in k, times k_src - k."""
    k = k.clone().requires_grad_(True)
    out = (_pattern(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])) * g).sum()
    (grad,) = torch.autograd.grad(out, k)
    return float(((k_src - k) * grad).sum())


def test_qk_fix_key_right():
    r = check_qk_fix_key(key_fix)
    assert r.passed and r.points == 2.0, r.feedback


@pytest.mark.parametrize("fn, hint", [
    (lambda *a: key_fix(*a, sign=-1.0), "sign flipped"),
    (lambda *a: key_fix(*a, at_once=True), "one key position s at a time"),
    (key_fix_linearised, "linearised"),
    (lambda *a: key_fix(*a, causal=False), "causal mask"),
    (lambda *a: key_fix(*a, scaled=False), "sqrt(d_head)"),
])
def test_qk_fix_key_mistakes(fn, hint):
    r = check_qk_fix_key(fn)
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- exercise 2: GradDrop -------------------------------------------------------------------------
def atp_per_pair(model, graph, batch, extra_hooks=()):
    _, z_src = capture_outputs(model, graph, batch.corrupt)
    r = input_gradients(model, graph, batch.clean, task_metric(batch), want_output_grads=True, extra_hooks=extra_hooks)
    return batch.clean.shape[0] * torch.einsum("bpud,bpud->bu", z_src - r.outputs, r.output_grads)


def graddrop(model, graph, batch, abs_late=False, norm=None, signed=False, cut="block", times_B=True):
    L = graph.n_layers
    per_layer = []
    for l in range(L):
        saved = {}

        def keep(t, hook):
            saved["resid"] = t
            return t

        def drop(t, hook):
            return saved["resid"] + (t - saved["resid"]).detach()
        hooks = [] if cut == "none" else [(f"blocks.{l}.hook_in", keep), (f"blocks.{l}.hook_out", drop)]
        per_layer.append(atp_per_pair(model, graph, batch, hooks) / (1 if times_B else len(batch)))
    per_layer = torch.stack(per_layer)                         # [L, B, n_up]
    norm = norm or max(L - 1, 1)
    if signed:
        return per_layer.sum(0).mean(0) / norm
    if abs_late:
        return per_layer.mean(1).abs().sum(0) / norm
    return per_layer.abs().sum(0).mean(0) / norm


def test_graddrop_right():
    r = check_graddrop_scores(graddrop)
    assert r.passed and r.points == 2.0, r.feedback


@pytest.mark.parametrize("kw, hint", [
    (dict(abs_late=True), "after averaging over pairs"),
    (dict(norm=2), "divided by L"),
    (dict(signed=True), "no |.|"),
    (dict(times_B=False), "B times too small"),
    (dict(cut="none"), "no gradient was dropped"),
])
def test_graddrop_mistakes(kw, hint):
    r = check_graddrop_scores(lambda *a: graddrop(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- exercise 3: the false negative -----------------------------------------------------------------
def _edges(model, graph, batch):
    exact = Patcher(model, graph, batch).edge_effects()
    eap = eap_scores(model, graph, batch)[graph.edge_index[:, 0], graph.edge_index[:, 1]]
    return exact, eap


def find_fn(model, graph, batch, ratio, rule="right"):
    exact, eap = _edges(model, graph, batch)
    if rule == "largest_exact":
        return graph.edge_names[int(exact.abs().argmax())]
    if rule == "smallest_eap":
        return graph.edge_names[int(eap.abs().argmin())]
    missed = (eap < ratio * exact.abs()) if rule == "signed" else (eap.abs() < ratio * exact.abs())
    if rule == "smallest_fn":
        size = torch.where(missed & (exact.abs() > 1e-3), exact.abs(), torch.full_like(exact, math.inf))
        return graph.edge_names[int(size.argmin())]
    if not missed.any():
        return None
    return graph.edge_names[int(torch.where(missed, exact.abs(), torch.zeros_like(exact)).argmax())]


def test_find_false_negative_right():
    r = check_find_false_negative(find_fn)
    assert r.passed and r.points == 1.0, r.feedback


@pytest.mark.parametrize("rule, hint", [
    ("largest_exact", "EAP does not miss that edge"),
    ("signed", "a large negative EAP score is not a small one"),
    ("smallest_eap", "that edge has no effect"),
    ("smallest_fn", "not the one with the largest"),
])
def test_find_false_negative_mistakes(rule, hint):
    r = check_find_false_negative(lambda *a: find_fn(*a, rule=rule))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


def test_false_negative_of_the_check_is_clear():
    """The check's answer on the saturated model is not a close call: EAP recovers well under
    the ratio, and the next false negative is much smaller."""
    model, graph = saturated_random_model()
    exact, eap = _edges(model, graph, random_batch(1000))
    missed = eap.abs() < FN_RATIO * exact.abs()
    sizes = exact.abs()[missed].sort(descending=True).values
    i = graph.edge_names.index(find_fn(model, graph, random_batch(1000), FN_RATIO))
    assert abs(float(eap[i])) < 0.05 * abs(float(exact[i])) and sizes[1] < 0.5 * sizes[0]


# ---- broken code is feedback ------------------------------------------------------------------------
def _runaway(*a):
    while True:
        time.sleep(0.01)


@pytest.mark.parametrize("fn, check, hint", [
    (_runaway, check_graddrop_scores, "stopped after 0.5 s"),
    (lambda *a: None, check_qk_fix_key, "expected one number"),
    (lambda *a: torch.zeros(3), check_qk_fix_key, "shape [3]"),
    (lambda m, g, b: torch.zeros(g.n_up, g.n_down), check_graddrop_scores, "expected [n_up]"),
    (lambda m, g, b: torch.full((g.n_up,), float("nan")), check_graddrop_scores, "NaN"),
    (lambda *a: 3, check_find_false_negative, "expected an edge name"),
    (lambda *a: "input->logits->m0", check_find_false_negative, "not an edge of the model"),
    (lambda *a: 1 / 0, check_find_false_negative, "raised ZeroDivisionError"),
])
def test_broken_code_is_one_line_of_feedback(fn, check, hint, capsys):
    r = check(fn, time_limit=0.5)
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback
    assert capsys.readouterr().out.strip() == r.line() and "\n" not in r.line()
