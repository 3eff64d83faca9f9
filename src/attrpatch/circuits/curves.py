"""Faithfulness-curve bookkeeping for EAP-IG (Hanna et al. 2024) and EAP-GP (Zhang et al. 2025).

Pure computations on the curves that `attrpatch.circuits.faithfulness.faithfulness_curve` returns (one
row per edge budget: ``n_requested``, ``n_edges_after_prune``, ``faithfulness``) and on
score matrices; no model runs (`circuits.faithfulness.method_curves` runs them), no plotting.

* `curve_auc`: area under normalized faithfulness F vs. **edge fraction** x = n_edges /
  n_total (pruned counts), trapezoid rule, divided by the x-range so that a constant F = c
  gives c. By default the curve is anchored with the empty circuit (0, 0) and the full
  circuit (1, 1) -- both hold by construction in `faithfulness_curve` (F(empty) = 0,
  F(full) = 1) -- so the x-range is [0, 1] and curves with different pruned counts are
  compared over the same range. Points at the same x (two budgets pruned to the same
  circuit size) are averaged. F is not clipped (it may exceed 1 or be negative).
* `curve_auc_log`: the same on log10(n_edges) between ``n_min`` (default 1; the empty
  circuit, F = 0, is placed there) and ``n_total`` (the papers plot log x; this weights the
  small-circuit regime, where methods differ, more).
* `faith_at`, `min_edges_for`: F at fixed requested budgets; the smallest pruned edge
  count whose circuit reaches F >= threshold (None if none does).
* `pearson`, `score_effect_correlation`: Pearson r of |score| with |exact single-edge
  effect| over the graph's edges (Hanna et al. report EAP 0.34-0.84, EAP-IG 0.88-0.98).
* `gain`, `curve_gains`: EAP-GP vs. EAP-IG. Whether EAP-GP's "up to 17.7%" is relative or
  in faithfulness points is [open] (docs/SOURCES.md): both are returned, ``abs`` = new - base
  (points of F or of AUC), ``rel`` = (new - base) / |base| (None where |base| < ``eps``).
* `compare`: wins, ties and losses of one method against another over tasks, with a stated
  margin (`TIE_MARGIN`, the setting ``tie_margin``): a difference within the margin is a tie,
  never a win.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from ..stats import pearson, spearman  # noqa: F401  (the one home; also F.pearson / F.spearman)

# A circuit is faithful from this F on (`min_edges_for`); figures draw it as a line.
FAITHFUL_THRESHOLD = 0.85
ANCHOR_EMPTY = (0.0, 0.0)   # (edge fraction, F) of the empty circuit
ANCHOR_FULL = (1.0, 1.0)    # ... and of the full circuit
# Two faithfulness AUCs (area under F vs edge fraction, `curve_auc`) closer than this are a tie
# (`compare`; the setting ``tie_margin`` of eapig_faith and eapgp_gain). Our choice: half a
# point of area under F, 0.5% of a perfect curve's area; the tiny profile's EAP-GP vs EAP-IG
# gains of +0.00009 and +0.001 AUC (+0.009%, +0.11%) are ties under it, IOI's +0.0099 a win.
TIE_MARGIN = 0.005


def _arrays(n_edges, faith) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(n_edges, dtype=float).ravel()
    y = np.asarray(faith, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"n_edges and faithfulness differ in length: {x.shape} vs {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("faithfulness values must be finite")
    return x, y


def _merge_duplicates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by x; average y over equal x (deterministic, order-independent)."""
    ux, inv = np.unique(x, return_inverse=True)
    sums = np.zeros_like(ux)
    np.add.at(sums, inv, y)
    counts = np.bincount(inv, minlength=len(ux))
    return ux, sums / counts


def _trapezoid_normalized(x: np.ndarray, y: np.ndarray) -> float:
    x, y = _merge_duplicates(x, y)
    if len(x) < 2:
        raise ValueError("an area needs at least two distinct x values")
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    return area / float(x[-1] - x[0])


def curve_auc(n_edges, faith, n_total: int, anchors: bool = True) -> float:
    """Area under F vs. edge fraction n_edges / n_total, normalized by the x-range.

    anchors=True adds (0, 0) (empty circuit) and (1, 1) (full circuit): x-range [0, 1].
    anchors=False: only the given points, divided by (x_max - x_min).
    """
    if n_total <= 0:
        raise ValueError(f"n_total must be positive, got {n_total}")
    x, y = _arrays(n_edges, faith)
    x = x / float(n_total)
    if anchors:
        x = np.r_[ANCHOR_EMPTY[0], x, ANCHOR_FULL[0]]
        y = np.r_[ANCHOR_EMPTY[1], y, ANCHOR_FULL[1]]
    return _trapezoid_normalized(x, y)


def curve_auc_log(n_edges, faith, n_total: int, n_min: float = 1.0, anchors: bool = True) -> float:
    """Area under F vs. log10(n_edges) over [log n_min, log n_total], normalized by that range.

    Edge counts below n_min (the empty circuit, 0 edges, has no place on a log axis) are
    placed at n_min. With `anchors`, the empty circuit (F = 0) sits at n_min unless a
    measured point is already there, and the full circuit (n_total, 1) is added, so every
    method's curve spans the same range and rises from 0 (no flat extrapolation of a
    method's first point, which would reward circuits that prune to nothing).
    """
    if n_total <= n_min:
        raise ValueError(f"n_total must exceed n_min, got {n_total} <= {n_min}")
    x, y = _arrays(n_edges, faith)
    x = np.maximum(x, float(n_min))
    if anchors:
        if not np.any(x == n_min):
            x, y = np.r_[float(n_min), x], np.r_[ANCHOR_EMPTY[1], y]
        x, y = np.r_[x, float(n_total)], np.r_[y, ANCHOR_FULL[1]]
    x_ok = x <= n_total
    return _trapezoid_normalized(np.log10(x[x_ok]), y[x_ok])


def faith_at(n_requested, faith, counts: Iterable[int] | None = None) -> dict[str, float]:
    """{str(n): F} at the requested budgets (all of them when counts is None)."""
    req = [int(n) for n in np.asarray(n_requested).ravel()]
    f = [float(v) for v in np.asarray(faith, dtype=float).ravel()]
    table = dict(zip(req, f))
    counts = req if counts is None else [int(c) for c in counts]
    missing = [c for c in counts if c not in table]
    if missing:
        raise KeyError(f"budgets {missing} not on the curve (have {sorted(table)})")
    return {str(c): table[c] for c in counts}


def min_edges_for(n_edges, faith, threshold: float = FAITHFUL_THRESHOLD) -> int | None:
    """Smallest (pruned) edge count whose circuit has F >= threshold; None if none does."""
    x, y = _arrays(n_edges, faith)
    ok = x[y >= threshold]
    return int(ok.min()) if len(ok) else None


def score_effect_correlation(scores, effects, absolute: bool = True) -> dict[str, float]:
    """Correlation of per-edge scores with exact per-edge effects (both [n_edges] vectors).

    Returns {"pearson": r(|s|, |e|) (or signed if not absolute), "pearson_signed": r(s, e),
    "spearman": rank r of the same pair as "pearson"}.
    """
    s = np.asarray(scores, dtype=float).ravel()
    e = np.asarray(effects, dtype=float).ravel()
    a, b = (np.abs(s), np.abs(e)) if absolute else (s, e)
    return {"pearson": pearson(a, b), "pearson_signed": pearson(s, e), "spearman": spearman(a, b)}


def gain(new: float, base: float, eps: float = 1e-9) -> dict[str, float | None]:
    """{"abs": new - base, "rel": (new - base) / |base| (None if |base| < eps)}."""
    d = float(new) - float(base)
    return {"abs": d, "rel": (d / abs(float(base))) if abs(float(base)) >= eps else None}


def curve_gains(n_requested, faith_new, faith_base, counts: Iterable[int] | None = None,
                eps: float = 1e-6) -> dict[str, dict]:
    """Per requested budget: gain of F_new over F_base ({str(n): {"abs", "rel"}})."""
    a = faith_at(n_requested, faith_new, counts)
    b = faith_at(n_requested, faith_base, counts)
    return {k: gain(a[k], b[k], eps) for k in a}


def threshold_key(threshold: float) -> str:
    """Field name of `min_edges_for` in result JSONs: 0.85 -> "min_edges_for_f085" (no dot:
    claims address fields by dotted paths)."""
    return f"min_edges_for_f{int(round(threshold * 100)):03d}"


def summarize_curve(n_requested, n_edges, faith, n_total: int, *, counts: Iterable[int] | None = None,
                    threshold: float = FAITHFUL_THRESHOLD, n_min: float = 1.0) -> dict:
    """Every number a claim may check about one faithfulness curve."""
    return {
        "curve": {"n_requested": [int(n) for n in n_requested], "n_edges": [int(n) for n in n_edges],
                  "faithfulness": [float(f) for f in faith]},
        "auc": curve_auc(n_edges, faith, n_total),
        "auc_log": curve_auc_log(n_edges, faith, n_total, n_min=n_min),
        "faith_at": faith_at(n_requested, faith, counts),
        threshold_key(threshold): min_edges_for(n_edges, faith, threshold),
    }


def count_ge(values_a: Mapping[str, float], values_b: Mapping[str, float], margin: float = 0.0) -> int:
    """How many keys k have values_a[k] >= values_b[k] + margin (keys of values_a)."""
    return int(sum(1 for k, v in values_a.items() if v >= values_b[k] + margin))


def compare(new: Mapping[str, float], base: Mapping[str, float], margin: float = TIE_MARGIN) -> dict:
    """Wins, ties and losses of ``new`` against ``base`` over the keys of ``new`` (tasks): a win
    is new > base + margin, a loss new < base - margin, anything else a tie. Returns
    {margin, wins, ties, losses (sorted key lists), n_wins, n_ties, n_losses, n_not_worse
    (wins + ties)}."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"tie margin must be a finite number >= 0, got {margin!r}")
    out = {"margin": float(margin), "wins": [], "ties": [], "losses": []}
    for k, v in new.items():
        d = float(v) - float(base[k])
        out["wins" if d > margin else "losses" if d < -margin else "ties"].append(k)
    for key in ("wins", "ties", "losses"):
        out[key] = sorted(out[key])
        out[f"n_{key}"] = len(out[key])
    out["n_not_worse"] = out["n_wins"] + out["n_ties"]
    return out


def compare_text(c: Mapping) -> str:
    """"1 win, 5 ties, 0 losses (tie margin 0.005 AUC)": a `compare` result in words."""
    def n(k, word, plural):
        return f"{c[f'n_{k}']} {word if c[f'n_{k}'] == 1 else plural}"
    return (f"{n('wins', 'win', 'wins')}, {n('ties', 'tie', 'ties')}, {n('losses', 'loss', 'losses')} "
            f"(tie margin {c['margin']:g} AUC)")


def mean_finite(values: Iterable) -> float:
    """Mean of the finite values (NaN when none)."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else float("nan")


def task_summary(res: Mapping, counts: Iterable[int] | None = None, threshold: float = FAITHFUL_THRESHOLD) -> dict:
    """JSON-ready numbers of one task's `method_curves` result."""
    counts = None if counts is None else list(counts)
    n_total = res["n_total"]
    out = {"m_clean": res["m_clean"], "m_corrupt": res["m_corrupt"], "n_edges_total": n_total, "methods": {}}
    for name, r in res["methods"].items():
        df = r["curve"]
        d = summarize_curve(df["n_requested"], df["n_edges_after_prune"], df["faithfulness"], n_total,
                            counts=counts, threshold=threshold)
        if res.get("effects") is not None:
            out["exact_n"] = res.get("exact_n")
            d.update(score_effect_correlation(r["scores"], res["effects"]))
        d["seconds"] = r["seconds_scores"] + r["seconds_curve"]
        out["methods"][name] = d
    return out
