"""The teacher's two jobs, done by nbgrader: build the student release, grade submissions.

Both run nbgrader's own machinery (`nbgrader.apps.NbGraderAPI`: generate_assignment strips
the "### BEGIN/END SOLUTION" regions and outputs, autograde executes each submission with a
per-cell timeout, restores the locked check cells from the instructor version and records
each check cell's points in the gradebook) inside a scratch course directory, so the
repository's `course/` folder is only read. The course settings live in
`course/nbgrader_config.py`.

Submissions: ``DIR/<student>/<assignment>/<notebook>.ipynb`` (nbgrader's layout) or
``DIR/<student>/<notebook>.ipynb`` (the notebook's name is the assignment's). Grades: one row
per student and exercise (student, assignment, exercise, points, max_points, feedback), the
feedback being the check's one line (or the error that stopped the cell).
"""
from __future__ import annotations

import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import pandas as pd

try:   # the `course` extra; without it the module imports and each command says what to install
    import nbformat
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader
    _MISSING = None
except ModuleNotFoundError as e:
    _MISSING = e

from ..io import atomic_path, write_csv

COURSE_DIR = Path(__file__).resolve().parents[3] / "course"   # the repository's course/ folder
CONFIG_FILE = "nbgrader_config.py"
COLUMNS = ["student", "assignment", "exercise", "points", "max_points", "feedback"]
_LINE = re.compile(r"^\[(PASS|FAIL)\] (.*)$")
# The install cell (each notebook's first code cell) names where pip installs the package from in
# one line, `PIP_SOURCE = ...`; the release writes the teacher's source there (`pip_source_for`).
PIP_SOURCE_LINE = re.compile(r"^PIP_SOURCE = .*$", re.M)
PACKAGE_SPEC = "attrpatch[course]"
URL_KEYS = ("Repository", "Source", "Source Code", "Homepage")   # [project.urls] keys tried, in order


class CourseError(RuntimeError):
    """A teacher's command cannot run (no course folder, no submissions, nbgrader failed)."""


def _require_nbgrader() -> None:
    if _MISSING is not None:
        raise CourseError(f"the course commands need nbgrader ({_MISSING}): pip install -e '.[course]'")


def _config(course_dir: Path, root: Path, timeout: int | None):
    cfg_path = course_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise CourseError(f"no {CONFIG_FILE} in {course_dir}: not a course folder")
    cfg = PyFileConfigLoader(CONFIG_FILE, path=str(course_dir)).load_config()
    cfg.CourseDirectory.root = str(root)
    cfg.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    cfg.Exchange.root = str(root / "exchange")
    if timeout is not None:
        cfg.Execute.timeout = int(timeout)
    return cfg


def assignments(course_dir: Path = COURSE_DIR) -> list[str]:
    """Names of the course's assignments (folders of source/ holding a notebook), sorted."""
    src = Path(course_dir) / "source"
    names = sorted(p.parent.name for p in src.glob("*/*.ipynb"))
    if not names:
        raise CourseError(f"no notebooks under {src}/<assignment>/")
    return list(dict.fromkeys(names))


def _scratch(course_dir: Path, root: Path, names: list[str], timeout: int | None):
    """A course directory at root holding the instructor notebooks, every assignment generated."""
    _require_nbgrader()
    for a in names:
        shutil.copytree(course_dir / "source" / a, root / "source" / a, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    api = NbGraderAPI(config=_config(course_dir, root, timeout))
    for a in names:
        res = api.generate_assignment(a, force=True, create=True)
        if not res["success"]:
            raise CourseError(f"nbgrader generate_assignment {a} failed: {res.get('error') or res.get('log')}")
    return api


def pip_source_for(course_dir=COURSE_DIR) -> str | None:
    """Where students install from: ``attrpatch[course] @ git+<url>`` with the first URL of
    `URL_KEYS` in the checkout's pyproject.toml ``[project.urls]``; None when it lists none."""
    pyproject = Path(course_dir).resolve().parent / "pyproject.toml"
    try:
        urls = tomllib.loads(pyproject.read_text()).get("project", {}).get("urls", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    url = next((urls[k] for k in URL_KEYS if urls.get(k)), None)
    return f"{PACKAGE_SPEC} @ git+{url}" if url else None


def set_pip_source(notebook, source: str) -> bool:
    """Write `source` into the `PIP_SOURCE = ...` line of the notebook's install cell (atomically);
    False when the notebook has no such line."""
    _require_nbgrader()
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and PIP_SOURCE_LINE.search(cell.source):
            line = f"PIP_SOURCE = {source!r}   # written by `attrpatch course release`"
            cell.source = PIP_SOURCE_LINE.sub(lambda _: line, cell.source, count=1)
            with atomic_path(notebook) as tmp:
                nbformat.write(nb, tmp)
            return True
    return False


def release(out_dir, course_dir=COURSE_DIR, names: list[str] | None = None, pip_source: str | None = None) -> list[Path]:
    """Write the student notebooks (solutions stripped, outputs cleared) to out_dir/<assignment>/.

    pip_source: what each notebook's install cell pip-installs where attrpatch is missing
    (Colab); default `pip_source_for` (the checkout's project URL), else the cell keeps None and
    tells such a student to ask for the source.
    """
    course_dir, out_dir = Path(course_dir), Path(out_dir)
    pip_source = pip_source or pip_source_for(course_dir)
    names = names or assignments(course_dir)
    with tempfile.TemporaryDirectory(prefix="attrpatch-course-") as tmp:
        root = Path(tmp)
        _scratch(course_dir, root, names, None)
        written = []
        for a in names:
            dest = out_dir / a
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(root / "release" / a, dest)
            written += sorted(dest.glob("*.ipynb"))
    if pip_source:
        for nb in written:
            set_pip_source(nb, pip_source)
    return written


def _find_submissions(sub_dir: Path, names: list[str]) -> dict[tuple[str, str], list[Path]]:
    """(student, assignment) -> submitted notebooks, from either accepted layout."""
    found: dict[tuple[str, str], list[Path]] = {}
    for student in sorted(p for p in sub_dir.iterdir() if p.is_dir()):
        for a in names:
            nested = sorted((student / a).glob("*.ipynb"))
            flat = [p for p in student.glob("*.ipynb") if p.stem == a]
            if nested or flat:
                found[(student.name, a)] = nested or flat
    if not found:
        raise CourseError(f"no submissions in {sub_dir}: expected {sub_dir}/<student>/<assignment>/<notebook>.ipynb "
                          f"or {sub_dir}/<student>/<notebook>.ipynb for assignments {names}")
    return found


def feedback_of(cell) -> str:
    """The check's one line from a graded cell's outputs, else the error that stopped it."""
    lines, error = [], None
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            lines += [m.group(2) for m in map(_LINE.match, out.get("text", "").splitlines()) if m]
        elif out.get("output_type") == "error":
            error = f"{out.get('ename')}: {out.get('evalue') or 'the cell stopped'}".strip()
    if error and error.startswith("CellTimeoutError"):
        error = "the cell ran past the grading time limit and was interrupted (an endless loop?)"
    return (lines[-1] if lines else None) or (f"error: {error}" if error else "no check output")


def grade(sub_dir, out_csv=None, course_dir=COURSE_DIR, timeout: int | None = None, work_dir=None) -> pd.DataFrame:
    """Autograde every submission in sub_dir; returns (and writes to out_csv) the grade table.

    timeout: seconds one cell may run (default: the course's nbgrader_config.py). work_dir: keep
    nbgrader's scratch course directory there (autograded notebooks, gradebook) instead of a
    temporary one; it must not exist yet.
    """
    _require_nbgrader()
    course_dir, sub_dir = Path(course_dir), Path(sub_dir)
    if not sub_dir.is_dir():
        raise CourseError(f"submissions folder {sub_dir} does not exist")
    subs = _find_submissions(sub_dir, assignments(course_dir))
    names = sorted({a for _, a in subs})
    rows = []
    if work_dir is not None and Path(work_dir).exists():
        raise CourseError(f"work_dir {work_dir} exists; give a new folder (nbgrader's scratch course directory)")
    with tempfile.TemporaryDirectory(prefix="attrpatch-grade-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        api = _scratch(course_dir, root, names, timeout)
        for (student, a), files in subs.items():
            dest = root / "submitted" / student / a
            dest.mkdir(parents=True)
            for f in files:
                shutil.copy2(f, dest / f.name)
            res = api.autograde(a, student, force=True, create=True)
            failed = None if res["success"] else (res.get("error") or res.get("log") or "").strip().splitlines()[-1:]
            with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
                for nb in gb.find_assignment(a).notebooks:
                    graded = root / "autograded" / student / a / f"{nb.name}.ipynb"
                    cells = {}
                    if graded.is_file():
                        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c
                                 for c in nbformat.read(graded, as_version=4).cells}
                    for gc in nb.grade_cells:
                        try:
                            g = gb.find_grade(gc.name, nb.name, a, student)
                            score = g.score
                        except Exception:   # noqa: BLE001 - nbgrader raises MissingEntry when it graded nothing
                            score = None
                        cell = cells.get(gc.name)
                        text = feedback_of(cell) if cell is not None else f"not graded: {failed or 'notebook missing'}"
                        rows.append([student, a, gc.name, float(score or 0.0), float(gc.max_score), text])
    table = pd.DataFrame(rows, columns=COLUMNS)
    if out_csv is not None:
        write_csv(out_csv, table)
    return table
