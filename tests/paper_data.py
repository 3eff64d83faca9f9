"""Tests that need the EAP-IG paper's prompt files, which the user supplies (like weights).

Mark such a test ``@pytest.mark.paper_data`` and take the ``paper_data`` fixture for the
directory. Where the files are absent the test is skipped with a reason that says where they
were looked for and where they come from, so ``pytest`` on a fresh clone passes. Where CI
provides them (``CI=true`` and the directory present) the same tests must run: a skip among
them is turned into a failure, so a CI run cannot pass by silently not testing.

The directory is found as the pipeline finds it (``attrpatch.tasks.eapig_files.data_dir``):
``$ATTRPATCH_PAPER_DATA``, else ``paper_data_dir`` of ``config/paper.yaml``, the one home of
the default (``../shared/data/eap-ig-faithfulness`` beside the repository).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from attrpatch.tasks import eapig_files as E

ROOT = Path(__file__).resolve().parents[1]
MARK = "paper_data"


def paper_data_dir() -> Path | None:
    """Where the paper's files are expected (None when nothing says where)."""
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    return E.data_dir({E.CONFIG_KEY: cfg.get(E.CONFIG_KEY)})


def present() -> bool:
    d = paper_data_dir()
    return d is not None and d.is_dir()


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def skip_reason() -> str:
    return (f"needs the EAP-IG paper's files ({E.PAPER_REPO}), not found at {paper_data_dir()}; "
            f"set ${E.ENV_VAR} to a clone of it to run this test")


def collection_modifyitems(items) -> None:
    """Skip every paper-data test when the directory is absent."""
    if present():
        return
    skip = pytest.mark.skip(reason=skip_reason())
    for item in items:
        if item.get_closest_marker(MARK):
            item.add_marker(skip)


def ci_skip_is_failure(item, report) -> None:
    """Under CI with the data present, a paper-data test that skipped has failed."""
    if report.skipped and item.get_closest_marker(MARK) and ci() and present():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"CI=true and the EAP-IG paper's files are at {paper_data_dir()}: "
                           f"this test must run, but it skipped ({reason})")
