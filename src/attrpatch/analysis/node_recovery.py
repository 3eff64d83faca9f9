"""False negatives of AtP and how the AtP* variants recover them (Kramar et al. 2024).

Pure computations on node-score vectors (no model): `experiments/gradrop.py` feeds them
exact node effects (`patching.node_effects`) and the scores of ``atp``, ``atp_qk``,
``atp_graddrop``, ``atp_star`` (`attrpatch.methods.registry`).

Definitions (ours; the paper's exact thresholds were not available, docs/SOURCES.md [3p]):

* **important node**: ``|exact(n)| >= quantile(|exact|, exact_quantile)`` (``np.quantile``,
  linear interpolation) and ``|exact(n)| > 0``. ``k`` = number of important nodes.
* **false negative of AtP**: an important node with ``|AtP(n)| < estimate_ratio * |exact(n)|``
  (AtP underestimates its effect by more than a factor ``1 / estimate_ratio``).
* **rank** of a node under a method: 1 + number of nodes with a strictly larger ``|score|``
  (1 = top; ties share the better rank).
* **recovered** by a method: ``|score(n)| >= estimate_ratio * |exact(n)|`` **or**
  ``rank(n) <= k`` (the method puts it among the top-k, k as above). GradDrop / AtP* scores
  are magnitudes on their own scale (a mean over layers of |AtP_l|), which is why rank is
  accepted as well as magnitude.
* **missed by AtP**: a false negative that AtP does not recover either (rank > k); the
  strict failures. ``n_recovered_of_missed`` counts how many of those each method recovers.
* **ratio** ``|exact(n)| / |score(n)|`` (true over estimated effect; inf when the score is 0).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from ..graph import Graph
from ..methods.atp import atp_graddrop_node_scores, atp_node_scores, atp_qk_fix_node_scores, atp_star_node_scores
from ..models.toy import cancellation_batch, cancellation_model, saturated_attention_batch, saturated_attention_model
from ..patching import node_effects
from ..stats import rankdata, spearman  # noqa: F401  (the one home; also nr.rankdata / nr.spearman)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def abs_ranks(scores) -> np.ndarray:
    """Rank of every entry by |score| (1 = largest; ties get the better rank)."""
    a = np.abs(_np(scores))
    return np.array([1 + int((a > x).sum()) for x in a], dtype=int)


def important_nodes(exact, exact_quantile: float) -> np.ndarray:
    """Boolean mask of nodes whose |exact| is at or above the quantile (and nonzero)."""
    a = np.abs(_np(exact))
    thr = float(np.quantile(a, exact_quantile))
    return (a >= thr) & (a > 0)


def false_negatives(exact, atp, exact_quantile: float, estimate_ratio: float) -> np.ndarray:
    """Boolean mask: important nodes with |AtP| < estimate_ratio * |exact| (module docstring)."""
    e, a = np.abs(_np(exact)), np.abs(_np(atp))
    return important_nodes(exact, exact_quantile) & (a < estimate_ratio * e)


def _ratio(e: float, s: float) -> float:
    return float(e / s) if s > 0 else math.inf


def recovery_table(exact, scores: Mapping[str, Sequence[float]], names: Sequence[str], *,
                   exact_quantile: float, estimate_ratio: float, atp_key: str = "atp") -> dict:
    """Per task: false negatives of ``scores[atp_key]`` and how every method ranks them.

    Returns ``{"n_nodes", "k", "important": [names], "false_negatives": [{node, exact,
    <method>: {score, rank, ratio, recovered}}], "n_false_negatives", "n_recovered":
    {method: count}, "spearman": {method: Spearman(|score|, |exact|)}, "threshold"}``.
    """
    e = _np(exact)
    imp = important_nodes(e, exact_quantile)
    k = int(imp.sum())
    fn = false_negatives(e, scores[atp_key], exact_quantile, estimate_ratio)
    ranks = {m: abs_ranks(s) for m, s in scores.items()}
    rows = []
    n_rec = {m: 0 for m in scores}
    for i in np.flatnonzero(fn):
        row = {"node": names[i], "exact": float(e[i])}
        for m, s in scores.items():
            sv = float(_np(s)[i])
            rec = bool(abs(sv) >= estimate_ratio * abs(e[i]) or ranks[m][i] <= k)
            n_rec[m] += int(rec)
            row[m] = {"score": sv, "rank": int(ranks[m][i]), "ratio": _ratio(abs(e[i]), abs(sv)), "recovered": rec}
        rows.append(row)
    return {
        "n_nodes": int(len(e)),
        "k": k,
        "threshold": float(np.quantile(np.abs(e), exact_quantile)),
        "important": [names[i] for i in np.flatnonzero(imp)],
        "false_negatives": rows,
        "n_false_negatives": int(fn.sum()),
        "n_recovered": n_rec,
        # false negatives that AtP itself misses by rank too (the strict failures), and who recovers those
        "n_missed_by_atp": sum(1 for r in rows if not r[atp_key]["recovered"]),
        "n_recovered_of_missed": {m: sum(1 for r in rows if not r[atp_key]["recovered"] and r[m]["recovered"])
                                  for m in scores},
        "spearman": {m: spearman(np.abs(_np(s)), np.abs(e)) for m, s in scores.items()},
    }


def summarize(per_task: Mapping[str, dict]) -> dict:
    """Totals over tasks: false negatives, recoveries per method, mean Spearman per method."""
    methods = sorted({m for t in per_task.values() for m in t["n_recovered"]})
    n_fn = sum(t["n_false_negatives"] for t in per_task.values())
    n_rec = {m: sum(t["n_recovered"].get(m, 0) for t in per_task.values()) for m in methods}
    sp = {}
    for m in methods:
        vals = [t["spearman"][m] for t in per_task.values() if t["spearman"].get(m) is not None
                and not math.isnan(t["spearman"][m])]
        sp[m] = float(np.mean(vals)) if vals else float("nan")
    return {
        "n_tasks": len(per_task),
        "n_nodes": sum(t["n_nodes"] for t in per_task.values()),
        "n_important": sum(t["k"] for t in per_task.values()),
        "n_false_negatives_atp": n_fn,
        "n_recovered": n_rec,
        "frac_recovered": {m: (n_rec[m] / n_fn if n_fn else None) for m in methods},
        "n_missed_by_atp": sum(t["n_missed_by_atp"] for t in per_task.values()),
        "n_recovered_of_missed": {m: sum(t["n_recovered_of_missed"].get(m, 0) for t in per_task.values())
                                  for m in methods},
        "mean_spearman": sp,
        "tasks_with_false_negatives": [t for t, v in per_task.items() if v["n_false_negatives"]],
    }


def constructed_cases() -> dict:
    """The two hand-built failure cases of `attrpatch.models.toy`, scored by exact patching,
    AtP and the AtP* parts. Numbers are for the node where the failure sits:

    * ``saturation``: head ``a0.h0`` attends ~one-hot (score 20) to a tagged key that the
      corruption moves; ``atp_qkv`` = AtP of the head's q/k/v activations (the paper's
      attention nodes, ~0 through the saturated softmax), ``qk_fix`` = AtP + QK fix,
      ``atp_star``; ``atp_output`` = AtP at the head output (exact here, everything after
      the head is linear).
    * ``cancellation``: ``m0``'s direct effect and its effect through ``m1`` cancel in the
      gradient at clean; ``atp`` ~0, ``graddrop`` recovers |exact| = 3.

    ``recovered[method]``: ``|score| >= 0.5 * |exact|`` at that node.
    """
    out = {}
    model, batch = saturated_attention_model(), saturated_attention_batch()
    g = Graph.from_model(model)
    h = g.up_index("a0.h0")
    ex = node_effects(model, g, batch)
    out["saturation"] = {
        "node": "a0.h0",
        "exact": float(ex[h]),
        "atp_qkv": float(atp_node_scores(model, g, batch, heads="qkv")[h]),
        "atp_output": float(atp_node_scores(model, g, batch)[h]),
        "qk_fix": float(atp_qk_fix_node_scores(model, g, batch)[h]),
        "atp_star": float(atp_star_node_scores(model, g, batch)[h]),
    }
    model, batch = cancellation_model(), cancellation_batch()
    g = Graph.from_model(model)
    m0 = g.up_index("m0")
    ex = node_effects(model, g, batch)
    out["cancellation"] = {
        "node": "m0",
        "exact": float(ex[m0]),
        "atp": float(atp_node_scores(model, g, batch)[m0]),
        "qk_fix": float(atp_qk_fix_node_scores(model, g, batch)[m0]),
        "graddrop": float(atp_graddrop_node_scores(model, g, batch)[m0]),
        "atp_star": float(atp_star_node_scores(model, g, batch)[m0]),
    }
    for case in out.values():
        e = abs(case["exact"])
        case["recovered"] = {k: bool(abs(v) >= 0.5 * e) for k, v in case.items()
                             if k not in ("node", "exact") and isinstance(v, float)}
    return out


__all__ = ["abs_ranks", "rankdata", "spearman", "important_nodes", "false_negatives", "recovery_table",
           "summarize", "constructed_cases"]
