"""Node and edge counts per model shape, against the closed form and the published counts."""
import sys

from attrpatch.graph import Graph, closed_form_edge_count
from attrpatch.io import write_json
from attrpatch.repro.context import Context


def main(argv=None):
    ctx, args = Context.from_args("graph_counts", argv)
    rows = []
    for L, H, mlp in ctx.spec["shapes"]:
        g = Graph(L, H, has_mlps=mlp)
        rows.append({**g.summary(), "closed_form": closed_form_edge_count(L, H, mlp)})
    by_shape = {f"{r['n_layers']}x{r['n_heads']}{'' if r['has_mlps'] else '_attn_only'}": r["n_edges"] for r in rows}
    write_json(args.out, {"rows": rows, "edges": by_shape})


if __name__ == "__main__":
    sys.exit(main())
