"""Atomic output files: every table, JSON and figure is written to a temp file and renamed,
so an interrupted run never leaves a half-written result that Snakemake would trust."""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temp path next to `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _clean(obj):
    """JSON-safe: numpy/torch scalars to float, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


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
