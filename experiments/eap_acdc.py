"""EAP paper Fig. 5 / Sec. 5.2: ACDC on the subgraph EAP keeps vs EAP alone.

For each task: EAP scores once; for each keep fraction f (spec.eap_keep_fractions; the top
f of edges by |score|, f = 1 is plain ACDC) and each tau (spec.taus), ACDC on that subgraph
(`methods.acdc.eap_then_acdc`, task metric, one cached Patcher per task). Each result's
TPR/FPR against the reference and its ACDC forward-pass count are written, with EAP alone
at the same number of edges (top-n by |score|). Summary per task: the best TPR - FPR of
EAP -> ACDC (f < 1), of EAP alone at those same edge counts, and of plain ACDC;
``mean_forward_pass_ratio`` = mean over tasks, f < 1 and tau of passes(f, tau) /
passes(1, tau).

Edges (setting ``edges``, `attrpatch.circuits.roc.EDGE_CONVENTIONS`, default the paper's): "acdc"
runs on ACDC's graph as the authors' code does (Aaquib111/acdcpp: EAP thresholds ACDC's edges,
q/k/v direct edges included, scored by `qkv_direct.direct_atp_scores`; ACDC then tests the kept
direct edges, `eap_then_acdc_sweep(direct=True)`): keep fractions, sizes and TPR/FPR count
edges + direct edges (the reference's by ACDC's counting rule); "plain": the graph's edges.

Scattered (spec.shards > 1): the ACDC runs, one per (task, keep fraction, tau), each equal to a
standalone run, are split into k cost-balanced slices (`attrpatch.repro.cost.acdc_runs`,
`attrpatch.repro.shards.run_shard`); ``--shard i --shards k`` runs slice i (EAP once per task it
touches); ``--gather SHARD...`` takes the runs from the shards and does the rest, EAP included.
"""
import sys

import numpy as np
import pandas as pd
from attrpatch.progress import tqdm

from attrpatch.circuits.exact_reference import LABEL, reference_mask
from attrpatch.circuits.roc import (acdc_universe, best_tpr_minus_fpr, check_edge_convention, keep_threshold,
                                    mask_rates, taus_from_spec, topn_rates)
from attrpatch.io import save_figure, write_json
from attrpatch.methods.acdc import AcdcSweep, eap_then_acdc_sweep, make_patcher
from attrpatch.methods.atp import direct_atp_scores
from attrpatch.methods.common import chunks
from attrpatch.methods.registry import attribute
from attrpatch.qkv_direct import n_edges_with_direct, size_with_direct
from attrpatch.repro.context import Context, reference_path
from attrpatch.repro.cost import acdc_keys, acdc_runs, sweep_key
from attrpatch.repro.shards import gather_run_shards, run_shard, write_run_shard


def _fkey(f: float) -> str:
    """Keep-fraction key without dots (claims use dotted paths): 0.1 -> "f10"."""
    return f"f{round(100 * f):d}"


def _tkey(tau: float) -> str:
    """tau key without dots: 0.003 -> "tau_3e-03"."""
    return f"tau_{tau:.0e}"


def eap_first(run, direct):
    """(EAP scores, direct-edge EAP scores or None, plain ACDC's edge universe or None) of a task:
    what every keep fraction's ACDC runs start from."""
    st = run.settings
    scores = attribute(run.model, run.batch, method="eap", graph=run.graph, **run.opts)
    d_scores = (sum(w * direct_atp_scores(run.model, run.graph, sub) for sub, w in chunks(run.batch, st["batch_size"]))
                if direct else None)
    # acdc_max_edges (paper_random): "plain ACDC" (f = 1) runs over the top-|EAP| edges only
    return scores, d_scores, acdc_universe(scores, run.graph, st["acdc_max_edges"])


def eap_threshold(run, scores, d_scores, uni, f: float) -> float:
    """The |EAP| threshold keeping fraction f (plain ACDC under acdc_max_edges: its universe's)."""
    if f >= 1.0 and uni is not None:
        return float(scores.detach().cpu().double().abs()[uni].min())
    return keep_threshold(scores, run.graph, f, direct_scores=d_scores)


def run_sweep(run, scores, d_scores, uni, f, taus, patcher, direct) -> AcdcSweep:
    """EAP -> ACDC at keep fraction f and these taus (`eap_then_acdc_sweep`, runs in lockstep,
    each equal to a standalone run); the sweep's forward passes: the runs' standalone counts summed."""
    res = eap_then_acdc_sweep(run.model, run.graph, run.batch, scores, eap_threshold(run, scores, d_scores, uni, f),
                              taus, patcher=patcher, direct=direct, direct_scores=d_scores)
    return AcdcSweep([float(t) for t in taus], res, sum(r.forward_passes for r in res), sum(r.wall_s for r in res))


def write_shard(ctx, args, direct):
    """One shard job of the DAG: its slice of the (task, fraction, tau) runs, EAP once per task."""
    keys = {key: (task, f) for key, task, f in acdc_keys(ctx.spec, "eap_acdc")}
    runs = acdc_runs(ctx.cfg, "eap_acdc")
    mine = run_shard([r for r, _ in runs], [c for _, c in runs], args.shard, args.shards)
    tasks, parts = {}, {}
    for key, ts in mine.items():
        task, f = keys[key]
        if task not in tasks:
            run = ctx.task(task, ctx.task_models()[task])
            tasks[task] = (run, *eap_first(run, direct), make_patcher(run.model, run.graph, run.batch, "task"))
        run, scores, d_scores, uni, patcher = tasks[task]
        parts[key] = run_sweep(run, scores, d_scores, uni, f, ts, patcher, direct)
    write_run_shard(args.out, args.shard, args.shards, parts)


def main(argv=None):
    ctx, args = Context.from_args("eap_acdc", argv)
    spec = ctx.spec
    n = spec["n"]
    fractions = sorted(float(f) for f in spec["eap_keep_fractions"])
    if 1.0 not in fractions:
        fractions.append(1.0)          # plain ACDC: the baseline for the forward-pass ratio
    taus = taus_from_spec(spec["taus"])
    conv = check_edge_convention(spec["edges"])
    direct = conv == "acdc"
    if args.shard is not None:
        return write_shard(ctx, args, direct)
    sweeps = (gather_run_shards(args.gather, {k: taus for k, _, _ in acdc_keys(spec, "eap_acdc")})
              if args.gather else {})
    out = {"reference_label": LABEL, "keys": "forward_passes.<task>.f<percent kept>.tau_<tau %.0e>",
           "settings": {"n": n, "seed": ctx.seed, "fractions": fractions, "taus": taus,
                                                  "metric": "task", "edges": conv},
           "reference": {}, "points": {}, "forward_passes": {}, "summary": {}}
    ratios = []
    jobs = [(t, m) for t, m in ctx.task_models().items()]
    bar = tqdm(total=len(jobs) * len(fractions) * len(taus), desc="eap_acdc (task, f, tau)")
    for task, model_name in jobs:
        run = ctx.task(task, model_name)
        model, graph, st, batch = run.model, run.graph, run.settings, run.batch
        ref = reference_mask(pd.read_csv(reference_path(ctx.profile, task, ctx.root)), graph)
        out["reference"][task] = {"n_edges": graph.n_edges, "n_reference": int(ref.sum()), "model": model_name,
                                  "n_edges_with_direct": n_edges_with_direct(graph),
                                  "n_reference_with_direct": size_with_direct(graph, ref)}
        if spec["n_by_task"]:
            out["settings"].setdefault("n_by_task", {})[task] = st["n"]
        scores, d_scores, uni = eap_first(run, direct)
        if uni is not None:
            out["reference"][task]["plain_acdc_limited_to"] = int(uni.sum())
        patcher = None if sweeps else make_patcher(model, graph, batch, "task")
        rows, fp = [], {}
        for f in fractions:
            thr = eap_threshold(run, scores, d_scores, uni, f)
            fp[_fkey(f)] = {}
            sw = sweeps[sweep_key(task, f)] if sweeps else run_sweep(run, scores, d_scores, uni, f, taus, patcher, direct)
            for tau, res in zip(taus, sw.results):
                r = mask_rates(res.mask, ref, graph, direct=[res.direct] if direct else None).iloc[0]
                e = topn_rates(scores, ref, graph, [int(r.n_edges)], direct_scores=d_scores).iloc[0]
                rows.append({"fraction": f, "tau": tau, "eap_threshold": thr,
                             "n_kept_by_eap": int(res.extra.get("n_edges_after_eap", graph.n_edges))
                             + int(res.extra.get("n_direct_after_eap", 0 if not direct else
                                                 n_edges_with_direct(graph) - graph.n_edges)),
                             "n_edges": int(r.n_edges), "n_edges_plain": res.n_edges,
                             "forward_passes": res.forward_passes,
                             "tpr": float(r.tpr), "fpr": float(r.fpr),
                             "eap_tpr": float(e.tpr), "eap_fpr": float(e.fpr)})
                fp[_fkey(f)][_tkey(tau)] = res.forward_passes
                bar.update()
        df = pd.DataFrame(rows)
        sub, plain = df[df.fraction < 1.0], df[df.fraction >= 1.0]
        for tau in taus:
            base = float(plain.loc[plain.tau == tau, "forward_passes"].iloc[0])
            ratios += [float(x) / base for x in sub.loc[sub.tau == tau, "forward_passes"]]
        s = {
            "best_tpr_minus_fpr": {"eap_acdc": best_tpr_minus_fpr(sub.tpr, sub.fpr),
                                   "eap_alone": best_tpr_minus_fpr(sub.eap_tpr, sub.eap_fpr),
                                   "plain_acdc": best_tpr_minus_fpr(plain.tpr, plain.fpr),
                                   "eap_alone_at_plain_acdc_sizes": best_tpr_minus_fpr(plain.eap_tpr, plain.eap_fpr)},
            # share of (f < 1, tau) points where EAP->ACDC's TPR-FPR >= EAP alone's at the same size
            "frac_points_eap_acdc_ge_eap_alone": float(np.mean((sub.tpr - sub.fpr) >= (sub.eap_tpr - sub.eap_fpr) - 1e-12))
            if len(sub) else None,
            "forward_passes_eap_acdc_total": int(sub.forward_passes.sum()),
            "forward_passes_plain_acdc_total": int(plain.forward_passes.sum()),
        }
        s["best_tpr_minus_fpr"]["eap_acdc_minus_eap_alone"] = (s["best_tpr_minus_fpr"]["eap_acdc"]
                                                               - s["best_tpr_minus_fpr"]["eap_alone"])
        out["summary"][task] = s
        out["points"][task] = df.to_dict("records")
        out["forward_passes"][task] = fp
    bar.close()
    out["mean_forward_pass_ratio"] = float(np.mean(ratios)) if ratios else None
    if args.figure:
        from attrpatch.plots.roc import plot_eap_acdc

        fig = plot_eap_acdc(out["points"], edges=conv, summary=out["summary"], ratio=out["mean_forward_pass_ratio"],
                            suptitle=f"EAP paper Fig. 5: EAP -> ACDC vs EAP alone, {ctx.profile} profile, {n} prompts, "
                                     f"ACDC metric: {out['settings']['metric']}, edges: {conv}, "
                                     f"taus {', '.join(f'{t:g}' for t in taus)}")
        save_figure(fig, args.figure)
    write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
