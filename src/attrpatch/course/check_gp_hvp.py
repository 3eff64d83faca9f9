"""Checks of notebook 05 (EAP-GP and the second-order correction).

* `check_second_order_terms`: fn(f, x0, d) -> (g.d, 1/2 d^T H d) of a scalar function f at
  x0 along d. Graded on (a) random quadratic functions against the closed form, (b) edges of a
  fresh model (`receiver.edge_function`) against `methods.hvp.hvp_scores` (its per-component
  reading, named), (c) edges into
  `logits` under an exactly quadratic metric (`receiver.squared_logit_diff`, final LayerNorm
  scale frozen), where first + second must equal exact patching (`patching.Patcher`).
* `check_reliability_score`: fn(first, second_term) -> rho, against `methods.hvp.reliability`
  on a fresh model's edge terms and the special cases 0/0 (rho = 0) and x/0 (rho = inf).
* `check_gradpath_step`: fn(model, tokens, gamma, target_logits, eta) -> the next point of
  EAP-GP's path, against `methods.eap_gp.grad_path` with its unit step rule named explicitly
  (``step="unit"``, ``step_size=eta``; the check does not depend on the method's default).

Known mistakes, each computed on the same inputs: a missing 1/2, the Hessian applied to a
vector of ones or contracted with the gradient, the expansion taken at the patched point,
flipped signs, no second-order term; a factor 2, no absolute values or an inverted ratio in
rho; an unnormalised or ascending path step, a norm over the batch or per position, the
distance at the last position only. They are computed only for a wrong answer (a right one
costs the check alone).
"""
from __future__ import annotations

import torch

from ..activations import EMBED_HOOK, frozen_hooks
from ..methods.common import PathContext
from ..methods.eap_gp import grad_path
from ..methods.eap_ig import token_embeddings
from ..methods.hvp import hvp_scores, reliability
from ..metrics import task_metric
from ..patching import DEFAULT_DIRECTION, Patcher
from .inputs import CHECK_SEED, random_batch, random_model
from .receiver import edge_function, squared_logit_diff
from .result import (StudentProblem, as_matrix, as_number, call_student, close, compare, run_check, CheckResult,
                     DEFAULT_TIME_LIMIT)

# edges the second-order check grades on: one into a key, an MLP, a query of layer 0, the logits
MODEL_EDGES = ("a0.h0->a1.h1<k>", "a0.h1->m1", "input->a0.h0<q>", "m0->logits")
# edges into `logits`, where the squared logit difference with a frozen final LayerNorm is exactly quadratic
QUADRATIC_EDGES = ("input->logits", "a0.h1->logits", "m1->logits")
LN_FINAL_SCALE = "ln_final.hook_scale"
PATH_ETA = 0.1          # the path step's length in the check (any positive value would do)
READING = "per_component"   # the HVP reading the exercise teaches: each edge's own 1/2 d^T H d (named, not the default)


def _compare_lazily(ex, pts, got, want, mistakes, where, ok_text) -> CheckResult:
    """`result.compare`, the known mistakes computed (mistakes() -> [(value, hint)]) only for a wrong answer:
    they cost more forwards and backwards than the check itself."""
    return compare(ex, pts, got, want, [] if close(got, want) else mistakes(), where, ok_text)


# ---- exercise 1: the second-order terms ------------------------------------------------------
def _pair(out) -> tuple[float, float]:
    """(first, second_term) as two floats, or a one-line StudentProblem."""
    if isinstance(out, torch.Tensor) and out.numel() == 2:
        out = tuple(out.flatten())
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise StudentProblem(f"returned {type(out).__name__}; expected a pair (first, second_term) of two numbers")
    vals = []
    for name, x in zip(("first", "second_term"), out):
        if isinstance(x, torch.Tensor) and x.numel() != 1:
            raise StudentProblem(f"{name} is a tensor of shape {list(x.shape)}; expected one number: sum the "
                                 "elementwise product, e.g. (g * d).sum()")
        try:
            vals.append(as_number(x))
        except StudentProblem as p:
            raise StudentProblem(f"{name}: {p}") from None
    return vals[0], vals[1]


def _derivatives(f, x0: torch.Tensor, d: torch.Tensor, ones: bool = False):
    """(g.d, d^T H d, g.(H d), d.(H 1)) of f at x0 by double backward (the checker's own, for mistakes)."""
    x = x0.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    gd = (g * d).sum()
    if not g.requires_grad:          # f linear in x: no curvature
        return gd.item(), 0.0, 0.0, 0.0
    hd, h1 = (torch.zeros_like(x) if h is None else h for h in (
        torch.autograd.grad(gd, x, retain_graph=True, allow_unused=True)[0],
        torch.autograd.grad(g.sum(), x, allow_unused=True)[0]))
    return gd.item(), (d * hd).sum().item(), (g.detach() * hd).sum().item(), (d * h1).sum().item()


def _mistake_terms(f, x0, d) -> dict[str, tuple[float, float]]:
    """(first, second_term) of each known mistake on (f, x0, d)."""
    gd, dhd, ghd, dh1 = _derivatives(f, x0, d)
    pgd, pdhd, _, _ = _derivatives(f, x0 + d, d)
    return {"no_half": (gd, dhd), "ones": (gd, 0.5 * dh1), "grad": (gd, 0.5 * ghd), "patched": (pgd, 0.5 * pdhd),
            "first_sign": (-gd, 0.5 * dhd), "both_signs": (-gd, -0.5 * dhd), "first_only": (gd, 0.0)}


SECOND_ORDER_HINTS = {
    "no_half": "missing the 1/2: the Taylor term is f''(0)/2 = 1/2 d^T H d",
    "ones": "Hessian applied to a vector of ones: grad(g.sum(), x) is H 1; differentiate (g * d).sum() to get H d",
    "grad": "HVP contracted with the gradient: the second-order term is 1/2 d . (H d), dot H d with d, not with g",
    "patched": "expanded around the patched point x0 + d: take the gradient and the HVP at x0 (the unpatched run)",
    "first_sign": "sign of the first-order term flipped: it is +g . d, the slope towards x0 + d",
    "both_signs": "both signs flipped: the estimate is of f(x0 + d) - f(x0), not f(x0) - f(x0 + d)",
    "first_only": "the second-order term is zero: compute H d by differentiating g . d (create_graph=True on the first grad)",
}


def _quadratic_case(seed: int):
    """f(x) = c + b.x + 1/2 x^T A x on x of shape [2, 3, 4] (A not symmetric), with its closed-form terms."""
    gen = torch.Generator().manual_seed(seed)
    shape, n = (2, 3, 4), 24
    A = torch.randn(n, n, generator=gen, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    x0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    d = torch.randn(shape, generator=gen, dtype=torch.float64)
    f = lambda x: 0.7 + b @ x.flatten() + 0.5 * x.flatten() @ A @ x.flatten()
    H = 0.5 * (A + A.T)
    g = b + H @ x0.flatten()
    return f, x0, d, (float(g @ d.flatten()), float(0.5 * d.flatten() @ H @ d.flatten()))


def check_second_order_terms(fn, *, seed: int = CHECK_SEED, time_limit: float = DEFAULT_TIME_LIMIT,
                             verbose: bool = True):
    """fn(f, x0, d) -> (first, second_term) = (g . d, 1/2 d^T H d), g and H of f at x0."""
    ex, pts = "second_order_terms", 2.0

    def body():
        model, graph = random_model(seed)
        batch = random_batch(seed)
        got, want, labels, cases = [], [], [], []

        def grade(f, x0, d, what, truth, total=False):
            first, second = _pair(call_student(fn, f, x0.clone(), d.clone(), time_limit=time_limit))
            cases.append((f, x0, d, total))
            if total:
                got.append(first + second)
                want.append(truth)
                labels.append(f"{what}: first + second vs exact patching")
                return
            got.extend([first, second])
            want.extend(truth)
            labels.extend([f"{what}: first-order term", f"{what}: second-order term"])

        def mistakes():
            wrong = {k: [] for k in SECOND_ORDER_HINTS}
            for f, x0, d, total in cases:
                for k, (a, b) in _mistake_terms(f, x0, d).items():
                    wrong[k].extend([a + b] if total else [a, b])
            return [(torch.tensor(wrong[k]), hint) for k, hint in SECOND_ORDER_HINTS.items()]

        for s in (seed, seed + 1):
            f, x0, d, truth = _quadratic_case(s)
            grade(f, x0, d, f"a quadratic function (seed {s})", truth)
        lib = hvp_scores(model, graph, batch, edges=list(MODEL_EDGES), reading=READING)
        for i, e in enumerate(MODEL_EDGES):
            f, x0, d = edge_function(model, graph, batch, *e.split("->"))
            grade(f, x0, d, f"edge {e}", (lib.first_order[i].item(), lib.second_order_term[i].item()))
        hooks = frozen_hooks(model, batch.clean, [LN_FINAL_SCALE])
        quad = squared_logit_diff(batch)
        exact = Patcher(model, graph, batch, quad, extra_hooks=hooks).edge_effects(
            torch.tensor([graph.edge(e) for e in QUADRATIC_EDGES]))
        for i, e in enumerate(QUADRATIC_EDGES):
            f, x0, d = edge_function(model, graph, batch, *e.split("->"), metric=quad, hooks=hooks)
            grade(f, x0, d, f"edge {e} (squared logit difference, final LayerNorm frozen)", exact[i].item(),
                  total=True)
        return _compare_lazily(ex, pts, got, want, mistakes, lambda i: labels[i],
                       f"right on 2 quadratic functions, {len(MODEL_EDGES)} edges of a fresh model (= the library's "
                       f"HVP) and {len(QUADRATIC_EDGES)} edges where the quadratic metric makes it exact patching")
    return run_check(ex, pts, body, verbose)


# ---- exercise 2: the reliability score -------------------------------------------------------
def _vector(out, n: int) -> torch.Tensor:
    """A float64 tensor of shape [n]; NaN and inf allowed (rho = inf is a right answer)."""
    if not isinstance(out, torch.Tensor):
        raise StudentProblem(f"returned {type(out).__name__}; expected a torch.Tensor of shape [{n}] (one rho per component)")
    if tuple(out.shape) != (n,):
        raise StudentProblem(f"returned shape {list(out.shape)}; expected [{n}], one rho per component")
    if not out.is_floating_point():
        raise StudentProblem(f"returned dtype {out.dtype}; expected a floating-point tensor")
    return out.detach().to("cpu", torch.float64)


def _reliability_inputs(seed: int):
    """(first, second_term) [n]: a fresh model's edge terms, then the special cases 0/0, x/0 and 0/x."""
    model, graph = random_model(seed)
    sc = hvp_scores(model, graph, random_batch(seed), reading=READING)
    keep = (sc.first_order != 0) & (sc.second_order_term != 0)
    first = torch.cat([sc.first_order[keep], torch.tensor([0.0, 0.0, -0.3, 0.0], dtype=torch.float64)])
    second = torch.cat([sc.second_order_term[keep], torch.tensor([0.0, 0.2, 0.0, -0.1], dtype=torch.float64)])
    return first, second, [sc.names[i] for i in keep.nonzero().flatten().tolist()]


def check_reliability_score(fn, *, seed: int = CHECK_SEED, time_limit: float = DEFAULT_TIME_LIMIT,
                            verbose: bool = True):
    """fn(first, second_term) -> rho [n] = |second_term| / |first| (0 when both are 0, inf when only first is)."""
    ex, pts = "reliability_score", 1.0

    def body():
        first, second, names = _reliability_inputs(seed)
        n = first.numel()
        got = _vector(call_student(fn, first.clone(), second.clone(), time_limit=time_limit), n)
        want = reliability(first, second)
        reg = (first != 0) & (second != 0)
        if not torch.isfinite(got[reg]).all():
            return CheckResult(ex, False, 0.0, pts, "NaN or inf where both terms are nonzero: rho = |second_term| / "
                                                   "|first| is finite there")
        f, s = first[reg], second[reg]
        mistakes = [
            (2 * s.abs() / f.abs(), "twice too large: second_term already holds the 1/2 (it is 1/2 d^T H d), "
                                    "so rho = |second_term| / |first|"),
            (s.abs() / (2 * f.abs()), "half the value: the 1/2 of rho = |d^T H d| / (2 |g.d|) is already inside "
                                      "second_term; rho = |second_term| / |first|"),
            (s / f, "signed ratio: take absolute values; rho measures the size of the curvature term, not its direction"),
            (f.abs() / s.abs(), "inverted: rho is the second-order term relative to the first, |second_term| / |first|"),
        ]
        res = compare(ex, pts, got[reg], want[reg], mistakes, lambda i: f"component {names[i]}",
                      "")
        if not res.passed:
            return res
        both_zero = (first == 0) & (second == 0)
        if not (got[both_zero] == 0).all():
            return CheckResult(ex, False, 0.0, pts, f"both terms zero gives {got[both_zero][0].item()}; expected 0 "
                                                   "(nothing to distrust): handle 0/0 with torch.where")
        only_curv = (first == 0) & (second != 0)
        if not (got[only_curv] == float("inf")).all():
            return CheckResult(ex, False, 0.0, pts, f"first-order term 0 and second-order term nonzero gives "
                                                   f"{got[only_curv][0].item()}; expected inf (the first-order "
                                                   "estimate misses everything: flag it)")
        only_first = (first != 0) & (second == 0)
        if not (got[only_first] == 0).all():
            return CheckResult(ex, False, 0.0, pts, f"second-order term 0 gives {got[only_first][0].item()}; "
                                                   "expected 0 (no curvature: the first order is trusted)")
        return CheckResult(ex, True, pts, pts, f"equals the library's rho on {int(reg.sum())} edges of a fresh model "
                                               "and on the cases 0/0, x/0 and 0/x")
    return run_check(ex, pts, body, verbose)


# ---- exercise 3: one step of the adaptive path -----------------------------------------------
def _logits_at(model, tokens, x):
    return model.run_with_hooks(tokens, fwd_hooks=[(EMBED_HOOK, lambda t, hook: x.to(t.dtype))])


def _step_mistakes(model, tokens, gamma, target, eta) -> dict[str, torch.Tensor]:
    """The next point under each known mistake (the checker's own autograd)."""
    x = gamma.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        diff = _logits_at(model, tokens, x) - target
        (g,) = torch.autograd.grad(diff.pow(2).sum(), x, retain_graph=True)
        (g_last,) = torch.autograd.grad(diff[:, -1].pow(2).sum(), x)
    per_ex = lambda v: v.flatten(1).norm(dim=1)[:, None, None]
    return {
        "unnormalised": gamma - eta * g,
        "ascent": gamma + eta * g / per_ex(g),
        "batch_norm": gamma - eta * g / g.norm(),
        "position_norm": gamma - eta * g / g.norm(dim=-1, keepdim=True),
        "last_position": gamma - eta * g_last / per_ex(g_last),
    }


STEP_HINTS = {
    "unnormalised": "step not normalised: divide the gradient by its norm (per example) so that every step has length eta",
    "ascent": "stepped up the gradient: that moves away from the corrupted output; step against it (minus)",
    "batch_norm": "normalised over the whole batch: each example takes its own step of length eta; take the norm "
                  "over one example's [pos, d_model] gradient",
    "position_norm": "normalised per position: the step of one example is one vector over all its positions; "
                     "take the norm over [pos, d_model]",
    "last_position": "distance at the last position only: the objective sums the squared logit difference over all "
                     "positions and the whole vocabulary",
}


def check_gradpath_step(fn, *, seed: int = CHECK_SEED, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(model, tokens, gamma, target_logits, eta) -> gamma - eta * g / ||g|| per example [B, P, d],
    g = d/d gamma ||logits(gamma) - target_logits||^2 (all positions, whole vocabulary)."""
    ex, pts = "gradpath_step", 2.0

    def body():
        model, graph = random_model(seed)
        batch = random_batch(seed)
        ctx = PathContext(model, graph, batch, task_metric(batch), DEFAULT_DIRECTION)
        path = [g.detach() for g, _ in grad_path(model, ctx, 2, step="unit", step_size=PATH_ETA)]
        with torch.no_grad():
            target = model(batch.corrupt).detach()
        starts = [token_embeddings(model, batch.clean), path[0]]
        got = []
        for gamma in starts:
            out = call_student(fn, model, batch.clean.clone(), gamma.clone(), target.clone(), PATH_ETA,
                               time_limit=time_limit)
            got.append(as_matrix(out, tuple(gamma.shape), "[batch, pos, d_model]"))
        B, P, d = starts[0].shape

        def mistakes():
            per_start = [_step_mistakes(model, batch.clean, gamma, target, PATH_ETA) for gamma in starts]
            return [(torch.stack([m[k] for m in per_start]), hint) for k, hint in STEP_HINTS.items()]

        def where(i):
            s, r = divmod(i, B * P * d)
            return f"step {s + 1}, example {r // (P * d)}, position {(r // d) % P}, coordinate {r % d}"
        return _compare_lazily(ex, pts, torch.stack(got), torch.stack(path), mistakes, where,
                               f"equals two steps of the library's GradPath (unit step rule, eta = {PATH_ETA:g}) "
                               "on a fresh model")
    return run_check(ex, pts, body, verbose)
