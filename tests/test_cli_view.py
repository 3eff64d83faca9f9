"""`attrpatch circuit --exact-top/--reliability/--view` and `attrpatch view` end to end on a
tiny checkpoint (2 training steps), with the refusals."""
import json

import pytest

from attrpatch.circuits.file import load_circuit
from attrpatch.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from attrpatch.models.train import train_tiny

    path = tmp_path_factory.mktemp("m") / "tiny-gpt2"
    train_tiny("tiny-gpt2", path, steps=2, progress=False)
    return path


@pytest.fixture(scope="module")
def found(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("c")
    assert main(["circuit", "--model", str(ckpt), "--task", "ioi", "--method", "eap", "--edges", "10", "--n", "4",
                 "--out", str(out), "--quiet", "--exact-top", "6", "--reliability", "--view"]) == 0
    return out


def test_circuit_writes_trust_fields_and_view(found, capsys):
    c = load_circuit(found / "circuit.json")
    exact = [n for n, t in c.edge_info.items() if "exact" in t]
    assert len(exact) == 6
    assert all("reliability" in c.edge_info[n] and isinstance(c.edge_info[n]["flag"], bool)
               for n in set(c.edges) | set(exact))
    tr = c.info["trust"]
    assert tr["exact"]["k"] == 6 and "6 single-edge patches" in tr["exact"]["budget"]
    assert tr["reliability"]["threshold"] == 0.5 and tr["reliability"]["n_edges"] == len(set(c.edges) | set(exact))
    assert [r["n_requested"] for r in c.info["faithfulness_by_size"]]
    assert (found / "circuit.html").stat().st_size > 3_000_000


def test_view_of_two_files(found, tmp_path, capsys):
    d = json.loads((found / "circuit.json").read_text())
    d["attrpatch"]["method"] = "other"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    out = tmp_path / "v.html"
    assert main(["view", str(found / "circuit.json"), str(other), "--out", str(out)]) == 0
    assert "2 circuit(s)" in capsys.readouterr().out and out.exists()


def test_view_refusals(found, tmp_path, capsys):
    assert main(["view", str(tmp_path / "missing.json"), "--out", str(tmp_path / "v.html")]) == 2
    assert "no such circuit file" in capsys.readouterr().err
    assert main(["view", str(found / "circuit.json"), "--out", str(tmp_path / "v.png")]) == 2
    assert "ending in .html" in capsys.readouterr().err
    assert main(["view", str(found / "circuit.json"), "--out", str(tmp_path / "v.html"), "--max-edges", "-3"]) == 2
    assert "max_edges must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "v.html").exists()


def test_negative_exact_top_is_refused(ckpt, tmp_path, capsys):
    """Refused as the command line is parsed (one line, exit 2), before the model loads
    (tests/test_cli_circuit.py checks the no-load part for every option)."""
    with pytest.raises(SystemExit) as e:
        main(["circuit", "--model", str(ckpt), "--task", "ioi", "--method", "eap", "--edges", "5", "--n", "4",
              "--out", str(tmp_path), "--quiet", "--exact-top", "-1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --exact-top: must be an integer >= 0, got -1" in err and "Loading weights" not in err
