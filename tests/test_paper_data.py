"""The paper-data door (tests/paper_data.py): a fresh clone without the EAP-IG paper's files
skips the tests that need them, naming why; CI with the files runs them and fails on a skip."""
import pytest

import paper_data as P

INNER = '''
import pytest

@pytest.mark.paper_data
def test_reads_the_files(paper_data):
    assert (paper_data / "marker.txt").read_text() == "here"

@pytest.mark.paper_data
def test_skips_itself():
    pytest.skip("some other reason")

def test_needs_nothing():
    pass
'''
# the repository's own conftest, loaded by path: its hooks and fixture, as wired for the suite
CONFTEST = f"""
import importlib.util
_spec = importlib.util.spec_from_file_location("repo_conftest", {str(P.ROOT / "tests" / "conftest.py")!r})
_repo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_repo)
pytest_collection_modifyitems = _repo.pytest_collection_modifyitems
pytest_runtest_makereport = _repo.pytest_runtest_makereport
paper_data = _repo.paper_data
"""


def _run(pytester, monkeypatch, data, ci):
    monkeypatch.setenv("ATTRPATCH_PAPER_DATA", str(data))
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    paper_data: needs the paper's files\n")
    pytester.makepyfile(test_inner=INNER)
    return pytester.runpytest("-p", "no:cacheprovider", "-rs")


def test_absent_data_skips_with_the_reason(pytester, monkeypatch, tmp_path):
    for ci in ("", "true"):            # CI without the files: skipped too (nothing to run them on)
        r = _run(pytester, monkeypatch, tmp_path / "nowhere", ci)
        r.assert_outcomes(passed=1, skipped=2)
        r.stdout.fnmatch_lines([f"*needs the EAP-IG paper's files*not found at {tmp_path / 'nowhere'}*"])


def test_present_data_runs_the_tests(pytester, monkeypatch, tmp_path):
    (tmp_path / "marker.txt").write_text("here")
    r = _run(pytester, monkeypatch, tmp_path, "")
    r.assert_outcomes(passed=2, skipped=1)          # outside CI a test's own skip stays a skip


def test_ci_with_data_turns_a_skip_into_a_failure(pytester, monkeypatch, tmp_path):
    (tmp_path / "marker.txt").write_text("here")
    r = _run(pytester, monkeypatch, tmp_path, "true")
    r.assert_outcomes(passed=2, failed=1)
    r.stdout.fnmatch_lines(["*CI=true and the EAP-IG paper's files are at*must run, but it skipped*"])


def test_default_directory_is_the_paper_profile_setting(monkeypatch):
    monkeypatch.delenv("ATTRPATCH_PAPER_DATA", raising=False)
    assert P.paper_data_dir() == (P.ROOT / "../shared/data/eap-ig-faithfulness")
    assert P.paper_data_dir().name == "eap-ig-faithfulness"
