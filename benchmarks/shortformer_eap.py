"""EAP on the hooked shortformer (attn-only-4l's class) vs the same passes on a GPT-2 bridge.

    python benchmarks/shortformer_eap.py            # the Docstring size: 4 x 8, d 512, 50 prompts
    python benchmarks/shortformer_eap.py --quick    # tiny shapes, seconds: checks the code only

Both models have attn-only-4l's shape (4 layers, 8 heads, d_model 512, its vocabulary of
48,262 tokens) and random weights: `models.shortformer.random_shortformer` and a GPT-2-architecture
`TransformerBridge` (`models.random.random_bridge`, attention-only: MLPs zeroed, as the project's
attention-only GPT-2 checkpoints are; they still run). The batch is the paper's Docstring size,
50 prompts of 26 tokens (our Docstring prompt). Ratio = median EAP time on the shortformer /
median EAP time on the bridge (one source forward + one forward/backward each, same graph
hooks), repeats interleaved in one process. Target <= 1.5: the model's own hooks must not make
EAP slower than on the bridge. Writes benchmarks/results/<date>-shortformer.{md,csv}.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "src")]
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from benchmarks.common import interleaved_times, load_average, median, random_batch  # noqa: E402

FIELDS = ("id", "measurement", "value", "unit", "target", "ok", "context")
FULL = dict(n_layers=4, n_heads=8, d_model=512, vocab=48262, batch=50, seq=26)
QUICK = dict(n_layers=2, n_heads=2, d_model=16, vocab=64, batch=4, seq=6)
TARGET = 1.5


def run(shape: dict, *, repeats: int = 3, warmup: int = 1, threads: int = 2) -> list[dict]:
    from attrpatch.graph import Graph
    from attrpatch.methods.eap import eap_scores
    from attrpatch.models.random import random_bridge
    from attrpatch.models.shortformer import random_shortformer

    torch.set_num_threads(threads)
    L, H, d, V = shape["n_layers"], shape["n_heads"], shape["d_model"], shape["vocab"]
    sf = random_shortformer(n_layers=L, n_heads=H, d_model=d, d_vocab=V, n_ctx=max(64, shape["seq"]))
    gpt2 = random_bridge(n_layer=L, n_head=H, n_embd=d, vocab_size=V, attn_only=True,
                         n_positions=max(64, shape["seq"]))
    g_sf, g_gpt2 = Graph.from_model(sf), Graph.from_model(gpt2)
    assert g_sf.n_edges == g_gpt2.n_edges, (g_sf.n_edges, g_gpt2.n_edges)
    batch = random_batch(shape["batch"], shape["seq"], V)
    times = interleaved_times({"shortformer": lambda: eap_scores(sf, g_sf, batch),
                               "gpt2": lambda: eap_scores(gpt2, g_gpt2, batch)}, repeats, warmup)
    t_sf, t_gpt2 = median(times["shortformer"]), median(times["gpt2"])
    ratio = t_sf / t_gpt2
    ctx = (f"{L}x{H} d{d} V{V}, {shape['batch']} prompts x {shape['seq']} tokens, {g_sf.n_edges} edges, "
           f"{threads} threads, {repeats} interleaved repeats; EAP {t_sf:.2f} s (shortformer) vs "
           f"{t_gpt2:.2f} s (GPT-2 bridge, zeroed MLPs)")
    return [{"id": "shortformer_eap_vs_gpt2", "measurement": "EAP time, HookedShortformer / GPT-2 bridge",
             "value": ratio, "unit": "x", "target": f"<= {TARGET}", "ok": ratio <= TARGET, "context": ctx}]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results"), help="directory for <date>-shortformer.md/.csv ('' = none)")
    args = ap.parse_args(argv)
    load0 = load_average()
    rows = run(QUICK if args.quick else FULL, repeats=args.repeats or (1 if args.quick else 3),
               warmup=0 if args.quick else 1, threads=args.threads)
    header = (f"# shortformer EAP benchmark {dt.date.today().isoformat()} "
              f"({'quick' if args.quick else 'Docstring size'}; load average {load0} at start, {load_average()} at end)")
    lines = [header, "", "| id | measurement | value | unit | target | met | context |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['id']} | {r['measurement']} | {r['value']:.3g} | {r['unit']} | {r['target']} | "
                     f"{'yes' if r['ok'] else '**no**'} | {r['context']} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{dt.date.today().isoformat()}-shortformer{'-quick' if args.quick else ''}"
        stem.with_suffix(".md").write_text(md)
        with open(stem.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
