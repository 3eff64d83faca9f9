"""ACDC: automatic circuit discovery by greedy edge pruning (Conmy et al. 2023).

Algorithm (docs/SOURCES.md "ACDC", from the authors' code):

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

q/k/v direct edges (``direct=True``; `attrpatch.qkv_direct`, docs/SOURCES.md "ACDC's q/k/v
direct edges"): ACDC's own graph has, per head, an edge from each q/k/v input node to the
head's q/k/v (``hook_q_input[h] -> hook_q[h]``), and its walk visits those receivers
(``hook_v``, ``hook_k``, ``hook_q``; last head first) after the layer's MLP input and before
the layer's q/k/v input nodes. So with ``direct=True``, per layer, before the first incoming
edge of any q/k/v input of that layer is tested, each of the layer's q/k/v inputs (same order:
``<v>`` heads last first, then ``<k>``, then ``<q>``) whose head still reaches ``logits``
gets one test: its whole input patched (every remaining incoming edge at once, the direct
edge removed: the head's q takes its corrupted value). Removed (delta < tau): the input's
incoming edges are all removed with it and never tested (ACDC: the input node has no child
left, so its incoming edges go without a test). Kept: its incoming edges are tested one by
one as usual, and the direct edge stays in the circuit even if they all go (ACDC counts it
then too). An input with no remaining incoming edge costs no forward: its test's delta is 0.
History rows of direct tests have ``direct`` True, ``u`` -1 and the edge named
``a{l}.h{h}<q>.input->a{l}.h{h}<q>``; `AcdcResult.direct` is the kept direct edges
(`qkv_direct.direct_inputs` order) and ``n_edges_with_direct`` counts them as ACDC does.

The returned ``mask`` drops the edges into nodes left without a path to logits (ACDC never
tests them, and they cannot change the output: it is the same function up to float
rounding); ``raw_mask`` keeps them. `attrpatch.circuits.select.prune` also drops nodes without
parents.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from ..progress import tqdm

from ..graph import Graph
from ..metrics import Metric, kl_metric, resolve_metric, task_metric
from ..patching import DEFAULT_DIRECTION, DIRECTIONS, Patcher
from ..qkv_direct import direct_inputs
from ..tasks.base import TaskBatch

HISTORY_COLUMNS = ["step", "edge", "u", "v", "receiver", "loss_current", "loss_without", "delta", "removed",
                   "direct"]


@dataclass
class AcdcResult:
    """One ACDC run.

    mask: bool [n_up, n_down], the circuit (edges into dead nodes dropped); raw_mask: the
    circuit as the loop left it; forward_passes: patched + cached forwards this run cost
    (see module docstring); n_edges: edges in `mask`; history: one row per tested edge
    (HISTORY_COLUMNS); loss_start/loss_final: loss of the starting and final circuit as
    tracked by the loop; direct: with ``direct=True``, bool [n_direct] kept q/k/v direct edges
    (`qkv_direct.direct_inputs` order; None without).
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
    direct: torch.Tensor | None = None

    @property
    def n_edges_with_direct(self) -> int:
        """Edges counted as ACDC counts them (residual edges + kept q/k/v direct edges); equals
        n_edges for a run without direct edges."""
        return self.n_edges + (int(self.direct.sum()) if self.direct is not None else 0)

    @property
    def n_tested(self) -> int:
        return len(self.history)

    @property
    def n_removed(self) -> int:
        return int(self.history["removed"].sum()) if len(self.history) else 0


def make_patcher(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                 direction: str = DEFAULT_DIRECTION, rows_per_forward: int | None = None) -> Patcher:
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
            p.use_metric(kl_metric(batch, p.base_logits))   # KL against the Patcher's own clean run
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


def _universe(graph: Graph, edges) -> torch.Tensor:
    if edges is None:
        return graph.edge_mask.clone()
    edges = torch.as_tensor(edges).bool().cpu()
    if edges.shape != (graph.n_up, graph.n_down):
        raise ValueError(f"edges must be a bool mask [{graph.n_up}, {graph.n_down}], got {tuple(edges.shape)}")
    return graph.edge_mask & edges


def _direct_universe(graph: Graph, direct: bool, direct_edges) -> torch.Tensor | None:
    if direct_edges is None:
        return None
    if not direct:
        raise ValueError("direct_edges restricts ACDC's q/k/v direct edges: it needs direct=True")
    d = torch.as_tensor(direct_edges).bool().cpu().reshape(-1)
    n = int(direct_inputs(graph).numel())
    if d.numel() != n:
        raise ValueError(f"direct_edges must be a bool mask [{n}] (qkv_direct.direct_inputs order), got {d.numel()}")
    return d


def _acdc_steps(graph: Graph, universe: torch.Tensor, tau: float, loss_full: float, direct: bool = False,
                direct_universe: torch.Tensor | None = None):
    """ACDC as a coroutine: yields the patch mask whose loss it needs next, receives that
    loss, and finally returns (circuit, history rows, loss_start, loss_current, direct kept).

    Written this way so that one run (`acdc`) or many runs in lockstep (`acdc_sweep`, all
    taus' next tests stacked into one batched forward) execute the identical algorithm.
    direct: test each q/k/v input's direct edge first (module docstring); direct_universe:
    bool [n_direct], the direct edges the start circuit has (one outside it is removed from the
    start: its whole input patched throughout, never tested), None: all.
    """
    edge_mask = graph.edge_mask
    owners = graph.input_owners
    n_par = graph.n_parents.tolist()
    circuit = universe.clone()
    d_idx = direct_inputs(graph).tolist() if direct else []
    d_cut: set[int] = set()      # inputs whose direct edge was removed (incoming edges gone untested)
    if direct_universe is not None:
        for w, keep in zip(d_idx, torch.as_tensor(direct_universe).bool().tolist()):
            if not keep:
                circuit[:, w] = False
                d_cut.add(w)
    start_patch = edge_mask & ~circuit
    loss_current = loss_start = (yield start_patch) if bool(start_patch.any()) else loss_full
    reach = torch.zeros(graph.n_up + 1, dtype=torch.bool)
    known = torch.zeros(graph.n_up + 1, dtype=torch.bool)
    reach[graph.n_up] = known[graph.n_up] = True
    layer_of = {v: int(graph.downstream[v][1:].split(".")[0]) for v in d_idx}   # "a{l}.h{h}<q>" -> l
    d_pos = {v: i for i, v in enumerate(d_idx)}
    d_kept = torch.zeros(len(d_idx), dtype=torch.bool)
    d_layers_done: set[int] = set()
    rows = []

    def update_reach(v):
        for w in owners[v]:  # a GQA key/value input has several owners (its group's heads)
            if not known[w]:  # every edge out of w is decided by now: its reach is final
                reach[w] = bool((circuit[w] & graph.inputs_of_any(reach)).any())
                known[w] = True
        return any(bool(reach[w]) for w in owners[v])

    for v in range(graph.n_down - 1, -1, -1):
        if v in d_pos and layer_of[v] not in d_layers_done:
            # ACDC's hook_v/hook_k/hook_q receivers of this layer: one direct-edge test per input
            layer = layer_of[v]
            d_layers_done.add(layer)
            for w in [x for x in d_idx[::-1] if layer_of[x] == layer]:
                if not update_reach(w) or w in d_cut:
                    continue
                name = f"{graph.downstream[w]}.input->{graph.downstream[w]}"
                if not bool(circuit[:, w].any()):
                    loss_without = loss_current        # nothing left to patch: the same circuit
                else:
                    saved = circuit[:, w].clone()
                    circuit[:, w] = False
                    loss_without = yield edge_mask & ~circuit
                    circuit[:, w] = saved
                delta = loss_without - loss_current
                removed = delta < tau
                rows.append((len(rows), name, -1, w, graph.downstream[w], loss_current, loss_without, delta,
                             bool(removed), True))
                if removed:
                    loss_current = loss_without
                    circuit[:, w] = False
                    d_cut.add(w)
                else:
                    d_kept[d_pos[w]] = True
        if not update_reach(v) or v in d_cut:
            continue
        for u in range(n_par[v] - 1, -1, -1):
            if not circuit[u, v]:
                continue
            circuit[u, v] = False
            loss_without = yield edge_mask & ~circuit
            delta = loss_without - loss_current
            removed = delta < tau
            rows.append((len(rows), f"{graph.upstream[u]}->{graph.downstream[v]}", u, v, graph.downstream[v],
                         loss_current, loss_without, delta, bool(removed), False))
            if removed:
                loss_current = loss_without
            else:
                circuit[u, v] = True
    return circuit, rows, loss_start, loss_current, (d_kept if direct else None)


def _result(graph: Graph, tau: float, metric_name: str, out, n_tests: int, setup: int, wall: float,
            universe: torch.Tensor) -> AcdcResult:
    circuit, rows, loss_start, loss_current, kept = out
    final_reach = graph.reaches_logits(circuit)
    mask = circuit & graph.inputs_of_any(final_reach)[None, :]
    res = AcdcResult(
        mask=mask, forward_passes=setup + n_tests, n_edges=int(mask.sum()),
        history=pd.DataFrame(rows, columns=HISTORY_COLUMNS), tau=tau, metric=metric_name,
        loss_start=loss_start, loss_final=loss_current, raw_mask=circuit, wall_s=wall,
        extra={"n_start_edges": int(universe.sum())}, direct=kept,
    )
    if kept is not None:
        res.extra["n_edges_with_direct"] = res.n_edges_with_direct
    return res


def _run_lockstep(patcher: Patcher, graph: Graph, universes: list, taus: list, progress: bool, desc: str,
                  direct: bool = False, direct_universes: list | None = None):
    """Run several ACDC coroutines together; each step's pending tests share one batched forward."""
    m = patcher.metric
    sign = -1.0 if m.higher_is_better else 1.0
    loss_full = sign * patcher.base_value
    d_unis = direct_universes or [None] * len(universes)
    gens = [_acdc_steps(graph, uni, tau, loss_full, direct, du) for uni, tau, du in zip(universes, taus, d_unis)]
    pending: dict[int, torch.Tensor] = {}
    outs: dict[int, tuple] = {}
    n_tests = [0] * len(gens)
    for i, g in enumerate(gens):
        try:
            pending[i] = next(g)
        except StopIteration as e:
            outs[i] = e.value
    bar = tqdm(desc=desc, disable=not progress, leave=False, unit="fwd")
    while pending:
        idx = sorted(pending)
        losses = patcher.metric_of_masks(torch.stack([pending[i] for i in idx]).to(torch.float64))
        bar.update(1)
        for i, loss in zip(idx, losses.tolist()):
            n_tests[i] += 1
            try:
                pending[i] = gens[i].send(sign * loss)
            except StopIteration as e:
                outs[i] = e.value
                del pending[i]
        bar.set_postfix(running=len(pending))
    bar.close()
    return [outs[i] for i in range(len(gens))], n_tests


def acdc(model, graph: Graph, batch: TaskBatch, *, tau: float, metric: str | Metric = "task",
         direction: str = DEFAULT_DIRECTION, edges: torch.Tensor | None = None, progress: bool = True,
         patcher: Patcher | None = None, direct: bool = False,
         direct_edges: torch.Tensor | None = None) -> AcdcResult:
    """Run ACDC with threshold `tau` (see the module docstring for order and cost).

    metric: "task" (the task metric, negated as the loss), "kl" (KL(clean || patched)), a
    metric kind, or a ready Metric. edges: bool [n_up, n_down] subgraph to start from
    (edges outside stay patched). patcher: reuse a Patcher (its cached clean/corrupted runs
    and metric; `metric` and `direction` are then ignored), as `acdc_sweep` does.
    direct: ACDC's q/k/v direct edges, each tested before its input's incoming edges (module
    docstring); False: our graph's edges only. direct_edges: bool [n_direct], the direct edges
    to start from (with `edges`, e.g. EAP -> ACDC; the others' inputs stay patched); None: all.
    """
    tau = float(tau)
    if not np.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    t0 = time.perf_counter()
    if patcher is None:
        patcher = make_patcher(model, graph, batch, metric, direction=direction)
    universe = _universe(graph, edges)
    (out,), (n,) = _run_lockstep(patcher, graph, [universe], [tau], progress, f"ACDC tau={tau:g}", direct,
                                 [_direct_universe(graph, direct, direct_edges)])
    # a shared Patcher's setup forwards (clean/corrupted runs) are counted in every run, so a
    # run's count is that of a standalone run
    return _result(graph, tau, patcher.metric.name, out, n, _setup_passes(patcher), time.perf_counter() - t0, universe)


def eap_then_acdc(model, graph: Graph, batch: TaskBatch, eap_scores: torch.Tensor, eap_threshold: float,
                  tau: float, *, metric: str | Metric = "task", direction: str = DEFAULT_DIRECTION,
                  progress: bool = True, patcher: Patcher | None = None, direct: bool = False,
                  direct_scores: torch.Tensor | None = None) -> AcdcResult:
    """EAP -> ACDC: delete edges with |EAP score| < eap_threshold, run ACDC on the rest.

    direct: on ACDC's graph (module docstring) as the EAP paper's code does: the q/k/v direct
    edges are thresholded too, on `direct_scores` ([n_direct], e.g.
    `qkv_direct.direct_atp_scores`), and ACDC tests the kept ones.

    Deleted edges stay patched (corrupted) throughout; only the kept ones are tested, so
    the forward-pass count drops (plus one forward for the subgraph's starting loss when
    anything was deleted). eap_threshold <= 0 keeps every edge: plain ACDC.
    """
    s = torch.as_tensor(eap_scores).detach().cpu().double()
    if s.shape != (graph.n_up, graph.n_down):
        raise ValueError(f"eap_scores must be [{graph.n_up}, {graph.n_down}], got {tuple(s.shape)}")
    keep = graph.edge_mask & (s.abs() >= float(eap_threshold))
    keep_d = _direct_keep(graph, direct, direct_scores, eap_threshold)
    all_kept = bool((keep == graph.edge_mask).all()) and (keep_d is None or bool(keep_d.all()))
    res = acdc(model, graph, batch, tau=tau, metric=metric, direction=direction,
               edges=None if all_kept else keep, progress=progress, patcher=patcher,
               direct=direct, direct_edges=None if all_kept else keep_d)
    res.extra.update(eap_threshold=float(eap_threshold), n_edges_after_eap=int(keep.sum()))
    if keep_d is not None:
        res.extra["n_direct_after_eap"] = int(keep_d.sum())
    return res


def _direct_keep(graph: Graph, direct: bool, direct_scores, eap_threshold: float) -> torch.Tensor | None:
    """The direct edges EAP keeps (|score| >= threshold); None without direct edges."""
    if not direct:
        if direct_scores is not None:
            raise ValueError("direct_scores are the q/k/v direct edges' EAP scores: they need direct=True")
        return None
    if direct_scores is None:
        raise ValueError("EAP -> ACDC with direct=True needs direct_scores (qkv_direct.direct_atp_scores)")
    return _direct_universe(graph, True, torch.as_tensor(direct_scores).detach().cpu().double().abs()
                            >= float(eap_threshold))


def eap_then_acdc_sweep(model, graph: Graph, batch: TaskBatch, eap_scores: torch.Tensor, eap_threshold: float,
                        taus: Iterable[float], *, metric: str | Metric = "task", direction: str = DEFAULT_DIRECTION,
                        progress: bool = False, patcher: Patcher | None = None,
                        direct: bool = False, direct_scores: torch.Tensor | None = None) -> list[AcdcResult]:
    """`eap_then_acdc` at several taus, run in lockstep (one batched forward per step);
    each result equals the standalone `eap_then_acdc` run and reports its forward count."""
    s = torch.as_tensor(eap_scores).detach().cpu().double()
    keep = graph.edge_mask & (s.abs() >= float(eap_threshold))
    keep_d = _direct_keep(graph, direct, direct_scores, eap_threshold)
    all_kept = bool((keep == graph.edge_mask).all()) and (keep_d is None or bool(keep_d.all()))
    sweep = acdc_sweep(model, graph, batch, taus, metric=metric, direction=direction,
                       edges=None if all_kept else keep, progress=progress, patcher=patcher, direct=direct,
                       direct_edges=None if all_kept else keep_d)
    for r in sweep.results:
        r.extra.update(eap_threshold=float(eap_threshold), n_edges_after_eap=int(keep.sum()))
        if keep_d is not None:
            r.extra["n_direct_after_eap"] = int(keep_d.sum())
    return sweep.results


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
        """Bool [T, n_up, n_down], in tau order (for `circuits.roc.roc_from_circuits`)."""
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
               patcher: Patcher | None = None, direct: bool = False,
               direct_edges: torch.Tensor | None = None) -> AcdcSweep:
    """One ACDC run per tau (e.g. 10**(-k/5), k = 0..30, for ROC), sharing the cached runs.

    The runs advance in lockstep: at each step every still-running tau's next test is
    stacked into one batched forward (one per layer the tests start at, with the Patcher's
    prefix reuse), so the sweep costs about as many forwards as its longest run, not the sum. Each result is identical to a standalone run and reports a
    standalone run's forward count; `AcdcSweep.forward_passes` is the real batched total.
    """
    t0 = time.perf_counter()
    patcher = patcher or make_patcher(model, graph, batch, metric, direction=direction)
    start = patcher.forward_passes
    taus = [float(t) for t in taus]
    if not all(np.isfinite(taus)):
        raise ValueError(f"taus must be finite, got {taus}")
    universe = _universe(graph, edges)
    outs, ns = _run_lockstep(patcher, graph, [universe] * len(taus), taus, progress, f"ACDC x{len(taus)} taus",
                             direct, [_direct_universe(graph, direct, direct_edges)] * len(taus))
    wall = time.perf_counter() - t0
    results = [_result(graph, t, patcher.metric.name, o, n, _setup_passes(patcher), wall, universe)
               for t, o, n in zip(taus, outs, ns)]
    total = patcher.forward_passes - start + _setup_passes(patcher)
    return AcdcSweep(taus, results, total, wall)


def acdc_score_matrix(history: pd.DataFrame, graph: Graph) -> torch.Tensor:
    """Float64 [n_up, n_down] of an ACDC run's ``history``: each tested edge's loss change
    (``delta``) when it was tested, NaN for edges ACDC never tested; the q/k/v direct inputs
    (``direct`` rows) are not graph edges and are left out. A circuit file's scores for ACDC."""
    out = torch.full((graph.n_up, graph.n_down), float("nan"), dtype=torch.float64)
    for u, v, d in history[~history["direct"]][["u", "v", "delta"]].itertuples(index=False):
        out[int(u), int(v)] = float(d)
    return out
