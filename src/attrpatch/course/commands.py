"""The teacher's commands: `attrpatch course release`, `grade` and `prepare`.

Also reachable as ``python -m attrpatch.course ...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .models import DEFAULT_PROFILE, NOTEBOOK_TASKS, prepare
from .teacher import COURSE_DIR, CourseError, assignments, grade, pip_source_for, release


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Course kit: build the student release, grade submissions (nbgrader).")
    p.add_argument("--course", type=Path, default=COURSE_DIR, help=f"course folder with source/ and nbgrader_config.py (default {COURSE_DIR})")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("release", help="write the student notebooks (solutions stripped) to --out/<assignment>/")
    r.add_argument("--out", type=Path, default=Path("release"), help="output folder (default ./release)")
    r.add_argument("assignment", nargs="*", help="assignments to release (default: all)")
    r.add_argument("--pip-source", default=None,
                   help="what the notebooks' install cell pip-installs where attrpatch is missing (Colab), e.g. "
                        "'attrpatch[course] @ git+https://host/you/attrpatch' (default: pyproject.toml's project URL)")
    g = sub.add_parser("grade", help="autograde DIR/<student>/<assignment>/<notebook>.ipynb into a CSV")
    g.add_argument("submissions", type=Path, help="folder of submissions, one folder per student")
    g.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV: student, assignment, exercise, points, max_points, feedback")
    g.add_argument("--timeout", type=_positive_int, default=None, help="seconds one cell may run (default: nbgrader_config.py)")
    g.add_argument("--keep", type=Path, default=None, help="keep nbgrader's working folder (autograded notebooks) here")
    pr = sub.add_parser("prepare", help="train (once) and cache the tiny models the notebooks use (minutes)")
    pr.add_argument("--profile", default=DEFAULT_PROFILE, help=f"profile whose trained models to cache (default {DEFAULT_PROFILE})")
    pr.add_argument("--task", action="append", default=None,
                    help=f"a task whose model to cache (repeatable; default: {', '.join(NOTEBOOK_TASKS)})")
    return p


def main(argv=None, prog: str = "python -m attrpatch.course") -> int:
    a = _parser(prog).parse_args(argv)
    try:
        if a.cmd == "release":
            unknown = sorted(set(a.assignment) - set(assignments(a.course)))
            if unknown:
                raise CourseError(f"unknown assignments {unknown}; allowed: {assignments(a.course)}")
            source = a.pip_source or pip_source_for(a.course)
            for path in release(a.out, a.course, a.assignment or None, pip_source=source):
                print(path)
            if not source:
                print("note: no --pip-source and no project URL in pyproject.toml: where attrpatch is missing "
                      "(Colab) the notebooks' first cell asks the student for ATTRPATCH_PIP_SOURCE")
            return 0
        if a.cmd == "prepare":
            try:
                paths = prepare(a.profile, tuple(a.task or NOTEBOOK_TASKS))
            except ValueError as e:   # an unknown profile, task or model: one line
                raise CourseError(str(e)) from None
            for path in paths:
                print(path)
            return 0
        table = grade(a.submissions, a.out, a.course, timeout=a.timeout, work_dir=a.keep)
        totals = table.groupby("student")[["points", "max_points"]].sum()
        print(totals.to_string())
        print(f"wrote {a.out} ({len(table)} rows)")
        return 0
    except CourseError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
