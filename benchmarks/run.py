"""Run every benchmark in one process, print the table, write benchmarks/results/<date>.{md,csv}.

    python benchmarks/run.py            # GPT-2-small shape, the real measurement (~15 min, 2 cores)
                                        # (+~27 min: the peer part, when benchmarks/.peer/venv exists)
    python benchmarks/run.py --quick    # tiny shapes, seconds: checks the code, not the numbers

Ratios are measured within this process with interleaved repeats; absolute times are
context only. The DAG's wall time is measured separately by benchmarks/dag_time.sh.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "src")]
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks import common, cuda_rows, gradient_methods, memory, patching_throughput, peer, peer_tl, prefix_patching  # noqa: E402
from attrpatch.io import atomic_path  # noqa: E402

PARTS = ("gradient", "patching", "prefix", "memory", "peer", "peer_tl", "cuda")
FIELDS = ("id", "measurement", "value", "unit", "target", "ok", "context")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3g}"
    return str(v).replace("|", "\\|")


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| id | measurement | value | unit | target | met | context |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r.get("ok")]
        lines.append(f"| {r['id']} | {_fmt(r['measurement'])} | {_fmt(r['value'])} | {r.get('unit', 'x')} | "
                     f"{_fmt(r['target'])} | {met} | {_fmt(r['context'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, one repeat (the smoke test)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (default 3; 1 with --quick)")
    ap.add_argument("--heavy-repeats", type=int, default=None,
                    help="repeats of EAP-IG/EAP-GP/AtP timings (default: --repeats)")
    ap.add_argument("--memory-methods", default=",".join(memory.METHODS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patch-batch", type=int, default=None, help="prefix part: batch size (default: the shape's, 16)")
    ap.add_argument("--patch-seq", type=int, default=None, help="prefix part: prompt length (default: the shape's, 20)")
    ap.add_argument("--patch-rows", type=int, default=256, help="prefix part: rows per batched forward")
    ap.add_argument("--patch-first-diff", type=int, default=1,
                    help="prefix part: first position where clean and corrupted prompts differ (default 1)")
    ap.add_argument("--peer-python", default=os.environ.get("ATTRPATCH_PEER_PYTHON", str(peer.VENV_PYTHON)),
                    help="python of the peer venv with auto-circuit (`python benchmarks/peer.py` builds it; "
                         "skipped if missing)")
    ap.add_argument("--out", default=str(HERE / "results"), help="directory for <date>.md/.csv ('' = no files)")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; allowed: {PARTS}")
    shape = common.QUICK if args.quick else common.FULL
    repeats = args.repeats or (1 if args.quick else 3)
    load0 = common.load_average()
    rows: list[dict] = []
    if "gradient" in parts:
        rows += gradient_methods.run(shape, repeats=repeats, warmup=0 if args.quick else 1, threads=args.threads,
                                     heavy_repeats=args.heavy_repeats)
    if "patching" in parts:
        rows += patching_throughput.run(n=8 if args.quick else 32, repeats=repeats, threads=args.threads,
                                        max_edges=16 if args.quick else None)
    if "prefix" in parts:
        rows += prefix_patching.run(shape, batch=args.patch_batch, seq=args.patch_seq, rows=args.patch_rows,
                                    repeats=repeats, threads=args.threads, loop_edges=1 if args.quick else 3,
                                    acdc_tests=2 if args.quick else 4, first_diff=args.patch_first_diff)
    if "memory" in parts:
        mrows, _ = memory.run(shape, methods=("eap",) if args.quick else tuple(args.memory_methods.split(",")), threads=args.threads)
        rows += mrows
    if "peer" in parts:
        py = args.peer_python if args.peer_python and Path(args.peer_python).exists() else None
        small = dict(batch=shape.batch, seq=shape.seq, steps=2, n_exact=None, tiny=False) if args.quick else {}
        rows += peer.run(py, shape, threads=args.threads, **small)
    if "peer_tl" in parts:
        rows += (peer_tl.run(shape, batch=shape.batch, seq=shape.seq, repeats=1, threads=args.threads) if args.quick
                 else peer_tl.run(shape, repeats=repeats, threads=args.threads))
    if "cuda" in parts:
        rows += cuda_rows.run()
    for r in rows:
        r.setdefault("unit", "x")
    import torch

    header = (f"# attrpatch benchmarks {dt.datetime.now():%Y-%m-%d %H:%M}\n\n"
              f"{'QUICK (smoke) run: numbers mean nothing. ' if args.quick else ''}"
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"{args.threads} threads; load average {load0:.2f} at start, {common.load_average():.2f} at end.")
    md = markdown(rows, header)
    print(md)
    if args.out:
        stem = dt.datetime.now().strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
        write_table(Path(args.out), stem, md, rows)
        print(f"wrote {Path(args.out) / stem}.md and .csv")
    return rows


def write_table(out: Path, stem: str, md: str, rows: list[dict]) -> None:
    """`out/<stem>.md` (the rendered table) and `.csv` (FIELDS), each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(md)
    with atomic_path(out / f"{stem}.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
