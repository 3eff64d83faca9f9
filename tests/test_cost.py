"""The cost model (attrpatch.repro.cost): its passes per prompt are the methods' real ones, counted
with hooks on a tiny model; config/paper.yaml's shard counts are the ones it computes."""
import pytest
import torch

from attrpatch import attribute
from attrpatch.graph import Graph
from attrpatch.methods.acdc import acdc_sweep
from attrpatch.patching import Patcher
from attrpatch.repro import cost as C
from attrpatch.repro.context import load_profile

from conftest import random_batch

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

class Counter:
    """Rows run: forwards through the first block (every full forward; the capture runs stop
    before the unembedding, so it cannot be the counting point), backwards reaching the final norm's
    output, double backwards (a second `torch.autograd.grad` after one with ``create_graph=True``,
    as HVP's is, counted as the rows of the forward it differentiates again), and ``final_norm`` forwards (partial forwards too: ACDC's prefix path). Per
    prompt is the slope between two batch sizes after a warm-up run, so once-per-run and
    once-per-model probe forwards drop out."""

    def __init__(self, model, monkeypatch):
        self.rows = dict.fromkeys(("forwards", "backwards", "double_backwards", "final_norm"), 0)
        self._pending, self._b, self._last_rows = False, 1, 0
        model.blocks[0].register_forward_hook(self._first_block)
        model.ln_final.register_forward_hook(self._final_norm)
        grad = torch.autograd.grad

        def counted_grad(outputs, inputs, *a, **kw):
            if kw.get("create_graph"):
                self._pending = True
            elif self._pending:     # as many rows as the forward whose graph it differentiates again
                self.rows["double_backwards"] += self._last_rows
                self._pending = False
            return grad(outputs, inputs, *a, **kw)

        monkeypatch.setattr(torch.autograd, "grad", counted_grad)

    def _first_block(self, mod, inp, out):
        self._last_rows = (out[0] if isinstance(out, tuple) else out).shape[0]
        self.rows["forwards"] += self._last_rows

    def _final_norm(self, mod, inp, out):
        self.rows["final_norm"] += out.shape[0]
        if out.requires_grad:
            rows = out.shape[0]

            def back(g):
                self.rows["backwards"] += rows
            out.register_hook(back)

    def per_prompt(self, run, sizes=(2, 4)) -> dict:
        """Rows per prompt of ``run(batch)``: the slope between batches of `sizes` prompts."""
        run(random_batch(B=sizes[0], seed=5))      # warm-up: once-per-model probes (cached) happen here
        got = []
        for b in sizes:
            self.rows = dict.fromkeys(self.rows, 0)
            self._b = b
            run(random_batch(B=b, seed=5))
            got.append(dict(self.rows))
        return {k: (got[1][k] - got[0][k]) / (sizes[1] - sizes[0]) for k in got[0]}


def passes(counted: dict) -> C.Passes:
    return C.Passes(counted["forwards"], counted["backwards"], counted["double_backwards"])


@pytest.fixture
def fresh(model):
    """The session model with its counting hooks removed afterwards."""
    yield model
    model.blocks[0]._forward_hooks.clear()
    model.ln_final._forward_hooks.clear()


@pytest.mark.parametrize("method,steps", [("eap", 1), ("eap_ig", 3), ("eap_ig", 5), ("eap_ig_kl", 3), ("eap_ig_activations", 2),
                                          ("eap_gp", 3)])
def test_gradient_methods_run_the_passes_the_model_counts(fresh, monkeypatch, method, steps):
    g = Graph.from_model(fresh)
    counter = Counter(fresh, monkeypatch)
    got = passes(counter.per_prompt(lambda b: attribute(fresh, b, method=method, graph=g,
                                                        **({"steps": steps} if method != "eap" else {}))))
    assert got == C.method_passes(method, steps=steps, n_layers=g.n_layers, has_mlps=True)
    if method != "eap":   # negative control: one step more is another count
        assert C.method_passes(method, steps=steps + 1, n_layers=g.n_layers) != got


def test_hvp_runs_one_forward_backward_and_double_backward_per_component(fresh, monkeypatch):
    g = Graph.from_model(fresh)
    counter = Counter(fresh, monkeypatch)
    got = passes(counter.per_prompt(lambda b: attribute(fresh, b, method="hvp", graph=g)))
    assert got == C.method_passes("hvp", hvp_components=g.n_edges)
    assert got.double_backwards > 0


def test_exact_patching_is_one_forward_per_edge_plus_the_cached_runs(fresh, monkeypatch):
    """The reference path (no prefix/window reuse): exactly the model's count; the default path
    runs as many patched rows, each cheaper: the model is an upper bound."""
    g = Graph.from_model(fresh)
    counter = Counter(fresh, monkeypatch)
    got = passes(counter.per_prompt(lambda b: Patcher(fresh, g, b, prefix=False, window=False).edge_effects()))
    assert got == C.method_passes("exact", n_edges=g.n_edges)


def test_acdc_sweep_is_bounded_by_every_edge_once_per_threshold(attn_model, monkeypatch):
    g = Graph.from_model(attn_model)
    taus = [1e-3, 3e-2, 3e-1]
    counter = Counter(attn_model, monkeypatch)
    try:
        got = counter.per_prompt(lambda b: acdc_sweep(attn_model, g, b, taus, progress=False))["final_norm"]
    finally:
        attn_model.blocks[0]._forward_hooks.clear()
        attn_model.ln_final._forward_hooks.clear()
    bound = C.method_passes("acdc", n_edges=g.n_edges, taus=len(taus)).forwards
    assert len(taus) < got <= bound


def test_forward_flops_scale_with_the_shape():
    small, _, _ = C.model_shape("gpt2")
    xl, _, _ = C.model_shape({"pretrained": "gpt2-xl"})
    # GPT-2 small: ~124M parameters, so ~2 x 124M FLOPs per token (plus attention) at short prompts
    assert 2 * 85e6 * 24 < C.forward_flops(small, 24) < 2 * 130e6 * 24 * 1.2
    assert C.forward_flops(xl, 24) > 10 * C.forward_flops(small, 24)
    with pytest.raises(ValueError, match="no shape for model"):
        C.model_shape("tiny-gpt2")
    # the tiny trained models by their training config, random specs with their own dimensions
    tiny, heads, mlps = C.model_shape({"train": "tiny-gpt2", "steps": 30})
    assert (tiny.n_layers, tiny.d_model, heads, mlps) == (3, 64, 4, True)
    narrow, heads, _ = C.model_shape({"random": "gpt2", "n_embd": 48})
    assert (narrow.n_layers, narrow.d_model, heads) == (12, 48, 12)
    with pytest.raises(ValueError, match="no pass count"):
        C.method_passes("atp")


def test_paper_profile_shard_counts_are_the_cost_models():
    """config/paper.yaml's shards are what the cost model needs (no fewer: a shard over an hour;
    no more: jobs for nothing), at the assumed GPU throughput."""
    cfg = load_profile("paper", root=ROOT)
    rows = C.profile_costs(cfg)
    assert {r["experiment"] for r in rows} == set(C.PRICED)
    res = cfg["resources"]
    for r in rows:
        assert r["set_shards"] == r["needed_shards"], r
        assert r["split_gpu_h"] > 0 and r["whole_gpu_h"] > 0
        assert r["gpu_h_per_shard"] <= C.SHARD_HOURS, r            # no shard job over the hour
        # each shard job asks SLURM for at least the model's estimate of its time
        assert res[f"{r['experiment']}_shard"]["runtime"] >= 60 * r["gpu_h_per_shard"], (r, res)
        if r["kind"] == "runs":     # one shard fewer and the longest shard is over the hour: no job for nothing
            c = C.experiment_cost(cfg, r["experiment"])
            assert c.shard_hours(r["set_shards"] - 1) > C.SHARD_HOURS
    # the model follows the work: twice the prompts, twice the split hours
    spec = cfg["experiments"]["eapig_faith"]
    spec["n_by_task"] = {t: 2 * n for t, n in spec["n_by_task"].items()}
    doubled = {r["experiment"]: r for r in C.profile_costs(cfg)}["eapig_faith"]
    assert doubled["split_gpu_h"] == pytest.approx(2 * {r["experiment"]: r for r in rows}["eapig_faith"]["split_gpu_h"])


def test_acdc_runs_are_the_sweeps_runs_and_price_them_like_one_sweep():
    """eap_roc's runs are task x ACDC metric x tau, eap_acdc's task x keep fraction (1.0 added) x
    tau, in that order; together they cost what the sweeps cost (one `method_passes("acdc")` per
    run), and a keep fraction's runs cost that fraction of plain ACDC's edges."""
    cfg = load_profile("paper", root=ROOT)
    roc = C.acdc_runs(cfg, "eap_roc")
    spec = cfg["experiments"]["eap_roc"]
    assert len(roc) == len(spec["tasks"]) * 2 * spec["taus"]["n"]
    assert [k for (k, _), _ in roc[:2]] == ["ioi/acdc_task"] * 2 and roc[spec["taus"]["n"]][0][0] == "ioi/acdc_kl"
    shape, heads, mlps = C.model_shape("gpt2")
    g = Graph(shape.n_layers, heads, has_mlps=mlps)
    from attrpatch.qkv_direct import n_edges_with_direct
    one = C.method_passes("acdc", n_edges=n_edges_with_direct(g)).forward_equivalents * C.forward_flops(shape) * spec["n"]
    assert roc[0][1] == pytest.approx(one)
    acdc = C.acdc_runs(cfg, "eap_acdc")
    keys = [k for k, _, _ in C.acdc_keys(cfg["experiments"]["eap_acdc"], "eap_acdc")]
    assert keys[:6] == ["ioi/f=0.01", "ioi/f=0.02", "ioi/f=0.05", "ioi/f=0.1", "ioi/f=0.2", "ioi/f=1"]
    by_key = {k: f for (k, _), f in acdc}
    assert by_key["ioi/f=0.1"] == pytest.approx(0.1 * by_key["ioi/f=1"], rel=1e-3)
    assert by_key["ioi/f=1"] == pytest.approx(one)
    with pytest.raises(ValueError, match="no ACDC runs in experiment 'hvp'"):
        C.acdc_keys({}, "hvp")


def test_hvp_study_runs_the_passes_the_model_counts(fresh, monkeypatch):
    """The HVP study (`analysis.hvp_study.second_order_study`) on a tiny model: its backward and
    double-backward rows are the model's count; its forwards at most the model's (exact
    patching's prefix path runs part of a forward) and more than the model without exact
    patching (negative control: a study with one K less is another count)."""
    from attrpatch.analysis.hvp_study import second_order_study
    g = Graph.from_model(fresh)
    ks, n_top, n_random = [1, 2], 2, 2
    counter = Counter(fresh, monkeypatch)
    got = counter.per_prompt(lambda b: second_order_study(fresh, g, b, ks=ks, threshold=0.5, n_top=n_top,
                                                          n_random=n_random, ig_rule="midpoint", seed=0))
    want = C.hvp_study_passes(ks, n_top + n_random)
    assert (got["backwards"], got["double_backwards"]) == (want.backwards, want.double_backwards), (got, want)
    exact = C.method_passes("exact", n_edges=n_top + n_random).forwards
    assert want.forwards - exact < got["forwards"] <= want.forwards, (got, want)
    assert C.hvp_study_passes([1], n_top + n_random).backwards != got["backwards"]


def test_readme_cost_table_is_the_cost_models():
    """README's GPU-hours table was copied from `python -m attrpatch.repro.cost --profile paper`:
    each row's numbers are the model's, rounded as printed (a changed config or cost rule that is
    not re-rendered there fails here)."""
    import re

    rows = {r["experiment"]: r for r in C.profile_costs(load_profile("paper", root=ROOT))}
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if re.match(r"\| (\w+) \(", ln)]
    table = {ln.split()[1]: [c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.split()[1] in rows}
    assert set(table) == set(rows), sorted(table)
    for exp, cells in table.items():
        r = rows[exp]
        assert cells[2:] == [f"{r['split_gpu_h']:.2f}", f"{r['whole_gpu_h']:.2f}", str(r["set_shards"]),
                             f"{r['gpu_h_per_shard']:.2f}"], (exp, cells)
