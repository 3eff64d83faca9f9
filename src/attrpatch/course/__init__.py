"""Course kit: checkers that grade students' implementations against exact ground truth.

A check runs the student's function on fresh inputs (tiny random models, small batches it
builds itself), compares the answer with exact patching or the package's tested method, and
returns a `result.CheckResult` (passed, points, one line of feedback naming what differs,
where and the likely mistake). Broken student code (raises, wrong shape/dtype, NaN, runs too
long) is feedback with zero points, never an exception.

Modules: `result` (the result and the guards around a student's call), `inputs` (fresh
models and batches), `receiver` (one edge's patch as a function of one activation, for the
autograd exercises), `check_patching`, `check_eap`, `check_eap_ig`, `check_atp`, `check_gp_hvp`,
`check_circuits` (one per notebook), `models` (notebook 06's trained tiny model, cached),
`teacher` (student release and grading with nbgrader), `commands`/`__main__` (the teacher's
commands: release, grade, prepare).
"""
