"""The command line: graph counts, method listing, scoring a trained checkpoint."""
from attrpatch.cli import main


def test_graph_counts(capsys):
    assert main(["graph", "--layers", "12", "--heads", "12"]) == 0
    assert '"n_edges": 32491' in capsys.readouterr().out


def test_methods_listing(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "eap_ig" in out and "steps" in out


def test_score_on_a_checkpoint(tmp_path, capsys):
    from attrpatch.train import train_tiny

    ckpt = tmp_path / "m"
    train_tiny("tiny-attn", ckpt, steps=2, progress=False)
    out_csv = tmp_path / "s.csv"
    assert main(["score", "--model", str(ckpt), "--task", "docstring", "--method", "eap_ig",
                 "--options", '{"steps": 2}', "--n", "4", "--out", str(out_csv)]) == 0
    import pandas as pd
    df = pd.read_csv(out_csv)
    assert len(df) == 353 and df["score"].abs().is_monotonic_decreasing
