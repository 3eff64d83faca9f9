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
construction). Both HVP readings (`methods.hvp.READINGS`) are run; the top-level fields follow
the setting ``reading`` (default per_component) and ``readings.<r>`` holds each one's errors,
passes and seconds beside exact patching's.
Scattered (spec.shards > 1): ``--shard i --shards k`` runs the study's model-running parts
(`analysis.hvp_study.study_parts`, means over prompts) on prompt chunk i of k for every task and
model, on the edge subset chosen from the whole batch's EAP; ``--gather SHARD...`` sums them
weighted by their share of the prompts and does the rest (batched-pass counts are then the jobs' sums).
"""
import sys
import time

import matplotlib

matplotlib.use("Agg")
from attrpatch.progress import tqdm

from attrpatch.analysis.hvp_study import (gather_study_parts, second_order_study, study_from_parts, study_notes,
                                          study_parts, study_summary)
from attrpatch.analysis.second_order import edge_subset
from attrpatch.methods.registry import attribute
from attrpatch.io import save_figure, write_json
from attrpatch.plots.second_order import plot_hvp
from attrpatch.repro.context import Context
from attrpatch.repro.shards import prompt_shard, read_parts_shards, score_key, write_parts_shard


def main(argv=None):
    ctx, args = Context.from_args("hvp", argv)
    spec = ctx.spec
    ks = [int(k) for k in spec["multistep"]]
    threshold = float(spec["threshold"])
    ig_rule, sff_steps, reading = spec["ig_rule"], spec["sff_steps"], spec["reading"]
    n_top, n_random = spec["subset"]["top"], spec["subset"]["random"]
    if spec["max_edges"]:      # paper_random: max_edges exact patches, half top |EAP| (replaces subset)
        k = spec["max_edges"]
        n_top, n_random = k // 2, k - k // 2

    def select(run):
        """The whole batch's EAP over every edge and the study's edge subset (every job alike)."""
        eap_all = run.graph.edges_from_matrix(attribute(run.model, run.batch, method="eap", graph=run.graph,
                                                        **run.opts)).double()
        return eap_all, edge_subset(eap_all, n_top, n_random, seed=ctx.seed)

    kw = dict(ks=ks, threshold=threshold, n_top=n_top, n_random=n_random, ig_rule=ig_rule, sff_steps=sff_steps,
              seed=ctx.seed, reading=reading)
    gathered = ({k: gather_study_parts(v) for k, v in read_parts_shards(args.gather).items()}
                if args.gather else {})

    def run(items):
        tasks, arrays = {}, {}
        for task, model_name in tqdm(items, desc="hvp tasks"):
            t0 = time.time()
            run = ctx.task(task, model_name)
            if gathered:
                eap_all, sel = select(run)
                detail, arrays[task] = study_from_parts(gathered[score_key(task, model_name)], run.graph, eap_all, sel,
                                                        n_prompts=len(run.batch), **kw)
            else:
                detail, arrays[task] = second_order_study(run.model, run.graph, run.batch, opts=run.opts,
                                                          desc=f"{task}: ", **kw)
            tasks[task] = {"model": model_name, **detail, "seconds": round(time.time() - t0, 2)}
        return tasks, arrays

    items = list(ctx.task_models().items())
    extras = [m for m in spec["models"] if not all(m == mm for _, mm in items)]
    if args.shard is not None:     # one prompt-shard job: the study's parts on its prompts, every task and model
        parts = {}
        for task, model_name in items + [(t, m) for m in extras for t, _ in items]:
            run = ctx.task(task, model_name)
            _, sel = select(run)
            sub, w = prompt_shard(run.batch, args.shard, args.shards)
            parts[score_key(task, model_name)] = (study_parts(run.model, run.graph, sub, sel, ks=ks, opts=run.opts,
                                                              desc=f"{task}@{model_name}: "), w)
        write_parts_shard(args.out, args.shard, args.shards, parts)
        return
    tasks, arrays = run(items)
    summary = study_summary(tasks, arrays, ks, threshold)
    # spec.models (paper profiles): every task again on each further model, under by_model.<model>
    by_model = {}
    for extra in spec["models"]:
        if all(extra == m for _, m in items):
            continue
        t2, a2 = run([(t, extra) for t, _ in items])
        by_model[extra] = {"summary": study_summary(t2, a2, ks, threshold), "tasks": t2}
    out = {
        "summary": summary,
        "tasks": tasks,
        **({"by_model": by_model} if spec["models"] else {}),
        "notes": study_notes(n_top, n_random, ig_rule),
    }
    write_json(args.out, out)
    if args.figure:
        save_figure(plot_hvp(arrays, tasks, summary, threshold=threshold, profile=ctx.profile), args.figure)


if __name__ == "__main__":
    sys.exit(main())
