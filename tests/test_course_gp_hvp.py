"""Checkers of notebook 05 (EAP-GP and the second-order correction): the right implementation
passes, each known mistake is rejected with its own hint, broken code is one line and zero points."""
import pytest
import torch

from attrpatch.activations import EMBED_HOOK, frozen_hooks
from attrpatch.course.check_gp_hvp import (LN_FINAL_SCALE, QUADRATIC_EDGES, READING, check_gradpath_step,
                                          check_reliability_score, check_second_order_terms)
from attrpatch.course.inputs import random_batch, random_model
from attrpatch.course.receiver import edge_function, squared_logit_diff
from attrpatch.methods.hvp import hvp_scores
from attrpatch.patching import Patcher


# ---- the helper the exercises and checks stand on ----------------------------------------------
def test_edge_function_is_exact_patching():
    """f(x0 + d) - f(x0) is the edge's exact effect, for a receiver of every kind (q, k, v, MLP, logits)."""
    model, graph = random_model()
    batch = random_batch()
    edges = ["a0.h1->a1.h0<q>", "input->a0.h1<k>", "m0->a1.h1<v>", "a1.h0->m1", "a0.h0->logits"]
    exact = Patcher(model, graph, batch).edge_effects(torch.tensor([graph.edge(e) for e in edges]))
    for e, want in zip(edges, exact.tolist()):
        f, x0, d = edge_function(model, graph, batch, *e.split("->"))
        with torch.no_grad():
            assert (f(x0 + d) - f(x0)).item() == pytest.approx(want, rel=1e-9, abs=1e-12), e
    with pytest.raises(ValueError, match="not an edge"):
        edge_function(model, graph, batch, "m1", "a0.h0<q>")


def test_quadratic_case_needs_the_frozen_layernorm():
    """The check's exact-patching case is a real one: without the frozen final LayerNorm scale
    the squared logit difference is not quadratic along those edges and first + second misses."""
    model, graph = random_model()
    batch = random_batch()
    idx = torch.tensor([graph.edge(e) for e in QUADRATIC_EDGES])
    quad = squared_logit_diff(batch)
    for hooks, exact_expected in (([], False), (frozen_hooks(model, batch.clean, [LN_FINAL_SCALE]), True)):
        sc = hvp_scores(model, graph, batch, quad, edges=idx.tolist(), extra_hooks=hooks, reading=READING)
        err = (sc.corrected - Patcher(model, graph, batch, quad, extra_hooks=hooks).edge_effects(idx)).abs().max()
        assert (err < 1e-12) == exact_expected, err


# ---- exercise 1: first-order term and 1/2 d^T H d -------------------------------------------------
def terms(f, x0, d, half=0.5, at_patched=False, contract="d", first_sign=1.0, second_sign=1.0):
    x = (x0 + d if at_patched else x0).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    first = (g * d).sum()
    if contract == "ones":
        (hv,) = torch.autograd.grad(g.sum(), x)          # H 1, the mistake
        second = half * (d * hv).sum()
    else:
        (hd,) = torch.autograd.grad(first, x)
        second = half * ((d if contract == "d" else g.detach()) * hd).sum()
    return first_sign * first.item(), second_sign * second.item()


def test_second_order_right():
    r = check_second_order_terms(terms)
    assert r.passed and r.points == 2.0, r.feedback


def test_second_order_by_functional_hvp_passes():
    """torch.func's Hessian-vector product (forward over reverse) is an equally right answer."""
    def terms_func(f, x0, d):
        g, hd = torch.func.jvp(torch.func.grad(f), (x0,), (d,))
        return (g * d).sum().item(), 0.5 * (d * hd).sum().item()
    r = check_second_order_terms(terms_func)
    assert r.passed, r.feedback


@pytest.mark.parametrize("kw, hint", [
    (dict(half=1.0), "missing the 1/2"),
    (dict(contract="ones"), "vector of ones"),
    (dict(contract="g"), "contracted with the gradient"),
    (dict(at_patched=True), "patched point"),
    (dict(first_sign=-1.0), "sign of the first-order term"),
    (dict(first_sign=-1.0, second_sign=-1.0), "both signs"),
    (dict(half=0.0), "second-order term is zero"),
])
def test_second_order_mistakes(kw, hint):
    r = check_second_order_terms(lambda *a: terms(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- exercise 2: the reliability score ---------------------------------------------------------
def rho(first, second, factor=1.0, absolute=True, inverted=False, zero_case=True):
    num, den = (second.abs(), first.abs()) if absolute else (second, first)
    if inverted:
        num, den = den, num
    r = factor * num / den
    return torch.where((num == 0) & (den == 0), torch.zeros_like(r), r) if zero_case else r


def test_reliability_right():
    r = check_reliability_score(rho)
    assert r.passed and r.points == 1.0, r.feedback


@pytest.mark.parametrize("kw, hint", [
    (dict(factor=2.0), "twice too large"),
    (dict(factor=0.5), "half the value"),
    (dict(absolute=False), "signed ratio"),
    (dict(inverted=True), "inverted"),
    (dict(zero_case=False), "handle 0/0"),
])
def test_reliability_mistakes(kw, hint):
    r = check_reliability_score(lambda *a: rho(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


def test_reliability_x_over_zero_must_be_inf():
    r = check_reliability_score(lambda f, s: torch.where(f == 0, torch.zeros_like(f), s.abs() / f.abs()))
    assert not r.passed and "expected inf" in r.feedback, r.feedback


# ---- exercise 3: one step of the adaptive path -------------------------------------------------
def step(model, tokens, gamma, target, eta, sign=-1.0, norm="example", last_only=False):
    x = gamma.clone().requires_grad_(True)
    logits = model.run_with_hooks(tokens, fwd_hooks=[(EMBED_HOOK, lambda t, hook: x)])
    diff = logits - target
    obj = (diff[:, -1:] if last_only else diff).pow(2).sum()
    (g,) = torch.autograd.grad(obj, x)
    n = {"example": g.flatten(1).norm(dim=1)[:, None, None], "batch": g.norm(),
         "position": g.norm(dim=-1, keepdim=True), "none": 1.0}[norm]
    return gamma + sign * eta * g / n


def test_gradpath_step_right():
    r = check_gradpath_step(step)
    assert r.passed and r.points == 2.0, r.feedback


def test_gradpath_step_mean_objective_passes():
    """A mean instead of a sum (or the distance without the square) only rescales g: same step."""
    def step_mean(model, tokens, gamma, target, eta):
        x = gamma.clone().requires_grad_(True)
        logits = model.run_with_hooks(tokens, fwd_hooks=[(EMBED_HOOK, lambda t, hook: x)])
        (g,) = torch.autograd.grad((logits - target).pow(2).mean(), x)
        return gamma - eta * g / g.flatten(1).norm(dim=1)[:, None, None]
    assert check_gradpath_step(step_mean).passed


@pytest.mark.parametrize("kw, hint", [
    (dict(norm="none"), "not normalised"),
    (dict(sign=1.0), "against it"),
    (dict(norm="batch"), "whole batch"),
    (dict(norm="position"), "per position"),
    (dict(last_only=True), "last position only"),
])
def test_gradpath_step_mistakes(kw, hint):
    r = check_gradpath_step(lambda *a: step(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- broken code is feedback -------------------------------------------------------------------
def _raise(*a):
    raise RuntimeError("element 0 of tensors does not require grad")


def _not_yet(*a):
    raise NotImplementedError()


@pytest.mark.parametrize("fn, check, hint", [
    (_not_yet, check_second_order_terms, "not yet implemented"),
    (_raise, check_second_order_terms, "raised RuntimeError"),
    (lambda f, x0, d: 1.0, check_second_order_terms, "expected a pair"),
    (lambda f, x0, d: (x0 * d, 0.0), check_second_order_terms, "first is a tensor of shape [2, 3, 4]"),
    (lambda f, x0, d: (float("nan"), 0.0), check_second_order_terms, "first: returned nan"),
    (_not_yet, check_reliability_score, "not yet implemented"),
    (lambda f, s: [0.0], check_reliability_score, "expected a torch.Tensor"),
    (lambda f, s: torch.zeros(3), check_reliability_score, "returned shape [3]"),
    (lambda f, s: torch.full_like(f, float("nan")), check_reliability_score, "NaN or inf"),
    (_raise, check_gradpath_step, "raised RuntimeError"),
    (lambda m, t, g, tl, e: g[:, -1], check_gradpath_step, "expected [batch, pos, d_model]"),
    (lambda m, t, g, tl, e: g * float("nan"), check_gradpath_step, "NaN"),
    (lambda m, t, g, tl, e: None, check_gradpath_step, "returned NoneType"),
])
def test_broken_code_is_one_line_of_feedback(fn, check, hint, capsys):
    r = check(fn, time_limit=5)
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback
    out = capsys.readouterr()
    assert out.out.strip() == r.line() and "\n" not in r.line() and out.err == ""
    assert repr(r) == "0"
