"""ACDC: automatic circuit discovery by greedy edge pruning (Conmy et al. 2023).

Algorithm (PAPERS.md "ACDC", from the authors' code):

* The circuit starts as every edge (or the subgraph `edges`, for EAP -> ACDC; edges outside
  it are patched throughout). Its loss is the metric in "lower is better" form
  (`Metric.loss`: KL as is, a task metric negated) of the clean run in which every edge
  NOT in the circuit carries its sender's corrupted value (`Patcher.metric_of_masks`).
* Receivers (downstream inputs) are visited in reverse topological order starting from
  ``logits``. A receiver whose node no longer has a path to ``logits`` in the current
  circuit is skipped ("nodes with no remaining outgoing edge are skipped"); that status is
  final when the node is reached, since every edge out of it was decided before.
* For each incoming edge of the receiver in turn: remove it and compute the loss of the
  *current, already pruned* circuit; if ``loss_without - loss_current < tau`` the edge
  stays removed and ``loss_current = loss_without``, otherwise it is restored.

Order (greedy, so it matters; ACDC iterates parents in a fixed order, which we choose):
receivers in decreasing downstream index - ``logits``, then per layer from the last: the
MLP input, the heads' ``<v>`` inputs (last head first), ``<k>``, ``<q>``; senders of one
receiver in decreasing upstream index (reverse topological: the latest sender first,
``input`` last).

Cost: every test is one patched forward of the batch, counted. ``forward_passes`` = 2
(clean and corrupted runs cached by the Patcher; the full circuit's loss is the clean run's
own) + 1 if `edges` restricts the start (the subgraph's loss) + one per tested edge. With
``metric="kl"`` and the default direction the reference distribution is the cached clean
run's logits (no extra forward); with ``clean_into_corrupt`` one clean forward is added.

The returned ``mask`` drops the edges into nodes left without a path to logits (ACDC never
tests them, and they cannot change the output: it is the same function up to float
rounding); ``raw_mask`` keeps them. `attrpatch.circuits.prune` also drops nodes without
parents.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..circuits import receiver_owner
from ..graph import Graph
from ..metrics import Metric, kl_metric, task_metric
from ..patching import DEFAULT_DIRECTION, DIRECTIONS, Patcher
from ..tasks.base import TaskBatch
from .common import resolve_metric

HISTORY_COLUMNS = ["step", "edge", "u", "v", "receiver", "loss_current", "loss_without", "delta", "removed"]


@dataclass
class AcdcResult:
    """One ACDC run.

    mask: bool [n_up, n_down], the circuit (edges into dead nodes dropped); raw_mask: the
    circuit as the loop left it; forward_passes: patched + cached forwards this run cost
    (see module docstring); n_edges: edges in `mask`; history: one row per tested edge
    (HISTORY_COLUMNS); loss_start/loss_final: loss of the starting and final circuit as
    tracked by the loop.
    """

    mask: torch.Tensor
    forward_passes: int
    n_edges: int
    history: pd.DataFrame
    tau: float = 0.0
    metric: str = ""
    loss_start: float = float("nan")
    loss_final: float = float("nan")
    raw_mask: torch.Tensor | None = None
    wall_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def n_tested(self) -> int:
        return len(self.history)

    @property
    def n_removed(self) -> int:
        return int(self.history["removed"].sum()) if len(self.history) else 0


def make_patcher(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                 direction: str = DEFAULT_DIRECTION, rows_per_forward: int = 2048) -> Patcher:
    """A Patcher whose metric is `metric`; "kl" is KL to the clean model's output.

    For "kl" with the clean run as base (default direction) the reference logits are the
    Patcher's own cached clean run, so no forward is added; otherwise one clean forward
    is run and counted in ``forward_passes``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown patching direction {direction!r}; allowed: {DIRECTIONS}")
    if isinstance(metric, str) and metric == "kl":
        if direction == "corrupt_into_clean":
            p = Patcher(model, graph, batch, task_metric(batch), direction=direction,
                        rows_per_forward=rows_per_forward)
            m = kl_metric(batch, p.base_logits)
            p.metric = m
            p.base_values = m(p.base_logits)
            p.base_value = float(p.base_values.mean())
            return p
        with torch.no_grad():
            clean_logits = model(batch.clean)
        p = Patcher(model, graph, batch, kl_metric(batch, clean_logits), direction=direction,
                    rows_per_forward=rows_per_forward)
        p.forward_passes += 1
        p.setup_passes = 3
        return p
    return Patcher(model, graph, batch, resolve_metric(model, batch, metric), direction=direction,
                   rows_per_forward=rows_per_forward)


def _setup_passes(patcher: Patcher) -> int:
    return int(getattr(patcher, "setup_passes", 2))


def _reach(graph: Graph, circuit: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Bool [n_up + 1]: node has a path to logits (index n_up) through circuit edges."""
    reach = torch.zeros(graph.n_up + 1, dtype=torch.bool)
    reach[graph.n_up] = True
    for u in range(graph.n_up - 1, -1, -1):
        reach[u] = bool((circuit[u] & reach[owner]).any())
    return reach


def acdc(model, graph: Graph, batch: TaskBatch, *, tau: float, metric: str | Metric = "task",
         direction: str = DEFAULT_DIRECTION, edges: torch.Tensor | None = None, progress: bool = True,
         patcher: Patcher | None = None) -> AcdcResult:
    """Run ACDC with threshold `tau` (see the module docstring for order and cost).

    metric: "task" (the task metric, negated as the loss), "kl" (KL(clean || patched)), a
    metric kind, or a ready Metric. edges: bool [n_up, n_down] subgraph to start from
    (edges outside stay patched). patcher: reuse a Patcher (its cached clean/corrupted runs
    and metric; `metric` and `direction` are then ignored), as `acdc_sweep` does.
    """
    tau = float(tau)
    if not np.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    t0 = time.perf_counter()
    if patcher is None:
        patcher = make_patcher(model, graph, batch, metric, direction=direction)
    # a shared Patcher's setup forwards (clean/corrupted runs) are counted in every run, so a
    # run's count is that of a standalone run
    fwd0 = patcher.forward_passes - _setup_passes(patcher)
    m = patcher.metric
    sign = -1.0 if m.higher_is_better else 1.0
    edge_mask = graph.edge_mask
    if edges is None:
        universe = edge_mask.clone()
    else:
        edges = torch.as_tensor(edges).bool().cpu()
        if edges.shape != (graph.n_up, graph.n_down):
            raise ValueError(f"edges must be a bool mask [{graph.n_up}, {graph.n_down}], got {tuple(edges.shape)}")
        universe = edge_mask & edges

    def loss_of(circ: torch.Tensor) -> float:
        patch = edge_mask & ~circ
        if not bool(patch.any()):
            return sign * patcher.base_value
        return sign * float(patcher.metric_of_masks(patch[None].to(torch.float64))[0])

    circuit = universe.clone()
    loss_current = loss_start = loss_of(circuit)
    owner = receiver_owner(graph)
    n_par = graph.n_parents.tolist()
    reach = torch.zeros(graph.n_up + 1, dtype=torch.bool)
    known = torch.zeros(graph.n_up + 1, dtype=torch.bool)
    reach[graph.n_up] = known[graph.n_up] = True
    rows = []
    bar = tqdm(range(graph.n_down - 1, -1, -1), desc=f"ACDC tau={tau:g}", disable=not progress, leave=False)
    for v in bar:
        w = int(owner[v])
        if not known[w]:  # every edge out of w is decided by now: its reach is final
            reach[w] = bool((circuit[w] & reach[owner]).any())
            known[w] = True
        if not reach[w]:
            continue
        for u in range(n_par[v] - 1, -1, -1):
            if not circuit[u, v]:
                continue
            circuit[u, v] = False
            loss_without = loss_of(circuit)
            delta = loss_without - loss_current
            removed = delta < tau
            rows.append((len(rows), f"{graph.upstream[u]}->{graph.downstream[v]}", u, v, graph.downstream[v],
                         loss_current, loss_without, delta, bool(removed)))
            if removed:
                loss_current = loss_without
            else:
                circuit[u, v] = True
        if progress:
            bar.set_postfix(edges=int(circuit.sum()), loss=f"{loss_current:.4g}")
    final_reach = _reach(graph, circuit, owner)
    mask = circuit & final_reach[owner][None, :]
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return AcdcResult(
        mask=mask, forward_passes=patcher.forward_passes - fwd0,
        n_edges=int(mask.sum()), history=history, tau=tau, metric=m.name, loss_start=loss_start,
        loss_final=loss_current, raw_mask=circuit, wall_s=time.perf_counter() - t0,
        extra={"n_start_edges": int(universe.sum())},
    )


def eap_then_acdc(model, graph: Graph, batch: TaskBatch, eap_scores: torch.Tensor, eap_threshold: float,
                  tau: float, *, metric: str | Metric = "task", direction: str = DEFAULT_DIRECTION,
                  progress: bool = True, patcher: Patcher | None = None) -> AcdcResult:
    """EAP -> ACDC: delete edges with |EAP score| < eap_threshold, run ACDC on the rest.

    Deleted edges stay patched (corrupted) throughout; only the kept ones are tested, so
    the forward-pass count drops (plus one forward for the subgraph's starting loss when
    anything was deleted). eap_threshold <= 0 keeps every edge: plain ACDC.
    """
    s = torch.as_tensor(eap_scores).detach().cpu().double()
    if s.shape != (graph.n_up, graph.n_down):
        raise ValueError(f"eap_scores must be [{graph.n_up}, {graph.n_down}], got {tuple(s.shape)}")
    keep = graph.edge_mask & (s.abs() >= float(eap_threshold))
    res = acdc(model, graph, batch, tau=tau, metric=metric, direction=direction,
               edges=None if bool((keep == graph.edge_mask).all()) else keep, progress=progress, patcher=patcher)
    res.extra.update(eap_threshold=float(eap_threshold), n_edges_after_eap=int(keep.sum()))
    return res


@dataclass
class AcdcSweep:
    """ACDC at several thresholds on one cached Patcher.

    results: one AcdcResult per tau (each counts the 2 shared cached forwards, so its
    count equals a standalone run's); forward_passes: the sweep's real total.
    """

    taus: list[float]
    results: list[AcdcResult]
    forward_passes: int
    wall_s: float

    @property
    def masks(self) -> torch.Tensor:
        """Bool [T, n_up, n_down], in tau order (for `circuits.roc_from_circuits`)."""
        return torch.stack([r.mask for r in self.results])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "tau": self.taus,
            "n_edges": [r.n_edges for r in self.results],
            "forward_passes": [r.forward_passes for r in self.results],
            "loss_final": [r.loss_final for r in self.results],
            "wall_s": [r.wall_s for r in self.results],
        })


def acdc_sweep(model, graph: Graph, batch: TaskBatch, taus: Iterable[float], *, metric: str | Metric = "task",
               direction: str = DEFAULT_DIRECTION, edges: torch.Tensor | None = None, progress: bool = True,
               patcher: Patcher | None = None) -> AcdcSweep:
    """One ACDC run per tau (e.g. 10**(-k/5), k = 0..30, for ROC), sharing the cached runs."""
    t0 = time.perf_counter()
    patcher = patcher or make_patcher(model, graph, batch, metric, direction=direction)
    start = patcher.forward_passes
    taus = [float(t) for t in taus]
    results = [acdc(model, graph, batch, tau=t, edges=edges, progress=progress, patcher=patcher) for t in taus]
    total = patcher.forward_passes - start + _setup_passes(patcher)
    return AcdcSweep(taus, results, total, time.perf_counter() - t0)
