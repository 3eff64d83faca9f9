"""Correlation statistics shared by methods, analyses and experiments (one home each).

* `pearson`: Pearson r; NaN when either side is constant (r undefined).
* `rankdata`: average ranks, 1-based (ties share the mean of their positions).
* `spearman`: Spearman's rank correlation, tie-aware: the Pearson r of the average ranks
  (scipy.stats.spearmanr's definition); NaN when either side is constant or has < 2 values.
"""
from __future__ import annotations

import math

import numpy as np


def as_numpy(x) -> np.ndarray:
    """float64 numpy copy of a tensor, array or sequence (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def pearson(a, b) -> float:
    """Pearson r; NaN when either side is constant (r undefined)."""
    a, b = as_numpy(a).ravel(), as_numpy(b).ravel()
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"pearson needs two equal-length vectors of >= 2 values, got {a.shape}, {b.shape}")
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if den == 0.0:
        return float("nan")
    return float(np.clip(np.dot(da, db) / den, -1.0, 1.0))


def rankdata(x) -> np.ndarray:
    """Average ranks (1-based) of a vector: ties share the mean of the positions they span."""
    from scipy.stats import rankdata as _rankdata

    return _rankdata(as_numpy(x).ravel(), method="average").astype(float)


def spearman(a, b) -> float:
    """Spearman rank correlation with average ranks for ties; NaN when undefined (a side
    constant, or fewer than 2 values)."""
    a, b = as_numpy(a).ravel(), as_numpy(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs two equal-length vectors, got {a.shape}, {b.shape}")
    if len(a) < 2:
        return float("nan")
    return pearson(rankdata(a), rankdata(b))
