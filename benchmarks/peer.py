"""Row 5: can a public circuit-discovery library run against this environment?

Checks auto-circuit (PyPI ``auto-circuit``; its EAP is
``auto_circuit.prune_algos.mask_gradient.mask_gradient_prune_scores``) by importing it
with the project's own transformer_lens/torch, from the project venv or from a separate
venv (``--peer-python``, e.g. /tmp/peer-venv/bin/python with ``auto-circuit`` installed
``--no-deps``). It never installs anything itself. Its outcome is a row saying what
happened: the exact import error when it cannot run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

PROBE = (
    "import transformer_lens, torch, importlib.metadata as md\n"
    "print('torch', torch.__version__, 'transformer_lens', md.version('transformer-lens'))\n"
    "import auto_circuit.prune_algos.mask_gradient\n"
    "from auto_circuit.utils.graph_utils import patchable_model\n"
    "print('IMPORT_OK')\n"
)


def probe(python: str, first_path: str | None = None) -> tuple[bool, str]:
    """Import auto-circuit with `python`; `first_path` (a site-packages dir) is put first on
    sys.path so that its transformer_lens/torch win (the project's)."""
    env = dict(os.environ, PYTHONPATH=first_path) if first_path else None
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{type(e).__name__}: {e}"
    text = (out.stdout + out.stderr).strip().splitlines()
    versions = next((line for line in text if line.startswith("torch ")), "")
    if "IMPORT_OK" in out.stdout:
        return True, versions
    err = next((line for line in reversed(text) if "Error" in line), text[-1] if text else "no output")
    return False, f"{versions}: {err}".strip(": ")


def run(peer_python: str | None = None) -> list[dict]:
    project_site = sysconfig.get_paths()["purelib"]
    if peer_python:
        ok, msg = probe(peer_python, first_path=project_site)
        note = f"with the project's torch/transformer_lens ({peer_python}, project site-packages first): "
        note += "imports" if ok else f"cannot import: {msg}"
        ok2, msg2 = probe(peer_python)
        note += f"; with its own venv: {'imports (' + msg2 + ')' if ok2 else 'cannot import: ' + msg2}"
        if ok2 and not ok:
            note += ("; a transformer_lens 2.x HookedTransformer and our TransformerBridge cannot share one "
                     "process, so no same-process timing/score comparison")
    else:
        ok, msg = probe(sys.executable)
        note = f"in the project venv: {'imports' if ok else 'cannot import: ' + msg}"
    return [dict(id="peer_auto_circuit", measurement="peer library side by side (auto-circuit 1.0.1 EAP)",
                 value=float("nan"), target="ours >= 1.5x faster, scores equal to 1e-4", ok=None, context=note)]
