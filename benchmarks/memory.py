"""Row 4: peak memory of each method, one fresh subprocess per (method, batch, seq).

torch's CPU tensors are not seen by tracemalloc, so memory is the process's resident set:
the child loads the model (from a checkpoint the parent saved once), builds the batch,
records its RSS (``base``), resets the kernel's RSS high-water mark (``5`` into
/proc/self/clear_refs; loading the checkpoint peaks far above what a method needs, so
without the reset every method would report the loader's peak), runs the method once, and
reports the new high-water mark (VmHWM). ``peak - base`` is the method's working set;
growth is fitted over batch sizes (at the default sequence length) and over sequence
lengths (at the default batch size): MB per example and MB per position.

Run as a script (``python -m benchmarks.memory CHECKPOINT METHOD B P``) it is the child.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = ("eap", "eap_ig", "eap_gp", "atp", "atp_star")
PEER_METHODS = ("tl_eap", "eap_c2c")  # transformer_lens's own EAP and ours in its direction (benchmarks/peer_tl.py)


def _child(ckpt: str, method: str, B: int, P: int, threads: int) -> dict:
    import psutil
    import torch

    from attrpatch.graph import Graph
    from attrpatch.methods.atp import atp_node_scores, atp_star_node_scores
    from attrpatch.methods.eap import eap_scores
    from attrpatch.methods.eap_gp import eap_gp_scores
    from attrpatch.methods.eap_ig import eap_ig_scores
    from attrpatch.models import boot_bridge
    from attrpatch.methods.tl_eap import tl_edge_scores

    from benchmarks.common import random_batch

    torch.set_num_threads(threads)
    model = boot_bridge(ckpt, device="cpu", dtype=torch.float32, attn_only=False)
    graph = Graph.from_model(model)
    batch = random_batch(B, P, model.cfg.d_vocab)
    fns = {
        "eap": lambda: eap_scores(model, graph, batch),
        "eap_ig": lambda: eap_ig_scores(model, graph, batch, steps=5),
        "eap_gp": lambda: eap_gp_scores(model, graph, batch, steps=5),
        "atp": lambda: atp_node_scores(model, graph, batch),
        "atp_star": lambda: atp_star_node_scores(model, graph, batch),
        "tl_eap": lambda: tl_edge_scores(model, graph, batch),
        "eap_c2c": lambda: eap_scores(model, graph, batch, direction="clean_into_corrupt"),
    }
    import gc

    gc.collect()
    base = psutil.Process().memory_info().rss / 2**20
    reset = _reset_peak()
    fns[method]()
    peak = _peak_mb() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return dict(method=method, B=B, P=P, base_mb=base, peak_mb=peak, delta_mb=peak - base, peak_reset=reset)


def _reset_peak() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def save_checkpoint(shape, out_dir) -> str:
    from attrpatch.models.random import save_random_gpt2

    return str(save_random_gpt2(out_dir, n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd,
                                vocab_size=shape.vocab_size, n_positions=max(64, 2 * shape.seq)))


def measure(ckpt: str, method: str, B: int, P: int, threads: int = 2) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "src"), os.environ.get("PYTHONPATH", "")]),
               TQDM_DISABLE="1")
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", ckpt, method, str(B), str(P), str(threads)],
                         cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory child {method} B={B} P={P} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _slope(xs, ys) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")


def run(shape, *, methods=METHODS, batches=None, seqs=None, threads: int = 2) -> tuple[list[dict], list[dict]]:
    """(table rows, raw measurements)."""
    B0, P0 = shape.batch, shape.seq
    batches = batches or sorted({max(1, B0 // 2), B0})
    seqs = seqs or sorted({max(2, P0 // 2), P0})
    raw, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(shape, tmp)
        for method in methods:
            pts = {(B, P0): None for B in batches} | {(B0, P): None for P in seqs}
            for (B, P) in pts:
                pts[(B, P)] = measure(ckpt, method, B, P, threads)
                raw.append(pts[(B, P)])
            main = pts[(B0, P0)]
            per_ex = _slope(batches, [pts[(B, P0)]["delta_mb"] for B in batches])
            per_pos = _slope(seqs, [pts[(B0, P)]["delta_mb"] for P in seqs])
            rows.append(dict(
                id=f"memory_{method}", measurement=f"peak memory of {method} (RSS high-water mark - RSS before)",
                value=main["delta_mb"], unit="MB", target="report", ok=None,
                context=(f"B={B0} x P={P0}: peak RSS {main['peak_mb']:.0f} MB (model + batch {main['base_mb']:.0f} MB"
                         f"{'' if main.get('peak_reset') else '; high-water mark NOT reset: includes loading'}); "
                         f"growth {per_ex:.1f} MB/example (B in {batches}, P={P0}), "
                         f"{per_pos:.1f} MB/position (P in {seqs}, B={B0}) = {per_pos / B0:.2f} MB/token")))
    return rows, raw


if __name__ == "__main__":
    ckpt, method, B, P, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    print(json.dumps(_child(ckpt, method, B, P, threads)))
