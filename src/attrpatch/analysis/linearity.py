"""How linear a patch's effect is: the computations behind the EAP paper's Fig. 4 (R^2 of
EAP against exact effects, interpolation along one edge), used by ``experiments/eap_r2.py``.

* `linear_fit`: least-squares line, R^2 (`scipy.stats.linregress`); `r2_pair`: which two
  quantities a Fig. 4 fit pairs (`R2_PAIRINGS`, default `DEFAULT_R2_PAIRING`), with axis labels;
  `pairing_fits`: every pairing at once;
* `largest_gap_edge`, `interpolation_curve` and `concavity`: the metric along one edge's patch
  ``in_v = clean + alpha (z_u(corrupt) - z_u(clean))`` and its shape vs. the EAP tangent.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import linregress

from ..graph import Graph


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
