"""MIB's circuit track: every method on MIB's models and tasks, the submission folders, CPR/CMD.

Wiring only (attrpatch.circuits.mib_track holds the logic): per MIB model key of
``experiments.mib_track.runs``, the methods score the attribution split's prompts, CPR/CMD are
measured on the evaluation split's, each method's importance files go to
``mib_submission/<method>/<task>_<model>/importances.json`` beside the result JSON, and every
method's folder is read back with MIB's loader checks (`circuits.mib_submission.read_submission`).
"""
import sys
from pathlib import Path

from attrpatch.circuits.mib_track import read_back, run_track, scores_table, submission_dir
from attrpatch.io import atomic_dir, write_csv, write_json
from attrpatch.methods.registry import level, method_options
from attrpatch.progress import tqdm
from attrpatch.repro.context import Context


def main(argv=None):
    ctx, args = Context.from_args("mib_track", argv)
    sp = ctx.spec
    options = {m: {"steps": sp["steps"]} for m in sp["methods"] if "steps" in method_options(m)}
    rows = []
    bar = tqdm(total=sum(map(len, sp["runs"].values())), desc="mib_track", unit="task")
    with atomic_dir(submission_dir(args.out)) as sub:
        for model_key, tasks in sp["runs"].items():
            model = ctx.model(model_key)
            bs = sp["batch_size"].get(model_key) if isinstance(sp["batch_size"], dict) else sp["batch_size"]
            opts = {m: {**options.get(m, {}), **({"batch_size": bs} if bs else {})} for m in sp["methods"]}
            for task in tasks:
                batch = ctx.mib_batch(task, model_key, sp["attribution_split"], sp["n"])
                ev = ctx.mib_batch(task, model_key, sp["eval_split"], sp["n_eval"])
                rows += run_track(model, model_key, {task: batch}, sp["methods"], sub, options=opts,
                                  eval_batches={task: ev}, progress=bar.set_postfix_str)
                bar.update(1)
        checked = read_back(sub, sp["methods"])
    for r in rows:
        r["file"] = str(Path(r["file"]).relative_to(sub))
    write_json(args.out, {"scores": scores_table(rows), "rows": rows, "submission": checked,
                          "levels": {m: level(m) for m in sp["methods"]},
                          "settings": {k: sp[k] for k in ("attribution_split", "n", "eval_split", "n_eval", "steps",
                                                          "prepend_bos")}})
    if args.table:
        import pandas as pd
        write_csv(args.table, pd.DataFrame(rows)[["model", "task", "method", "cpr", "cmd", "n", "n_eval"]])


if __name__ == "__main__":
    sys.exit(main())
