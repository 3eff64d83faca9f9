"""Atomic output files: every table, JSON and figure is written to a temp file and renamed,
so an interrupted run never leaves a half-written result that Snakemake would trust."""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    m = os.umask(0o022)
    os.umask(m)
    return m


def normal_mode(path, directory: bool = False) -> None:
    """Give `path` the mode a plain open()/mkdir() would have (0666/0777 minus the umask):
    mkstemp/mkdtemp create 0600/0700, and a rename keeps the temp's mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def normal_tree(path) -> None:
    """`normal_mode` for a directory and everything in it (some writers, e.g. safetensors,
    create 0600 files)."""
    for root, dirs, files in os.walk(path):
        normal_mode(root, directory=True)
        for f in files:
            normal_mode(os.path.join(root, f))


def temp_prefix(path) -> str:
    """Name prefix of the temp files of output `path` (hidden, next to it)."""
    return f".{Path(path).name}."


def clean_stale_temps(path) -> list[Path]:
    """Remove temp files and directories left next to output `path` by a killed writer (a kill
    between the temp write and the rename leaves one that nothing else removes). Called when
    an output is (re)made; the Snakefile also calls it for every output when a run starts."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(glob.escape(temp_prefix(path)) + "*"))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temp path next to `path`; rename it onto `path` if the block succeeds.
    The file ends with the user's normal mode (umask), not the temp file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        normal_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path):
    """Yield a temp directory next to `path`; when the block succeeds, it replaces `path` (a
    previous one is removed first), so a killed writer never leaves a half-filled folder there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path)))
    try:
        yield tmp
        normal_tree(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def json_safe(obj):
    """JSON-safe: numpy/torch scalars to float, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")


def write_csv(path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_figure(fig, path_png, also_pdf: bool = True) -> None:
    """Save a matplotlib figure as PNG (and PDF beside it), atomically."""
    path_png = Path(path_png)
    with atomic_path(path_png) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
    if also_pdf:
        with atomic_path(path_png.with_suffix(".pdf")) as tmp:
            fig.savefig(tmp, bbox_inches="tight", format="pdf")
