"""The workflow's exit status (attrpatch.repro.gate): 0 when the DAG ran, 1 on a failing
claim only with strict; decided from the outcomes, not from the rendered report."""
import json

import pytest
import yaml

from attrpatch.repro.gate import StrictClaimsFailed, finish, parse_strict


def _setup(tmp_path, auc: float):
    claim = {"id": "c1", "paper": "P", "statement": "S", "profile": "tiny",
             "result": {"file": "r.json", "field": "auc"}, "paper_value": 0.9,
             "tolerance": {"type": "abs", "value": 0.05}, "note": "why"}
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump({"claims": [claim]}))
    res = tmp_path / "results"
    res.mkdir()
    (res / "r.json").write_text(json.dumps({"auc": auc}))
    md = res / "claims_report.md"
    md.write_text("a report whose text says 9 passed, 0 failed, 0 errors\n")   # not what decides
    return claims, res, md


def test_failing_claim_exits_zero_unless_strict(tmp_path, capsys):
    claims, res, md = _setup(tmp_path, auc=0.5)
    finish(claims, "tiny", res, md, strict=False)          # returns: the workflow ran
    out = capsys.readouterr().out
    assert "0 passed, 1 failed, 0 errors" in out and "strict=true" in out
    with pytest.raises(StrictClaimsFailed, match="claims: 0 passed, 1 failed, 0 errors"):
        finish(claims, "tiny", res, md, strict=True)


def test_report_printed_only_when_this_run_wrote_it(tmp_path, capsys):
    claims, res, md = _setup(tmp_path, auc=0.91)
    finish(claims, "tiny", res, md, since=md.stat().st_mtime + 10)     # a no-op rerun: summary only
    out = capsys.readouterr().out
    assert "a report whose text" not in out and "claims: 1 passed, 0 failed, 0 errors" in out
    finish(claims, "tiny", res, md, since=md.stat().st_mtime)           # written by this run
    assert "a report whose text" in capsys.readouterr().out


def test_passing_claims_exit_zero_when_strict(tmp_path, capsys):
    claims, res, md = _setup(tmp_path, auc=0.91)
    finish(claims, "tiny", res, md, strict=True)
    assert "1 passed, 0 failed, 0 errors" in capsys.readouterr().out


@pytest.mark.parametrize("value, expected", [(True, True), ("false", False), ("True", True), (0, False), (1, True)])
def test_parse_strict(value, expected):
    assert parse_strict(value) is expected


def test_parse_strict_rejects_other_values():
    with pytest.raises(ValueError, match="strict must be true or false, got 'yes please'"):
        parse_strict("yes please")


def test_every_run_lists_each_fail_with_its_explanation(tmp_path, capsys):
    """A no-op rerun prints no report, so the summary itself says which claims fail and why."""
    claims, res, md = _setup(tmp_path, auc=0.5)
    data = yaml.safe_load(claims.read_text())
    data["claims"][0]["explanation"] = "a finding about small models"
    claims.write_text(yaml.safe_dump(data))
    finish(claims, "tiny", res, md, since=md.stat().st_mtime + 10)
    out = capsys.readouterr().out
    assert "claims: 0 passed, 1 failed, 0 errors" in out
    assert "`c1` FAIL: measured 0.5, expected 0.9 ± 0.05. Finding: a finding about small models" in out
    with pytest.raises(StrictClaimsFailed):
        finish(claims, "tiny", res, md, strict=True, since=md.stat().st_mtime + 10)
    assert "Finding: a finding about small models" in capsys.readouterr().err
