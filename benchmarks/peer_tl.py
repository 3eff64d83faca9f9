"""Row: transformer_lens 4.3's own EAP beside ours, on the same model object.

Its tool (`attrpatch.methods.tl_eap.tl_edge_scores` wraps it: positions summed, our edge names, weights
lent ``requires_grad``) takes the gradient on the corrupted run, so it is compared with our EAP
in that direction (``direction="clean_into_corrupt"``); our default direction is timed too.

* agreement: edge by edge, max |difference| / max |score|, on the timed model (float32) and
  on a float64 copy of the quick shape (where both must agree to float rounding);
* time: ours (its direction, and our default) and its tool, repeats interleaved, medians;
* peak memory: each in a fresh subprocess (`benchmarks.memory`: resident-set high-water
  mark above the loaded model).
"""
from __future__ import annotations

import tempfile
import time

import torch

from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.methods.tl_eap import tl_edge_scores

from . import memory
from .common import FULL, QUICK, Shape, build_model, interleaved_times, median, random_batch


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def run(shape: Shape = FULL, *, batch: int = 8, seq: int = 16, repeats: int = 3, threads: int = 2,
        measure_memory: bool = True) -> list[dict]:
    torch.set_num_threads(threads)
    small = build_model(QUICK, dtype=torch.float64)
    gs, bs = Graph.from_model(small), random_batch(QUICK.batch, QUICK.seq, QUICK.vocab_size, seed=1)
    rel64 = _rel(tl_edge_scores(small, gs, bs), eap_scores(small, gs, bs, direction="clean_into_corrupt"))
    model = build_model(shape)
    g, b = Graph.from_model(model), random_batch(batch, seq, shape.vocab_size)
    res = {}
    fns = {"ours (its direction)": lambda: res.__setitem__("ours", eap_scores(model, g, b, direction="clean_into_corrupt")),
           "ours (default direction)": lambda: eap_scores(model, g, b),
           "transformer_lens": lambda: res.__setitem__("tl", tl_edge_scores(model, g, b))}
    times = interleaved_times(fns, repeats=repeats, warmup=1)
    T = {k: median(v) for k, v in times.items()}
    rel = _rel(res["tl"], res["ours"])
    n_diff = int(((res["tl"] - res["ours"]).abs() > 1e-4 * res["ours"].abs().max()).sum())
    ctx = (f"{shape.name}, {g.n_edges} edges, B={batch} x P={seq}, {threads} threads, same model object "
           f"(medians of {repeats} interleaved repeats after a warm-up)")
    rows = [dict(id="peer_tl_eap_agreement", measurement="transformer_lens's EAP vs ours in its direction "
                 "(clean_into_corrupt), edge by edge, its per-position edges summed: max |difference| / max |score|",
                 value=rel, target="<= 1e-4", ok=rel <= 1e-4,
                 context=f"{ctx}; float32; {n_diff} of {g.n_edges} edges differ by more than 1e-4 x max; float64 on "
                         f"{QUICK.name} B={QUICK.batch} x P={QUICK.seq}: {rel64:.1e}"),
            dict(id="peer_tl_eap_time", measurement="time: transformer_lens's EAP / ours (its direction)",
                 value=T["transformer_lens"] / T["ours (its direction)"], target="context", ok=None,
                 context=f"{ctx}; " + ", ".join(f"{k} {v:.2f} s (of {[round(x, 2) for x in times[k]]})"
                                                for k, v in T.items()))]
    if measure_memory:
        with tempfile.TemporaryDirectory() as d:
            ckpt = memory.save_checkpoint(Shape(shape.name, shape.n_layer, shape.n_head, shape.n_embd,
                                                shape.vocab_size, batch, seq), d)
            mem = {m: memory.measure(ckpt, m, batch, seq, threads) for m in ("eap_c2c", "tl_eap")}
        rows.append(dict(id="peer_tl_eap_memory", measurement="peak memory above the loaded model: "
                         "transformer_lens's EAP / ours (its direction)",
                         value=mem["tl_eap"]["delta_mb"] / mem["eap_c2c"]["delta_mb"], target="context", ok=None,
                         context=f"{ctx}; ours {mem['eap_c2c']['delta_mb']:.0f} MB, transformer_lens "
                                 f"{mem['tl_eap']['delta_mb']:.0f} MB (fresh subprocess each, RSS high-water mark)"))
    return rows
