"""EAP-GP: edge attribution patching with an adaptive gradient path (Zhang et al. 2025,
arXiv 2502.06852). A reconstruction: the paper's code is not released and its body could
not be read here (searched the stored docs/pages/code/issues corpora for "EAP-GP",
"GradPath", the arXiv number: nothing beyond the abstract). What is what:

* [abs] EAP-IG's straight path can run through saturated regions; GradPath starts from the
  input and follows, adaptively, the direction that makes the model's output approach the
  corrupted one; scores are EAP-style (activation difference x mean gradient on the path).
* [3p, PAPERS.md: two reimplementations agree] the path, in token-embedding space, one path
  per example shared by all edges (``path="shared"``; a path per upstream node is [open]
  and not implemented):

      gamma_0 = e_base (clean token embeddings; positional embeddings untouched)
      g_j = d/d gamma ||G(gamma_j) - G(x_source)||^2,   G = the model's logits
      gamma_{j+1} = gamma_j - step_size * g_j / ||g_j||      (step_size = 1: unit step)
      score(u->v) = mean over examples of (z_u(source) - z_u(base)) . mean_{j=1..k} d metric / d in_v (gamma_j)

  with k = ``steps`` points gamma_1..gamma_k (gamma_0 itself is not used).
* [open, our choices, parameters where cheap] G's squared distance is summed over **all
  positions** and the whole vocabulary (``objective_positions="all"``; ``"metric"`` uses
  only the position the metric reads); ||g|| is the Frobenius norm over one example's
  [pos, d_model] gradient, so every example takes a step of length ``step_size`` (an
  example whose gradient is exactly zero, e.g. clean == corrupt, stays where it is);
  ``step_size`` defaults to the unit step of the reading above. Activation differences
  are those of the real runs, as in EAP-IG.

Sign: scores estimate metric(patched) - metric(base), like every method here.
Cost per chunk: 2 forwards (activation differences) + 1 forward (G(x_source)) + 1
forward+backward (the step from gamma_0) + k forwards with two backwards each but the last
(metric gradient at gamma_j, then the path step from gamma_j on the same retained graph):
k + 4 forwards and 2k backwards (was 2k + 3 forwards before the steps shared the forward).
"""
from __future__ import annotations

import torch

from ..activations import EMBED_HOOK, check_finite
from ..graph import Graph
from ..metrics import Metric
from ..patching import DEFAULT_DIRECTION
from ..tasks.base import TaskBatch
from .common import PathContext, gradient_scores
from .eap_ig import token_embeddings

PATHS = ("shared",)
OBJECTIVE_POSITIONS = ("all", "metric")


def _logits_at(model, tokens: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Logits of the run on `tokens` whose token embeddings are `embeddings` (differentiable)."""
    return model.run_with_hooks(tokens, fwd_hooks=[(EMBED_HOOK, lambda t, hook: embeddings.to(t.dtype))])


def _distance(logits: torch.Tensor, target: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    """||G - G_target||^2 per example [B] (all positions, or only pos[b])."""
    d = logits - target
    if pos is not None:
        d = d[torch.arange(d.shape[0], device=d.device), pos.to(d.device)]
    return d.pow(2).flatten(1).sum(1)


class _PathStep:
    """One GradPath step: from the logits of the run at gamma_j (embeddings `x`, a leaf that
    requires grad), gamma_{j+1} = gamma_j - step_size * g / ||g||, g = d objective / d x."""

    def __init__(self, target_logits, pos, step_size: float, e_src, info):
        self.target, self.pos, self.step_size, self.e_src, self.info = target_logits, pos, step_size, e_src, info

    def __call__(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            obj = _distance(logits, self.target, self.pos)
            check_finite(obj.detach(), "gradpath objective")
            (g,) = torch.autograd.grad(obj.sum(), x)  # examples are independent: per-example gradients
        self.info["logit_distance"].append(obj.detach().sqrt())
        norm = g.flatten(1).norm(dim=1)
        scale = torch.where(norm > 0, self.step_size / norm.clamp_min(torch.finfo(norm.dtype).tiny),
                            torch.zeros_like(norm))
        gamma = (x.detach() - scale[:, None, None] * g).detach()
        self.info["embed_distance"].append((gamma - self.e_src).flatten(1).norm(dim=1))
        return gamma


def _start(model, ctx: PathContext, objective_positions: str, target_logits):
    pos = ctx.batch.pos if objective_positions == "metric" else None
    e_src = token_embeddings(model, ctx.src)
    gamma = token_embeddings(model, ctx.base)
    if target_logits is None:
        with torch.no_grad():
            target_logits = _logits_at(model, ctx.src, e_src)
    info = {"logit_distance": [], "embed_distance": [(gamma - e_src).flatten(1).norm(dim=1)]}
    return gamma, target_logits, pos, e_src, info


def _own_step(model, ctx: PathContext, gamma: torch.Tensor, step: _PathStep) -> torch.Tensor:
    """A path step with its own forward+backward (the step from gamma_0, which has no metric gradient)."""
    x = gamma.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = _logits_at(model, ctx.base, x)
    return step(x, logits)


def grad_path(model, ctx: PathContext, steps: int, *, step_size: float = 1.0,
              objective_positions: str = "all", target_logits: torch.Tensor | None = None):
    """Generator over gamma_1..gamma_k; records diagnostics in the dict it yields last-updated.

    Yields (gamma_j, info) with info = {"logit_distance": list of [B] (||G(gamma_i) - G(src)||
    for i = 0..j-1), "embed_distance": list of [B] (||gamma_i - e_src|| for i = 0..j)}.
    Every path step runs its own forward+backward here; `eap_gp_scores` shares them with the
    metric gradients instead (`_fused_points`), same points.
    """
    gamma, target_logits, pos, e_src, info = _start(model, ctx, objective_positions, target_logits)
    step = _PathStep(target_logits, pos, step_size, e_src, info)
    for _ in range(steps):
        gamma = _own_step(model, ctx, gamma, step)
        yield gamma, info


def _fused_points(model, ctx: PathContext, steps: int, step_size: float, objective_positions: str, infos: list):
    """grad_points for `gradient_scores`: gamma_1..gamma_k with weight 1/k each. The step from
    gamma_j (j >= 1) reuses the forward of gamma_j's metric gradient (`input_gradients`'
    ``on_logits``): k - 1 forwards fewer than stepping and scoring separately, same points."""
    gamma, target_logits, pos, e_src, info = _start(model, ctx, objective_positions, None)
    step = _PathStep(target_logits, pos, step_size, e_src, info)
    gamma = _own_step(model, ctx, gamma, step)                  # gamma_1
    for j in range(1, steps + 1):
        x = gamma.detach().requires_grad_(j < steps)
        nxt = {}
        kwargs = {"embed_override": x}
        if j < steps:
            kwargs["on_logits"] = lambda logits, x=x: nxt.setdefault("gamma", step(x, logits))
        yield 1.0 / steps, kwargs
        gamma = nxt.get("gamma")
    infos.append(info)


def eap_gp_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *, steps: int = 5,
                  direction: str = DEFAULT_DIRECTION, batch_size: int | None = None, path: str = "shared",
                  step_size: float = 1.0, objective_positions: str = "all", return_path: bool = False):
    """EAP-GP scores [n_up, n_down] float64 (zero off the edge mask); see the module docstring.

    With ``return_path=True`` returns (scores, info): info["embed_distance"] [B, k+1] is
    ||gamma_j - e_source|| (Frobenius over [pos, d_model]) for j = 0..k, and
    info["logit_distance"] [B, k] is ||G(gamma_j) - G(x_source)|| for j = 0..k-1 (the
    objective the path descends; positions per ``objective_positions``), examples in batch order.
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
    infos = []

    def grad_points(ctx: PathContext):
        return _fused_points(model, ctx, int(steps), step_size, objective_positions, infos)

    scores = gradient_scores(model, graph, batch, metric, direction=direction, batch_size=batch_size,
                             grad_points=grad_points)
    if not return_path:
        return scores
    out = {k: torch.cat([torch.stack(i[k], 1) for i in infos], 0) for k in ("embed_distance", "logit_distance")}
    return scores, out
