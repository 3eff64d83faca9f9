"""`attrpatch mib` and `attrpatch mib-check`: MIB's circuit-track submission from the command line.

    attrpatch mib --model gpt2 --mib-model gpt2 --task ioi --method eap eap_ig --data DIR --out sub
    attrpatch mib-check sub/eap_ig

The first scores MIB's task files (`tasks.mib_files`, from DIR or $ATTRPATCH_MIB_DATA) with each
method, measures MIB's CPR/CMD (`circuits.mib_metrics`) and writes one submission folder per
method, ``OUT/<method>/<task>_<model>/`` (`circuits.mib_track.run_track`); the second reads a
submission folder back with the checks MIB's loader makes (`circuits.mib_submission`).
Every option, the task/model pairs and the data files are checked before any model loads.
"""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm


def add_parsers(sub) -> None:
    from ..circuits.mib_submission import MODELS
    from ..circuits.mib_track import FORMS
    from ..circuits.run import ACDC_METHODS, edge_methods
    from ..graph import KV_CONVENTIONS
    from ..methods.common import DEFAULT_STEPS
    from ..tasks.mib_files import (DEFAULT_ATTRIBUTION_ROWS, DEFAULT_ATTRIBUTION_SPLIT, DEFAULT_EVAL_SPLIT, ENV_VAR,
                                   SPLITS, TASK_NAMES)
    from .args import _positive_int

    scorers = [m for m in edge_methods() if m not in ACDC_METHODS]
    m = sub.add_parser("mib", help="MIB circuit-track submission: score MIB's tasks, CPR/CMD, one folder per method",
                       description=__doc__.split("\n\n")[0])
    m.add_argument("--model", required=True, help="checkpoint directory or pretrained name (local cache)")
    m.add_argument("--mib-model", required=True, choices=MODELS, metavar="KEY",
                   help=f"MIB's name of the model (folder names): one of {', '.join(MODELS)}")
    m.add_argument("--task", required=True, nargs="+", choices=TASK_NAMES, metavar="TASK",
                   help=f"MIB tasks: {', '.join(TASK_NAMES)}")
    m.add_argument("--method", nargs="+", default=["eap"], choices=scorers, metavar="METHOD",
                   help=f"edge scorers (default eap): {', '.join(scorers)}")
    m.add_argument("--data", help=f"MIB's task files (<name>/<split>.jsonl; default ${ENV_VAR})")
    m.add_argument("--out", required=True, help="submission root: OUT/<method>/<task>_<model>/")
    m.add_argument("--form", default="importances", choices=FORMS,
                   help="one importances.json per folder (default) or MIB's nine circuits at 0.1..50%% of the edges")
    m.add_argument("--split", default=DEFAULT_ATTRIBUTION_SPLIT, choices=SPLITS,
                   help=f"split the methods score (default {DEFAULT_ATTRIBUTION_SPLIT}, MIB's)")
    m.add_argument("--n", type=_positive_int, default=DEFAULT_ATTRIBUTION_ROWS,
                   help=f"kept rows scored (default {DEFAULT_ATTRIBUTION_ROWS}, MIB's)")
    m.add_argument("--eval-split", default=DEFAULT_EVAL_SPLIT, choices=SPLITS,
                   help=f"split CPR/CMD are measured on (default {DEFAULT_EVAL_SPLIT}, MIB's)")
    m.add_argument("--eval-n", type=_positive_int, help="kept rows evaluated (default: all)")
    m.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS,
                   help=f"IG steps of the methods that take them (default {DEFAULT_STEPS}, MIB's)")
    m.add_argument("--batch-size", type=_positive_int, help="examples per chunk of the methods (default: all)")
    m.add_argument("--kv-convention", default="ungrouped", choices=KV_CONVENTIONS,
                   help="GQA keys/values: ungrouped (default; MIB's), grouped (MIB refuses it)")
    m.add_argument("--no-bos", action="store_true", help="do not prepend BOS (the EAP-IG library prepends it)")
    m.add_argument("--device", default="cpu")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(fn=mib_main)
    c = sub.add_parser("mib-check", help="check a submission folder as MIB's loader would",
                       description="Read a submission folder (one method: <task>_<model>/ folders inside) with MIB's "
                                   "checks: folder names, one importance file or nine sized circuits, the EAP-IG "
                                   "loader's JSON, >= 2 models and 2 tasks.")
    c.add_argument("folder", help="submission folder (e.g. OUT/eap_ig)")
    c.set_defaults(fn=check_main)


def _fail(msg: str, cmd: str) -> int:
    print(f"attrpatch {cmd}: error: {msg}", file=sys.stderr)
    return 2


def mib_main(a) -> int:
    from ..circuits.mib_submission import SubmissionError, folder_name
    from ..circuits.mib_track import run_track
    from ..methods.registry import method_options
    from ..models import load_model
    from ..tasks import mib_files

    tasks = list(dict.fromkeys(a.task))
    try:                                     # every input checked before the model loads
        for t in tasks:
            folder_name(t, a.mib_model)
        data = Path(a.data).expanduser().resolve() if a.data else mib_files.data_dir()
        root = mib_files.require(data, tasks, (a.split, a.eval_split))
    except (SubmissionError, mib_files.MibDataMissing) as err:
        return _fail(str(err), a.cmd)
    options = {m: {**({"steps": a.steps} if "steps" in method_options(m) else {}),
                   **({"batch_size": a.batch_size} if a.batch_size else {})} for m in a.method}
    bar = tqdm(total=len(tasks) + 1, desc="load model", unit="step", disable=a.quiet, file=sys.stderr)
    try:
        model = load_model(a.model, device=a.device, kv_convention=a.kv_convention)
        tok = model.attrpatch_tokenizer
        if tok is None:
            raise ValueError(f"{a.model} has no tokenizer; MIB's task files are text")
        bar.update(1)
        rows = []
        for t in tasks:
            bar.set_description(t)
            b = mib_files.load_batch(t, a.n, root, a.split, tok, prepend_bos=not a.no_bos).to(a.device)
            ev = mib_files.load_batch(t, a.eval_n, root, a.eval_split, tok, prepend_bos=not a.no_bos).to(a.device)
            rows += run_track(model, a.mib_model, {t: b}, a.method, a.out, options=options, eval_batches={t: ev},
                              form=a.form, progress=None if a.quiet else bar.set_postfix_str)
            bar.update(1)
    except (ValueError, KeyError, RuntimeError, FileNotFoundError, SubmissionError) as err:
        bar.close()
        return _fail(str(err), a.cmd)
    bar.close()
    print(f"{'task':24s} {'method':20s} {'CPR (higher better)':>20s} {'CMD (lower better)':>20s}  prompts")
    for r in rows:
        print(f"{r['task']:24s} {r['method']:20s} {r['cpr']:20.4f} {r['cmd']:20.4f}  {r['n']} scored, {r['n_eval']} evaluated")
    for r in rows:
        print(f"wrote {r['file']}")
    return 0


def check_main(a) -> int:
    from ..circuits.mib_submission import SubmissionError, read_submission

    try:
        sub = read_submission(a.folder)
    except SubmissionError as err:
        return _fail(str(err), a.cmd)
    for name, v in sub.items():
        print(f"{name}: {v['form']}, {len(v['circuits'])} file(s), {v['circuits'][0].graph.n_edges} edges in the graph")
    print(f"{a.folder}: MIB's loader checks pass ({len(sub)} task/model folders)")
    return 0
