"""Exact patching of every edge of a GPT-2-small-shaped random model: prefix reuse x batching x window.

Five configurations of `Patcher.edge_effects` on one model, batch and metric, in one process:

* loop: one full forward per edge (``prefix=False``, one patched copy per forward);
* prefix + window: one copy per forward, starting at the edge's receiving layer from the
  cached clean residual (`attrpatch.prefix`) on the window's positions (what ACDC runs);
* batching alone: full forwards of ``rows`` rows (``rows / B`` edges each);
* prefix + batching: prefix reuse and ``rows`` rows, every position computed (``window=False``);
* both: the default (`Patcher` with prefix reuse, ``rows`` rows and the window: positions from
  the first differing one, the last block at the metric position, `attrpatch.window`).

The batch's corrupted prompts first differ at ``first_diff`` (also at first_diff + 2); the
limit of `attrpatch.patch_cost` (the fraction of a full forward per edge that must be
recomputed, for this model's edges per layer and this first differing position) is reported
beside the measured speedup.

Timing all 32,491 edges of each configuration would take hours on 2 cores, so the time of
*all* edges is computed from timed samples, using what decides a patched forward's cost:
without prefix reuse every forward is the same full forward (time k sampled edges, x
n_edges / k); with it, a forward's cost depends only on the receiving layer of its edges
(edge_effects forms chunks per layer), so one chunk per receiving layer is timed and
weighted by that layer's edge count. The sampled edges' effects of all configurations
must agree (max difference reported).

ACDC at one tau: each ACDC test is one patched copy whose lowest patched input is the
receiver's layer (earlier removals all enter later layers), i.e. the "prefix + window"
forward of that layer; the whole run's edges tested per second is computed from those
per-layer times (every edge tested once, as when every receiver stays connected), before
(one full forward per test) and after. The first tests of a real ACDC run (receiver:
logits) are also timed on both paths.
"""
from __future__ import annotations

import time

import torch

from attrpatch import patch_cost
from attrpatch.graph import Graph
from attrpatch.patching import Patcher

from .common import FULL, Shape, build_model, interleaved_times, median, random_batch

CONFIGS = ("loop", "prefix + window", "batching alone", "prefix + batching", "both")


def _sample(idx: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    return idx[torch.randperm(idx.numel(), generator=gen)[:k]]


def _acdc_first_tests(patcher: Patcher, graph: Graph, n_tests: int, tau: float) -> int:
    """The first n_tests tests of a real ACDC run (the acdc module's own coroutine)."""
    from attrpatch.methods.acdc import _acdc_steps

    sign = -1.0 if patcher.metric.higher_is_better else 1.0
    gen = _acdc_steps(graph, graph.edge_mask.clone(), tau, sign * patcher.base_value)
    mask, done = next(gen), 0
    while done < n_tests:
        loss = float(patcher.metric_of_masks(mask.to(torch.float64))[0])
        done += 1
        try:
            mask = gen.send(sign * loss)
        except StopIteration:
            break
    return done


def run(shape: Shape = FULL, *, batch: int | None = None, seq: int | None = None, rows: int = 256,
        loop_edges: int = 3, repeats: int = 3, threads: int = 2, acdc_tests: int = 4, tau: float = 1e-3,
        seed: int = 0, first_diff: int = 1) -> list[dict]:
    torch.set_num_threads(threads)
    B, P = batch or shape.batch, seq or shape.seq
    t0 = time.perf_counter()
    model = build_model(shape)
    first_diff = min(first_diff, P - 1)
    b = random_batch(B, P, shape.vocab_size, seed=seed, corrupt_positions=(first_diff, first_diff + 2))
    g = Graph.from_model(model)
    copies = max(1, rows // B)
    patchers = {
        "loop": Patcher(model, g, b, prefix=False, rows_per_forward=B),
        "prefix + window": Patcher(model, g, b, rows_per_forward=B),
        "batching alone": Patcher(model, g, b, prefix=False, rows_per_forward=copies * B),
        "prefix + batching": Patcher(model, g, b, rows_per_forward=copies * B, window=False),
        "both": Patcher(model, g, b, rows_per_forward=copies * B),
    }
    if patchers["both"].runner is None:
        raise RuntimeError(f"prefix reuse unavailable: {patchers['both'].prefix_reason}")
    if patchers["both"].window is None:
        raise RuntimeError(f"window unavailable: {patchers['both'].window_reason}")
    setup_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    E = g.edge_index
    layer = patchers["both"]._recv_layer[E[:, 1]]
    layers = torch.unique(layer).tolist()
    n_l = {l: int((layer == l).sum()) for l in layers}
    # samples: per layer for prefix configs, from all edges for the others
    per_layer_one = {l: _sample((layer == l).nonzero().flatten(), 1, gen) for l in layers}
    per_layer_chunk = {l: _sample((layer == l).nonzero().flatten(), copies, gen) for l in layers}
    loop_idx = _sample(torch.arange(len(E)), loop_edges, gen)
    batch_idx = _sample(torch.arange(len(E)), copies, gen)
    est: dict[str, list[float]] = {k: [] for k in CONFIGS}
    per_layer_time: dict[int, list[float]] = {l: [] for l in layers}
    effects: dict[str, dict[int, float]] = {k: {} for k in CONFIGS}

    def record(name, idx, vals):
        for i, v in zip(idx.tolist(), vals.tolist()):
            effects[name][i] = v

    def uniform(name, idx):
        def fn():
            t = time.perf_counter()
            vals = patchers[name].edge_effects(E[idx])
            est[name].append((time.perf_counter() - t) * len(E) / len(idx))
            record(name, idx, vals)
        return fn

    def by_layer(name, samples, keep_layers=False):
        def fn():
            total = 0.0
            for l, idx in samples.items():
                t = time.perf_counter()
                vals = patchers[name].edge_effects(E[idx])
                dt = time.perf_counter() - t
                total += dt * n_l[l] / len(idx)
                if keep_layers:
                    per_layer_time[l].append(dt / len(idx))
                record(name, idx, vals)
            est[name].append(total)
        return fn

    fns = {"loop": uniform("loop", loop_idx), "prefix + window": by_layer("prefix + window", per_layer_one, True),
           "batching alone": uniform("batching alone", batch_idx),
           "prefix + batching": by_layer("prefix + batching", per_layer_chunk), "both": by_layer("both", per_layer_chunk)}
    acdc_times: dict[str, list[float]] = {"before": [], "after": []}

    def acdc_fn(name, p):
        def fn():
            t = time.perf_counter()
            n = _acdc_first_tests(p, g, acdc_tests, tau)
            acdc_times[name].append((time.perf_counter() - t) / n)
        return fn

    fns["acdc before"] = acdc_fn("before", patchers["loop"])
    fns["acdc after"] = acdc_fn("after", patchers["prefix + window"])
    interleaved_times(fns, repeats=repeats, warmup=0)

    # the same edge, any configuration: the same effect
    diffs = []
    for name in CONFIGS[1:]:
        common = set(effects[name]) & set(effects["both"])
        diffs += [abs(effects[name][i] - effects["both"][i]) for i in common]
    pairs = [(effects["loop"][i], effects[n][i]) for n in CONFIGS[1:] for i in effects["loop"] if i in effects[n]]
    diff = max([abs(a - c) for a, c in pairs] + diffs + [0.0])
    T = {k: median(v) for k, v in est.items()}
    rate = {k: len(E) / T[k] for k in CONFIGS}
    ctx = (f"{shape.name}, {len(E)} edges, B={B} x P={P}, rows_per_forward={copies * B} ({copies} edges/forward "
           f"when batched), {threads} threads (medians of {repeats} interleaved "
           f"repeats); all-edge time computed from timed samples (see benchmarks/prefix_patching.py); "
           f"max |effect difference| between configurations on common edges {diff:.1e}; setup {setup_s:.0f} s")
    speed = rate["both"] / rate["loop"]
    counts = patch_cost.edges_per_layer(g)
    pos = int(b.pos.max())
    frac = {k: patch_cost.recompute_fraction(patch_cost.shape_of(model), counts, P, first_diff, pos, k)
            for k in ("limit", "window", "prefix")}
    rows_out = [dict(id="patching_gpt2_speedup", measurement="exact patching of all edges, GPT-2-small shape: "
                     "prefix reuse + window + batching (default) / one full forward per edge",
                     value=speed, target=">= 5", ok=speed >= 5,
                     context=ctx + "; " + ", ".join(f"{k}: {rate[k]:.2f} edges/s" for k in CONFIGS)),
                dict(id="patching_gpt2_limit", measurement=f"limit: 1 / fraction of a full forward per edge that must "
                     f"be recomputed (this model's edges per layer, first differing position {first_diff}, metric "
                     f"position {pos}; attrpatch.patch_cost)", value=1 / frac["limit"], target="context", ok=None,
                     context=f"fraction {frac['limit']:.4f}; measured default reaches {speed * frac['limit']:.0%} "
                             f"of the limit; counted cost of the window path {1 / frac['window']:.2f}x, of the "
                             f"prefix path without window {1 / frac['prefix']:.2f}x (multiply-adds only)"),
                dict(id="patching_gpt2_window_gain", measurement="same, default / prefix + batching without window",
                     value=rate["both"] / rate["prefix + batching"], target="context", ok=None,
                     context=f"counted {frac['prefix'] / frac['window']:.2f}x")]
    for k in CONFIGS[1:4]:
        rows_out.append(dict(id="patching_gpt2_speedup_" + k.replace(" ", "_").replace("+", "and"),
                             measurement=f"same, {k} / one full forward per edge", value=rate[k] / rate["loop"],
                             target="context", ok=None, context=f"{rate[k]:.2f} vs {rate['loop']:.2f} edges/s"))
    for k in CONFIGS:
        rows_out.append(dict(id="patching_gpt2_rate_" + k.replace(" ", "_").replace("+", "and"),
                             measurement=f"exact patching, {k}",
                             value=rate[k], unit="edges/s", target="context", ok=None,
                             context=f"all-edge time {T[k]:.0f} s (median of {[round(x) for x in est[k]]})"))
    # ACDC, whole run, from the per-layer one-copy times (prefix + window) vs one full forward per test
    t_layer = {l: median(v) for l, v in per_layer_time.items()}
    after = len(E) / sum(n_l[l] * t_layer[l] for l in layers)
    before = rate["loop"]
    rows_out.append(dict(id="acdc_gpt2_rate", measurement="ACDC at one tau, whole run: edges tested per second, "
                         "after / before prefix reuse and window", value=after / before, target="context", ok=None,
                         context=f"after {after:.2f} edges/s, before {before:.2f} edges/s (one patched copy per "
                                 f"test; per-layer forward times of 'prefix + window'; every edge tested once)"))
    a, bf = median(acdc_times["after"]), median(acdc_times["before"])
    rows_out.append(dict(id="acdc_gpt2_first_tests", measurement=f"ACDC tau={tau:g}, its first {acdc_tests} tests "
                         "(receiver: logits), real run: after / before", value=bf / a, target="context", ok=None,
                         context=f"after {1 / a:.2f} tests/s, before {1 / bf:.2f} tests/s"))
    return rows_out
