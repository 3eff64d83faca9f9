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
    g = Graph(2, 2)
    other = save_circuit(tmp_path / "other.json", Circuit(g, top_n(g.edge_mask.double(), g, 3)))
    assert main(["evaluate", str(other), "--model", str(ckpt), "--task", "ioi"]) == 2
    err = capsys.readouterr().err
    assert "another graph" in err and "n_layers: file 2, model 3" in err and "n_heads: file 2, model 4" in err
    with pytest.raises(SystemExit):
        main(["circuit", "--model", str(ckpt), "--task", "ioi", "--method", "eap", "--out", str(tmp_path)])


def _rc(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


@pytest.mark.parametrize("args,match", [
    (["--edges", "-5"], "argument --edges: must be an integer >= 1, got -5"),
    (["--edges", "0"], "argument --edges: must be an integer >= 1, got 0"),
    (["--tau", "-1"], "argument --tau: must be a finite number > 0, got -1"),
    (["--tau", "0"], "argument --tau: must be a finite number > 0, got 0"),
    (["--tau", "nan"], "argument --tau: must be a finite number > 0, got nan"),
    (["--edges", "5", "--n", "0"], "argument --n: must be an integer >= 1, got 0"),
    (["--edges", "5", "--exact-top", "-1"], "argument --exact-top: must be an integer >= 0, got -1"),
    (["--edges", "5", "--task", "iox"], "argument --task: invalid choice: 'iox'"),
    (["--edges", "5", "--method", "atp"], "argument --method: invalid choice: 'atp'"),
    (["--edges", "5", "--method", "acdc_kl"], "--method acdc_kl finds its circuit at a threshold: give --tau, not --edges"),
    (["--tau", "0.1", "--method", "acdc_kl", "--options", '{"tau": 1}'], r"method 'acdc_kl' has no option\(s\) \['tau'\]"),
    (["--edges", "5", "--options", "{bad"], "--options is not valid JSON"),
    (["--edges", "5", "--options", '{"steps": 0}'], "steps must be an integer >= 1, got 0"),
    (["--edges", "5", "--options", '{"extra_hooks": []}'], r"has no option\(s\) \['extra_hooks'\]"),
])
def test_circuit_nonsense_is_one_line_exit_2_before_loading_the_model(monkeypatch, capsys, tmp_path, args, match):
    import attrpatch.models

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(attrpatch.models, "load_model", no_load)
    base = {"--task": "ioi", "--method": "eap_ig"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = ["circuit", "--model", "m", "--out", str(tmp_path / "c"), "--quiet"] + [x for kv in base.items() for x in kv]
    rc = _rc(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and re.search(match, err[-1]) and err[-1].startswith("attrpatch circuit: error: "), err
    assert not (tmp_path / "c").exists()


def test_evaluate_checks_task_and_file_before_loading_the_model(monkeypatch, capsys, tmp_path):
    import attrpatch.models

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(attrpatch.models, "load_model", no_load)
    g = Graph(2, 2)
    ok = save_circuit(tmp_path / "ok.json", Circuit(g, top_n(g.edge_mask.double(), g, 3)))
    (tmp_path / "bad.json").write_text("{not json")
    for argv, match in [([str(tmp_path / "none.json")], "no such circuit file"),
                        ([str(tmp_path / "bad.json")], "not valid JSON"),
                        ([str(ok)], "records no task: give --task"),
                        ([str(ok), "--task", "iox"], "argument --task: invalid choice: 'iox'"),
                        ([str(ok), "--task", "ioi", "--n", "-3"], "argument --n: must be an integer >= 1, got -3")]:
        rc = _rc(["evaluate"] + argv + ["--model", "m"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and re.search(match, err[-1]) and err[-1].startswith("attrpatch evaluate: error: "), (argv, err)
