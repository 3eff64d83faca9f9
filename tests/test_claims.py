"""Tests for attrpatch.repro.claims: validation errors name the entry, outcomes, report, CLI."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
try:
    import attrpatch.repro.claims  # noqa: F401
except ImportError:  # package not installed: use the source tree
    sys.path.insert(0, str(ROOT / "src"))

from attrpatch.repro.claims import ClaimsError, check_claims, load_claims, main, write_report  # noqa: E402

EXAMPLE = ROOT / "tests" / "data" / "claims_example.yaml"
RESULTS = {"auc": {"ioi": {"eap": 0.88, "acdc_task": 0.71, "bad": float("nan")}},
           "rows": [{"x": 1.5}, {"x": 2.5}], "curve": [0.1, 0.2]}


def base_claim(**over):
    c = {"id": "c1", "paper": "P", "statement": "S", "profile": "tiny",
         "result": {"file": "r.json", "field": "auc.ioi.eap"}, "paper_value": 0.904,
         "tolerance": {"type": "abs", "value": 0.05}, "note": "why"}
    c.update(over)
    return c


def write_claims(tmp_path, claims, name="claims.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"claims": claims}))
    return p


@pytest.fixture
def results_dir(tmp_path):
    d = tmp_path / "results" / "tiny"
    d.mkdir(parents=True)
    (d / "r.json").write_text(json.dumps(RESULTS))
    (d / "example_results.json").write_text(json.dumps(RESULTS))
    return d


def outcome_of(tmp_path, results_dir, **over):
    (o,) = check_claims(load_claims(write_claims(tmp_path, [base_claim(**over)])), "tiny", results_dir)
    return o


# ------------------------------------------------------------------ validation errors


@pytest.mark.parametrize("over, needles", [
    ({"colour": "red"}, ["claim 'c1'", "unknown key 'colour'", "allowed"]),
    ({"profile": "huge"}, ["claim 'c1'.profile", "'huge'", "['tiny', 'paper', 'mib']"]),
    ({"tolerance": {"type": "approx", "value": 1}}, ["claim 'c1'.tolerance.type", "'approx'", "'between'"]),
    ({"tolerance": {"type": "abs"}}, ["claim 'c1'.tolerance", "missing key 'value'"]),
    ({"tolerance": {"type": "ge", "value": 1, "ref": {"file": "a", "field": "b"}}}, ["exactly one"]),
    ({"tolerance": {"type": "between", "low": 2, "high": 1}}, ["low 2.0 > high 1.0"]),
    ({"tolerance": {"type": "rel", "value": 0.1}, "paper_value": None}, ["paper_value"]),
    ({"result": {"file": "r.json"}}, ["claim 'c1'.result", "missing key 'field'"]),
    ({"reconstructed": "yes"}, ["claim 'c1'.reconstructed", "'yes'"]),
    ({"paper_value": "0.9"}, ["claim 'c1'.paper_value", "'0.9'"]),
])
def test_bad_entry_is_named(tmp_path, over, needles):
    with pytest.raises(ClaimsError) as e:
        load_claims(write_claims(tmp_path, [base_claim(**over)]))
    for n in needles:
        assert n in str(e.value)


def test_missing_key_without_id_names_index(tmp_path):
    c = base_claim()
    del c["id"], c["note"]
    with pytest.raises(ClaimsError, match=r"claims\[1\]: missing key 'id'") as e:
        load_claims(write_claims(tmp_path, [base_claim(id="ok"), c]))
    assert "missing key 'note'" in str(e.value)


def test_duplicate_id(tmp_path):
    with pytest.raises(ClaimsError, match=r"claim 'c1': duplicate id \(claims\[0\] and claims\[1\]\)"):
        load_claims(write_claims(tmp_path, [base_claim(), base_claim()]))


def test_duplicate_key_inside_a_claim_is_an_error(tmp_path):
    """The one strict YAML reader: a repeated key is not silently last-one-wins."""
    p = tmp_path / "claims.yaml"
    p.write_text("claims:\n  - id: c1\n    paper_value: 0.9\n    paper_value: 0.5\n")
    with pytest.raises(ClaimsError, match=r"line 4: invalid YAML: duplicate key 'paper_value'"):
        load_claims(p)


def test_unknown_result_file(tmp_path):
    p = write_claims(tmp_path, [base_claim(), base_claim(
        id="c2", tolerance={"type": "ge", "ref": {"file": "nope.json", "field": "x"}})])
    assert len(load_claims(p, known_results={"r.json", "nope.json"})) == 2
    with pytest.raises(ClaimsError) as e:
        load_claims(p, known_results={"r.json"})
    assert "claim 'c2'.tolerance.ref.file: 'nope.json' is written by no experiment" in str(e.value)
    assert "claim 'c1'" not in str(e.value)


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("claims:\n  - id: a\n    paper: [unclosed\n")
    with pytest.raises(ClaimsError, match=r"c\.yaml: line \d+: invalid YAML"):
        load_claims(p)


def test_bad_top_level(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("claim: []\n")
    with pytest.raises(ClaimsError, match="single key 'claims'"):
        load_claims(p)


def test_repo_files_parse():
    assert load_claims(ROOT / "paper_claims.yaml") is not None
    assert [c.id for c in load_claims(EXAMPLE)] == ["example.tiny.eap_auc_near_paper",
                                                    "example.tiny.eap_beats_acdc"]


# ------------------------------------------------------------------ outcomes


def test_pass_abs(tmp_path, results_dir):
    o = outcome_of(tmp_path, results_dir)
    assert (o.status, o.measured, o.expected) == ("PASS", 0.88, "0.904 ± 0.05")


def test_fail_shows_measured(tmp_path, results_dir):
    o = outcome_of(tmp_path, results_dir, tolerance={"type": "abs", "value": 0.01})
    assert o.status == "FAIL" and o.measured == 0.88
    assert "measured 0.88" in o.message and "0.904 ± 0.01" in o.message


def test_rel_and_between_and_list_index(tmp_path, results_dir):
    assert outcome_of(tmp_path, results_dir, tolerance={"type": "rel", "value": 0.03}).status == "PASS"
    assert outcome_of(tmp_path, results_dir, tolerance={"type": "rel", "value": 0.02}).status == "FAIL"
    o = outcome_of(tmp_path, results_dir, result={"file": "r.json", "field": "rows.1.x"},
                   tolerance={"type": "between", "low": 2, "high": 3})
    assert (o.status, o.measured, o.expected) == ("PASS", 2.5, "in [2, 3]")


def test_field_vs_field(tmp_path, results_dir):
    ref = {"file": "r.json", "field": "auc.ioi.acdc_task"}
    o = outcome_of(tmp_path, results_dir, tolerance={"type": "ge", "ref": ref})
    assert o.status == "PASS" and o.expected == ">= r.json:auc.ioi.acdc_task (0.71)"
    o = outcome_of(tmp_path, results_dir, tolerance={"type": "ge", "ref": ref, "margin": 0.2})
    assert o.status == "FAIL" and o.expected == ">= r.json:auc.ioi.acdc_task + 0.2 (0.91)"
    o = outcome_of(tmp_path, results_dir, tolerance={"type": "lt", "ref": ref, "margin": -0.2})
    assert o.status == "PASS"  # 0.88 < 0.71 + 0.2
    assert outcome_of(tmp_path, results_dir, tolerance={"type": "gt", "value": 0.88}).status == "FAIL"


@pytest.mark.parametrize("result, needle", [
    ({"file": "r.json", "field": "auc.ioi.missing"}, "no field 'missing'"),
    ({"file": "absent.json", "field": "x"}, "results file not found"),
    ({"file": "r.json", "field": "auc.ioi.bad"}, "NaN"),
    ({"file": "r.json", "field": "curve"}, "not a number"),
    ({"file": "r.json", "field": "rows.7.x"}, "no index '7'"),
])
def test_error_outcomes(tmp_path, results_dir, result, needle):
    o = outcome_of(tmp_path, results_dir, result=result)
    assert o.status == "ERROR" and needle in o.message


def test_error_in_reference(tmp_path, results_dir):
    o = outcome_of(tmp_path, results_dir, tolerance={"type": "ge", "ref": {"file": "r.json", "field": "nope"}})
    assert o.status == "ERROR" and o.message.startswith("reference:")


def test_only_profile_claims_checked(tmp_path, results_dir):
    claims = load_claims(write_claims(tmp_path, [base_claim(), base_claim(id="p", profile="paper")]))
    assert [o.claim.id for o in check_claims(claims, "tiny", results_dir)] == ["c1"]


# ------------------------------------------------------------------ report


def three_outcomes(tmp_path, results_dir):
    claims = [base_claim(id="ok", figure="figures/tiny/x.png", reconstructed=True),
              base_claim(id="bad|pipe", tolerance={"type": "abs", "value": 0.001}, loosened="tiny model"),
              base_claim(id="err", result={"file": "r.json", "field": "nope"})]
    return check_claims(load_claims(write_claims(tmp_path, claims)), "tiny", results_dir)


def test_write_report(tmp_path, results_dir):
    md, xml = results_dir / "claims_report.md", results_dir / "claims_report.xml"
    text = write_report(three_outcomes(tmp_path, results_dir), md, xml, root=tmp_path)
    assert md.read_text() == text
    assert "1 passed, 1 failed, 1 errors" in text
    assert "bad\\|pipe" in text and "loosened: tiny model" in text and "reconstructed" in text
    assert "[x.png](../../figures/tiny/x.png)" in text
    assert not [p for p in results_dir.iterdir() if p.name.endswith(".tmp")]
    suite = ET.parse(xml).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = {tc.get("name"): tc for tc in suite.findall("testcase")}
    assert cases["ok"].find("failure") is None and cases["ok"].find("error") is None
    assert "measured 0.88" in cases["bad|pipe"].find("failure").get("message")
    assert "no field 'nope'" in cases["err"].find("error").get("message")


def test_report_carries_notes_exact_counts_and_an_html_table(tmp_path, results_dir):
    import json as _json

    data = _json.loads((results_dir / "r.json").read_text())
    data["n_edges"] = 2235025
    (results_dir / "r.json").write_text(_json.dumps(data))
    claims = [base_claim(id="count", result={"file": "r.json", "field": "n_edges"}, paper_value=2235025,
                         tolerance={"type": "abs", "value": 0}, note="the library's count <exact>"),
              base_claim(id="order", paper_value=None, tolerance={"type": "ge", "value": 0.99},
                         note="a FAIL here is a finding about small models")]
    outcomes = check_claims(load_claims(write_claims(tmp_path, claims)), "tiny", results_dir)
    html = results_dir / "claims_report.html"
    text = write_report(outcomes, results_dir / "c.md", None, root=tmp_path, html_path=html)
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["count"][2:5] == ["2,235,025", "2,235,025 ± 0", "2,235,025"] and "e+06" not in text
    assert rows["count"][-1].startswith("the library's count <exact>")
    assert rows["order"][2] == "" and "a FAIL here is a finding about small models" in rows["order"][-1]
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "2,235,025" in page
    assert "the library&#x27;s count &lt;exact&gt;" in page and "FAIL" in page and "1 passed, 1 failed" in page


def test_statements_quoting_a_paper_number_fill_paper_value():
    """A statement "as in the paper (0.904 vs 0.588)" shows 0.904 in the paper value column."""
    import re

    for c in load_claims(Path(__file__).resolve().parents[1] / "paper_claims.yaml"):
        quoted = re.search(r"\bpaper[^()]*\((-?\d[\d.,]*)", c.statement)
        if quoted:
            assert c.paper_value == float(quoted.group(1).replace(",", "")), c.id


# ------------------------------------------------------------------ CLI


def cli(tmp_path, results_dir, claims, *extra):
    p = write_claims(tmp_path, claims)
    return main(["--claims", str(p), "--profile", "tiny", "--results", str(results_dir),
                 "--md", str(results_dir / "r.md"), "--junit", str(results_dir / "r.xml"), *extra])


def test_cli_exit_codes(tmp_path, results_dir, capsys):
    assert cli(tmp_path, results_dir, [base_claim()]) == 0
    assert "| c1 |" in capsys.readouterr().out
    failing = [base_claim(tolerance={"type": "abs", "value": 0.001})]
    assert cli(tmp_path, results_dir, failing) == 1
    assert cli(tmp_path, results_dir, failing, "--no-fail") == 0
    assert cli(tmp_path, results_dir, [base_claim(id="e", result={"file": "x.json", "field": "a"})]) == 1
    assert cli(tmp_path, results_dir, [base_claim(profile="huge")]) == 2
    assert "claim 'c1'.profile" in capsys.readouterr().err


def test_cli_module_entry_point(tmp_path, results_dir):
    """``python -m attrpatch.repro.claims`` on the example claims, as the Snakefile would run it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-m", "attrpatch.repro.claims", "--claims", str(EXAMPLE),
                        "--profile", "tiny", "--results", str(results_dir)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 passed, 0 failed, 0 errors" in r.stdout


def test_blocked_claim_is_reported_not_passed(tmp_path):
    """A claim that cannot be checked here is BLOCKED with its reason: never PASS, never a failure."""
    import yaml

    from attrpatch.repro.claims import check_claims, load_claims, render_junit, summary_line

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"claims": [{
        "id": "x.paper.blocked", "paper": "P", "statement": "s", "profile": "paper",
        "result": {"file": "none.json", "field": "a"}, "paper_value": 1.0,
        "tolerance": {"type": "abs", "value": 0.1}, "note": "n", "blocked": "model cannot be loaded"}]}))
    out = check_claims(load_claims(p), "paper", tmp_path)
    assert [o.status for o in out] == ["BLOCKED"] and "cannot be loaded" in out[0].message
    assert summary_line(out) == "0 passed, 0 failed, 0 errors, 1 blocked"
    assert b'skipped="1"' in render_junit(out)


# ------------------------------------------------------------------ explanations of FAILs (issue 24, item 8)


@pytest.mark.parametrize("bad", ["", "   ", 3, ["a finding"]])
def test_explanation_must_be_a_nonempty_string(tmp_path, bad):
    with pytest.raises(ClaimsError, match=r"claim 'c1'.explanation: must be"):
        load_claims(write_claims(tmp_path, [base_claim(explanation=bad)]))


def test_fail_carries_its_explanation_in_every_report(tmp_path, results_dir):
    from attrpatch.repro.claims import failure_lines, render_html, render_junit

    why = "the tiny reference is exact patching, what ACDC runs on"
    claims = load_claims(write_claims(tmp_path, [
        base_claim(id="explained", paper_value=0.5, explanation=why),
        base_claim(id="bare", paper_value=0.5),
        base_claim(id="passing", explanation="never shown for a PASS")]))
    outcomes = check_claims(claims, "tiny", results_dir)
    assert [o.status for o in outcomes] == ["FAIL", "FAIL", "PASS"]
    md = write_report(outcomes, None, None)
    failures = md.split("## Failures and errors")[1]
    assert f"`explained` FAIL: measured 0.88, expected 0.5 ± 0.05. Finding: {why}" in failures
    assert "`bare` FAIL" in failures and "Unexplained: the claim has no `explanation`" in failures
    assert "never shown for a PASS" not in md
    assert failure_lines(outcomes)[0].endswith(f"Finding: {why}") and len(failure_lines(outcomes)) == 2
    assert f"Finding: {why}" in render_html(outcomes)
    assert f"finding: {why}" in render_junit(outcomes).decode()


def test_every_tiny_claim_with_an_explanation_is_a_comparison_that_can_fail():
    """An explanation belongs to a claim checked on the tiny profile (where the findings are)."""
    claims = load_claims(ROOT / "paper_claims.yaml")
    explained = [c for c in claims if c.explanation]
    assert len(explained) >= 6
    assert all(c.profile == "tiny" and not c.blocked for c in explained), [c.id for c in explained]


def test_blocked_claim_may_lack_the_paper_value_unblocked_may_not(tmp_path):
    """The paper's number may be what is missing (paper_value null) only on a blocked claim."""
    import yaml

    from attrpatch.repro.claims import ClaimsError, check_claims, load_claims

    entry = {"id": "x.paper.nv", "paper": "P", "statement": "s", "profile": "paper",
             "result": {"file": "none.json", "field": "a"}, "paper_value": None,
             "tolerance": {"type": "abs", "value": 0.1}, "note": "n", "blocked": "table not readable"}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"claims": [entry]}))
    assert [o.status for o in check_claims(load_claims(p), "paper", tmp_path)] == ["BLOCKED"]
    del entry["blocked"]
    p.write_text(yaml.safe_dump({"claims": [entry]}))
    with pytest.raises(ClaimsError, match="compares against paper_value, which must be a number, got None"):
        load_claims(p)
