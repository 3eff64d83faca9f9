"""EAP vs. EAP-IG: normalized faithfulness vs. number of edges on six tasks (Hanna, Pezzelle,
Belinkov 2024), and the Pearson r of |score| with |exact single-edge effect|.

Per task (spec.tasks), on spec.n prompts: scores of every method in spec.methods (EAP-IG
variants with m = spec.steps; default the paper's three curves: EAP, EAP-IG and EAP-IG-KL,
i.e. EAP-IG scoring the KL divergence to the clean output averaged over the vocabulary,
``kl_div(...).mean(-1)`` in metrics.py of hannamw/eap-ig-faithfulness, run as the third
graph of its pareto.py: `attrpatch.metrics.kl_metric`) and of spec.extra_methods (default
EAP-IG on activations: not a curve of the paper, drawn marked as an extra; no circuits), circuits selected by spec.selection (default "greedy", the
paper's greedy growth from logits; "topn" possible), pruned, evaluated by
`circuits.faithfulness.faithfulness_curve` on one shared Patcher per task (clean/corrupted runs cached
once for all methods and for the exact single-edge effects). Edge counts in the curve are
after pruning; `faith_at.<n>` is keyed by the requested budget n.

Tasks ``<task>_eapig`` read the paper's own prompt files (attrpatch.tasks.eapig_files).
Scattered (spec.shards > 1): ``--shard i --shards k`` writes every task's scores on prompt chunk i
of k; ``--gather SHARD...`` puts them together and runs the rest (`attrpatch.repro.shards`).

JSON fields: tasks.<task>.{m_clean, m_corrupt} (mean clean / corrupted metric: the paper's
`baseline` / `corrupted_baseline`), tasks.<task>.data (source file, rows kept / rejected per
reason, BOS), tasks.<task>.methods.<method>.{curve, auc, auc_log, faith_at.<n>,
min_edges_for_f085, pearson, pearson_signed, spearman}; shortcuts auc.<task>.<method>,
pearson.<task>.<method>; MIB's scores tasks.<task>.methods.<method>.{cpr, cmd, mib_curves}
and shortcuts cpr.<task>.<method>, cmd.<task>.<method> (`attrpatch.circuits.mib_metrics`); summary.{mean_auc, mean_auc_log, mean_pearson, min_pearson,
max_pearson}.<method>, summary.vs_eap.<method> (wins, ties, losses against EAP's AUC with the
setting tie_margin: `circuits.curves.compare`; vs_eap_log on the log-edge AUC),
summary.n_tasks_ig_beats_eap (EAP-IG's wins: AUC > EAP's + tie_margin),
summary.n_tasks_igact_beats_eap, summary.n_tasks_igkl_beats_eap (and _log, and the mean AUC gaps
mean_auc_gap_<ig|igact|igkl>_minus_eap), summary.n_tasks_ig_beats_eap_log, summary.n_tasks.
Every curve, extras included, is faithfulness under the task's own metric (as pareto.py
evaluates all three graphs); only the scoring metric differs.

Circuits: per task and method, the circuit of spec.circuit_edges edges (default 30,
`circuits.run.DAG_CIRCUIT_EDGES`, declared in `repro/settings.py`; same selection, pruned), measured by exact patching on the
same prompts, saved and drawn (`circuits.run.dag_circuit_paths`); tasks.<task>.circuits.<method>.
"""
import sys
import time

import torch

from attrpatch.progress import tqdm

from attrpatch.circuits import curves as F
from attrpatch.circuits.faithfulness import method_curves
from attrpatch.circuits.run import save_dag_circuits, sized_circuit
from attrpatch.io import save_figure, write_json
from attrpatch.circuits.mib_metrics import SOURCE as MIB_SOURCE, methods_cpr_cmd
from attrpatch.plots.faithfulness import plot_faith_panels
from attrpatch.repro.context import Context
from attrpatch.repro.paper_numbers import paper_numbers
from attrpatch.repro.shards import gather_score_shards, gathered_scores, score_key, score_prompt_shard, write_score_shard
from attrpatch.tasks.eapig_files import describe


def main(argv=None):
    ctx, args = Context.from_args("eapig_faith", argv)
    spec = ctx.spec
    methods = list(spec["methods"])
    extras = [m for m in dict.fromkeys(spec["extra_methods"]) if m not in methods]
    curve_methods = methods + extras
    steps, n, selection = spec["steps"], spec["n"], spec["selection"]
    circuit_edges = spec["circuit_edges"]
    tie_margin = spec["tie_margin"]
    t_start = time.perf_counter()

    tasks_out, curves, aucs, n_total = {}, {}, {}, {}
    items = list(ctx.task_models().items())
    if args.shard is not None:     # one prompt-shard job of the DAG: every task's scores on its prompts
        write_score_shard(args.out, args.shard, args.shards, {
            score_key(t, m): score_prompt_shard(r.model, r.graph, r.batch, curve_methods, args.shard, args.shards,
                                                steps=steps, batch_size=r.settings["batch_size"])
            for t, m in items for r in [ctx.task(t, m, edge_counts=True)]})
        return
    gathered = gather_score_shards(args.gather) if args.gather else {}
    bar = tqdm(total=len(items), desc="eapig_faith", unit="task")
    for task, model_name in items:
        bar.set_description(f"eapig_faith {task}")
        run = ctx.task(task, model_name, edge_counts=True)
        st = run.settings
        res = method_curves(run.model, run.graph, run.batch, curve_methods, st["edge_counts"], steps=steps, selection=selection,
                              exact=st["exact"], batch_size=st["batch_size"], progress=bar.set_postfix_str,
                              scores=gathered_scores(gathered, task, model_name))
        summ = F.task_summary(res, st["edge_counts"])
        mib = methods_cpr_cmd(run.model, run.graph, run.batch, {m: d["scores"] for m, d in res["methods"].items()})
        for m, r in mib.items():
            summ["methods"][m].update(cpr=r["cpr"], cmd=r["cmd"], mib_curves={"signed": r["curve_signed"], "abs": r["curve_abs"]})
        summ.update(model=model_name, n=st["n"], edge_counts=st["edge_counts"], data=describe(run.batch))
        summ["forward_passes"] = res["forward_passes"]
        summ["circuits"] = save_dag_circuits(
            run.model, run.graph, run.batch,
            {m: (sized_circuit(run.graph.matrix_from_edges(torch.as_tensor(d["scores"])), run.graph, circuit_edges,
                               selection),
                 run.graph.matrix_from_edges(torch.as_tensor(d["scores"])),
                 {"selection": selection, "n_requested": circuit_edges, "pruned": True, "steps": steps})
             for m, d in res["methods"].items() if m in methods},
            exp="eapig_faith", task=task, model_name=model_name, out_json=args.out, figure_png=args.figure)
        tasks_out[task] = summ
        curves[task] = {m: d["curve"] for m, d in summ["methods"].items()}
        aucs[task] = {m: d["auc"] for m, d in summ["methods"].items()}
        n_total[task] = summ["n_edges_total"]
        bar.update(1)
    bar.close()

    def per_method(key):
        return {m: [tasks_out[t]["methods"][m][key] for t in tasks_out] for m in curve_methods}

    auc = per_method("auc")
    auc_log = per_method("auc_log")
    pear = {m: [tasks_out[t]["methods"][m].get("pearson", float("nan")) for t in tasks_out] for m in curve_methods}
    summary = {
        "n_tasks": len(tasks_out),
        "mean_auc": {m: F.mean_finite(v) for m, v in auc.items()},
        "mean_auc_log": {m: F.mean_finite(v) for m, v in auc_log.items()},
        "mean_cpr": {m: F.mean_finite(v) for m, v in per_method("cpr").items()},
        "mean_cmd": {m: F.mean_finite(v) for m, v in per_method("cmd").items()},
        "mean_pearson": {m: F.mean_finite(v) for m, v in pear.items()},
        "min_pearson": {m: min(v, default=float("nan")) for m, v in pear.items()},
        "max_pearson": {m: max(v, default=float("nan")) for m, v in pear.items()},
    }
    if "eap" in methods:
        eap_auc = {t: tasks_out[t]["methods"]["eap"]["auc"] for t in tasks_out}
        eap_log = {t: tasks_out[t]["methods"]["eap"]["auc_log"] for t in tasks_out}
        for m, key in (("eap_ig", "ig"), ("eap_ig_activations", "igact"), ("eap_ig_kl", "igkl")):
            if m in curve_methods:
                a = {t: tasks_out[t]["methods"][m]["auc"] for t in tasks_out}
                al = {t: tasks_out[t]["methods"][m]["auc_log"] for t in tasks_out}
                # wins beyond the tie margin (spec.tie_margin); ties and losses under vs_eap
                cmp, cmp_log = F.compare(a, eap_auc, tie_margin), F.compare(al, eap_log, tie_margin)
                summary.setdefault("vs_eap", {})[m] = cmp
                summary.setdefault("vs_eap_log", {})[m] = cmp_log
                summary[f"n_tasks_{key}_beats_eap"] = cmp["n_wins"]
                summary[f"n_tasks_{key}_beats_eap_log"] = cmp_log["n_wins"]
                summary[f"mean_auc_gap_{key}_minus_eap"] = summary["mean_auc"][m] - summary["mean_auc"]["eap"]

    out = {
        "profile": ctx.profile, "n": n, "steps": steps, "selection": selection, "methods": methods,
        "extra_methods": extras,
        "circuit_edges": circuit_edges, "tie_margin": tie_margin,
        "edge_counts": spec.get("edge_counts"), "pruned": True,
        "auc_definition": "trapezoid area under F vs pruned-edge fraction, anchored (0,0) and (1,1), x-range [0,1]",
        "tasks": tasks_out,
        "auc": {t: {m: d["auc"] for m, d in tasks_out[t]["methods"].items()} for t in tasks_out},
        "cpr": {t: {m: d["cpr"] for m, d in tasks_out[t]["methods"].items()} for t in tasks_out},
        "cmd": {t: {m: d["cmd"] for m, d in tasks_out[t]["methods"].items()} for t in tasks_out},
        "cpr_cmd_definition": f"MIB's CPR (signed top-n) and CMD (|score| top-n) at fixed edge fractions ({MIB_SOURCE})",
        "pearson": {t: {m: d.get("pearson") for m, d in tasks_out[t]["methods"].items()} for t in tasks_out},
        "summary": summary,
        "paper": {"points": paper_numbers("eapig_points"), "pearson_range": paper_numbers("eapig_pearson")},
        "seconds": time.perf_counter() - t_start,
    }
    pr = paper_numbers("eapig_pearson")
    paper_line = (f"paper: Pearson r(|score|, |exact|) EAP {pr['eap'][0]}-{pr['eap'][1]}, "
                  f"EAP-IG {pr['eap_ig'][0]}-{pr['eap_ig'][1]}")
    ours = ", ".join(f"{m} {summary['min_pearson'][m]:.2f}-{summary['max_pearson'][m]:.2f}" for m in curve_methods)
    fig = plot_faith_panels(
        curves, aucs, paper_numbers("eapig_notes"), n_total=n_total,
        extras={m: f"{m} [extra_methods: not the paper's]" for m in extras},
        suptitle=(f"Faithfulness of {', '.join(methods)}"
                  + (f" (+ extra_methods: {', '.join(extras)})" if extras else "")
                  + f" ({ctx.profile}; n={n}, m={steps}, {selection} selection, pruned)\n"
                  f"{paper_line}; ours: {ours}"))
    save_figure(fig, args.figure)
    write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
