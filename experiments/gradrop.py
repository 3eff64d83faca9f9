"""AtP false negatives and their recovery by AtP* (QK fix, GradDrop) (Kramar et al. 2024).

Per task: exact node effects, node scores of every method in spec.methods, AtP's false
negatives (definition in `attrpatch.analysis.node_recovery`) and how each method ranks
them; Spearman of |score| with |exact|. Plus the two hand-built failure cases
(`attrpatch.models.toy`: saturated attention, cancellation) under ``constructed``.

The QK fix at the paper's granularity (``qk_nodes``, setting ``qk_nodes: true`` by default):
every head's query node and key node scored by AtP and by the QK fix
(`methods.atp.qk_node_scores`) against exact query/key patching (`qk_node_effects`); the same
false-negative bookkeeping, so ``summary_qk_nodes`` says what the QK fix recovers on trained
models (at whole-head outputs AtP already has the head's own softmax exactly). GradDrop's
unit is the setting ``graddrop_layer`` ("block", default, or "sublayer").
"""
import sys
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np
from attrpatch.progress import tqdm

from attrpatch.analysis import node_recovery as nr
from attrpatch.io import save_figure, write_json
from attrpatch.methods.atp import qk_node_effects, qk_node_scores
from attrpatch.methods.registry import attribute
from attrpatch.plots.atp import plot_gradrop
from attrpatch.repro.context import Context


def main(argv=None):
    ctx, args = Context.from_args("gradrop", argv)
    spec = ctx.spec
    methods = list(spec["methods"])
    if "atp" not in methods:
        methods = ["atp"] + methods
    fn = spec["false_negative"]
    q, ratio = float(fn["exact_quantile"]), float(fn["estimate_ratio"])
    gd_layer, do_qk = spec["graddrop_layer"], bool(spec["qk_nodes"])
    tasks, arrays, qk_tasks = {}, {}, {}
    for task, model_name in tqdm(list(ctx.task_models().items()), desc="gradrop tasks"):
        t0 = time.time()
        run = ctx.task(task, model_name)
        model, g, batch = run.model, run.graph, run.batch
        # node-level: exact node patching is n_up forwards (157 on GPT-2 small), so max_edges is not needed
        exact = attribute(model, batch, "exact_nodes", graph=g).double()
        scores = {m: attribute(model, batch, m, graph=g, **run.opts,
                               **({"layer": gd_layer} if m in ("atp_graddrop", "atp_star") else {})).double()
                  for m in methods}
        if do_qk:
            qs = qk_node_scores(model, g, batch)
            qx = qk_node_effects(model, g, batch)
            qk_tasks[task] = nr.recovery_table(qx, {"atp": qs["atp"], "atp_qk": qs["qk_fix"]}, qs["names"],
                                               exact_quantile=q, estimate_ratio=ratio)
        tab = nr.recovery_table(exact, scores, g.upstream, exact_quantile=q, estimate_ratio=ratio)
        tab.update({"model": model_name, "n_prompts": len(batch), "seconds": round(time.time() - t0, 2)})
        tasks[task] = tab
        arrays[task] = {"names": list(g.upstream), "exact": exact.numpy(),
                        **{m: s.numpy() for m, s in scores.items()},
                        "false_negative": nr.false_negatives(exact, scores["atp"], q, ratio)}
    constructed = nr.constructed_cases()
    summary = nr.summarize(tasks)
    summary["constructed_recovered"] = {
        "cancellation_graddrop": constructed["cancellation"]["recovered"]["graddrop"],
        "cancellation_atp": constructed["cancellation"]["recovered"]["atp"],
        "saturation_qk_fix": constructed["saturation"]["recovered"]["qk_fix"],
        "saturation_atp_qkv": constructed["saturation"]["recovered"]["atp_qkv"],
    }
    out = {
        "summary": summary,
        "tasks": tasks,
        "settings": {"graddrop_layer": gd_layer, "qk_nodes": do_qk},
        **({"summary_qk_nodes": nr.summarize(qk_tasks), "qk_nodes": qk_tasks} if do_qk else {}),
        "constructed": constructed,
        "definitions": {
            "false_negative": f"node with |exact| >= quantile(|exact|, {q}) (and > 0) whose |AtP| < {ratio} * |exact|",
            "recovered": f"|score| >= {ratio} * |exact| or rank(|score|) <= k, k = number of nodes above the quantile",
            "rank": "1 + number of nodes with strictly larger |score|",
            "spearman": "Spearman of |score| with |exact| over all upstream nodes of the task's model",
            "constructed_recovered": "|score| >= 0.5 * |exact| at the failure node",
            "atp": "signed mean over pairs (library default); graddrop/atp_star are magnitudes",
        },
    }
    write_json(args.out, out)
    if args.figure:
        save_figure(plot_gradrop(arrays, tasks, constructed, methods=methods, exact_quantile=q,
                                             estimate_ratio=ratio, graddrop_layer=gd_layer, profile=ctx.profile), args.figure)


if __name__ == "__main__":
    sys.exit(main())
