"""Checks of notebook 01 (patching): counting the graph's edges, patching one edge by hand.

Ground truth: `Graph(...).n_edges` and `patching.Patcher.edge_effects` (exact patching).
Known mistakes recognised: heads with one input instead of q/k/v, the logits' edges left
out, MLPs that do not read their own layer's heads; a flipped sign, the other patching
direction, a whole-node patch instead of one edge.
"""
from __future__ import annotations

import torch

from ..graph import Graph
from ..patching import Patcher, node_effects
from .inputs import CHECK_SEED, random_batch, random_model
from .result import as_number, call_student, compare, run_check, DEFAULT_TIME_LIMIT

SHAPES = ((1, 1, False), (2, 3, True), (3, 2, False), (4, 4, True))   # (n_layers, n_heads, has_mlps)
EDGES = (("a0.h1", "a1.h0<k>"), ("input", "m1"), ("m0", "logits"), ("a0.h0", "a1.h1<v>"))


def _count_without_qkv(L, H, mlps):
    """Heads with a single input each: 2 H n_l fewer edges per layer."""
    M = int(mlps)
    return Graph(L, H, mlps).n_edges - sum(2 * H * (1 + l * (H + M)) for l in range(L))


def _count_without_logits(L, H, mlps):
    return Graph(L, H, mlps).n_edges - (1 + L * (H + int(mlps)))


def _count_parallel(L, H, mlps):
    return Graph(L, H, mlps, parallel_blocks=mlps).n_edges


def check_count_edges(fn, *, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(n_layers, n_heads, has_mlps) -> number of edges of the graph (heads with q, k, v inputs)."""
    ex, pts = "count_edges", 1.0

    def body():
        got = [as_number(call_student(fn, *s, time_limit=time_limit)) for s in SHAPES]
        want = [Graph(*s).n_edges for s in SHAPES]
        mistakes = [
            ([_count_without_qkv(*s) for s in SHAPES],
             "each head reads the residual stream three times (q, k, v): three inputs, one edge from every earlier node into each"),
            ([_count_without_logits(*s) for s in SHAPES],
             "the logits are a node too: every upstream node (input, heads, MLPs) has an edge into `logits`"),
            ([_count_parallel(*s) for s in SHAPES] if any(s[2] for s in SHAPES) else None,
             "in a GPT-2 block the MLP runs after attention: m{l} also reads its own layer's heads"),
        ]
        mistakes = [(v, h) for v, h in mistakes if v is not None]
        where = lambda i: f"n_layers={SHAPES[i][0]}, n_heads={SHAPES[i][1]}, has_mlps={SHAPES[i][2]}"
        return compare(ex, pts, got, want, mistakes, where, f"right for all {len(SHAPES)} model shapes")
    return run_check(ex, pts, body, verbose)


def check_patch_one_edge(fn, *, seed: int = CHECK_SEED, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(model, graph, batch, u, v) -> metric(clean run with edge u->v carrying its corrupt value)
    - metric(clean run), averaged over the batch (a float); u, v are node/input names."""
    ex, pts = "patch_one_edge", 2.0

    def body():
        model, graph = random_model(seed)
        batch = random_batch(seed)
        uv = torch.tensor([[graph.up_index(u), graph.down_index(v)] for u, v in EDGES])
        got = [as_number(call_student(fn, model, graph, batch, u, v, time_limit=time_limit)) for u, v in EDGES]
        patcher = Patcher(model, graph, batch)
        want = patcher.edge_effects(uv)
        minus = torch.stack([patcher.interpolate_edge(u, v, [-1.0])[0] for u, v in uv.tolist()]) - patcher.base_value
        other = Patcher(model, graph, batch, direction="clean_into_corrupt").edge_effects(uv)
        nodes = node_effects(model, graph, batch, nodes=uv[:, 0].tolist())
        sign_hint = ("sign flipped: the effect is metric(patched) - metric(clean), and the edge adds "
                     "z_u(corrupt) - z_u(clean) to the receiver's input")
        mistakes = [
            (-want, sign_hint),
            (minus, sign_hint),
            (other, "wrong direction: the base run is the clean prompt and the edge carries the corrupt "
                    "value in (you patched clean into the corrupt run)"),
            (nodes, "you patched the whole node (every reader of u sees the corrupt output); patch only "
                    "the input of v: add z_u(corrupt) - z_u(clean) at v's input hook"),
        ]
        where = lambda i: f"edge {EDGES[i][0]}->{EDGES[i][1]}"
        return compare(ex, pts, got, want, mistakes, where, f"equals exact patching on {len(EDGES)} edges of a fresh model")
    return run_check(ex, pts, body, verbose)
