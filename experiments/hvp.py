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
"""
import sys
import time

import matplotlib

matplotlib.use("Agg")
from attrpatch.progress import tqdm

from attrpatch.analysis.hvp_study import second_order_study, study_notes, study_summary
from attrpatch.io import save_figure, write_json
from attrpatch.plots.second_order import plot_hvp
from attrpatch.repro.context import Context


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

    def run(items):
        tasks, arrays = {}, {}
        for task, model_name in tqdm(items, desc="hvp tasks"):
            t0 = time.time()
            run = ctx.task(task, model_name)
            detail, arrays[task] = second_order_study(run.model, run.graph, run.batch, ks=ks, threshold=threshold,
                                                      n_top=n_top, n_random=n_random, ig_rule=ig_rule,
                                                      sff_steps=sff_steps, seed=ctx.seed, opts=run.opts,
                                                      desc=f"{task}: ", reading=reading)
            tasks[task] = {"model": model_name, **detail, "seconds": round(time.time() - t0, 2)}
        return tasks, arrays

    items = list(ctx.task_models().items())
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
