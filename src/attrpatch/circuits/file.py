"""A circuit as a file: save, load, and exchange with the EAP-IG library's graph JSON.

One layout serves both tools. The file is the EAP-IG library's graph JSON
(``hannamw/EAP-IG``, ``Graph.to_json`` / ``Graph.from_json``)::

    {"cfg":   {"n_layers": L, "n_heads": H, "d_model": D, "parallel_attn_mlp": false, ...},
     "nodes": {"input": {"in_graph": true}, "a0.h0": {...}, "m0": {...}, ..., "logits": {...}},
     "edges": {"input->a0.h0<q>": {"score": s, "in_graph": true}, ..., "m2->logits": {...}}}

with every edge of the graph listed (its score, and whether it is in the circuit), plus one
key of our own, ``"attrpatch"``: format and version, method and options, model and task,
the graph convention (every constructor field of `graph.Graph`, so options other modules
add to the graph are recorded without this module naming them, plus the edge count and a
fingerprint of the edge names), and free-form ``info`` (selection, faithfulness, the
prompts it was evaluated on). The EAP-IG library reads only cfg/nodes/edges, so a file
written here loads there when `eap_ig_incompatibility` is None (recorded in the file);
a file written there (no ``"attrpatch"`` key) loads here.

Why the edge names are checked, not just the shape: two graphs of the same n_layers and
n_heads can still differ in convention (parallel attention/MLP blocks, grouped keys and
values, extra q/k/v edges); the EAP-IG layout is recomputed from its documented
construction (`eap_ig_edge_names`) and compared with our graph's edges, name by name.

A loaded circuit is refused, with what differs, when the file's graph is not the model's:
shape, convention fields, or edge names. Node flags in a file are not trusted (EAP-IG
derives them from the edges when it prunes); nodes are derived from the circuit's edges.

Trust fields (optional, per edge, beside ``score`` and ``in_graph``; only on the edges where
they were computed): ``exact`` (the edge's exact patching effect), ``reliability`` (the
second-order correction's rho, `methods.hvp`), ``flag`` (Screen-Flag-Fix's flag, rho >
threshold), and with them ``rank`` (the method's rank of the edge: 1 = the largest |score|,
ties in the graph's edge order; `Circuit.ranks`, recomputed from the scores when read). A
file without them stays byte-for-byte the EAP-IG layout. Readers that do not know them ignore
them: the EAP-IG library's ``Graph.from_json`` reads only ``score`` and ``in_graph`` of each
edge (hannamw/EAP-IG, eap/graph.py at 009cb68), and so did this module before the trust
fields; what was computed (K, threshold, cost) is recorded in ``info["trust"]``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..graph import Graph, QKV
from ..io import atomic_path, json_safe

FORMAT = "attrpatch.circuit"
VERSION = 1
EAP_IG_KEYS = ("cfg", "nodes", "edges")
# optional per-edge trust fields: name -> what a value must be
TRUST_FIELDS = {"exact": "a number or null", "reliability": "a number or null", "flag": "true or false"}


class CircuitFileError(ValueError):
    """A circuit file that is malformed or belongs to another graph."""


# ---- the graph convention ------------------------------------------------------------------
def graph_fields(graph: Graph) -> dict:
    """The graph's constructor fields (n_layers, n_heads, has_mlps, d_model and any option
    added later), JSON-safe: enough to rebuild the same Graph."""
    out = {}
    for f in dataclasses.fields(graph):
        if f.init:
            v = getattr(graph, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def edge_fingerprint(names) -> str:
    """sha256 (16 hex digits) of the edge names in order: equal iff the same edge list."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def graph_convention(graph: Graph) -> dict:
    """What a circuit file records about its graph."""
    return {"fields": graph_fields(graph), "qkv_split": True, "n_edges": graph.n_edges,
            "edge_fingerprint": edge_fingerprint(graph.edge_names)}


def graph_from_convention(conv: dict) -> Graph:
    """Rebuild the Graph a file was written for (its recorded constructor fields)."""
    known = {f.name for f in dataclasses.fields(Graph) if f.init}
    try:
        g = Graph(**{k: v for k, v in conv["fields"].items() if k in known or v not in (None, False)})
    except TypeError as e:
        raise CircuitFileError(f"the file's graph fields {sorted(conv['fields'])} do not build a Graph here ({e}); "
                               f"this version's Graph takes {[f.name for f in dataclasses.fields(Graph) if f.init]}") from None
    return g


def convention_differences(conv: dict, graph: Graph) -> list[str]:
    """Human-readable differences between a recorded convention and `graph` ([] if none)."""
    mine = graph_convention(graph)
    diffs = []
    ff, gf = conv.get("fields", {}), mine["fields"]
    for k in sorted(set(ff) & set(gf)):   # a field one side lacks (another version) is judged by the edges
        a, b = ff[k], gf[k]
        if k == "d_model" and (a is None or b is None):
            continue                  # a graph built without a model does not know d_model
        if a != b:
            diffs.append(f"{k}: file {a!r}, model {b!r}")
    if not diffs and conv.get("edge_fingerprint") != mine["edge_fingerprint"]:
        diffs.append(f"edge list: file has {conv.get('n_edges')} edges (fingerprint {conv.get('edge_fingerprint')}), "
                     f"model's graph {mine['n_edges']} ({mine['edge_fingerprint']})")
    return diffs


# ---- the EAP-IG library's layout ---------------------------------------------------------------
def eap_ig_node_names(n_layers: int, n_heads: int) -> list[str]:
    """EAP-IG's nodes: input, then per layer its heads and its MLP, then logits."""
    names = ["input"]
    for l in range(n_layers):
        names += [f"a{l}.h{h}" for h in range(n_heads)] + [f"m{l}"]
    return names + ["logits"]


def eap_ig_edge_names(n_layers: int, n_heads: int, parallel_attn_mlp: bool = False) -> list[str]:
    """EAP-IG's edges (its ``Graph.from_model`` construction): every head reads q, k and v
    from everything before its layer; an MLP reads that plus its own layer's heads
    (sequential blocks) or only what came before the layer (parallel blocks); logits read
    everything."""
    stream, names = ["input"], []
    for l in range(n_layers):
        heads = [f"a{l}.h{h}" for h in range(n_heads)]
        names += [f"{u}->{a}<{k}>" for u in stream for a in heads for k in QKV]
        mlp_parents = stream if parallel_attn_mlp else stream + heads
        names += [f"{u}->m{l}" for u in mlp_parents]
        stream = stream + heads + [f"m{l}"]
    return names + [f"{u}->logits" for u in stream]


def _is_mlp_edge(name: str) -> bool:
    u, _, v = name.partition("->")
    return u.startswith("m") or v.startswith("m")


def eap_ig_layout(graph: Graph) -> tuple[dict | None, str | None]:
    """(EAP-IG cfg, None) if the EAP-IG library builds this graph's edges, else (None, why).

    An attention-only graph maps onto EAP-IG's graph with its MLP nodes and edges left out of
    the circuit (its loader keeps them at score 0, not in the graph)."""
    ours = set(graph.edge_names)
    for parallel in (False, True):
        theirs = eap_ig_edge_names(graph.n_layers, graph.n_heads, parallel)
        expect = set(theirs) if graph.has_mlps else {e for e in theirs if not _is_mlp_edge(e)}
        if ours == expect:
            break
    else:
        theirs = set(eap_ig_edge_names(graph.n_layers, graph.n_heads, False))
        extra, missing = sorted(ours - theirs), sorted(theirs - ours) if graph.has_mlps else []
        return None, (f"the graph's edges are not the EAP-IG library's ({len(extra)} edges it lacks, e.g. "
                      f"{extra[:3]}; {len(missing)} it has that this graph lacks, e.g. {missing[:3]})")
    if graph.d_model is None:
        return None, "d_model is unknown (graph built without a model); the EAP-IG loader needs it"
    cfg = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "d_model": graph.d_model,
           "parallel_attn_mlp": parallel}
    return cfg, None


def eap_ig_incompatibility(graph: Graph) -> str | None:
    """Why the EAP-IG library cannot load circuits of `graph` (None: it can)."""
    return eap_ig_layout(graph)[1]


# ---- the circuit ----------------------------------------------------------------------------------
def edge_kind(downstream_name: str) -> str:
    """'q' | 'k' | 'v' for an edge into a head's query/key/value input, 'residual' otherwise."""
    if downstream_name.endswith(">") and "<" in downstream_name:
        return downstream_name.rsplit("<", 1)[1][:-1]
    return "residual"


@dataclass
class Circuit:
    """A circuit on a graph: edge mask, every edge's score, and where it came from.

    mask: bool [n_up, n_down] (cells off ``graph.edge_mask`` are dropped); scores: float
    [n_up, n_down] (NaN: not scored) or None; info: free-form (selection, faithfulness, ...);
    edge_info: {edge name: {trust field: value}} for the edges whose exact effect /
    reliability / flag were computed (`TRUST_FIELDS`).
    """

    graph: Graph
    mask: torch.Tensor
    scores: torch.Tensor | None = None
    method: str | None = None
    options: dict = field(default_factory=dict)
    model: str | None = None
    task: str | None = None
    info: dict = field(default_factory=dict)
    edge_info: dict = field(default_factory=dict)

    def __post_init__(self):
        shape = (self.graph.n_up, self.graph.n_down)
        self.mask = torch.as_tensor(self.mask).bool().cpu()
        if tuple(self.mask.shape) != shape:
            raise ValueError(f"circuit mask must be {list(shape)} for this graph, got {list(self.mask.shape)}")
        self.mask = self.mask & self.graph.edge_mask
        if self.scores is not None:
            self.scores = torch.as_tensor(self.scores).detach().cpu().double()
            if tuple(self.scores.shape) != shape:
                raise ValueError(f"circuit scores must be {list(shape)} for this graph, got {list(self.scores.shape)}")
        known = set(self.graph.edge_names)
        for name, fields in self.edge_info.items():
            if name not in known:
                raise ValueError(f"edge_info names {name!r}, not an edge of this graph (e.g. {self.graph.edge_names[0]!r})")
            bad = sorted(set(fields) - set(TRUST_FIELDS))
            if bad:
                raise ValueError(f"edge_info[{name!r}] has unknown field(s) {bad}; allowed: {list(TRUST_FIELDS)}")

    def ranks(self) -> torch.Tensor:
        """Rank of each edge by |score|, in the graph's edge order (1 = largest; ties in edge
        order; 0 for an unscored (NaN) edge, and everywhere when there are no scores)."""
        out = torch.zeros(self.graph.n_edges, dtype=torch.long)
        if self.scores is None:
            return out
        s = self.graph.edges_from_matrix(self.scores).double()
        key = torch.where(torch.isnan(s), torch.full_like(s, -1.0), s.abs())
        order = torch.sort(key, descending=True, stable=True).indices
        order = order[~torch.isnan(s[order])]
        out[order] = torch.arange(1, order.numel() + 1)
        return out

    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())

    @property
    def edges(self) -> list[str]:
        """Names of the circuit's edges, in the graph's edge order."""
        sel = self.graph.edges_from_matrix(self.mask)
        return [n for n, s in zip(self.graph.edge_names, sel.tolist()) if s]

    @property
    def nodes(self) -> list[str]:
        """Nodes that send or receive a circuit edge, in ``graph.nodes`` order."""
        used = set()
        for u, v in self.mask.nonzero().tolist():
            used.add(self.graph.upstream[u])
            used.update(self.graph.receiver_nodes(v))
        return [n for n in self.graph.nodes if n in used]

    def edge_rows(self) -> list[dict]:
        """One dict per circuit edge: edge, sender, receivers (the nodes that own its input:
        one, or a GQA key/value head's group of query heads), kind, score."""
        rows = []
        for u, v in self.mask.nonzero().tolist():
            d = self.graph.downstream[v]
            s = float(self.scores[u, v]) if self.scores is not None else float("nan")
            rows.append({"edge": f"{self.graph.upstream[u]}->{d}", "sender": self.graph.upstream[u],
                         "receivers": self.graph.receiver_nodes(v), "kind": edge_kind(d), "score": s})
        return rows

    def same_as(self, other: "Circuit") -> bool:
        """Same graph, same edges, same edge scores (NaN equal to NaN; cells off the graph ignored)."""
        if convention_differences(graph_convention(other.graph), self.graph) or not torch.equal(self.mask, other.mask):
            return False
        if (self.scores is None) != (other.scores is None):
            return False
        if self.edge_info.keys() != other.edge_info.keys() or any(
                json.dumps(self.edge_info[k], sort_keys=True) != json.dumps(other.edge_info[k], sort_keys=True)
                for k in self.edge_info):                    # NaN equal to NaN
            return False
        if self.scores is None:
            return True
        a, b = (self.graph.edges_from_matrix(x) for x in (self.scores, other.scores))
        return bool(torch.equal(torch.nan_to_num(a, nan=1e300), torch.nan_to_num(b, nan=1e300)))


# ---- writing ---------------------------------------------------------------------------------------
def _score_json(x: float):
    return x if math.isfinite(x) else None


def to_dict(c: Circuit) -> dict:
    """The file's content (see the module docstring)."""
    g = c.graph
    cfg, why = eap_ig_layout(g)
    if cfg is None:
        cfg = {"n_layers": g.n_layers, "n_heads": g.n_heads, "d_model": g.d_model, "parallel_attn_mlp": None}
    scores = g.edges_from_matrix(c.scores).tolist() if c.scores is not None else [float("nan")] * g.n_edges
    inside = g.edges_from_matrix(c.mask).tolist()
    if why is None and any(not math.isfinite(s) for s in scores):
        why = "some edge scores are missing (NaN, written as null); the EAP-IG loader needs a number for each"
    node_set = set(c.nodes)
    nodes = {n: {"in_graph": n in node_set or n == "logits"} for n in g.nodes}
    edges = {n: {"score": _score_json(float(s)), "in_graph": bool(i)} for n, s, i in zip(g.edge_names, scores, inside)}
    rank = dict(zip(g.edge_names, c.ranks().tolist())) if c.edge_info else {}
    for n, fields in c.edge_info.items():
        if rank[n]:
            edges[n]["rank"] = rank[n]
        edges[n].update({k: (bool(v) if k == "flag" else _score_json(float(v))) for k, v in fields.items()})
    if cfg.get("parallel_attn_mlp") is not None:        # EAP-IG's own order, for files that diff cleanly
        edges = {n: edges[n] for n in eap_ig_edge_names(g.n_layers, g.n_heads, cfg["parallel_attn_mlp"]) if n in edges}
    meta = {"format": FORMAT, "version": VERSION, "method": c.method, "options": c.options, "model": c.model,
            "task": c.task, "graph": graph_convention(g), "n_edges_in_circuit": c.n_edges,
            "eap_ig_compatible": why is None, "eap_ig_incompatibility": why, "info": c.info}
    return {"cfg": cfg, "nodes": nodes, "edges": edges, "attrpatch": meta}


def save_circuit(path, circuit: Circuit) -> Path:
    """Write `circuit` to `path` (JSON, atomically): one line per node and per edge."""
    d = to_dict(circuit)
    dumps = lambda o: json.dumps(o, allow_nan=False)  # noqa: E731  (NaN never reaches the file)
    lines = ["{", f'"attrpatch": {json.dumps(json_safe(d["attrpatch"]), indent=1, allow_nan=False)},',
             f'"cfg": {dumps(d["cfg"])},', '"nodes": {']
    lines.append(",\n".join(f"  {dumps(k)}: {dumps(v)}" for k, v in d["nodes"].items()))
    lines += ["},", '"edges": {']
    lines.append(",\n".join(f"  {dumps(k)}: {dumps(v)}" for k, v in d["edges"].items()))
    lines += ["}", "}"]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


# ---- reading ------------------------------------------------------------------------------------------
def _fail(source, msg):
    raise CircuitFileError(f"{source}: {msg}")


def _graph_for_eap_ig_cfg(cfg: dict, source) -> Graph:
    missing = [k for k in ("n_layers", "n_heads") if not isinstance(cfg.get(k), int) or isinstance(cfg.get(k), bool)]
    if missing:
        _fail(source, f"cfg needs integer {missing}, got {cfg!r}")
    if cfg.get("parallel_attn_mlp"):
        _fail(source, "cfg.parallel_attn_mlp is true: pass the model's graph (load_circuit(path, graph=...)) "
                      "so that its block kind can be checked")
    return Graph(cfg["n_layers"], cfg["n_heads"], has_mlps=True, d_model=cfg.get("d_model"))


def _check_eap_ig_cfg(cfg: dict, graph: Graph, source) -> None:
    want, _ = eap_ig_layout(graph)
    diffs = []
    for k in ("n_layers", "n_heads", "d_model"):
        a, b = cfg.get(k), getattr(graph, k)
        if a is not None and b is not None and a != b:
            diffs.append(f"{k}: file {a!r}, model {b!r}")
    if want is not None and "parallel_attn_mlp" in cfg and cfg["parallel_attn_mlp"] is not None \
            and bool(cfg["parallel_attn_mlp"]) != want["parallel_attn_mlp"]:
        diffs.append(f"parallel_attn_mlp: file {cfg['parallel_attn_mlp']!r}, model {want['parallel_attn_mlp']!r}")
    if diffs:
        _fail(source, "the circuit was found on another model shape: " + "; ".join(diffs))


def from_dict(d, graph: Graph | None = None, source: str = "<circuit>") -> Circuit:
    """A Circuit from a file's content (ours or the EAP-IG library's); see `load_circuit`."""
    if not isinstance(d, dict):
        _fail(source, f"a circuit file is a JSON object with keys {list(EAP_IG_KEYS)}, got {type(d).__name__}")
    missing = [k for k in EAP_IG_KEYS if k not in d]
    if missing:
        _fail(source, f"missing key(s) {missing}; a circuit file has {list(EAP_IG_KEYS)} (EAP-IG graph JSON)")
    for k in EAP_IG_KEYS:
        if not isinstance(d[k], dict):
            _fail(source, f"{k!r} must be a JSON object, got {type(d[k]).__name__}")
    meta = d.get("attrpatch")
    if meta is not None:
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            _fail(source, f"'attrpatch' block is not a {FORMAT} header: {str(meta)[:120]}")
        if meta.get("version") != VERSION:
            _fail(source, f"circuit file version {meta.get('version')!r}; this attrpatch reads version {VERSION}")
        conv = meta.get("graph")
        if not isinstance(conv, dict) or not isinstance(conv.get("fields"), dict):
            _fail(source, "'attrpatch.graph' must record the graph's fields")
        if graph is None:
            graph = graph_from_convention(conv)
        diffs = convention_differences(conv, graph)
        if diffs:
            who = f" (file: model {meta.get('model')!r})" if meta.get("model") else ""
            _fail(source, "the circuit was found on another graph" + who + ": " + "; ".join(diffs))
    else:
        if graph is None:
            graph = _graph_for_eap_ig_cfg(d["cfg"], source)
        _check_eap_ig_cfg(d["cfg"], graph, source)
    return _read_edges(d, graph, meta or {}, source)


def _read_edges(d: dict, graph: Graph, meta: dict, source) -> Circuit:
    known_nodes = set(graph.nodes)
    for name in d["nodes"]:
        if name not in known_nodes and not (not graph.has_mlps and name[:1] == "m" and name[1:].isdigit()):
            _fail(source, f"node {name!r} is not a node of this graph (nodes: {graph.nodes[:3]} ... {graph.nodes[-2:]})")
    pos = {n: i for i, n in enumerate(graph.edge_names)}
    scores = torch.full((graph.n_edges,), float("nan"), dtype=torch.float64)
    inside = torch.zeros(graph.n_edges, dtype=torch.bool)
    seen, dropped = 0, 0
    edge_info = {}
    for name, e in d["edges"].items():
        if not isinstance(e, dict) or not isinstance(e.get("in_graph"), bool):
            _fail(source, f"edge {name!r}: needs {{'score': number, 'in_graph': true|false}}, got {e!r}")
        s = e.get("score")
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))):
            _fail(source, f"edge {name!r}: score must be a number or null, got {s!r}")
        i = pos.get(name)
        if i is None:
            if not graph.has_mlps and _is_mlp_edge(name) and not e["in_graph"]:
                dropped += 1          # EAP-IG's MLP edges of an attention-only model, outside the circuit
                continue
            why = "an MLP edge on an attention-only model" if (not graph.has_mlps and _is_mlp_edge(name)) else \
                "not an edge of this graph"
            if graph.kv_convention == "grouped" and graph.n_kv_heads != graph.n_heads and name.endswith(("<k>", "<v>")):
                why += (" (the file gives each query head its own key/value input, the EAP-IG library's ungrouped "
                        "convention: load the model with kv_convention='ungrouped')")
            _fail(source, f"edge {name!r} is {why} ({graph.n_layers} layers x {graph.n_heads} heads, "
                          f"{graph.n_edges} edges, e.g. {graph.edge_names[0]!r})")
        scores[i] = float("nan") if s is None else float(s)
        inside[i] = e["in_graph"]
        trust = _read_trust(name, e, source)
        if trust:
            edge_info[name] = trust
        seen += 1
    info = dict(meta.get("info") or {})
    if seen < graph.n_edges:
        info["edges_missing_from_file"] = graph.n_edges - seen
    if dropped:
        info["mlp_edges_ignored"] = dropped
    return Circuit(graph, graph.matrix_from_edges(inside, fill=False).bool(), graph.matrix_from_edges(scores, fill=float("nan")),
                   method=meta.get("method"), options=dict(meta.get("options") or {}), model=meta.get("model"),
                   task=meta.get("task"), info=info, edge_info=edge_info)


def _read_trust(name: str, e: dict, source) -> dict:
    """The trust fields of one edge entry, checked (`TRUST_FIELDS`); other keys are ignored."""
    out = {}
    for k, want in TRUST_FIELDS.items():
        if k not in e:
            continue
        v = e[k]
        number = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
        if not (isinstance(v, bool) if k == "flag" else number):
            _fail(source, f"edge {name!r}: {k} must be {want}, got {v!r}")
        out[k] = v if k == "flag" else (float("nan") if v is None else float(v))
    return out


def load_circuit(path, graph: Graph | None = None) -> Circuit:
    """Read a circuit file (ours or the EAP-IG library's graph JSON).

    graph: the graph of the model it will run on (`Graph.from_model(model)`); a file for
    another shape or convention is refused with what differs. None: the graph the file
    records (ours) or the standard one its cfg describes (EAP-IG files).
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise CircuitFileError(f"{path}: no such circuit file") from None
    except json.JSONDecodeError as e:
        raise CircuitFileError(f"{path}: not valid JSON ({e})") from None
    return from_dict(d, graph, source=str(path))
