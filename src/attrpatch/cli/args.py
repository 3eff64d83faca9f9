"""Argument checks the `attrpatch` subcommands share (method options, positive numbers), in a
leaf module so that `cli` and `cli.circuit` both import it without a cycle. Checked as the
command line is parsed, before any model loads; imports stay inside the functions so
`attrpatch --help` needs no torch."""
from __future__ import annotations

import argparse
import json


def cli_options(method: str) -> list[str]:
    """Options of `method` the command line takes (not the Python-only ones: hooks, extra returns)."""
    from ..methods.registry import method_options
    from ..methods.registry import OPTIONS

    return [o for o in method_options(method) if not (o in OPTIONS and OPTIONS[o].api_only)]


def api_only_options(method: str) -> list[str]:
    from ..methods.registry import method_options

    return [o for o in method_options(method) if o not in cli_options(method)]


def _parse_options(method: str, text: str | None) -> dict:
    """--options as a JSON object of known, valid options of `method` (checked before loading)."""
    from ..methods.registry import check_options

    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--options is not valid JSON ({e.msg} at character {e.pos}): {text!r}; "
                         'example: --options \'{"steps": 5}\'') from None
    if not isinstance(options, dict):
        raise ValueError(f"--options must be a JSON object like '{{\"steps\": 5}}', got {text!r}")
    valid = cli_options(method)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"method {method!r} has no option(s) {bad}; valid options: {', '.join(valid)}")
    return check_options(method, options)


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (the message names the bound and the value)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {v}")
        return v
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)      # a count that may be 0 (0: do nothing), e.g. --exact-top


def _positive_number(text: str) -> float:
    """A finite number > 0 (a threshold: 0 or less would keep every edge)."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v
