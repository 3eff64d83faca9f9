"""Second-order (Hessian-vector-product) correction of attribution patching.

Zhang & Wang, "When Attribution Patching Lies: Diagnosis and a Second-Order Correction",
arXiv 2606.09899.

What is confirmed (abstract, read through the search tool) vs. reconstructed
---------------------------------------------------------------------------
Confirmed from the abstract: the dominant error of attribution patching comes from
nonlinearity *downstream* of the patched component; the paper gives (i) a reliability
score that flags untrustworthy first-order estimates, (ii) error bounds, (iii) a
Hessian-vector-product correction that removes the leading-order error "with only one
additional backward pass"; a multi-step HVP variant matches or beats Integrated Gradients
at lower compute; a Screen-Flag-Fix workflow spends compute only on flagged components.
Reconstructed (the project's [3p] reading in docs/SOURCES.md; formulas below are ours, the body
of the paper was not available): the second-order estimate, the reliability ratio
``rho``, the Screen-Flag-Fix steps. [open]: the flag threshold (a parameter here, default
`DEFAULT_THRESHOLD`), the multi-step scheme, the error bounds (not implemented).

Formulas (one component c, patch direction delta_c, mean metric M over the batch)
---------------------------------------------------------------------------------
* edge u->v: ``delta = z_u(source) - z_u(base)`` added to ``in_v`` (patching.py semantics,
  everything downstream of v recomputed; behind Gemma 2's post-attention norm a head edge moves
  ``in_v`` by ``N(x + alpha delta) - N(x)`` instead, as exact patching does: `PostNormShift`); node u: the same delta added to u's output, so
  every reader sees it (`patching.node_effects`).
* ``f_c(alpha) = M(activation + alpha * delta_c)``; exact effect = f_c(1) - f_c(0).
* first order    ``f_c'(0)  = g . delta``             (= EAP for edges, AtP for nodes)
* second order   ``f_c''(0)/2 = 1/2 delta^T H delta``  (H: Hessian of M at the receiving
  activation: ``in_v`` for an edge, the node output for a node)
* corrected      ``first + second``; exact when M is quadratic in that activation.
* reliability    ``rho = |delta^T H delta| / (2 |g . delta|)`` (inf when g.delta = 0 and
  the curvature term is not; 0 when both vanish).
* per-component IG (`per_component_ig_scores`): the integral f_c(1) - f_c(0) = int_0^1
  f_c'(alpha) d alpha by a quadrature rule over m evaluations of f_c' along the component's
  OWN patch (`IG_RULES`: left k/m, midpoint (k + 1/2)/m, k = 0..m-1; trapezoid on
  linspace(0, 1, m), m >= 2). m evaluations = m gradient passes per component, so it is
  compared with the K-step HVP (2K passes) at m = 2K. Unlike EAP-IG (one path in the input
  embeddings shared by all edges), it converges to the exact effect of each component as m
  grows (midpoint/trapezoid: O(1/m^2), left: O(1/m)); that is the paper's "computationally
  prohibitive at scale" IG, the fair comparator of the multi-step HVP.
* multi-step [open reading]: K pieces ``[a_k, a_k + 1/K]``, ``a_k = k/K``; each piece adds
  the first- and second-order terms at its start (patch partially applied):
  ``sum_k f'(a_k)/K + f''(a_k)/(2 K^2)``. K = 1 is the one-step correction; the error
  falls as O(1/K^2) (a composite second-order Taylor rule), so K -> inf is exact.

Two readings of "one additional backward pass" (``reading``, `READINGS`)
------------------------------------------------------------------------
Both are reconstructions (the paper's body was not available); which one the paper means is
[open]. Write the selected components' shifts as alpha (component c moved by alpha_c delta_c,
``F(alpha)`` the mean metric, downstream recomputed) and ``d`` the total difference vector.

* ``"per_component"`` (default; what the hvp claims have checked from the start): component
  c's own ``1/2 delta_c^T H delta_c`` = ``f_c''(0)/2``, exact patching of c alone when the metric
  is quadratic. One HVP per component, batched below: it costs more than exact patching.
* ``"one_pass"`` (the cost the abstract states, "one additional backward pass"): ONE HVP along
  the total direction, ``H_alpha 1`` (`total_direction_derivatives`), whose entry c is
  ``delta_c . (H d)_c = sum_c' delta_c^T H delta_c'``, cross terms included; component c's
  estimate is ``g.delta_c + 1/2 delta_c . (H d)_c``. The sum over c is the second-order Taylor
  estimate of shifting ALL selected components together (exact on a quadratic); for one
  component it is c's own effect only when the cross terms vanish. On a quadratic, c's value is
  the mean of c's effect alone and c's effect added last (tests/test_hvp_one_pass.py). Cost: one
  forward, one backward with ``create_graph`` and one double backward of B rows, whatever the
  number of components. The direction is the components passed (default: all of the graph's
  edges or nodes), so the estimate of a component depends on which others are in it. The
  shifts are additive (``a_c + alpha_c delta_c`` with fixed deltas): for edges in series (a
  patched edge upstream of another's sender) shifting all of them is not Patcher's joint
  patch, which gives each patched receiver its sender's source value; the two agree on a cut
  (no selected component upstream of another's sender), e.g. the edges into `logits`.
* multi-step: per_component K pieces per component (K gradient + K HVP passes each, 2K passes
  per component); one_pass K pieces along the total path (2K passes in all for every
  component), which tends, as K grows, to the integral of component c's gradient along the
  joint straight path (an IG attribution of the joint patch), not to c's own exact effect.
* measured (experiments/hvp.py, tiny profile, 3 tasks, 144 analysed edges of 877, 32 prompts,
  2 shared cores at load ~12-14): one-step one_pass for ALL edges 2.0 s (6 passes), per_component
  for the 144 edges 38 s, exact patching of the 144 edges 5.2 s; against exact single-edge
  patching the one-pass terms are worse than first order (mean |err| 0.62 vs 0.44, 43 of 144
  edges improved, per_component 0.42 and 119): the cross terms of every other edge are not
  part of an edge's own effect. Numbers: results/<profile>/hvp.json ``summary.readings``.

How the per-component HVPs are batched
--------------------------------------
One HVP with all deltas at once would give ``sum_c sum_c' delta_c^T H delta_c'`` (cross
terms). Instead every component gets its own stacked copy of the base batch (copy-major,
as in `Patcher`), with its own scalar ``alpha_c`` (a leaf tensor) scaling its delta::

    F(alpha) = sum_c M(copy c with activation_c + alpha_c * delta_c)

Copies do not interact (every op of the model is per-row), so ``dF/dalpha_c = f_c'`` and
the Hessian of F in alpha is *diagonal*: ``d/dalpha (sum_c dF/dalpha_c) = [f_c''(alpha_c)]``.
One forward of C copies, one backward with ``create_graph=True`` and one double backward
therefore give all C first-order terms and all C directional second derivatives
``delta_c^T H_c delta_c`` - no explicit Hessian, no cross terms. (Each value is the HVP
``H_c delta_c`` contracted with its own direction, obtained by double backward through the
scalar alpha_c instead of materialising ``H_c delta_c``.)

Cost: per chunk of copies (``rows_per_forward`` rows), one forward + one backward with
``create_graph`` + one double backward: one HVP per component, batched (``cost["n_hvps"]``
components in ``cost["hvp_passes"]`` batched passes). The paper's "one additional backward
pass" is the cost for ONE component (or one aggregate direction); per-component terms for
C components cost C*B stacked rows of forward + 2 backward-like passes, i.e. more than
exact patching of the same components (C*B rows, forward only). Measured on CPU
(2 shared cores, best of 5): random 2-layer model, 4 heads, d=32, float64, B=4, P=6, 110
edges: hvp_scores(all edges) 0.58 s vs EAP 0.055 s (x10.5) vs exact edge patching 0.25 s
(x2.3); 8 heads, d=64, float32, B=8, P=16, 310 edges: 20.8 s vs EAP 0.05 s (x~400) vs
exact 4.2 s (x5). So the value is not speed over exact patching but (a) rho, which tells
which first-order scores to distrust, and (b) a second-order estimate where exact patching
of that component is not wanted/possible; Screen-Flag-Fix then spends exact forwards or
multi-step HVPs only on flagged components. Not done (possible speed-ups): copies for a
late receiver recompute the identical early layers; forward-mode (torch.func.jvp) HVPs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from ..activations import capture_outputs
from ..graph import Graph
from ..post_norm import PostNormShift
from ..metrics import Metric, check_finite, resolve_metric
from ..patching import DEFAULT_DIRECTION, Patcher, base_and_source
from ..tasks.base import TaskBatch
from ..stats import spearman

# Gemma 2 (`post_norm`): a head edge behind ln1_post moves in_v by N(x + alpha d) - N(x), not
# alpha d; the edge hooks of both readings patch exactly that (`PostNormShift`), so f' and f''
# are those of exact patching (the norm's Jacobian and its curvature through autograd).
COMPONENTS = ("edges", "nodes")
# Screen-Flag-Fix: "hvp" is the paper's fix (the second-order / multi-step HVP estimate on the
# flagged components); "exact" (exact patching of the flagged ones) is the named variant.
FIXES = ("hvp", "exact")
DEFAULT_FIX = "hvp"
IG_RULES = ("left", "midpoint", "trapezoid")
# Patched rows per forward of the HVP's exact comparators: its own default, not the Patcher's device
# table (`patching.DEFAULT_ROWS_PER_FORWARD`); kept at 1024 so results stay as they were.
HVP_ROWS_PER_FORWARD = 1024
DEFAULT_IG_RULE = "midpoint"
# Which second-order term a component gets (module docstring, "Two readings"): "per_component" (its
# own d_c^T H d_c, one HVP per component; what the hvp claims have checked from the start) or
# "one_pass" (d_c . (H d)_c from ONE HVP along the total direction d, cross terms included).
READINGS = ("per_component", "one_pass")
DEFAULT_READING = "per_component"
# Flag a component when the second-order term is more than half the first-order one.
# [open]: the paper's value was not available; tune per task.
DEFAULT_THRESHOLD = 0.5     # rho > 0.5: the second-order term is over half the first; every profile uses it



def multistep_terms(d1: torch.Tensor, d2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The K-step rule (the one implementation): from f' and f'' at the start points k/K
    (row k of ``d1``, ``d2`` [K, ...]), ``first = sum_k f'(k/K)/K`` and
    ``second = sum_k f''(k/K)/(2K^2)``; the estimate is first + second."""
    K = d1.shape[0]
    return (d1 / K).sum(0), (d2 / (2 * K * K)).sum(0)


def sff_flag(rho, threshold: float = DEFAULT_THRESHOLD):
    """Screen-Flag-Fix's flag (the one rule): rho > threshold (tensor or numpy array; rho =
    inf, a zero first-order term, is flagged). Flagged components take the fix, the rest
    keep their first-order estimate."""
    return rho > threshold


@dataclass
class HVPScores:
    """Per-component first/second-order estimates (all [k] float64, in `index` order)."""

    graph: Graph
    components: str                      # "edges" | "nodes"
    index: torch.Tensor                  # [k, 2] (u, v) for edges, [k] upstream ids for nodes
    names: list[str]
    first_order: torch.Tensor            # g . delta
    second_order_term: torch.Tensor      # 1/2 delta^T H delta
    corrected: torch.Tensor              # first + second
    rho: torch.Tensor                    # |delta^T H delta| / (2 |g . delta|)
    cost: dict = field(default_factory=dict)

    def matrix(self, which: str = "corrected") -> torch.Tensor:
        """[n_up, n_down] matrix of one field (edges only; zero elsewhere)."""
        if self.components != "edges":
            raise ValueError("matrix() is for edge scores")
        vals = getattr(self, which)
        m = torch.zeros(self.graph.n_up, self.graph.n_down, dtype=vals.dtype)
        m[self.index[:, 0], self.index[:, 1]] = vals
        return m

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "component": self.names,
            "first_order": self.first_order.numpy(),
            "second_order_term": self.second_order_term.numpy(),
            "corrected": self.corrected.numpy(),
            "rho": self.rho.numpy(),
        })


def check_reading(reading: str) -> str:
    if reading not in READINGS:
        raise ValueError(f"unknown HVP reading {reading!r}; allowed: {READINGS}")
    return reading


def reliability(first: torch.Tensor, second_term: torch.Tensor) -> torch.Tensor:
    """rho = |delta^T H delta| / (2 |g.delta|) = |second_term| / |first| (0/0 -> 0, x/0 -> inf)."""
    num, den = second_term.abs(), first.abs()
    rho = num / den
    return torch.where((num == 0) & (den == 0), torch.zeros_like(rho), rho)


# ----------------------------------------------------------------------------------------
# selection helpers
# ----------------------------------------------------------------------------------------
def _select(graph: Graph, components: str, edges=None, nodes=None) -> tuple[torch.Tensor, list[str]]:
    if components not in COMPONENTS:
        raise ValueError(f"unknown components {components!r}; allowed: {COMPONENTS}")
    if components == "edges":
        if edges is None:
            idx = graph.edge_index.clone()
        else:
            rows = [graph.edge(e) if isinstance(e, str) else tuple(int(x) for x in e) for e in edges]
            idx = torch.tensor(rows, dtype=torch.long).reshape(-1, 2)
            bad = ~graph.edge_mask[idx[:, 0], idx[:, 1]]
            if bool(bad.any()):
                u, v = idx[bad][0].tolist()
                raise ValueError(f"({u}, {v}) is not an edge of the graph")
        names = [f"{graph.upstream[u]}->{graph.downstream[v]}" for u, v in idx.tolist()]
        return idx, names
    sel = nodes if nodes is not None else edges
    if sel is None:
        idx = torch.arange(graph.n_up)
    else:
        idx = torch.tensor([graph.up_index(n) if isinstance(n, str) else int(n) for n in sel], dtype=torch.long)
    return idx, [graph.upstream[u] for u in idx.tolist()]


def _edge_hooks(graph: Graph, part: torch.Tensor, alpha: torch.Tensor, diff: torch.Tensor, B: int,
                shift: PostNormShift | None = None):
    """in_v (copy c) += alpha_c * diff_{u_c} for edge (u_c, v_c) of copy c; behind a
    post-attention norm (`shift`), an edge from a head of layer l moves in_v by
    ``N_l(x_l + alpha_c diff_u) - N_l(x_l)`` instead (exact patching's edge, `post_norm`)."""
    n = part.shape[0]
    hooks = [] if shift is None else shift.hooks()
    layer_of = torch.full((graph.n_up,), -1, dtype=torch.long)
    if shift is not None:
        for l, h in enumerate(graph.heads_by_layer):
            layer_of[h.start: h.stop] = l
    for ih in graph.input_hooks:
        n_recv = ih.count
        sel = ((part[:, 1] >= ih.start) & (part[:, 1] < ih.start + n_recv)).nonzero().flatten()
        if sel.numel() == 0:
            continue

        def fn(t, hook, ih=ih, sel=sel, n_recv=n_recv):
            P, d = t.shape[1], t.shape[-1]
            us, rs = part[sel, 0].to(t.device), (part[sel, 1] - ih.start).to(t.device)
            contrib = alpha[sel].to(t.dtype).view(-1, 1, 1, 1) * diff[:, :, us].permute(2, 0, 1, 3).to(t.dtype)
            if shift is not None:   # edges from heads: through their layer's norm, at this copy's rows
                lay = layer_of[part[sel, 0].cpu()]
                for l in lay[lay >= 0].unique().tolist():
                    j = (lay == l).nonzero().flatten().to(t.device)
                    rows = (sel.to(t.device)[j, None] * B + torch.arange(B, device=t.device)).flatten()
                    moved = shift.shift(l, rows, contrib[j].reshape(-1, P, d)).reshape(len(j), B, P, d)
                    contrib = contrib.index_put((j,), moved.to(contrib.dtype))
            add = t.new_zeros(n, n_recv, B, P, d)
            add[sel.to(t.device), rs] = contrib                       # [k, B, P, d]
            add = add.permute(0, 2, 3, 1, 4).reshape(n * B, P, n_recv, d)
            return t + (add if ih.per_head else add[:, :, 0])
        hooks.append((ih.name, fn))
    return hooks


def _node_hooks(graph: Graph, part: torch.Tensor, alpha: torch.Tensor, diff: torch.Tensor, B: int):
    """z_u (copy c) += alpha_c * diff_u for node u_c of copy c (every reader sees it)."""
    n = part.shape[0]
    hooks = []
    for oh in graph.output_hooks:
        sel = ((part >= oh.start) & (part < oh.start + oh.count)).nonzero().flatten()
        if sel.numel() == 0:
            continue

        def fn(t, hook, oh=oh, sel=sel):
            P, d = t.shape[1], t.shape[-1]
            us = part[sel].to(t.device)
            contrib = alpha[sel].to(t.dtype).view(-1, 1, 1, 1) * diff[:, :, us].permute(2, 0, 1, 3).to(t.dtype)
            add = t.new_zeros(n, oh.count, B, P, d)
            add[sel.to(t.device), us - oh.start] = contrib
            add = add.permute(0, 2, 3, 1, 4).reshape(n * B, P, oh.count, d)
            return t + (add if oh.kind == "heads" else add[:, :, 0])
        hooks.append((oh.name, fn))
    return hooks


def _total_hooks(graph: Graph, index: torch.Tensor, alpha: torch.Tensor, diff: torch.Tensor, components: str,
                 shift: PostNormShift | None = None):
    """One copy of the batch with every selected component shifted at once (one-pass reading):
    edges: ``in_v += sum_u A[u, v] diff_u`` with ``A[u_c, v_c] = alpha_c``; nodes: ``z_u +=
    a_u diff_u`` with ``a[u_c] = alpha_c`` (alpha a leaf: d/d alpha_c is component c's term).
    Behind a post-attention norm (`shift`), the heads of each layer l among v's parents move
    in_v by ``N_l(x_l + sum_h A[h, v] diff_h) - N_l(x_l)`` instead (x_l: this run's norm input),
    as exact patching moves it."""
    hooks = []
    if components == "edges":
        A = alpha.new_zeros(graph.n_up, graph.n_down).index_put((index[:, 0], index[:, 1]), alpha)
        picked = torch.zeros(graph.n_up, graph.n_down, dtype=torch.bool)
        picked[index[:, 0], index[:, 1]] = True
        if shift is not None:
            hooks += shift.hooks()
            heads = torch.zeros(graph.n_up, dtype=torch.bool)
            for h in graph.heads_by_layer:
                heads[h.start: h.stop] = True
        for ih in graph.input_hooks:
            if not bool(picked[: ih.n_parents, ih.start: ih.start + ih.count].any()):
                continue

            def fn(t, hook, ih=ih):
                a = A[: ih.n_parents, ih.start: ih.start + ih.count].to(t.device, t.dtype)
                dif = diff[:, :, : ih.n_parents].to(t.device, t.dtype)
                if shift is None:
                    add = torch.einsum("bpud,ur->bprd", dif, a)
                    return t + (add if ih.per_head else add[:, :, 0])
                keep = (~heads[: ih.n_parents]).to(t.device, t.dtype)[:, None]
                add = torch.einsum("bpud,ur->bprd", dif, a * keep)
                B, P, d = dif.shape[0], dif.shape[1], dif.shape[-1]
                for l, h in enumerate(graph.heads_by_layer):
                    if h.stop > ih.n_parents:
                        break
                    D = torch.einsum("bpud,ur->rbpd", dif[:, :, h.start: h.stop], a[h.start: h.stop])
                    n_recv = D.shape[0]
                    rows = torch.arange(B, device=t.device).repeat(n_recv)
                    moved = shift.shift(l, rows, D.reshape(n_recv * B, P, d)).reshape(n_recv, B, P, d)
                    add = add + moved.permute(1, 2, 0, 3).to(add.dtype)
                return t + (add if ih.per_head else add[:, :, 0])
            hooks.append((ih.name, fn))
        return hooks
    a_all = alpha.new_zeros(graph.n_up).index_put((index,), alpha)
    picked = torch.zeros(graph.n_up, dtype=torch.bool)
    picked[index] = True
    for oh in graph.output_hooks:
        if not bool(picked[oh.start: oh.start + oh.count].any()):
            continue

        def fn(t, hook, oh=oh):
            a = a_all[oh.start: oh.start + oh.count].to(t.device, t.dtype).view(1, 1, -1, 1)
            add = diff[:, :, oh.start: oh.start + oh.count].to(t.device, t.dtype) * a
            return t + (add if oh.kind == "heads" else add[:, :, 0])
        hooks.append((oh.name, fn))
    return hooks


def total_direction_derivatives(model, graph: Graph, base_tokens: torch.Tensor, diff: torch.Tensor, metric: Metric,
                                index: torch.Tensor, t: float = 0.0, *, components: str = "edges", extra_hooks=(),
                                second: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One-pass reading: ``(g_c, (H d)_c . d_c, 1)`` for every selected component c, at the point
    where ALL selected components are shifted by ``t`` times their difference together.

    F(alpha) = mean metric with component c shifted by alpha_c diff_c (all in one copy of the
    batch); g = dF/dalpha at alpha = t 1, and one Hessian-vector product along the total
    direction 1 (every selected component's difference at once), ``H_alpha 1``, whose entry c
    is ``d_c^T H (sum_c' d_c') = d_c . (H d)_c``: cross terms included. One forward, one
    backward with ``create_graph`` and one double backward of B rows, whatever the number of
    components. ``second=False``: the gradient alone (second derivative returned as zeros).
    """
    alpha = torch.full((index.shape[0],), float(t), dtype=diff.dtype, device=diff.device, requires_grad=True)
    shift = PostNormShift(model, graph) if graph.post_attn_norm and components == "edges" else None
    hooks = _total_hooks(graph, index, alpha, diff, components, shift) + list(extra_hooks)
    with torch.enable_grad():
        logits = model.run_with_hooks(base_tokens, fwd_hooks=hooks)
        vals = metric(logits)
        check_finite(vals.detach(), metric)
        (g,) = torch.autograd.grad(vals.mean(), alpha, create_graph=second)
        if second and g.requires_grad:
            (h,) = torch.autograd.grad(g.sum(), alpha, allow_unused=True)   # H_alpha 1: one HVP
            h = torch.zeros_like(alpha) if h is None else h
        else:  # metric linear in every alpha: no curvature
            h = torch.zeros_like(alpha)
    return g.detach().double().cpu(), h.detach().double().cpu(), 1


def directional_derivatives(model, graph: Graph, base_tokens: torch.Tensor, diff: torch.Tensor, metric: Metric,
                            index: torch.Tensor, alphas: torch.Tensor, *, components: str = "edges",
                            rows_per_forward: int = HVP_ROWS_PER_FORWARD, extra_hooks=(),
                            second: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(f_c'(alpha_c), f_c''(alpha_c), number of batched passes) for every component c.

    ``f_c(a)`` = mean metric with component c's delta (``diff`` [B,P,n_up,d]) scaled by a.
    Copies stacked along the batch axis; a diagonal Hessian in alpha (see module doc).
    ``second=False`` skips the double backward (f'' returned as zeros): the first
    derivatives alone, as per-component IG needs.
    """
    B = base_tokens.shape[0]
    chunk = max(1, rows_per_forward // B)
    d1, d2, passes = [], [], 0
    for s in range(0, index.shape[0], chunk):
        part = index[s: s + chunk]
        n = part.shape[0]
        alpha = alphas[s: s + chunk].to(diff.dtype).clone().requires_grad_(True)
        if components == "edges":   # a post-attention norm: head edges through it (`_edge_hooks`)
            shift = PostNormShift(model, graph) if graph.post_attn_norm else None
            hooks = _edge_hooks(graph, part, alpha, diff, B, shift) + list(extra_hooks)
        else:                       # a node's output moves before any norm: additive as it is
            hooks = _node_hooks(graph, part, alpha, diff, B) + list(extra_hooks)
        with torch.enable_grad():
            logits = model.run_with_hooks(base_tokens.repeat(n, 1), fwd_hooks=hooks)
            vals = metric(logits)
            check_finite(vals.detach(), metric)
            F = vals.reshape(n, B).mean(1).sum()
            (g,) = torch.autograd.grad(F, alpha, create_graph=second)
            if second and g.requires_grad:
                (h,) = torch.autograd.grad(g.sum(), alpha, allow_unused=True)
                h = torch.zeros_like(alpha) if h is None else h
            else:  # metric linear in every alpha: no curvature
                h = torch.zeros_like(alpha)
        passes += 1
        d1.append(g.detach().double().cpu())
        d2.append(h.detach().double().cpu())
    return torch.cat(d1), torch.cat(d2), passes


def _setup(model, graph, batch, metric, direction, extra_hooks):
    m = resolve_metric(model, batch, metric)
    base, src = base_and_source(batch, direction)
    _, base_out = capture_outputs(model, graph, base, extra_hooks=extra_hooks)
    _, src_out = capture_outputs(model, graph, src, extra_hooks=extra_hooks)
    return m, base, src_out - base_out


def hvp_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
               components: str = "edges", edges=None, nodes=None, direction: str = DEFAULT_DIRECTION,
               rows_per_forward: int = HVP_ROWS_PER_FORWARD, extra_hooks=(),
               reading: str = DEFAULT_READING) -> HVPScores:
    """First-order, second-order term, corrected estimate and rho for each component.

    `edges`: None (all), or [(u, v)] / names; for ``components="nodes"`` pass `nodes`
    (upstream indices or names; `edges` is accepted as an alias). `reading` (`READINGS`):
    "per_component" costs 2 forwards (activation differences) + per chunk of
    ``rows_per_forward // B`` components one forward, one backward and one double backward
    (``cost["hvp_passes"]``); "one_pass" takes the total direction over the SELECTED
    components (default all: the whole graph) and costs 2 forwards + one forward, backward and
    double backward of B rows (``hvp_passes`` = ``n_hvps`` = 1).
    """
    check_reading(reading)
    m, base, diff = _setup(model, graph, batch, metric, direction, extra_hooks)
    idx, names = _select(graph, components, edges, nodes)
    if reading == "one_pass":
        d1, d2, passes = total_direction_derivatives(model, graph, base, diff, m, idx, 0.0, components=components,
                                                     extra_hooks=extra_hooks)
        n_hvps = 1
    else:
        d1, d2, passes = directional_derivatives(model, graph, base, diff, m, idx, torch.zeros(idx.shape[0]),
                                                 components=components, rows_per_forward=rows_per_forward,
                                                 extra_hooks=extra_hooks)
        n_hvps = int(idx.shape[0])
    second = 0.5 * d2
    cost = {"forwards": 2, "hvp_passes": passes, "n_hvps": n_hvps, "reading": reading}
    return HVPScores(graph, components, idx, names, d1, second, d1 + second, reliability(d1, second), cost)


def hvp_multistep_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *, steps: int = 4,
                         components: str = "edges", edges=None, nodes=None, direction: str = DEFAULT_DIRECTION,
                         rows_per_forward: int = HVP_ROWS_PER_FORWARD, extra_hooks=(),
                         reading: str = DEFAULT_READING) -> HVPScores:
    """Multi-step HVP [open reading]: ``sum_k f'(k/K)/K + f''(k/K)/(2K^2)``, K = `steps`.

    per_component: each piece's terms are taken with the component's own patch partially
    applied (activation + a_k delta); all K start points of all components are stacked in one
    batched sweep (K HVPs per component: 2K passes per component). one_pass: at a_k ALL
    selected components are shifted together and f', f'' are the one-pass terms there (K
    gradient + K HVP passes in all: 2K passes for every component at once); as K grows it
    tends to the integral of component c's gradient along the total straight path (an IG
    attribution of the joint patch), not to c's own exact effect. Returned `first_order` /
    `second_order_term` are the summed pieces (`corrected` their sum); `rho` is the one-step
    ratio at alpha = 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    check_reading(reading)
    m, base, diff = _setup(model, graph, batch, metric, direction, extra_hooks)
    idx, names = _select(graph, components, edges, nodes)
    k = idx.shape[0]
    K = int(steps)
    starts = torch.arange(K, dtype=torch.float64) / K
    if reading == "one_pass":
        per = [total_direction_derivatives(model, graph, base, diff, m, idx, float(a), components=components,
                                           extra_hooks=extra_hooks) for a in starts.tolist()]
        d1, d2 = torch.stack([p[0] for p in per]), torch.stack([p[1] for p in per])
        first, second = multistep_terms(d1, d2)
        cost = {"forwards": 2, "hvp_passes": K, "n_hvps": K, "steps": K, "reading": reading}
        return HVPScores(graph, components, idx, names, first, second, first + second,
                         reliability(d1[0], 0.5 * d2[0]), cost)
    rep = idx.repeat(K, *([1] * (idx.ndim - 1)))              # step-major: rows s*k + c
    alphas = starts.repeat_interleave(k)
    d1, d2, passes = directional_derivatives(model, graph, base, diff, m, rep, alphas, components=components,
                                             rows_per_forward=rows_per_forward, extra_hooks=extra_hooks)
    d1, d2 = d1.reshape(K, k), d2.reshape(K, k)
    first, second = multistep_terms(d1, d2)
    rho = reliability(d1[0], 0.5 * d2[0])
    cost = {"forwards": 2, "hvp_passes": passes, "n_hvps": int(K * k), "steps": K, "reading": reading}
    return HVPScores(graph, components, idx, names, first, second, first + second, rho, cost)


def ig_points(steps: int, rule: str = DEFAULT_IG_RULE) -> tuple[torch.Tensor, torch.Tensor]:
    """(alphas, weights) [m] float64 of one quadrature rule for int_0^1 f'(alpha) d alpha with m
    evaluations: left k/m, midpoint (k + 1/2)/m (weights 1/m), trapezoid linspace(0, 1, m)
    (weights 1/(m-1), halved at the ends; m >= 2)."""
    m = int(steps)
    if rule not in IG_RULES:
        raise ValueError(f"unknown IG rule {rule!r}; allowed: {IG_RULES}")
    if m < (2 if rule == "trapezoid" else 1):
        raise ValueError(f"{rule} IG needs steps >= {2 if rule == 'trapezoid' else 1}, got {steps}")
    k = torch.arange(m, dtype=torch.float64)
    if rule == "left":
        return k / m, torch.full((m,), 1.0 / m, dtype=torch.float64)
    if rule == "midpoint":
        return (k + 0.5) / m, torch.full((m,), 1.0 / m, dtype=torch.float64)
    w = torch.full((m,), 1.0 / (m - 1), dtype=torch.float64)
    w[0] = w[-1] = 0.5 / (m - 1)
    return k / (m - 1), w


def per_component_ig_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                            steps: int = 8, rule: str = DEFAULT_IG_RULE, components: str = "edges", edges=None,
                            nodes=None, direction: str = DEFAULT_DIRECTION, rows_per_forward: int = HVP_ROWS_PER_FORWARD,
                            extra_hooks=()) -> HVPScores:
    """Per-component IG (module docstring): ``sum_j w_j f_c'(alpha_j)`` over `ig_points`.

    Same directional-derivative machinery as the HVP (first derivatives only), all points of
    all components in one batched sweep. Returned in an HVPScores: ``first_order`` and
    ``corrected`` hold the IG estimate, ``second_order_term`` zeros, ``rho`` NaN; cost:
    ``gradient_passes`` = `steps` per component.
    """
    alphas, weights = ig_points(steps, rule)
    m, base, diff = _setup(model, graph, batch, metric, direction, extra_hooks)
    idx, names = _select(graph, components, edges, nodes)
    k, M = idx.shape[0], alphas.numel()
    rep = idx.repeat(M, *([1] * (idx.ndim - 1)))              # point-major: rows j*k + c
    d1, _, passes = directional_derivatives(model, graph, base, diff, m, rep, alphas.repeat_interleave(k),
                                            components=components, rows_per_forward=rows_per_forward,
                                            extra_hooks=extra_hooks, second=False)
    est = (d1.reshape(M, k) * weights[:, None]).sum(0)
    cost = {"forwards": 2, "batched_passes": passes, "gradient_passes": M, "steps": M, "rule": rule}
    zeros = torch.zeros_like(est)
    return HVPScores(graph, components, idx, names, est, zeros, est, torch.full_like(est, float("nan")), cost)


def screen_flag_fix(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                    threshold: float = DEFAULT_THRESHOLD, fix: str = DEFAULT_FIX, components: str = "edges",
                    steps: int = 1, compare_exact: bool = True, direction: str = DEFAULT_DIRECTION,
                    rows_per_forward: int = HVP_ROWS_PER_FORWARD, extra_hooks=(),
                    reading: str = DEFAULT_READING) -> pd.DataFrame:
    """Screen (first order for all), Flag (rho > threshold), Fix the flagged ones.

    fix="hvp" (default, the paper's fix): flagged components get the second-order estimate
    of `reading` (``steps`` > 1: the multi-step HVP; per_component runs it on just the flagged
    ones, one_pass along the total direction of all components, then keeps the flagged ones). fix="exact" (the named variant):
    flagged components get their exact patching effect (`Patcher.edge_effects` on just those
    edges / `node_effects_by_edges` for nodes), so its error on them is zero by construction.
    Unflagged components keep the first-order estimate.

    Returns one row per component: component, first_order, second_order_term, corrected,
    rho, flagged, estimate (the final value), and with ``compare_exact`` the exact effect
    and errors. ``df.attrs["cost"]``: HVP passes/count, exact forwards and patched
    components; ``df.attrs["summary"]``: mean |error| of first order / final estimate vs
    full exact patching, fraction flagged (the full exact sweep is not counted as cost).
    """
    if fix not in FIXES:
        raise ValueError(f"unknown fix {fix!r}; allowed: {FIXES}")
    check_reading(reading)
    m = resolve_metric(model, batch, metric)
    sc = hvp_scores(model, graph, batch, m, components=components, direction=direction,
                    rows_per_forward=rows_per_forward, extra_hooks=extra_hooks, reading=reading)
    flagged = sff_flag(sc.rho, threshold)
    est = sc.first_order.clone()
    cost = {"hvp_passes": sc.cost["hvp_passes"], "n_hvps": sc.cost["n_hvps"], "forwards": sc.cost["forwards"],
            "n_flagged": int(flagged.sum()), "n_components": int(flagged.numel()),
            "exact_forwards": 0, "exact_patched": 0}
    fl = flagged.nonzero().flatten()
    patcher = None
    if fix == "exact" and fl.numel():
        patcher = Patcher(model, graph, batch, m, direction=direction, rows_per_forward=rows_per_forward,
                          extra_hooks=extra_hooks)
        n0 = patcher.forward_passes
        if components == "edges":
            vals = patcher.edge_effects(sc.index[fl])
        else:
            vals = patcher.node_effects_by_edges(sc.index[fl].tolist())
        est[fl] = vals.double().cpu()
        cost["exact_forwards"] = patcher.forward_passes - n0 + 2   # + the two cached runs
        cost["exact_patched"] = int(fl.numel())
    elif fix == "hvp" and fl.numel():
        if steps > 1 and reading == "one_pass":   # the direction is all components' total patch
            ms = hvp_multistep_scores(model, graph, batch, m, steps=steps, components=components,
                                      direction=direction, extra_hooks=extra_hooks, reading=reading)
            est[fl] = ms.corrected[fl]
            cost["hvp_passes"] += ms.cost["hvp_passes"]
            cost["n_hvps"] += ms.cost["n_hvps"]
        elif steps > 1:
            sel = sc.index[fl]
            ms = hvp_multistep_scores(model, graph, batch, m, steps=steps, components=components,
                                      edges=sel.tolist() if components == "edges" else None,
                                      nodes=sel.tolist() if components == "nodes" else None,
                                      direction=direction, rows_per_forward=rows_per_forward,
                                      extra_hooks=extra_hooks)
            est[fl] = ms.corrected
            cost["hvp_passes"] += ms.cost["hvp_passes"]
            cost["n_hvps"] += ms.cost["n_hvps"]
        else:
            est[fl] = sc.corrected[fl]
    df = sc.to_frame()
    df["flagged"] = flagged.numpy()
    df["estimate"] = est.numpy()
    summary = {"fraction_flagged": float(flagged.float().mean()) if flagged.numel() else 0.0,
               "threshold": threshold, "fix": fix, "reading": reading}
    if compare_exact:
        full = Patcher(model, graph, batch, m, direction=direction, rows_per_forward=rows_per_forward,
                       extra_hooks=extra_hooks)
        if components == "edges":
            exact = full.edge_effects(sc.index)
        else:
            exact = full.node_effects_by_edges(sc.index.tolist())
        exact = exact.double().cpu()
        df["exact"] = exact.numpy()
        df["error_first_order"] = (sc.first_order - exact).abs().numpy()
        df["error_estimate"] = (est - exact).abs().numpy()
        summary.update({
            "mean_abs_error_first_order": float(df["error_first_order"].mean()),
            "mean_abs_error_estimate": float(df["error_estimate"].mean()),
            "mean_abs_error_corrected_all": float((sc.corrected - exact).abs().mean()),
            "full_exact_forwards": full.forward_passes,
            "spearman_estimate_vs_exact": spearman(est, exact),
        })
    df.attrs["cost"] = cost
    df.attrs["summary"] = summary
    return df


__all__ = ["multistep_terms", "sff_flag", "HVPScores", "hvp_scores", "hvp_multistep_scores", "screen_flag_fix",
           "reliability", "directional_derivatives", "total_direction_derivatives", "check_reading", "READINGS",
           "DEFAULT_READING", "per_component_ig_scores", "ig_points", "DEFAULT_THRESHOLD",
           "DEFAULT_FIX", "IG_RULES", "DEFAULT_IG_RULE"]
