"""The teacher's commands: `attrpatch course release` and `attrpatch course grade`.

Also reachable as ``python -m attrpatch.course ...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .teacher import COURSE_DIR, CourseError, assignments, grade, release


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
    g = sub.add_parser("grade", help="autograde DIR/<student>/<assignment>/<notebook>.ipynb into a CSV")
    g.add_argument("submissions", type=Path, help="folder of submissions, one folder per student")
    g.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV: student, assignment, exercise, points, max_points, feedback")
    g.add_argument("--timeout", type=_positive_int, default=None, help="seconds one cell may run (default: nbgrader_config.py)")
    g.add_argument("--keep", type=Path, default=None, help="keep nbgrader's working folder (autograded notebooks) here")
    return p


def main(argv=None, prog: str = "python -m attrpatch.course") -> int:
    a = _parser(prog).parse_args(argv)
    try:
        if a.cmd == "release":
            unknown = sorted(set(a.assignment) - set(assignments(a.course)))
            if unknown:
                raise CourseError(f"unknown assignments {unknown}; allowed: {assignments(a.course)}")
            for path in release(a.out, a.course, a.assignment or None):
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
