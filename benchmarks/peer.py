"""Row 5: auto-circuit (PyPI ``auto-circuit``) beside us, each in its own environment.

    python benchmarks/peer.py            # tiny-gpt2 (if built) + GPT-2-small shape: scores, times, result file
    python benchmarks/peer.py --quick    # tiny shapes: checks the code, numbers mean nothing

auto-circuit 1.0.1 cannot import beside transformer_lens 4 (``transformer_lens.past_key_value_caching``
is gone), so it runs in a second virtual environment, built once and cached in
``benchmarks/.peer/venv`` (ignored by git) by `build_venv`: torch==2.13.0 (ours),
auto-circuit==1.0.1, transformer-lens<3 (pip resolves 2.x) and pyarrow<21 (the newest
pyarrow refuses the numpy 1.26 that transformer-lens 2 keeps). Its half runs in
`benchmarks/peer_side.py`; files under ``benchmarks/.peer/`` carry the job and the result.

For each model (a Hugging Face GPT-2 checkpoint: the trained tiny-gpt2 on an IOI batch
when it is built, and a random GPT-2 checkpoint of the timed shape on a random batch):

1. the same weights give the same logits on both sides (ours a TransformerBridge, the
   peer's a transformer_lens 2 ``HookedTransformer`` without weight processing);
2. both graphs have the same edge set under one naming (`peer_names`);
3. EAP, integrated gradients (m = ``steps``) and exact single-edge patching (``--methods``
   picks a subset) are compared edge by edge (`agreement`) and timed in interleaved rounds,
   ours (`peer_ours`) then the peer's, same threads, medians over ``--repeats`` rounds;
4. float64 finite differences (`peer_check`) decide what each side computes: every method
   on tiny-gpt2, and on the timed model each method whose scores disagree beyond 1e-4.

Conventions mapped onto ours: auto-circuit's mask gradients are of the loss
``-mean logit difference``, so its EAP is -1 x ours; its ``integrated_grad_samples = m``
*sums* the mask gradient over all masks = k/m, k = 0..m, so -1/m x it is a left Riemann
sum of the mask-path integral (see `peer_check`); exact effects share our sign.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER_DIR = HERE / ".peer"
VENV_PYTHON = PEER_DIR / "venv" / "bin" / "python"
SIDE = HERE / "peer_side.py"
REQUIREMENTS = ("torch==2.13.0", "auto-circuit==1.0.1", "transformer-lens<3", "pyarrow<21")
METHODS = ("eap", "ig", "exact")
CLAIM_REL = 1e-4          # "scores equal to 1e-4" (relative, see `agreement`)
CLAIM_SPEED = 5.0         # "ours >= 5x faster": every peer row (issue #30's target; 1.5x before 2026-12-03)
TOP = 20
# what the peer's raw number is, in our convention (sign and scale), per method
PEER_SCALE = {"eap": lambda x, m: -x, "ig": lambda x, m: -x / m, "exact": lambda x, m: x}

PROBE = (
    "import transformer_lens, torch, importlib.metadata as md\n"
    "print('torch', torch.__version__, 'transformer_lens', md.version('transformer-lens'))\n"
    "import auto_circuit.prune_algos.mask_gradient\n"
    "from auto_circuit.utils.graph_utils import patchable_model\n"
    "print('IMPORT_OK')\n"
)


def probe(python: str, first_path: str | None = None) -> tuple[bool, str]:
    """Import auto-circuit with `python`; `first_path` (a site-packages dir) is put first on
    sys.path so that its transformer_lens/torch win (the project's)."""
    env = dict(os.environ, PYTHONPATH=first_path) if first_path else None
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{type(e).__name__}: {e}"
    text = (out.stdout + out.stderr).strip().splitlines()
    versions = next((line for line in text if line.startswith("torch ")), "")
    if "IMPORT_OK" in out.stdout:
        return True, versions
    err = next((line for line in reversed(text) if "Error" in line), text[-1] if text else "no output")
    return False, f"{versions}: {err}".strip(": ")


def build_venv(python: str = sys.executable) -> Path:
    """The peer venv's python, built once (a marker file holds the requirements it was built with)."""
    marker = PEER_DIR / "requirements.txt"
    if VENV_PYTHON.exists() and marker.exists() and marker.read_text().split() == list(REQUIREMENTS):
        return VENV_PYTHON
    PEER_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(PEER_DIR / "venv")], check=True)
    subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
    marker.write_text("\n".join(REQUIREMENTS) + "\n")
    return VENV_PYTHON


# ---- the peer process -------------------------------------------------------------------
def peer_job(python, job: dict, tag: str, threads: int, timeout: float = 7200) -> dict:
    """Run one `peer_side` job with `threads` threads; its JSON result."""
    PEER_DIR.mkdir(parents=True, exist_ok=True)
    jp, op = PEER_DIR / f"{tag}.job.json", PEER_DIR / f"{tag}.out.json"
    jp.write_text(json.dumps(job))
    op.unlink(missing_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(python), str(SIDE), str(jp), str(op)], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"peer job {tag} failed (exit {r.returncode}):\n{tail}")
    return json.loads(op.read_text())


def peer_batch_file(batch, path: Path) -> Path:
    """The batch as auto-circuit's PromptDataset wants it: answer/wrong token ids [B, k]."""
    import torch

    P = batch.clean.shape[1]
    if not bool((batch.pos == P - 1).all()):
        raise ValueError("the peer reads the last position only (slice_output='last_seq'); this batch's pos differs")
    if batch.metric != "logit_diff":
        raise ValueError(f"the peer comparison uses the logit difference, not {batch.metric!r}")

    def ids(mask):
        k = mask.sum(1)
        if not bool((k == k[0]).all()):
            raise ValueError("every example needs the same number of answer (and wrong) tokens")
        return mask.nonzero()[:, 1].reshape(len(batch), int(k[0]))

    torch.save(dict(clean=batch.clean, corrupt=batch.corrupt, answers=ids(batch.answer_mask),
                    wrong=ids(batch.wrong_mask)), path)
    return path


# ---- comparison ---------------------------------------------------------------------------
def agreement(ours: dict, theirs: dict, top: int = TOP) -> dict:
    """Edge-by-edge agreement on the edges both score. max_rel = max |ours - theirs| / max |ours|
    (relative to the largest score: an edge-wise ratio is meaningless for scores near 0);
    top: how many of the `top` largest |scores| are shared."""
    from attrpatch.stats import pearson

    names = sorted(ours)
    if set(names) != set(theirs):
        raise ValueError(f"edge sets differ: {len(set(names) - set(theirs))} only ours, "
                         f"{len(set(theirs) - set(names))} only theirs")
    a = [ours[n] for n in names]
    b = [theirs[n] for n in names]
    scale = max(abs(x) for x in a)
    diffs = [abs(x - y) for x, y in zip(a, b)]
    worst = max(range(len(names)), key=diffs.__getitem__)
    k = min(top, len(names))
    top_a = set(sorted(names, key=lambda n: -abs(ours[n]))[:k])
    top_b = set(sorted(names, key=lambda n: -abs(theirs[n]))[:k])
    return dict(n=len(names), max_rel=diffs[worst] / scale if scale else float("nan"), max_abs=diffs[worst],
                scale=scale, worst=names[worst], pearson=pearson(a, b) if len(names) > 1 else float("nan"),
                top=k, top_shared=len(top_a & top_b))


def exact_subset(edge_names: list[str], n: int | None, seed: int = 0) -> list[str]:
    """All edges, or n of them drawn with a seed (the same on both sides)."""
    import torch

    if n is None or n >= len(edge_names):
        return list(edge_names)
    idx = torch.randperm(len(edge_names), generator=torch.Generator().manual_seed(seed))[:n]
    return [edge_names[i] for i in sorted(idx.tolist())]


def hand_checks(ckpt: Path, batch, ours: dict, theirs: dict, steps: int, methods=METHODS, n: int = 2) -> list[dict]:
    """float64 finite differences on a few edges (`peer_check`): for each method, the `n` edges
    where the sides differ most and the top edge of each side."""
    import torch

    from attrpatch.graph import Graph
    from attrpatch.models import load_model
    from attrpatch.patching import Patcher

    from benchmarks import peer_check

    model = load_model(ckpt, dtype=torch.float64)
    g = Graph.from_model(model)
    pt = Patcher(model, g, batch)
    rows = []
    for method in methods:
        o, t = ours[method], theirs[method]
        picks = sorted(o, key=lambda e: -abs(o[e] - t[e]))[:n]
        picks += [max(o, key=lambda e: abs(o[e])), max(t, key=lambda e: abs(t[e]))]
        for e in dict.fromkeys(picks):
            u, v = g.edge(e)
            row = dict(method=method, edge=e, ours=o[e], peer=t[e])
            if method == "eap":
                row["fd_mask_at_0"] = peer_check.mask_derivative(pt, u, v, torch.zeros(g.n_up, g.n_down))
            elif method == "ig":
                mi = peer_check.mask_ig(pt, u, v, steps)
                row.update(fd_mask_path=mi["left"], fd_mask_at_1=mi["end"],
                           fd_embedding_path=peer_check.embedding_ig(pt, u, v, steps))
            else:
                row["hand_patch"] = peer_check.hand_patch(pt, u, v)
            rows.append(row)
    return rows


def side_by_side(python, name: str, ckpt: Path, batch, *, threads: int, steps: int, n_exact: int | None,
                 warmup: int = 1, repeats: int = 1, check: str = "disagree", methods=METHODS) -> dict:
    """Logits, edge sets, scores and times (median of `repeats`) of one model on both sides;
    hand checks (`hand_checks`) of every method (check="all") or of those that disagree
    beyond CLAIM_REL ("disagree").

    Repeats are interleaved: round r times ours (one run after `warmup` untimed EAP runs), then
    the peer's (a fresh process, the same warmup), so a change in the machine's load falls on
    both sides alike; the medians over rounds are compared."""
    methods = tuple(m for m in METHODS if m in methods)
    import torch

    from attrpatch.models import load_model

    from benchmarks import peer_names, peer_ours

    torch.set_num_threads(threads)
    model = load_model(ckpt)
    out: dict = dict(model=name, ckpt=str(ckpt), B=len(batch), P=int(batch.clean.shape[1]), steps=steps,
                     threads=threads, task=batch.task)
    # 1. same function: logits on the clean prompts
    tp = PEER_DIR / f"{name}.tokens.pt"
    torch.save(batch.clean, tp)
    lg = peer_job(python, dict(mode="logits", ckpt=str(ckpt), tokens=str(tp)), f"{name}.logits", threads)
    with torch.no_grad():
        mine = model(batch.clean)
    theirs_logits = torch.load(lg["logits"])
    out["logits"] = dict(max_abs_diff=float((theirs_logits - mine).abs().max()), max_abs=float(mine.abs().max()))
    out["versions"] = lg["versions"]
    # 2.-3. scores and times, ours then theirs
    from attrpatch.graph import Graph

    edges = exact_subset(Graph.from_model(model).edge_names, n_exact)
    job = dict(mode="scores", ckpt=str(ckpt), batch=str(peer_batch_file(batch, PEER_DIR / f"{name}.batch.pt")),
               threads=threads, steps=steps, warmup=warmup, repeats=1, methods=list(methods),
               exact_edges=[peer_names.to_theirs(e) for e in edges])
    ours_times = {m: [] for m in methods}
    peer_times = {m: [] for m in methods}
    for _ in range(repeats):
        ours = peer_ours.run(model, batch, steps=steps, exact_edges=edges, methods=methods, warmup=warmup, repeats=1)
        raw = peer_job(python, job, f"{name}.scores", threads)
        for m in methods:
            ours_times[m] += ours["times"][m]
            peer_times[m] += raw["times"][m]
    ours["times"], raw["times"] = ours_times, peer_times
    theirs = {m: {peer_names.to_ours(e): PEER_SCALE[m](x, steps) for e, x in raw[m].items()} for m in methods}
    mapped = {peer_names.to_ours(e) for e in raw["edges"]}
    out["edges"] = dict(ours=ours["n_edges"], peer=raw["n_edges"], same_set=mapped == set(ours["edges"]),
                        only_ours=len(set(ours["edges"]) - mapped), only_peer=len(mapped - set(ours["edges"])))
    if not out["edges"]["same_set"]:
        raise RuntimeError(f"{name}: the two graphs' edge sets differ: {out['edges']}")
    out["n_exact"] = len(edges)
    out["agree"] = {m: agreement(ours[m], theirs[m]) for m in methods}
    out["times"] = {m: dict(ours=statistics.median(ours["times"][m]), peer=statistics.median(raw["times"][m]),
                            ours_all=ours["times"][m], peer_all=raw["times"][m]) for m in methods}
    checked = [m for m in methods if check == "all" or out["agree"][m]["max_rel"] > CLAIM_REL]
    if checked:
        del model
        out["hand"] = hand_checks(ckpt, batch, ours, theirs, steps, checked)
    return out


# ---- models and batches --------------------------------------------------------------------
def random_checkpoint(shape, seed: int = 0) -> Path:
    """A random GPT-2 checkpoint of `shape` (Hugging Face initialisation), cached under .peer/."""
    from attrpatch.models.random import save_random_gpt2

    path = PEER_DIR / f"random-gpt2-{shape.n_layer}x{shape.n_head}x{shape.n_embd}-v{shape.vocab_size}-s{seed}"
    if not (path / "config.json").exists():
        save_random_gpt2(path, n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd,
                         vocab_size=shape.vocab_size, seed=seed)
    return path


def tiny_ioi(ckpt: Path, n: int, seed: int = 0):
    from attrpatch.models import tokenizer_for
    from attrpatch.tasks import make_batch

    return make_batch("ioi", n, seed, tokenizer=tokenizer_for(ckpt))


def compare_all(python, shape, *, batch: int, seq: int, steps: int, n_exact: int | None, threads: int,
                tiny: bool = True, tiny_n: int = 16, repeats: int = 1, methods=METHODS) -> list[dict]:
    """tiny-gpt2 on IOI (all edges exact, hand checks) if built, then `shape` (timed)."""
    from benchmarks.common import TINY_GPT2, random_batch

    runs = []
    if tiny and (TINY_GPT2 / "config.json").exists():
        runs.append(side_by_side(python, "tiny-gpt2", TINY_GPT2, tiny_ioi(TINY_GPT2, tiny_n), threads=threads,
                                 steps=steps, n_exact=None, check="all", methods=methods))
    ckpt = random_checkpoint(shape)
    runs.append(side_by_side(python, ckpt.name, ckpt, random_batch(batch, seq, shape.vocab_size), threads=threads,
                             steps=steps, n_exact=n_exact, repeats=repeats, methods=methods))
    return runs


# ---- rows and report -------------------------------------------------------------------------
def rows_from(runs: list[dict], note: str = "") -> list[dict]:
    """Benchmark rows: logits check, per method our time / peer time on the timed (last) model,
    and per model and method the agreement."""
    timed = runs[-1]
    rows = []
    worst = max(r["logits"]["max_abs_diff"] / r["logits"]["max_abs"] for r in runs)
    rows.append(dict(id="peer_auto_circuit", measurement="auto-circuit 1.0.1 in its own venv: same weights give the "
                     "same logits (max |difference| / max |logit|, worst model)", value=worst, unit="rel",
                     target=f"<= {CLAIM_REL:g}", ok=worst <= CLAIM_REL,
                     context="; ".join(f"{r['model']}: {r['logits']['max_abs_diff']:.1e} of {r['logits']['max_abs']:.2g}, "
                                       f"{r['edges']['ours']} edges on both sides, same set: {r['edges']['same_set']}"
                                       for r in runs) + f"; peer {timed['versions']}" + (f"; {note}" if note else "")))
    shape = f"{timed['model']}, B={timed['B']} x P={timed['P']}, {timed['threads']} threads"
    what = {"eap": "EAP", "ig": f"integrated gradients (m={timed['steps']})",
            "exact": f"exact single-edge patching ({timed['n_exact']} edges)"}
    for m in timed["times"]:
        t = timed["times"][m]
        ratio = t["ours"] / t["peer"]
        rows.append(dict(id=f"peer_{m}_time", measurement=f"{what[m]}: our time / auto-circuit's", value=ratio,
                         unit="x", target=f"<= {1 / CLAIM_SPEED:.2f} (ours >= {CLAIM_SPEED}x faster)",
                         ok=ratio <= 1 / CLAIM_SPEED,
                         context=f"{shape}; ours {t['ours']:.3g} s, auto-circuit {t['peer']:.3g} s (median of "
                                 f"{len(t['ours_all'])} interleaved rounds, each run after one untimed EAP; "
                                 "separate processes)"))
    for r in runs:
        suffix = "" if r is timed else "_" + r["model"].replace("-", "_")
        for m in r["agree"]:
            a = r["agree"][m]
            rows.append(dict(id=f"peer_{m}_agree{suffix}", measurement=f"{what[m].split(' (')[0]}, {r['model']} "
                             f"({r['task']}): max |ours - auto-circuit| / max |ours|", value=a["max_rel"], unit="rel",
                             target=f"<= {CLAIM_REL:g}", ok=a["max_rel"] <= CLAIM_REL,
                             context=f"{a['n']} edges, Pearson {a['pearson']:.6f}, top-{a['top']} shared "
                                     f"{a['top_shared']}/{a['top']}, worst {a['worst']} ({a['max_abs']:.2e} of "
                                     f"max {a['scale']:.3g})" + ("; different definitions (see results file)"
                                                                  if m == "ig" else "")))
    return rows


def hand_table(hand: list[dict]) -> str:
    cols = ["method", "edge", "ours", "peer", "fd_mask_at_0", "fd_mask_path", "fd_mask_at_1", "fd_embedding_path",
            "hand_patch"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for h in hand:
        lines.append("| " + " | ".join(f"{h[c]:.8g}" if isinstance(h.get(c), float) else str(h.get(c, ""))
                                       for c in cols) + " |")
    return "\n".join(lines)


def run(peer_python: str | None = None, shape=None, *, batch: int = 8, seq: int = 16, steps: int = 5,
        n_exact: int | None = 96, threads: int = 2, tiny: bool = True) -> list[dict]:
    """The benchmark rows (`benchmarks/run.py`'s peer part). Without a peer python: the import
    probe only, value n/a."""
    if peer_python:
        from benchmarks.common import FULL

        return rows_from(compare_all(peer_python, shape or FULL, batch=batch, seq=seq, steps=steps, n_exact=n_exact,
                                     threads=threads, tiny=tiny))
    ok, msg = probe(sys.executable)
    note = (f"in the project venv: {'imports' if ok else 'cannot import: ' + msg}; no peer venv given "
            "(`python benchmarks/peer.py` builds benchmarks/.peer/venv)")
    return [dict(id="peer_auto_circuit", measurement="peer library side by side (auto-circuit 1.0.1)",
                 value=float("nan"), target=f"ours >= {CLAIM_SPEED}x faster, scores equal to {CLAIM_REL:g}", ok=None,
                 context=note)]


def main(argv=None) -> list[dict]:
    """Build (or reuse) the peer venv, compare on tiny-gpt2 (if built) and a random GPT-2 of the
    timed shape, print the rows, write benchmarks/results/<date>-peer.{md,csv} and raw JSON."""
    import argparse

    sys.path[:0] = [str(HERE.parent), str(HERE.parent / "src")]
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from attrpatch.io import atomic_path

    from benchmarks import common
    from benchmarks.run import markdown, write_table

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny shapes (2L x 2H x d16): checks the code")
    ap.add_argument("--batch", type=int, default=8, help="prompts of the timed model (default 8)")
    ap.add_argument("--seq", type=int, default=16, help="prompt length of the timed model (default 16)")
    ap.add_argument("--steps", type=int, default=5, help="integrated-gradient steps m on both sides (default 5)")
    ap.add_argument("--exact-edges", type=int, default=96,
                    help="edges of the timed model patched exactly, a seeded sample (0 = all; default 96)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    ap.add_argument("--repeats", type=int, default=1,
                    help="interleaved rounds (ours, then the peer's) of timed runs of the timed model (median)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)} (default all)")
    ap.add_argument("--no-tiny", action="store_true", help="skip tiny-gpt2 even if built")
    ap.add_argument("--out", default=str(HERE / "results"), help="directory for the result files ('' = none)")
    args = ap.parse_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    if not methods or set(methods) - set(METHODS):
        ap.error(f"--methods {args.methods!r}: allowed a comma-separated subset of {','.join(METHODS)}")
    py = build_venv()
    shape = common.QUICK if args.quick else common.FULL
    t0, load0 = time.perf_counter(), common.load_average()
    runs = compare_all(py, shape, batch=args.batch, seq=args.seq, steps=args.steps,
                       n_exact=args.exact_edges or None, threads=args.threads, tiny=not args.no_tiny,
                       repeats=args.repeats, methods=methods)
    rows = rows_from(runs)
    for r in rows:
        r.setdefault("unit", "x")
    header = (f"# attrpatch vs auto-circuit {dt.datetime.now():%Y-%m-%d %H:%M}\n\n"
              f"{'QUICK (smoke) run: numbers mean nothing. ' if args.quick else ''}"
              f"Command: `OMP_NUM_THREADS={args.threads} python benchmarks/peer.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}` ({(time.perf_counter() - t0) / 60:.1f} min). "
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
              f"{torch.__version__} on both sides, {args.threads} threads each; load average {load0:.2f} at start, "
              f"{common.load_average():.2f} at end.")
    md = markdown(rows, header)
    for r in runs:
        if r.get("hand"):
            md += f"\n## Hand checks on {r['model']} ({r['task']}, B={r['B']}, float64 finite differences)\n\n"
            md += hand_table(r["hand"]) + "\n"
    print(md)
    if args.out:
        out = Path(args.out)
        stem = dt.datetime.now().strftime("%Y-%m-%d") + "-peer" + ("-quick" if args.quick else "")
        write_table(out, stem, md, rows)
        with atomic_path(PEER_DIR / f"{stem}.json") as tmp:
            tmp.write_text(json.dumps(runs, indent=1, default=float))
        print(f"wrote {out / stem}.md and .csv (raw: {PEER_DIR / stem}.json)")
    return rows


if __name__ == "__main__":
    main()
