"""Interactive circuit viewer: one self-contained HTML file (plotly, its JavaScript inlined;
no server, works offline, opens from disk and inside the Snakemake report).

Why plotly: a well-kept library whose ``write_html(include_plotlyjs=True)`` gives one file,
whose hover, dropdown and slider are declarative (no JavaScript of ours). The inlined
plotly.js is about 4.7 MB; the circuit data adds little (see `MAX_EDGES`).

What is drawn follows the static drawing (`plots.circuit`, the one home of the conventions):
its layered layout (input at the bottom, logits on top; GQA and parallel-block graphs by
their own ranks), edge colour by kind (q / k / v / residual) and sign (dark solid:
positive, light dashed: negative), width by |score| (in `WIDTH_LEVELS` steps: one plotly
line trace per kind, sign and width). Edges point upward; arrows are left out.

* Hover an edge (its midpoint marker): score, the method's rank, and where the circuit file
  carries them (`circuits.file.TRUST_FIELDS`) the exact patching effect, the reliability rho
  and the Screen-Flag-Fix flag; hover a node: its name and degree in the view.
* Slider (circuits found by size, ``selection`` greedy or topn): the method's circuit at
  other sizes (`circuits.select` on the file's scores, the circuit's own selection and
  pruning), with the faithfulness at that size where the file records it
  (``info["faithfulness"]`` for the saved size, ``info["faithfulness_by_size"]`` for the
  others: `circuits.trust.faithfulness_by_size`), "not measured" where it does not.
* Several files: a dropdown picks the circuit, and for the first against each other one a
  difference view (edges in both, only in the first, only in the other).

Thinning: a view draws at most ``max_edges`` edges (`MAX_EDGES` = 300, its home is
`circuits.trust.MAX_VIEW_EDGES`). A circuit larger
than that is drawn as its ``max_edges`` edges of largest |score| and its title says so; the
slider's sizes stop there. Why: beyond a few hundred edges a node-link drawing of a model's
~150 nodes is a solid band that hides what one is looking for, and every drawn edge adds
to the file and to the browser's work. All scores stay in the circuit file; the viewer
states the graph's edge count (32,491 for GPT-2 small) and what it drew.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import plotly.graph_objects as go
import torch

from ..circuits.select import select
from ..circuits.file import Circuit, convention_differences, graph_convention
from ..circuits.trust import MAX_VIEW_EDGES as MAX_EDGES
from ..circuits.trust import other_sizes, sized
from ..io import atomic_path
from .circuit import ARC, KIND_COLORS, KIND_LABELS, MAX_WIDTH, MIN_WIDTH, NODE_COLORS, _node_kind, _row_label, \
    layered_layout

WIDTH_LEVELS = 4
DIFF_COLORS = {"both": "#4d4d4d", "first": "#2166ac", "other": "#d6604d"}
CURVE_POINTS = 9                    # points per drawn (curved) edge
DIV_ID = "circuit-viewer"


# ---- what each view holds ---------------------------------------------------------------------
def _thin(c: Circuit, mask: torch.Tensor, max_edges: int) -> torch.Tensor:
    """`mask` cut to its `max_edges` edges of largest |score| (graph order among equals)."""
    if int(mask.sum()) <= max_edges:
        return mask
    s = torch.nan_to_num(c.scores.abs(), nan=0.0) if c.scores is not None else torch.zeros(mask.shape)
    sel = c.graph.edges_from_matrix(mask.double()).bool()
    key = torch.where(sel, c.graph.edges_from_matrix(s).double(), torch.full((c.graph.n_edges,), -1.0))
    keep = torch.zeros(c.graph.n_edges, dtype=torch.bool)
    keep[torch.sort(key, descending=True, stable=True).indices[:max_edges]] = True
    return c.graph.matrix_from_edges(keep & sel, fill=False).bool()


def _faith_text(f) -> str:
    return "faithfulness not measured at this size" if f is None else f"faithfulness {f:.3f}"


def _recorded_faithfulness(c: Circuit) -> float | None:
    f = c.info.get("faithfulness")
    return f.get("faithfulness") if isinstance(f, dict) else None


def _steps(c: Circuit, max_edges: int) -> list[dict]:
    """[{mask, n_requested, faith, own}] by requested size: the saved circuit, and with
    `sized` the method's circuit at the slider's other sizes (empty ones left out)."""
    requested = int(c.info.get("n_requested", c.n_edges))
    own = {"mask": _thin(c, c.mask, max_edges), "n_requested": requested, "faith": _recorded_faithfulness(c),
           "own": True}
    if not sized(c):
        return [own]
    by_size = {int(r["n_requested"]): r.get("faithfulness") for r in c.info.get("faithfulness_by_size") or []
               if isinstance(r, dict) and "n_requested" in r}
    scores = torch.nan_to_num(c.scores, nan=0.0)
    out = [own]
    for n in other_sizes(c, max_edges):
        m = select(scores, c.graph, n, c.info["selection"], do_prune=c.info.get("pruned", True))
        if bool(m.any()):            # e.g. greedy growth whose few edges do not reach the input: pruned away
            out.append({"mask": m, "n_requested": n, "faith": by_size.get(n), "own": False})
    return sorted(out, key=lambda s: s["n_requested"])


# ---- geometry -------------------------------------------------------------------------------------
def _curve(p0, p1, rad: float) -> tuple[list[float], list[float]]:
    """A quadratic Bezier from p0 to p1 bowed by `rad` (matplotlib's arc3 control point)."""
    (x0, y0), (x1, y1) = p0, p1
    if rad == 0.0:
        return [x0, x1], [y0, y1]
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    ts = [i / (CURVE_POINTS - 1) for i in range(CURVE_POINTS)]
    xs = [(1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t * t * x1 for t in ts]
    ys = [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t * t * y1 for t in ts]
    return xs, ys


def _lines(rows: list[dict], pos: dict) -> list[dict]:
    """One drawn line per (edge, receiver): the static drawing's bows (q/k/v apart; edges that
    skip rows bow out, alternately left and right)."""
    out, long_count = [], {}
    for r in rows:
        for w in r["receivers"]:
            (xs_, ys_), (xr_, yr_) = pos[r["sender"]], pos[w]
            rad = ARC.get(r["kind"], 0.0)
            if yr_ - ys_ > 1:
                k = long_count.get(w, 0)
                long_count[w] = k + 1
                side = (1 if xs_ < xr_ else -1) if abs(xs_ - xr_) > 0.5 else (1 if k % 2 == 0 else -1)
                rad += side * min(0.45, 0.1 + 0.035 * (yr_ - ys_) + 0.03 * (k // 2))
            xs, ys = _curve(pos[r["sender"]], pos[w], rad)
            mid = len(xs) // 2 if len(xs) > 2 else None
            mx, my = (xs[mid], ys[mid]) if mid is not None else ((xs[0] + xs[1]) / 2, (ys[0] + ys[1]) / 2)
            out.append(dict(r, receiver=w, xs=xs, ys=ys, mid=(mx, my)))
    return out


# ---- text ----------------------------------------------------------------------------------------
def _num(x) -> str:
    return "not computed" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _edge_hover(r: dict, label: str, rank: dict, n_scored: int, info: dict, extra: str = "") -> str:
    t = info.get(r["edge"], {})
    rel = t.get("reliability")
    flag = t.get("flag")
    lines = [f"<b>{html.escape(r['edge'])}</b> ({KIND_LABELS.get(r['kind'], r['kind'])})",
             f"score ({html.escape(label)}): {_num(r['score'])}"
             + (f", rank {rank[r['edge']]} of {n_scored}" if rank.get(r["edge"]) else ""),
             f"exact effect: {_num(t.get('exact'))}",
             f"reliability rho: {_num(rel)}" + ("" if flag is None else (", FLAGGED" if flag else ", not flagged"))]
    if len(r["receivers"]) > 1:
        lines.append(f"feeds the group {', '.join(r['receivers'])} (grouped keys/values)")
    return "<br>".join(lines) + extra


def _label(c: Circuit, path) -> str:
    return c.method or Path(str(path)).stem


def _header(c: Circuit) -> str:
    parts = [p for p in (c.task, c.model) if p]
    return " / ".join(parts)


# ---- traces --------------------------------------------------------------------------------------
def _width(score: float, smax: float) -> float:
    a = abs(score) / smax if smax > 0 and score == score else 0.0
    level = min(WIDTH_LEVELS - 1, int(a * WIDTH_LEVELS))
    return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * (level + 1) / WIDTH_LEVELS


def _node_trace(uid: str, nodes: list[str], pos: dict, deg: dict) -> go.Scatter:
    return go.Scatter(
        x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="markers+text", text=nodes,
        textposition="middle center", textfont={"size": 10}, uid=uid, name="nodes", showlegend=False,
        marker={"symbol": "square", "size": 30, "color": [NODE_COLORS[_node_kind(n)] for n in nodes],
                "line": {"color": "black", "width": 1}},
        hovertext=[f"<b>{n}</b><br>in: {deg[n][0]} edges, out: {deg[n][1]} edges" for n in nodes],
        hoverinfo="text", visible=False)


def _edge_traces(uid: str, lines: list[dict], colour_of, hover: list[str]) -> list[go.Scatter]:
    """Line traces grouped by (colour, dash, width), then the hover markers at the midpoints."""
    groups: dict[tuple, tuple[list, list]] = {}
    for ln in lines:
        key = colour_of(ln)
        xs, ys = groups.setdefault(key, ([], []))
        xs += ln["xs"] + [None]
        ys += ln["ys"] + [None]
    traces = [go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False, visible=False,
                         uid=f"{uid}-line{i}", line={"color": col, "width": w, "dash": dash}, opacity=0.85)
              for i, ((col, dash, w), (xs, ys)) in enumerate(groups.items())]
    traces.append(go.Scatter(
        x=[ln["mid"][0] for ln in lines], y=[ln["mid"][1] for ln in lines], mode="markers", uid=f"{uid}-edges",
        name="edges", showlegend=False, visible=False, hovertext=hover, hoverinfo="text",
        marker={"size": 7, "color": [colour_of(ln)[0] for ln in lines], "line": {"color": "white", "width": 1}}))
    return traces


def _degrees(lines: list[dict]) -> dict:
    deg: dict[str, list[int]] = {}
    for ln in lines:
        deg.setdefault(ln["sender"], [0, 0])[1] += 1
        deg.setdefault(ln["receiver"], [0, 0])[0] += 1
    return deg


class _Builder:
    """Collects the panels (one set of traces each) and their visibility."""

    def __init__(self, pos: dict):
        self.pos, self.traces, self.panels = pos, [], []

    def add(self, uid: str, lines: list[dict], colour_of, hover: list[str], title: str) -> int:
        deg = _degrees(lines)
        nodes = sorted(deg, key=lambda n: (self.pos[n][1], self.pos[n][0]))
        start = len(self.traces)
        self.traces += _edge_traces(uid, lines, colour_of, hover)
        self.traces.append(_node_trace(f"{uid}-nodes", nodes, self.pos, deg))
        self.panels.append({"range": (start, len(self.traces)), "title": title, "uid": uid,
                            "n_nodes": len(nodes), "n_lines": len(lines)})
        return len(self.panels) - 1

    def visible(self, panel: int, n_fixed: int) -> list[bool]:
        a, b = self.panels[panel]["range"]
        return [a <= i < b for i in range(len(self.traces))] + [True] * n_fixed


def _check_same_graph(circuits: list[Circuit], paths) -> None:
    ref = graph_convention(circuits[0].graph)
    for c, p in zip(circuits[1:], paths[1:]):
        diffs = convention_differences(graph_convention(c.graph), circuits[0].graph) or \
            convention_differences(ref, c.graph)
        if diffs:
            raise ValueError(f"{p} is a circuit on another graph than {paths[0]}: " + "; ".join(diffs)
                             + "; the viewer overlays circuits of one model only")


def _legend_traces(diff: bool) -> list[go.Scatter]:
    out = [go.Scatter(x=[None], y=[None], mode="lines", name=KIND_LABELS[k], line={"color": KIND_COLORS[k][0], "width": 3})
           for k in KIND_COLORS]
    out += [go.Scatter(x=[None], y=[None], mode="lines", name="negative score (light, dashed)",
                       line={"color": "#969696", "width": 2, "dash": "dash"})]
    if diff:
        out += [go.Scatter(x=[None], y=[None], mode="lines", name=f"difference view: {w}",
                           line={"color": col, "width": 3}) for w, col in
                (("in both", DIFF_COLORS["both"]), ("only in the first", DIFF_COLORS["first"]),
                 ("only in the other", DIFF_COLORS["other"]))]
    return out


def figure(circuits: list[Circuit], paths=None, *, max_edges: int = MAX_EDGES, title: str | None = None) -> go.Figure:
    """The viewer's plotly figure for one or more circuits of one graph (see the module docstring)."""
    if not circuits:
        raise ValueError("the viewer needs at least one circuit")
    if int(max_edges) < 1:
        raise ValueError(f"max_edges must be >= 1, got {max_edges}")
    paths = [str(p) for p in (paths or [f"circuit {i + 1}" for i in range(len(circuits))])]
    _check_same_graph(circuits, paths)
    g = circuits[0].graph
    labels = [_label(c, p) for c, p in zip(circuits, paths)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({Path(p).name})" for lab, p in zip(labels, paths)]
    steps = [_steps(c, max_edges) for c in circuits]
    union = torch.zeros(g.n_up, g.n_down, dtype=torch.bool)
    for st in steps:
        for s in st:
            union |= s["mask"]
    pos, rows = layered_layout(Circuit(g, union))
    b = _Builder(pos)
    sliders_of, default_of = [], []
    for i, (c, st, lab) in enumerate(zip(circuits, steps, labels)):
        rank = {n: r for n, r in zip(g.edge_names, c.ranks().tolist()) if r}
        n_scored = len(rank)
        own_mask = c.mask
        panels = []
        for s in st:
            sub = Circuit(g, s["mask"], c.scores)
            rows_e = sorted(sub.edge_rows(), key=lambda r: abs(r["score"]) if r["score"] == r["score"] else 0.0)
            smax = max((abs(r["score"]) for r in rows_e if r["score"] == r["score"]), default=0.0)
            lines = _lines(rows_e, pos)

            def colour_of(ln, smax=smax):
                pos_c, neg_c = KIND_COLORS.get(ln["kind"], KIND_COLORS["residual"])
                neg = ln["score"] < 0
                return (neg_c if neg else pos_c, "dash" if neg else "solid", _width(ln["score"], smax))
            hover = [_edge_hover(ln, lab, rank, n_scored, c.edge_info,
                                 "" if s["own"] else ("<br>in the saved circuit: "
                                                      + ("yes" if bool(own_mask[g.edge(ln["edge"])]) else "no")))
                     for ln in lines]
            n_drawn = sub.n_edges
            what = (f"saved circuit, {c.n_edges} edges" if s["own"] else
                    f"{c.info['selection']} selection of {s['n_requested']}: {n_drawn} edges")
            if s["own"] and n_drawn < c.n_edges:
                what += f" (drawn: the {n_drawn} of largest |score|)"
            t = (f"<b>{html.escape(lab)}</b>: {what}, {len({*sub.nodes})} nodes; {_faith_text(s['faith'])}"
                 f"<br><sup>{html.escape(_header(c))}{'; ' if _header(c) else ''}graph of {g.n_edges:,} edges; "
                 f"edges point upward</sup>")
            panels.append(b.add(f"c{i}s{len(panels)}", lines, colour_of, hover, title or t))
        own_index = next(k for k, s in enumerate(st) if s["own"])
        default_of.append(panels[own_index])
        sliders_of.append((panels, [s for s in st], own_index))
    diff_panels = []
    for j in range(1, len(circuits)):
        a, bc = circuits[0], circuits[j]
        ma, mb = _thin(a, a.mask, max_edges), _thin(bc, bc.mask, max_edges)
        both = Circuit(g, ma | mb, a.scores)
        rows_e = both.edge_rows()
        sb = bc.scores
        for r in rows_e:
            u, v = g.edge(r["edge"])
            r["side"] = "both" if (ma[u, v] and mb[u, v]) else ("first" if ma[u, v] else "other")
            r["score_other"] = float(sb[u, v]) if sb is not None else float("nan")
        lines = _lines(rows_e, pos)
        n_both = sum(r["side"] == "both" for r in rows_e)
        hover = [f"<b>{html.escape(ln['edge'])}</b>: "
                 + {"both": "in both", "first": f"only in {labels[0]}", "other": f"only in {labels[j]}"}[ln["side"]]
                 + f"<br>score ({html.escape(labels[0])}): {_num(ln['score'])}"
                 + f"<br>score ({html.escape(labels[j])}): {_num(ln['score_other'])}" for ln in lines]
        t = (f"<b>{html.escape(labels[0])} vs {html.escape(labels[j])}</b>: {n_both} edges in both, "
             f"{int(ma.sum()) - n_both} only in {html.escape(labels[0])}, {int(mb.sum()) - n_both} only in "
             f"{html.escape(labels[j])}<br><sup>saved circuits (at most {max_edges} edges each drawn)</sup>")
        diff_panels.append(b.add(f"d{j}", lines, lambda ln: (DIFF_COLORS[ln["side"]], "solid", 2.0), hover, title or t))
    fixed = _legend_traces(bool(diff_panels))
    n_fixed = len(fixed)
    fig = go.Figure(b.traces + fixed)
    for i, v in enumerate(b.visible(default_of[0], n_fixed)):
        fig.data[i].visible = v
    sliders = []
    slider_index = {}
    for i, (panels, st, own_index) in enumerate(sliders_of):
        if len(panels) < 2:
            continue
        slider_index[i] = len(sliders)
        sliders.append({
            "active": own_index, "visible": i == 0, "currentvalue": {"prefix": f"{labels[i]}: circuit of "},
            "pad": {"t": 30}, "name": f"size-{i}",
            "steps": [{"label": f"{s['n_requested']}" + (" (saved)" if s["own"] else ""), "method": "update",
                       "args": [{"visible": b.visible(p, n_fixed)}, {"title.text": b.panels[p]["title"]}]}
                      for p, s in zip(panels, st)]})

    def show(panel: int, slider: int | None, active: int | None = None) -> list:
        lay = {"title.text": b.panels[panel]["title"]}
        for k in range(len(sliders)):
            lay[f"sliders[{k}].visible"] = k == slider
        if slider is not None and active is not None:
            lay[f"sliders[{slider}].active"] = active
        return [{"visible": b.visible(panel, n_fixed)}, lay]
    buttons = [{"label": lab, "method": "update", "args": show(default_of[i], slider_index.get(i), sliders_of[i][2])}
               for i, lab in enumerate(labels)]
    buttons += [{"label": f"{labels[0]} vs {labels[j + 1]}", "method": "update", "args": show(p, None)}
                for j, p in enumerate(diff_panels)]
    menus = [{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "bottom",
              "showactive": True, "active": 0, "name": "circuit"}] if len(buttons) > 1 else []
    xs = [p[0] for p in pos.values()] or [0.0]
    fig.update_layout(
        title={"text": b.panels[default_of[0]]["title"], "x": 0.5, "xanchor": "center", "font": {"size": 14}},
        sliders=sliders, updatemenus=menus, plot_bgcolor="white", hovermode="closest",
        height=max(450, 70 * len(rows) + 260), autosize=True,
        legend={"x": 1.01, "y": 1.0, "font": {"size": 11}},
        xaxis={"visible": False, "range": [min(xs) - 0.8, max(xs) + 0.8]},
        yaxis={"tickvals": list(range(len(rows))), "ticktext": [_row_label(r, g.n_layers) for r in rows],
               "range": [-0.6, len(rows) - 0.4], "showgrid": False, "zeroline": False},
        margin={"l": 120, "r": 40, "t": 110 if menus else 80, "b": 40})
    fig.layout.meta = {"panels": b.panels, "labels": labels, "n_graph_edges": g.n_edges, "max_edges": int(max_edges)}
    return fig


def write_view(circuits: list[Circuit], path, paths=None, *, max_edges: int = MAX_EDGES, title: str | None = None) -> Path:
    """Write the viewer (one self-contained HTML file, plotly.js inlined) to `path`, atomically."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the viewer writes an HTML file: give a path ending in .html, got {str(path)!r}")
    fig = figure(circuits, paths, max_edges=max_edges, title=title)
    with atomic_path(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True, div_id=DIV_ID,
                       config={"displaylogo": False, "responsive": True})
    return path


def panel_counts(fig: go.Figure) -> list[dict]:
    """Per panel: uid, nodes and edge lines drawn (what the browser test checks against)."""
    return [{k: p[k] for k in ("uid", "n_nodes", "n_lines")} for p in fig.layout.meta["panels"]]

