"""How circuits are evaluated by exact patching.

`circuit_metric` (every edge *not* in the circuit carries its sender's corrupted value:
``Patcher.metric_of_masks(edge_mask & ~circuit)``), `faithfulness` (Hanna et al.'s
normalized faithfulness), `faithfulness_curve` (a whole sweep of edge budgets in a few
batched forwards) and `circuit_faithfulness` (one circuit). Circuits are bool edge masks
(`circuits.select`). `method_curves` runs each method of a study on one batch and draws
its curve through one shared Patcher (this module runs models; `circuits.curves` does not).
"""
from __future__ import annotations

import time
from typing import Iterable

import pandas as pd
import torch

from ..graph import Graph
from ..methods.common import DEFAULT_STEPS
from ..methods.registry import attribute, method_options
from ..metrics import resolve_metric
from ..patching import DEFAULT_DIRECTION, Patcher
from .select import CIRCUIT_SELECTION, DEFAULT_SELECTION, _as_mask, select


# ---- evaluation ---------------------------------------------------------------------------
def circuit_metric(patcher: Patcher, masks: torch.Tensor) -> torch.Tensor:
    """Mean metric of each circuit: every edge NOT in the circuit carries its corrupted value.

    masks: bool [n_up, n_down] (returns a 0-d tensor) or [C, n_up, n_down] (returns [C]).
    Identical circuits are evaluated once, and the full circuit (nothing patched) is the
    base run itself (`patcher.base_value`, no forward), so equal circuits get bitwise equal
    values and the full circuit's faithfulness is exactly 1.
    """
    graph = patcher.graph
    m = _as_mask(masks, graph)
    single = m.ndim == 2
    if single:
        m = m[None]
    patch = graph.edge_mask[None] & ~m                      # [C, n_up, n_down]
    flat = patch.reshape(patch.shape[0], -1)
    uniq, inverse = torch.unique(flat, dim=0, return_inverse=True)
    vals = torch.empty(uniq.shape[0], dtype=torch.float64)
    empty = ~uniq.any(1)
    vals[empty] = patcher.base_value
    todo = (~empty).nonzero().flatten()
    if len(todo):
        got = patcher.metric_of_masks(uniq[todo].reshape(-1, graph.n_up, graph.n_down).to(torch.float64))
        vals[todo] = got.detach().cpu().double()
    out = vals[inverse]
    return out[0] if single else out


def faithfulness(m_circuit, m_clean, m_corrupt):
    """Normalized faithfulness (Hanna et al. 2024): (m(C) - m(corrupt)) / (m(clean) - m(corrupt)).

    Works on floats, numpy arrays or tensors; may exceed 1 or be negative. Raises when
    clean and corrupted metrics are equal (the normalization is undefined).
    """
    den = m_clean - m_corrupt
    if float(abs(den)) == 0.0:
        raise ValueError("faithfulness is undefined: m(clean) == m(corrupt)")
    return (m_circuit - m_corrupt) / den


def circuit_faithfulness(patcher: Patcher, mask: torch.Tensor) -> dict:
    """Faithfulness of one circuit by exact patching, normalized as in `faithfulness_curve`:
    m(clean) is the full circuit, m(corrupt) the empty one, both through `patcher`.

    Returns {n_edges, m_circuit, m_clean, m_corrupt, faithfulness}.
    """
    graph = patcher.graph
    m = _as_mask(mask, graph)
    vals = circuit_metric(patcher, torch.stack([graph.edge_mask.clone(), torch.zeros_like(m), m]))
    m_clean, m_corrupt, m_c = (float(x) for x in vals)
    return {"n_edges": int(m.sum()), "m_circuit": m_c, "m_clean": m_clean, "m_corrupt": m_corrupt,
            "faithfulness": faithfulness(m_c, m_clean, m_corrupt)}


def faithfulness_curve(model, graph: Graph, batch, scores: torch.Tensor, edge_counts: Iterable[int], *,
                       selection: str = DEFAULT_SELECTION, metric="task", direction: str = DEFAULT_DIRECTION,
                       absolute: bool = True, do_prune: bool = True, patcher: Patcher | None = None,
                       rows_per_forward: int | None = None) -> pd.DataFrame:
    """Faithfulness of the circuits selected at each edge budget.

    For each n in `edge_counts`: select n edges (`top_n` or `greedy` by |score|), prune
    (edge counts are reported after pruning, as EAP-IG does), evaluate with `circuit_metric`.
    m(clean) is the full circuit (the base run) and m(corrupt) the empty circuit (every edge
    patched, i.e. the corrupted run up to float rounding), both through the same patching,
    so F(full) = 1 and F(empty) = 0 exactly. All circuits go through `Patcher` in stacked
    forwards (`rows_per_forward` rows each). With direction "clean_into_corrupt" the roles
    of the prompts swap and F is measured relative to that base.

    Returns DataFrame(n_requested, n_edges_after_prune, metric, faithfulness); ``df.attrs``
    holds m_clean, m_corrupt, selection, forward_passes.
    """

    if patcher is None:
        patcher = Patcher(model, graph, batch, resolve_metric(model, batch, metric), direction=direction,
                          rows_per_forward=rows_per_forward)
    counts = [int(n) for n in edge_counts]
    fwd0 = patcher.forward_passes
    masks = [select(scores, graph, n, selection, absolute, do_prune) for n in counts]
    full = graph.edge_mask.clone()
    empty = torch.zeros_like(full)
    stack = torch.stack([full, empty] + masks) if masks else torch.stack([full, empty])
    vals = circuit_metric(patcher, stack)
    m_clean, m_corrupt = float(vals[0]), float(vals[1])
    mv = vals[2:].tolist()
    df = pd.DataFrame({
        "n_requested": counts,
        "n_edges_after_prune": [int(m.sum()) for m in masks],
        "metric": mv,
        "faithfulness": [faithfulness(v, m_clean, m_corrupt) for v in mv],
    })
    df.attrs.update(m_clean=m_clean, m_corrupt=m_corrupt, selection=selection,
                    forward_passes=patcher.forward_passes - fwd0)
    return df


# ---- one task: every method's scores and curve on one shared Patcher ---------------------------
def score_runs(methods: Iterable[str], options: dict | None = None,
               variants: dict | None = None) -> list[tuple[str, str, dict]]:
    """(name, method, options) of every scoring run `method_curves` makes: each method with its
    `options`, then each variant {name: (method, options)} under its own name."""
    methods = list(methods)
    runs = [(name, name, dict((options or {}).get(name, {}))) for name in methods]
    for name, (method, opts) in (variants or {}).items():
        if name in methods:
            raise ValueError(f"variant name {name!r} is also a method of this study; give the variant its own name")
        runs.append((name, method, dict(opts)))
    return runs


def score_options(method: str, steps: int = DEFAULT_STEPS, batch_size: int | None = None,
                  extra: dict | None = None) -> dict:
    """The keyword arguments `attribute` gets for `method` in `method_curves` (``steps`` and
    ``batch_size`` where it takes them, then the run's own options): one home, so a prompt shard
    (`repro.shards.score_prompt_shard`) scores exactly as the unsharded run does."""
    valid = method_options(method)
    opts = {"steps": int(steps)} if "steps" in valid else {}
    if batch_size and "batch_size" in valid:
        opts["batch_size"] = int(batch_size)
    opts.update(extra or {})
    return opts


def method_curves(model, graph, batch, methods: Iterable[str], edge_counts: Iterable[int], *,
                  steps: int = DEFAULT_STEPS, selection: str = CIRCUIT_SELECTION, patcher=None,
                  exact: bool | int = True,
                  batch_size: int | None = None, rows_per_forward: int | None = None, progress=None,
                  options: dict | None = None, variants: dict | None = None, scores: dict | None = None) -> dict:
    """Scores, faithfulness curves and score/effect correlations of `methods` on one batch.

    All circuits of all methods (and the exact single-edge effects, if `exact`) go through
    one `Patcher`, so the clean and corrupted runs are computed once. ``steps`` is passed
    to every method that takes it (m of EAP-IG, k of EAP-GP), ``batch_size`` (examples per
    gradient chunk; None: all) to every method that takes it. ``exact``: True (exact effects
    on the whole batch, through the shared Patcher), False (none: pearson fields absent), or
    an int k (the first k prompts only, on a Patcher of their own: exact single-edge
    patching costs n_edges x k rows, too much for GPT-2's 32,491 edges x 1000). ``rows_per_forward``:
    the Patchers' chunk size (None: the Patcher's default for the model's device). `progress`: an optional
    callable(str) called before each method (e.g. a tqdm bar's set_postfix_str). `options`:
    {method: {option: value}} passed to that method only (e.g. EAP-GP's ``step``).
    `variants`: {name: (method, {option: value})}, further curves of a method run with other
    options (e.g. EAP-GP's other step rule), scored after `methods` and reported under their
    own name beside them. `scores`: {name: {"scores": [n_up, n_down], "seconds"}} already computed
    (gathered from prompt shards, `repro.shards.gather_score_shards`): those runs are not rescored.
    Returns {"m_clean", "m_corrupt", "n_total", "methods": {name: {"scores" [n_edges] numpy,
    "curve" DataFrame, "seconds"}}, "effects" [n_edges] numpy or None, "forward_passes"}.
    """
    runs = score_runs(methods, options, variants)
    if patcher is None:
        patcher = Patcher(model, graph, batch, resolve_metric(model, batch, "task"),
                          rows_per_forward=rows_per_forward)
    out: dict = {"methods": {}, "n_total": int(graph.n_edges)}
    counts = [int(n) for n in edge_counts]
    for name, method, extra in runs:
        if progress:
            progress(name)
        t0 = time.perf_counter()
        if scores is not None and name in scores:     # gathered from prompt shards (repro.shards)
            s, secs = scores[name]["scores"], float(scores[name]["seconds"])
        else:
            s = attribute(model, batch, method=method, graph=graph, **score_options(method, steps, batch_size, extra))
            secs = time.perf_counter() - t0
        t1 = time.perf_counter()
        df = faithfulness_curve(model, graph, batch, s, counts, selection=selection, patcher=patcher)
        out["methods"][name] = {"scores": graph.edges_from_matrix(s.detach().cpu().double()).numpy(),
                                "curve": df, "seconds_scores": secs,
                                "seconds_curve": time.perf_counter() - t1}
        out["m_clean"], out["m_corrupt"] = df.attrs["m_clean"], df.attrs["m_corrupt"]
    if exact is not False and exact is not None and int(exact) != 0:
        if progress:
            progress("exact")
        p = patcher
        if exact is not True and int(exact) < len(batch):
            sub = batch.subset(slice(0, int(exact)))
            p = Patcher(model, graph, sub, resolve_metric(model, sub, "task"), rows_per_forward=rows_per_forward)
        out["effects"] = p.edge_effects().detach().cpu().double().numpy()
        out["exact_n"] = len(p.batch)
    else:
        out["effects"] = None
    out["forward_passes"] = patcher.forward_passes
    return out
