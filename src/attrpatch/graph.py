"""Nodes, edges and their tensor layout for a TransformerBridge model.

This module is the one place that decides

* which nodes exist: ``input`` (token + position embedding, ``blocks.0.hook_in``), every
  head ``a{l}.h{h}`` (output ``blocks.l.attn.hook_result``), every MLP ``m{l}`` (output
  ``blocks.l.hook_mlp_out``, left out for attention-only models) and ``logits``;
* which inputs exist: each head has three (``a{l}.h{h}<q>``, ``<k>``, ``<v>``, from the split
  ``hook_{q,k,v}_input``), each MLP one (``hook_mlp_in``), ``logits`` one (``ln_final.hook_in``);
* the order of both, so that activations of all upstream outputs form one tensor
  ``[batch, pos, n_up, d_model]`` and gradients at all downstream inputs one tensor
  ``[batch, pos, n_down, d_model]``; an edge is a cell ``(u, v)`` of the ``[n_up, n_down]``
  score matrix, allowed when ``u`` comes before ``v``.

Upstream order is topological (input, then per layer its heads, then its MLP), and a
downstream input at layer ``l`` reads exactly the first ``n_parents`` upstream nodes, so
the edge mask is ``u < n_parents[v]``. An MLP reads its own layer's heads.

Why it is exact: the input of every node is the sum of its parents' outputs plus
constants (biases), so changing one parent's contribution by ``d`` changes the input by
``d``. ``b_O`` is not in ``hook_result`` but is a constant; it cancels in every difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd
import torch

QKV = ("q", "k", "v")


def enable_graph_hooks(model) -> None:
    """Turn on the hooks the graph reads (split q/k/v inputs, per-head results, MLP input).

    Attention-only models get no MLP-input hook. Raises a clear error when the model's
    attention implementation cannot split q/k/v inputs (e.g. transformer_lens 4.3's
    ``AttentionBridge`` of ``boot_native``/``boot_tl_legacy`` models).
    """
    try:
        model.set_use_split_qkv_input(True)
    except NotImplementedError as e:
        raise NotImplementedError(
            f"{type(model).__name__} cannot split q/k/v inputs ({e}); the graph needs "
            "per-head q/k/v inputs. Build the model from a Hugging Face GPT-2-style checkpoint "
            "with TransformerBridge.boot_transformers (see DESIGN.md, 'Models')."
        ) from e
    model.set_use_attn_result(True)
    if not is_attn_only(model):
        model.set_use_hook_mlp_in(True)


def is_attn_only(model) -> bool:
    """Attention-only: cfg.attn_only, or a tiny checkpoint marked by attrpatch (zero MLPs)."""
    return bool(getattr(model, "attrpatch_attn_only", False) or getattr(model.cfg, "attn_only", False))


@dataclass(frozen=True)
class InputHook:
    """A hook whose value is (part of) the inputs of downstream nodes."""

    name: str
    layer: int          # layer of the receiving nodes (n_layers for logits)
    kind: str           # "q" | "k" | "v" | "mlp" | "logits"
    start: int          # first downstream index it covers
    n_parents: int      # upstream nodes [0, n_parents) feed it

    @property
    def per_head(self) -> bool:
        return self.kind in QKV


@dataclass(frozen=True)
class OutputHook:
    """A hook whose value is the output of upstream nodes."""

    name: str
    kind: str           # "input" | "heads" | "mlp"
    start: int          # first upstream index it covers
    count: int


@dataclass
class Graph:
    """Node/edge index and hook layout of one model shape."""

    n_layers: int
    n_heads: int
    has_mlps: bool = True
    d_model: int | None = None
    upstream: list[str] = field(init=False)
    downstream: list[str] = field(init=False)
    n_parents: torch.Tensor = field(init=False)
    output_hooks: list[OutputHook] = field(init=False)
    input_hooks: list[InputHook] = field(init=False)

    def __post_init__(self):
        if self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(f"graph needs n_layers >= 1 and n_heads >= 1, got {self.n_layers}, {self.n_heads}")
        L, H = self.n_layers, self.n_heads
        up, outs = ["input"], [OutputHook("blocks.0.hook_in", "input", 0, 1)]
        down, ins, n_par = [], [], []
        for l in range(L):
            n_before = len(up)
            for kind in QKV:
                ins.append(InputHook(f"blocks.{l}.attn.hook_{kind}_input", l, kind, len(down), n_before))
                down += [f"a{l}.h{h}<{kind}>" for h in range(H)]
                n_par += [n_before] * H
            outs.append(OutputHook(f"blocks.{l}.attn.hook_result", "heads", len(up), H))
            up += [f"a{l}.h{h}" for h in range(H)]
            if self.has_mlps:
                ins.append(InputHook(f"blocks.{l}.hook_mlp_in", l, "mlp", len(down), len(up)))
                down.append(f"m{l}")
                n_par.append(len(up))
                outs.append(OutputHook(f"blocks.{l}.hook_mlp_out", "mlp", len(up), 1))
                up.append(f"m{l}")
        ins.append(InputHook("ln_final.hook_in", L, "logits", len(down), len(up)))
        down.append("logits")
        n_par.append(len(up))
        self.upstream, self.downstream = up, down
        self.n_parents = torch.tensor(n_par, dtype=torch.long)
        self.output_hooks, self.input_hooks = outs, ins

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_model(cls, model) -> "Graph":
        """The graph of a TransformerBridge model (reads n_layers, n_heads, d_model, attn-only)."""
        cfg = model.cfg
        missing = [k for k in ("n_layers", "n_heads", "d_model") if getattr(cfg, k, None) is None]
        if missing:
            raise ValueError(f"model config lacks {missing}; the graph needs n_layers, n_heads and d_model")
        return cls(int(cfg.n_layers), int(cfg.n_heads), has_mlps=not is_attn_only(model), d_model=int(cfg.d_model))

    # ---- sizes and names ----------------------------------------------------------
    @property
    def n_up(self) -> int:
        return len(self.upstream)

    @property
    def n_down(self) -> int:
        return len(self.downstream)

    @cached_property
    def edge_mask(self) -> torch.Tensor:
        """Bool [n_up, n_down]: True where u feeds v."""
        return torch.arange(self.n_up)[:, None] < self.n_parents[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())

    @cached_property
    def edge_index(self) -> torch.Tensor:
        """Long [n_edges, 2]: (u, v) of every edge, row-major over the score matrix."""
        return self.edge_mask.nonzero()

    @cached_property
    def edge_names(self) -> list[str]:
        return [f"{self.upstream[u]}->{self.downstream[v]}" for u, v in self.edge_index.tolist()]

    @cached_property
    def _up_pos(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.upstream)}

    @cached_property
    def _down_pos(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.downstream)}

    @cached_property
    def _edge_pos(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.edge_names)}

    @cached_property
    def nodes(self) -> list[str]:
        """All nodes: upstream outputs in order, then logits."""
        return self.upstream + ["logits"]

    def up_index(self, name: str) -> int:
        try:
            return self._up_pos[name]
        except KeyError:
            raise KeyError(f"unknown upstream node {name!r}; nodes with outputs are e.g. {self.upstream[:4]} ... {self.upstream[-2:]}") from None

    def down_index(self, name: str) -> int:
        try:
            return self._down_pos[name]
        except KeyError:
            raise KeyError(f"unknown downstream input {name!r}; inputs are e.g. {self.downstream[:3]} ... {self.downstream[-2:]}") from None

    def edge(self, name: str) -> tuple[int, int]:
        """(u, v) of an edge name 'u->v'."""
        if name not in self._edge_pos:
            u, sep, v = name.partition("->")
            if not sep:
                raise KeyError(f"edge name {name!r} is not of the form 'u->v'")
            ui, vi = self.up_index(u), self.down_index(v)
            raise KeyError(f"{u!r} does not feed {v!r} (upstream index {ui} >= parents {int(self.n_parents[vi])})")
        u, v = self.edge_index[self._edge_pos[name]].tolist()
        return u, v

    def node_inputs(self, node: str) -> list[int]:
        """Downstream indices that are inputs of `node` (3 for a head, 1 otherwise)."""
        if node.startswith("a") and node in self._up_pos:
            return [self._down_pos[f"{node}<{k}>"] for k in QKV]
        if node in self._down_pos:
            return [self._down_pos[node]]
        raise KeyError(f"unknown node {node!r}; nodes are e.g. {self.nodes[:3]} ... {self.nodes[-2:]}")

    def receiver_node(self, v: int) -> str:
        """The node that owns downstream input v (strips <q|k|v>)."""
        return self.downstream[v].split("<")[0]

    def head_of_up(self, u: int) -> tuple[int, int] | None:
        """(layer, head) of upstream index u, or None for input/MLP nodes."""
        name = self.upstream[u]
        if not name.startswith("a"):
            return None
        l, h = name[1:].split(".h")
        return int(l), int(h)

    def layer_of_up(self, u: int) -> int:
        """Layer of an upstream node; input is layer -1."""
        name = self.upstream[u]
        if name == "input":
            return -1
        return int(name[1:].split(".")[0])

    # ---- matrices <-> edges --------------------------------------------------------
    def edges_from_matrix(self, scores: torch.Tensor) -> torch.Tensor:
        """[..., n_up, n_down] -> [..., n_edges] in edge_names order."""
        return scores[..., self.edge_mask]

    def matrix_from_edges(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """[..., n_edges] -> [..., n_up, n_down], non-edges = fill."""
        out = torch.full(values.shape[:-1] + (self.n_up, self.n_down), fill, dtype=values.dtype, device=values.device)
        out[..., self.edge_mask] = values
        return out

    def edge_set_mask(self, edges) -> torch.Tensor:
        """Bool [n_up, n_down] of the named edges (names or (u, v) pairs)."""
        m = torch.zeros(self.n_up, self.n_down, dtype=torch.bool)
        for e in edges:
            u, v = self.edge(e) if isinstance(e, str) else e
            m[u, v] = True
        return m

    def to_frame(self, scores: torch.Tensor, column: str = "score") -> pd.DataFrame:
        """Edge scores (matrix or per-edge vector) as a DataFrame: edge, upstream, downstream, column."""
        vals = self.edges_from_matrix(scores) if scores.shape[-2:] == (self.n_up, self.n_down) else scores
        vals = vals.detach().cpu().double().numpy()
        uv = self.edge_index.tolist()
        return pd.DataFrame({
            "edge": self.edge_names,
            "upstream": [self.upstream[u] for u, _ in uv],
            "downstream": [self.downstream[v] for _, v in uv],
            column: vals,
        })

    def summary(self) -> dict:
        return {
            "n_layers": self.n_layers, "n_heads": self.n_heads, "has_mlps": self.has_mlps,
            "n_nodes": len(self.nodes), "n_upstream": self.n_up, "n_downstream": self.n_down,
            "n_edges": self.n_edges,
        }


def closed_form_edge_count(n_layers: int, n_heads: int, has_mlps: bool = True) -> int:
    """Edges by counting parents per input: a check on Graph independent of its loops."""
    L, H, M = n_layers, n_heads, int(has_mlps)
    per_layer = H + M
    heads = sum(3 * H * (1 + l * per_layer) for l in range(L))
    mlps = sum(1 + l * per_layer + H for l in range(L)) if has_mlps else 0
    return heads + mlps + 1 + L * per_layer
