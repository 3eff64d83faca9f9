"""`attrpatch ...`: the library outside the DAG.

    attrpatch score --model models/tiny/tiny-gpt2 --task ioi --method eap_ig --n 32 --out scores.csv
    attrpatch graph --layers 12 --heads 12          # node/edge counts of a shape
    attrpatch train --model tiny-gpt2 --out DIR     # = python -m attrpatch.models.train
    attrpatch claims --profile tiny                 # = python -m attrpatch.repro.claims
    attrpatch methods                               # every method and its options
    attrpatch circuit --model DIR --task ioi --method eap_ig --edges 30 --out DIR   # find, measure, save, draw
    attrpatch evaluate DIR/circuit.json --model DIR --task ioi                     # faithfulness of a saved circuit
    attrpatch mib --model DIR --mib-model gpt2 --task ioi --method eap eap_ig --data DIR --out DIR   # MIB submission
    attrpatch mib-check DIR/eap_ig                  # a submission folder, as MIB's loader checks it
    attrpatch score --help                          # tasks, methods and what each option means

Errors are one line (exit status 2); add --debug for the traceback.

The CLI is the package's lazy entry: each command imports what it needs inside its function
(here and in `cli.circuit`), so that ``attrpatch --help`` and a bad argument answer without
importing torch and the models. The rest of the package imports at module top
(tests/test_imports.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .args import _parse_options, _positive_int, _positive_number, api_only_options, cli_options  # noqa: F401


def _header(a, model, batch, options: dict) -> str:
    """What the table is: model, task, metric, n, the clean run's metric, the sign convention."""
    import torch

    from ..metrics import get_metric
    from ..patching import DEFAULT_DIRECTION

    direction = options.get("direction") or DEFAULT_DIRECTION
    metric = options.get("metric", "task")
    with torch.no_grad():
        logits = model(batch.clean)
    name = batch.metric if metric == "task" else metric
    clean = float(get_metric(metric, batch, logits)(logits).mean())
    base, src = ("clean", "corrupted") if direction == "corrupt_into_clean" else ("corrupted", "clean")
    return "\n".join([
        f"# model {a.model}  task {a.task}  method {a.method}  metric {name}  n {len(batch)}  seed {a.seed}",
        f"# clean run: mean {name} = {clean:.4g}",
        f"# score = estimated mean {name}(patched) - mean {name}({base} run) when the {src} activation is "
        f"patched into the {base} run ({direction}); rows sorted by |score|",
    ])


def _score(a) -> int:
    import torch

    from ..methods.registry import attribute, level
    from ..graph import Graph
    from ..io import write_csv
    from ..models import load_model
    from ..tasks import make_batch

    options = _parse_options(a.method, a.options)  # every input checked before the model loads
    torch.manual_seed(a.seed)
    model = load_model(a.model, device=a.device)
    batch = make_batch(a.task, a.n, a.seed, tokenizer=model.attrpatch_tokenizer).to(a.device)
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
    print(_header(a, model, batch, options))
    print(df.head(a.top).to_string(index=False))
    return 0


def _score_epilog() -> str:
    from ..methods.registry import METHODS
    from ..tasks import TASKS
    from ..methods.registry import OPTIONS

    lines = ["tasks:"] + [f"  {t:18s} metric {m.METRIC}" for t, m in TASKS.items()]
    lines += ["", "methods (--method) and their options:"]
    cli = {m: cli_options(m) for m in METHODS}
    for name, spec in METHODS.items():
        lines.append(f"  {name:18s} {spec.doc} [{spec.level}]; options: {', '.join(cli[name])}")
    used = sorted(set().union(*cli.values()))
    lines += ["", "options (--options, a JSON object):"]
    lines += [f"  {o:19s} {OPTIONS[o].describe() if o in OPTIONS else '(see the method docstring)'}" for o in used]
    return "\n".join(lines)


def _graph(a) -> int:
    from ..graph import Graph

    try:
        g = Graph(a.layers, a.heads, has_mlps=not a.attn_only, n_kv_heads=a.kv_heads, parallel_blocks=a.parallel)
    except ValueError as e:
        raise SystemExit(f"attrpatch graph: {e}")
    print(json.dumps(g.summary(), indent=2))
    return 0


def _methods(a) -> int:
    """Every method with the options `score --options` takes; Python-only ones named apart."""
    from ..methods.registry import METHODS

    for name, spec in METHODS.items():
        api = api_only_options(name)
        print(f"{name:20s} {spec.level:5s} {spec.doc}\n{'':26s} options: {', '.join(cli_options(name))}"
              + (f"\n{'':26s} Python API only (attribute(...)): {', '.join(api)}" if api else ""))
    return 0


def _parser() -> argparse.ArgumentParser:
    from ..methods.registry import METHODS
    from ..tasks import TASKS

    p = argparse.ArgumentParser(prog="attrpatch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score every edge (or node) of a model on a task",
                       description="Score every edge (or node) of a model on a task; prints a header and the "
                                   "top rows, writes every row with --out.",
                       epilog=_score_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--model", required=True, help="checkpoint directory or pretrained name (local cache)")
    s.add_argument("--task", required=True, choices=list(TASKS), metavar="TASK", help="one of the tasks below")
    s.add_argument("--method", default="eap", choices=list(METHODS), metavar="METHOD",
                   help="one of the methods below (default: eap)")
    s.add_argument("--n", type=_positive_int, default=32, help="number of prompt pairs (default 32)")
    s.add_argument("--seed", type=int, default=0, help="prompt sampling seed (default 0)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--options", help='JSON object of method options (below), e.g. \'{"steps": 5}\'')
    s.add_argument("--out", help="CSV of all scores")
    s.add_argument("--top", type=_positive_int, default=20, help="rows to print (default 20)")
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
    s.set_defaults(fn=_score)
    g = sub.add_parser("graph", help="node and edge counts of a model shape")
    g.add_argument("--layers", type=_positive_int, required=True)
    g.add_argument("--heads", type=_positive_int, required=True)
    g.add_argument("--attn-only", action="store_true")
    g.add_argument("--kv-heads", type=_positive_int, default=None, help="key/value heads (GQA); default: --heads")
    g.add_argument("--parallel", action="store_true", help="parallel attention/MLP blocks (Pythia, GPT-J)")
    g.set_defaults(fn=_graph)
    m = sub.add_parser("methods", help="list methods and their options")
    m.set_defaults(fn=_methods)
    from .circuit import add_parsers as add_circuit_parsers
    add_circuit_parsers(sub)
    from .mib import add_parsers as add_mib_parsers
    add_mib_parsers(sub)
    sub.add_parser("train", help="train a tiny model (attrpatch train -h)")
    sub.add_parser("claims", help="check claims (attrpatch claims -h)")
    sub.add_parser("course", help="course kit: student release, grading, model cache (attrpatch course -h)")
    return p


def main(argv=None) -> int:
    """Errors print as one line, argparse style, with exit status 2; --debug shows the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MPLBACKEND", "Agg")      # the commands draw to files (plot modules leave the backend alone)
    debug = "--debug" in argv
    argv = [x for x in argv if x != "--debug"]
    cmd = argv[0] if argv else None
    try:
        if cmd == "train":
            from ..models.train import main as train_main
            return train_main(argv[1:], prog="attrpatch train") or 0
        if cmd == "course":
            from ..course.commands import main as course_main
            return course_main(argv[1:], prog="attrpatch course")
        if cmd == "claims":
            from ..repro.claims import main as claims_main
            return claims_main(argv[1:])
        a = _parser().parse_args(argv)
        return a.fn(a)
    except Exception as e:  # noqa: BLE001 - the one place a user-facing error is turned into a line
        if debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"attrpatch {cmd or ''}: error: {msg} (--debug for the traceback)".replace("  ", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
