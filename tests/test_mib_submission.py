"""MIB's submission folder (attrpatch.circuits.mib_submission): written, read back, and refused when MIB
would refuse it; every method's circuit on random tiny GPT-2 and ungrouped Llama-GQA
checkpoints passes the EAP-IG loader's conventions."""
from __future__ import annotations

import json

import pytest
import torch

from attrpatch.circuits.file import Circuit, to_dict
from attrpatch.circuits.select import top_n
from attrpatch.graph import Graph, GraphUnsupported
from attrpatch.circuits.mib_submission import (IMPORTANCES, SIZED_PERCENT, SubmissionError, eap_ig_loader_problems,
                                      folder_name, read_folder, read_submission, sized_file_name, write_importances,
                                      write_sized)
from attrpatch.methods.registry import METHODS, attribute, level
from attrpatch.models import load_model
from attrpatch.models.random import save_random_family
from attrpatch.post_norm import PostNormUnsupported

from conftest import random_batch


def _circuit(g, seed=0, n=10):
    s = torch.randn(g.n_up, g.n_down, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Circuit(g, top_n(s, g, n), s, method="eap")


GPT = Graph(2, 3, d_model=16)
GQA_U = Graph(2, 4, n_kv_heads=2, kv_convention="ungrouped", d_model=8)


def test_folder_names_are_mibs():
    assert folder_name("arc_easy", "llama3") == "arc-easy_llama3" and folder_name("ioi", "gpt2") == "ioi_gpt2"
    with pytest.raises(SubmissionError, match="does not score task 'mcqa' on model 'gpt2'"):
        folder_name("mcqa", "gpt2")


def test_write_and_read_both_forms(tmp_path):
    p = write_importances(tmp_path, "ioi", "gpt2", _circuit(GPT))
    assert p == tmp_path / "ioi_gpt2" / IMPORTANCES
    assert eap_ig_loader_problems(json.loads(p.read_text())) == []
    paths = write_sized(tmp_path, "mcqa", "qwen2.5", _circuit(GQA_U, 1))
    assert [q.name for q in paths] == [sized_file_name(x) for x in SIZED_PERCENT]
    sub = read_submission(tmp_path)
    assert sub["ioi_gpt2"]["form"] == "importances" and sub["mcqa_qwen2.5"]["form"] == "sized"
    sizes = [c.n_edges for c in sub["mcqa_qwen2.5"]["circuits"]]
    assert sizes == sorted(sizes) and sizes[-1] > 0
    assert all(n <= int(x / 100 * GQA_U.n_edges) for n, x in zip(sizes, SIZED_PERCENT))
    assert sub["mcqa_qwen2.5"]["circuits"][0].graph.kv_convention == "ungrouped"


def test_refusals(tmp_path):
    gqa_grouped = Graph(2, 4, n_kv_heads=2, d_model=8)
    with pytest.raises(SubmissionError, match="kv_convention='ungrouped'"):
        write_importances(tmp_path, "ioi", "llama3", _circuit(gqa_grouped))
    write_importances(tmp_path, "ioi", "gpt2", _circuit(GPT))
    with pytest.raises(SubmissionError, match=">= 2 models and >= 2 tasks"):
        read_submission(tmp_path)                                   # one task, one model
    bad = tmp_path / "ioi_gpt3"
    bad.mkdir()
    (bad / IMPORTANCES).write_text((tmp_path / "ioi_gpt2" / IMPORTANCES).read_text())
    with pytest.raises(SubmissionError, match="'ioi_gpt3' is not one of MIB's"):
        read_folder(bad)
    two = tmp_path / "ioi_qwen2.5"
    two.mkdir()
    for name in ("a.json", "b.json"):
        (two / name).write_text((tmp_path / "ioi_gpt2" / IMPORTANCES).read_text())
    with pytest.raises(SubmissionError, match="holds 2 circuit file"):
        read_folder(two)
    big = tmp_path / "mcqa_llama3"
    paths = write_sized(tmp_path, "mcqa", "llama3", _circuit(GPT, 2))
    paths[0].write_text(json.dumps(to_dict(Circuit(GPT, GPT.edge_mask.clone(), _circuit(GPT).scores))))
    with pytest.raises(SubmissionError, match=r"need at most .* the one for .* has \d+ > \d+"):
        read_folder(big)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["cfg"].pop("parallel_attn_mlp"), "cfg must have"),
    (lambda d: d["cfg"].update(n_heads=True), "positive integers"),
    (lambda d: d["edges"].update({"a1.h0->a0.h1<q>": {"score": 1.0, "in_graph": False}}), "not in a 2x3 EAP-IG graph"),
    (lambda d: d["edges"]["input->a0.h0<q>"].update(score=None), "numeric score"),
    (lambda d: d["edges"]["input->a0.h0<q>"].update(score=True), "numeric score"),
    (lambda d: d["nodes"].update({"a5.h0": {"in_graph": True}}), "node"),
    (lambda d: d.pop("edges"), "missing key"),
])
def test_loader_checker_rejects(edit, match):
    d = to_dict(_circuit(GPT))
    assert eap_ig_loader_problems(d) == []
    edit(d)
    assert any(match in p for p in eap_ig_loader_problems(d)), eap_ig_loader_problems(d)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = {}
    for fam, conv in (("gpt2", "grouped"), ("llama-gqa", "ungrouped"), ("gemma2", "ungrouped")):
        path = save_random_family(fam, tmp_path_factory.mktemp(fam), vocab_size=48, seed=3)
        out[fam] = load_model(path, dtype=torch.float64, kv_convention=conv)
    return out


FAST = {"eap_ig": {"steps": 2}, "eap_ig_activations": {"steps": 2}, "eap_ig_cc": {"steps": 2}, "eap_ig_kl": {"steps": 2},
        "eap_gp": {"steps": 2}, "acdc": {"tau": 0.01}}


# edge methods that refuse Gemma 2's post-attention norm (PostNormUnsupported), by name
POST_NORM_REFUSED: set[str] = set()


@pytest.mark.parametrize("family", ["gpt2", "llama-gqa", "gemma2"])
def test_every_methods_circuit_loads_in_eap_ig(family, tiny, tmp_path):
    """Each edge method's scores -> a 20-edge circuit -> MIB's importance file, passing the loader's
    conventions; a method the family cannot run says so (AtP*'s QK fix on rotary models, the
    methods not proven behind Gemma 2's post-attention norm)."""
    model = tiny[family]
    g = Graph.from_model(model)
    b = random_batch(B=2, P=4, V=48, seed=1)
    ran, refused = [], []
    for m in [m for m in METHODS if level(m) == "edges"]:     # node scores are MIB's node level: not here
        try:
            s = attribute(model, b, method=m, graph=g, **FAST.get(m, {}))
        except PostNormUnsupported as e:
            assert family == "gemma2" and m in POST_NORM_REFUSED and "post-attention norm" in str(e), f"{m}: {e}"
            refused.append(m)
            continue
        except (GraphUnsupported, NotImplementedError, ValueError) as e:
            assert family != "gpt2", f"{m} on gpt2: {e}"
            assert "rotar" in str(e) or "GQA" in str(e) or "kv heads" in str(e), f"{m}: {e}"
            continue
        s = torch.nan_to_num(torch.as_tensor(s).double(), nan=0.0)
        c = Circuit(g, top_n(s, g, 20), s, method=m)
        d = to_dict(c)
        assert d["attrpatch"]["eap_ig_compatible"] and eap_ig_loader_problems(d) == [], m
        ran.append(m)
    assert len(ran) == 9 - len(refused), ran
    assert set(refused) == (POST_NORM_REFUSED & set(METHODS) if family == "gemma2" else set()), refused
