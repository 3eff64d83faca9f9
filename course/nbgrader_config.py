# nbgrader settings of the attrpatch course (read by `python -m attrpatch.course` and by
# nbgrader itself when run in this folder). Solutions are marked with nbgrader's
# "### BEGIN SOLUTION" / "### END SOLUTION"; check cells are autograded test cells whose
# value (the points of `attrpatch.course` checks) is the cell's partial credit.
c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file
c.CourseDirectory.course_id = "attrpatch"
c.CourseDirectory.source_directory = "source"
c.Execute.timeout = 300            # seconds one cell may run during grading before it is interrupted
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
