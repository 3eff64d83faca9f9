"""EAP-GP vs. EAP-IG: faithfulness gain of the adaptive GradPath (Zhang et al. 2025, "up to
17.7%" better faithfulness than EAP-IG).

Per task (spec.tasks), on spec.n prompts: scores of spec.methods (eap_ig, eap_gp; m = k =
spec.steps), circuits by spec.selection (default "greedy", pruned), faithfulness curves on one
shared Patcher per task (clean/corrupted runs cached once), plus the Pearson r of |score|
with |exact single-edge effect| (same Patcher). EAP-IG is recomputed here (cheap) rather
than read from eapig_faith: the two rules stay independent.

Gain of EAP-GP over EAP-IG. Whether the paper's 17.7% is relative or in faithfulness points
is [open] (docs/SOURCES.md), so both are reported:
  gain.<task>.auc_abs = AUC_GP - AUC_IG (AUC of F vs pruned-edge fraction, see
                        attrpatch.circuits.curves.curve_auc; "points" of F);
  gain.<task>.auc_rel = (AUC_GP - AUC_IG) / |AUC_IG|;
  gain.<task>.auc_log_abs/_rel: the same on the log-edge AUC;
  gain.<task>.at.<n>.{abs, rel}: F_GP - F_IG at each requested budget n (rel null where
                        |F_IG| < 1e-6).
EAP-GP's step rule (`attrpatch.methods.eap_gp`): the `eap_gp` curve runs spec.gp_step
(default "unit", the cited reimplementations' unit step: the rule the claims check); each
rule of spec.gp_step_variants (default ["relative"], the project's own k steps of
||e_clean - e_corrupt|| / k) is its own curve ``eap_gp_<rule>``, scored on the same prompts
and Patcher and reported beside it. Every rule's gains and summary (the fields below) are
under ``gain_by_step.<rule>`` and ``summary_by_step.<rule>``; the top-level ``gain`` and
``summary`` are spec.gp_step's (``summary.step`` names it). Per task the path diagnostics of
every rule (mean distance to the corrupted input per point, output distance and step length
per step, fraction of paths ending closer) are under ``path.<task>.<rule>``.
With spec.models (a list), every task is rerun on each further model; those results go
under by_model.<model>.{gain, summary, auc, gain_by_step, summary_by_step} (the same fields).
Scattered (spec.shards > 1): ``--shard i --shards k`` writes every (task, model)'s scores (every
step rule's too) on prompt chunk i of k; ``--gather SHARD...`` puts them together and runs the rest
(`attrpatch.repro.shards`).
summary.{max_gain_rel, mean_gain_rel, max_gain_abs, mean_gain_abs} over tasks (AUC gains),
summary.gp_vs_ig (wins, ties, losses of EAP-GP's AUC against EAP-IG's: a difference within the
setting tie_margin is a tie, `circuits.curves.compare`), summary.max_gain_abs_at (largest F_GP - F_IG
over tasks and budgets, in points: the most generous reading of "up to 17.7%").
"""
import sys
import time

from attrpatch.progress import tqdm

from attrpatch.circuits import curves as F
from attrpatch.circuits.faithfulness import method_curves
from attrpatch.io import save_figure, write_json
from attrpatch.methods.eap_gp import path_diagnostics
from attrpatch.plots.faithfulness import gp_label, plot_gain
from attrpatch.repro.context import Context
from attrpatch.repro.paper_numbers import paper_numbers
from attrpatch.repro.shards import gather_score_shards, gathered_scores, score_key, score_prompt_shard, write_score_shard
from attrpatch.tasks.eapig_files import describe

NEW, BASE = "eap_gp", "eap_ig"


def variant_name(rule: str) -> str:
    """Result key of the EAP-GP curve run with step rule `rule` (a spec.gp_step_variants entry)."""
    return f"{NEW}_{rule}"


def step_label(rule: str, main: str) -> str:
    """Legend text of the EAP-GP curve of step rule `rule`, from the settings: the rule the gain
    compares (spec.gp_step) or a variant reported beside it."""
    return gp_label(rule) + (", the claims' rule (gp_step)" if rule == main else ", variant (gp_step_variants)")


def main(argv=None):
    ctx, args = Context.from_args("eapgp_gain", argv)
    spec = ctx.spec
    methods = list(spec["methods"])
    steps, n, selection = spec["steps"], spec["n"], spec["selection"]
    gp_step, tie_margin = spec["gp_step"], spec["tie_margin"]
    rules = [gp_step] + [r for r in dict.fromkeys(spec["gp_step_variants"]) if r != gp_step]
    keys = {r: (NEW if r == gp_step else variant_name(r)) for r in rules}    # step rule -> curve name
    variants = {keys[r]: (NEW, {"step": r}) for r in rules[1:]}
    t_start = time.perf_counter()

    gathered = {}      # prompt-shard scores (--gather), by score_key

    def task_gains(mm, edge_counts, key):
        g_auc = F.gain(mm[key]["auc"], mm[BASE]["auc"])
        g_log = F.gain(mm[key]["auc_log"], mm[BASE]["auc_log"])
        return {"auc_abs": g_auc["abs"], "auc_rel": g_auc["rel"],
                "auc_log_abs": g_log["abs"], "auc_log_rel": g_log["rel"],
                "at": F.curve_gains(edge_counts, mm[key]["curve"]["faithfulness"], mm[BASE]["curve"]["faithfulness"])}

    def run(items):
        tasks_out, curves, aucs, n_total, gains, paths = {}, {}, {}, {}, {}, {}
        bar = tqdm(total=len(items), desc="eapgp_gain", unit="task")
        for task, model_name in items:
            bar.set_description(f"eapgp_gain {task} ({model_name})")
            run = ctx.task(task, model_name, edge_counts=True)
            st = run.settings
            res = method_curves(run.model, run.graph, run.batch, methods, st["edge_counts"], steps=steps,
                                  selection=selection, exact=st["exact"], batch_size=st["batch_size"],
                                  progress=bar.set_postfix_str, options={NEW: {"step": gp_step}}, variants=variants,
                                  scores=gathered_scores(gathered, task, model_name))
            diag_batch = run.batch if len(run.batch) <= 32 else run.batch.subset(slice(0, 32))
            paths[task] = {r: path_diagnostics(run.model, run.graph, diag_batch, steps, step=r) for r in rules}
            summ = F.task_summary(res, st["edge_counts"])
            summ.update(model=model_name, n=st["n"], edge_counts=st["edge_counts"],
                        forward_passes=res["forward_passes"], data=describe(run.batch))
            tasks_out[task] = summ
            mm = summ["methods"]
            gains[task] = {r: task_gains(mm, st["edge_counts"], keys[r]) for r in rules}
            curves[task] = {m: mm[m]["curve"] for m in [BASE] + [keys[r] for r in rules]}
            aucs[task] = {m: mm[m]["auc"] for m in curves[task]}
            n_total[task] = summ["n_edges_total"]
            bar.update(1)
        bar.close()
        return tasks_out, curves, aucs, n_total, gains, paths

    def by_rule(gains, rule):
        """{task: gains} of one step rule from run()'s {task: {rule: gains}}."""
        return {t: g[rule] for t, g in gains.items()}

    def summarize(tasks_out, gains, rule):
        key = keys[rule]
        rel = [g["auc_rel"] for g in gains.values()]
        ab = [g["auc_abs"] for g in gains.values()]
        at_abs = [v["abs"] for g in gains.values() for v in g["at"].values()]
        rels = [r for r in rel if r is not None]
        return {
            "step": rule, "method": key,
            "n_tasks": len(gains),
            "max_gain_rel": max(rels, default=None), "mean_gain_rel": F.mean_finite(rel),
            "min_gain_rel": min(rels, default=None),
            "max_gain_abs": max(ab), "mean_gain_abs": F.mean_finite(ab), "min_gain_abs": min(ab),
            "max_gain_log_rel": max((g["auc_log_rel"] for g in gains.values() if g["auc_log_rel"] is not None),
                                    default=None),
            "mean_gain_log_rel": F.mean_finite(g["auc_log_rel"] for g in gains.values()),
            "gp_vs_ig": F.compare({t: tasks_out[t]["methods"][key]["auc"] for t in tasks_out},
                                  {t: tasks_out[t]["methods"][BASE]["auc"] for t in tasks_out}, tie_margin),
            "max_gain_abs_at": max(at_abs), "min_gain_abs_at": min(at_abs),
            "mean_auc": {m: F.mean_finite(tasks_out[t]["methods"][m]["auc"] for t in tasks_out)
                         for m in methods + list(variants)},
            "mean_pearson": {m: F.mean_finite(tasks_out[t]["methods"][m].get("pearson", float("nan"))
                                              for t in tasks_out) for m in methods + list(variants)},
        }

    items = list(ctx.task_models().items())
    extras = [m for m in spec["models"] if not all(m == mm for _, mm in items)]
    if args.shard is not None:     # one prompt-shard job of the DAG: every (task, model)'s scores on its prompts
        write_score_shard(args.out, args.shard, args.shards, {
            score_key(t, m): score_prompt_shard(r.model, r.graph, r.batch, methods, args.shard, args.shards,
                                                steps=steps, batch_size=r.settings["batch_size"],
                                                options={NEW: {"step": gp_step}}, variants=variants)
            for t, m in items + [(t, x) for x in extras for t, _ in items] for r in [ctx.task(t, m, edge_counts=True)]})
        return
    gathered.update(gather_score_shards(args.gather) if args.gather else {})
    tasks_out, curves, aucs, n_total, gains, paths = run(items)
    summary_by_step = {r: summarize(tasks_out, by_rule(gains, r), r) for r in rules}
    for r in rules:
        summary_by_step[r]["path_frac_closer_at_end"] = F.mean_finite(p[r]["frac_closer_at_end"] for p in paths.values())
    summary = dict(summary_by_step[gp_step])
    summary["path_frac_closer_at_end"] = {r: summary_by_step[r]["path_frac_closer_at_end"] for r in rules}
    # spec.models (paper profile: GPT-2 small, medium, XL): every task again on each further model
    by_model = {}
    for extra in extras:
        t2, _, _, _, g2, _ = run([(t, extra) for t, _ in items])
        s2 = {r: summarize(t2, by_rule(g2, r), r) for r in rules}
        by_model[extra] = {"gain": by_rule(g2, gp_step), "summary": s2[gp_step],
                           "gain_by_step": {r: by_rule(g2, r) for r in rules}, "summary_by_step": s2,
                           "auc": {t: {m: d["auc"] for m, d in t2[t]["methods"].items()} for t in t2}}
    out = {
        "profile": ctx.profile, "n": n, "steps": steps, "selection": selection, "methods": methods,
        "gp_step": gp_step, "gp_step_variants": rules[1:], "step_methods": keys, "tie_margin": tie_margin,
        "path": paths,
        "edge_counts": spec.get("edge_counts"), "pruned": True,
        "auc_definition": "trapezoid area under F vs pruned-edge fraction, anchored (0,0) and (1,1), x-range [0,1]",
        "gain_definition": {"auc_abs": "AUC_GP - AUC_IG", "auc_rel": "(AUC_GP - AUC_IG) / |AUC_IG|",
                            "paper_17.7": "relative or points is [open] (docs/SOURCES.md): both reported"},
        "tasks": tasks_out,
        "auc": {t: {m: d["auc"] for m, d in tasks_out[t]["methods"].items()} for t in tasks_out},
        "gain": by_rule(gains, gp_step),
        "gain_by_step": {r: by_rule(gains, r) for r in rules},
        "summary": summary,
        "summary_by_step": summary_by_step,
        "by_model": by_model,
        "paper": {"max_gain": paper_numbers("eapgp_max_gain")},
        "seconds": time.perf_counter() - t_start,
    }
    def headline(r):
        sr = summary_by_step[r]
        mr = sr["max_gain_rel"]
        return (f"{r} step: {F.compare_text(sr['gp_vs_ig'])}, max AUC gain "
                + (f"{100 * mr:+.1f}%" if mr is not None else "n/a") + f" rel / {100 * sr['max_gain_abs']:+.1f} pts")

    paper_gain = paper_numbers("eapgp_max_gain")
    fig = plot_gain(
        curves, aucs, {t: {r: g[r] for r in rules} for t, g in gains.items()}, reference=paper_gain,
        comparison=summary_by_step[gp_step]["gp_vs_ig"], n_total=n_total,
        labels={keys[r]: step_label(r, gp_step) for r in rules}, rule_labels={r: step_label(r, gp_step) for r in rules},
        suptitle=(f"EAP-GP vs EAP-IG ({ctx.profile}; n={n}, m=k={steps}, {selection} selection, pruned); "
                  f"paper: up to {100 * paper_gain:.1f}%\n" + "; ".join(headline(r) for r in rules)))
    save_figure(fig, args.figure)
    write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
