"""Scatter/gather (attrpatch.repro.shards): the gathered result equals the unsharded one, in float64
on a tiny random model, for each kind of shard; a missing or repeated shard is rejected."""
import pytest
import torch

from attrpatch import attribute
from attrpatch.graph import Graph
from attrpatch.methods.acdc import acdc_sweep
from attrpatch.patching import Patcher
from attrpatch.repro.shards import (edge_block, gather_edge_blocks, gather_prompt_scores, gather_score_shards,
                                    gather_tau_shards, gather_taus, prompt_shard, score_prompt_shard, shard_range,
                                    tau_shard, write_score_shard, write_tau_shard)

from conftest import random_batch


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


def test_tau_shards_gather_to_the_full_sweep(attn_model):
    g = Graph.from_model(attn_model)
    batch = random_batch(B=3, seed=1)
    taus = [1e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    full = acdc_sweep(attn_model, g, batch, taus, progress=False)
    k = 2
    parts = []
    for i in range(k):
        ts = tau_shard(taus, i, k)
        parts.append((ts, acdc_sweep(attn_model, g, batch, ts, progress=False).results))
    got = gather_taus(taus, parts)
    assert [r.tau for r in got] == [r.tau for r in full.results]
    for a, b in zip(got, full.results):
        assert torch.equal(a.mask, b.mask)
        assert a.history[["u", "v", "removed"]].equals(b.history[["u", "v", "removed"]])
        torch.testing.assert_close(torch.tensor(a.history["delta"].to_numpy()),
                                   torch.tensor(b.history["delta"].to_numpy()), rtol=1e-9, atol=1e-12)
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


def test_tau_shard_files_gather_to_the_full_sweep(attn_model, tmp_path):
    g = Graph.from_model(attn_model)
    batch = random_batch(B=3, seed=1)
    taus = [1e-3, 3e-2, 3e-1]
    full = acdc_sweep(attn_model, g, batch, taus, progress=False)
    paths = [tmp_path / f"t{i}.pt" for i in range(2)]
    for i, p in enumerate(paths):
        write_tau_shard(p, i, 2, {"x/task": acdc_sweep(attn_model, g, batch, tau_shard(taus, i, 2), progress=False)})
    got = gather_tau_shards(paths, taus)["x/task"]
    assert got.taus == taus and torch.equal(got.masks, full.masks)
    assert [r.forward_passes for r in got.results] == [r.forward_passes for r in full.results]
    with pytest.raises(ValueError, match="the sweep needs"):
        gather_tau_shards(paths[:1], taus)
