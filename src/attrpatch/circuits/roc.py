"""Computations behind the EAP paper's Fig. 2 (ROC), Fig. 4 (R^2, interpolation) and Fig. 5
(EAP -> ACDC), shared by ``experiments/eap_roc.py``, ``eap_r2.py`` and ``eap_acdc.py``.

ROC bookkeeping reuses `attrpatch.circuits` (`roc_points`, `roc_from_circuits`,
`auc_trapezoid`, `auc_pessimistic`, `top_n`); this module only packages them:

* `tau_grid`: ACDC thresholds ``10**x``, x evenly spaced in [low_exp, high_exp];
* `score_roc` / `circuit_roc`: a ROC curve (score ranking, or one point per circuit) with
  both AUCs always (``auc_trapezoid``; ``auc_pessimistic``, ACDC's staircase over the
  Pareto-optimal points) and ``auc`` under the named rule (`AUC_RULES`, default
  `DEFAULT_AUC_RULE`, the papers' convention: see below);
  Both take ``edges``/``direct_scores``: the graph's edges ("plain") or ACDC's graph with its
  q/k/v direct edges ("acdc", `attrpatch.qkv_direct`, the EAP paper's count);
* `mask_rates`: TPR/FPR/size of circuits against a reference, no padding;
* `keep_threshold`: the |EAP| threshold that keeps the top fraction of edges;
* `linear_fit`: least-squares line, R^2 (`scipy.stats.linregress`); `r2_pair`: which two
  quantities a Fig. 4 fit pairs (`R2_PAIRINGS`, default `DEFAULT_R2_PAIRING`), with axis labels;
* `interpolation_curve` and `concavity`: the metric along one edge's patch
  ``in_v = clean + alpha (z_u(corrupt) - z_u(clean))`` and its shape vs. the EAP tangent;
* `best_tpr_minus_fpr`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..circuits import (auc_pessimistic, auc_trapezoid, roc_from_circuits, roc_from_flat_circuits, roc_points,
                        roc_points_flat, top_n)
from ..graph import Graph
from ..qkv_direct import direct_in_circuit, flat_circuit, flat_scores

# Which area rule the EAP paper's Fig. 2 AUCs use (read in the authors' code):
# * ACDC (both metrics): ACDC's evaluation (ArthurConmy/Automatic-Circuit-Discovery,
#   notebooks/plotly_roc_plot.py, `pessimistic_auc` in acdc/acdc_utils.py) keeps the
#   Pareto-optimal (fpr, tpr) points of the per-threshold runs and sums the stairs
#   (1 - x_i)(y_i - y_{i-1}). The EAP paper's ACDC numbers (Docstring 0.982 KL / 0.972 task)
#   are the ACDC paper's, computed that way.
# * EAP / activation patching: the EAP authors' ROC script (Aaquib111/acdcpp, a copy of ACDC's
#   launch script) turns every |score| threshold into a circuit, runs ACDC's `get_points`,
#   keeps the Pareto-optimal points and draws the same "hv" staircase. For a ranking with
#   distinct scores every step moves x or y alone, so the staircase equals the trapezoid
#   rule; they differ only at ties (and for few-point circuit curves such as ACDC's).
# So one rule, "pessimistic", is the papers' convention for every method; "trapezoid" is the
# named alternative. Both are always written.
AUC_RULES = ("pessimistic", "trapezoid")
DEFAULT_AUC_RULE = "pessimistic"


def check_auc_rule(rule: str) -> str:
    from ..validate import choice

    return choice("AUC rule", rule, AUC_RULES)


# ---- thresholds ---------------------------------------------------------------------------
def tau_grid(n: int, low_exp: float, high_exp: float) -> list[float]:
    """ACDC thresholds 10**x for x in linspace(low_exp, high_exp, n), increasing."""
    n = int(n)
    if n < 1:
        raise ValueError(f"tau grid needs n >= 1, got {n}")
    if low_exp > high_exp:
        raise ValueError(f"low_exp {low_exp} > high_exp {high_exp}")
    return [float(10.0 ** x) for x in np.linspace(float(low_exp), float(high_exp), n)]


def taus_from_spec(spec) -> list[float]:
    """`spec` is either a list of taus or a mapping {n, low_exp, high_exp} (see `tau_grid`)."""
    if isinstance(spec, dict):
        return tau_grid(spec["n"], spec["low_exp"], spec["high_exp"])
    return [float(t) for t in spec]


def keep_threshold(scores: torch.Tensor, graph: Graph, fraction: float,
                   direct_scores: torch.Tensor | None = None) -> float:
    """|score| threshold keeping (at least) the top `fraction` of the graph's edges.

    ``k = ceil(fraction * n_edges)`` edges; the threshold is the k-th largest |score|, so
    ties at the threshold are all kept (as ``|score| >= threshold`` in
    `methods.acdc.eap_then_acdc`). fraction >= 1 returns 0.0 (every edge: plain ACDC).
    direct_scores: [n_direct], ACDC's q/k/v direct edges ranked with the edges (the fraction
    is then of edges + direct edges, `attrpatch.qkv_direct`).
    """
    f = float(fraction)
    if not 0 < f:
        raise ValueError(f"fraction must be > 0, got {fraction}")
    if f >= 1.0:
        return 0.0
    key = graph.edges_from_matrix(torch.as_tensor(scores).detach().cpu().double().abs())
    if direct_scores is not None:
        key = torch.cat([key, torch.as_tensor(direct_scores).detach().cpu().double().abs().reshape(-1)])
    k = max(1, int(np.ceil(f * key.numel())))
    return float(torch.sort(key, descending=True).values[k - 1])


# ---- ROC packaging ------------------------------------------------------------------------
def _curve_dict(df: pd.DataFrame, extra: dict | None = None, auc_rule: str = DEFAULT_AUC_RULE) -> dict:
    both = {"trapezoid": auc_trapezoid(df), "pessimistic": auc_pessimistic(df)}
    out = {"fpr": df["fpr"].astype(float).tolist(), "tpr": df["tpr"].astype(float).tolist(),
           "n_edges": df["n_edges"].astype(int).tolist(),
           "auc": both[check_auc_rule(auc_rule)], "auc_rule": auc_rule,
           "auc_trapezoid": both["trapezoid"], "auc_pessimistic": both["pessimistic"]}
    out.update(extra or {})
    return out


def score_roc(scores: torch.Tensor, reference: torch.Tensor, graph: Graph, absolute: bool = True,
              edges=None, auc_rule: str = DEFAULT_AUC_RULE, direct_scores: torch.Tensor | None = None) -> dict:
    """ROC of a score ranking (every distinct |score|; `circuits.roc_points`) with both AUCs.

    Returns {fpr, tpr, n_edges, auc (under `auc_rule`), auc_rule, auc_trapezoid,
    auc_pessimistic}; padded with (0,0), (1,1).
    edges: indices into the edge list to rank (e.g. `exact_edge_subset`); None: every edge.
    direct_scores: [n_direct] scores of ACDC's q/k/v direct edges (`attrpatch.qkv_direct`),
    ranked beside the edges, against the reference's direct edges by ACDC's counting rule
    (``edges``: "acdc" in the dict); None: the graph's edges only ("plain").
    """
    extra = {} if edges is None else {"n_edges_ranked": int(len(edges))}
    if direct_scores is None:
        return _curve_dict(roc_points(scores, reference, graph, absolute=absolute, edges=edges),
                           {**extra, "edges": "plain"}, auc_rule)
    s = torch.as_tensor(scores).detach().cpu().double()
    key = graph.edges_from_matrix(s.abs() if absolute else s)
    ref = graph.edges_from_matrix(torch.as_tensor(reference).bool().cpu())
    d = torch.as_tensor(direct_scores).detach().cpu().double().reshape(-1)
    if edges is not None:
        idx = torch.as_tensor(np.asarray(edges, dtype=int))
        key, ref = key[idx], ref[idx]
    key = torch.cat([key, d.abs() if absolute else d]).numpy()
    ref = torch.cat([ref, direct_in_circuit(graph, reference)]).numpy()
    return _curve_dict(roc_points_flat(key, ref), {**extra, "edges": "acdc", "n_direct": int(d.numel())}, auc_rule)


# ---- work limits (paper_random: `max_edges`, `acdc_max_edges`) ------------------------------
EXACT_SUBSET_RULE = "half the largest |EAP|, half a seeded random sample of the rest"


def exact_edge_subset(eap_scores: torch.Tensor, graph: Graph, max_edges: int | None, seed: int = 0):
    """Indices (into the edge list) of the edges exact patching is limited to: the
    ``max_edges // 2`` largest |EAP| plus the rest of ``max_edges`` drawn with `seed`
    (`second_order.edge_subset`). None (every edge) when max_edges is unset or >= n_edges."""
    if not max_edges or int(max_edges) >= graph.n_edges:
        return None
    from .second_order import edge_subset

    k = int(max_edges)
    return edge_subset(graph.edges_from_matrix(torch.as_tensor(eap_scores).detach().cpu().double()),
                       k // 2, k - k // 2, seed=seed)


def acdc_universe(eap_scores: torch.Tensor, graph: Graph, acdc_max_edges: int | None):
    """Bool [n_up, n_down]: the ``acdc_max_edges`` edges of largest |EAP| that ACDC may test
    (the rest removed from the start, as in EAP -> ACDC); None (every edge) when unset or
    >= n_edges."""
    if not acdc_max_edges or int(acdc_max_edges) >= graph.n_edges:
        return None
    return top_n(eap_scores, graph, int(acdc_max_edges))


def circuit_roc(masks, reference: torch.Tensor, graph: Graph, taus: Sequence[float] | None = None,
                auc_rule: str = DEFAULT_AUC_RULE, edges: str = "plain", direct=None) -> dict:
    """ROC with one point per circuit (e.g. one ACDC run per tau; `circuits.roc_from_circuits`),
    padded with (0,0) and (1,1), with both AUCs (``auc`` under `auc_rule`). `taus` (one per
    mask) are stored beside the points (None for the padding).
    edges: "plain" (the graph's edges) or "acdc" (with ACDC's q/k/v direct edges: each
    circuit's own kept direct edges from `direct` (bool [C, n_direct], an ACDC run's), or by
    ACDC's counting rule where `direct` is None; the reference by the counting rule)."""
    if edges == "acdc":
        masks = list(masks) if not isinstance(masks, torch.Tensor) or masks.ndim == 3 else [masks]
        ds = [None] * len(masks) if direct is None else list(direct)
        df = roc_from_flat_circuits([flat_circuit(graph, m, d) for m, d in zip(masks, ds)],
                                    flat_circuit(graph, reference), pad=True)
    elif edges == "plain":
        df = roc_from_circuits(masks, reference, graph, pad=True)
    else:
        raise ValueError(f"unknown edges {edges!r}; allowed: ['acdc', 'plain']")
    extra = {"edges": edges}
    if taus is not None:
        taus = list(taus)
        extra["tau"] = [None if c < 0 else float(taus[c]) for c in df["circuit"].tolist()]
    return _curve_dict(df, extra, auc_rule)


def mask_rates(masks, reference: torch.Tensor, graph: Graph | torch.Tensor, direct=None) -> pd.DataFrame:
    """TPR, FPR and size of each circuit (no padding). masks: [n_up, n_down] or [C, ...].

    `graph` may be a bool universe mask instead of a Graph (cells that are edges).
    direct: bool [C, n_direct], each circuit's own q/k/v direct edges (an ACDC run's): counted
    on ACDC's graph (the reference's direct edges by ACDC's counting rule; needs a Graph).
    Columns: circuit, n_edges, fpr, tpr.
    """
    if direct is not None:
        masks = list(masks) if not isinstance(masks, torch.Tensor) or masks.ndim == 3 else [masks]
        return roc_from_flat_circuits([flat_circuit(graph, m, d) for m, d in zip(masks, direct)],
                                      flat_circuit(graph, reference), pad=False).reset_index(drop=True)
    return roc_from_circuits(masks, reference, graph, pad=False).reset_index(drop=True)


def topn_rates(scores: torch.Tensor, reference: torch.Tensor, graph: Graph, counts: Sequence[int],
               direct_scores: torch.Tensor | None = None) -> pd.DataFrame:
    """TPR/FPR of the top-n edges by |score| (`circuits.top_n`) for each n in `counts`.
    direct_scores: rank ACDC's q/k/v direct edges with the edges (n counts both; the reference's
    direct edges by ACDC's counting rule, `attrpatch.qkv_direct`)."""
    counts = [int(n) for n in counts]
    if not counts:
        return pd.DataFrame(columns=["circuit", "n_edges", "fpr", "tpr", "n_requested"])
    if direct_scores is not None:
        key = flat_scores(graph, torch.as_tensor(scores).detach().cpu().double().abs(),
                          torch.as_tensor(direct_scores).detach().cpu().double().abs())
        order = torch.sort(key, descending=True, stable=True).indices
        masks = []
        for n in counts:
            m = torch.zeros(key.numel(), dtype=torch.bool)
            m[order[:max(0, min(n, key.numel()))]] = True
            masks.append(m)
        df = roc_from_flat_circuits(masks, flat_circuit(graph, reference), pad=False).reset_index(drop=True)
        df["n_requested"] = counts
        return df
    masks = torch.stack([top_n(scores, graph, n) for n in counts])
    df = mask_rates(masks, reference, graph)
    df["n_requested"] = counts
    return df


def best_tpr_minus_fpr(tpr, fpr) -> float:
    """max(tpr - fpr) over the points (Youden's J); NaN if there are none."""
    t, f = np.asarray(tpr, float), np.asarray(fpr, float)
    return float(np.max(t - f)) if t.size else float("nan")


# ---- fits ---------------------------------------------------------------------------------
def linear_fit(x, y) -> dict:
    """Least-squares line y = slope * x + intercept (`scipy.stats.linregress`).

    Returns {slope, intercept, r2, r, p_value, stderr, n}. R^2 is r**2 (symmetric in x and
    y; slope and intercept are not). Raises on fewer than 3 points or a constant x.
    """
    from scipy.stats import linregress

    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        raise ValueError(f"a fit needs at least 3 finite points, got {x.size}")
    if np.ptp(x) == 0:
        raise ValueError("x is constant: slope undefined")
    res = linregress(x, y)
    r = float(res.rvalue)
    return {"slope": float(res.slope), "intercept": float(res.intercept), "r2": r * r, "r": r,
            "p_value": float(res.pvalue), "stderr": float(res.stderr), "n": int(x.size)}


# ---- Fig. 4 pairings -------------------------------------------------------------------------
# The EAP authors' Docstring R^2 run (Aaquib111/acdcpp, a copy of ACDC's launch script with
# threshold -100 so that nothing is pruned) ranks edges by |EAP| (``attr_absolute_val=True``)
# and records each edge's ACDC effect as ACDC does: the change of the loss-form metric
# ("lower is better": the task metric negated) when the edge alone is patched, signed. So
# the authors' pairing is x = |EAP score|, y = -(exact effect on the task metric). Which of
# the two was on which axis of the published fit is not in the code we could read: x = |EAP|
# is our reading ([open]); the reverse slope is reported beside every fit.
R2_PAIRINGS = {
    "authors": ("|EAP score| (attr_absolute_val)", "ACDC effect, loss convention (-exact effect), signed"),
    "signed": ("EAP score (signed)", "exact single-edge effect (signed)"),
    "abs": ("|EAP score|", "|exact single-edge effect|"),
}
DEFAULT_R2_PAIRING = "authors"


def r2_pair(eap, exact, pairing: str = DEFAULT_R2_PAIRING, higher_is_better: bool = True):
    """(x, y, (x label, y label)) of one Fig. 4 pairing of per-edge EAP scores and exact effects.

    Both inputs estimate metric(patched) - metric(clean) of the task metric (this package's
    sign). ``authors``: x = |EAP|, y = the loss-form effect (``-exact`` for a higher-is-better
    metric, as ACDC's loss negates it; ``exact`` when the metric is already a loss).
    """
    if pairing not in R2_PAIRINGS:
        raise ValueError(f"unknown R^2 pairing {pairing!r}; allowed: {list(R2_PAIRINGS)}")
    x, y = np.asarray(eap, dtype=float), np.asarray(exact, dtype=float)
    if pairing == "signed":
        return x, y, R2_PAIRINGS[pairing]
    if pairing == "abs":
        return np.abs(x), np.abs(y), R2_PAIRINGS[pairing]
    return np.abs(x), (-y if higher_is_better else y), R2_PAIRINGS[pairing]


def pairing_fits(eap, exact, higher_is_better: bool = True) -> dict:
    """`linear_fit` of y on x for every pairing, with its axes and the reverse slope/intercept."""
    out = {}
    for name in R2_PAIRINGS:
        x, y, (xl, yl) = r2_pair(eap, exact, name, higher_is_better)
        fit, rev = linear_fit(x, y), linear_fit(y, x)
        out[name] = {**fit, "x": xl, "y": yl, "slope_reverse": rev["slope"], "intercept_reverse": rev["intercept"]}
    return out


# ---- interpolation along one edge ---------------------------------------------------------
def largest_gap_edge(estimate: torch.Tensor, exact: torch.Tensor, graph: Graph) -> tuple[int, int, str]:
    """(u, v, name) of the edge with the largest |estimate - exact| (ties: first edge)."""
    est = graph.edges_from_matrix(torch.as_tensor(estimate).double().cpu())
    ex = graph.edges_from_matrix(torch.as_tensor(exact).double().cpu())
    i = int(torch.argmax((est - ex).abs()))
    u, v = (int(a) for a in graph.edge_index[i])
    return u, v, graph.edge_names[i]


def interpolation_curve(patcher, u: int, v: int, n_alphas: int, slope_at_0: float | None = None) -> pd.DataFrame:
    """Metric effect along edge u->v: in_v = base + alpha (z_u(source) - z_u(base)).

    One batched call of `Patcher.interpolate_edge` for alpha in linspace(0, 1, n_alphas).
    Columns: alpha, metric (mean metric), effect (metric - base metric; 0 at alpha = 0),
    and, with `slope_at_0` (the EAP score: the first-order estimate), tangent = alpha * slope.
    """
    n = int(n_alphas)
    if n < 3:
        raise ValueError(f"need at least 3 alphas for a curve, got {n}")
    alphas = np.linspace(0.0, 1.0, n)
    vals = patcher.interpolate_edge(int(u), int(v), alphas).detach().cpu().double().numpy()
    df = pd.DataFrame({"alpha": alphas, "metric": vals, "effect": vals - float(patcher.base_value)})
    if slope_at_0 is not None:
        df["tangent"] = alphas * float(slope_at_0)
    return df


def concavity(alpha, value, tol: float = 1e-5) -> dict:
    """Shape of a sampled curve value(alpha) on a uniform alpha grid.

    * second_diff_mean / frac_concave_steps: mean of the second differences, and the fraction
      of them < -tol (locally concave); frac_convex_steps likewise (> tol);
    * chord_gap_mean: mean of value - chord between the end points over the interior
      (> 0: the curve lies above its chord, as a concave curve does; < 0: below, convex);
    * shape: "concave" if every second difference <= tol and some < -tol; "convex"
      mirror-wise; "linear" if all within tol; else "mixed"; is_concave: 1.0 / 0.0.

    tol is relative to the curve's scale (tol * max(1, max |value|)): float32 metrics carry
    rounding noise of about 1e-7 of their size in every second difference.
    """
    a = np.asarray(alpha, dtype=float)
    y = np.asarray(value, dtype=float)
    if a.size < 3 or a.size != y.size:
        raise ValueError("concavity needs >= 3 points of equal length in alpha and value")
    h = np.diff(a)
    if not np.allclose(h, h[0], rtol=1e-6, atol=1e-12) or h[0] <= 0:
        raise ValueError("alpha must be an increasing uniform grid")
    t = tol * max(1.0, float(np.max(np.abs(y))))
    d2 = np.diff(y, 2)                                   # plain second differences
    chord = y[0] + (y[-1] - y[0]) * (a - a[0]) / (a[-1] - a[0])
    gap = (y - chord)[1:-1]
    if np.all(np.abs(d2) <= t):
        shape = "linear"
    elif np.all(d2 <= t):
        shape = "concave"
    elif np.all(d2 >= -t):
        shape = "convex"
    else:
        shape = "mixed"
    return {
        "shape": shape,
        "is_concave": 1.0 if shape == "concave" else 0.0,
        "second_diff_mean": float(d2.mean()),
        "frac_concave_steps": float(np.mean(d2 < -t)),
        "frac_convex_steps": float(np.mean(d2 > t)),
        "chord_gap_mean": float(gap.mean()),
        "chord_gap_max_abs": float(np.max(np.abs(gap))),
    }
