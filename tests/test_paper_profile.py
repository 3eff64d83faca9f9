"""The paper profile: configs validate, published circuits map onto our graph, missing weights
stop the DAG with a message naming every missing model."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attrpatch.circuits.published import circuits_data, published_counts, published_edges, published_reference
from attrpatch.graph import Graph
from attrpatch.models.shortformer import HF_REPO, TOKENIZER_REPO
from attrpatch.repro.context import load_profile

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = {"ioi": lambda: Graph(12, 12), "greater_than": lambda: Graph(12, 12),
          "docstring": lambda: Graph(4, 8, has_mlps=False)}
# Ours = ACDC's published count minus its q/k/v-direct edges (one per used head input).
EXPECTED = {"ioi": (963, 1041, 78), "greater_than": (235, 262, 27), "docstring": (24, 37, 13)}


@pytest.mark.parametrize("profile", ["paper", "paper_random"])
def test_profiles_validate(profile):
    cfg = load_profile(profile, root=ROOT)
    assert cfg["profile"] == profile
    for exp, spec in cfg["experiments"].items():
        for task, model in spec.get("tasks", {}).items():
            assert model in cfg["models"], (exp, task, model)
        for m in spec.get("models", []):
            assert m in cfg["models"], (exp, m)


def test_paper_profile_parameters():
    cfg = load_profile("paper", root=ROOT)
    e = cfg["experiments"]
    assert e["reference"]["published"] is True
    assert e["eap_roc"]["taus"] == {"n": 31, "low_exp": -6.0, "high_exp": 0.0}   # 10^(-k/5), k=0..30
    assert e["eapig_faith"]["steps"] == 5
    assert e["eapig_faith"]["n_by_task"] == {"ioi_eapig": 1000, "greater_than_eapig": 1000, "sva_eapig": 12400,
                                             "gender_bias_eapig": 986, "country_capital_eapig": 190,
                                             "hypernymy_eapig": 198}
    # SVA: the whole swap-closed file, which gives the authors' baselines (tests/test_eapig_files.py)
    assert e["eapgp_gain"]["n_by_task"] == e["eapig_faith"]["n_by_task"]
    assert e["eapig_faith"]["edge_counts"][:7] == [30, 40, 50, 60, 70, 80, 90]
    assert e["eapig_faith"]["edge_counts"][-1] == 1000
    assert e["eapig_faith"]["edge_counts_by_task"]["ioi_eapig"][-1] == 2000
    # tokenization as each paper's code did it: BOS for EAP-IG / EAP-GP (TransformerLens); the EAP
    # paper's ACDC data: none for IOI and Greater-Than, BOS for Docstring (acdc/docstring/prompts.py
    # to_tokens); the EAP-IG experiments read the paper's files, the EAP ones generate (Docstring by
    # ACDC's own generator)
    for exp in ("eapig_faith", "eapgp_gain"):
        assert e[exp]["prepend_bos"] is True and all(t.endswith("_eapig") for t in e[exp]["tasks"]), exp
    for exp in ("eap_roc", "eap_acdc"):
        assert e[exp]["prepend_bos"] == {"ioi": False, "greater_than": False, "docstring": True}, exp
        assert set(e[exp]["tasks"]) == {"ioi", "greater_than", "docstring"}, exp
        assert e[exp]["n"] == 100, exp                     # the EAP paper: 100 IOI and 100 Greater-Than prompts
    for exp in ("eap_roc", "eap_acdc", "eap_r2"):
        assert e[exp]["docstring_prompts"] == "acdc", exp
    assert e["eap_r2"]["prepend_bos"] is True
    # the papers' own method variants (docs/SOURCES.md): EAP-IG's three curves, EAP-GP's cited unit step
    for profile in ("tiny", "paper"):
        ex = load_profile(profile, root=ROOT)["experiments"]
        assert ex["eapig_faith"]["methods"] == ["eap", "eap_ig", "eap_ig_kl"], profile
        assert ex["eapig_faith"]["extra_methods"] == ["eap_ig_activations"], profile
        assert ex["eapgp_gain"]["gp_step"] == "unit" and ex["eapgp_gain"]["gp_step_variants"] == ["relative"], profile
    assert load_profile("tiny", root=ROOT)["experiments"]["eap_roc"]["docstring_prompts"] == "toy"
    assert {cfg["models"][m]["pretrained"] for m in e["eapgp_gain"]["models"]} == {"gpt2", "gpt2-medium", "gpt2-xl"}
    assert all("pretrained" in s for s in cfg["models"].values())
    # the EAP paper's Docstring data: 50 prompts (ROC, EAP -> ACDC), 40 for the R^2 scatter
    assert e["eap_roc"]["n_by_task"]["docstring"] == e["eap_acdc"]["n_by_task"]["docstring"] == 50
    assert e["eap_r2"]["n"] == 40 and e["eap_r2"]["tasks"] == {"docstring": "attn-only-4l"}


def test_paper_random_mirrors_paper_models():
    paper = load_profile("paper", root=ROOT)
    rnd = load_profile("paper_random", root=ROOT)
    assert all("random" in s for s in rnd["models"].values())
    # Docstring on attn-only-4l in both: the real checkpoint, and its class with random weights
    assert paper["models"]["attn-only-4l"] == {"pretrained": "attn-only-4l", "dtype": "float32"}
    assert rnd["models"]["attn-only-4l"]["random"] == "attn-only-4l"
    assert set(rnd["experiments"]) == set(paper["experiments"])
    for exp in ("reference", "eap_roc", "eap_r2", "eap_acdc"):
        assert paper["experiments"][exp]["tasks"]["docstring"] == "attn-only-4l", exp
        assert rnd["experiments"][exp]["tasks"]["docstring"] == "attn-only-4l", exp
    for exp, spec in rnd["experiments"].items():   # same task -> model assignment, fewer tasks allowed
        if exp not in paper["experiments"]:
            continue
        for task, model in spec.get("tasks", {}).items():
            assert paper["experiments"][exp]["tasks"][task] == model, (exp, task)


@pytest.mark.parametrize("task", list(GRAPHS))
def test_published_heads_are_graph_nodes(task):
    g = GRAPHS[task]()
    d = circuits_data()[task]
    groups = d.get("groups", {})
    for members in groups.values():
        for l, h in members:
            node = f"m{l}" if h is None else f"a{l}.h{h}"
            g.up_index(node)        # KeyError if the node does not exist


@pytest.mark.parametrize("task", list(GRAPHS))
def test_published_edge_counts(task):
    g = GRAPHS[task]()
    edges = published_edges(task, g)
    ours, acdc, direct = EXPECTED[task]
    assert len(edges) == len(set(edges)) == ours
    assert published_counts(task) == {"edges": ours, "acdc_edges": acdc, "acdc_direct_edges": direct,
                                      "acdc_without_direct": acdc - direct}
    for e in edges:
        g.edge(e)


def test_published_reference_frame():
    g = GRAPHS["ioi"]()
    df = published_reference("ioi", g)
    assert list(df.columns) == ["edge", "upstream", "downstream", "effect", "in_reference", "source"]
    assert len(df) == g.n_edges == 32491
    assert int(df.in_reference.sum()) == 963
    assert df.effect.map(math.isnan).all()
    assert df.source.iloc[0].startswith("published:")
    # a few edges the IOI circuit must contain / must not contain
    ref = set(df.edge[df.in_reference])
    assert "a9.h9->logits" in ref and "a7.h3->a9.h9<q>" in ref and "input->a2.h2<q>" in ref
    assert "a7.h3->a9.h9<k>" not in ref and "a1.h1->logits" not in ref


def test_published_reference_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        published_reference("docstring", Graph(12, 12))
    with pytest.raises(ValueError, match="no published circuit"):
        published_edges("sva")


def test_missing_weights_message_names_every_model(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    env = dict(os.environ, HF_HOME=str(hf), HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(ROOT / "Snakefile"),
                        "--config", "profile=paper"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "needs pretrained weights that are not in the local Hugging Face cache" in out
    cfg = load_profile("paper", root=ROOT)
    for spec in cfg["models"].values():
        # attn-only-4l is a TL-format checkpoint plus a tokenizer of its own: both repos are named
        repos = [HF_REPO, TOKENIZER_REPO] if spec["pretrained"] == "attn-only-4l" else [spec["pretrained"]]
        for repo in repos:
            assert repo in out
            assert f"hf download {repo}" in out
    assert not (tmp_path / "results").exists()


def _load_error(tmp_path, profile: str, edit) -> str:
    """The validation message of config/<profile>.yaml after `edit(cfg)`."""
    import yaml

    from attrpatch.repro.config import ConfigError

    from attrpatch.repro.config import merge_base, parse_yaml

    path = ROOT / "config" / f"{profile}.yaml"
    cfg = merge_base(parse_yaml(path), path)
    edit(cfg)
    p = tmp_path / f"{profile}.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_profile(p)
    return str(e.value)


def test_random_model_width_is_validated(tmp_path):
    def edit(cfg):
        cfg["models"]["gpt2"]["n_embd"] = 50
        cfg["models"]["gpt2-medium"]["random"] = "gpt3"

    msg = _load_error(tmp_path, "paper_random", edit)
    assert "models.gpt2.n_embd: 50 must be a positive multiple of the shape's 12 heads" in msg
    assert "models.gpt2-medium.random: unknown shape or family 'gpt3'; allowed shapes:" in msg


def test_resources_section_is_validated(tmp_path):
    def edit(cfg):
        assert cfg["resources"]["default"]["gpu"] == 1 and cfg["resources"]["graph_counts"]["gpu"] == 0
        cfg["resources"]["hvpp"] = {"mem_mb": 1}
        cfg["resources"]["hvp"] = {"vram": 3, "runtime": -1}

    msg = _load_error(tmp_path, "paper", edit)
    assert "resources.hvpp: unknown rule" in msg
    assert "resources.hvp.vram: unknown resource; allowed: mem_mb, runtime, gpu" in msg
    assert "resources.hvp.runtime: -1 must be a non-negative integer" in msg


def test_paper_random_docstring_is_acdcs_generator():
    """The paper profiles' Docstring batches come from ACDC's generator (seeds 0.., BOS first, the
    metric at the open ``:param``); paper_random tokenizes them with the word-level stand-in."""
    from attrpatch.repro.context import Context
    from attrpatch.tasks.docstring_acdc import acdc_prompt, word_pieces

    run = Context("paper_random", "eap_r2", root=ROOT).task("docstring", "attn-only-4l")
    b, tok = run.batch, run.model.attrpatch_tokenizer
    assert b.meta["seeds"] == list(range(len(b))) and b.meta["prepend_bos"] is True
    assert tok.decode(b.clean[0, : int(b.pos[0]) + 1]) == ["<bos>"] + word_pieces(acdc_prompt(0).clean)
    assert tok.decode(b.answer_mask[0].nonzero()[:, 0]) == [acdc_prompt(0).answer]
