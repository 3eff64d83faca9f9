"""The command line: graph counts, method listing, scoring a trained checkpoint."""
from attrpatch.cli import main


def test_graph_counts(capsys):
    assert main(["graph", "--layers", "12", "--heads", "12"]) == 0
    assert '"n_edges": 32491' in capsys.readouterr().out


def test_methods_listing(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "eap_ig" in out and "steps" in out
    # every option listed after "options:" is one `score --options` takes; Python-only ones apart
    listed = [line.split("options: ", 1)[1] for line in out.splitlines() if line.strip().startswith("options: ")]
    assert listed and not any("extra_hooks" in x or "return_details" in x for x in listed)
    assert "Python API only (attribute(...)): extra_hooks" in out


def test_score_on_a_checkpoint(tmp_path, capsys):
    from attrpatch.models.train import train_tiny

    ckpt = tmp_path / "m"
    train_tiny("tiny-attn", ckpt, steps=2, progress=False)
    out_csv = tmp_path / "s.csv"
    assert main(["score", "--model", str(ckpt), "--task", "docstring", "--method", "eap_ig",
                 "--options", '{"steps": 2}', "--n", "4", "--out", str(out_csv)]) == 0
    import pandas as pd
    df = pd.read_csv(out_csv)
    assert len(df) == 353 and df["score"].abs().is_monotonic_decreasing
    header = capsys.readouterr().out.splitlines()[:3]
    assert header[0].startswith(f"# model {ckpt}  task docstring  method eap_ig  metric logit_diff_max  n 4")
    assert header[1].startswith("# clean run: mean logit_diff_max = ")
    float(header[1].rsplit("= ", 1)[1])
    assert "patched) - mean logit_diff_max(clean run)" in header[2] and "corrupt_into_clean" in header[2]


import pytest


@pytest.mark.parametrize("args,match", [
    (["--task", "iox"], "argument --task: invalid choice: 'iox'"),
    (["--task", "ioi", "--method", "eapp"], "argument --method: invalid choice: 'eapp'"),
    (["--task", "ioi", "--n", "0"], "argument --n: must be an integer >= 1, got 0"),
    (["--task", "ioi", "--options", "{bad"], "--options is not valid JSON"),
    (["--task", "ioi", "--options", "[1]"], "--options must be a JSON object"),
    (["--task", "ioi", "--options", '{"steps": 2}'], r"method 'eap' has no option\(s\) \['steps'\]; valid options: metric"),
    (["--task", "ioi", "--method", "eap_ig", "--options", '{"steps": 2.0}'],
     r"method 'eap_ig': steps must be an integer >= 1, got 2.0 \(float\)"),
    (["--task", "ioi", "--options", '{"batch_size": -1}'], "batch_size must be an integer >= 1 or None, got -1"),
])
def test_bad_input_is_one_line_exit_2_before_loading_the_model(monkeypatch, capsys, args, match):
    import re

    import attrpatch.models

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(attrpatch.models, "load_model", no_load)
    try:
        rc = main(["score", "--model", "m"] + args)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and re.search(match, err[-1]) and err[-1].startswith("attrpatch score: error: "), err


def test_runtime_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    args = ["score", "--model", str(tmp_path / "nope"), "--task", "ioi"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model directory" in err[0] and "does not exist" in err[0] and "--debug" in err[0]
    from attrpatch.models import CheckpointNotFound
    with pytest.raises(CheckpointNotFound):
        main(args + ["--debug"])


def test_help_lists_tasks_methods_and_option_meanings(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    out = capsys.readouterr().out
    for word in ("greater_than", "country_capital", "eap_gp", "atp_star", "exact_nodes"):
        assert word in out, word
    assert "batch_size          examples per forward/backward chunk, integer >= 1" in out
    assert "points              EAP-IG path points" in out and "one of: paper, library" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert capsys.readouterr().out.startswith("usage: attrpatch train ")
