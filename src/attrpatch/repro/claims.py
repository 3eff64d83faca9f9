"""Check experiment results against ``paper_claims.yaml`` and write the claims report.

Every number the package reproduces is stated once, as a claim, in ``paper_claims.yaml``:
which paper says it, which result file and field measure it, and the tolerance that
decides PASS or FAIL. This module is the only place that interprets that file, so the
DAG, the CLI and the tests all agree on what "the claim held" means.

Design choices, and why:

- ``load_claims`` is strict (unknown keys, wrong types, duplicate ids, unknown result
  files are errors) because a typo in a claim would otherwise silently turn into a
  claim that is never checked. It reports *all* problems at once, each naming the
  claim, so one edit fixes the file.
- ``check_claims`` never raises for a bad result: a missing file, a missing field or a
  NaN is an ERROR outcome in the report. One broken experiment must not hide the
  verdict on every other claim.
- The report is written atomically so a Snakemake rule never leaves a half-written
  report behind that a later run would take as up to date.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from ..io import clean_stale_temps, normal_mode
from .config import load_yaml_strict

PROFILES = ("tiny", "paper", "mib")
STATUSES = ("PASS", "FAIL", "ERROR", "BLOCKED")

REQUIRED_KEYS = frozenset({"id", "paper", "statement", "profile", "result", "tolerance", "note"})
OPTIONAL_KEYS = frozenset({"paper_value", "figure", "reconstructed", "loosened", "blocked", "convention",
                           "explanation"})
RESULT_KEYS = frozenset({"file", "field"})

INEQUALITIES = {
    "ge": (">=", lambda m, b: m >= b),
    "gt": (">", lambda m, b: m > b),
    "le": ("<=", lambda m, b: m <= b),
    "lt": ("<", lambda m, b: m < b),
}
# Keys each tolerance type accepts (besides ``type``) and which of them are required.
TOLERANCE_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "abs": (frozenset({"value"}), frozenset({"value"})),
    "rel": (frozenset({"value"}), frozenset({"value"})),
    "between": (frozenset({"low", "high"}), frozenset({"low", "high"})),
    **{op: (frozenset({"value", "ref", "margin"}), frozenset()) for op in INEQUALITIES},
}


class ClaimsError(ValueError):
    """The claims file is malformed; the message names every bad entry."""


@dataclass(frozen=True)
class FieldRef:
    """A value inside a JSON result file: ``file`` under results/<profile>/, dotted ``field``."""

    file: str
    field: str

    def __str__(self) -> str:
        return f"{self.file}:{self.field}"


@dataclass(frozen=True)
class Tolerance:
    """How a measured value is judged. See the schema comment in ``paper_claims.yaml``."""

    type: str
    value: float | None = None
    ref: FieldRef | None = None
    margin: float = 0.0
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Claim:
    """One validated entry of ``paper_claims.yaml``."""

    id: str
    paper: str
    statement: str
    profile: str
    result: FieldRef
    tolerance: Tolerance
    note: str
    paper_value: float | None = None
    figure: str | None = None
    reconstructed: bool = False
    loosened: str | None = None
    blocked: str | None = None   # why this claim cannot be checked here (reported, never PASS)
    convention: str | None = None  # which computing convention the claim checks, and its source
    explanation: str | None = None  # why a FAIL of this claim is a finding, not a bug (shown with the FAIL)


@dataclass
class Outcome:
    """The verdict on one claim; ``message`` explains FAIL/ERROR in words."""

    claim: Claim
    status: str
    expected: str
    measured: float | None = None
    message: str = ""


# --------------------------------------------------------------------------- loading


def _is_number(x: Any) -> bool:
    """bool is an int in Python, but ``true`` as a paper value is surely a mistake."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _label(entry: Any, index: int) -> str:
    """How an error names a claim: by id when it has a usable one, else by position."""
    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
        return f"claim '{entry['id']}'"
    return f"claims[{index}]"


def _check_keys(mapping: dict, allowed: Iterable[str], required: Iterable[str], where: str) -> list[str]:
    """Unknown and missing keys of one mapping, as error lines."""
    allowed, required = set(allowed), set(required)
    errs = [f"{where}: unknown key '{k}'; allowed: {sorted(allowed)}" for k in mapping if k not in allowed]
    errs += [f"{where}: missing key '{k}'" for k in sorted(required - set(mapping))]
    return errs


def _parse_ref(raw: Any, where: str, errs: list[str]) -> FieldRef | None:
    """A ``{file, field}`` mapping; both must be non-empty strings."""
    if not isinstance(raw, dict):
        errs.append(f"{where}: must be a mapping {{file: ..., field: ...}}, got {raw!r}")
        return None
    bad = _check_keys(raw, RESULT_KEYS, RESULT_KEYS, where)
    for k in RESULT_KEYS & set(raw):
        if not isinstance(raw[k], str) or not raw[k]:
            bad.append(f"{where}.{k}: must be a non-empty string, got {raw[k]!r}")
    errs.extend(bad)
    return None if bad else FieldRef(raw["file"], raw["field"])


def _number(raw: dict, key: str, where: str, errs: list[str]) -> float | None:
    """Optional numeric key of a tolerance; a non-number is an error."""
    if key not in raw:
        return None
    if not _is_number(raw[key]):
        errs.append(f"{where}.{key}: must be a number, got {raw[key]!r}")
        return None
    return float(raw[key])


def _parse_tolerance(raw: Any, paper_value: Any, where: str, errs: list[str], blocked: bool = False) -> Tolerance | None:
    """Validate one tolerance block against the keys its type accepts. A blocked claim may have
    paper_value null (the paper's number is what could not be read; it is never compared)."""
    if not isinstance(raw, dict):
        errs.append(f"{where}: must be a mapping with a 'type', got {raw!r}")
        return None
    ttype = raw.get("type")
    if ttype not in TOLERANCE_KEYS:
        errs.append(f"{where}.type: unknown tolerance type {ttype!r}; allowed: {sorted(TOLERANCE_KEYS)}")
        return None
    allowed, required = TOLERANCE_KEYS[ttype]
    n_before = len(errs)
    errs.extend(_check_keys(raw, allowed | {"type"}, required | {"type"}, where))
    nums = {k: _number(raw, k, where, errs) for k in ("value", "margin", "low", "high")}
    ref = _parse_ref(raw["ref"], f"{where}.ref", errs) if "ref" in raw else None
    if ttype in INEQUALITIES and ("value" in raw) == ("ref" in raw):
        errs.append(f"{where}: '{ttype}' needs exactly one of 'value' (a number) or 'ref' (a field)")
    if ttype in ("abs", "rel"):
        if not _is_number(paper_value) and not (blocked and paper_value is None):
            errs.append(f"{where}: '{ttype}' compares against paper_value, which must be a number, got {paper_value!r}")
        if nums["value"] is not None and nums["value"] < 0:
            errs.append(f"{where}.value: must be >= 0, got {nums['value']}")
    if ttype == "between" and None not in (nums["low"], nums["high"]) and nums["low"] > nums["high"]:
        errs.append(f"{where}: low {nums['low']} > high {nums['high']}")
    if len(errs) > n_before:
        return None
    return Tolerance(ttype, nums["value"], ref, nums["margin"] or 0.0, nums["low"], nums["high"])


def _optional_type(entry: dict, key: str, types: tuple, desc: str, where: str, errs: list[str]) -> None:
    """Type check for an optional scalar key (None allowed)."""
    v = entry.get(key)
    if v is not None and (not isinstance(v, types) or (bool not in types and isinstance(v, bool))):
        errs.append(f"{where}.{key}: must be {desc}, got {v!r}")


def _parse_claim(entry: Any, index: int, errs: list[str]) -> Claim | None:
    """Validate one entry; append every problem to ``errs``, return the Claim if none."""
    where = _label(entry, index)
    if not isinstance(entry, dict):
        errs.append(f"{where}: must be a mapping, got {entry!r}")
        return None
    n_before = len(errs)
    errs.extend(_check_keys(entry, REQUIRED_KEYS | OPTIONAL_KEYS, REQUIRED_KEYS, where))
    for k in ("id", "paper", "statement", "note"):
        if k in entry and (not isinstance(entry[k], str) or not entry[k].strip()):
            errs.append(f"{where}.{k}: must be a non-empty string, got {entry[k]!r}")
    if "profile" in entry and entry["profile"] not in PROFILES:
        errs.append(f"{where}.profile: unknown profile {entry['profile']!r}; allowed: {list(PROFILES)}")
    _optional_type(entry, "paper_value", (int, float), "a number or null", where, errs)
    _optional_type(entry, "figure", (str,), "a path string", where, errs)
    _optional_type(entry, "loosened", (str,), "a string saying what was loosened and why", where, errs)
    _optional_type(entry, "blocked", (str,), "a string saying why the claim cannot be checked", where, errs)
    _optional_type(entry, "convention", (str,), "a string naming the convention checked and its source", where, errs)
    if isinstance(entry.get("explanation"), str) and not entry["explanation"].strip():
        errs.append(f"{where}.explanation: must be a non-empty string saying why a FAIL is a finding, got ''")
    else:
        _optional_type(entry, "explanation", (str,), "a string saying why a FAIL is a finding, not a bug",
                       where, errs)
    if "reconstructed" in entry and not isinstance(entry["reconstructed"], bool):
        errs.append(f"{where}.reconstructed: must be true or false, got {entry['reconstructed']!r}")
    result = _parse_ref(entry["result"], f"{where}.result", errs) if "result" in entry else None
    tol = None
    if "tolerance" in entry:
        tol = _parse_tolerance(entry["tolerance"], entry.get("paper_value"), f"{where}.tolerance", errs,
                               blocked=bool(entry.get("blocked")))
    if len(errs) > n_before:
        return None
    pv = entry.get("paper_value")
    return Claim(
        id=entry["id"], paper=entry["paper"], statement=entry["statement"], profile=entry["profile"],
        result=result, tolerance=tol, note=entry["note"],
        paper_value=None if pv is None else float(pv), figure=entry.get("figure"),
        reconstructed=entry.get("reconstructed", False), loosened=entry.get("loosened"),
        blocked=entry.get("blocked"), convention=entry.get("convention"), explanation=entry.get("explanation"),
    )


def _read_yaml(path: Path) -> Any:
    """Parse YAML; a syntax error becomes a ClaimsError with file and line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ClaimsError(f"{path}: cannot read claims file: {e}") from e
    try:
        return load_yaml_strict(text)      # a duplicated key inside a claim is an error
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ClaimsError(f"{path}:{line}: invalid YAML: {getattr(e, 'problem', e)}") from e


def _duplicate_ids(entries: list) -> list[str]:
    """Ids used more than once: a report keyed by id would silently merge them."""
    seen: dict[str, int] = {}
    errs = []
    for i, e in enumerate(entries):
        cid = e.get("id") if isinstance(e, dict) else None
        if isinstance(cid, str):
            if cid in seen:
                errs.append(f"claim '{cid}': duplicate id (claims[{seen[cid]}] and claims[{i}])")
            else:
                seen[cid] = i
    return errs


def _unknown_results(claims: list[Claim], known_results: set[str]) -> list[str]:
    """Claims that read a file no experiment writes; caught before the DAG does any work."""
    errs = []
    for c in claims:
        refs = [("result", c.result)] + ([("tolerance.ref", c.tolerance.ref)] if c.tolerance.ref else [])
        for where, ref in refs:
            if ref.file not in known_results:
                errs.append(f"claim '{c.id}'.{where}.file: {ref.file!r} is written by no experiment; "
                            f"known: {sorted(known_results)}")
    return errs


def load_claims(path: str | os.PathLike, known_results: set[str] | None = None) -> list[Claim]:
    """Read and validate a claims file; raise ClaimsError listing every problem.

    ``known_results``: the result file names the experiments write. When given, a claim
    (or a tolerance ``ref``) that points elsewhere is an error, so a Snakemake run fails
    at parse time instead of after hours of work.
    """
    path = Path(path)
    doc = _read_yaml(path)
    if not isinstance(doc, dict) or set(doc) != {"claims"}:
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ClaimsError(f"{path}: top level must be a mapping with the single key 'claims', got {keys}")
    entries = doc["claims"] or []
    if not isinstance(entries, list):
        raise ClaimsError(f"{path}: 'claims' must be a list, got {type(entries).__name__}")
    errs = _duplicate_ids(entries)
    claims = [c for i, e in enumerate(entries) if (c := _parse_claim(e, i, errs)) is not None]
    if known_results is not None:
        errs += _unknown_results(claims, set(known_results))
    if errs:
        raise ClaimsError(f"{path}: {len(errs)} problem(s):\n  " + "\n  ".join(errs))
    return claims


# --------------------------------------------------------------------------- checking


class _ResultError(Exception):
    """A result could not be read; becomes an ERROR outcome, never escapes check_claims."""


class _Results:
    """Reads result JSON files once each and resolves dotted field paths in them."""

    def __init__(self, results_dir: Path):
        self.dir = results_dir
        self._cache: dict[str, Any] = {}

    def _load(self, name: str) -> Any:
        if name not in self._cache:
            p = self.dir / name
            try:
                self._cache[name] = json.loads(p.read_text())
            except FileNotFoundError:
                self._cache[name] = _ResultError(f"results file not found: {p}")
            except (OSError, ValueError) as e:
                self._cache[name] = _ResultError(f"cannot read {p}: {e}")
        if isinstance(self._cache[name], _ResultError):
            raise self._cache[name]
        return self._cache[name]

    def number(self, ref: FieldRef) -> float:
        """The finite-or-infinite number at ``ref``; anything else raises _ResultError."""
        node = self._load(ref.file)
        for part in ref.field.split("."):
            node = _step(node, part, ref)
        if not _is_number(node):
            raise _ResultError(f"{ref} is {type(node).__name__} {_short(node)}, not a number")
        if math.isnan(node):
            raise _ResultError(f"{ref} is NaN")
        return float(node)


def _step(node: Any, part: str, ref: FieldRef) -> Any:
    """One step of a dotted path: a dict key, or an integer index into a list."""
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list):
        try:
            return node[int(part)]
        except (ValueError, IndexError):
            raise _ResultError(f"{ref}: no index {part!r} in a list of {len(node)}") from None
    keys = sorted(node)[:20] if isinstance(node, dict) else type(node).__name__
    raise _ResultError(f"{ref}: no field {part!r} (have: {keys})")


def _short(x: Any) -> str:
    s = json.dumps(x) if not isinstance(x, str) else repr(x)
    return s if len(s) <= 60 else s[:57] + "..."


def _fmt(x: float | None) -> str:
    """Numbers in the report: 6 significant digits, so a FAIL never shows measured == bound;
    whole numbers (edge counts) exactly, with thousands separators (2,235,025, not 2.23502e+06)."""
    if x is None:
        return "n/a"
    if isinstance(x, (int, float)) and math.isfinite(x) and float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.6g}"


def _bound_text(tol: Tolerance, bound: float | None) -> str:
    """Human-readable inequality target: a number, or ``file:field [+ margin] (value)``."""
    if tol.ref is None:
        return _fmt(tol.value + _signed_margin(tol))
    margin = f" {'+' if tol.margin >= 0 else '-'} {_fmt(abs(tol.margin))}" if tol.margin else ""
    return f"{tol.ref}{margin} ({_fmt(bound)})"


def _signed_margin(tol: Tolerance) -> float:
    """``margin`` is the gap the measured value must clear *in the inequality's direction*
    (negative = slack): ``ge`` needs m >= b + margin, ``le`` needs m <= b - margin."""
    return tol.margin if tol.type in ("ge", "gt") else -tol.margin


def _expected_text(claim: Claim, bound: float | None = None) -> str:
    tol = claim.tolerance
    if tol.type == "abs":
        return f"{_fmt(claim.paper_value)} ± {_fmt(tol.value)}"
    if tol.type == "rel":
        return f"{_fmt(claim.paper_value)} ± {_fmt(100 * tol.value)}%"
    if tol.type == "between":
        return f"in [{_fmt(tol.low)}, {_fmt(tol.high)}]"
    return f"{INEQUALITIES[tol.type][0]} {_bound_text(tol, bound)}"


def _judge(claim: Claim, measured: float, bound: float | None) -> bool:
    """True when the measured value satisfies the claim's tolerance."""
    tol, p = claim.tolerance, claim.paper_value
    if tol.type == "abs":
        return abs(measured - p) <= tol.value
    if tol.type == "rel":
        return abs(measured - p) <= tol.value * abs(p)
    if tol.type == "between":
        return tol.low <= measured <= tol.high
    return INEQUALITIES[tol.type][1](measured, bound)


def check_claim(claim: Claim, results: _Results) -> Outcome:
    """Judge one claim; any problem reading its values is an ERROR outcome."""
    if claim.blocked:
        return Outcome(claim, "BLOCKED", _expected_text(claim), None, claim.blocked)
    tol = claim.tolerance
    bound = None
    try:
        if tol.ref is not None:
            bound = results.number(tol.ref) + _signed_margin(tol)
        elif tol.type in INEQUALITIES:
            bound = tol.value + _signed_margin(tol)
    except _ResultError as e:
        return Outcome(claim, "ERROR", _expected_text(claim), None, f"reference: {e}")
    expected = _expected_text(claim, bound)
    try:
        measured = results.number(claim.result)
    except _ResultError as e:
        return Outcome(claim, "ERROR", expected, None, str(e))
    if _judge(claim, measured, bound):
        return Outcome(claim, "PASS", expected, measured)
    return Outcome(claim, "FAIL", expected, measured, f"measured {_fmt(measured)}, expected {expected}")


def check_claims(claims: Sequence[Claim], profile: str, results_dir: str | os.PathLike) -> list[Outcome]:
    """Outcomes for the claims of ``profile``, reading results under ``results_dir``.

    ``results_dir`` is ``results/<profile>/``; result ``file`` names are relative to it.
    """
    if profile not in PROFILES:
        raise ClaimsError(f"unknown profile {profile!r}; allowed: {list(PROFILES)}")
    results = _Results(Path(results_dir))
    return [check_claim(c, results) for c in claims if c.profile == profile]


# --------------------------------------------------------------------------- reporting


def summary_line(outcomes: Sequence[Outcome]) -> str:
    n = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    line = f"{n['PASS']} passed, {n['FAIL']} failed, {n['ERROR']} errors"
    return line + (f", {n['BLOCKED']} blocked" if n["BLOCKED"] else "")


def failure_text(o: Outcome) -> str:
    """One FAIL/ERROR/BLOCKED outcome in words: its message, and for a FAIL why it is a finding
    (the claim's ``explanation``) or that the claims file does not say."""
    text = f"`{o.claim.id}` {o.status}: {o.message}"
    if o.status == "FAIL":
        text += (f". Finding: {o.claim.explanation}" if o.claim.explanation
                 else ". Unexplained: the claim has no `explanation` in the claims file")
    return text


def failure_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """`failure_text` of every outcome that is not a PASS (the report's list, the run's summary)."""
    return [failure_text(o) for o in outcomes if o.status != "PASS"]


def _md_cell(text: Any) -> str:
    """Markdown table cells cannot hold pipes or newlines."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _figure_link(figure: str | None, md_dir: Path, root: Path) -> str:
    """Figure paths in claims are relative to the repo root; links must be relative to the report."""
    if not figure:
        return ""
    rel = os.path.relpath(root / figure, md_dir)
    return f"[{Path(figure).name}]({Path(rel).as_posix()})"


def _marks(claim: Claim) -> str:
    marks = []
    if claim.convention:
        marks.append(f"convention: {claim.convention}")
    if claim.reconstructed:
        marks.append("reconstructed")
    if claim.loosened:
        marks.append(f"loosened: {claim.loosened}")
    return "; ".join(marks)


def _note(claim: Claim) -> str:
    """The claim's note (why this tolerance; why a FAIL is a finding), then its marks."""
    marks = _marks(claim)
    return claim.note + (f" [{marks}]" if marks else "")


def _paper_value(claim: Claim) -> str:
    return "" if claim.paper_value is None else _fmt(claim.paper_value)


def render_html(outcomes: Sequence[Outcome], md_dir: Path | None = None, root: Path | None = None) -> str:
    """The claims table as a standalone HTML page (the Snakemake report shows HTML items inline;
    a Markdown item is only offered as a download)."""
    import html

    md_dir, root = Path(md_dir or "."), Path(root or ".")
    colour = {"PASS": "#1a7f37", "FAIL": "#cf222e", "ERROR": "#9a6700", "BLOCKED": "#6e7781"}
    head = ["id", "statement", "paper value", "expected", "measured", "status", "note"]
    rows = []
    for o in outcomes:
        c = o.claim
        cells = [f"<code>{html.escape(c.id)}</code>", html.escape(c.statement), _paper_value(c),
                 html.escape(o.expected), _fmt(o.measured),
                 f'<b style="color:{colour.get(o.status, "#000")}">{o.status}</b>',
                 html.escape(_note(c) + (f" ({o.message})" if o.status != "PASS" and o.message else "")
                             + (f" Finding: {c.explanation}" if o.status == "FAIL" and c.explanation else ""))]
        rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Claims report</title><style>"
            "body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
            "td,th{border:1px solid #d0d7de;padding:4px 6px;vertical-align:top;text-align:left} "
            "th{background:#f6f8fa} td:nth-child(3),td:nth-child(5){text-align:right;white-space:nowrap}"
            "</style></head><body>\n<h1>Claims report</h1>\n"
            f"<p>{html.escape(summary_line(outcomes))}</p>\n<table>\n<tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr>\n" + "\n".join(rows)
            + "\n</table>\n</body></html>\n")


def render_markdown(outcomes: Sequence[Outcome], md_dir: Path | None = None, root: Path | None = None) -> str:
    """The claims table with a summary line; FAIL/ERROR messages follow the table."""
    md_dir, root = Path(md_dir or "."), Path(root or ".")
    head = ["id", "statement", "paper value", "expected", "measured", "status", "figure", "note"]
    lines = ["# Claims report", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for o in outcomes:
        c = o.claim
        status = f"**{o.status}**" if o.status != "PASS" else o.status
        row = [c.id, c.statement, _paper_value(c), o.expected, _fmt(o.measured), status,
               _figure_link(c.figure, md_dir, root), _note(c)]
        lines.append("| " + " | ".join(_md_cell(x) for x in row) + " |")
    lines += ["", summary_line(outcomes)]
    problems = [o for o in outcomes if o.status != "PASS"]
    if problems:
        lines += ["", "## Failures and errors", ""]
        lines += [f"- {_md_cell(t)}" for t in failure_lines(problems)]
    return "\n".join(lines) + "\n"


def render_junit(outcomes: Sequence[Outcome], suite: str = "claims") -> bytes:
    """JUnit XML, one testcase per claim, so CI dashboards show claims like tests."""
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    root = ET.Element("testsuites", tests=str(len(outcomes)), failures=str(counts["FAIL"]),
                      errors=str(counts["ERROR"]))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(outcomes)),
                       failures=str(counts["FAIL"]), errors=str(counts["ERROR"]),
                       skipped=str(counts["BLOCKED"]))
    for o in outcomes:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{o.claim.profile}", name=o.claim.id)
        detail = (f"{o.claim.statement}\npaper: {o.claim.paper}\nmeasured: {_fmt(o.measured)}\n"
                  f"expected: {o.expected}\nnote: {o.claim.note}"
                  + (f"\nconvention: {o.claim.convention}" if o.claim.convention else "")
                  + (f"\nfinding: {o.claim.explanation}" if o.claim.explanation else ""))
        if o.status == "FAIL":
            ET.SubElement(tc, "failure", message=o.message, type="ClaimFailed").text = detail
        elif o.status == "ERROR":
            msg = f"{o.message} (measured: {_fmt(o.measured)}, expected: {o.expected})"
            ET.SubElement(tc, "error", message=msg, type="ClaimError").text = detail
        elif o.status == "BLOCKED":
            ET.SubElement(tc, "skipped", message=f"blocked: {o.message}")
        ET.SubElement(tc, "system-out").text = detail
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        normal_mode(tmp)  # the user's umask, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(outcomes: Sequence[Outcome], md_path: str | os.PathLike | None,
                 junit_path: str | os.PathLike | None, *, root: str | os.PathLike | None = None,
                 html_path: str | os.PathLike | None = None) -> str:
    """Write the Markdown and/or JUnit report; return the Markdown text.

    ``root`` is the directory figure paths are relative to (default: the current directory,
    which is the repo root when Snakemake runs).
    """
    root = Path(root or Path.cwd()).resolve()
    md_dir = Path(md_path).resolve().parent if md_path else root
    text = render_markdown(outcomes, md_dir, root)
    if md_path:
        _atomic_write(Path(md_path), text.encode("utf-8"))
    if junit_path:
        _atomic_write(Path(junit_path), render_junit(outcomes))
    if html_path:
        _atomic_write(Path(html_path), render_html(outcomes, md_dir, root).encode("utf-8"))
    return text


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attrpatch claims", description=__doc__.split("\n\n")[0])
    p.add_argument("--claims", default="paper_claims.yaml", help="claims file (default: %(default)s)")
    p.add_argument("--profile", default="tiny", choices=PROFILES)
    p.add_argument("--results", help="results directory (default: results/<profile>)")
    p.add_argument("--md", help="write the Markdown report here")
    p.add_argument("--junit", help="write the JUnit XML report here")
    p.add_argument("--html", help="write the HTML report (the table the Snakemake report shows) here")
    p.add_argument("--root", help="directory figure paths are relative to (default: cwd)")
    p.add_argument("--no-fail", action="store_true", help="exit 0 even if claims failed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 all claims of the profile held (or --no-fail), 1 some failed or
    errored, 2 the claims file is malformed."""
    args = _parser().parse_args(argv)
    try:
        claims = load_claims(args.claims)
    except ClaimsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    outcomes = check_claims(claims, args.profile, args.results or Path("results") / args.profile)
    if not outcomes:
        print(f"warning: no claims for profile {args.profile!r} in {args.claims}", file=sys.stderr)
    print(write_report(outcomes, args.md, args.junit, root=args.root, html_path=args.html), end="")
    bad = any(o.status in ("FAIL", "ERROR") for o in outcomes)
    return 1 if bad and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
