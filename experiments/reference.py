"""Reference circuit of one (task, model): exact patching of every edge (tiny profile), or the
published circuit mapped onto the graph (paper profile).

Whole in one job, or scattered (``--shard i --shards k``: exact effects of edge block i of k,
`attrpatch.repro.shards`) and gathered (``--gather BLOCK...``: the blocks put back in place, then the
same reference table as the whole run)."""
import argparse
import sys

from attrpatch.circuits.exact_reference import exact_patching_reference, reference_frame
from attrpatch.graph import Graph
from attrpatch.io import write_csv
from attrpatch.repro.context import Context
from attrpatch.repro.shards import exact_block_effects, gather_edge_blocks, read_edge_block, write_edge_block


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="tiny")
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int)
    p.add_argument("--shard", type=int, help="compute only edge block SHARD of SHARDS (written as an edge block)")
    p.add_argument("--shards", type=int)
    p.add_argument("--gather", nargs="+", metavar="BLOCK", help="edge blocks of every shard, put back together")
    args = p.parse_args(argv)
    if (args.shard is None) != (args.shards is None) or (args.shard is not None and args.gather):
        p.error("give --shard and --shards together, or --gather, or neither")
    ctx = Context(args.profile, "reference", threads=args.threads)
    model_name = ctx.task_models()[args.task]
    model = ctx.model(model_name)
    if ctx.spec["published"]:
        if args.shard is not None or args.gather:
            p.error("a published reference is read, not computed: no shards")
        from attrpatch.circuits.published import published_reference
        df = published_reference(args.task, model)
    elif args.shard is not None:
        batch = ctx.batch(args.task, model_name, ctx.spec["n"])
        idx, vals = exact_block_effects(model, batch, args.shard, args.shards)
        write_edge_block(args.out, idx, vals)
        print(f"{args.task}: exact effects of edge block {args.shard} of {args.shards} ({len(idx)} edges)")
        return
    elif args.gather:
        g = Graph.from_model(model)
        effects = gather_edge_blocks(g.n_edges, [read_edge_block(f) for f in args.gather])
        df = reference_frame(g, effects, float(ctx.spec["fraction"]))
    else:
        batch = ctx.batch(args.task, model_name, ctx.spec["n"])
        df = exact_patching_reference(model, batch, float(ctx.spec["fraction"]))
    write_csv(args.out, df)
    print(f"{args.task}: {int(df.in_reference.sum())} of {len(df)} edges in the reference ({df.source.iloc[0]})")


if __name__ == "__main__":
    sys.exit(main())
