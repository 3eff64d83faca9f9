"""How much of one full forward exact patching of one edge must recompute: the limit of the
prefix and window paths (`prefix`, `window`), counted in multiply-adds.

Why: a speedup is only judged against what it could reach. For an edge into layer l, blocks
below l are the base run's; positions before ``t0`` (the first differing one) are the base
run's in every layer; positions after the last metric position are never read; the last block
needs its keys and values on the window but its queries, attention output, MLP, the final norm
and the unembedding only at the metric position. What remains is counted here for a
GPT-2-style block (q, k, v and output projections d^2 each, MLP 2 d d_mlp, attention scores and
mixing 2 d per query-key pair) and unembedding (d V per position); norms, softmax, biases, the
embedding and the patch hooks' additions are left out (each is linear in positions with a small
constant).

Three costs per edge, each as a fraction of one full forward (every block and the unembedding
at every position, what a forward per edge costs):

* ``limit``: the work that must be done, above;
* ``window``: what `window.WindowRunner` does: its last-block pass over the window also computes
  the queries there (stopped once keys and values exist), and the block at the metric
  position recomputes that position's keys and values;
* ``prefix``: the prefix path alone (`prefix.PrefixRunner.logits` with `pos`): every position in
  blocks l..L-1, the unembedding at the metric position; edges into layer 0 a full forward.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int


GPT2_SMALL = Shape(12, 768, 3072, 50257)


def _block(s: Shape, proj_pos: float, kv_pos: float, q_pos: float, keys: float) -> float:
    """A block: k, v projections at kv_pos positions, q at proj_pos, attention for q_pos queries
    over `keys` keys, output projection and MLP at q_pos positions."""
    d = s.d_model
    return d * d * (2 * kv_pos + proj_pos + q_pos) + 2 * d * q_pos * keys + 2 * d * s.d_mlp * q_pos


def full_forward(s: Shape, P: int) -> float:
    """Multiply-adds of one forward of one prompt of P positions (all logits)."""
    return s.n_layers * _block(s, P, P, P, P) + s.d_model * s.d_vocab * P


def edge_cost(s: Shape, layer: int, P: int, t0: int, pos: int, kind: str = "limit") -> float:
    """Multiply-adds to patch one edge into `layer` (n_layers: the logits) of one prompt."""
    L, P1 = s.n_layers, pos + 1
    if kind == "prefix":
        if layer == 0:
            return full_forward(s, P)
        return (L - layer) * _block(s, P, P, P, P) + s.d_model * s.d_vocab
    if kind not in ("limit", "window"):
        raise ValueError(f"unknown cost kind {kind!r}; allowed: limit, window, prefix")
    W = P1 - t0
    cost = s.d_model * s.d_vocab  # the unembedding at the metric position
    if layer <= L - 1:
        cost += (L - 1 - layer) * _block(s, W, W, W, P1)
        if kind == "limit":  # keys and values on the window, the rest at the metric position
            cost += _block(s, 1, W, 1, P1)
        else:  # window pass up to keys and values (q too), then the block at the metric position
            cost += s.d_model ** 2 * 3 * W + _block(s, 1, 1, 1, P1)
    return cost


def recompute_fraction(s: Shape, edges_per_layer: list[int], P: int, t0: int, pos: int,
                       kind: str = "limit") -> float:
    """Mean over edges of edge_cost / full_forward; `edges_per_layer[l]`: edges into layer l
    (index n_layers: into the logits). 1 / this is the speedup over a forward per edge."""
    if len(edges_per_layer) != s.n_layers + 1:
        raise ValueError(f"edges_per_layer needs {s.n_layers + 1} counts (layers and logits), "
                         f"got {len(edges_per_layer)}")
    if not 0 <= t0 <= pos < P:
        raise ValueError(f"need 0 <= t0 <= pos < P, got t0={t0}, pos={pos}, P={P}")
    n = sum(edges_per_layer)
    total = sum(k * edge_cost(s, l, P, t0, pos, kind) for l, k in enumerate(edges_per_layer))
    return total / (n * full_forward(s, P))


def edges_per_layer(graph) -> list[int]:
    """Edges into each layer of `graph` (a `graph.Graph`), the logits last."""
    counts = [0] * (graph.n_layers + 1)
    recv = {}
    for ih in graph.input_hooks:
        for v in range(ih.start, ih.start + ih.count):
            recv[v] = ih.layer
    for v in graph.edge_index[:, 1].tolist():
        counts[recv[v]] += 1
    return counts


def shape_of(model) -> Shape:
    """The `Shape` of a transformer_lens model (its cfg)."""
    c = model.cfg
    return Shape(int(c.n_layers), int(c.d_model), int(getattr(c, "d_mlp", None) or 4 * c.d_model), int(c.d_vocab))
