"""The course kit end to end with nbgrader: the student release is built, every instructor
notebook and every student notebook is executed (as submissions of the students `ada`, who
hands in the instructor version, and `blank`, who hands in the release untouched), and the
grader turns a folder of submissions into the expected points: right, a sign error, blank,
and a runaway cell that the per-cell timeout interrupts. The notebooks run on random models here
(`ATTRPATCH_COURSE_MODEL=random`: a trained model cached on this machine would change their cost),
and the release writes the teacher's pip source into each install cell."""
import nbformat
import pandas as pd
import pytest

pytest.importorskip("nbgrader", reason="the course kit needs the `course` extra (pip install -e '.[course]')")

from attrpatch.course.commands import main  # noqa: E402
from attrpatch.course.models import MODEL_ENV  # noqa: E402
from attrpatch.course.teacher import COURSE_DIR, assignments, pip_source_for  # noqa: E402

FIRST = "01_patching"
TIMEOUT = 60          # seconds per cell while grading (the slowest cell measured ~17 s, loaded machine)
RUNAWAY_TIMEOUT = 20  # the runaway's own grading: 01_patching's cells take ~12 s together; the runaway costs this
SOURCE = "attrpatch[course] @ git+https://example.org/teacher/attrpatch"


def _nb(path):
    return nbformat.read(path, as_version=4)


def _gid(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _solutions(nb):
    return {_gid(c): c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def _filled(release_nb, solutions):
    """The released notebook with the given solution cells written in (what a student hands in)."""
    nb = nbformat.from_dict(release_nb)
    for c in nb.cells:
        if _gid(c) in solutions:
            c.source = solutions[_gid(c)]
    return nb


def _submit(subs, student, a, nb):
    d = subs / student / a
    d.mkdir(parents=True)
    nbformat.write(nb, d / f"{a}.ipynb")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODEL_ENV, "random")   # the kernels nbgrader starts inherit it
        yield _course(tmp_path_factory)


def _course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    rel, subs = root / "release", root / "submissions"
    assert main(["release", "--out", str(rel), "--pip-source", SOURCE]) == 0
    names = assignments()
    for a in names:
        _submit(subs, "ada", a, _nb(COURSE_DIR / "source" / a / f"{a}.ipynb"))
        _submit(subs, "blank", a, _nb(rel / a / f"{a}.ipynb"))
    right = _solutions(_nb(COURSE_DIR / "source" / FIRST / f"{FIRST}.ipynb"))
    flip = "delta = corrupt_out[:, :, ui] - clean_out[:, :, ui]"
    assert flip in right["patch_one_edge_solution"]
    sign = {**right, "patch_one_edge_solution": right["patch_one_edge_solution"].replace(
        flip, "delta = clean_out[:, :, ui] - corrupt_out[:, :, ui]")}
    runaway = {**right, "count_edges_solution": "while True:\n    pass\n" + right["count_edges_solution"]}
    released = _nb(rel / FIRST / f"{FIRST}.ipynb")
    _submit(subs, "sign", FIRST, _filled(released, sign))
    stuck = root / "runaway_submissions"          # graded on its own, with a shorter per-cell timeout
    _submit(stuck, "runaway", FIRST, _filled(released, runaway))
    csv, work = root / "grades.csv", root / "work"
    assert main(["grade", str(subs), "--out", str(csv), "--timeout", str(TIMEOUT), "--keep", str(work)]) == 0
    csv2, work2 = root / "runaway_grades.csv", root / "runaway_work"
    assert main(["grade", str(stuck), "--out", str(csv2), "--timeout", str(RUNAWAY_TIMEOUT), "--keep", str(work2)]) == 0
    table = pd.concat([pd.read_csv(csv), pd.read_csv(csv2)], ignore_index=True)
    return dict(rel=rel, table=table, work=work, runaway_work=work2, names=names)


def _rows(table, student, a=FIRST):
    t = table[(table.student == student) & (table.assignment == a)]
    return {r.exercise: (r.points, r.max_points, r.feedback) for r in t.itertuples()}


def _errors(nb):
    return [(c.source[:40], o.get("ename")) for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "error"]


def test_release_strips_solutions_and_keeps_checks(course):
    for a in course["names"]:
        src, rel = _nb(COURSE_DIR / "source" / a / f"{a}.ipynb"), _nb(course["rel"] / a / f"{a}.ipynb")
        text = "\n".join(c.source for c in rel.cells)
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
        checks = lambda nb: {_gid(c): c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
        assert checks(rel) == checks(src) and checks(src)
        assert not any(c.get("outputs") for c in rel.cells if c.cell_type == "code")
        install = [c.source for c in rel.cells if c.cell_type == "code"][0]
        assert f"PIP_SOURCE = {SOURCE!r}" in install and "ATTRPATCH_PIP_SOURCE" in install


def test_every_notebook_has_the_same_install_cell():
    """One pattern (`teacher.PIP_SOURCE_LINE` is what the release rewrites): the first code cell."""
    cells = {a: [c.source for c in _nb(COURSE_DIR / "source" / a / f"{a}.ipynb").cells if c.cell_type == "code"][0]
             for a in assignments()}
    first = cells[FIRST]
    assert "PIP_SOURCE = None" in first and "ATTRPATCH_PIP_SOURCE" in first
    assert {a for a, src in cells.items() if src != first} == set()


def test_pip_source_comes_from_the_project_url(tmp_path):
    (tmp_path / "course").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "attrpatch"\n[project.urls]\n'
                                             'Homepage = "https://example.org/docs"\nRepository = "https://example.org/x/attrpatch"\n')
    assert pip_source_for(tmp_path / "course") == "attrpatch[course] @ git+https://example.org/x/attrpatch"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "attrpatch"\n')
    assert pip_source_for(tmp_path / "course") is None


def test_instructor_notebooks_run_and_pass_every_check(course):
    for a in course["names"]:
        rows = _rows(course["table"], "ada", a)
        assert rows and all(p == m and fb.startswith(ex) for ex, (p, m, fb) in rows.items()), rows
        assert _errors(_nb(course["work"] / "autograded" / "ada" / a / f"{a}.ipynb")) == []


def test_student_release_runs_and_says_not_yet_implemented(course):
    for a in course["names"]:
        rows = _rows(course["table"], "blank", a)
        assert rows and all(p == 0 and "not yet implemented" in fb for p, _, fb in rows.values()), rows
        assert _errors(_nb(course["work"] / "autograded" / "blank" / a / f"{a}.ipynb")) == []


def test_grades_of_right_sign_error_and_blank(course):
    t = course["table"]
    points = {s: {ex: p for ex, (p, _, _) in _rows(t, s).items()} for s in ("ada", "sign", "blank")}
    assert points == {"ada": {"count_edges": 1.0, "patch_one_edge": 2.0},
                      "sign": {"count_edges": 1.0, "patch_one_edge": 0.0},
                      "blank": {"count_edges": 0.0, "patch_one_edge": 0.0}}
    assert "sign flipped" in _rows(t, "sign")["patch_one_edge"][2]
    assert list(t.columns) == ["student", "assignment", "exercise", "points", "max_points", "feedback"]


def test_grader_interrupts_a_runaway_cell_and_goes_on(course):
    rows = _rows(course["table"], "runaway")
    assert rows["count_edges"][0] == 0 and "not defined" in rows["count_edges"][2]
    assert rows["patch_one_edge"][0] == 2.0
    nb = _nb(course["runaway_work"] / "autograded" / "runaway" / FIRST / f"{FIRST}.ipynb")
    errors = _errors(nb)   # the interrupted cell (nbgrader records the interrupt and the timeout), nothing else
    assert errors and all(src.startswith("while True:") for src, _ in errors), errors
    assert {"KeyboardInterrupt", "CellTimeoutError"} & {e for _, e in errors}
