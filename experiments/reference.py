"""Reference circuit of one (task, model): exact patching of every edge (tiny profile), or the
published circuit mapped onto the graph (paper profile)."""
import argparse
import sys

from attrpatch.circuits.exact_reference import exact_patching_reference
from attrpatch.io import write_csv
from attrpatch.repro.context import Context


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="tiny")
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    ctx = Context(args.profile, "reference", threads=args.threads)
    model_name = ctx.task_models()[args.task]
    if ctx.spec["published"]:
        from attrpatch.circuits.published import published_reference
        df = published_reference(args.task, ctx.model(model_name))
    else:
        batch = ctx.batch(args.task, model_name, ctx.spec["n"])
        df = exact_patching_reference(ctx.model(model_name), batch, float(ctx.spec["fraction"]))
    write_csv(args.out, df)
    print(f"{args.task}: {int(df.in_reference.sum())} of {len(df)} edges in the reference ({df.source.iloc[0]})")


if __name__ == "__main__":
    sys.exit(main())
