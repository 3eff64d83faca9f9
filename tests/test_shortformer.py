"""The hooked shortformer attention-only model (the Docstring study's attn-only-4l class):
its forward against an independent re-computation, against a transformer_lens bridge with
the positions removed, the graph's algebra on it, loading and the missing-weights error."""
import json
import math
from pathlib import Path

import pytest
import torch

from attrpatch.activations import frozen_hooks
from attrpatch.graph import Graph, closed_form_edge_count
from attrpatch.methods.eap import eap_scores
from attrpatch.patching import Patcher
from attrpatch.models.shortformer import (HF_REPO, HookedShortformer, ShortformerConfig, load_shortformer,
                                   random_shortformer, save_tl_checkpoint)

from conftest import VOCAB, random_batch


def _noisy(model, seed=0, scale=0.3):
    """Random biases and LayerNorm parameters too, so every term of the forward matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * scale)
    return model


@pytest.fixture(scope="module")
def sf():
    m = _noisy(random_shortformer(n_layers=2, n_heads=4, d_model=32, d_vocab=VOCAB, scale=0.3, seed=5,
                                  dtype=torch.float64))
    return m


def _by_hand(sd, tokens, n_layers, eps=1e-5, zero_pos=False):
    """The TransformerLens shortformer forward written out from the state dict (no module code)."""
    def ln(x, w, b):
        x = x - x.mean(-1, keepdim=True)
        return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps) * w + b

    P = tokens.shape[1]
    x = sd["embed.W_E"][tokens]
    pos = sd["pos_embed.W_pos"][:P] * (0.0 if zero_pos else 1.0)
    steps = []
    for l in range(n_layers):
        a = lambda k: sd[f"blocks.{l}.attn.{k}"]
        h = ln(x, sd[f"blocks.{l}.ln1.w"], sd[f"blocks.{l}.ln1.b"])
        q = torch.einsum("bpd,hde->bphe", h + pos, a("W_Q")) + a("b_Q")
        k = torch.einsum("bpd,hde->bphe", h + pos, a("W_K")) + a("b_K")
        v = torch.einsum("bpd,hde->bphe", h, a("W_V")) + a("b_V")
        s = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        s = s + torch.triu(torch.full((P, P), float("-inf"), dtype=s.dtype), diagonal=1)
        pat = torch.softmax(s, -1)
        r = torch.einsum("bhqk,bkhe,hed->bqhd", pat, v, a("W_O"))
        steps.append({"q": q, "k": k, "v": v, "pattern": pat, "result": r})
        x = x + r.sum(2) + a("b_O")
    logits = ln(x, sd["ln_final.w"], sd["ln_final.b"]) @ sd["unembed.W_U"] + sd["unembed.b_U"]
    return logits, steps


def test_forward_equals_independent_recomputation(sf):
    """Logits and every step (q and k with positions, v without, pattern, per-head results)."""
    tokens = random_batch(B=3, P=7, seed=1).clean
    sd = {k: v.double() for k, v in sf.state_dict().items()}
    want, steps = _by_hand(sd, tokens, 2)
    names = {"q": "attn.q.hook_out", "k": "attn.k.hook_out", "v": "attn.v.hook_out",
             "pattern": "attn.hook_pattern", "result": "attn.hook_result"}
    logits, cache = sf.run_with_cache(tokens)
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    for l, st in enumerate(steps):
        for key, hook in names.items():
            torch.testing.assert_close(cache[f"blocks.{l}.{hook}"], st[key], rtol=1e-5, atol=1e-5)
    # the positions matter: without them the recomputation differs (the test can fail)
    assert (_by_hand(sd, tokens, 2, zero_pos=True)[0] - want).abs().max() > 1e-2
    # float32 model, same weights: still 1e-5 of the float64 recomputation at the real scale
    m32 = random_shortformer(n_layers=2, n_heads=4, d_model=32, d_vocab=VOCAB, seed=5)
    sd32 = {k: v.double() for k, v in m32.state_dict().items()}
    torch.testing.assert_close(m32(tokens).double(), _by_hand(sd32, tokens, 2)[0], rtol=1e-5, atol=1e-5)


def test_positions_only_in_queries_and_keys(sf):
    """Changing W_pos changes q and k, never v, the residual stream or the graph's inputs."""
    tokens = random_batch(B=2, P=5, seed=2).clean
    names = ["blocks.0.attn.q.hook_out", "blocks.0.attn.v.hook_out", "blocks.0.hook_in",
             "blocks.0.attn.hook_q_input"]
    _, c1 = sf.run_with_cache(tokens, names_filter=names)
    old = sf.pos_embed.W_pos.clone()
    try:
        with torch.no_grad():
            sf.pos_embed.W_pos.mul_(3.0)
        _, c2 = sf.run_with_cache(tokens, names_filter=names)
    finally:
        with torch.no_grad():
            sf.pos_embed.W_pos.copy_(old)
    assert (c1[names[0]] - c2[names[0]]).abs().max() > 1e-3
    for n in names[1:]:
        torch.testing.assert_close(c1[n], c2[n], rtol=0, atol=0)


def test_zero_positions_equal_a_native_bridge():
    """W_pos = 0: the same weights in transformer_lens 4.3's boot_native bridge (standard
    positions, W_pos = 0 there too, i.e. no positions at all) give the same logits."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot as boot_native
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    m = _noisy(random_shortformer(n_layers=2, n_heads=4, d_model=32, d_vocab=VOCAB, seed=3, dtype=torch.float64),
               seed=1, scale=0.2)
    with torch.no_grad():
        m.pos_embed.W_pos.zero_()
    cfg = TransformerBridgeConfig(d_model=32, n_layers=2, d_mlp=128, d_head=8, n_heads=4, n_ctx=64, d_vocab=VOCAB,
                                  act_fn="gelu", attn_only=True, normalization_type="LN",
                                  positional_embedding_type="standard", architecture="TransformerLensNative")
    bridge = boot_native(cfg, dtype=torch.float64)
    sd = convert_tl_checkpoint({k: v for k, v in m.state_dict().items()}, cfg)
    res = bridge.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    tokens = random_batch(B=3, P=6, seed=4).clean
    torch.testing.assert_close(m(tokens), bridge(tokens), rtol=1e-9, atol=1e-9)
    with torch.no_grad():   # and positions are what separates them
        m.pos_embed.W_pos.normal_(0, 1.0)
    assert (m(tokens) - bridge(tokens)).abs().max() > 1e-3


def test_graph_edge_counts():
    """1,281 edges for the Docstring model's 4 x 8 heads; input = the token embedding."""
    m = random_shortformer(n_layers=4, n_heads=8, d_model=32, d_vocab=VOCAB)
    g = Graph.from_model(m)
    assert g.n_edges == 1281 == closed_form_edge_count(4, 8, has_mlps=False)
    assert not g.has_mlps and g.n_up == 33 and g.n_down == 97
    _, cache = m.run_with_cache(torch.arange(6)[None], names_filter=["embed.hook_out", "blocks.0.hook_in"])
    torch.testing.assert_close(cache["embed.hook_out"], cache["blocks.0.hook_in"])
    assert m.mod_dict["hook_embed"] is m.mod_dict["embed.hook_out"]


def test_eap_equals_exact_patching_when_linear(sf):
    """Every ln1 scale, attention pattern and the final LayerNorm scale frozen at the clean run:
    the model is linear in every edge, so EAP = exact patching on all of them."""
    b = random_batch(seed=3)
    g = Graph.from_model(sf)
    names = [f"blocks.{l}.{h}" for l in range(2) for h in ("ln1.hook_scale", "attn.hook_pattern")]
    hooks = frozen_hooks(sf, b.clean, names + ["ln_final.hook_scale"])
    exact = Patcher(sf, g, b, extra_hooks=hooks).edge_effects()
    eap = g.edges_from_matrix(eap_scores(sf, g, b, extra_hooks=hooks))
    assert exact.abs().max() > 1e-2
    torch.testing.assert_close(eap, exact, rtol=1e-9, atol=1e-11)
    free = g.edges_from_matrix(eap_scores(sf, g, b)) - Patcher(sf, g, b).edge_effects()
    assert free.abs().max() > 1e-4   # the linearisation is what made them equal


def test_eap_equals_finite_difference(sf):
    b = random_batch(seed=4)
    g = Graph.from_model(sf)
    eap = eap_scores(sf, g, b)
    p = Patcher(sf, g, b)
    eps = 1e-5
    picks = g.edge_index[torch.randperm(g.n_edges, generator=torch.Generator().manual_seed(0))[:12]]
    for u, v in picks.tolist():
        lo, hi = p.interpolate_edge(u, v, [-eps, eps]).tolist()
        assert eap[u, v].item() == pytest.approx((hi - lo) / (2 * eps), rel=1e-5, abs=1e-8), g.edge_names


def _checkpoint(tmp_path, m, *, legacy_extras=True):
    save_tl_checkpoint(m, tmp_path, tokenizer_name=None)
    sd = torch.load(tmp_path / "model_final.pth", weights_only=True)
    if legacy_extras:   # what a real TL checkpoint holds: mask/IGNORE buffers, no unembed bias
        for l in range(m.cfg.n_layers):
            sd[f"blocks.{l}.attn.mask"] = torch.ones(4, 4, dtype=torch.bool).tril()
            sd[f"blocks.{l}.attn.IGNORE"] = torch.tensor(-1e5)
        sd.pop("unembed.b_U")
        torch.save(sd, tmp_path / "model_final.pth")
    return tmp_path


def test_load_from_a_local_directory(tmp_path):
    from attrpatch.models import load_model

    m = random_shortformer(n_layers=2, n_heads=4, d_model=32, d_vocab=VOCAB, seed=7)
    _checkpoint(tmp_path, m)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["shortformer_pos"] is True and cfg["attn_only"] is True
    loaded = load_shortformer(tmp_path, tokenizer=None)
    tokens = random_batch(seed=5).clean
    torch.testing.assert_close(loaded(tokens), m(tokens))
    via = load_model(tmp_path)    # the one entry point: dispatches on the TL-format checkpoint
    assert isinstance(via, HookedShortformer) and Graph.from_model(via).n_edges == closed_form_edge_count(2, 4, False)
    torch.testing.assert_close(via(tokens), m(tokens))
    assert not any(p.requires_grad for p in via.parameters())


def test_config_refuses_other_models(tmp_path):
    with pytest.raises(ValueError, match="positional embeddings='standard'"):
        ShortformerConfig.from_tl_json(dict(n_layers=1, n_heads=1, d_model=4, d_head=4, d_vocab=5, n_ctx=8,
                                            attn_only=True, normalization_type="LN"))
    m = random_shortformer(n_layers=1, n_heads=2, d_model=8, d_vocab=VOCAB)
    with pytest.raises(ValueError, match="missing"):
        m.load_tl_state_dict({"embed.W_E": m.embed.W_E})


def fake_hf_cache(cache, repo: str, files: dict) -> Path:
    """A Hugging Face hub cache entry for `repo` (refs/main -> one snapshot) holding `files`
    ({name: bytes, or a directory whose files are copied}): what `hf download` leaves."""
    import shutil

    entry = Path(cache) / ("models--" + repo.replace("/", "--"))
    snap = entry / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    (entry / "refs").mkdir(exist_ok=True)
    (entry / "refs" / "main").write_text("0" * 40)
    for name, content in files.items():
        if isinstance(content, Path):
            for f in content.iterdir():
                shutil.copy(f, snap / f.name)
        else:
            (snap / name).write_bytes(content)
    return snap


def fake_tokenizer_dir(out: Path) -> Path:
    """A small word-level fast tokenizer saved with save_pretrained (stands in for the
    Docstring model's NeoX tokenizer, which is not on this machine)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "def", "self", "file", "name"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(out)
    return out


def test_load_from_the_hf_cache_offline(tmp_path, monkeypatch):
    """attn-only-4l from the local hub cache (config.json + *final.pth, tokenizer from its own
    repo), with the legacy buffers and no b_U as the real checkpoint has them."""
    import huggingface_hub.constants as hc

    from attrpatch.models import ModelWeightsMissing, load_model, resolve_pretrained
    from attrpatch.models.shortformer import TOKENIZER_REPO

    m = random_shortformer(n_layers=2, n_heads=4, d_model=32, d_vocab=VOCAB, seed=8)
    ck = _checkpoint(tmp_path / "ck", m)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["tokenizer_name"] = TOKENIZER_REPO
    (ck / "config.json").write_text(json.dumps(cfg))
    cache = tmp_path / "hub"
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_hf_cache(cache, HF_REPO, {"ck": ck})
    with pytest.raises(ModelWeightsMissing, match=f"tokenizer '{TOKENIZER_REPO}'.*hf download {TOKENIZER_REPO}"):
        resolve_pretrained("attn-only-4l")
    fake_hf_cache(cache, TOKENIZER_REPO, {"tok": fake_tokenizer_dir(tmp_path / "tok")})
    assert resolve_pretrained("attn-only-4l").name == "0" * 40
    model = load_model("attn-only-4l")
    assert isinstance(model, HookedShortformer) and model.cfg.model_name == "attn-only-4l"
    tokens = random_batch(seed=6).clean
    torch.testing.assert_close(model(tokens), m(tokens))
    assert model.attrpatch_tokenizer is model.tokenizer
    assert model.to_tokens("def self file").tolist() == [[0, 1, 2, 3]]


def test_missing_weights_are_named(tmp_path, monkeypatch):
    import time

    import huggingface_hub.constants as hc

    from attrpatch.models import ModelWeightsMissing, load_model

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelWeightsMissing, match=f"{HF_REPO}.*hf download {HF_REPO}"):
        load_model("attn-only-4l")
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ModelWeightsMissing, match="config.json and a \\*final.pth"):
        load_shortformer(tmp_path)


def test_cli_and_acdc_run_unchanged(tmp_path):
    """`attrpatch score` on a TL-format checkpoint directory, and ACDC on the model (token ids of
    the toy vocabulary: the checkpoint names no tokenizer)."""
    import pandas as pd

    from attrpatch.cli import main
    from attrpatch.methods.acdc import acdc
    from attrpatch.models import load_model
    from attrpatch.tasks import make_batch
    from attrpatch.tasks.vocab import toy_tokenizer

    m = random_shortformer(n_layers=2, n_heads=2, d_model=16, d_vocab=len(toy_tokenizer()), seed=9, scale=0.5)
    ck = save_tl_checkpoint(m, tmp_path / "ck")
    out_csv = tmp_path / "s.csv"
    assert main(["score", "--model", str(ck), "--task", "docstring", "--method", "eap", "--n", "3",
                 "--out", str(out_csv)]) == 0
    df = pd.read_csv(out_csv)
    assert len(df) == closed_form_edge_count(2, 2, False) and df["score"].abs().max() > 0
    model = load_model(ck)
    g = Graph.from_model(model)
    res = acdc(model, g, make_batch("docstring", 3, 0), tau=1e-3)
    assert 0 <= res.n_edges <= g.n_edges and res.forward_passes > 2


@pytest.mark.paper_data          # the paper profile's dry run reads the EAP-IG paper's prompt files
def test_paper_profile_plans_docstring_with_the_checkpoint_cached(tmp_path):
    """`snakemake -n --config profile=paper` with a hub cache holding attn-only-4l (random
    weights in the TL format, a tokenizer) and stand-ins for the GPT-2 models: the Docstring
    rules are planned; without the checkpoint the run stops naming its repo."""
    import os
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    from attrpatch.models.shortformer import TOKENIZER_REPO

    cache = tmp_path / "hub"
    cfg = yaml.safe_load((root / "config" / "paper.yaml").read_text())
    for spec in cfg["models"].values():
        if spec["pretrained"] != "attn-only-4l":   # only their presence is checked before planning
            fake_hf_cache(cache, spec["pretrained"], {"config.json": b"{}", "model.safetensors": b""})
    fake_hf_cache(cache, TOKENIZER_REPO, {"tok": fake_tokenizer_dir(tmp_path / "tok")})
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(root / "Snakefile"),
           "--config", "profile=paper"]
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and f"hf download {HF_REPO}" in r.stdout + r.stderr
    m = random_shortformer(n_layers=4, n_heads=8, d_model=32, d_vocab=VOCAB)
    fake_hf_cache(cache, HF_REPO, {"ck": _checkpoint(tmp_path / "ck", m)})
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for target in ("results/paper/eap_r2.json", "results/paper/reference/docstring.csv",
                   "results/paper/eap_roc.json", "results/paper/eap_acdc.json"):
        assert target in r.stdout, target
