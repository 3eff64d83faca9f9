"""Drawing a circuit: nodes by layer (input at the bottom, logits at the top), edges coloured
by kind (query / key / value input of a head, or residual: into an MLP or the logits) and
sign (dark solid: positive score, light dashed: negative), width by |score|.

Two backends, both writing SVG and PNG:

* ``matplotlib`` (default; needs no system package): a layered layout built on a networkx
  DiGraph, one row per occupied rank (input; per layer its heads, then its MLP; logits),
  nodes in a row ordered by a few barycenter sweeps to cut crossings. Every node is one
  rounded box whose SVG group id is ``node-<name>``, every edge one arrow ``edge-<i>`` (a
  GQA key/value edge, which feeds a group of query heads, one arrow per head ``edge-<i>-<j>``).
* ``graphviz``: the same styling as DOT, laid out by Graphviz's ``dot`` program when it is
  installed (a clear error says how to get it when it is not).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt   # backend left to the caller: scripts set Agg, notebooks keep inline
import networkx as nx
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..circuits.file import Circuit
from ..io import atomic_path

BACKENDS = ("matplotlib", "graphviz")
FORMATS = ("png", "svg")
# (positive, negative) colour per edge kind: colour-blind-safe hues, dark vs light
KIND_COLORS = {"q": ("#5e3c99", "#b2abd2"), "k": ("#e66101", "#fdb863"), "v": ("#1b7837", "#a6dba0"),
               "residual": ("#252525", "#969696")}
KIND_LABELS = {"q": "query input", "k": "key input", "v": "value input", "residual": "residual (MLP, logits)"}
NODE_COLORS = {"input": "#d9d9d9", "head": "#c6dbef", "mlp": "#fdd0a2", "logits": "#c7e9c0", "other": "#eeeeee"}
ARC = {"q": -0.18, "k": 0.0, "v": 0.18, "residual": 0.0}   # q/k/v edges of one pair drawn apart
MIN_WIDTH, MAX_WIDTH = 0.7, 5.0


def _node_kind(name: str) -> str:
    if name in ("input", "logits"):
        return name
    if re.fullmatch(r"a\d+\.h\d+", name):
        return "head"
    if re.fullmatch(r"m\d+", name):
        return "mlp"
    return "other"


def ranks(circuit: Circuit) -> dict[str, int]:
    """Rank of each circuit node: input 0, layer l's heads 2l+1, its MLP 2l+2, logits on top.
    Nodes of other names get the longest-path rank within the circuit."""
    out = {}
    for n in circuit.nodes:
        m = re.fullmatch(r"a(\d+)\.h\d+", n) or re.fullmatch(r"m(\d+)", n)
        if n == "input":
            out[n] = 0
        elif m:
            out[n] = 2 * int(m.group(1)) + (1 if n.startswith("a") else 2)
    top = 2 * circuit.graph.n_layers + 1
    unknown = [n for n in circuit.nodes if n not in out and n != "logits"]
    if unknown:
        g = _digraph(circuit)
        for n in nx.topological_sort(g):
            if n in unknown:
                out[n] = 1 + max((out.get(p, 0) for p in g.predecessors(n)), default=0)
        top = max(top, max(out.values()) + 1)
    if "logits" in circuit.nodes:
        out["logits"] = top
    return out


def _digraph(circuit: Circuit) -> nx.MultiDiGraph:
    g = nx.MultiDiGraph()
    g.add_nodes_from(circuit.nodes)
    for r in circuit.edge_rows():
        for w in r["receivers"]:
            g.add_edge(r["sender"], w, **r)
    return g


def _head_order(name: str):
    m = re.fullmatch(r"a(\d+)\.h(\d+)", name)
    return (0, int(m.group(2))) if m else (1, name)


def layered_layout(circuit: Circuit, sweeps: int = 4) -> tuple[dict[str, tuple[float, float]], list[int]]:
    """Positions {node: (x, y)} and the occupied ranks (bottom to top); y = row index."""
    g = _digraph(circuit)
    rk = ranks(circuit)
    if not rk:
        return {}, []
    rows = sorted(set(rk.values()))
    layers = {r: sorted((n for n in rk if rk[n] == r), key=_head_order) for r in rows}
    for r, ns in layers.items():
        for n in ns:
            g.nodes[n]["layer"] = r
    # networkx's multipartite layout gives the rows; barycenter sweeps order each row
    pos0 = nx.multipartite_layout(g.subgraph(rk), subset_key="layer", align="horizontal")
    for r in rows:
        layers[r].sort(key=lambda n: (pos0[n][0], _head_order(n)))
    x = {n: i - (len(layers[r]) - 1) / 2 for r in rows for i, n in enumerate(layers[r])}
    for s in range(sweeps):
        order = rows if s % 2 == 0 else rows[::-1]
        for r in order:
            nbrs = (lambda n: list(g.predecessors(n))) if s % 2 == 0 else (lambda n: list(g.successors(n)))

            def bary(n):
                ns = nbrs(n)
                return sum(x[m] for m in ns) / len(ns) if ns else x[n]
            layers[r].sort(key=lambda n: (bary(n), _head_order(n)))
            for i, n in enumerate(layers[r]):
                x[n] = i - (len(layers[r]) - 1) / 2
    pos = {n: (x[n], float(rows.index(rk[n]))) for n in rk}
    return pos, rows


def _row_label(rank: int, n_layers: int) -> str:
    if rank == 0:
        return "embeddings"
    if rank == 2 * n_layers + 1:
        return "output"
    l, mlp = divmod(rank - 1, 2)
    return f"layer {l} {'MLP' if mlp else 'heads'}"


def _edge_style(kind: str, score: float, smax: float) -> dict:
    pos_c, neg_c = KIND_COLORS.get(kind, KIND_COLORS["residual"])
    neg = score < 0
    w = MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * (abs(score) / smax if smax > 0 and score == score else 0.0)
    return {"color": neg_c if neg else pos_c, "lw": w, "ls": (0, (3, 1.5)) if neg else "-"}


def _title(circuit: Circuit) -> str:
    parts = [p for p in (circuit.method, circuit.task, circuit.model) if p]
    t = " / ".join(parts) + (": " if parts else "") + f"{circuit.n_edges} edges, {len(circuit.nodes)} nodes"
    f = circuit.info.get("faithfulness")
    if isinstance(f, dict) and f.get("faithfulness") is not None:
        t += f", faithfulness {f['faithfulness']:.3f}"
    return t


def figure(circuit: Circuit, title: str | None = None):
    """The matplotlib figure of a circuit (see the module docstring)."""
    pos, rows = layered_layout(circuit)
    rows_n = {}
    for n, (_, y) in pos.items():
        rows_n[y] = rows_n.get(y, 0) + 1
    widest = max(rows_n.values(), default=1)
    xs = [p[0] for p in pos.values()] or [0.0]
    fig_w = max(7.0, 1.25 * widest + 3.0)
    fig_h = max(4.0, 1.0 * len(rows) + 1.8)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    if not pos:
        ax.text(0.5, 0.5, "empty circuit: no edge selected", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(min(xs) - 1.6, max(xs) + 0.9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.axis("off")
    boxes = {}
    for n, (x, y) in pos.items():
        w = 0.16 + 0.085 * len(n)
        kind = _node_kind(n)
        box = FancyBboxPatch((x - w / 2, y - 0.17), w, 0.34, boxstyle="round,pad=0.02,rounding_size=0.08",
                             fc=NODE_COLORS[kind], ec="black", lw=0.9, zorder=3)
        box.set_gid(f"node-{n}")
        ax.add_patch(box)
        ax.text(x, y, n, ha="center", va="center", fontsize=9, zorder=4)
        boxes[n] = box
    for y, r in enumerate(rows):
        ax.text(min(xs) - 1.5, y, _row_label(r, circuit.graph.n_layers), ha="left", va="center",
                fontsize=8, color="0.4")
    rows_e = sorted(circuit.edge_rows(), key=lambda r: abs(r["score"]) if r["score"] == r["score"] else 0.0)
    smax = max((abs(r["score"]) for r in rows_e if r["score"] == r["score"]), default=0.0)
    long_count: dict[str, int] = {}
    # a GQA key/value edge feeds every query head of its group: one arrow to each
    arrows = [(i, j, r, w) for i, r in enumerate(rows_e) for j, w in enumerate(r["receivers"])]
    for i, j, r, w in arrows:
        st = _edge_style(r["kind"], r["score"], smax)
        (xs_, ys_), (xr_, yr_) = pos[r["sender"]], pos[w]
        rad = ARC.get(r["kind"], 0.0)
        if yr_ - ys_ > 1:
            # an edge that skips rows bows out (more the longer it is), alternately left and
            # right of a straight line, so it does not run through the nodes between
            k = long_count.get(w, 0)
            long_count[w] = k + 1
            side = (1 if xs_ < xr_ else -1) if abs(xs_ - xr_) > 0.5 else (1 if k % 2 == 0 else -1)
            rad += side * min(0.45, 0.1 + 0.035 * (yr_ - ys_) + 0.03 * (k // 2))
        a = FancyArrowPatch(pos[r["sender"]], pos[w], patchA=boxes[r["sender"]],
                            patchB=boxes[w], connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                            mutation_scale=7 + st["lw"], color=st["color"], lw=st["lw"], ls=st["ls"],
                            alpha=0.9, zorder=2, shrinkA=1, shrinkB=1)
        a.set_gid(f"edge-{i}" if len(r["receivers"]) == 1 else f"edge-{i}-{j}")
        ax.add_patch(a)
    used = sorted({r["kind"] for r in rows_e}, key=list(KIND_COLORS).index)
    handles = [Line2D([], [], color=KIND_COLORS[k][0], lw=2.5, label=KIND_LABELS[k]) for k in used]
    handles += [Line2D([], [], color="0.15", lw=2, label="positive score"),
                Line2D([], [], color="0.6", lw=2, ls=(0, (3, 1.5)), label="negative score"),
                Line2D([], [], color="0.3", lw=MAX_WIDTH, label="width: |score|")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(title if title is not None else _title(circuit), fontsize=10)
    fig.tight_layout()
    return fig


def to_dot(circuit: Circuit, title: str | None = None) -> str:
    """The circuit as Graphviz DOT (bottom-to-top, one rank per layer row, same styling)."""
    rk = ranks(circuit)
    rows_e = circuit.edge_rows()
    smax = max((abs(r["score"]) for r in rows_e if r["score"] == r["score"]), default=0.0)
    q = lambda s: '"' + s.replace('"', r'\"') + '"'  # noqa: E731
    lines = ["digraph circuit {", "  rankdir=BT; bgcolor=white; splines=true; nodesep=0.25; ranksep=0.5;",
             f"  label={q(title if title is not None else _title(circuit))}; labelloc=t; fontname=Helvetica;",
             '  node [shape=box, style="filled,rounded", fontname=Helvetica, fontsize=11];']
    for r in sorted(set(rk.values())):
        ns = [n for n in circuit.nodes if rk[n] == r]
        lines.append("  { rank=same; " + " ".join(f"{q(n)} [fillcolor={q(NODE_COLORS[_node_kind(n)])}];"
                                                   for n in ns) + " }")
    for r in rows_e:
        st = _edge_style(r["kind"], r["score"], smax)
        style = "solid" if st["ls"] == "-" else "dashed"
        for w in r["receivers"]:
            lines.append(f"  {q(r['sender'])} -> {q(w)} [color={q(st['color'])}, penwidth={st['lw']:.2f}, "
                         f"style={style}, tooltip={q(r['edge'])}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _paths(path, formats) -> dict[str, Path]:
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown drawing format(s) {bad}; allowed: {list(FORMATS)}")
    p = str(path)
    for f in FORMATS:                         # only a drawing suffix is replaced: "ioi.eap" keeps its dot
        if p.endswith(f".{f}"):
            p = p[: -len(f) - 1]
    return {f: Path(f"{p}.{f}") for f in formats}


def draw_circuit(circuit: Circuit, path, *, formats=FORMATS, backend: str = "matplotlib",
                 title: str | None = None, dpi: int = 150) -> list[Path]:
    """Draw `circuit` to ``<path>.png`` / ``<path>.svg`` (a suffix on `path` is replaced), atomically.
    An empty circuit gives a figure that says so. Returns the files written."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown drawing backend {backend!r}; allowed: {list(BACKENDS)}")
    out = _paths(path, formats)
    if backend == "graphviz":
        dot = shutil.which("dot")
        if dot is None:
            raise RuntimeError("the graphviz backend needs Graphviz's `dot` program on PATH (e.g. "
                               "`apt-get install graphviz` or `conda install -c conda-forge graphviz`); "
                               "the default backend 'matplotlib' needs no system package")
        src = to_dot(circuit, title)
        for fmt, p in out.items():
            with atomic_path(p) as tmp:
                subprocess.run([dot, f"-T{fmt}", "-o", str(tmp)], input=src.encode(), check=True)
        return list(out.values())
    fig = figure(circuit, title)
    try:
        for fmt, p in out.items():
            with atomic_path(p) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return list(out.values())
