"""`attrpatch circuit` and `attrpatch evaluate`: find a circuit, measure it by exact patching,
save and draw it; or measure a saved one (ours or the EAP-IG library's graph JSON).

    attrpatch circuit --model DIR --task ioi --method eap_ig --edges 30 --out circuits/ioi
    attrpatch circuit --model DIR --task ioi --method acdc_kl --tau 0.01 --out circuits/ioi_acdc
    attrpatch evaluate circuits/ioi/circuit.json --model DIR --task ioi
    attrpatch view circuits/ioi/circuit.json [other.json ...] --out circuit.html
"""
from __future__ import annotations

import json
import sys

from tqdm.auto import tqdm


def add_parsers(sub) -> None:
    """Every option is checked as it is parsed (argparse types and choices, score's message
    format), the method's options and the circuit file before any model is loaded."""
    from ..circuits.run import edge_methods
    from .args import _nonnegative_int, _positive_int, _positive_number
    from ..tasks import TASKS

    c = sub.add_parser("circuit", help="find a circuit, measure its faithfulness, save it as JSON and draw it",
                       description=__doc__.split("\n\n")[0])
    c.add_argument("--model", required=True, help="checkpoint directory or pretrained name (local cache)")
    c.add_argument("--task", required=True, choices=list(TASKS), metavar="TASK",
                   help=f"one of: {', '.join(TASKS)}")
    c.add_argument("--method", required=True, choices=edge_methods(), metavar="METHOD",
                   help=f"one of: {', '.join(edge_methods())} (`attrpatch methods`)")
    size = c.add_mutually_exclusive_group(required=True)
    size.add_argument("--edges", type=_positive_int, help="circuit of this many edges, integer >= 1 (then pruned)")
    size.add_argument("--tau", type=_positive_number,
                      help="threshold > 0: edges with |score| >= TAU (ACDC: its tau)")
    c.add_argument("--out", required=True, help="directory for circuit.json, circuit.png, circuit.svg")
    c.add_argument("--name", default="circuit", help="file name stem in --out (default: circuit)")
    c.add_argument("--selection", default="greedy", choices=["greedy", "topn"],
                   help="with --edges: EAP-IG's greedy growth from logits (default) or the top N by |score|")
    c.add_argument("--no-prune", action="store_true", help="keep dangling edges")
    c.add_argument("--options", help='JSON of method options, e.g. \'{"steps": 5}\'')
    c.add_argument("--n", type=_positive_int, default=32, help="prompts (default 32)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--eval-seed", type=int, help="prompts for the faithfulness (default: the same as --seed)")
    c.add_argument("--metric", default="task", help="metric of the faithfulness (default: the task's)")
    c.add_argument("--device", default="cpu")
    c.add_argument("--backend", default="matplotlib", choices=["matplotlib", "graphviz"])
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--exact-top", type=_nonnegative_int, default=0, metavar="K",
                   help="exact patching effect of the K edges of largest |score| into the file (costs K single-edge "
                        "patches; the budget is printed before it runs)")
    c.add_argument("--reliability", action="store_true",
                   help="the second-order correction's reliability rho and Screen-Flag-Fix flag of the circuit's "
                        "edges (and the --exact-top ones) into the file (methods.hvp)")
    c.add_argument("--view", action="store_true", help="also write the interactive viewer <name>.html")
    c.set_defaults(fn=circuit_main)
    e = sub.add_parser("evaluate", help="faithfulness of a saved circuit by exact patching",
                       description="Faithfulness of a circuit file (ours or the EAP-IG library's graph JSON).")
    e.add_argument("circuit", help="circuit JSON file")
    e.add_argument("--model", required=True)
    e.add_argument("--task", choices=list(TASKS), metavar="TASK", help="default: the task recorded in the file")
    e.add_argument("--n", type=_positive_int, help="prompts (default: those the file was evaluated on, else 32)")
    e.add_argument("--seed", type=int, help="(default: the file's, else 0)")
    e.add_argument("--metric", help="(default: the file's, else the task's)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(fn=evaluate_main)
    v = sub.add_parser("view", help="interactive HTML viewer of circuit files (one self-contained file)",
                       description="One self-contained HTML file (plotly, offline) drawing circuit files: the first "
                                   "one, the others selectable, and the first against each other one.")
    v.add_argument("circuits", nargs="+", help="circuit JSON files (ours or the EAP-IG library's), one model")
    v.add_argument("--out", required=True, help="the HTML file to write")
    v.add_argument("--max-edges", type=int, default=None,
                   help="edges drawn per view at most (default: plots.viewer.MAX_EDGES)")
    v.add_argument("--title", help="title of every view (default: method, size, faithfulness)")
    v.set_defaults(fn=view_main)


def _fail(msg: str, cmd: str = "") -> int:
    """One line, score's format (attrpatch.cli.main): `attrpatch CMD: error: MESSAGE`, exit status 2."""
    print(f"attrpatch{' ' + cmd if cmd else ''}: error: {msg}", file=sys.stderr)
    return 2


def circuit_main(a) -> int:
    import torch

    from ..circuits.file import Circuit
    from ..circuits.run import evaluate, find_circuit, write_circuit
    from ..graph import Graph
    from ..models import load_model
    from ..tasks import make_batch

    from ..circuits.run import ACDC_METHODS
    from .args import _parse_options

    try:                                     # every input checked before the model loads
        if a.method in ACDC_METHODS:
            if a.edges is not None:
                raise ValueError(f"--method {a.method} finds its circuit at a threshold: give --tau, not --edges")
            options = _parse_options("acdc", a.options)
            bad = sorted(set(options) - {"direction"})
            if bad:
                raise ValueError(f"method {a.method!r} has no option(s) {bad}; valid options: direction")
        else:
            options = _parse_options(a.method, a.options)
    except ValueError as err:
        return _fail(str(err), a.cmd)
    steps = ["load model", f"score ({a.method})", "exact patching", "write"]
    bar = tqdm(total=len(steps), desc=steps[0], unit="step", disable=a.quiet, file=sys.stderr)
    try:
        torch.manual_seed(a.seed)
        model = load_model(a.model, device=a.device)
        graph = Graph.from_model(model)
        batch = make_batch(a.task, a.n, a.seed, tokenizer=model.attrpatch_tokenizer).to(a.device)
        bar.update(1), bar.set_description(steps[1])
        mask, scores, info = find_circuit(model, graph, batch, a.method, edges=a.edges, tau=a.tau,
                                          selection=a.selection, do_prune=not a.no_prune, options=options,
                                          progress=not a.quiet)
        bar.update(1), bar.set_description(steps[2])
        eval_seed = a.seed if a.eval_seed is None else a.eval_seed
        ebatch = batch if eval_seed == a.seed else make_batch(a.task, a.n, eval_seed,
                                                              tokenizer=model.attrpatch_tokenizer).to(a.device)
        faith = evaluate(model, graph, ebatch, mask, a.metric)
        faith["seed"] = eval_seed
        bar.update(1), bar.set_description(steps[3])
        info.update(found_on={"n": a.n, "seed": a.seed}, faithfulness=faith)
        c = Circuit(graph, mask, scores, method=a.method, options=options, model=a.model, task=a.task, info=info)
        _add_trust(a, c, model, batch, ebatch)
        files = write_circuit(c, a.out, a.name, backend=a.backend, view=a.view)
        bar.update(1)
    except (ValueError, KeyError, RuntimeError, FileNotFoundError) as err:
        bar.close()
        return _fail(str(err), a.cmd)
    bar.close()
    print(f"{a.method} on {a.task}: {c.n_edges} edges, {len(c.nodes)} nodes ({info['selection']})")
    print(f"faithfulness {faith['faithfulness']:.4f} (exact patching, {faith['n_prompts']} prompts, seed {eval_seed}; "
          f"metric circuit {faith['m_circuit']:.4f}, clean {faith['m_clean']:.4f}, corrupted {faith['m_corrupt']:.4f})")
    for f in files.values():
        print(f"wrote {f}")
    return 0


def _add_trust(a, c, model, batch, ebatch) -> None:
    """--exact-top / --reliability (on the prompts the scores came from) and the faithfulness at
    the viewer's other sizes (on the evaluation prompts), into the circuit."""
    from ..circuits.trust import add_reliability, exact_cost, exact_top, faithfulness_by_size, top_edges
    from ..metrics import resolve_metric
    from ..patching import Patcher

    trust = {}
    if a.exact_top:
        patcher = Patcher(model, c.graph, batch, resolve_metric(model, batch, a.metric), progress=not a.quiet)
        print(f"budget: {exact_cost(patcher, len(top_edges(c, a.exact_top)))}", file=sys.stderr)
        trust["exact"] = exact_top(c, patcher, a.exact_top)
    if a.reliability:
        edges = list(dict.fromkeys(c.edges + top_edges(c, a.exact_top)))
        trust["reliability"] = add_reliability(c, model, batch, edges, a.metric)
    if trust:
        c.info["trust"] = trust
    by_size = faithfulness_by_size(c, model, ebatch, a.metric)
    if by_size:
        c.info["faithfulness_by_size"] = by_size


def view_main(a) -> int:
    from ..circuits.file import CircuitFileError, load_circuit
    from ..plots.viewer import MAX_EDGES, write_view

    try:
        circuits = [load_circuit(p) for p in a.circuits]
        out = write_view(circuits, a.out, a.circuits, max_edges=MAX_EDGES if a.max_edges is None else a.max_edges, title=a.title)
    except (CircuitFileError, ValueError) as err:
        return _fail(str(err))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; {len(circuits)} circuit(s))")
    return 0


def evaluate_main(a) -> int:
    from ..circuits.file import CircuitFileError, load_circuit
    from ..circuits.run import evaluate
    from ..graph import Graph
    from ..models import load_model
    from ..tasks import make_batch

    try:
        recorded = load_circuit(a.circuit)            # the file checked before the model loads
        if not (a.task or recorded.task):
            return _fail(f"{a.circuit} records no task: give --task", a.cmd)
        model = load_model(a.model, device=a.device)
        graph = Graph.from_model(model)
        c = load_circuit(a.circuit, graph=graph)
    except (CircuitFileError, ValueError, RuntimeError, FileNotFoundError) as err:
        return _fail(str(err), a.cmd)
    rec = c.info.get("faithfulness") if isinstance(c.info.get("faithfulness"), dict) else {}
    task = a.task or c.task
    if not task:
        return _fail(f"{a.circuit} records no task: give --task", a.cmd)
    same_task = task == c.task
    n = a.n if a.n is not None else (rec.get("n_prompts") if same_task and rec.get("n_prompts") else 32)
    seed = a.seed if a.seed is not None else (rec.get("seed", 0) if same_task else 0)
    metric = a.metric or (rec.get("metric") if same_task and rec.get("metric") else "task")
    try:
        batch = make_batch(task, int(n), int(seed), tokenizer=model.attrpatch_tokenizer).to(a.device)
        faith = evaluate(model, graph, batch, c.mask, metric)
    except (ValueError, KeyError, RuntimeError) as err:
        return _fail(str(err), a.cmd)
    faith.update(seed=int(seed), task=task, circuit=str(a.circuit))
    if a.json:
        print(json.dumps(faith, indent=2))
        return 0
    what = f"{c.method} circuit" if c.method else "circuit"
    print(f"{what} from {a.circuit}: {c.n_edges} edges, {len(c.nodes)} nodes")
    print(f"faithfulness on {task} ({faith['n_prompts']} prompts, seed {seed}, metric {metric}): "
          f"{faith['faithfulness']:.4f} (circuit {faith['m_circuit']:.4f}, clean {faith['m_clean']:.4f}, "
          f"corrupted {faith['m_corrupt']:.4f})")
    if same_task and rec.get("faithfulness") is not None and a.n is None and a.seed is None:
        print(f"recorded in the file: {rec['faithfulness']:.4f}")
    return 0
