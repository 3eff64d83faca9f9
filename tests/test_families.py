"""Model families: the graph read from each family's block structure, checked exactly.

Every family is a random tiny Hugging Face checkpoint written offline (`save_random_family`,
no tokenizer: token ids in, token ids out) and loaded with `load_model`. Per family (the
issue's list): (a) EAP == exact patching on the edges into logits with the final norm's
scale frozen (the linear case); (b) EAP == a central finite difference for an edge into a
key or value input; (c) the edge contributions into every input sum to its input
difference; (d) the edge count is the closed form; (e) parallel blocks have no edge from a
layer's heads into its own MLP, and patching those heads leaves that MLP's output unchanged.

Gemma 2 (post-attention norms, `post_norm`): (a) also freezes every ``ln1_post`` scale and
uses a checkpoint without the final logit soft-cap (both make the metric nonlinear in the
logits' edges); (b) adds edges from heads (scored through the norm's Jacobian); (c) is
"patching every edge gives the corrupted run, patching none the clean run", since a head's
contribution to an input is no longer its own output.

The EAP-IG (activations) and EAP-GP columns check each method's scores against plain-autograd
identities at its own path points and against EAP or exact patching (`_check_eap_ig_activations`,
`_check_eap_gp`); on Gemma 2 those identities see the head rows through the norm.

`SUPPORT` is the README's support table: each cell other than the attention kind names the
test that measures it (`test_support_cell`, parametrized by family and column), and
`test_readme_table_is_the_matrix` keeps README's table equal to it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from attrpatch.activations import capture_inputs, capture_outputs, frozen_hooks, input_gradients
from attrpatch.graph import Graph, GraphUnsupported, closed_form_edge_count
from attrpatch.methods.eap import eap_scores
from attrpatch.metrics import task_metric
from attrpatch.models import load_model
from attrpatch.models.random import save_random_family
from attrpatch.patching import Patcher, node_effects
from attrpatch.post_norm import PostNormUnsupported

from conftest import random_batch

V = 64
ROOT = Path(__file__).resolve().parents[1]

# family -> README row. "yes" cells are measured by test_support_cell; "no: ..." cells by the
# refusal they describe (also measured).
SUPPORT = {
    "gpt2":                ("GPT-2", "MHA, sequential"),
    "gpt-neox":            ("GPTNeoX (Pythia default)", "MHA, parallel"),
    "gpt-neox-sequential": ("GPTNeoX, use_parallel_residual=False", "MHA, sequential"),
    "llama":               ("Llama", "MHA, sequential"),
    "llama-gqa":           ("Llama", "GQA 4q/2kv, sequential"),
    "mistral":             ("Mistral", "GQA 4q/2kv, sequential"),
    "qwen2":               ("Qwen2", "GQA 4q/2kv, sequential"),
    "gemma2":              ("Gemma 2", "GQA 4q/2kv, post-norms"),
    "gemma2-ungrouped":    ("Gemma 2, kv_convention=ungrouped (MIB)", "GQA 4q/2kv, post-norms"),
    "gptj":                ("GPT-J", "MHA, parallel"),
}
COLUMNS = ("EAP", "EAP-IG", "EAP-IG (activations)", "EAP-GP", "exact", "ACDC", "AtP*", "HVP")
REFUSED = {
    "gptj": (GraphUnsupported, r"GPTJForCausalLM: transformer_lens cannot split"),
}
# AtP*'s QK fix recomputes softmax(q k^T / sqrt(d_head)) from the q/k hooks: refused (named)
# where the model rotates q and k after those hooks.
ATP_REFUSED = {"gpt-neox", "gpt-neox-sequential", "llama", "llama-gqa", "mistral", "qwen2", "gemma2",
               "gemma2-ungrouped"}
# Methods whose patches or gradients assume additive head outputs: refused (PostNormUnsupported)
# on a post-attention norm (`attrpatch.post_norm`).
POST_NORM = {"gemma2", "gemma2-ungrouped"}
POST_NORM_REFUSED: set[str] = set()   # none of the columns since HVP took the norm (tl_eap is no column)
# a family loaded with a kv convention other than the default, and its checkpoint family
LOAD_AS = {"gemma2-ungrouped": ("gemma2", "ungrouped")}


def cell(family: str, column: str) -> str:
    if family in REFUSED:
        return "refused"
    if column == "AtP*" and family in ATP_REFUSED:
        return "no (GQA)" if "GQA" in SUPPORT[family][1] else "no (rotary)"
    if family in POST_NORM and column in POST_NORM_REFUSED:
        return "no (post-norm)"
    return "yes"


# Gemma 2's final logit soft-cap (tanh) makes the logits nonlinear in the final residual: the
# linear case (a) uses a checkpoint without it
LINEAR_OVERRIDES = {"gemma2": {"final_logit_softcapping": None}}


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    made = {}

    def make(family, linear=False):
        key = (family, linear)
        if key not in made:
            over = LINEAR_OVERRIDES.get(family) if linear else None
            made[key] = save_random_family(family, tmp_path_factory.mktemp(family), vocab_size=V, seed=7,
                                           config_overrides=over)
        return made[key]
    return make


@pytest.fixture(scope="module")
def family_model(family_dir):
    loaded = {}

    def get(family, linear=False):
        ckpt, conv = LOAD_AS.get(family, (family, "grouped"))
        linear = linear and ckpt in LINEAR_OVERRIDES
        if (family, linear) not in loaded:
            loaded[(family, linear)] = load_model(family_dir(ckpt, linear), dtype=torch.float64, kv_convention=conv)
        return loaded[(family, linear)]
    return get


SERVED = [f for f in SUPPORT if f not in REFUSED]


# transformer_lens 4.3 computes these families' rotary embedding and attention softmax in
# float32 even in a float64 model (generalized_components/position_embeddings_attention.py),
# so a finite difference of them is good to ~1e-6 of the metric, not ~1e-12: their
# derivative check uses that tolerance.
FLOAT32_ATTENTION = {"llama", "llama-gqa", "mistral", "qwen2", "gemma2", "gemma2-ungrouped"}
# (Gemma 2's norms are Hugging Face's Gemma2RMSNorm, which also computes in float32.)
# The same families by architecture (`Graph.family`), for the checks that see only the model: two
# autograd routes to one gradient (a score callback vs a plain backward) agree to float32
# rounding there, which cancellation in a sum of edge scores can lift to ~1e-6 of it.
FLOAT32_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Gemma2ForCausalLM"}


def _autograd_tol(g) -> dict:
    return dict(rel=1e-5, abs=1e-8) if g.family in FLOAT32_ARCHS else dict(rel=1e-9, abs=1e-12)


def _coeffs(p: Patcher, u: int, v: int, scale: int = 1024, degree: int = 4) -> list[float]:
    """Taylor coefficients at 0 of alpha -> metric(in_v += alpha * diff_u): a polynomial of
    `degree` fitted to 21 points alpha = k / scale, |k| <= 10 (exact in float32, the patch
    masks' dtype), all in one stacked forward; the fit averages out rounding noise that a
    two-point difference would amplify."""
    alphas = torch.arange(-10, 11, dtype=torch.float64) / scale
    y = p.interpolate_edge(u, v, alphas.tolist()).double()
    X = torch.stack([alphas ** k for k in range(degree + 1)], 1)
    return torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()


def _slope(p: Patcher, u: int, v: int) -> float:
    """d metric / d alpha at 0 (`_coeffs`)."""
    return _coeffs(p, u, v)[1]


def _batch(seed=3):
    return random_batch(B=3, P=5, V=V, seed=seed)


def _direct(g):
    return g.edge_index[torch.tensor([i for i, n in enumerate(g.edge_names) if n.endswith("->logits")])]


# ---- the checks (a)-(e), per family -----------------------------------------------
@pytest.mark.parametrize("family", SERVED)
def test_family_exactness(family, family_model):
    model = family_model(family)
    g = Graph.from_model(model)
    b = _batch()
    # (d) edge count == closed form, with the family's kv heads and block kind read from the model
    assert g.n_edges == closed_form_edge_count(g.n_layers, g.n_heads, g.has_mlps, g.n_kv_heads, g.parallel_blocks,
                                               g.kv_convention)
    assert g.n_kv_heads == (2 if "GQA" in SUPPORT[family][1] else 4)
    assert g.parallel_blocks == ("parallel" in SUPPORT[family][1])
    assert g.post_attn_norm == (family in POST_NORM)
    # (a) EAP == exact patching on edges into logits with the final norm's scale (and every
    # post-attention norm's) frozen
    lin = family_model(family, linear=True)
    norms = ["ln_final.hook_scale"] + [f"blocks.{l}.ln1_post.hook_scale" for l in range(g.n_layers) if g.post_attn_norm]
    hooks = frozen_hooks(lin, b.clean, norms)
    direct = _direct(g)
    exact = Patcher(lin, g, b, extra_hooks=hooks).edge_effects(direct)
    eap = eap_scores(lin, g, b, extra_hooks=hooks)[direct[:, 0], direct[:, 1]]
    assert exact.abs().max() > 1e-3, "the check needs edges with real effects"
    torch.testing.assert_close(eap, exact, rtol=1e-8, atol=1e-11)
    # (b) EAP == finite difference for random edges into key and value inputs (where GQA broke),
    # and, behind a post-attention norm, from heads into any later input
    scores = eap_scores(model, g, b)
    p = Patcher(model, g, b)
    rng = torch.Generator().manual_seed(0)
    kv = g.edge_index[[i for i, n in enumerate(g.edge_names) if n.endswith(("<k>", "<v>"))]]
    picked = kv[torch.randperm(len(kv), generator=rng)[:4]].tolist()
    if g.post_attn_norm:
        heads = g.edge_index[[i for i, n in enumerate(g.edge_names) if n.startswith("a")]]
        picked += heads[torch.randperm(len(heads), generator=rng)[:6]].tolist()
    rtol, atol = (1e-4, 1e-5) if family in FLOAT32_ATTENTION else (1e-6, 1e-10)
    for u, v in picked:
        assert scores[u, v].item() == pytest.approx(_slope(p, u, v), rel=rtol, abs=atol), \
            f"{g.upstream[u]}->{g.downstream[v]}"
    if g.post_attn_norm:
        # (c) a head's contribution is no longer its own output, so the check is on the patch:
        # patching every edge into the logits (nothing else) gives the corrupted run's logits, each
        # layer's heads entering through its norm at their corrupted sum; every edge / none give
        # the corrupted / clean run (tests/test_gemma2.py: an additive patch fails the first)
        into_logits = torch.zeros(g.n_up, g.n_down, dtype=torch.float64)
        into_logits[:, g.down_index("logits")] = 1.0
        masks = torch.stack([into_logits, g.edge_mask.double(), torch.zeros(g.n_up, g.n_down, dtype=torch.float64)])
        got = p.metric_of_masks(masks, per_example=True)
        corrupt = p.metric(model(b.corrupt))
        torch.testing.assert_close(got[0], corrupt, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(got[1], corrupt, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got[2], p.base_values, rtol=0, atol=0)
        return
    # (c) sum of edge contributions into every input == its input difference
    _, zc = capture_outputs(model, g, b.clean)
    _, zx = capture_outputs(model, g, b.corrupt)
    din = capture_inputs(model, g, b.corrupt) - capture_inputs(model, g, b.clean)
    torch.testing.assert_close(torch.einsum("uv,bpud->bpvd", g.edge_mask.to(zc.dtype), zx - zc), din,
                               rtol=1e-7, atol=1e-9)
    grads = input_gradients(model, g, b.clean, task_metric(b)).input_grads
    torch.testing.assert_close(scores.sum(0), torch.einsum("bpvd,bpvd->v", din, grads), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("family", [f for f in SERVED if "parallel" in SUPPORT[f][1]])
def test_parallel_block_heads_do_not_feed_own_mlp(family, family_model):
    """(e) No edge a{l}.h -> m{l}; replacing every head of layer l leaves m{l}'s output unchanged
    (and does change m{l+1}'s: the control)."""
    model = family_model(family)
    g = Graph.from_model(model)
    for l in range(g.n_layers):
        assert not [e for e in g.edge_names if e.startswith(f"a{l}.h") and e.endswith(f"->m{l}")]
        assert f"a{l}.h0->m{l + 1}" in g.edge_names or l == g.n_layers - 1
    b = _batch(seed=5)
    _, zx = capture_outputs(model, g, b.corrupt)
    heads0 = [g.up_index(f"a0.h{h}") for h in range(g.n_heads)]
    override = {u: (lambda t, u=u: zx[:, :, u].to(t.dtype)) for u in heads0}
    from attrpatch.activations import output_override_hooks
    _, base = capture_outputs(model, g, b.clean)
    _, patched = capture_outputs(model, g, b.clean, extra_hooks=output_override_hooks(g, override))
    m0, m1 = g.up_index("m0"), g.up_index("m1")
    assert torch.equal(patched[:, :, m0], base[:, :, m0])
    assert (patched[:, :, m1] - base[:, :, m1]).abs().max() > 1e-4


def test_sequential_block_keeps_head_to_mlp_edges(family_model):
    """The negative control of (e): a sequential block's MLP does read its layer's heads."""
    g = Graph.from_model(family_model("gpt-neox-sequential"))
    assert "a0.h0->m0" in g.edge_names and not g.parallel_blocks


@pytest.mark.parametrize("family", list(REFUSED))
def test_refused_family_names_itself(family, family_model):
    """A family the graph cannot serve loads, then fails at Graph.from_model, naming the family
    and what is missing (never a shape error inside a method)."""
    err, pattern = REFUSED[family]
    model = family_model(family)
    with pytest.raises(err, match=pattern):
        Graph.from_model(model)


# ---- GQA: the convention, its counts, and its node ownership ------------------------------
@pytest.mark.parametrize("L,H,G,mlp,par", [(1, 4, 2, True, False), (3, 8, 2, True, False), (2, 8, 1, False, False),
                                           (4, 6, 3, True, True), (12, 12, 12, True, False), (8, 16, 4, True, False)])
def test_gqa_and_parallel_edge_counts(L, H, G, mlp, par):
    g = Graph(L, H, has_mlps=mlp, n_kv_heads=G, parallel_blocks=par)
    assert g.n_edges == closed_form_edge_count(L, H, mlp, G, par) == len(set(g.edge_names))
    # brute force, independent of both: parents of every input counted from the topology
    n = 0
    for l in range(L):
        n_l = 1 + l * (H + int(mlp))
        n += (H + 2 * G) * n_l + ((n_l + (0 if par else H)) if mlp else 0)
    assert g.n_edges == n + 1 + L * (H + int(mlp))


def test_gqa_inputs_are_shared_by_the_group():
    g = Graph(2, 4, n_kv_heads=2)
    assert g.downstream[:8] == ["a0.h0<q>", "a0.h1<q>", "a0.h2<q>", "a0.h3<q>",
                                "a0.kv0<k>", "a0.kv1<k>", "a0.kv0<v>", "a0.kv1<v>"]
    assert g.node_inputs("a0.h3") == [g.down_index(n) for n in ("a0.h3<q>", "a0.kv1<k>", "a0.kv1<v>")]
    assert g.receiver_nodes(g.down_index("a1.kv0<v>")) == ["a1.h0", "a1.h1"]
    with pytest.raises(ValueError, match="shared by"):
        g.receiver_node(g.down_index("a1.kv0<v>"))
    with pytest.raises(ValueError, match="divide n_heads"):
        Graph(2, 4, n_kv_heads=3)


def test_gqa_circuits_keep_a_shared_input_while_any_owner_lives():
    """prune/greedy/ACDC see a kv input as alive when any head of its group is: a circuit
    input -> a0.kv0<k>, a0.h1 -> logits (head 0 of the group unused) keeps the kv edge."""
    from attrpatch.circuits.select import greedy, prune
    g = Graph(1, 4, has_mlps=False, n_kv_heads=2)
    m = g.edge_set_mask(["input->a0.kv0<k>", "input->a0.h1<q>", "a0.h1->logits"])
    assert torch.equal(prune(m, g), m)
    m2 = g.edge_set_mask(["input->a0.kv0<k>", "a0.h2->logits", "input->a0.h2<q>"])
    assert not prune(m2, g)[g.edge("input->a0.kv0<k>")]   # kv0 belongs to h0, h1 only
    s = torch.zeros(g.n_up, g.n_down, dtype=torch.float64)
    s[g.edge("a0.h0->logits")] = s[g.edge("a0.h1->logits")] = 3.0
    s[g.edge("input->a0.kv0<k>")] = 2.0
    sel = greedy(s, g, g.n_edges)
    assert int(sel.sum()) == g.n_edges                       # every edge once, shared input not doubled


# ---- the support table --------------------------------------------------------------------
def _linear(model, b):
    return frozen_hooks(model, b.clean, ["ln_final.hook_scale"])


def _check_eap_ig(model, g, b):
    """IG completeness on the cut {edges out of `input`} (tests/test_eap_ig.py): the row sums of
    the paper (right end) and library (left end) points bracket a Riemann sum of the exact
    effect of patching the cut; their mean (the trapezoid rule) is closer than either."""
    from attrpatch.methods.eap_ig import eap_ig_scores
    exact = float(Patcher(model, g, b).node_effects_by_edges([0])[0])
    right = float(eap_ig_scores(model, g, b, steps=8)[0].sum())
    left = float(eap_ig_scores(model, g, b, steps=8, points="library")[0].sum())
    trap = 0.5 * (left + right)
    assert abs(exact) > 1e-3
    assert abs(trap - exact) < min(abs(right - exact), abs(left - exact))
    assert abs(trap - exact) < 0.05 * abs(exact)
    if g.post_attn_norm:
        # head rows go through the norm's Jacobian at each path point: the path's ends are EAP's
        # gradient runs, on the clean prompt (k = m) and on the corrupted one (k = 0, sign flipped)
        torch.testing.assert_close(eap_ig_scores(model, g, b, steps=1), eap_scores(model, g, b),
                                   rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(eap_ig_scores(model, g, b, steps=1, points="library"),
                                   -eap_scores(model, g, b, direction="clean_into_corrupt"), rtol=1e-7, atol=1e-10)


def _component_path(model, g, b, comp, alphas):
    """f(a) = mean metric of the clean run with component `comp`'s outputs set to
    a z(clean) + (1 - a) z(corrupt), and f'(a), by autograd through a differentiable a
    (independent of the score callback and of any tape)."""
    from attrpatch.activations import output_override_hooks
    _, z_clean = capture_outputs(model, g, b.clean)
    _, z_corrupt = capture_outputs(model, g, b.corrupt)
    metric = task_metric(b)
    out = []
    for a in alphas:
        alpha = torch.tensor(float(a), dtype=torch.float64, requires_grad=True)
        override = {u: (lambda cur, u=u: (alpha * z_clean[:, :, u] + (1 - alpha) * z_corrupt[:, :, u]).to(cur.dtype))
                    for u in comp}
        with torch.enable_grad():
            f = metric(model.run_with_hooks(b.clean, fwd_hooks=output_override_hooks(g, override))).mean()
            (df,) = torch.autograd.grad(f, alpha)
        out.append((f.item(), df.item()))
    return out


def _check_eap_ig_activations(model, g, b):
    """EAP-IG on activations (tests/test_eap_ig.py's checks, per family). Scope "own" at m = 1
    (every component set to its clean value) is EAP exactly; the library's scope "all" agrees
    with EAP on the edges into the logits. Scope "own", m = 2 (the identity holds at any m): the edges out of each component
    c sum to -mean_k f_c'(k/m), f_c(a) the metric with c's outputs interpolated (`_component_path`,
    plain autograd), and f_c(0) - f_c(1) is exact patching of every edge out of c: the scores
    are a Riemann sum of that exact effect. Behind a post-attention norm a layer's heads enter
    every receiver through the norm, at each pass's own norm input."""
    from attrpatch.methods.eap_ig import components, eap_ig_scores, ig_alphas
    eap = eap_scores(model, g, b)
    act = dict(variant="activations", activation_scope="own")
    torch.testing.assert_close(eap_ig_scores(model, g, b, steps=1, **act), eap, rtol=1e-10, atol=1e-13)
    lib = eap_ig_scores(model, g, b, steps=1, variant="activations")
    logits = g.down_index("logits")
    torch.testing.assert_close(lib[:, logits], eap[:, logits], rtol=1e-10, atol=1e-13)
    assert (lib - eap).abs().max() > 1e-4, "scope 'all' cuts paths through each overridden component"
    m = 2
    own = eap_ig_scores(model, g, b, steps=m, **act)
    p = Patcher(model, g, b)
    for comp in components(g):
        path = _component_path(model, g, b, comp, [0.0, 1.0] + ig_alphas(m))
        (f0, _), (f1, _) = path[:2]
        mask = torch.zeros(g.n_up, g.n_down)
        mask[comp] = g.edge_mask[comp].float()
        exact = float(p.metric_of_masks(mask)[0]) - p.base_value
        assert abs(exact) > 1e-3, comp
        assert f0 - f1 == pytest.approx(exact, **_autograd_tol(g)), comp
        riemann = -sum(df for _, df in path[2:]) / m
        assert float(own[comp].sum()) == pytest.approx(riemann, **_autograd_tol(g)), comp


def _check_eap_gp(model, g, b):
    """EAP-GP (tests/test_eap_gp.py's checks, per family). Every upstream node's scores sum to
    diff_u . mean_j d metric / d z_u at the path points, computed here with plain autograd at the
    points `grad_path` gives (not the fused scoring run; behind a post-attention norm the head
    rows then check the norm's Jacobian summed over receivers); and as the step shrinks every
    point is the clean input, so every edge's score is EAP's (the Jacobian per receiver)."""
    from attrpatch.methods.common import PathContext
    from attrpatch.methods.eap_gp import eap_gp_scores, grad_path
    k = 3
    s = eap_gp_scores(model, g, b, steps=k)
    metric = task_metric(b)
    ctx = PathContext(model, g, b, metric, "corrupt_into_clean")
    rows = torch.zeros(g.n_up, dtype=torch.float64)
    for gamma, _ in grad_path(model, ctx, k):
        og = input_gradients(model, g, b.clean, metric, embed_override=gamma, want_output_grads=True).output_grads
        rows += torch.einsum("bpud,bpud->u", ctx.diff.double(), og.double()) / k
    assert rows.abs().max() > 1e-3
    tol = _autograd_tol(g)
    torch.testing.assert_close(s.sum(1), rows, rtol=tol["rel"], atol=tol["abs"])
    eap = eap_scores(model, g, b)
    torch.testing.assert_close(eap_gp_scores(model, g, b, steps=k, step_size=1e-7), eap, rtol=1e-4, atol=2e-6)
    assert (s - eap).abs().max() > 1e-3


def _check_exact(model, g, b):
    """Patching a node = patching all its outgoing edges (two code paths)."""
    by_edges = Patcher(model, g, b).node_effects_by_edges()
    at_output = node_effects(model, g, b)
    assert at_output.abs().max() > 1e-4
    torch.testing.assert_close(by_edges, at_output, rtol=1e-7, atol=1e-9)


def _check_acdc(model, g, b):
    """ACDC's reported final loss is the patched loss of the circuit it returns (before dead-node
    pruning), and its circuit is a subgraph that exact patching evaluates."""
    from attrpatch.methods.acdc import acdc
    last = [i for i, n in enumerate(g.downstream) if n == "logits" or n.startswith(f"a{g.n_layers - 1}.")]
    start = g.edge_mask.clone()
    start[:, [i for i in range(g.n_down) if i not in last]] = False   # a small start keeps it quick
    res = acdc(model, g, b, tau=1e-3, metric="task", edges=start)
    p = Patcher(model, g, b)
    loss = -float(p.metric_of_masks((g.edge_mask & ~res.raw_mask).double())[0])
    assert loss == pytest.approx(res.loss_final, rel=1e-9, abs=1e-12)
    assert 0 < res.n_edges < int(start.sum())


def _check_atp_star(model, g, b):
    from attrpatch.methods.atp import atp_qk_fix_node_scores, atp_star_node_scores
    s = atp_star_node_scores(model, g, b)
    assert s.shape == (g.n_up,) and bool(torch.isfinite(s).all()) and bool((s >= 0).all())
    atp_qk_fix_node_scores(model, g, b)   # checks the recomputed pattern against the model's


def _check_hvp(model, g, b):
    """HVP's second-order term == half the second derivative of exact patching (a polynomial
    fit), for edges into key and value inputs; behind a post-attention norm also for edges from
    heads (the patch then moves the receiver through the norm: its curvature is in the term)."""
    from attrpatch.methods.hvp import hvp_scores
    kv = [n for n in g.edge_names if n.endswith(("<k>", "<v>")) and n.startswith("input")][:2]
    if g.post_attn_norm:
        kv += ["a0.h1->a1.h2<v>" if "a0.h1->a1.h2<v>" in g.edge_names else "a0.h1->a1.kv1<v>", "a0.h3->m1",
               "a1.h2->logits", "a0.h0->m0"]
    res = hvp_scores(model, g, b, edges=kv)
    p = Patcher(model, g, b)
    for i, name in enumerate(kv):
        c = _coeffs(p, *g.edge(name), scale=64, degree=6)
        assert float(res.first_order[i]) == pytest.approx(c[1], rel=1e-3, abs=1e-5), name
        assert float(res.second_order_term[i]) == pytest.approx(c[2], rel=2e-2, abs=1e-4), name


# The EAP column is measured by test_family_exactness (a)-(d).
CHECKS = {"EAP-IG": _check_eap_ig, "EAP-IG (activations)": _check_eap_ig_activations, "EAP-GP": _check_eap_gp,
          "exact": _check_exact, "ACDC": _check_acdc, "AtP*": _check_atp_star,
          "HVP": _check_hvp}


@pytest.mark.parametrize("family,column", [(f, c) for f in SERVED for c in COLUMNS if c != "EAP"],
                         ids=lambda x: x)
def test_support_cell(family, column, family_model):
    model = family_model(family)
    g = Graph.from_model(model)
    b = _batch(seed=11)
    if cell(family, column) == "yes":
        CHECKS[column](model, g, b)
    elif cell(family, column) == "no (post-norm)":
        with pytest.raises(PostNormUnsupported, match="post-attention norm"):
            CHECKS[column](model, g, b)
    else:
        with pytest.raises(RuntimeError, match="rotary embedding after them|kv heads for"):
            CHECKS[column](model, g, b)


def render_table() -> str:
    head = "| family (HF class) | attention, block | " + " | ".join(COLUMNS) + " |"
    rows = [head, "|" + " --- |" * (2 + len(COLUMNS))]
    for f, (name, kind) in SUPPORT.items():
        rows.append(f"| {name} | {kind} | " + " | ".join(cell(f, c) for c in COLUMNS) + " |")
    return "\n".join(rows)


def test_readme_table_is_the_matrix():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- support-table:start -->\n(.*?)\n<!-- support-table:end -->", text, re.S)
    assert m, "README lacks the support table markers"
    assert m.group(1).strip() == render_table(), "README's support table drifted: paste render_table()"


# ---- loading with and without a tokenizer; the command line on a GQA checkpoint -----------
@pytest.mark.parametrize("with_tokenizer", [False, True], ids=["ids-only", "tokenizer"])
def test_score_cli_on_llama_gqa_checkpoint(tmp_path, with_tokenizer, capsys):
    """`attrpatch score --model DIR` on a Llama-style GQA checkpoint: without a tokenizer (token
    ids in, token ids out: tasks use the toy vocabulary's ids) and with one saved beside it."""
    from attrpatch.cli import main
    import pandas as pd
    from attrpatch.tasks.vocab import toy_tokenizer

    tok = toy_tokenizer()
    d = save_random_family("llama-gqa", tmp_path / "ckpt", vocab_size=len(tok), seed=1,
                           tokenizer=tok.to_hf() if with_tokenizer else None)
    model = load_model(d)
    assert (model.attrpatch_tokenizer is None) != with_tokenizer
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(d), "--task", "ioi", "--n", "4", "--out", str(out), "--top", "3"]) == 0
    df = pd.read_csv(out)
    g = Graph.from_model(model)
    assert len(df) == g.n_edges == closed_form_edge_count(2, 4, True, 2)
    assert "input->a0.kv1<v>" in set(df["edge"]) and df["score"].abs().max() > 0


def test_graph_cli_counts_gqa_and_parallel(capsys):
    import json as _json

    from attrpatch.cli import main
    assert main(["graph", "--layers", "32", "--heads", "32", "--kv-heads", "8"]) == 0
    assert _json.loads(capsys.readouterr().out)["n_edges"] == closed_form_edge_count(32, 32, True, 8)
    assert main(["graph", "--layers", "6", "--heads", "8", "--parallel"]) == 0
    assert _json.loads(capsys.readouterr().out)["n_edges"] == closed_form_edge_count(6, 8, True, None, True)
    with pytest.raises(SystemExit, match="divide n_heads"):
        main(["graph", "--layers", "2", "--heads", "4", "--kv-heads", "3"])
