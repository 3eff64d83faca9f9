"""`attrpatch circuit` and `attrpatch evaluate` end to end on a tiny checkpoint (2 training steps: ~random weights)."""
import json
import re

import pytest

from attrpatch.circuits.file import Circuit, load_circuit, save_circuit
from attrpatch.circuits.select import top_n
from attrpatch.cli import main
from attrpatch.graph import Graph


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """tiny-gpt2 (3 layers x 4 heads) after 2 training steps: near its random initialisation."""
    from attrpatch.models.train import train_tiny

    path = tmp_path_factory.mktemp("m") / "tiny-gpt2"
    train_tiny("tiny-gpt2", path, steps=2, progress=False)
    return path


def test_circuit_then_evaluate(ckpt, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["circuit", "--model", str(ckpt), "--task", "ioi", "--method", "eap_ig", "--options", '{"steps": 2}',
                 "--edges", "12", "--n", "6", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "faithfulness" in printed and f"wrote {out / 'circuit.json'}" in printed
    c = load_circuit(out / "circuit.json")
    assert 0 < c.n_edges <= 12 and c.method == "eap_ig" and c.task == "ioi" and c.options == {"steps": 2}
    f = c.info["faithfulness"]
    assert f["n_prompts"] == 6 and f["n_edges"] == c.n_edges
    svg = (out / "circuit.svg").read_text()
    assert len(re.findall(r'<g id="node-', svg)) == len(c.nodes) and (out / "circuit.png").exists()
    # evaluate the saved file: same prompts by default, so the very same number
    assert main(["evaluate", str(out / "circuit.json"), "--model", str(ckpt), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["faithfulness"] == f["faithfulness"] and got["n_edges"] == c.n_edges
    # other prompts give another measurement of the same circuit
    assert main(["evaluate", str(out / "circuit.json"), "--model", str(ckpt), "--task", "ioi", "--seed", "5"]) == 0
    assert "faithfulness on ioi (6 prompts, seed 5" in capsys.readouterr().out


def test_threshold_keeps_every_edge_at_or_above_tau(ckpt, tmp_path):
    import torch

    from attrpatch.methods.registry import attribute
    from attrpatch.models import load_model
    from attrpatch.tasks import make_batch

    model = load_model(ckpt)
    g = Graph.from_model(model)
    s = g.edges_from_matrix(attribute(model, make_batch("greater_than", 4, 0, model.attrpatch_tokenizer), "eap", g))
    tau = float(torch.sort(s.abs(), descending=True).values[7])          # the 8th largest |score|
    assert main(["circuit", "--model", str(ckpt), "--task", "greater_than", "--method", "eap", "--tau", repr(tau),
                 "--no-prune", "--n", "4", "--out", str(tmp_path), "--name", "thr", "--quiet"]) == 0
    c = load_circuit(tmp_path / "thr.json", graph=g)
    want = [n for n, x in zip(g.edge_names, s.tolist()) if abs(x) >= tau]
    assert c.edges == want and len(want) == 8 and c.info["tau"] == tau
    assert torch.allclose(g.edges_from_matrix(c.scores), s.double())


def test_errors_are_one_clear_line(ckpt, tmp_path, capsys):
    assert main(["circuit", "--model", str(ckpt), "--task", "ioi", "--method", "atp", "--edges", "5",
                 "--n", "4", "--out", str(tmp_path), "--quiet"]) == 2
    assert "cannot find an edge circuit; allowed: ['eap'" in capsys.readouterr().err
    assert main(["circuit", "--model", str(ckpt), "--task", "ioi", "--method", "acdc_kl", "--edges", "5",
                 "--n", "4", "--out", str(tmp_path), "--quiet"]) == 2
    assert "give tau, not edges" in capsys.readouterr().err
    g = Graph(2, 2)
    other = save_circuit(tmp_path / "other.json", Circuit(g, top_n(g.edge_mask.double(), g, 3)))
    assert main(["evaluate", str(other), "--model", str(ckpt), "--task", "ioi"]) == 2
    err = capsys.readouterr().err
    assert "another graph" in err and "n_layers: file 2, model 3" in err and "n_heads: file 2, model 4" in err
    with pytest.raises(SystemExit):
        main(["circuit", "--model", str(ckpt), "--task", "ioi", "--method", "eap", "--out", str(tmp_path)])
