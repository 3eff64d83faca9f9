"""Held-out accuracy and mean metric of every (task, model) pair: the bar the tiny models must clear."""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

from attrpatch.io import save_figure, write_json
from attrpatch.models.evaluate import evaluate_tasks
from attrpatch.repro.context import Context


def main(argv=None):
    ctx, args = Context.from_args("tasks_eval", argv)
    frames = []
    for task, model_name in ctx.task_models().items():
        run = ctx.task(task, model_name)
        df = evaluate_tasks(run.model, [task], n=run.settings["n"], seed=ctx.seed,
                            tokenizer=run.model.attrpatch_tokenizer, batch_size=run.settings["batch_size"])
        df["model"] = model_name
        frames.append(df)
    import pandas as pd

    table = pd.concat(frames, ignore_index=True)
    bar = float(ctx.spec["min_accuracy"])
    out = {
        "tasks": {r.task: {"accuracy": r.accuracy, "mean_metric": r.mean_metric, "model": r.model, "n": r.n}
                  for r in table.itertuples()},
        "min_accuracy": float(table.accuracy.min()),
        "min_mean_metric": float(table.mean_metric.min()),
        "bar": bar,
    }
    fig, ax = plt.subplots(figsize=(6, 3))
    sns.barplot(data=table, x="task", y="accuracy", hue="model", ax=ax)
    ax.axhline(bar, color="k", ls="--", lw=1, label=f"bar {bar:.0%}")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out accuracy")
    n_each = ", ".join(sorted({str(int(x)) for x in table.n}))
    ax.set_title(f"Held-out accuracy of each task on its model ({ctx.profile} profile; {n_each} prompts per task,\n"
                 f"seed {ctx.seed}; dashed: the {bar:.0%} bar every task must clear)", fontsize=9)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, args.figure)
    write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
