"""The second-order study of "When Attribution Patching Lies" on one task: it runs the model
(EAP, per-edge HVPs, exact patching, IG comparators) and shapes the result JSON; the
bookkeeping it uses is `attrpatch.analysis.second_order`'s. `experiments/hvp.py` only wires
(profile, tasks, models, files).
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch

from ..graph import Graph
from ..methods.common import output_differences
from ..methods.hvp import DEFAULT_READING, IG_RULES, READINGS, check_reading, directional_derivatives, reliability, \
    total_direction_derivatives
from ..methods.registry import attribute
from ..metrics import resolve_metric
from ..patching import Patcher, default_rows_per_forward
from ..progress import tqdm
from ..tasks.base import TaskBatch
from .second_order import (edge_subset, error_stats, error_summary, errors, ig_alphas, ig_from_derivatives,
                           mean_over_tasks, multistep_alphas, multistep_from_derivatives, passes,
                           reading_passes, reliability_summary, sff_from_scores)


def reading_block(first, d1: Mapping, d2: Mapping, exact, ks: Sequence[int], threshold: float, K_fix: int) -> tuple[dict, dict]:
    """(JSON block, per-edge arrays) of one HVP reading from its f' and f'' at the multi-step
    start points (`d1`, `d2` keyed by alpha): one-step errors vs exact, rho, K-step errors,
    Screen-Flag-Fix with the K_fix-step fix. `first` (EAP) is the same for every reading."""
    second = 0.5 * d2[0.0]
    corrected, rho = first + second, reliability(first, second)
    err = error_summary(first, corrected, exact)
    ms = {}
    for K in ks:
        hs = error_stats(multistep_from_derivatives(d1, d2, K), exact)
        ms[str(K)] = {"mean_abs_err": hs["mean_abs_err"], "median_abs_err": hs["median_abs_err"],
                      "max_share_of_mean": hs["max_share_of_mean"]}
    sff = sff_from_scores(first, rho, exact, threshold, fix="hvp", fixed=multistep_from_derivatives(d1, d2, K_fix))
    block = {**err, "n_improved": int(round(err["frac_improved"] * err["n"])),
             **reliability_summary(rho, first, exact), "multistep": ms,
             "sff": {k: v for k, v in sff.items() if k not in ("estimate", "flagged")} | {"hvp_steps": K_fix}}
    return block, {"corrected": corrected.numpy(), "rho": rho.numpy(), "sff": sff["estimate"],
                   "flagged": sff["flagged"]}


def second_order_study(model, g: Graph, batch: TaskBatch, *, ks: Sequence[int], threshold: float, n_top: int,
                       n_random: int, ig_rule: str, sff_steps: int | None = None, seed: int = 0,
                       opts: Mapping | None = None, desc: str = "",
                       reading: str = DEFAULT_READING) -> tuple[dict, dict]:
    """(detail, arrays) of one task's second-order study on the edge subset `edge_subset`
    (``n_top`` largest |EAP| + ``n_random`` drawn with ``seed``): exact effects, EAP, the
    HVP-corrected estimate and rho; errors; multi-step HVP (K in ``ks``) against per-component
    IG (every rule in `IG_RULES`; ``ig_rule`` at the top level) and EAP-IG at equal passes;
    Screen-Flag-Fix (flag rho > ``threshold``, fix by the K = ``sff_steps`` HVP or exactly).
    ``detail`` is the task's JSON entry (the caller adds timings); ``arrays`` the per-edge
    values the figure draws. ``opts``: method options of `attribute` (e.g. batch_size).

    Both HVP readings (`methods.hvp.READINGS`) are computed: ``readings.<r>`` holds each one's
    errors, rho, K-step errors, Screen-Flag-Fix and cost (passes, measured seconds); the
    top-level fields are those of `reading`. The one-pass direction is the whole graph's
    (every edge's difference at once), its terms read off on the subset."""
    check_reading(reading)
    eap_all = g.edges_from_matrix(attribute(model, batch, "eap", graph=g, **dict(opts or {}))).double()
    sel = edge_subset(eap_all, n_top, n_random, seed=seed)
    return study_from_parts(study_parts(model, g, batch, sel, ks=ks, opts=opts, desc=desc), g, eap_all, sel,
                            ks=ks, threshold=threshold, n_top=n_top, n_random=n_random, ig_rule=ig_rule,
                            sff_steps=sff_steps, seed=seed, reading=reading, n_prompts=len(batch))


# The study's parts that are means over prompts (the metric is a mean of per-prompt values, and
# every derivative, exact effect and EAP-IG score is linear in it): a prompt shard's parts,
# weighted by its share of the prompts and summed, are the whole batch's (`gather_study_parts`).
ADDITIVE_PARTS = ("d1", "d2", "o1", "o2", "exact", "ig")


def study_parts(model, g: Graph, batch: TaskBatch, sel, *, ks: Sequence[int], opts: Mapping | None = None,
                desc: str = "") -> dict:
    """The model-running part of `second_order_study` on `batch` for the edges `sel` (indices into
    the edge list): f' and f'' at every multi-step point (both readings), f' at every further IG
    point, exact effects and EAP-IG at K and 2K steps (`ADDITIVE_PARTS`, each a mean over the
    batch's prompts), with the seconds and batched passes they took."""
    opts = dict(opts or {})
    edges = g.edge_index[torch.as_tensor(sel)]
    metric = resolve_metric(model, batch, "task")
    base, _, diff, _ = output_differences(model, g, batch)
    d1, d2, hvp_passes, secs = {}, {}, 0, {r: {} for r in READINGS}
    for a in tqdm(multistep_alphas(ks), desc=f"{desc}HVP points", leave=False):
        t0 = time.perf_counter()
        f1, f2, p = directional_derivatives(model, g, base, diff, metric, edges, torch.full((len(sel),), a),
                                            rows_per_forward=default_rows_per_forward(model))
        secs["per_component"][a] = time.perf_counter() - t0
        d1[a], d2[a], hvp_passes = f1, f2, hvp_passes + p
    o1, o2 = {}, {}          # one-pass reading: the whole graph's total direction, read on the subset
    for a in tqdm(multistep_alphas(ks), desc=f"{desc}one-pass HVP points", leave=False):
        t0 = time.perf_counter()
        f1, f2, _ = total_direction_derivatives(model, g, base, diff, metric, g.edge_index, a)
        secs["one_pass"][a] = time.perf_counter() - t0
        o1[a], o2[a] = f1[sel], f2[sel]
    ig_ms = sorted({2 * int(k) for k in ks})
    ig_only = sorted(set().union(*[ig_alphas(ig_ms, r) for r in IG_RULES]) - set(d1))
    for a in tqdm(ig_only, desc=f"{desc}IG points", leave=False):
        f1, _, p = directional_derivatives(model, g, base, diff, metric, edges, torch.full((len(sel),), a),
                                           rows_per_forward=default_rows_per_forward(model), second=False)
        d1[a], hvp_passes = f1, hvp_passes + p
    t0 = time.perf_counter()
    patcher = Patcher(model, g, batch, metric)
    exact = patcher.edge_effects(edges).double()
    exact_cost = {"single_edge_patches": len(sel), "batched_forwards": patcher.forward_passes,
                  "seconds": time.perf_counter() - t0}
    ig = {m: g.edges_from_matrix(attribute(model, batch, "eap_ig", graph=g, steps=m, **opts)).double()[sel]
          for m in sorted({int(k) for k in ks} | {2 * int(k) for k in ks})}
    return {"d1": d1, "d2": d2, "o1": o1, "o2": o2, "exact": exact, "ig": ig, "secs": secs,
            "hvp_passes": hvp_passes, "exact_cost": exact_cost}


def gather_study_parts(parts: Sequence[tuple[dict, float]]) -> dict:
    """The whole batch's `study_parts` from every prompt shard's (parts, share of the prompts):
    the additive parts weighted and summed, seconds and passes summed. Refuses shares that do
    not sum to 1 (a shard missing or repeated) and parts of different points or edges."""
    if not parts:
        raise ValueError("no HVP study parts to gather")
    total = sum(float(w) for _, w in parts)
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"HVP study parts' prompt shares sum to {total}, not 1: a shard is missing or repeated")

    def wsum(vals):
        if isinstance(vals[0], Mapping):
            if len({tuple(sorted(v)) for v in vals}) != 1:
                raise ValueError(f"HVP study parts at different points: {[sorted(v) for v in vals]}")
            return {k: wsum([v[k] for v in vals]) for k in vals[0]}
        if len({tuple(v.shape) for v in vals}) != 1:
            raise ValueError(f"HVP study parts of different edge counts: {[tuple(v.shape) for v in vals]}")
        return sum(torch.as_tensor(v).double() * float(w) for v, (_, w) in zip(vals, parts))

    out = {k: wsum([p[k] for p, _ in parts]) for k in ADDITIVE_PARTS}
    out["secs"] = {r: {a: sum(p["secs"][r][a] for p, _ in parts) for a in parts[0][0]["secs"][r]}
                   for r in parts[0][0]["secs"]}
    out["hvp_passes"] = sum(int(p["hvp_passes"]) for p, _ in parts)
    first = parts[0][0]["exact_cost"]
    out["exact_cost"] = {"single_edge_patches": first["single_edge_patches"],
                         "batched_forwards": sum(int(p["exact_cost"]["batched_forwards"]) for p, _ in parts),
                         "seconds": sum(float(p["exact_cost"]["seconds"]) for p, _ in parts)}
    return out


def study_from_parts(parts: Mapping, g: Graph, eap_all: torch.Tensor, sel, *, ks: Sequence[int], threshold: float,
                     n_top: int, n_random: int, ig_rule: str, sff_steps: int | None = None, seed: int = 0,
                     reading: str = DEFAULT_READING, n_prompts: int) -> tuple[dict, dict]:
    """(detail, arrays) of `second_order_study` from its parts (`study_parts`, or gathered from
    prompt shards), the whole batch's EAP scores of every edge and the subset `sel`."""
    check_reading(reading)
    d1, d2, o1, o2, exact, ig, secs = (parts[k] for k in ("d1", "d2", "o1", "o2", "exact", "ig", "secs"))
    names = [g.edge_names[i] for i in sel]
    hvp_passes = parts["hvp_passes"]
    exact_cost = {**parts["exact_cost"], "seconds": round(float(parts["exact_cost"]["seconds"]), 3)}
    first = d1[0.0]
    K_fix = int(sff_steps or max(ks))
    blocks, r_arrays = {}, {}
    for r, (e1, e2) in (("per_component", (d1, d2)), ("one_pass", (o1, o2))):
        blocks[r], r_arrays[r] = reading_block(first, e1, e2, exact, ks, threshold, K_fix)
        for K in ks:
            pts = [round(k / int(K), 12) for k in range(int(K))]
            blocks[r]["multistep"][str(K)].update(reading_passes(r, K, len(sel), int(g.n_edges)),
                                                  seconds=round(sum(secs[r][a] for a in pts), 3))
    sel_block, sel_arrays = blocks[reading], r_arrays[reading]
    corrected, rho = torch.as_tensor(sel_arrays["corrected"]), torch.as_tensor(sel_arrays["rho"])
    multistep = {}
    for K in ks:
        hs = sel_block["multistep"][str(K)]
        comp = {r: error_stats(ig_from_derivatives(d1, 2 * int(K), r), exact) for r in IG_RULES
                if not (r == "trapezoid" and 2 * int(K) < 2)}
        eig = error_stats(ig[2 * int(K)], exact)
        multistep[str(K)] = {
            "hvp_mean_abs_err": hs["mean_abs_err"], "hvp_median_abs_err": hs["median_abs_err"],
            "hvp_max_share_of_mean": hs["max_share_of_mean"],
            "hvp_passes": passes("hvp", K),
            "ig_equal_passes_steps": 2 * int(K), "ig_rule": ig_rule,
            "ig_equal_passes_mean_abs_err": comp[ig_rule]["mean_abs_err"],
            "ig_equal_passes_median_abs_err": comp[ig_rule]["median_abs_err"],
            "ig_component": comp,
            "eap_ig_equal_passes_mean_abs_err": eig["mean_abs_err"],
            "eap_ig_equal_passes_median_abs_err": eig["median_abs_err"],
            "eap_ig_same_steps_mean_abs_err": float(errors(ig[int(K)], exact).mean()),
        }
    sff_exact = sff_from_scores(first, rho, exact, threshold, fix="exact")
    err = error_summary(first, corrected, exact)
    rel = reliability_summary(rho, first, exact)
    detail = {
        "n_prompts": int(n_prompts), "n_edges_total": int(g.n_edges), "n_edges": len(sel),
        "subset": {"n_top_abs_eap": min(n_top, len(sel)), "n_random": len(sel) - min(n_top, len(sel)),
                   "seed": seed},
        **err, **rel,
        "first_order_matches_eap": float((first - eap_all[sel]).abs().max()),
        "multistep": multistep,
        "sff": sel_block["sff"],
        "sff_exact": {k: v for k, v in sff_exact.items() if k not in ("estimate", "flagged")},
        "hvp_batched_passes": hvp_passes,
        "reading": reading,
        "readings": blocks,
        "exact_cost": exact_cost,
    }
    arrays = {"names": names, "exact": exact.numpy(), "first": first.numpy(), **sel_arrays,
              "corrected_by_reading": {r: a["corrected"] for r, a in r_arrays.items()}}
    return detail, arrays


def study_summary(tasks: Mapping[str, dict], arrays: Mapping[str, dict], ks: Sequence[int], threshold: float) -> dict:
    """Means over tasks of `second_order_study`'s details (the JSON's ``summary``), with the
    share of K at which the multi-step HVP beats IG at equal passes (mean and median error)."""
    mean = lambda *p: mean_over_tasks(tasks, p)  # noqa: E731
    all_first = np.concatenate([a["first"] for a in arrays.values()])
    all_corr = np.concatenate([a["corrected"] for a in arrays.values()])
    all_exact = np.concatenate([a["exact"] for a in arrays.values()])
    summary = {
        "mean_abs_err": {"first_order": mean("mean_abs_err", "first_order"), "corrected": mean("mean_abs_err", "corrected")},
        "median_rel_err": {"first_order": mean("median_rel_err", "first_order"),
                           "corrected": mean("median_rel_err", "corrected")},
        "frac_improved": float((errors(all_corr, all_exact) < errors(all_first, all_exact)).mean()),
        "corrected_over_first_err": mean("mean_abs_err", "corrected") / mean("mean_abs_err", "first_order"),
        "rho_spearman": mean("spearman_rho_vs_abs_err"),
        "rho_auroc": mean("auroc_top_errors"),
        "multistep": {K: {"hvp": mean("multistep", K, "hvp_mean_abs_err"),
                          "hvp_median": mean("multistep", K, "hvp_median_abs_err"),
                          "ig_equal_passes": mean("multistep", K, "ig_equal_passes_mean_abs_err"),
                          "ig_equal_passes_median": mean("multistep", K, "ig_equal_passes_median_abs_err"),
                          "ig_component": {r: {s_: mean("multistep", K, "ig_component", r, s_)
                                               for s_ in ("mean_abs_err", "median_abs_err")}
                                           for r in next(iter(tasks.values()))["multistep"][K]["ig_component"]},
                          "eap_ig_equal_passes": mean("multistep", K, "eap_ig_equal_passes_mean_abs_err"),
                          "eap_ig_equal_passes_median": mean("multistep", K, "eap_ig_equal_passes_median_abs_err"),
                          "eap_ig_same_steps": mean("multistep", K, "eap_ig_same_steps_mean_abs_err")}
                      for K in map(str, ks)},
        "sff": {v: {"frac_fixed": mean(k, "frac_fixed"), "mean_abs_err": mean(k, "mean_abs_err"),
                    "median_abs_err": mean(k, "median_abs_err"),
                    "mean_abs_err_first_order": mean(k, "mean_abs_err_first_order"),
                    "err_reduction": mean(k, "err_reduction"), "threshold": threshold, "fix": v}
                for k, v in (("sff", "hvp"), ("sff_exact", "exact"))},
        "n_edges_analysed": int(sum(t["n_edges"] for t in tasks.values())),
        "n_edges_total": int(sum(t["n_edges_total"] for t in tasks.values())),
    }
    summary["sff_exact"] = summary["sff"].pop("exact")
    summary["sff"] = summary["sff"].pop("hvp")
    summary["multistep_hvp_beats_ig_equal_passes"] = float(np.mean(
        [v["hvp"] < v["ig_equal_passes"] for v in summary["multistep"].values()]))
    summary["multistep_hvp_beats_ig_equal_passes_median"] = float(np.mean(
        [v["hvp_median"] < v["ig_equal_passes_median"] for v in summary["multistep"].values()]))
    summary["reading"] = next(iter(tasks.values()))["reading"]
    summary["readings"] = readings_summary(tasks, arrays, ks)
    return summary


def readings_summary(tasks: Mapping[str, dict], arrays: Mapping[str, dict], ks: Sequence[int]) -> dict:
    """Both HVP readings side by side (means over tasks of ``tasks.<t>.readings.<r>``; the
    improved share pooled over edges, as the top-level frac_improved), with measured seconds
    summed over tasks and exact patching's cost beside them."""
    all_first = np.concatenate([a["first"] for a in arrays.values()])
    all_exact = np.concatenate([a["exact"] for a in arrays.values()])
    out = {}
    for r in READINGS:
        mean = lambda *p: mean_over_tasks(tasks, ("readings", r) + p)  # noqa: E731
        corr = np.concatenate([a["corrected_by_reading"][r] for a in arrays.values()])
        better = errors(corr, all_exact) < errors(all_first, all_exact)
        out[r] = {
            "mean_abs_err": mean("mean_abs_err", "corrected"), "median_abs_err": mean("median_abs_err", "corrected"),
            "median_rel_err": mean("median_rel_err", "corrected"),
            "frac_improved": float(better.mean()), "n_improved": int(better.sum()), "n": int(len(better)),
            "rho_auroc": mean("auroc_top_errors"),
            "sff": {"err_reduction": mean("sff", "err_reduction"), "frac_fixed": mean("sff", "frac_fixed")},
            "multistep": {str(K): {"mean_abs_err": mean("multistep", str(K), "mean_abs_err"),
                                   "median_abs_err": mean("multistep", str(K), "median_abs_err"),
                                   "passes_subset": sum(t["readings"][r]["multistep"][str(K)]["passes_subset"]
                                                        for t in tasks.values()),
                                   "passes_all": sum(t["readings"][r]["multistep"][str(K)]["passes_all"]
                                                     for t in tasks.values()),
                                   "seconds": round(sum(t["readings"][r]["multistep"][str(K)]["seconds"]
                                                        for t in tasks.values()), 3)}
                          for K in ks},
        }
    out["first_order"] = {"mean_abs_err": mean_over_tasks(tasks, ("mean_abs_err", "first_order")),
                          "median_abs_err": mean_over_tasks(tasks, ("median_abs_err", "first_order")),
                          "median_rel_err": mean_over_tasks(tasks, ("median_rel_err", "first_order"))}
    out["exact"] = {"single_edge_patches": sum(t["exact_cost"]["single_edge_patches"] for t in tasks.values()),
                    "batched_forwards": sum(t["exact_cost"]["batched_forwards"] for t in tasks.values()),
                    "seconds": round(sum(t["exact_cost"]["seconds"] for t in tasks.values()), 3)}
    return out


def study_notes(n_top: int, n_random: int, ig_rule: str) -> dict:
    """The JSON's ``notes``: what each field of `second_order_study` measures, in words."""
    return {
        "subset": f"per task the {n_top} edges with the largest |EAP| plus {n_random} seeded random others; "
                  "every per-edge number is over that subset (per-edge HVPs for all edges x all multi-step "
                  "points do not fit the CPU budget)",
        "passes": "documented cost in gradient passes per component: EAP 1, K-step HVP 2K (K gradients + K "
                  "HVPs), per-component IG and EAP-IG with m points m; equal passes = HVP(K) vs IG(m = 2K)",
        "ig": f"ig_equal_passes: per-component IG, {ig_rule} rule, along each edge's own patch; "
              "eap_ig_*: EAP-IG on input embeddings (one shared path)",
        "sff": "Screen-Flag-Fix: flag rho > threshold; sff: flagged edges take the multi-step HVP estimate "
               "(the paper's fix); sff_exact: they take their exact effect; frac_fixed = fraction fixed",
        "auroc": "AUROC of rho for the top-decile |first-order error| edges of the subset (Mann-Whitney)",
        "multistep": "methods.hvp multi-step rule sum_k f'(k/K)/K + f''(k/K)/(2K^2) [open reading]",
        "readings": "the HVP's two readings (methods.hvp READINGS), both vs exact single-edge patching: "
                    "per_component (each edge's own 1/2 d^T H d, one HVP per edge) and one_pass (one HVP along "
                    "the whole graph's total patch, 1/2 d_e . (H d)_e, cross terms included); the top-level "
                    "fields are the setting `reading`'s; passes_subset / passes_all: documented passes over the "
                    "batch for the analysed edges / for every edge of the graph; seconds: measured wall time of "
                    "that reading's derivative sweep (loaded shared CPU)",
    }
