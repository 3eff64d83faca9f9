"""An interrupted run resumes with the plain command (issue 24, item 5).

A one-rule workflow in a scratch directory, with the repository's ``profiles/default`` copied
beside its Snakefile (where Snakemake 9 reads the workflow profile by itself). While its job
runs, SIGINT goes to the snakemake process alone (not the process group, as the issue's walk
did): Snakemake 9.27 waits for the job, exits 1 and leaves the output marked incomplete
(``.snakemake/incomplete/``), no lock. The job holds until Snakemake has logged the
interrupt, so the order is the same on a loaded machine. Then without the profile (``--workflow-profile none``,
the negative control) Snakemake stops with IncompleteFilesException; with it, the plain
``snakemake --cores 1`` reruns the job and succeeds. About 10-20 s (three Snakemake starts).

Snakemake is started with SIGINT at its default action. A process started in the background by a
non-interactive shell (``pytest ... &``, a CI runner, nohup) inherits SIGINT *ignored*; Python
then installs no KeyboardInterrupt handler and Snakemake never sees the interrupt. That, not
timing, is why earlier versions of this test failed in some full-suite runs (found with
/proc/<pid>/status: SigIgn had the bit of signal 2, SIGINT, set).
"""
import os

import pytest
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = """
rule all:
    input: "out.txt"

rule slow:
    output: "out.txt"
    shell: "echo partial > {output}; while [ ! -f release ]; do sleep 0.1; done; echo first run >> {output}"
"""


def _snakemake(cwd, *args, **kw):
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def _sigint_default() -> None:
    """In the child before exec: SIGINT at its default action, whatever the test runner inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(cwd: Path) -> None:
    """Start the workflow and send SIGINT to snakemake alone once its job is running."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"      # the interrupt's log line is read while Snakemake runs
    log = cwd / "interrupted.log"
    with open(log, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1"], cwd=cwd, env=env,
                             start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=_sigint_default)
    try:
        deadline = time.monotonic() + 300           # a loaded CI machine starts Snakemake slowly
        while not (cwd / "out.txt").exists():
            assert p.poll() is None and time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGINT)
        # the job cannot finish before Snakemake has taken the interrupt (it waits for `release`):
        # under load a job that ends on its own first made Snakemake exit 0 with nothing to resume
        deadline = time.monotonic() + 60
        while "Terminating processes on user request" not in log.read_text():
            assert p.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        (cwd / "release").touch()
        assert p.wait(timeout=120) != 0, log.read_text()[-2000:]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)         # only on a failed test: the group this test started


def test_plain_command_resumes_an_interrupted_run(tmp_path):
    shutil.copytree(ROOT / "profiles" / "default", tmp_path / "profiles" / "default")
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    _interrupt(tmp_path)
    assert os.listdir(tmp_path / ".snakemake" / "incomplete"), "the interrupt left no incomplete marker"

    without = _snakemake(tmp_path, "--workflow-profile", "none")      # negative control
    assert without.returncode != 0
    assert "IncompleteFilesException" in without.stdout + without.stderr

    (tmp_path / "Snakefile").write_text(SNAKEFILE.replace("while [ ! -f release ]; do sleep 0.1; done; echo first run",
                                                          "echo rerun"))
    plain = _snakemake(tmp_path)
    assert plain.returncode == 0, (plain.stdout + plain.stderr)[-3000:]
    assert (tmp_path / "out.txt").read_text() == "partial\nrerun\n"      # the job ran again
    assert not os.listdir(tmp_path / ".snakemake" / "incomplete")
