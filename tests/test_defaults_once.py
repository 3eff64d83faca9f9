"""Every default and allowed-value list has one home (issue 25, item 3).

A profile setting's choices and default are read from the library module that owns them
(`repro.settings.Choice(Ref(...))`, `Setting(..., Ref(...))`); library signatures use the owner's
named constant, never the literal again. The scanner below is run on a re-spelled snippet to show
it fails (negative control).
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from attrpatch.repro import settings as S

SRC = Path(__file__).resolve().parents[1] / "src" / "attrpatch"

# setting -> (owner module, list of allowed values, default constant)
OWNED = {
    "selection": ("attrpatch.circuits.select", "SELECTIONS", "CIRCUIT_SELECTION"),
    "edges": ("attrpatch.circuits.roc", "EDGE_CONVENTIONS", "DEFAULT_EDGE_CONVENTION"),
    "auc_rule": ("attrpatch.circuits.roc", "AUC_RULES", "DEFAULT_AUC_RULE"),
    "pairing": ("attrpatch.analysis.linearity", "R2_PAIRINGS", "DEFAULT_R2_PAIRING"),
    "docstring_prompts": ("attrpatch.tasks.docstring_acdc", "PROMPT_SETS", "DEFAULT_PROMPT_SET"),
    "graddrop_layer": ("attrpatch.methods.atp", "GRADDROP_LAYERS", "DEFAULT_GRADDROP_LAYER"),
    "gp_step": ("attrpatch.methods.eap_gp", "STEPS", "DEFAULT_STEP"),
    "ig_rule": ("attrpatch.methods.hvp", "IG_RULES", "DEFAULT_IG_RULE"),
    "reading": ("attrpatch.methods.hvp", "READINGS", "DEFAULT_READING"),
    "attribution_split": ("attrpatch.tasks.mib_files", "SPLITS", "DEFAULT_ATTRIBUTION_SPLIT"),
    "eval_split": ("attrpatch.tasks.mib_files", "SPLITS", "DEFAULT_EVAL_SPLIT"),
}
OWNED_DEFAULTS = {
    "steps": ("attrpatch.methods.common", "DEFAULT_STEPS"),
    "threshold": ("attrpatch.methods.hvp", "DEFAULT_THRESHOLD"),
}


def _choice_settings():
    """(experiment, key, Setting) of every Choice setting, Records included."""
    def walk(exp, decl, prefix=""):
        for k, s in decl.items():
            if isinstance(s.rule, S.Choice):
                yield exp, prefix + k, s
            if isinstance(s.rule, S.Record):
                yield from walk(exp, s.rule.fields, f"{prefix}{k}.")
    for exp, decl in S.SETTINGS.items():
        yield from walk(exp, decl)


def test_every_choice_setting_reads_its_owner():
    seen = set()
    for exp, key, s in _choice_settings():
        assert key in OWNED, f"{exp}.{key}: a Choice setting without an owner in this test"
        mod, values, default = OWNED[key]
        assert s.rule.source == S.Ref(mod, values), f"{exp}.{key}"
        assert s.default == S.Ref(mod, default), f"{exp}.{key}: default not read from {mod}.{default}"
        owner = __import__(mod, fromlist=[values])
        assert s.rule.values == tuple(getattr(owner, values))
        assert s.default_value() in s.rule.values
        seen.add(key)
    assert seen == set(OWNED)


def test_owned_defaults_are_refs():
    for exp, decl in S.SETTINGS.items():
        for key, (mod, name) in OWNED_DEFAULTS.items():
            if key in decl:
                assert decl[key].default == S.Ref(mod, name), f"{exp}.{key}"


def test_a_respelled_choice_list_is_refused():
    """Negative control: the old spelling ``Choice("greedy", "topn")`` no longer builds."""
    with pytest.raises(TypeError, match="Ref"):
        S.Choice("greedy", "topn")
    with pytest.raises(TypeError, match="Ref"):
        S.Choice(("greedy", "topn"))


def test_value_the_owner_gains_is_accepted(monkeypatch):
    """The point of reading the owner: a new GradDrop layer is accepted by profiles too."""
    from attrpatch.methods import atp
    rule = S.SETTINGS["gradrop"]["graddrop_layer"].rule
    assert rule.problems("head", "x", {})
    monkeypatch.setattr(atp, "GRADDROP_LAYERS", atp.GRADDROP_LAYERS + ("head",))
    assert rule.problems("head", "x", {}) == []
    assert "'head'" in rule.allowed


def test_choice_message_names_value_and_allowed():
    msgs = S.SETTINGS["eap_roc"]["auc_rule"].rule.problems("mean", "experiments.eap_roc.auc_rule", {})
    assert msgs == ["experiments.eap_roc.auc_rule must be one of 'pessimistic', 'trapezoid', got 'mean'"]


# ---- library signatures use the owner's constant ----------------------------------------------
# parameter name -> literal values that must not be spelled as a default outside the owner
LITERAL_DEFAULTS = {
    "selection": {"greedy", "topn"},
    "steps": {5},
    "threshold": {0.85},
    "rows_per_forward": {1024},
    "layer": {"block", "sublayer"},
}


def respelled_defaults(source: str, where: str = "<src>") -> list[str]:
    """`name=literal` defaults of function parameters that have an owned constant."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        pos = a.posonlyargs + a.args
        pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + \
            [(p, d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
        for p, d in pairs:
            if p.arg in LITERAL_DEFAULTS and isinstance(d, ast.Constant) and d.value in LITERAL_DEFAULTS[p.arg]:
                found.append(f"{where}:{node.lineno} {node.name}({p.arg}={d.value!r})")
    return found


def test_scanner_catches_a_respelled_default():
    """Negative control for the scan below."""
    assert respelled_defaults("def f(x, *, selection='greedy', steps=5):\n    pass\n")
    assert respelled_defaults("def g(threshold=0.85):\n    pass\n")
    assert not respelled_defaults("def f(x, *, selection=CIRCUIT_SELECTION, steps=DEFAULT_STEPS):\n    pass\n")


def test_no_library_signature_respells_an_owned_default():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += respelled_defaults(path.read_text(), str(path.relative_to(SRC)))
    assert not found, "use the owner's constant:\n" + "\n".join(found)


def test_signatures_read_the_owner():
    from attrpatch.circuits import curves, faithfulness, run, select
    from attrpatch.methods import common, eap_gp, eap_ig, hvp

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    assert default(select.select, "selection") == select.DEFAULT_SELECTION == "topn"
    assert default(faithfulness.faithfulness_curve, "selection") == select.DEFAULT_SELECTION
    for fn in (run.find_circuit, run.sized_circuit, faithfulness.method_curves):
        assert default(fn, "selection") == select.CIRCUIT_SELECTION == "greedy"
    for fn in (eap_ig.eap_ig_scores, eap_gp.eap_gp_scores, eap_gp.path_diagnostics, faithfulness.method_curves):
        assert default(fn, "steps") == common.DEFAULT_STEPS
    for fn in (hvp.hvp_scores, hvp.hvp_multistep_scores, hvp.per_component_ig_scores, hvp.screen_flag_fix,
               hvp.directional_derivatives):
        assert default(fn, "rows_per_forward") == hvp.HVP_ROWS_PER_FORWARD
    assert default(curves.min_edges_for, "threshold") == curves.FAITHFUL_THRESHOLD


def test_cli_selection_matches_the_owner():
    """The CLI parser stays torch-free at --help, so it spells the list; this ties it to the owner."""
    import argparse

    from attrpatch.circuits import select
    from attrpatch.cli import circuit as cli_circuit
    p = argparse.ArgumentParser()
    cli_circuit.add_parsers(p.add_subparsers())
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    act = next(a for sp in sub.choices.values() for a in sp._actions if a.dest == "selection")
    assert set(act.choices) == set(select.SELECTIONS)
    assert act.default == select.CIRCUIT_SELECTION


def test_settings_and_validate_share_one_message_shape():
    """Issue 25 item 5: a bad profile value and a bad function argument read alike."""
    import re

    from attrpatch.validate import integer
    shape = re.compile(r"^(\S+: )?\S+ must be .+, got .+$")
    with pytest.raises(ValueError) as e:
        integer("steps", 0, where="attribute")
    assert shape.match(str(e.value)), str(e.value)
    [msg] = S.SETTINGS["eap_roc"]["n"].rule.problems(0, "experiments.eap_roc.n", {})
    assert shape.match(msg) and msg == S.must_be("experiments.eap_roc.n", 0, "an integer >= 1")
    assert not shape.match("experiments.eap_roc.n: 0 is not allowed; allowed: an integer >= 1")   # the old shape
