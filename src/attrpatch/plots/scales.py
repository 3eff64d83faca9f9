"""Symlog axes that stay readable: the linear threshold from the data, ticks a decade apart.

A threshold that is not a power of ten puts decade ticks inside the linear band, where their
labels overlap the 0 label; one far below the data leaves the band empty. Here it is the
power of ten at or below the 10th percentile of the nonzero |values|, so ticks 0, +-lt,
+-10 lt, ... are one decade apart and 90% of the points are on the log part. Lines are
sampled densely in the transformed space, so a straight line y = a x + b shows its true
(curved) symlog shape instead of kinks between a few sample points.
"""
from __future__ import annotations

import numpy as np


def symlog_threshold(*arrays, quantile: float = 10.0) -> float:
    v = np.abs(np.concatenate([np.ravel(np.asarray(a, float)) for a in arrays]))
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return 1.0
    return float(10.0 ** np.floor(np.log10(np.percentile(v, quantile))))


def set_symlog(ax, axis: str, lt: float, vmax: float | None = None, max_ticks: int = 9) -> None:
    """`axis` ("x", "y" or "both") symlog with threshold lt and one decade per linear half.
    With `vmax` (largest |value| shown), ticks are 0 and +-powers of ten, every k-th decade so
    that at most `max_ticks` labels share the axis."""
    from matplotlib.ticker import FixedLocator, NullLocator

    for a in ("x", "y") if axis == "both" else (axis,):
        (ax.set_xscale if a == "x" else ax.set_yscale)("symlog", linthresh=lt, linscale=1.0)
        if vmax is None:
            continue
        k0, k1 = int(round(np.log10(lt))), int(np.ceil(np.log10(max(vmax, lt))))
        step = max(1, int(np.ceil((k1 - k0 + 1) / max(1, (max_ticks - 1) // 2))))
        pos = [10.0 ** k for k in range(k1, k0 - 1, -step)]
        axis_obj = ax.xaxis if a == "x" else ax.yaxis
        axis_obj.set_major_locator(FixedLocator(sorted([-p for p in pos] + [0.0] + pos)))
        axis_obj.set_minor_locator(NullLocator())


def dense(lo: float, hi: float, lt: float, n: int = 400) -> np.ndarray:
    """Points from lo to hi, evenly spaced on a symlog axis of threshold lt."""
    def fwd(x):
        return np.sign(x) * np.where(np.abs(x) <= lt, np.abs(x) / lt, 1 + np.log10(np.maximum(np.abs(x), lt) / lt))

    def inv(u):
        return np.sign(u) * np.where(np.abs(u) <= 1, np.abs(u) * lt, lt * 10 ** (np.abs(u) - 1))
    return inv(np.linspace(fwd(lo), fwd(hi), n))
