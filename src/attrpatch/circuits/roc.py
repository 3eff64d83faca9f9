"""ROC of circuits against a reference circuit, and its areas (the EAP paper's Fig. 2 and
Fig. 5, ACDC's evaluation), shared by ``experiments/eap_roc.py`` and ``eap_acdc.py``.

* `roc_points` (score ranking, every distinct |score|), `roc_from_circuits` (one point per
  circuit, e.g. ACDC per threshold) and their flat-item forms; `auc_trapezoid` and
  `auc_pessimistic` (ACDC's staircase over the Pareto-optimal points);
* `score_roc` / `circuit_roc`: a ROC curve (score ranking, or one point per circuit) with
  both AUCs always and ``auc`` under the named rule (`AUC_RULES`, default
  `DEFAULT_AUC_RULE`, the papers' convention: see below). Both take ``edges``/``direct_scores``:
  the graph's edges ("plain") or ACDC's graph with its q/k/v direct edges ("acdc",
  `attrpatch.qkv_direct`, the EAP paper's count; `EDGE_CONVENTIONS`);
* `mask_rates` / `topn_rates`: TPR/FPR/size of circuits against a reference, no padding;
  `best_tpr_minus_fpr`;
* `tau_grid`: ACDC thresholds ``10**x``, x evenly spaced in [low_exp, high_exp];
  `keep_threshold`: the |EAP| threshold that keeps the top fraction of edges;
  `exact_edge_subset` / `acdc_universe`: the work limits of the paper_random profile.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..analysis.second_order import edge_subset
from ..graph import Graph
from ..qkv_direct import direct_in_circuit, flat_circuit, flat_scores
from ..validate import choice
from .select import _as_mask, _key, top_n

# Which graph the EAP paper's Fig. 2 counts edges on, read in the authors' code:
# * the EAP paper's code (Aaquib111/acdcpp, ``utils/prune_utils.py`` ``acdc_nodes`` in edge
#   mode, ``ACDCPPExperiment``) works on ACDC's own correspondence: every edge it scores, prunes
#   and hands to ACDC is an ACDC edge, the q/k/v direct edges included (a DIRECT_COMPUTATION
#   receiver ``hook_q[h]`` is scored at itself, `direct_atp_scores`);
# * ACDC's evaluation (ArthurConmy/Automatic-Circuit-Discovery, ``acdc/acdc_utils.py``
#   ``get_stat``/``get_edge_stats``, ``notebooks/roc_plot_generator.py`` ``get_points``) counts
#   TP/FP over every non-placeholder edge of that correspondence, and its reference circuits
#   (``get_ioi_true_edges`` ...) include the direct edge of every q/k/v input they use
#   (IOI 1,041, Greater-Than 262, Docstring 37 edges).
# So "acdc" (edges + direct edges, 32,923 on GPT-2 small) is the papers' count; "plain" (our
# graph's edges only, 32,491) is the named alternative.
EDGE_CONVENTIONS = ("acdc", "plain")
DEFAULT_EDGE_CONVENTION = "acdc"


# What a figure calls the counted items under each convention (axis labels, reference sizes).
EDGE_CONVENTION_LABELS = {"acdc": "edges incl. q/k/v direct", "plain": "edges"}


def check_edge_convention(convention: str) -> str:
    return choice("edge convention", convention, EDGE_CONVENTIONS)


def edge_convention_label(convention: str) -> str:
    """What is counted under ``convention``, in words (figure axes and titles)."""
    return EDGE_CONVENTION_LABELS[check_edge_convention(convention)]


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


# What a figure calls each rule (legend titles).
AUC_RULE_LABELS = {"pessimistic": "pessimistic staircase", "trapezoid": "trapezoid"}


def check_auc_rule(rule: str) -> str:
    return choice("AUC rule", rule, AUC_RULES)


def auc_rule_label(rule: str) -> str:
    """The AUC rule ``rule`` in words (figure legends)."""
    return AUC_RULE_LABELS[check_auc_rule(rule)]


# ---- ROC ----------------------------------------------------------------------------------
def _universe(graph_or_mask, shape) -> torch.Tensor:
    if graph_or_mask is None:
        return torch.ones(shape, dtype=torch.bool)
    if isinstance(graph_or_mask, Graph):
        return graph_or_mask.edge_mask
    return torch.as_tensor(graph_or_mask).bool().cpu()


def roc_points(scores: torch.Tensor, reference_mask: torch.Tensor, graph: Graph,
               absolute: bool = True, edges=None) -> pd.DataFrame:
    """Edge-level ROC of a score ranking against a reference circuit.

    One point per distinct |score| threshold t (edges with |score| >= t predicted in the
    circuit), from the highest; padded with (0, 0) first and (1, 1) last. Columns:
    threshold, n_edges (predicted positives), fpr, tpr. Needs at least one positive and one
    negative edge in the reference. edges: indices into the graph's edge list; the ROC is
    then over those edges only (e.g. exact patching limited to a subset); None: all edges.
    """
    if edges is not None:   # only the listed edges must be finite (the others may be NaN: not measured)
        idx = torch.as_tensor(np.asarray(edges, dtype=int))
        s = torch.zeros(graph.n_edges, dtype=torch.float64)
        s[idx] = graph.edges_from_matrix(torch.as_tensor(scores).detach().cpu().double())[idx]
        scores = graph.matrix_from_edges(s)
    key = graph.edges_from_matrix(_key(scores, graph, absolute)).numpy()
    ref = graph.edges_from_matrix(_as_mask(reference_mask, graph)).numpy()
    if edges is not None:
        key, ref = key[idx.numpy()], ref[idx.numpy()]
    return roc_points_flat(key, ref)


def roc_points_flat(key, ref) -> pd.DataFrame:
    """`roc_points` over a flat list of items: key [n] (higher = predicted first), ref bool [n].
    Used where the ranked items are not only the graph's edges (`attrpatch.qkv_direct`)."""
    key, ref = np.asarray(key, dtype=float), np.asarray(ref, dtype=bool)
    P, N = int(ref.sum()), int((~ref).sum())
    if P == 0 or N == 0:
        raise ValueError(f"ROC needs positive and negative reference edges, got {P} and {N}")
    order = np.argsort(-key, kind="stable")
    k, r = key[order], ref[order]
    tp, fp = np.cumsum(r), np.cumsum(~r)
    last = np.r_[np.nonzero(np.diff(k))[0], len(k) - 1]   # last index of each distinct value
    thr = np.r_[np.inf, k[last], -np.inf]
    n = np.r_[0, last + 1, len(k)]
    tpr = np.r_[0.0, tp[last] / P, 1.0]
    fpr = np.r_[0.0, fp[last] / N, 1.0]
    return pd.DataFrame({"threshold": thr, "n_edges": n, "fpr": fpr, "tpr": tpr})


def roc_from_circuits(masks: Sequence[torch.Tensor] | torch.Tensor, reference_mask: torch.Tensor,
                      graph: Graph | torch.Tensor | None = None, pad: bool = True) -> pd.DataFrame:
    """One ROC point per circuit (e.g. one ACDC run per tau), padded with (0,0) and (1,1).

    `graph` (or a bool universe mask) says which cells are edges; without it every cell of
    the matrix counts, which inflates the negatives: pass the graph. Columns: circuit
    (index into `masks`, -1 for padding), n_edges, fpr, tpr; in input order.
    """
    masks = list(masks) if not isinstance(masks, torch.Tensor) or masks.ndim == 3 else [masks]
    ref = torch.as_tensor(reference_mask).bool().cpu()
    uni = _universe(graph, ref.shape)
    ref = ref & uni
    P, N = int(ref.sum()), int((uni & ~ref).sum())
    if P == 0 or N == 0:
        raise ValueError(f"ROC needs positive and negative reference edges, got {P} and {N}")
    return roc_from_flat_circuits([torch.as_tensor(m).bool().cpu()[uni] for m in masks], ref[uni], pad)


def roc_from_flat_circuits(masks, reference, pad: bool = True) -> pd.DataFrame:
    """`roc_from_circuits` over flat item lists: masks a sequence of bool [n], reference bool [n]
    (every item counts). Used where the items are not only the graph's edges (`qkv_direct`)."""
    ref = torch.as_tensor(reference).bool().cpu()
    P, N = int(ref.sum()), int((~ref).sum())
    if P == 0 or N == 0:
        raise ValueError(f"ROC needs positive and negative reference edges, got {P} and {N}")
    rows = [(-1, 0, 0.0, 0.0)] if pad else []
    for i, m in enumerate(masks):
        m = torch.as_tensor(m).bool().cpu()
        rows.append((i, int(m.sum()), int((m & ~ref).sum()) / N, int((m & ref).sum()) / P))
    if pad:
        rows.append((-1, int(ref.numel()), 1.0, 1.0))
    return pd.DataFrame(rows, columns=["circuit", "n_edges", "fpr", "tpr"])


def _xy(fpr, tpr=None):
    if tpr is None:
        pts = fpr
        if isinstance(pts, pd.DataFrame):
            return pts["fpr"].to_numpy(float), pts["tpr"].to_numpy(float)
        a = np.asarray(pts, dtype=float).reshape(-1, 2)
        return a[:, 0], a[:, 1]
    return np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)


def auc_trapezoid(fpr, tpr=None) -> float:
    """Trapezoid-rule area under (fpr, tpr) points (sorted by fpr, then tpr).

    Accepts two arrays, an [n, 2] array of points or a DataFrame with fpr/tpr columns.
    """
    x, y = _xy(fpr, tpr)
    i = np.lexsort((y, x))
    x, y = x[i], y[i]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def pareto_points(fpr, tpr=None) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto-optimal (fpr low, tpr high) points, sorted by fpr (duplicates dropped)."""
    x, y = _xy(fpr, tpr)
    pts = sorted(set(zip(x.tolist(), y.tolist())), key=lambda p: (p[0], -p[1]))
    keep, best = [], -np.inf
    for px, py in pts:
        if py > best:                 # strictly better tpr than every point with fpr <= px
            keep.append((px, py))
            best = py
    a = np.array(keep, dtype=float).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def auc_pessimistic(points, tpr=None) -> float:
    """ACDC's pessimistic AUC: a staircase over the Pareto-optimal points.

    Between two Pareto points the curve stays at the lower tpr until the next point's fpr
    (the ROC of the worse point, no interpolation): area = sum_i (1 - x_i) (y_i - y_{i-1}),
    points sorted by fpr, starting from (0, 0). Always <= `auc_trapezoid` of the same
    (monotone) points. Pad the points with (0,0) and (1,1) as ACDC does (`roc_points` and
    `roc_from_circuits` do).
    """
    x, y = pareto_points(points, tpr)
    x = np.r_[0.0, x]
    y = np.r_[0.0, y]
    return float(np.sum((1.0 - x[1:]) * np.diff(y)))


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
    """ROC of a score ranking (every distinct |score|; `roc_points`) with both AUCs.

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
    """ROC with one point per circuit (e.g. one ACDC run per tau; `roc_from_circuits`),
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
    """TPR/FPR of the top-n edges by |score| (`circuits.select.top_n`) for each n in `counts`.
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


# ---- both edge counts at once (eap_roc writes its AUCs under "acdc" and "plain") -------------
def score_roc_both(scores: torch.Tensor, reference: torch.Tensor, graph: Graph, *, direct_scores: torch.Tensor,
                   convention: str, auc_rule: str = DEFAULT_AUC_RULE, **kw) -> tuple[dict, dict]:
    """(curve under ``convention``, curve under the other count) of one score ranking: "acdc" adds
    the q/k/v direct edges scored by ``direct_scores``, "plain" counts the graph's edges only."""
    with_d = score_roc(scores, reference, graph, auc_rule=auc_rule, direct_scores=direct_scores, **kw)
    plain = score_roc(scores, reference, graph, auc_rule=auc_rule, **kw)
    return (with_d, plain) if check_edge_convention(convention) == "acdc" else (plain, with_d)


def circuit_roc_both(masks, reference: torch.Tensor, graph: Graph, *, taus: Sequence[float], convention: str,
                     direct=None, auc_rule: str = DEFAULT_AUC_RULE) -> tuple[dict, dict]:
    """`score_roc_both` for one point per circuit (an ACDC sweep): ``direct`` is the direct
    edges each run kept (None when they were not tested; then counted by ACDC's rule)."""
    with_d = circuit_roc(masks, reference, graph, taus=taus, auc_rule=auc_rule, edges="acdc", direct=direct)
    plain = circuit_roc(masks, reference, graph, taus=taus, auc_rule=auc_rule)
    return (with_d, plain) if check_edge_convention(convention) == "acdc" else (plain, with_d)


def auc_by_edges(curves: dict, other: dict) -> dict:
    """{"acdc"|"plain": {method: {"pessimistic", "trapezoid"}}} of each method's two curves."""
    out: dict = {c: {} for c in EDGE_CONVENTIONS}
    for m in curves:
        for c in (curves[m], other[m]):
            out[c["edges"]][m] = {"pessimistic": c["auc_pessimistic"], "trapezoid": c["auc_trapezoid"]}
    return out
