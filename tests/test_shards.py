"""Scatter/gather (attrpatch.repro.shards): the gathered result equals the unsharded one, in float64
on a tiny random model, for each kind of shard; a missing or repeated shard is rejected."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from attrpatch import attribute
from attrpatch.graph import Graph
from attrpatch.methods.acdc import acdc_sweep
from attrpatch.patching import Patcher
from attrpatch.repro.shards import (cost_slices, edge_block, gather_edge_blocks, gather_prompt_scores,
                                    gather_run_shards, gather_score_shards, gather_taus, needed_slices, prompt_shard,
                                    run_shard, score_prompt_shard, shard_range, write_run_shard, write_score_shard)

from conftest import random_batch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n,k", [(7, 1), (7, 3), (6, 6), (32491, 8)])
def test_shard_ranges_partition_the_items(n, k):
    rs = [shard_range(n, i, k) for i in range(k)]
    assert rs[0][0] == 0 and rs[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(rs, rs[1:]))          # contiguous, no gap, no overlap
    sizes = [e - s for s, e in rs]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("args,msg", [((5, 0, 0), "count must be >= 1"), ((5, 0, 6), "exceeds the 5 items"),
                                      ((5, 3, 3), "allowed: 0..2"), ((5, -1, 2), "allowed: 0..1")])
def test_bad_shards_are_named(args, msg):
    with pytest.raises(ValueError, match=msg):
        shard_range(*args)


@pytest.mark.parametrize("method", ["eap", "eap_ig", "eap_ig_kl", "eap_gp", "hvp"])
def test_prompt_shards_gather_to_the_full_batch(model, method):
    batch = random_batch(B=5, seed=3)
    full = attribute(model, batch, method=method)
    for k in (2, 3):
        parts = []
        for i in range(k):
            sub, w = prompt_shard(batch, i, k)
            parts.append((attribute(model, sub, method=method), w))
        torch.testing.assert_close(gather_prompt_scores(parts), full.double(), rtol=1e-9, atol=1e-12)
    # negative control: an unweighted sum of the shards is not the batch's scores
    assert not torch.allclose(sum(s for s, _ in parts), full.double(), rtol=1e-3, atol=1e-6)


def test_prompt_gather_rejects_a_missing_shard(model):
    batch = random_batch(B=4)
    parts = [(attribute(model, sub, method="eap"), w) for sub, w in (prompt_shard(batch, i, 2) for i in range(2))]
    with pytest.raises(ValueError, match="weights sum to 0.5"):
        gather_prompt_scores(parts[:1])
    with pytest.raises(ValueError, match="weights sum to 1.5"):
        gather_prompt_scores(parts + parts[:1])


def test_edge_blocks_gather_to_all_edge_patching(model, batch):
    g = Graph.from_model(model)
    full = Patcher(model, g, batch).edge_effects().double()
    k = 3
    parts = []
    for i in range(k):
        idx = edge_block(g.n_edges, i, k)
        parts.append((idx, Patcher(model, g, batch).edge_effects(g.edge_index[idx])))
    torch.testing.assert_close(gather_edge_blocks(g.n_edges, parts), full, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="in no block"):
        gather_edge_blocks(g.n_edges, parts[:2])
    with pytest.raises(ValueError, match="more than one block"):
        gather_edge_blocks(g.n_edges, parts + parts[1:2])


def _same_runs(got, full):
    """Two lists of ACDC runs are the same runs: thresholds, circuits, tests and their deltas."""
    assert [r.tau for r in got] == [r.tau for r in full]
    for a, b in zip(got, full):
        assert torch.equal(a.mask, b.mask)
        assert a.forward_passes == b.forward_passes
        assert a.history[["u", "v", "removed"]].equals(b.history[["u", "v", "removed"]])
        torch.testing.assert_close(torch.tensor(a.history["delta"].to_numpy()),
                                   torch.tensor(b.history["delta"].to_numpy()), rtol=1e-9, atol=1e-12)


def test_tau_pieces_gather_to_the_full_sweep(attn_model):
    g = Graph.from_model(attn_model)
    batch = random_batch(B=3, seed=1)
    taus = [1e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    full = acdc_sweep(attn_model, g, batch, taus, progress=False)
    parts = [(ts, acdc_sweep(attn_model, g, batch, ts, progress=False).results) for ts in (taus[:2], taus[2:])]
    _same_runs(gather_taus(taus, parts), full.results)
    assert len({int(r.mask.sum()) for r in full.results}) > 1      # the thresholds give different circuits
    with pytest.raises(ValueError, match="the sweep needs"):
        gather_taus(taus, parts[:1])
    with pytest.raises(ValueError, match="more than one shard"):
        gather_taus(taus, parts + parts[:1])


def test_score_shard_files_gather_to_the_unsharded_scores(model, tmp_path):
    """The DAG's prompt shards (score_prompt_shard -> file -> gather_score_shards) give the scores
    `method_curves` computes unsharded, with the same options (steps, batch_size)."""
    g = Graph.from_model(model)
    batch = random_batch(B=5, seed=4)
    methods = ["eap", "eap_ig_activations"]
    k = 2
    paths = []
    for i in range(k):
        paths.append(tmp_path / f"s{i}.pt")
        write_score_shard(paths[-1], i, k, {"t@m": score_prompt_shard(model, g, batch, methods, i, k, steps=3,
                                                                      batch_size=2)})
    got = gather_score_shards(paths)["t@m"]
    for m in methods:
        full = attribute(model, batch, method=m, graph=g, **({"steps": 3} if m != "eap" else {}), batch_size=2)
        torch.testing.assert_close(got[m]["scores"], full.double(), rtol=1e-9, atol=1e-12)
        assert got[m]["seconds"] > 0
    with pytest.raises(ValueError, match=r"need each of 0..0 once"):
        gather_score_shards(paths[1:])                      # a shard missing
    with pytest.raises(ValueError, match="need each of"):
        gather_score_shards([paths[0], paths[0]])           # one shard twice, the other missing
    write_score_shard(tmp_path / "other.pt", 1, 2, {"t@m": score_prompt_shard(model, g, batch, ["eap"], 1, 2, steps=3)})
    with pytest.raises(ValueError, match="different tasks or methods"):
        gather_score_shards([paths[0], tmp_path / "other.pt"])
    with pytest.raises(ValueError, match="cannot be split by prompts"):
        score_prompt_shard(model, g, batch, ["exact"], 0, 2, steps=3)


def _brute_force_best_max(costs, k):
    """The smallest largest-slice total over every split of `costs` into k contiguous slices."""
    import itertools
    n = len(costs)
    return min(max(sum(costs[a:b]) for a, b in zip((0, *cuts), (*cuts, n)))
               for cuts in itertools.combinations(range(1, n), k - 1))


@pytest.mark.parametrize("costs", [[1.0] * 7, [5, 1, 1, 1, 1, 5], [0.5, 0.5, 0.5, 0.01, 0.01, 0.01, 0.01],
                                   [3, 0, 0, 2, 7, 1, 1, 4], [0.0, 0.0, 0.0]])
def test_cost_slices_split_contiguously_with_the_smallest_largest_slice(costs):
    for k in range(1, len(costs) + 1):
        sl = cost_slices(costs, k)
        assert len(sl) == k and sl[0][0] == 0 and sl[-1][1] == len(costs)
        assert all(s < e for s, e in sl) and all(a[1] == b[0] for a, b in zip(sl, sl[1:]))
        assert max(sum(costs[s:e]) for s, e in sl) == pytest.approx(_brute_force_best_max(costs, k))
        assert cost_slices(list(costs), k) == sl                       # deterministic
    # needed_slices: the fewest slices under a bound
    assert needed_slices([0.5] * 4 + [0.01] * 4, 1.0) == 3
    assert needed_slices([2.0, 0.1, 0.1], 1.0) == 2                    # a run above the bound alone
    with pytest.raises(ValueError, match="exceeds the 3 items"):
        cost_slices([1, 2, 3], 4)
    with pytest.raises(ValueError, match="costs must be >= 0"):
        cost_slices([1, -2, 3], 2)


def _eap_roc_like_runs(taus):
    """Two sweeps' runs (ACDC task and KL metric), the KL sweep 5x costlier: uneven slices."""
    runs = [(("x/task", t), 1.0) for t in taus] + [(("x/kl", t), 5.0) for t in taus]
    return [r for r, _ in runs], [c for _, c in runs]


def test_run_shard_files_gather_to_the_full_sweeps(attn_model, tmp_path):
    """ACDC runs split over (sweep, tau) (eap_roc's task x metric x tau) in cost-balanced shards,
    written and gathered, are the unsharded sweeps' runs; a missing, repeated or foreign shard
    is refused."""
    g = Graph.from_model(attn_model)
    batch = random_batch(B=3, seed=1)
    taus = [1e-3, 3e-2, 3e-1]
    metric = {"x/task": "task", "x/kl": "kl"}
    full = {k: acdc_sweep(attn_model, g, batch, taus, metric=m, progress=False) for k, m in metric.items()}
    runs, costs = _eap_roc_like_runs(taus)
    k = 3
    paths = [tmp_path / f"r{i}.pt" for i in range(k)]
    layout = [run_shard(runs, costs, i, k) for i in range(k)]
    # costs 1,1,1,5,5,5 in 3 slices: at best 8 = 1+1+1+5, so shard 0 crosses from one sweep to the other
    assert layout == [{"x/task": taus, "x/kl": taus[:1]}, {"x/kl": taus[1:2]}, {"x/kl": taus[2:]}]
    for i, p in enumerate(paths):
        write_run_shard(p, i, k, {key: acdc_sweep(attn_model, g, batch, ts, metric=metric[key], progress=False)
                                  for key, ts in layout[i].items()})
    got = gather_run_shards(paths, {key: taus for key in metric})
    for key in metric:
        assert got[key].taus == taus and torch.equal(got[key].masks, full[key].masks)
        _same_runs(got[key].results, full[key].results)
    assert len({int(r.mask.sum()) for r in full["x/task"].results}) > 1
    with pytest.raises(ValueError, match=r"need each of 0..1 once"):
        gather_run_shards(paths[:2], {key: taus for key in metric})              # a shard missing
    with pytest.raises(ValueError, match="need each of"):
        gather_run_shards([paths[0]] + paths[:2], {key: taus for key in metric})  # one shard twice
    with pytest.raises(ValueError, match="does not make"):
        gather_run_shards(paths, {"x/task": taus})                               # a sweep this run lacks
    with pytest.raises(ValueError, match="the sweep needs"):
        gather_run_shards(paths, {key: taus + [0.5] for key in metric})          # a run no shard made
    write_score_shard(tmp_path / "scores.pt", 0, 1, {})
    with pytest.raises(ValueError, match="not an ACDC run shard"):
        gather_run_shards([tmp_path / "scores.pt"], {})


def test_eap_acdc_shard_jobs_gather_to_the_unsharded_runs(model, tmp_path):
    """experiments/eap_acdc.py's own shard job (`write_shard`: its slice of the task x keep fraction
    x tau runs, EAP recomputed per job) on a float64 random model, gathered, gives every run of the
    unsharded loop (`run_sweep` per fraction over all taus), with ACDC's q/k/v direct edges."""
    import runpy

    from attrpatch.methods.acdc import make_patcher
    from attrpatch.repro.cost import acdc_keys

    exp = runpy.run_path(str(ROOT / "experiments" / "eap_acdc.py"), run_name="eap_acdc_test")
    g = Graph.from_model(model)
    batch = random_batch(B=3, seed=2)
    run = SimpleNamespace(model=model, graph=g, batch=batch, settings={"batch_size": None, "acdc_max_edges": None},
                          opts={})
    spec = {"tasks": {"t": "m"}, "eap_keep_fractions": [0.3], "taus": [1e-3, 3e-2, 3e-1], "n": 3,
            "edges": "acdc"}
    ctx = SimpleNamespace(spec=spec, task_models=lambda: {"t": "m"}, task=lambda task, name: run,
                          cfg={"models": {"m": {"random": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 32}},
                               "experiments": {"eap_acdc": spec}})
    scores, d_scores, uni = exp["eap_first"](run, True)
    patcher = make_patcher(model, g, batch, "task")
    full = {key: exp["run_sweep"](run, scores, d_scores, uni, f, spec["taus"], patcher, True)
            for key, _, f in acdc_keys(spec, "eap_acdc")}
    assert sorted(full) == ["t/f=0.3", "t/f=1"]
    _run_shards_gather_to(exp, ctx, full, spec["taus"], tmp_path / "a", 3)
    # the fractions keep different subgraphs: the runs differ (the comparison can fail)
    assert [r.forward_passes for r in full["t/f=0.3"].results] != [r.forward_passes for r in full["t/f=1"].results]


def _run_shards_gather_to(exp, ctx, full, taus, stem, k):
    """The experiment's own shard job (`write_shard`) run as k shards, gathered: each sweep's runs
    are `full`'s, direct-edge masks included."""
    paths = [stem.with_name(f"{stem.name}{i}.pt") for i in range(k)]
    for i, p in enumerate(paths):
        exp["write_shard"](ctx, SimpleNamespace(shard=i, shards=k, out=p), True)
    got = gather_run_shards(paths, {key: taus for key in full})
    for key in full:
        _same_runs(got[key].results, full[key].results)
        assert all(torch.equal(a.direct, b.direct) for a, b in zip(got[key].results, full[key].results))


def _numbers_close(a, b, path=""):
    """Paths where two study results differ beyond float64 rounding (seconds left out)."""
    import numpy as np
    if isinstance(a, dict):
        return [d for k in a for d in _numbers_close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and not isinstance(a, str):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _numbers_close(x, y, f"{path}[{i}]")]
    if "seconds" in path:
        return []
    if isinstance(a, (float, np.floating, np.ndarray, torch.Tensor)):
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return [] if np.allclose(x, y, rtol=1e-9, atol=1e-12, equal_nan=True) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a} != {b}"]


def test_hvp_study_prompt_shards_gather_to_the_unsharded_study(model):
    """The HVP study's model-running parts (`study_parts`) on prompt shards, gathered
    (`gather_study_parts`), give the unsharded study's every number (errors, rho, K-step, IG,
    Screen-Flag-Fix, both readings) in float64, the batched-pass counts aside (each job counts
    its own); a missing shard is refused."""
    from attrpatch.analysis.hvp_study import gather_study_parts, second_order_study, study_from_parts, study_parts
    from attrpatch.analysis.second_order import edge_subset
    g = Graph.from_model(model)
    batch = random_batch(B=5, seed=6)
    kw = dict(ks=[1, 2], threshold=0.5, n_top=3, n_random=3, ig_rule="midpoint", seed=0)
    full, full_arrays = second_order_study(model, g, batch, **kw)
    eap_all = g.edges_from_matrix(attribute(model, batch, method="eap", graph=g)).double()
    sel = edge_subset(eap_all, 3, 3, seed=0)
    parts = [(study_parts(model, g, sub, sel, ks=kw["ks"]), w) for sub, w in (prompt_shard(batch, i, 2) for i in range(2))]
    got, got_arrays = study_from_parts(gather_study_parts(parts), g, eap_all, sel, n_prompts=len(batch),
                                       **{k: v for k, v in kw.items()})
    # batched passes are counted per job: 2 shards run each batched pass twice (on half the rows each)
    assert sorted(_numbers_close(full, got)) == [".exact_cost.batched_forwards: 4 != 8", ".hvp_batched_passes: 11 != 22"]
    assert _numbers_close(full_arrays, got_arrays) == []
    # negative control: one shard's parts alone are another study
    alone, _ = study_from_parts(gather_study_parts([(parts[0][0], 1.0)]), g, eap_all, sel, n_prompts=len(batch), **kw)
    assert _numbers_close(full, alone) != []
    with pytest.raises(ValueError, match="shares sum to"):
        gather_study_parts(parts[:1])


def test_parts_shard_files_read_back_and_refuse_a_bad_set(tmp_path):
    """The HVP study's shard files (`write_parts_shard`): parts and weights read back per key,
    float-keyed points included; a missing, repeated or foreign shard is refused."""
    from attrpatch.repro.shards import read_parts_shards, write_parts_shard
    paths = [tmp_path / f"p{i}.pt" for i in range(2)]
    for i, p in enumerate(paths):
        write_parts_shard(p, i, 2, {"ioi@gpt2": ({"d1": {0.5: torch.full((3,), float(i))}, "hvp_passes": i}, 0.5)})
    got = read_parts_shards(paths)["ioi@gpt2"]
    assert [w for _, w in got] == [0.5, 0.5] and torch.equal(got[1][0]["d1"][0.5], torch.ones(3))
    with pytest.raises(ValueError, match="need each of 0..0 once"):
        read_parts_shards(paths[1:])
    with pytest.raises(ValueError, match="need each of"):
        read_parts_shards([paths[0], paths[0]])
    write_parts_shard(tmp_path / "other.pt", 1, 2, {"sva@gpt2": ({}, 0.5)})
    with pytest.raises(ValueError, match="different tasks or models"):
        read_parts_shards([paths[0], tmp_path / "other.pt"])
    write_score_shard(tmp_path / "scores.pt", 0, 1, {})
    with pytest.raises(ValueError, match="not a prompt-parts shard"):
        read_parts_shards([tmp_path / "scores.pt"])


def test_eap_roc_shard_jobs_gather_to_the_unsharded_sweeps(model, attn_model, tmp_path):
    """experiments/eap_roc.py's own shard job (`write_shard`: its cost-balanced slice of the task x
    ACDC metric x tau runs) on two float64 random models of different cost, gathered, gives the
    unsharded sweeps (`acdc_sweep` per task and metric over every tau, as its main loop runs),
    with ACDC's q/k/v direct edges and an acdc_max_edges universe."""
    import runpy

    from attrpatch.repro.cost import acdc_keys, acdc_runs

    exp = runpy.run_path(str(ROOT / "experiments" / "eap_roc.py"), run_name="eap_roc_test")
    runs = {t: SimpleNamespace(model=m, graph=Graph.from_model(m), batch=random_batch(B=3, seed=7),
                               settings={"acdc_max_edges": 40, "batch_size": None}, opts={})
            for t, m in (("ioi", model), ("docstring", attn_model))}
    spec = {"tasks": {"ioi": "big", "docstring": "small"}, "methods": ["eap", "acdc_task", "acdc_kl"],
            "taus": [1e-3, 3e-2, 3e-1], "n": 3, "edges": "acdc"}
    cfg = {"models": {"big": {"random": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 32},
                      "small": {"random": "gpt2", "n_layer": 1, "n_head": 4, "n_embd": 32}},
           "experiments": {"eap_roc": spec}}
    ctx = SimpleNamespace(spec=spec, cfg=cfg, task_models=lambda: spec["tasks"], task=lambda task, name: runs[task])
    costs = [c for _, c in acdc_runs(cfg, "eap_roc")]
    assert max(costs) > 1.5 * min(costs)          # the slices are balanced by cost, not by count
    full = {key: acdc_sweep(r.model, r.graph, r.batch, spec["taus"], metric=exp["ACDC_METRIC"][m], progress=False,
                            edges=exp["acdc_edges"](r), direct=True)
            for key, t, m in acdc_keys(spec, "eap_roc") for r in [runs[t]]}
    _run_shards_gather_to(exp, ctx, full, spec["taus"], tmp_path / "roc", 5)
