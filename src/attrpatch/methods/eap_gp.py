"""EAP-GP: edge attribution patching with an adaptive gradient path (Zhang et al. 2025,
arXiv 2502.06852). A reconstruction: the paper's code is not released and its body could
not be read here (searched the stored docs/pages/code/issues corpora for "EAP-GP",
"GradPath", the arXiv number: nothing beyond the abstract). What is what:

* [abs] EAP-IG's straight path can run through saturated regions; GradPath starts from the
  input and follows, adaptively, the direction that makes the model's output approach the
  corrupted one; scores are EAP-style (activation difference x mean gradient on the path).
* [3p, docs/SOURCES.md "EAP-GP": two reimplementations agree] the path, in token-embedding
  space, one path per example shared by all edges (``path="shared"``; a path per upstream
  node is [open] and not implemented):

      gamma_0 = e_base (clean token embeddings; positional embeddings untouched)
      g_j = d/d gamma ||G(gamma_j) - G(x_source)||^2,   G = the model's logits
      gamma_{j+1} = gamma_j - eta * g_j / ||g_j||
      score(u->v) = mean over examples of (z_u(source) - z_u(base)) . mean_{j=1..k} d metric / d in_v (gamma_j)

  with k = ``steps`` points gamma_1..gamma_k (gamma_0 itself is not used).
* The step length eta (``step``, the *step rule*):

  ``"unit"`` (default; the cited rule) eta = 1: every step has Euclidean length 1 in the
  input node's activation space, measured over one example's whole [pos, d_model] block
  (Frobenius norm; the gradient with respect to the token embeddings equals the gradient
  with respect to token + positional embeddings, so the space of the EAP-IG library's
  ``input`` node gives the same step). Read in Lexsi-Labs/CircuitKIT
  ``src/circuitkit/backends/eap/attribute_node.py`` ``get_scores_eap_gp`` (commit 3c467ff:
  ``grad.flatten(1).norm(dim=1)`` per example, "unit-norm steps ... Eq 8 of the paper") and
  Brokttv/EAP-GP ``src/eap/attribute.py`` ``get_scores_eap_gp`` (commit 2f5aea2:
  ``gamma - grad / grad.norm(p=2)``). They differ in one point: Brokttv normalises by the
  norm of the whole *batch's* gradient, so each example's step is shorter than 1 and depends
  on which examples share its batch; the two agree for one example per batch, the paper's
  per-input formulation. We take the per-example reading (our scores must not depend on
  ``batch_size``); the batch-wide one is not implemented. Both sum the objective over the
  whole vocabulary and over positions (Brokttv leaves out padded ones: ``objective_positions``).
  ``step_size`` multiplies eta (1 = the cited rule).

  ``"relative"`` (the project's own rule, not in any source): eta = step_size *
  ||e_base - e_source|| / k per example, so k steps cover the clean-corrupted distance
  whatever the embedding scale. Why it exists: on the tiny models, whose embeddings are
  small, a unit step overshoots and the path moves *away* from the corrupted input
  (``path_diagnostics``' ``frac_closer_at_end``). The experiments report it beside the
  cited rule as a named variant (``eapgp_gain``: ``gp_step_variants``).

  ``return_path=True`` returns the path diagnostics (distance to the corrupted input per
  point, output distance per step, length of each step).
* [open, our choices, parameters where cheap] ``objective_positions="all"`` (default;
  CircuitKIT's reading: G's squared distance summed over every position of the batch and the
  whole vocabulary); ``"through_metric"`` sums positions 0..pos[b] only, which on the
  right-padded batches of the EAP-IG paper's files (`tasks.eapig_files`) drops the padding
  as Brokttv's mask does (on unpadded batches whose metric reads the last token it equals
  ``"all"``); ``"metric"`` uses only the position the metric reads. An example whose
  gradient is exactly zero (e.g. clean == corrupt) stays where it is. Activation
  differences are those of the real runs, as in EAP-IG.

Gemma 2 (a post-attention norm, `post_norm`): an edge from a head is scored through its layer's
norm's Jacobian at each path point (``diff . J^T grad``, as EAP; `common.gradient_scores`).

Sign: scores estimate metric(patched) - metric(base), like every method here.
Cost per chunk: 2 forwards (activation differences) + 1 forward (G(x_source)) + 1
forward+backward (the step from gamma_0) + k forwards with two backwards each but the last
(metric gradient at gamma_j, then the path step from gamma_j on the same retained graph):
k + 4 forwards and 2k backwards (was 2k + 3 forwards before the steps shared the forward).
"""
from __future__ import annotations

import torch

from ..activations import EMBED_HOOK
from ..graph import Graph
from ..metrics import Metric, check_finite, resolve_metric
from ..patching import DEFAULT_DIRECTION
from ..tasks.base import TaskBatch
from .common import DEFAULT_STEPS, PathContext, gradient_scores
from .eap_ig import token_embeddings

PATHS = ("shared",)
OBJECTIVE_POSITIONS = ("all", "metric", "through_metric")
STEPS = ("unit", "relative")        # the cited rule first, then the project's
DEFAULT_STEP = "unit"          # the cited reimplementations' rule (module docstring)
# What a figure calls each step rule (legend labels, titles).
STEP_LABELS = {"relative": "relative step: 1/k of ||e_clean - e_corrupt||", "unit": "unit step"}


def _logits_at(model, tokens: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Logits of the run on `tokens` whose token embeddings are `embeddings` (differentiable)."""
    return model.run_with_hooks(tokens, fwd_hooks=[(EMBED_HOOK, lambda t, hook: embeddings.to(t.dtype))])


def _distance(logits: torch.Tensor, target: torch.Tensor, positions: str, pos: torch.Tensor) -> torch.Tensor:
    """||G - G_target||^2 per example [B] over `positions` (OBJECTIVE_POSITIONS): all of them,
    only pos[b], or 0..pos[b] (the real tokens of a right-padded batch)."""
    d = logits - target
    if positions == "metric":
        d = d[torch.arange(d.shape[0], device=d.device), pos.to(d.device)]
    elif positions == "through_metric":
        keep = torch.arange(d.shape[1], device=d.device)[None, :] <= pos.to(d.device)[:, None]
        d = d * keep[:, :, None].to(d.dtype)
    return d.pow(2).flatten(1).sum(1)


class _PathStep:
    """One GradPath step: from the logits of the run at gamma_j (embeddings `x`, a leaf that
    requires grad), gamma_{j+1} = gamma_j - eta * g / ||g||, g = d objective / d x, with a
    per-example step length eta [B]."""

    def __init__(self, target_logits, positions: tuple, eta: torch.Tensor, e_src, info):
        self.target, self.positions, self.eta, self.e_src, self.info = target_logits, positions, eta, e_src, info

    def __call__(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            obj = _distance(logits, self.target, *self.positions)
            check_finite(obj.detach(), "gradpath objective")
            (g,) = torch.autograd.grad(obj.sum(), x)  # examples are independent: per-example gradients
        self.info["logit_distance"].append(obj.detach().sqrt())
        norm = g.flatten(1).norm(dim=1)
        scale = torch.where(norm > 0, self.eta.to(norm) / norm.clamp_min(torch.finfo(norm.dtype).tiny),
                            torch.zeros_like(norm))
        gamma = (x.detach() - scale[:, None, None] * g).detach()
        self.info["step_length"].append((gamma - x.detach()).flatten(1).norm(dim=1))
        self.info["embed_distance"].append((gamma - self.e_src).flatten(1).norm(dim=1))
        return gamma


def step_lengths(distance: torch.Tensor, steps: int, step: str = DEFAULT_STEP, step_size: float = 1.0) -> torch.Tensor:
    """Per-example step length eta [B]: ``unit`` (the cited rule): step_size; ``relative``
    (the project's): step_size * ||e_base - e_src|| / steps."""
    if step not in STEPS:
        raise ValueError(f"unknown EAP-GP step {step!r}; allowed: {STEPS}")
    if step == "unit":
        return torch.full_like(distance, float(step_size))
    return float(step_size) * distance / int(steps)


def _start(model, ctx: PathContext, objective_positions: str, target_logits, steps: int, step: str, step_size: float):
    pos = (objective_positions, ctx.batch.pos)
    e_src = token_embeddings(model, ctx.src)
    gamma = token_embeddings(model, ctx.base)
    if target_logits is None:
        with torch.no_grad():
            target_logits = _logits_at(model, ctx.src, e_src)
    d0 = (gamma - e_src).flatten(1).norm(dim=1)
    info = {"logit_distance": [], "embed_distance": [d0], "step_length": []}
    return gamma, target_logits, pos, e_src, info, step_lengths(d0, steps, step, step_size)


def _own_step(model, ctx: PathContext, gamma: torch.Tensor, step: _PathStep) -> torch.Tensor:
    """A path step with its own forward+backward (the step from gamma_0, which has no metric gradient)."""
    x = gamma.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = _logits_at(model, ctx.base, x)
    return step(x, logits)


def grad_path(model, ctx: PathContext, steps: int, *, step: str = DEFAULT_STEP, step_size: float = 1.0,
              objective_positions: str = "all", target_logits: torch.Tensor | None = None):
    """Generator over gamma_1..gamma_k; records diagnostics in the dict it yields last-updated.

    Yields (gamma_j, info) with info = {"logit_distance": list of [B] (||G(gamma_i) - G(src)||
    for i = 0..j-1), "embed_distance": list of [B] (||gamma_i - e_src|| for i = 0..j),
    "step_length": list of [B] (||gamma_i - gamma_{i-1}|| for i = 1..j)}.
    Every path step runs its own forward+backward here; `eap_gp_scores` shares them with the
    metric gradients instead (`_fused_points`), same points.
    """
    gamma, target_logits, pos, e_src, info, eta = _start(model, ctx, objective_positions, target_logits, steps,
                                                         step, step_size)
    stepper = _PathStep(target_logits, pos, eta, e_src, info)
    for _ in range(steps):
        gamma = _own_step(model, ctx, gamma, stepper)
        yield gamma, info


def path_diagnostics(model, graph: Graph, batch: TaskBatch, steps: int = DEFAULT_STEPS, *, step: str = DEFAULT_STEP,
                     step_size: float = 1.0, objective_positions: str = "all", metric: str | Metric = "task",
                     direction: str = DEFAULT_DIRECTION) -> dict:
    """The GradPath alone (`grad_path`, no scores): per point the mean over examples of the
    distance to the corrupted input's embeddings (``embed_distance``, j = 0..k) and of the
    output distance ||G(gamma_j) - G(x_source)|| (``logit_distance``, j = 0..k-1) and of the
    step lengths (``step_length``, j = 1..k), plus the fraction of examples whose path ends
    closer to the corrupted input than it starts."""
    ctx = PathContext(model, graph, batch, resolve_metric(model, batch, metric), direction)
    info = None
    for _, info in grad_path(model, ctx, int(steps), step=step, step_size=step_size,
                             objective_positions=objective_positions):
        pass
    e = torch.stack(info["embed_distance"], 1).double()
    lg = torch.stack(info["logit_distance"], 1).double()
    sl = torch.stack(info["step_length"], 1).double()
    return {"step": step, "step_size": float(step_size), "steps": int(steps),
            "embed_distance": e.mean(0).tolist(), "logit_distance": lg.mean(0).tolist(),
            "step_length": sl.mean(0).tolist(),
            "frac_closer_at_end": float((e[:, -1] < e[:, 0]).double().mean())}


def _fused_points(model, ctx: PathContext, steps: int, step: str, step_size: float, objective_positions: str,
                  infos: list):
    """grad_points for `gradient_scores`: gamma_1..gamma_k with weight 1/k each. The step from
    gamma_j (j >= 1) reuses the forward of gamma_j's metric gradient (`input_gradients`'
    ``on_logits``): k - 1 forwards fewer than stepping and scoring separately, same points."""
    gamma, target_logits, pos, e_src, info, eta = _start(model, ctx, objective_positions, None, steps, step,
                                                         step_size)
    stepper = _PathStep(target_logits, pos, eta, e_src, info)
    gamma = _own_step(model, ctx, gamma, stepper)               # gamma_1
    for j in range(1, steps + 1):
        x = gamma.detach().requires_grad_(j < steps)
        nxt = {}
        kwargs = {"embed_override": x}
        if j < steps:
            kwargs["on_logits"] = lambda logits, x=x: nxt.setdefault("gamma", stepper(x, logits))
        yield 1.0 / steps, kwargs
        gamma = nxt.get("gamma")
    infos.append(info)


def eap_gp_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *, steps: int = DEFAULT_STEPS,
                  direction: str = DEFAULT_DIRECTION, batch_size: int | None = None, path: str = "shared",
                  step: str = DEFAULT_STEP, step_size: float = 1.0, objective_positions: str = "all",
                  return_path: bool = False):
    """EAP-GP scores [n_up, n_down] float64 (zero off the edge mask); see the module docstring.

    With ``return_path=True`` returns (scores, info): info["embed_distance"] [B, k+1] is
    ||gamma_j - e_source|| (Frobenius over [pos, d_model]) for j = 0..k, and
    info["logit_distance"] [B, k] is ||G(gamma_j) - G(x_source)|| for j = 0..k-1 (the
    objective the path descends; positions per ``objective_positions``), and
    info["step_length"] [B, k] is ||gamma_j - gamma_{j-1}|| for j = 1..k (1 under the unit
    rule, 0 for an example whose gradient vanished), examples in batch order.
    """
    if path not in PATHS:
        raise ValueError(f"unknown EAP-GP path {path!r}; allowed: {PATHS} (a path per upstream node is "
                         "an open reading of the paper and not implemented)")
    if objective_positions not in OBJECTIVE_POSITIONS:
        raise ValueError(f"unknown objective_positions {objective_positions!r}; allowed: {OBJECTIVE_POSITIONS}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    if step not in STEPS:
        raise ValueError(f"unknown EAP-GP step {step!r}; allowed: {STEPS}")
    infos = []

    def grad_points(ctx: PathContext):
        return _fused_points(model, ctx, int(steps), step, step_size, objective_positions, infos)

    scores = gradient_scores(model, graph, batch, metric, direction=direction, batch_size=batch_size,
                             grad_points=grad_points)
    if not return_path:
        return scores
    out = {k: torch.cat([torch.stack(i[k], 1) for i in infos], 0) for k in ("embed_distance", "logit_distance", "step_length")}
    return scores, out
