"""The papers' reported numbers that experiments and plots use, read from the one data file
``paper_numbers.yaml`` beside ``paper_claims.yaml`` (not restated in scripts)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .config import ConfigError, parse_yaml

PATH = Path(__file__).resolve().parents[3] / "paper_numbers.yaml"
KEYS = ("eap_roc_auc", "eap_r2", "eapig_points", "eapig_notes", "eapig_pearson", "eapgp_max_gain")


@lru_cache(maxsize=None)
def _load(path: Path) -> dict:
    doc = parse_yaml(path)
    if not isinstance(doc, dict) or set(doc) != set(KEYS):
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(f"{path}: must hold exactly the keys {list(KEYS)}, got {got}")
    return doc


def paper_numbers(key: str, path: str | Path | None = None):
    """One entry of paper_numbers.yaml (a fresh copy is not made: do not modify)."""
    if key not in KEYS:
        raise KeyError(f"unknown paper number {key!r}; allowed: {list(KEYS)}")
    return _load(Path(path) if path else PATH)[key]
