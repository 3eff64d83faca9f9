"""Row 3: exact edge patching throughput, batched vs one forward per edge.

Both use `Patcher.edge_effects` on the same model, batch and edges: batched with the
default ``rows_per_forward`` (`patching.default_rows_per_forward`: 256 rows on a CPU, many
patched copies per forward; 2048, the default before 2026-11-24, timed beside it), the loop with
``rows_per_forward = batch size`` (one patched copy, i.e. one edge, per forward). The two
must give the same effects (checked, max abs difference reported). Also timed: 8 edges per
forward. (Timings from before the fixes are in the dated results under benchmarks/results/.)
"""
from __future__ import annotations

import torch

from attrpatch.graph import Graph
from attrpatch.patching import Patcher

from .common import TINY_GPT2, interleaved_times, median


def _model_and_batch(n: int, use_tiny: bool = True):
    from attrpatch.tasks import make_batch

    if use_tiny and (TINY_GPT2 / "config.json").exists():
        from attrpatch.models import load_model

        model = load_model(TINY_GPT2)
        return model, make_batch("ioi", n, 0, tokenizer=model.attrpatch_tokenizer), "trained tiny-gpt2 (3L x 4H x d64), IOI"
    from attrpatch.models.random import random_bridge
    batch = make_batch("ioi", n, 0)  # the toy tokenizer of the tiny models
    model = random_bridge(n_layer=3, n_head=4, n_embd=64, vocab_size=int(batch.n_vocab), seed=0)
    return model, batch, "random 3L x 4H x d64 (tiny-gpt2 not built), IOI"


def run(*, n: int = 32, repeats: int = 3, threads: int = 2, max_edges: int | None = None,
        use_tiny: bool = True) -> list[dict]:
    from attrpatch import patching

    torch.set_num_threads(threads)
    model, batch, label = _model_and_batch(n, use_tiny)
    graph = Graph.from_model(model)
    edges = graph.edge_index if max_edges is None else graph.edge_index[:max_edges]
    B = len(batch)
    D = patching.default_rows_per_forward(model)
    default = f"batched default ({D} rows)"
    configs = {  # name: (rows_per_forward, patched_logits implementation)
        "loop (1 edge/forward)": (B, patching.patched_logits),
        "batched 8 edges/forward": (8 * B, patching.patched_logits),
        default: (D, patching.patched_logits),
        "batched 2048 rows": (2048, patching.patched_logits),
    }
    patchers = {k: Patcher(model, graph, batch, rows_per_forward=r) for k, (r, _) in configs.items()}
    res = {}

    def make(k):
        def fn():
            orig = patching.patched_logits
            patching.patched_logits = configs[k][1]
            try:
                res[k] = patchers[k].edge_effects(edges)
            finally:
                patching.patched_logits = orig
        return fn

    warm = {k: (lambda k=k: patchers[k].edge_effects(edges[: max(1, min(len(edges), 2048 // B))]))
            for k in configs}
    interleaved_times(warm, repeats=0, warmup=1)
    times = interleaved_times({k: make(k) for k in configs}, repeats=repeats, warmup=0)
    k_edges = edges.shape[0]
    rate = {k: k_edges / median(v) for k, v in times.items()}
    loop = "loop (1 edge/forward)"
    diff = max(float((res[k] - res[loop]).abs().max()) for k in configs)
    base = (f"{label}, B={B} x P={batch.clean.shape[1]}, {k_edges} edges, {threads} threads; "
            f"max |effect difference| between configurations {diff:.1e}")
    best = max((k for k in configs if k != loop and "before" not in k), key=rate.get)
    rows = [
        dict(id="patching_speedup", measurement="exact edge patching: batched (default) / one forward per edge",
             value=rate[default] / rate[loop], target=">= 10",
             ok=rate[default] / rate[loop] >= 10,
             context=base + "; " + ", ".join(f"{k}: {r:.0f} edges/s" for k, r in rate.items())),
        dict(id="patching_speedup_best", measurement=f"exact edge patching: best batching ({best}) / loop",
             value=rate[best] / rate[loop], target=">= 10", ok=rate[best] / rate[loop] >= 10, context=label),
    ]
    for k, r in rate.items():
        rows.append(dict(id="patching_rate_" + "_".join(k.replace(",", "").replace("/", " per ").split(" (")[0].split()),
                         measurement=f"exact patching throughput, {k}", value=r, unit="edges/s",
                         target="context", ok=None, context=f"median of {[round(x, 2) for x in times[k]]} s"))
    return rows
