"""Second-order correction of attribution patching: errors, reliability, multi-step, Screen-Flag-Fix.

Pure bookkeeping around `attrpatch.methods.hvp` ("When Attribution Patching Lies",
reconstructed formulas: see that module). `experiments/hvp.py` wires it.

Edge subset. Per-edge HVPs cost one batched forward + backward + double backward per
edge copy (C*B stacked rows), i.e. more than exact patching of the same edges; on the
tiny models and 2 shared CPU cores all edges x all multi-step points does not fit the
DAG's budget. `edge_subset` therefore picks the edges the HVP analysis runs on: the
``n_top`` edges with the largest |EAP| plus ``n_random`` others drawn uniformly with a
fixed seed (the random part keeps the error statistics from being only about big edges).
All per-edge statistics below are over that subset; the JSON says so.

Multi-step from shared points. `multistep_from_derivatives` evaluates the K-step rule of
`methods.hvp.hvp_multistep_scores`, ``sum_k f'(k/K)/K + f''(k/K)/(2 K^2)``, from
derivatives taken once at the union of all start points (K in {1, 2, 4} -> alphas
{0, 1/4, 1/2, 3/4}); identical numbers, fewer HVPs.

Cost accounting (documented, not measured): in "gradient passes" per component, one
forward+backward = 1 pass. First order (EAP) = 1; one HVP = 1 more backward (the paper's
"one additional backward pass"), so the K-step HVP = 2K passes (K gradients + K HVPs);
EAP-IG with m steps = m passes (m forward+backward, shared by all edges). "Equal passes"
pairs HVP(K) with EAP-IG(m = 2K). The two cached forwards every method needs are not
counted. Those 2K passes are per component in the per-component reading (n components:
2K n passes, each over B rows); in the one-pass reading (`methods.hvp` "Two readings") the
2K passes give every component of the graph at once (`reading_passes`).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from ..methods.hvp import check_reading, ig_points, multistep_terms, sff_flag
from ..stats import rankdata, spearman
from .node_recovery import _np


def edge_subset(first_order, n_top: int, n_random: int, seed: int = 0) -> np.ndarray:
    """Indices (into the edge list) of the n_top largest |first_order| plus n_random others."""
    a = np.abs(_np(first_order))
    n = len(a)
    order = np.argsort(-a, kind="mergesort")
    top = order[: min(n_top, n)]
    rest = np.setdiff1d(np.arange(n), top)
    rng = np.random.default_rng(seed)
    rnd = rng.choice(rest, size=min(n_random, len(rest)), replace=False) if len(rest) else np.array([], int)
    return np.sort(np.concatenate([top, rnd]).astype(int))


def multistep_alphas(ks: Iterable[int]) -> list[float]:
    """Sorted union of the start points k/K (k = 0..K-1) over every K."""
    pts = {round(k / K, 12) for K in ks for k in range(int(K))}
    return sorted(pts)


def multistep_from_derivatives(d1: Mapping[float, torch.Tensor], d2: Mapping[float, torch.Tensor], K: int):
    """K-step estimate from f' and f'' at the start points (keys k/K rounded to 12 digits),
    by `methods.hvp.multistep_terms` (the rule's one implementation)."""
    pts = [round(k / int(K), 12) for k in range(int(K))]
    first, second = multistep_terms(torch.stack([torch.as_tensor(d1[a]) for a in pts]),
                                    torch.stack([torch.as_tensor(d2[a]) for a in pts]))
    return first + second


def ig_alphas(steps_list: Iterable[int], rule: str) -> list[float]:
    """Sorted union of the per-component IG points (`methods.hvp.ig_points`) over every m."""
    return sorted({round(float(a), 12) for m in steps_list for a in ig_points(int(m), rule)[0]})


def ig_from_derivatives(d1: Mapping[float, torch.Tensor], steps: int, rule: str):
    """Per-component IG with `steps` evaluations under `rule`, from f' at shared points
    (keys rounded to 12 digits, as `ig_alphas`); equals `methods.hvp.per_component_ig_scores`."""
    alphas, weights = ig_points(int(steps), rule)
    tot = 0.0
    for a, w in zip(alphas.tolist(), weights.tolist()):
        tot = tot + w * d1[round(a, 12)]
    return tot


def error_stats(estimate, exact) -> dict:
    """Mean and median |estimate - exact| (one saturating component can hold most of a mean)."""
    e = errors(estimate, exact)
    return {"mean_abs_err": float(e.mean()), "median_abs_err": float(np.median(e)),
            "max_share_of_mean": float(e.max() / e.sum()) if e.sum() > 0 else 0.0}


def errors(estimate, exact) -> np.ndarray:
    return np.abs(_np(estimate) - _np(exact))


def median_relative_error(estimate, exact, floor: float = 0.0) -> float:
    """median |estimate - exact| / |exact| over components with |exact| > floor."""
    e, x = _np(estimate), _np(exact)
    keep = np.abs(x) > floor
    if not keep.any():
        return float("nan")
    return float(np.median(np.abs(e[keep] - x[keep]) / np.abs(x[keep])))


def auroc(scores, labels) -> float:
    """P(score of a positive > score of a negative), ties 1/2 (Mann-Whitney U / (n+ n-)).

    +inf scores are fine (rank-based; rho = inf where the first-order term is 0). NaN when a
    class is empty.
    """
    s, y = _np(scores), np.asarray(labels, dtype=bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    s = np.where(np.isnan(s), -np.inf, s)
    r = rankdata(s)
    u = r[y].sum() - npos * (npos + 1) / 2
    return float(u / (npos * nneg))


def top_fraction_labels(values, fraction: float = 0.1) -> np.ndarray:
    """Boolean mask of the ceil(fraction * n) largest values (at least one)."""
    v = _np(values)
    k = max(1, int(math.ceil(fraction * len(v))))
    lab = np.zeros(len(v), dtype=bool)
    lab[np.argsort(-v, kind="mergesort")[:k]] = True
    return lab


def error_summary(first, corrected, exact) -> dict:
    """Mean/median abs error before/after, fraction improved, median relative errors."""
    e1, e2 = errors(first, exact), errors(corrected, exact)
    return {
        "mean_abs_err": {"first_order": float(e1.mean()), "corrected": float(e2.mean())},
        "median_abs_err": {"first_order": float(np.median(e1)), "corrected": float(np.median(e2))},
        "frac_improved": float((e2 < e1).mean()),
        "median_rel_err": {"first_order": median_relative_error(first, exact),
                           "corrected": median_relative_error(corrected, exact)},
        "n": int(len(e1)),
    }


def reliability_summary(rho, first, exact, top_fraction: float = 0.1) -> dict:
    """How well rho flags bad first-order estimates: Spearman(rho, |err|), AUROC for the top errors."""
    r = _np(rho)
    err = errors(first, exact)
    lab = top_fraction_labels(err, top_fraction)
    rel_err = err / np.maximum(np.abs(_np(exact)), 1e-12)
    return {
        "spearman_rho_vs_abs_err": spearman(r, err),
        "spearman_rho_vs_rel_err": spearman(r, rel_err),
        "auroc_top_errors": auroc(r, lab),
        "top_fraction": top_fraction,
        "n_positive": int(lab.sum()),
    }


def sff_from_scores(first, rho, exact, threshold: float, fix: str = "hvp", fixed=None) -> dict:
    """Screen-Flag-Fix from already computed scores (`methods.hvp.screen_flag_fix`, tested equal).

    Flag rho > threshold; flagged components take the fix's value, the rest keep the
    first-order estimate. fix="hvp" (the paper's fix): `fixed`, the (multi-step) HVP estimate
    of every component (flag: `methods.hvp.sff_flag`); fix="exact" (named variant): the exact effect, so its error on the
    flagged components is zero by construction. frac_fixed = fraction of components fixed.
    """
    if fix not in ("hvp", "exact"):
        raise ValueError(f"unknown fix {fix!r}; allowed: ['hvp', 'exact']")
    if fix == "hvp" and fixed is None:
        raise ValueError("fix='hvp' needs `fixed`, the HVP estimate of every component")

    f, r, x = _np(first), _np(rho), _np(exact)
    flag = sff_flag(r, threshold)
    est = np.where(flag, x if fix == "exact" else _np(fixed), f)
    return {
        "threshold": float(threshold), "fix": fix,
        "n_flagged": int(flag.sum()),
        "frac_fixed": float(flag.mean()) if len(flag) else 0.0,
        "mean_abs_err": float(np.abs(est - x).mean()),
        "mean_abs_err_first_order": float(np.abs(f - x).mean()),
        "median_abs_err": float(np.median(np.abs(est - x))) if len(x) else float("nan"),
        "median_abs_err_first_order": float(np.median(np.abs(f - x))) if len(x) else float("nan"),
        "err_reduction": (float(1 - np.abs(est - x).mean() / np.abs(f - x).mean())
                          if np.abs(f - x).mean() > 0 else float("nan")),
        "estimate": est,
        "flagged": flag,
    }


def passes(method: str, steps: int) -> int:
    """Documented cost in gradient passes per component (module docstring)."""
    if method == "hvp":
        return 2 * int(steps)
    if method in ("eap_ig", "ig"):
        return int(steps)
    if method in ("eap", "first_order"):
        return 1
    raise ValueError(f"unknown method {method!r}")


def reading_passes(reading: str, steps: int, n_subset: int, n_total: int) -> dict:
    """Documented cost of the K-step HVP (K = `steps`) in passes over the batch, for the
    `n_subset` analysed components and for all `n_total` of the graph: per_component 2K per
    component; one_pass 2K in all (one total direction covers every component)."""
    K2 = 2 * int(steps)
    if check_reading(reading) == "per_component":
        return {"passes_per_component": K2, "passes_subset": K2 * int(n_subset), "passes_all": K2 * int(n_total)}
    return {"passes_per_component": K2 / int(n_total), "passes_subset": K2, "passes_all": K2}


def mean_over_tasks(per_task: Mapping[str, dict], path: Sequence[str]) -> float:
    vals = []
    for t in per_task.values():
        v = t
        for p in path:
            v = v[p]
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            vals.append(float(v))
    return float(np.mean(vals)) if vals else float("nan")


__all__ = ["edge_subset", "multistep_alphas", "multistep_from_derivatives", "errors", "median_relative_error",
           "auroc", "top_fraction_labels", "error_summary", "reliability_summary", "sff_from_scores", "passes",
           "reading_passes",
           "ig_alphas", "ig_from_derivatives", "error_stats",
           "mean_over_tasks"]
