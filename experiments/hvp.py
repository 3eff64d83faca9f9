"""Second-order (HVP) correction of attribution patching ("When Attribution Patching Lies").

Per task: on a documented edge subset (top |EAP| + a seeded random sample; see
`attrpatch.analysis.second_order`), exact edge effects, first-order (EAP), HVP-corrected
estimates and the reliability rho; errors before/after; how rho flags bad estimates;
multi-step HVP vs IG at equal (documented) passes, mean and median error; Screen-Flag-Fix.

Comparator (setting ``ig``, default per-component IG with the ``ig_rule`` quadrature, default
midpoint: `methods.hvp.per_component_ig_scores`, each edge integrated along its own patch, the
IG the paper calls prohibitive at scale): ``multistep.<K>.ig_equal_passes`` is that IG with
m = 2K gradient passes; every rule (left, midpoint, trapezoid) is under ``ig_component``, and
EAP-IG on input embeddings (one path shared by all edges, which does not converge to an edge's
own effect) under ``eap_ig_equal_passes``. Screen-Flag-Fix: ``sff`` fixes flagged edges with
the paper's fix, the multi-step HVP with K = ``sff_steps`` (default the largest K);
``sff_exact`` is the named variant that patches them exactly (zero error on them by
construction).
"""
import sys
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from attrpatch.progress import tqdm

from attrpatch.analysis import second_order as so
from attrpatch.io import save_figure, write_json
from attrpatch.methods.common import output_differences
from attrpatch.methods.hvp import IG_RULES, directional_derivatives, reliability
from attrpatch.methods.registry import attribute
from attrpatch.metrics import resolve_metric
from attrpatch.patching import Patcher, default_rows_per_forward
from attrpatch.plots.second_order import plot_hvp
from attrpatch.repro.context import Context


def run_task(ctx, task, model_name, ks, threshold, n_top, n_random, ig_rule, sff_steps=None):
    t0 = time.time()
    run = ctx.task(task, model_name)
    model, batch, g, opts = run.model, run.batch, run.graph, run.opts
    eap_all = g.edges_from_matrix(attribute(model, batch, "eap", graph=g, **opts)).double()
    sel = so.edge_subset(eap_all, n_top, n_random, seed=ctx.seed)
    edges = g.edge_index[torch.as_tensor(sel)]
    names = [g.edge_names[i] for i in sel]
    metric = resolve_metric(model, batch, "task")
    base, _, diff, _ = output_differences(model, g, batch)
    d1, d2, hvp_passes = {}, {}, 0
    for a in tqdm(so.multistep_alphas(ks), desc=f"{task}: HVP points", leave=False):
        f1, f2, p = directional_derivatives(model, g, base, diff, metric, edges, torch.full((len(sel),), a),
                                            rows_per_forward=default_rows_per_forward(model))
        d1[a], d2[a], hvp_passes = f1, f2, hvp_passes + p
    ig_ms = sorted({2 * int(k) for k in ks})
    ig_alphas = sorted(set().union(*[so.ig_alphas(ig_ms, r) for r in IG_RULES]) - set(d1))
    for a in tqdm(ig_alphas, desc=f"{task}: IG points", leave=False):
        f1, _, p = directional_derivatives(model, g, base, diff, metric, edges, torch.full((len(sel),), a),
                                           rows_per_forward=default_rows_per_forward(model), second=False)
        d1[a], hvp_passes = f1, hvp_passes + p
    first, second = d1[0.0], 0.5 * d2[0.0]
    corrected, rho = first + second, reliability(first, second)
    exact = Patcher(model, g, batch, metric).edge_effects(edges).double()
    ig, ig_passes = {}, sorted({int(k) for k in ks} | {2 * int(k) for k in ks})
    for m in ig_passes:
        ig[m] = g.edges_from_matrix(attribute(model, batch, "eap_ig", graph=g, steps=m, **opts)).double()[sel]
    multistep = {}
    for K in ks:
        est = so.multistep_from_derivatives(d1, d2, K)
        hs = so.error_stats(est, exact)
        comp = {r: so.error_stats(so.ig_from_derivatives(d1, 2 * int(K), r), exact) for r in IG_RULES
                if not (r == "trapezoid" and 2 * int(K) < 2)}
        eig = so.error_stats(ig[2 * int(K)], exact)
        multistep[str(K)] = {
            "hvp_mean_abs_err": hs["mean_abs_err"], "hvp_median_abs_err": hs["median_abs_err"],
            "hvp_max_share_of_mean": hs["max_share_of_mean"],
            "hvp_passes": so.passes("hvp", K),
            "ig_equal_passes_steps": 2 * int(K), "ig_rule": ig_rule,
            "ig_equal_passes_mean_abs_err": comp[ig_rule]["mean_abs_err"],
            "ig_equal_passes_median_abs_err": comp[ig_rule]["median_abs_err"],
            "ig_component": comp,
            "eap_ig_equal_passes_mean_abs_err": eig["mean_abs_err"],
            "eap_ig_equal_passes_median_abs_err": eig["median_abs_err"],
            "eap_ig_same_steps_mean_abs_err": float(so.errors(ig[int(K)], exact).mean()),
        }
    K_fix = int(sff_steps or max(ks))
    sff = so.sff_from_scores(first, rho, exact, threshold, fix="hvp",
                             fixed=so.multistep_from_derivatives(d1, d2, K_fix))
    sff["hvp_steps"] = K_fix
    sff_exact = so.sff_from_scores(first, rho, exact, threshold, fix="exact")
    err = so.error_summary(first, corrected, exact)
    rel = so.reliability_summary(rho, first, exact)
    detail = {
        "model": model_name, "n_prompts": len(batch), "n_edges_total": int(g.n_edges), "n_edges": len(sel),
        "subset": {"n_top_abs_eap": min(n_top, len(sel)), "n_random": len(sel) - min(n_top, len(sel)),
                   "seed": ctx.seed},
        **err, **rel,
        "first_order_matches_eap": float((first - eap_all[sel]).abs().max()),
        "multistep": multistep,
        "sff": {k: v for k, v in sff.items() if k not in ("estimate", "flagged")},
        "sff_exact": {k: v for k, v in sff_exact.items() if k not in ("estimate", "flagged")},
        "hvp_batched_passes": hvp_passes,
        "seconds": round(time.time() - t0, 2),
    }
    arrays = {"names": names, "exact": exact.numpy(), "first": first.numpy(), "corrected": corrected.numpy(),
              "rho": rho.numpy(), "sff": sff["estimate"], "flagged": sff["flagged"]}
    return detail, arrays


def summarize(tasks, arrays, ks, threshold):
    mean = lambda *p: so.mean_over_tasks(tasks, p)  # noqa: E731
    all_first = np.concatenate([a["first"] for a in arrays.values()])
    all_corr = np.concatenate([a["corrected"] for a in arrays.values()])
    all_exact = np.concatenate([a["exact"] for a in arrays.values()])
    summary = {
        "mean_abs_err": {"first_order": mean("mean_abs_err", "first_order"), "corrected": mean("mean_abs_err", "corrected")},
        "median_rel_err": {"first_order": mean("median_rel_err", "first_order"),
                           "corrected": mean("median_rel_err", "corrected")},
        "frac_improved": float((so.errors(all_corr, all_exact) < so.errors(all_first, all_exact)).mean()),
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
    return summary


def main(argv=None):
    ctx, args = Context.from_args("hvp", argv)
    spec = ctx.spec
    ks = [int(k) for k in spec["multistep"]]
    threshold = float(spec["threshold"])
    ig_rule, sff_steps = spec["ig_rule"], spec["sff_steps"]
    n_top, n_random = spec["subset"]["top"], spec["subset"]["random"]
    if spec["max_edges"]:      # paper_random: max_edges exact patches, half top |EAP| (replaces subset)
        k = spec["max_edges"]
        n_top, n_random = k // 2, k - k // 2

    def run(items):
        tasks, arrays = {}, {}
        for task, model_name in tqdm(items, desc="hvp tasks"):
            tasks[task], arrays[task] = run_task(ctx, task, model_name, ks, threshold, n_top, n_random, ig_rule,
                                                 sff_steps)
        return tasks, arrays

    items = list(ctx.task_models().items())
    tasks, arrays = run(items)
    summary = summarize(tasks, arrays, ks, threshold)
    # spec.models (paper profiles): every task again on each further model, under by_model.<model>
    by_model = {}
    for extra in spec["models"]:
        if all(extra == m for _, m in items):
            continue
        t2, a2 = run([(t, extra) for t, _ in items])
        by_model[extra] = {"summary": summarize(t2, a2, ks, threshold), "tasks": t2}
    out = {
        "summary": summary,
        "tasks": tasks,
        **({"by_model": by_model} if spec["models"] else {}),
        "notes": {
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
        },
    }
    write_json(args.out, out)
    if args.figure:
        save_figure(plot_hvp(arrays, tasks, summary, threshold=threshold, profile=ctx.profile), args.figure)


if __name__ == "__main__":
    sys.exit(main())
