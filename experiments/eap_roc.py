"""EAP paper (Syed, Rager, Conmy 2023) Fig. 2: edge-level ROC of EAP, ACDC (task metric),
ACDC (KL) and exact single-edge patching against a reference circuit, per task.

EAP and exact patching: one point per distinct |score| (`circuits.roc.roc_points`). ACDC: one
full run per tau = 10**x, x = linspace(low_exp, high_exp, n) (`methods.acdc.acdc_sweep`),
padded with (0,0) and (1,1). Both AUCs are always written, ``auc_trapezoid`` and
``auc_pessimistic`` (ACDC's staircase over the Pareto-optimal points); ``auc`` is the one
named by the setting ``auc_rule`` (default: pessimistic, the rule of the authors' code for
every method of Fig. 2; `attrpatch.circuits.roc.DEFAULT_AUC_RULE` says where it was read).
Edges (setting ``edges``, `attrpatch.circuits.roc.EDGE_CONVENTIONS`, default the papers'):
"acdc" counts ACDC's graph, the q/k/v direct edges included: ACDC tests them
(`acdc_sweep(direct=True)`), EAP scores them as the authors' code does
(`qkv_direct.direct_atp_scores`), exact patching patches each whole input
(`qkv_direct.direct_effects`), and the reference gets ACDC's direct edges by ACDC's counting rule;
"plain" counts the graph's edges only. The main fields follow the setting;
``auc_by_edges.<acdc|plain>.<task>.<method>`` holds both AUC rules under both counts (ACDC's
other count is its same runs, counted the other way: with "plain", its direct edges by the
counting rule).
Scattered (spec.shards > 1): ACDC's runs, one per (task, ACDC metric, tau), are split into k
cost-balanced slices (`attrpatch.repro.cost.acdc_runs`, `attrpatch.repro.shards.run_shard`);
``--shard i --shards k`` runs slice i; ``--gather SHARD...`` puts each sweep back in tau order and
does the rest (a sweep's total forward passes and wall time are then its pieces' sums).
Tiny profile: the reference is exact patching on
held-out prompts ("reference: exact patching"), so the ``exact`` curve is the same method
on other prompts and is expected on top.

Circuits: per task and method, one circuit of spec.circuit_edges edges (default 30,
`circuits.run.DAG_CIRCUIT_EDGES`, declared in `repro/settings.py`): EAP and exact patching by EAP-IG's greedy selection,
pruned; ACDC the circuit of its tau sweep closest to that size. Each is measured by exact
patching on the same prompts, saved and drawn (`circuits.run.dag_circuit_paths`);
circuits.<task>.<method> in the JSON.
"""
import sys

import pandas as pd

from attrpatch.progress import tqdm

from attrpatch.circuits.exact_reference import LABEL, reference_mask
from attrpatch.circuits.roc import (EXACT_SUBSET_RULE, acdc_universe, auc_by_edges, check_auc_rule,
                                    check_edge_convention, circuit_roc_both, exact_edge_subset, score_roc_both,
                                    taus_from_spec)
from attrpatch.circuits.run import closest_circuit, save_dag_circuits, sized_circuit
from attrpatch.circuits.select import CIRCUIT_SELECTION
from attrpatch.io import save_figure, write_json
from attrpatch.methods.acdc import acdc_score_matrix, acdc_sweep
from attrpatch.methods.atp import direct_atp_scores
from attrpatch.methods.common import batch_mean
from attrpatch.methods.registry import attribute
from attrpatch.patching import Patcher
from attrpatch.qkv_direct import direct_effects, n_edges_with_direct, size_with_direct
from attrpatch.repro.context import Context, reference_path
from attrpatch.repro.paper_numbers import paper_numbers
from attrpatch.repro.cost import acdc_keys, acdc_runs, sweep_key
from attrpatch.repro.shards import gather_run_shards, run_shard, write_run_shard

PAPER_AUC = paper_numbers("eap_roc_auc")    # EAP paper Fig. 2 (paper_numbers.yaml)
ACDC_METRIC = {"acdc_task": "task", "acdc_kl": "kl"}


def acdc_edges(run):
    """The edges ACDC runs over in a run shard: all, or (acdc_max_edges) the top-|EAP| ones,
    chosen exactly as the unsharded run chooses them."""
    st = run.settings
    if not st["acdc_max_edges"]:
        return None
    eap = attribute(run.model, run.batch, method="eap", graph=run.graph, **run.opts)
    return acdc_universe(eap, run.graph, st["acdc_max_edges"])


def write_shard(ctx, args, direct: bool) -> None:
    """One shard job of the DAG: its slice of the (task, ACDC metric, tau) runs, one sweep per
    (task, metric) it touches, each task's model, batch and ACDC edges made once."""
    keys = {key: (task, m) for key, task, m in acdc_keys(ctx.spec, "eap_roc")}
    runs = acdc_runs(ctx.cfg, "eap_roc")
    mine = run_shard([r for r, _ in runs], [c for _, c in runs], args.shard, args.shards)
    task_runs, universes, parts = {}, {}, {}
    for key, ts in mine.items():
        task, m = keys[key]
        if task not in task_runs:
            task_runs[task] = ctx.task(task, ctx.task_models()[task])
            universes[task] = acdc_edges(task_runs[task])
        r = task_runs[task]
        parts[key] = acdc_sweep(r.model, r.graph, r.batch, ts, metric=ACDC_METRIC[m], progress=True,
                                edges=universes[task], direct=direct)
    write_run_shard(args.out, args.shard, args.shards, parts)


def main(argv=None):
    ctx, args = Context.from_args("eap_roc", argv)
    spec = ctx.spec
    methods = list(spec["methods"])
    taus = taus_from_spec(spec["taus"])
    n = spec["n"]
    circuit_edges = spec["circuit_edges"]
    rule = check_auc_rule(spec["auc_rule"])
    conv = check_edge_convention(spec["edges"])
    direct = conv == "acdc"
    out = {"reference_label": LABEL, "settings": {"n": n, "seed": ctx.seed, "taus": taus, "methods": methods,
                                                  "auc_rule": rule, "edges": conv, "circuit_edges": circuit_edges},
           "reference": {}, "auc": {}, "auc_trapezoid": {}, "auc_pessimistic": {}, "curves": {}, "acdc": {},
           "auc_by_edges": {"acdc": {}, "plain": {}}, "paper_auc": PAPER_AUC, "circuits": {}}
    keys = {key: (task, m) for key, task, m in acdc_keys(spec, "eap_roc")}     # "task/acdc_kl": one sweep
    if args.shard is not None:
        return write_shard(ctx, args, direct)
    sweeps = gather_run_shards(args.gather, {k: taus for k in keys}) if args.gather else {}
    for task, model_name in tqdm(ctx.task_models().items(), desc="eap_roc tasks"):
        run = ctx.task(task, model_name)
        model, graph, st, batch = run.model, run.graph, run.settings, run.batch
        ref_df = pd.read_csv(reference_path(ctx.profile, task, ctx.root))
        ref = reference_mask(ref_df, graph)
        if spec["n_by_task"]:
            out["settings"].setdefault("n_by_task", {})[task] = st["n"]
        out["reference"][task] = {"n_edges": graph.n_edges, "n_reference": int(ref.sum()),
                                  "n_edges_with_direct": n_edges_with_direct(graph),
                                  "n_reference_with_direct": size_with_direct(graph, ref),
                                  "source": str(ref_df["source"].iloc[0]), "model": model_name}
        curves, other, acdc_info, found = {}, {}, {}, {}
        eap = None
        if "eap" in methods or st["max_edges"] or st["acdc_max_edges"]:
            eap = attribute(model, batch, method="eap", graph=graph, **run.opts)

        def chunked(fn):
            return batch_mean(fn, batch, st["batch_size"])

        def both(scores, direct_scores, **kw):
            return score_roc_both(scores, ref, graph, direct_scores=direct_scores, convention=conv,
                                  auc_rule=rule, **kw)

        for method in methods:
            if method == "eap":
                curves[method], other[method] = both(eap, chunked(lambda sub: direct_atp_scores(model, graph, sub)))
                found[method] = (sized_circuit(eap, graph, circuit_edges), eap,
                                 {"selection": CIRCUIT_SELECTION, "n_requested": circuit_edges, "pruned": True})
            elif method == "exact":
                # max_edges (paper_random): exact patching and its ROC only on that edge subset
                sub = exact_edge_subset(eap, graph, st["max_edges"], seed=ctx.seed) if eap is not None else None
                scores = attribute(model, batch, method="exact", graph=graph,
                                   **({} if sub is None else {"edges": sub}))
                d_exact = chunked(lambda sub: direct_effects(Patcher(model, graph, sub), graph))
                curves[method], other[method] = both(scores, d_exact, edges=sub)
                found[method] = (sized_circuit(scores, graph, circuit_edges), scores,
                                 {"selection": CIRCUIT_SELECTION, "n_requested": circuit_edges, "pruned": True,
                                  **({} if sub is None else {"scored_edges": len(sub)})})
                if sub is not None:
                    curves[method]["limited"] = f"exact patching on {len(sub)} of {graph.n_edges} edges ({EXACT_SUBSET_RULE})"
            else:
                # acdc_max_edges (paper_random): ACDC only over the top-|EAP| edges
                uni = acdc_universe(eap, graph, st["acdc_max_edges"]) if eap is not None else None
                sw = (sweeps[sweep_key(task, method)] if sweeps else
                      acdc_sweep(model, graph, batch, taus, metric=ACDC_METRIC[method], progress=True, edges=uni,
                                 direct=direct))
                kept = [r.direct for r in sw.results] if direct else None
                curves[method], other[method] = circuit_roc_both(sw.masks, ref, graph, taus=taus, convention=conv,
                                                                 direct=kept, auc_rule=rule)
                k = closest_circuit(sw.masks, circuit_edges)
                found[method] = (sw.masks[k], acdc_score_matrix(sw.results[k].history, graph),
                                 {"selection": f"ACDC tau={taus[k]:g}, the sweep's circuit closest to "
                                               f"{circuit_edges} edges", "tau": taus[k],
                                  "score": "ACDC's loss change when the edge was tested"})
                acdc_info[method] = {"tau": taus, "forward_passes": [r.forward_passes for r in sw.results],
                                     "n_edges": [r.n_edges for r in sw.results],
                                     "n_edges_with_direct": [r.n_edges_with_direct if direct else
                                                             size_with_direct(graph, r.mask)
                                                             for r in sw.results],
                                     "direct_tested": direct,
                                     "total_forward_passes": sw.forward_passes, "wall_s": sw.wall_s}
                if uni is not None:
                    acdc_info[method]["limited"] = (f"ACDC over the {int(uni.sum())} edges of largest |EAP| "
                                                    f"of {graph.n_edges}")
        out["curves"][task] = curves
        out["circuits"][task] = save_dag_circuits(model, graph, batch, found, exp="eap_roc", task=task,
                                                  model_name=model_name, out_json=args.out, figure_png=args.figure)
        out["acdc"][task] = acdc_info
        out["auc"][task] = {m: c["auc"] for m, c in curves.items()}
        out["auc_trapezoid"][task] = {m: c["auc_trapezoid"] for m, c in curves.items()}
        out["auc_pessimistic"][task] = {m: c["auc_pessimistic"] for m, c in curves.items()}
        for c, aucs in auc_by_edges(curves, other).items():
            out["auc_by_edges"][c][task] = aucs
    if "eap" in methods:
        out["min_auc_eap"] = min(a["eap"] for a in out["auc"].values())
    if args.figure:
        from attrpatch.plots.roc import plot_roc_panels

        fig = plot_roc_panels(out["curves"], out["auc"], PAPER_AUC, auc_rule=rule, edges=conv,
                              reference_label=LABEL, ref_sizes=out["reference"],
                              suptitle=f"EAP paper Fig. 2, {ctx.profile} profile, {n} prompts, AUC: {rule}, "
                                       f"edges: {conv}")
        save_figure(fig, args.figure)
    write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
