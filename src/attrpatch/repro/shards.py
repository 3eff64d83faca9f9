"""Scatter and gather: one heavy computation split into independent shard jobs and put back.

Three kinds of shard, each exact by construction (no approximation is added by splitting):

- ``prompts``: gradient scores (EAP, EAP-IG, EAP-GP, HVP) are means over prompts, so a shard
  scores a contiguous chunk of the batch and the gather is the sum of the chunks' scores
  weighted by their share of the prompts (the same rule as ``batch_size`` chunking,
  `attrpatch.methods.common.chunks`); the HVP study's derivatives, exact effects and EAP-IG
  scores likewise (`write_parts_shard`; its edge subset is chosen on the whole batch by each job).
- ``edges``: exact single-edge effects are independent per edge, so a shard patches one
  block of the graph's edge list and the gather puts every block back in place, checking that
  each edge was computed exactly once.
- ``runs``: ACDC at one threshold is one independent run (`acdc_sweep`'s runs each equal a
  standalone run), so the runs of every sweep of an experiment (eap_roc: task x metric x tau;
  eap_acdc: task x keep fraction x tau) are listed in a fixed order with their estimated costs
  (`repro.cost.acdc_runs`), a shard runs a contiguous slice of that list, and the gather puts
  each sweep back in threshold order, checking that every run was computed exactly once.

A shard is named by ``(index, count)``; shard ``i`` of ``k`` is a contiguous slice: balanced in
items for prompts and edges (sizes differ by at most one), balanced in cost for ACDC runs
(`cost_slices`: runs on GPT-2 small cost ~100x Docstring's), so the same ``(i, k)`` always means
the same work.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import time

import torch

from ..circuits.faithfulness import score_options, score_runs
from ..graph import Graph
from ..io import atomic_path
from ..methods.acdc import AcdcSweep
from ..methods.registry import attribute
from ..patching import Patcher

KINDS = ("prompts", "edges", "runs")
# The DAG's split experiments and their kind of shard (Snakefile, "scatter / gather"); the
# reference's edge blocks have rules of their own.
SPLIT_EXPERIMENTS = {"eapig_faith": "prompts", "eapgp_gain": "prompts", "eap_roc": "runs", "eap_acdc": "runs",
                     "hvp": "prompts"}


def dag_shard_count(cfg: Mapping, exp: str) -> int:
    """Shard jobs of experiment `exp` in a profile (experiments.<exp>.shards; 1: it runs whole)."""
    spec = cfg.get("experiments", {}).get(exp)
    return int(spec.get("shards", 1)) if exp in SPLIT_EXPERIMENTS and spec is not None else 1


def dag_shard_files(cfg: Mapping, exp: str, results_dir: str) -> list[str]:
    """The shard files the rule of `exp` gathers (none when it runs whole)."""
    k = dag_shard_count(cfg, exp)
    return [] if k == 1 else [f"{results_dir}/shards/{exp}/{SPLIT_EXPERIMENTS[exp]}_{i}_of_{k}.pt" for i in range(k)]


def shard_range(n: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard ``index`` of ``count`` over ``n`` items (balanced, contiguous)."""
    for name, v in (("n", n), ("index", index), ("count", count)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an integer, got {v!r}")
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    if count > n:
        raise ValueError(f"shard count {count} exceeds the {n} items to split; allowed: 1..{n}")
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} out of range; allowed: 0..{count - 1}")
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


# --------------------------------------------------------------------------- prompts


def prompt_shard(batch, index: int, count: int):
    """(sub-batch, weight): shard ``index`` of ``count`` of the prompts and its share of them."""
    s, e = shard_range(len(batch), index, count)
    return batch.subset(slice(s, e)), (e - s) / len(batch)


def gather_prompt_scores(parts: Sequence[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """The full batch's scores from every prompt shard's (scores, weight) (weights sum to 1)."""
    if not parts:
        raise ValueError("no prompt shards to gather")
    total_w = sum(float(w) for _, w in parts)
    if abs(total_w - 1.0) > 1e-9:
        raise ValueError(f"prompt shard weights sum to {total_w}, not 1: a shard is missing or repeated")
    shapes = {tuple(s.shape) for s, _ in parts}
    if len(shapes) != 1:
        raise ValueError(f"prompt shards have different score shapes: {sorted(shapes)}")
    out = None
    for s, w in parts:
        out = s.double() * w if out is None else out + s.double() * w
    return out


# Methods whose scores are a mean over prompts of per-prompt scores (tests/test_shards.py checks
# each against its unsharded run); any other method is refused by `score_prompt_shard`.
PROMPT_ADDITIVE = ("eap", "eap_ig", "eap_ig_kl", "eap_ig_activations", "eap_gp", "hvp")


def score_prompt_shard(model, graph, batch, methods: Sequence[str], index: int, count: int, *,
                       steps: int, batch_size: int | None = None, options: dict | None = None,
                       variants: dict | None = None) -> dict:
    """{run name: {"scores" [n_up, n_down] float64, "weight", "seconds"}}: every scoring run of
    `circuits.faithfulness.method_curves` (`score_runs`: the methods, then the variants) on prompt
    shard ``index`` of ``count``, with the same options (`score_options`), so the gathered scores
    are the unsharded run's."""
    runs = score_runs(methods, options, variants)
    bad = sorted({method for _, method, _ in runs if method not in PROMPT_ADDITIVE})
    if bad:
        raise ValueError(f"methods {bad} cannot be split by prompts; allowed: {', '.join(PROMPT_ADDITIVE)}")
    sub, w = prompt_shard(batch, index, count)
    out = {}
    for name, method, extra in runs:
        t0 = time.perf_counter()
        s = attribute(model, sub, method=method, graph=graph, **score_options(method, steps, batch_size, extra))
        out[name] = {"scores": s.detach().cpu().double(), "weight": w, "seconds": time.perf_counter() - t0}
    return out


def write_score_shard(path, index: int, count: int, parts: Mapping[str, Mapping[str, dict]]) -> None:
    """One prompt shard's scores, ``parts[key][method]`` (key: e.g. "task@model"), as a torch file."""
    with atomic_path(path) as tmp:
        torch.save({"kind": "prompt_scores", "index": int(index), "count": int(count),
                    "parts": {k: {m: dict(d) for m, d in v.items()} for k, v in parts.items()}}, tmp)


def _load_run_shards(paths: Sequence, kind: str, what: str, writer: str,
                     weights_only: bool = True) -> list[tuple[str, dict]]:
    """[(path, content)] of the shard files of one run, each written by `writer` with this `kind`.
    Refuses another kind of file, no files, files of runs with other shard counts, and a shard given
    twice or missing; `what` names the shards in the messages."""
    docs = []
    for p in paths:
        d = torch.load(p, weights_only=weights_only)
        if not isinstance(d, dict) or d.get("kind") != kind:
            article = "an" if what[0] in "AEIOUaeiou" else "a"
            raise ValueError(f"{p}: not {article} {what} shard written by attrpatch.repro.shards.{writer}")
        docs.append((str(p), d))
    if not docs:
        raise ValueError(f"no {what} shards to gather")
    counts = {d["count"] for _, d in docs}
    if len(counts) != 1:
        raise ValueError(f"{what} shards of different runs (shard counts {sorted(counts)})")
    got = sorted(d["index"] for _, d in docs)
    if got != list(range(counts.pop())):
        raise ValueError(f"{what} shards {got}: need each of 0..{len(docs) - 1} once ({[p for p, _ in docs]})")
    return docs


def gather_score_shards(paths: Sequence) -> dict[str, dict[str, dict]]:
    """{key: {method: {"scores", "seconds"}}}: every shard file of one run put back together (the
    weighted sum, `gather_prompt_scores`; seconds summed). Refuses files of another run (shard
    counts differ), a shard given twice or missing, and files whose keys or methods differ."""
    docs = _load_run_shards(paths, "prompt_scores", "prompt-score", "write_score_shard")
    layout = {p: {k: sorted(v) for k, v in d["parts"].items()} for p, d in docs}
    if len({repr(v) for v in layout.values()}) != 1:
        raise ValueError(f"prompt-score shards score different tasks or methods: {layout}")
    first = docs[0][1]["parts"]
    return {k: {m: {"scores": gather_prompt_scores([(d["parts"][k][m]["scores"], d["parts"][k][m]["weight"])
                                                    for _, d in docs]),
                    "seconds": sum(float(d["parts"][k][m]["seconds"]) for _, d in docs)}
                for m in first[k]} for k in first}


def score_key(task: str, model_name: str) -> str:
    """The key of one (task, model)'s scores in a prompt-score shard file."""
    return f"{task}@{model_name}"


def gathered_scores(gathered: Mapping[str, dict], task: str, model_name: str) -> dict | None:
    """The gathered scores of (task, model) for `method_curves(scores=...)`; None when nothing was
    gathered (an unsharded run scores itself); a (task, model) the shards lack is an error."""
    if not gathered:
        return None
    key = score_key(task, model_name)
    if key not in gathered:
        raise ValueError(f"the prompt-score shards hold no scores of {key!r}; they hold: {', '.join(sorted(gathered))}")
    return gathered[key]


def write_parts_shard(path, index: int, count: int, parts: Mapping[str, tuple[dict, float]]) -> None:
    """One prompt shard's parts of a computation that is a mean over prompts but more than scores
    (e.g. the HVP study's, `analysis.hvp_study.study_parts`): ``parts[key] = (parts, share of the
    prompts)``, as a torch file of tensors and numbers."""
    with atomic_path(path) as tmp:
        torch.save({"kind": "prompt_parts", "index": int(index), "count": int(count),
                    "parts": {k: {"parts": p, "weight": float(w)} for k, (p, w) in parts.items()}}, tmp)


def read_parts_shards(paths: Sequence) -> dict[str, list[tuple[dict, float]]]:
    """{key: [(parts, weight) of every shard]} from the files `write_parts_shard` wrote, for the
    computation's own gather (weights summing to 1 is its check). Refuses files of another run,
    a shard given twice or missing, and shards of different keys."""
    docs = [d for _, d in _load_run_shards(paths, "prompt_parts", "prompt-parts", "write_parts_shard")]
    keys = {tuple(sorted(d["parts"])) for d in docs}
    if len(keys) != 1:
        raise ValueError(f"prompt-parts shards hold different tasks or models: {sorted(keys)}")
    return {k: [(d["parts"][k]["parts"], d["parts"][k]["weight"]) for d in docs] for k in docs[0]["parts"]}


# --------------------------------------------------------------------------- edges


def edge_block(n_edges: int, index: int, count: int) -> torch.Tensor:
    """Indices into the graph's edge list (``Graph.edge_index`` rows) of edge block ``index``."""
    s, e = shard_range(n_edges, index, count)
    return torch.arange(s, e, dtype=torch.long)


def exact_block_effects(model, batch, index: int, count: int, progress: bool = True):
    """(edge indices, exact effects) of edge block ``index`` of ``count``: one shard job of the
    all-edge patching behind a reference table (`attrpatch.circuits.exact_reference`)."""
    g = Graph.from_model(model)
    idx = edge_block(g.n_edges, index, count)
    return idx, Patcher(model, g, batch, progress=progress).edge_effects(g.edge_index[idx])


def gather_edge_blocks(n_edges: int, parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """[n_edges] values from every block's (edge indices, values), in the blocks' dtype (float64
    if they differ); each edge exactly once."""
    dtypes = {torch.as_tensor(v).dtype for _, v in parts}
    out = torch.full((n_edges,), float("nan"), dtype=dtypes.pop() if len(dtypes) == 1 else torch.float64)
    seen = torch.zeros(n_edges, dtype=torch.long)
    for idx, vals in parts:
        idx = torch.as_tensor(idx, dtype=torch.long)
        vals = torch.as_tensor(vals)
        if idx.shape != vals.shape:
            raise ValueError(f"edge block has {idx.numel()} indices but {vals.numel()} values")
        if idx.numel() and (idx.min() < 0 or idx.max() >= n_edges):
            raise ValueError(f"edge index out of range 0..{n_edges - 1}: {int(idx.min())}..{int(idx.max())}")
        seen.index_add_(0, idx, torch.ones_like(idx))
        out[idx] = vals.to(out.dtype)
    if (seen == 0).any():
        missing = (seen == 0).nonzero().flatten()
        raise ValueError(f"{missing.numel()} of {n_edges} edges in no block (first: {missing[:5].tolist()}): "
                         "a shard is missing")
    if (seen > 1).any():
        twice = (seen > 1).nonzero().flatten()
        raise ValueError(f"{twice.numel()} edges in more than one block (first: {twice[:5].tolist()})")
    return out


def write_edge_block(path, idx: torch.Tensor, vals: torch.Tensor) -> None:
    """One edge block (indices, values) as a torch file: exact values in their own dtype."""
    with atomic_path(path) as tmp:
        torch.save({"kind": "edge_block", "edge_index": torch.as_tensor(idx, dtype=torch.long).cpu(),
                    "values": torch.as_tensor(vals).detach().cpu()}, tmp)


def read_edge_block(path) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge indices, values) of a block `write_edge_block` wrote."""
    d = torch.load(path, weights_only=True)
    if not isinstance(d, dict) or d.get("kind") != "edge_block":
        raise ValueError(f"{path}: not an edge block written by attrpatch.repro.shards.write_edge_block")
    return d["edge_index"], d["values"]


# --------------------------------------------------------------------------- ACDC runs


def cost_slices(costs: Sequence[float], count: int) -> list[tuple[int, int]]:
    """``count`` contiguous, non-empty [start, stop) slices of items with these costs whose
    largest total is the smallest any such split allows (the bound B is found by bisection; the
    slices are then filled left to right up to B, each remaining item alone once only as many
    items as slices are left). Deterministic: the same costs and count give the same slices."""
    n = len(costs)
    shard_range(n, 0, count)            # checks count against the items (1..n)
    c = [float(x) for x in costs]
    if any(not x >= 0 for x in c):
        raise ValueError(f"item costs must be >= 0, got {[x for x in c if not x >= 0][:5]}")

    def fill(bound: float) -> list[tuple[int, int]]:
        out, start, total = [], 0, 0.0
        for j, x in enumerate(c):
            left_items, left_slices = n - j, count - len(out) - 1
            if j > start and (total + x > bound or left_items == left_slices):
                out.append((start, j))
                start, total = j, 0.0
            total += x
        return out + [(start, n)]

    lo, hi = max(c), sum(c)
    if _greedy_count(c, lo) <= count:
        hi = lo
    for _ in range(200):                # the smallest bound whose greedy fill needs <= count slices
        mid = (lo + hi) / 2
        if not lo < mid < hi:
            break
        if _greedy_count(c, mid) <= count:
            hi = mid
        else:
            lo = mid
    return fill(hi)


def _greedy_count(costs: Sequence[float], bound: float) -> int:
    """Slices a left-to-right fill up to `bound` makes (the fewest any contiguous split needs)."""
    k, total = 1, 0.0
    for j, x in enumerate(costs):
        if j and total + x > bound:
            k, total = k + 1, 0.0
        total += x
    return k


def needed_slices(costs: Sequence[float], bound: float) -> int:
    """Fewest contiguous slices with every total <= `bound` (an item above it alone)."""
    return _greedy_count(costs, max(float(bound), max(map(float, costs))))


def run_shard(runs: Sequence[tuple[str, float]], costs: Sequence[float], index: int, count: int
              ) -> dict[str, list[float]]:
    """{key: taus} of shard ``index`` of ``count`` over ACDC's runs, each ``(key, tau)`` (key: the
    sweep, e.g. "task/acdc_kl"), split by `cost_slices` of the runs' costs; taus in run order."""
    if len(runs) != len(costs):
        raise ValueError(f"{len(runs)} runs but {len(costs)} costs")
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} out of range; allowed: 0..{count - 1}")
    s, e = cost_slices(costs, count)[index]
    out: dict[str, list[float]] = {}
    for key, tau in runs[s:e]:
        out.setdefault(str(key), []).append(float(tau))
    return out


def gather_taus(taus: Sequence[float], parts: Sequence[tuple[Sequence[float], list]]) -> list:
    """Per-threshold results in the order of ``taus`` from every shard's (taus, results)."""
    by_tau: dict[float, object] = {}
    for ts, rs in parts:
        if len(ts) != len(rs):
            raise ValueError(f"tau shard has {len(ts)} thresholds but {len(rs)} results")
        for t, r in zip(ts, rs):
            if float(t) in by_tau:
                raise ValueError(f"threshold {t} in more than one shard")
            by_tau[float(t)] = r
    want = [float(t) for t in taus]
    if sorted(by_tau) != sorted(want):
        raise ValueError(f"shards cover thresholds {sorted(by_tau)}, the sweep needs {sorted(want)}")
    return [by_tau[t] for t in want]


def write_run_shard(path, index: int, count: int, parts: Mapping[str, AcdcSweep]) -> None:
    """One shard's ACDC sweeps, ``parts[key]`` over that key's taus in the shard, as a torch
    file (pickled: runs carry their history tables; read back only by `gather_run_shards`)."""
    with atomic_path(path) as tmp:
        torch.save({"kind": "acdc_runs", "index": int(index), "count": int(count), "parts": dict(parts)}, tmp)


def gather_run_shards(paths: Sequence, sweeps: Mapping[str, Sequence[float]]) -> dict[str, AcdcSweep]:
    """{key: AcdcSweep over ``sweeps[key]``}: every shard of one run put back, each sweep in tau
    order (`gather_taus`: every (key, tau) run exactly once); a sweep's forward passes and wall
    time are its pieces' sums. Refuses files of another run (shard counts differ), a shard
    given twice or missing, and keys the sweeps do not name."""
    docs = [d for _, d in _load_run_shards(paths, "acdc_runs", "ACDC run", "write_run_shard",
                                           weights_only=False)]    # our own file: AcdcResult objects
    extra = sorted({k for d in docs for k in d["parts"]} - set(sweeps))
    if extra:
        raise ValueError(f"ACDC run shards hold sweeps {extra} this run does not make; it makes {sorted(sweeps)}")
    out = {}
    for k, taus in sweeps.items():
        pieces = [d["parts"][k] for d in docs if k in d["parts"]]
        results = gather_taus(taus, [(sw.taus, sw.results) for sw in pieces])
        out[k] = AcdcSweep([float(t) for t in taus], results, sum(sw.forward_passes for sw in pieces),
                           sum(sw.wall_s for sw in pieces))
    return out
