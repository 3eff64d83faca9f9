"""Peak host memory of EAP / EAP-IG vs. the formula in docs/PAPER_PROFILE.md ("Memory at scale").

    python benchmarks/eap_memory.py            # runs each (shape, method, B) in a fresh subprocess

Each child loads a random GPT-2-shaped model, runs the method once on B=1 (warm-up, sets the
baseline peak), then on B examples, and reports the growth of the process's peak RSS
(ru_maxrss). The slope between two batch sizes, per token (B x P), in units of s * d and
of s * d * n_down: the k of the peak formula in docs/PAPER_PROFILE.md ("Memory at scale").
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys

SHAPES = [dict(n_layer=6, n_head=8, n_embd=256), dict(n_layer=12, n_head=12, n_embd=192)]
BS = (4, 20)
P = 16
V = 200


def child(shape: dict, method: str, B: int) -> dict:
    import torch
    torch.set_num_threads(1)
    from attrpatch.graph import Graph
    from attrpatch.methods.eap import eap_scores
    from attrpatch.methods.eap_ig import eap_ig_scores
    from attrpatch.models.random import random_bridge
    from attrpatch.tasks.base import TaskBatch

    def batch(n):
        g = torch.Generator().manual_seed(0)
        clean = torch.randint(0, V, (n, P), generator=g)
        corrupt = clean.clone()
        corrupt[:, 3] = (clean[:, 3] + 1) % V
        am = torch.zeros(n, V, dtype=torch.bool); am[:, 5] = True
        wm = torch.zeros(n, V, dtype=torch.bool); wm[:, 7] = True
        return TaskBatch("random", clean, corrupt, am, wm, "logit_diff")

    model = random_bridge(**shape, vocab_size=V, dtype=torch.float32, n_positions=P)
    graph = Graph.from_model(model)
    run = (lambda b: eap_scores(model, graph, b)) if method == "eap" else \
          (lambda b: eap_ig_scores(model, graph, b, steps=5))
    run(batch(1))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(batch(B))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n_up": graph.n_up, "n_down": graph.n_down, "d": shape["n_embd"], "B": B,
            "growth_bytes": (peak - base) * 1024}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
        return
    rows = []
    for shape in SHAPES:
        for method in ("eap", "eap_ig"):
            res = []
            for B in BS:
                out = subprocess.run([sys.executable, __file__, "--child", json.dumps(shape), method, str(B)],
                                     capture_output=True, text=True, check=True).stdout
                res.append(json.loads(out.strip().splitlines()[-1]))
            r0, r1 = res
            slope = (r1["growth_bytes"] - r0["growth_bytes"]) / ((r1["B"] - r0["B"]) * P)
            s, d, nu, nd = 4, r0["d"], r0["n_up"], r0["n_down"]
            unit = s * d
            rows.append({"shape": shape, "method": method, "n_up": nu, "n_down": nd,
                         "bytes_per_token": slope, "in_units_of_s_d": slope / unit,
                         "per_n_down": slope / unit / nd})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
