"""Every paper-profile rule run end to end on the paper's model shapes with random weights
(config/paper_random.yaml), each model narrowed to 4 dimensions per head. Its own module so that
it runs beside the smoke DAG (test_dag_smoke.py) on the other test worker."""
import json

import pytest
import yaml

from test_dag import ROOT, _profile, _run


@pytest.mark.slow
@pytest.mark.paper_data
def test_paper_rules_end_to_end_on_narrow_random_models(tmp_path):
    """Every paper-profile rule runs in CI: config/paper_random.yaml (the paper's model shapes
    with random weights, published reference circuits, work limits, EAP-GP on two models,
    Docstring on the attn-only-4l shortformer class, the paper claims) with each model narrowed to d_model =
    4 per head - same layers, heads, graphs and node names, minutes instead of a quarter hour."""
    import pandas as pd

    from attrpatch.models.random import GPT2_SHAPES

    cfg = _profile("paper_random")
    cfg["profile"] = "paper_ci"
    for spec in cfg["models"].values():
        spec["n_embd"] = 4 * GPT2_SHAPES[spec["random"]]["n_head"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "paper_ci.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = _run(["--cores", "2", "-s", str(ROOT / "Snakefile"), "--config", "profile=paper_ci"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:] + "".join(p.read_text()[-2000:] for p in (tmp_path / "logs").rglob("*.log"))
    res = tmp_path / "results" / "paper_ci"
    for exp in cfg["experiments"]:
        if exp != "reference":
            json.loads((res / f"{exp}.json").read_text())
    ref = pd.read_csv(res / "reference" / "ioi.csv")
    assert ref["source"].str.startswith("published: Wang et al. 2023").all() and 0 < ref["in_reference"].sum() < len(ref)
    roc = json.loads((res / "eap_roc.json").read_text())
    assert set(roc["auc"]["ioi"]) == {"eap", "acdc_task", "acdc_kl", "exact"}
    assert roc["reference"]["ioi"]["n_edges"] == 32491
    assert "64 of 32491 edges" in roc["curves"]["ioi"]["exact"]["limited"]
    gp = json.loads((res / "eapgp_gain.json").read_text())
    assert list(gp["by_model"]) == ["gpt2-medium"]
    r2 = json.loads((res / "eap_r2.json").read_text())
    assert r2["model"] == "attn-only-4l" and r2["n_edges"] == 1281
    # Docstring on the shortformer class (random weights): ROC, R^2 and EAP -> ACDC all evaluated
    assert set(roc["auc"]["docstring"]) == {"eap", "acdc_task", "acdc_kl", "exact"}
    assert roc["reference"]["docstring"]["n_edges"] == 1281
    assert "docstring" in json.loads((res / "eap_acdc.json").read_text())["summary"]
    report = (res / "claims_report.md").read_text()
    for claim in ("eap_roc.paper.eap_auc_ioi", "eap_roc.paper.exact_auc_docstring", "eap_r2.paper.r2",
                  "eap_acdc.paper.beats_eap_alone_docstring"):
        assert claim in report, claim
    assert "BLOCKED" not in report
