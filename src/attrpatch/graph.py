"""Nodes, edges and their tensor layout for a TransformerBridge model.

This module is the one place that decides

* which nodes exist: ``input`` (token + position embedding, ``blocks.0.hook_in``), every
  head ``a{l}.h{h}`` (output ``blocks.l.attn.hook_result``), every MLP ``m{l}`` (output
  ``blocks.l.hook_mlp_out``, left out for attention-only models) and ``logits``;
* which inputs exist: each head has three (``a{l}.h{h}<q>``, ``<k>``, ``<v>``, from the split
  ``hook_{q,k,v}_input``), each MLP one (``hook_mlp_in``), ``logits`` one (``ln_final.hook_in``);
  with grouped-query attention see "GQA" below;
* the order of both, so that activations of all upstream outputs form one tensor
  ``[batch, pos, n_up, d_model]`` and gradients at all downstream inputs one tensor
  ``[batch, pos, n_down, d_model]``; an edge is a cell ``(u, v)`` of the ``[n_up, n_down]``
  score matrix, allowed when ``u`` comes before ``v``.

Upstream order is topological (input, then per layer its heads, then its MLP), and a
downstream input at layer ``l`` reads exactly the first ``n_parents`` upstream nodes, so
the edge mask is ``u < n_parents[v]``. In a sequential block (GPT-2, Llama, Pythia with
``use_parallel_residual=False``) an MLP reads its own layer's heads; in a parallel block
(Pythia's default: attention and MLP both read the block's input, ``cfg.parallel_attn_mlp``)
it does not, so ``m{l}`` has the same parents as the heads of layer l.

GQA (``n_kv_heads`` G < ``n_heads`` H; Llama 2/3, Mistral, Qwen2): a key/value input is one
per *kv head*, shared by its group of H/G query heads (query head h reads kv head
``h // (H/G)``, the ``repeat_interleave`` order of transformer_lens and Hugging Face). The
inputs are ``a{l}.kv{g}<k>`` and ``a{l}.kv{g}<v>``, owned by every head of the group
(`receiver_nodes`); query inputs stay ``a{l}.h{h}<q>``. This is the function the model
computes: transformer_lens 4.3 projects each kv head once from a ``[B, P, G, d]`` input, so
patching an edge into ``a{l}.kv{g}<k>`` changes the keys of the whole group. This is
``kv_convention="grouped"``, the default.

``kv_convention="ungrouped"`` is the EAP-IG library's and MIB's convention: every query
head has its own key and value input, ``a{l}.h{h}<k>`` / ``<v>``, so the graph's names and
counts are those of multi-head attention with H heads (hannamw/EAP-IG, src/eap/graph.py,
commit 795f5607: ``Graph.from_model`` adds ``<q>``, ``<k>``, ``<v>`` edges for every
head, and its attribution asserts TransformerLens' ``ungroup_grouped_query_attention``).
The model must then compute per-query-head keys and values: `models.ungroup` repeats each kv
head's projection once per query head of its group, which leaves the model's function
unchanged and gives ``hook_k_input`` / ``hook_v_input`` an H-head axis to patch. A graph
records its convention (and G, the model's own kv heads) so circuit files say which one they
use (`circuits.kv` converts between them where that is exact). With G = H both conventions are
the same graph and the field reads "grouped".

Edge counts in closed form (`closed_form_edge_count`), with M = 1 for MLPs, 0 without, and
``n_l = 1 + l (H + M)`` upstream nodes before layer l: per layer ``(H + 2G) n_l`` edges into
heads, ``n_l + H`` into a sequential MLP or ``n_l`` into a parallel one; ``1 + L (H + M)``
into logits.

Why it is exact: the input of every node is the sum of its parents' outputs plus
constants (biases), so changing one parent's contribution by ``d`` changes the input by
``d``. ``b_O`` is not in ``hook_result`` but is a constant; it cancels in every difference.

Post-attention norm (Gemma 2: ``ln1_post`` after attention, ``ln2_post`` after the MLP;
``post_attn_norm=True``): the nodes, inputs and names stay those above, as the EAP-IG
library keeps them (hannamw/EAP-IG, commit 795f5607, src/eap/graph.py): a head's output is
still read at ``hook_result``, before ``ln1_post``, and an MLP's at ``hook_mlp_out``, which
transformer_lens puts after ``ln2_post``, so MLP outputs stay additive. A layer's attention
adds ``ln1_post(sum of its heads + b_O)`` to the residual, which is not the sum of its heads'
outputs: patching is then defined per receiving input, layer by layer, through ``ln1_post``
(`patching` module docstring), and gradient methods multiply by its Jacobian
(`post_norm.PostNormTape`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd
import torch

QKV = ("q", "k", "v")
KV_CONVENTIONS = ("grouped", "ungrouped")


def enable_graph_hooks(model) -> None:
    """Turn on the hooks the graph reads (split q/k/v inputs, per-head results, MLP input).

    Attention-only models get no MLP-input hook. Raises a clear error when the model's
    attention implementation cannot split q/k/v inputs (e.g. transformer_lens 4.3's
    ``AttentionBridge`` of ``boot_native``/``boot_tl_legacy`` models).
    """
    try:
        model.set_use_split_qkv_input(True)
    except NotImplementedError as e:
        raise GraphUnsupported(
            f"{model_family(model)}: transformer_lens cannot split this model's q/k/v inputs "
            f"({str(e).splitlines()[0]}); the graph needs per-head q/k/v input hooks. "
            "Build the model from a Hugging Face checkpoint with TransformerBridge.boot_transformers "
            "(see docs/MODELS.md)."
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
    count: int = 1      # downstream inputs it covers: H for q, G (kv heads) for k/v, 1 else

    @property
    def per_head(self) -> bool:
        """Its value has a head axis ([B, P, count, d]) rather than being [B, P, d]."""
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
    n_kv_heads: int | None = None     # None = n_heads (multi-head attention)
    parallel_blocks: bool = False     # attention and MLP read the same block input
    kv_convention: str = "grouped"    # GQA: one k/v input per kv head, or one per query head
    post_attn_norm: bool = False      # heads reach the residual through ln1_post (Gemma 2)
    family: str | None = field(default=None, init=False)   # the model's architecture, for messages
    upstream: list[str] = field(init=False)
    downstream: list[str] = field(init=False)
    n_parents: torch.Tensor = field(init=False)
    output_hooks: list[OutputHook] = field(init=False)
    input_hooks: list[InputHook] = field(init=False)

    def __post_init__(self):
        if self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(f"graph needs n_layers >= 1 and n_heads >= 1, got {self.n_layers}, {self.n_heads}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads must be >= 1 and divide n_heads={self.n_heads}, got {self.n_kv_heads}")
        if self.post_attn_norm and self.parallel_blocks:
            raise ValueError("post_attn_norm with parallel_blocks is not a layout any supported family has")
        if self.parallel_blocks and not self.has_mlps:
            raise ValueError("parallel_blocks needs MLPs (an attention-only block has nothing in parallel)")
        if self.kv_convention not in KV_CONVENTIONS:
            raise ValueError(f"kv_convention must be one of {KV_CONVENTIONS}, got {self.kv_convention!r}")
        if self.n_kv_heads == self.n_heads:
            self.kv_convention = "grouped"      # multi-head attention: the two conventions coincide
        L, H, G = self.n_layers, self.n_heads, self.n_kv_inputs
        up, outs = ["input"], [OutputHook("blocks.0.hook_in", "input", 0, 1)]
        down, ins, n_par = [], [], []
        for l in range(L):
            n_before = len(up)
            for kind in QKV:
                n = H if kind == "q" else G
                ins.append(InputHook(f"blocks.{l}.attn.hook_{kind}_input", l, kind, len(down), n_before, n))
                down += [f"a{l}.h{h}<{kind}>" if n == H else f"a{l}.kv{h}<{kind}>" for h in range(n)]
                n_par += [n_before] * n
            outs.append(OutputHook(f"blocks.{l}.attn.hook_result", "heads", len(up), H))
            up += [f"a{l}.h{h}" for h in range(H)]
            if self.has_mlps:
                mlp_par = n_before if self.parallel_blocks else len(up)
                ins.append(InputHook(f"blocks.{l}.hook_mlp_in", l, "mlp", len(down), mlp_par))
                down.append(f"m{l}")
                n_par.append(mlp_par)
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
        """The graph of a TransformerBridge model.

        Reads n_layers, n_heads, d_model, the kv heads (``cfg.n_key_value_heads``, or the
        checkpoint's own count for a model `models.ungroup` ungrouped), the kv convention
        (``model.attrpatch_kv_convention``, set by the loader), the block kind
        (``cfg.parallel_attn_mlp``), the post-attention norm (`has_post_attn_norm`) and
        attention-only-ness from the model. A model the
        graph cannot serve raises `GraphUnsupported` naming its family and what is missing.
        """
        cfg = model.cfg
        family = model_family(model)
        missing = [k for k in ("n_layers", "n_heads", "d_model") if getattr(cfg, k, None) is None]
        if missing:
            raise GraphUnsupported(f"{family}: model config lacks {missing}; the graph needs n_layers, n_heads and d_model")
        check_supported(model)
        kv = getattr(model, "attrpatch_native_kv_heads", None) or getattr(cfg, "n_key_value_heads", None)
        g = cls(int(cfg.n_layers), int(cfg.n_heads), has_mlps=not is_attn_only(model), d_model=int(cfg.d_model),
                n_kv_heads=int(kv) if kv else None, parallel_blocks=bool(getattr(cfg, "parallel_attn_mlp", False)),
                kv_convention=getattr(model, "attrpatch_kv_convention", "grouped"),
                post_attn_norm=has_post_attn_norm(model))
        g.family = family
        return g

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
    def heads_by_layer(self) -> list[range]:
        """Upstream indices of each layer's heads (a layer's heads are contiguous)."""
        return [range(oh.start, oh.start + oh.count) for oh in self.output_hooks if oh.kind == "heads"]

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

    @property
    def group_size(self) -> int:
        """Query heads per kv head (1 without GQA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def n_kv_inputs(self) -> int:
        """Key (and value) inputs per layer: G grouped, H ungrouped."""
        return self.n_heads if self.kv_convention == "ungrouped" else self.n_kv_heads

    def kv_input_name(self, l: int, h: int, kind: str) -> str:
        """Name of the `kind` ("q" | "k" | "v") input that query head h of layer l reads."""
        if kind == "q" or self.n_kv_inputs == self.n_heads:
            return f"a{l}.h{h}<{kind}>"
        return f"a{l}.kv{h // self.group_size}<{kind}>"

    def node_inputs(self, node: str) -> list[int]:
        """Downstream indices that are inputs of `node` (q, k, v for a head, 1 otherwise).

        Under GQA a head's k and v inputs are its group's, shared with the group's other heads."""
        if node.startswith("a") and node in self._up_pos:
            l, h = self.head_of_up(self._up_pos[node])
            return [self._down_pos[self.kv_input_name(l, h, k)] for k in QKV]
        if node in self._down_pos:
            return [self._down_pos[node]]
        raise KeyError(f"unknown node {node!r}; nodes are e.g. {self.nodes[:3]} ... {self.nodes[-2:]}")

    def receiver_nodes(self, v: int) -> list[str]:
        """The nodes that own downstream input v: one, or a kv head's group of query heads."""
        name = self.downstream[v].split("<")[0]
        if ".kv" not in name:
            return [name]
        l, g = name[1:].split(".kv")
        k = self.group_size
        return [f"a{l}.h{h}" for h in range(int(g) * k, (int(g) + 1) * k)]

    def receiver_node(self, v: int) -> str:
        """The one node that owns downstream input v (strips <q|k|v>); for a shared GQA
        key/value input use `receiver_nodes`."""
        nodes = self.receiver_nodes(v)
        if len(nodes) != 1:
            raise ValueError(f"{self.downstream[v]!r} is shared by {nodes}; use receiver_nodes")
        return nodes[0]

    @cached_property
    def input_owners(self) -> list[list[int]]:
        """For each downstream input, the indices into `nodes` of the nodes that own it."""
        pos = {n: i for i, n in enumerate(self.nodes)}
        return [[pos[n] for n in self.receiver_nodes(v)] for v in range(self.n_down)]

    @cached_property
    def owner_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(v, w) long tensors: downstream input v is owned by node w (index into ``nodes``).
        One pair per input, except a GQA key/value input: one per head of its group."""
        pairs = [(v, w) for v, ws in enumerate(self.input_owners) for w in ws]
        return (torch.tensor([v for v, _ in pairs], dtype=torch.long),
                torch.tensor([w for _, w in pairs], dtype=torch.long))

    def inputs_of_any(self, node_flags: torch.Tensor) -> torch.Tensor:
        """Bool [n_down]: input v is True when any node that owns it is True in `node_flags`
        (bool [n_up + 1], indexed like ``nodes``)."""
        v, w = self.owner_pairs
        hits = torch.zeros(self.n_down, dtype=torch.long).index_add_(0, v, node_flags[w].long())
        return hits > 0

    @cached_property
    def inputs_by_node(self) -> list[list[int]]:
        """For each node of ``nodes`` (by index), its downstream inputs ([] for ``input``).
        Shared: do not modify."""
        ins: list[list[int]] = [[] for _ in range(self.n_up + 1)]
        for v, ws in enumerate(self.input_owners):
            for w in ws:
                ins[w].append(v)
        return ins

    def reaches_logits(self, circuit: torch.Tensor) -> torch.Tensor:
        """Bool [n_up + 1] (index n_up = ``logits``): which nodes have a path to the logits
        through the edges of ``circuit`` (bool [n_up, n_down]). One backward sweep: upstream
        nodes are in topological order, and a node reaches the logits when one of its circuit
        edges enters a node that does."""
        reach = torch.zeros(self.n_up + 1, dtype=torch.bool)
        reach[self.n_up] = True
        for u in range(self.n_up - 1, -1, -1):
            reach[u] = bool((circuit[u] & self.inputs_of_any(reach)).any())
        return reach

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
            "n_layers": self.n_layers, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
            "has_mlps": self.has_mlps, "parallel_blocks": self.parallel_blocks, "kv_convention": self.kv_convention,
            "post_attn_norm": self.post_attn_norm,
            "n_nodes": len(self.nodes), "n_upstream": self.n_up, "n_downstream": self.n_down,
            "n_edges": self.n_edges,
        }


def closed_form_edge_count(n_layers: int, n_heads: int, has_mlps: bool = True, n_kv_heads: int | None = None,
                           parallel_blocks: bool = False, kv_convention: str = "grouped") -> int:
    """Edges by counting parents per input (module docstring): a check on Graph independent
    of its loops. Summed in closed form: with n_l = 1 + l (H + M),
    sum_l n_l = L + (H + M) L (L - 1) / 2. Ungrouped GQA counts as G = H."""
    L, H, M = n_layers, n_heads, int(has_mlps)
    G = H if n_kv_heads is None or kv_convention == "ungrouped" else n_kv_heads
    s = L + (H + M) * L * (L - 1) // 2                 # sum over layers of n_l
    heads = (H + 2 * G) * s
    mlps = (s + (0 if parallel_blocks else H * L)) if has_mlps else 0
    return heads + mlps + 1 + L * (H + M)


class GraphUnsupported(ValueError, NotImplementedError):
    """A model the graph cannot serve; the message names its family and what is missing."""


def model_family(model) -> str:
    """The model's architecture name (e.g. 'LlamaForCausalLM'), for messages and the support table."""
    cfg = getattr(model, "cfg", None)
    return str(getattr(cfg, "architecture", None) or getattr(cfg, "original_architecture", None)
               or type(model).__name__)


def check_supported(model) -> None:
    """Raise `GraphUnsupported` (family + reason) unless the graph's identity holds for `model`:
    every node input is the sum of its parents' outputs plus constants, at hooks the graph can
    read and patch."""
    family = model_family(model)
    reason = getattr(model, "attrpatch_graph_error", None)
    if reason:
        raise GraphUnsupported(f"{family}: {reason}")
    cfg = model.cfg
    if not getattr(cfg, "use_split_qkv_input", False) or not getattr(cfg, "use_attn_result", False):
        raise GraphUnsupported(f"{family}: the graph's hooks are off (split q/k/v inputs, per-head results); "
                               "load the model with attrpatch.models.load_model or call graph.enable_graph_hooks")
    blocks = getattr(model, "blocks", None) or []
    post = [sorted(n for n in ("ln1_post", "ln2_post") if hasattr(b, n)) for b in blocks]
    if any(post) and any(p != ["ln1_post", "ln2_post"] for p in post):
        raise GraphUnsupported(
            f"{family}: blocks normalize only some of their outputs after the fact ({post[0]}); the graph serves "
            "blocks with no post-norm or with both ln1_post and ln2_post (Gemma 2)")
    if any(post) and getattr(model.cfg, "parallel_attn_mlp", False):
        raise GraphUnsupported(f"{family}: post-norms in a parallel block; the graph serves them in sequential blocks")


def has_post_attn_norm(model) -> bool:
    """Whether the model's blocks normalize the summed attention output (``ln1_post``) and the
    MLP output (``ln2_post``) before adding them to the residual (Gemma 2)."""
    blocks = getattr(model, "blocks", None) or []
    return bool(blocks) and all(hasattr(b, "ln1_post") and hasattr(b, "ln2_post") for b in blocks)
