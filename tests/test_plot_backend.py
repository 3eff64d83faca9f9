"""The plot modules leave matplotlib's backend to the caller: a notebook keeps its inline
figures (they used to switch every importer to Agg), while the Snakefile and the `attrpatch`
command set MPLBACKEND=Agg for their jobs, which draw to files only."""
import os
import subprocess
import sys

import pytest

PLOTS = ["attrpatch.plots." + m for m in ("roc", "circuit", "faithfulness", "atp", "second_order", "scales")]


def test_importing_the_plot_modules_keeps_the_callers_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import " + ", ".join(PLOTS) +
            "; import matplotlib.pyplot as plt; print(matplotlib.get_backend())")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().lower() == "svg"


@pytest.mark.parametrize("entry", ["Snakefile", "src/attrpatch/cli/__init__.py"])
def test_file_drawing_entry_points_choose_agg(entry):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / entry).read_text()
    assert 'os.environ.setdefault("MPLBACKEND", "Agg")' in text
