"""`attrpatch ...`: the library outside the DAG.

    attrpatch score --model models/tiny/tiny-gpt2 --task ioi --method eap_ig --n 32 --out scores.csv
    attrpatch graph --layers 12 --heads 12          # node/edge counts of a shape
    attrpatch train --model tiny-gpt2 --out DIR     # = python -m attrpatch.train
    attrpatch claims --profile tiny                 # = python -m attrpatch.claims
    attrpatch methods                               # every method and its options
    attrpatch circuit --model DIR --task ioi --method eap_ig --edges 30 --out DIR   # find, measure, save, draw
    attrpatch evaluate DIR/circuit.json --model DIR --task ioi                     # faithfulness of a saved circuit
"""
from __future__ import annotations

import argparse
import json
import sys


def _score(a) -> int:
    import torch

    from .attribute import attribute, level
    from .graph import Graph
    from .io import write_csv
    from .models import load_model
    from .tasks import make_batch

    torch.manual_seed(a.seed)
    model = load_model(a.model, device=a.device)
    batch = make_batch(a.task, a.n, a.seed, tokenizer=model.attrpatch_tokenizer).to(a.device)
    options = json.loads(a.options) if a.options else {}
    g = Graph.from_model(model)
    scores = attribute(model, batch, method=a.method, graph=g, **options)
    if level(a.method) == "edges":
        df = g.to_frame(scores)
    else:
        import pandas as pd
        df = pd.DataFrame({"node": g.upstream, "score": scores.cpu().numpy()})
    df = df.reindex(df["score"].abs().sort_values(ascending=False).index)
    if a.out:
        write_csv(a.out, df)
    print(df.head(a.top).to_string(index=False))
    return 0


def _graph(a) -> int:
    from .graph import Graph

    print(json.dumps(Graph(a.layers, a.heads, has_mlps=not a.attn_only).summary(), indent=2))
    return 0


def _methods(a) -> int:
    from .attribute import METHODS, method_options

    for name, spec in METHODS.items():
        print(f"{name:20s} {spec.level:5s} {spec.doc}\n{'':26s} options: {', '.join(method_options(name))}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from .train import main as train_main
        return train_main(argv[1:]) or 0
    if argv and argv[0] == "claims":
        from .claims import main as claims_main
        return claims_main(argv[1:])
    p = argparse.ArgumentParser(prog="attrpatch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score every edge (or node) of a model on a task")
    s.add_argument("--model", required=True, help="checkpoint directory or pretrained name (local cache)")
    s.add_argument("--task", required=True)
    s.add_argument("--method", default="eap")
    s.add_argument("--n", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--options", help='JSON of method options, e.g. \'{"steps": 5}\'')
    s.add_argument("--out", help="CSV of all scores")
    s.add_argument("--top", type=int, default=20)
    s.set_defaults(fn=_score)
    g = sub.add_parser("graph", help="node and edge counts of a model shape")
    g.add_argument("--layers", type=int, required=True)
    g.add_argument("--heads", type=int, required=True)
    g.add_argument("--attn-only", action="store_true")
    g.set_defaults(fn=_graph)
    m = sub.add_parser("methods", help="list methods and their options")
    m.set_defaults(fn=_methods)
    from .cli_circuit import add_parsers as add_circuit_parsers
    add_circuit_parsers(sub)
    sub.add_parser("train", help="train a tiny model (see python -m attrpatch.train -h)")
    sub.add_parser("claims", help="check claims (see python -m attrpatch.claims -h)")
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
