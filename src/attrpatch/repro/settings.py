"""Each experiment's settings, declared once: keys, types, valid ranges, defaults.

A profile (``config/<profile>.yaml``, section ``experiments.<exp>``) says only what differs
from these declarations. `resolve` merges a section with its declaration and returns every
problem as ``experiments.<exp>.<key> must be <allowed>, got <value>`` (`must_be`); `repro.context.load_profile`
runs it for every experiment, so a typo'd key (``eap_keep_fraction``) or a bad value
(``n: -40``, ``n: forty``) stops ``snakemake -n`` before any work, naming the entry. The
experiment scripts read the merged settings (``ctx.spec``) and hold no defaults of their own.

This module imports neither torch nor the rest of the package (the Snakefile and the config
tests read it cheaply). Names that live in registries (tasks, models declared by the
profile, methods) come in through ``env``: {"tasks", "models", "methods"} -> sets.
A default that belongs to a library function is a `Ref` to it (one home), resolved when the
settings are merged.
"""
from __future__ import annotations

import difflib
import importlib
import math
from dataclasses import dataclass
from typing import Any, Mapping

REQUIRED = object()     # default of a key the profile must set


def must_be(path: str, value, allowed: str) -> str:
    """The one message shape for a bad input value, the shape of `attrpatch.validate`'s:
    ``<path> must be <allowed>, got <value>`` (this module stays torch-free, so it spells it)."""
    return f"{path} must be {allowed}, got {value!r}"


@dataclass(frozen=True)
class Ref:
    """A default that lives in a library module: ``Ref("attrpatch.methods.hvp", "DEFAULT_THRESHOLD")``."""
    module: str
    name: str

    def get(self):
        return getattr(importlib.import_module(self.module), self.name)


# --------------------------------------------------------------------------- value rules


class Rule:
    """A value rule: ``problems(value, path, env)`` -> list of messages; ``allowed`` says what is."""
    allowed = "?"

    def problems(self, value, path: str, env: Mapping) -> list[str]:
        return [] if self.ok(value, env) else [must_be(path, value, self.allowed)]

    def ok(self, value, env) -> bool:   # pragma: no cover - subclasses define ok or problems
        raise NotImplementedError


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Int(Rule):
    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi
        rng = " and ".join(s for s in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if s)
        self.allowed = f"an integer {rng}".strip()

    def ok(self, v, env):
        return _is_int(v) and (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)


class Float(Rule):
    """A finite number in [lo, hi]; ``lo_open`` / ``hi_open`` exclude the end."""

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        parts = []
        if lo is not None:
            parts.append(f"> {lo}" if lo_open else f">= {lo}")
        if hi is not None:
            parts.append(f"< {hi}" if hi_open else f"<= {hi}")
        self.allowed = "a number " + " and ".join(parts) if parts else "a finite number"

    def ok(self, v, env):
        if not _is_num(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


class Bool(Rule):
    allowed = "true or false"

    def ok(self, v, env):
        return isinstance(v, bool)


class Choice(Rule):
    """One of a list of names that lives in a library module: ``Choice(Ref("attrpatch.circuits.roc",
    "AUC_RULES"))`` (read when first used, so this module stays torch-free and the owner's list is
    the only one: a value the library gains is accepted here too)."""

    def __init__(self, source: Ref, *more):
        if more or not isinstance(source, Ref):
            raise TypeError(f"Choice takes one Ref to its owner's list, got {(source, *more)!r}")
        self.source = source

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(self.source.get())

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))

    def ok(self, v, env):
        return isinstance(v, str) and v in self.values


class Named(Rule):
    """A name from a registry in ``env`` ("tasks", "models", "methods"), optionally narrowed."""

    def __init__(self, registry: str, only: tuple[str, ...] | None = None):
        self.registry, self.only = registry, only

    def names(self, env) -> list[str]:
        return list(self.only) if self.only else sorted(env.get(self.registry, ()))

    def problems(self, v, path, env):
        names = self.names(env)
        if isinstance(v, str) and v in names:
            return []
        what = {"tasks": "task", "models": "model (declared under models)", "methods": "method"}[self.registry]
        return [must_be(path, v, f"a known {what}: one of {', '.join(names)}")]


class Optional(Rule):
    """``None`` (the setting is off / unlimited) or a value of ``rule``."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.allowed = f"null or {rule.allowed}"

    def problems(self, v, path, env):
        return [] if v is None else self.rule.problems(v, path, env)


class OneOf(Rule):
    def __init__(self, *rules: Rule):
        self.rules = rules
        self.allowed = " | ".join(r.allowed for r in rules)

    def problems(self, v, path, env):
        results = [r.problems(v, path, env) for r in self.rules]
        if any(not p for p in results):
            return []
        shapes = [p for r, p in zip(self.rules, results) if _shape_matches(r, v)]
        return shapes[0] if shapes else [must_be(path, v, self.allowed)]


def _shape_matches(rule: Rule, v) -> bool:
    """Whether v has the container shape of rule (to report the inner problem of a OneOf)."""
    if isinstance(rule, (ListOf, Tuple)):
        return isinstance(v, list)
    if isinstance(rule, (MapOf, Record)):
        return isinstance(v, dict)
    return False


class ListOf(Rule):
    def __init__(self, item: Rule, min_len: int = 1, max_len: int | None = None):
        self.item, self.min_len, self.max_len = item, min_len, max_len
        n = f"{min_len}+" if max_len is None else (f"{min_len}" if min_len == max_len else f"{min_len}-{max_len}")
        self.allowed = f"a list of {n} items, each {item.allowed}"

    def problems(self, v, path, env):
        if not isinstance(v, list) or len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            return [must_be(path, v, self.allowed)]
        return [p for i, x in enumerate(v) for p in self.item.problems(x, f"{path}[{i}]", env)]


class Tuple(Rule):
    """A fixed-length list, one rule per position."""

    def __init__(self, *items: Rule, names: tuple[str, ...] = ()):
        self.items = items
        self.allowed = "[" + ", ".join(f"{n}: {r.allowed}" if names else r.allowed
                                       for n, r in zip(names or items, items)) + "]"

    def problems(self, v, path, env):
        if not isinstance(v, list) or len(v) != len(self.items):
            return [must_be(path, v, self.allowed)]
        return [p for i, (x, r) in enumerate(zip(v, self.items)) for p in r.problems(x, f"{path}[{i}]", env)]


class MapOf(Rule):
    """A mapping whose keys are names of a registry (``key``) and values follow ``value``."""

    def __init__(self, key: Named, value: Rule):
        self.key, self.value = key, value
        self.allowed = f"a mapping {key.registry[:-1]} -> {value.allowed}"

    def problems(self, v, path, env):
        if not isinstance(v, dict):
            return [must_be(path, v, self.allowed)]
        errs = []
        for k, x in v.items():
            errs += self.key.problems(k, f"{path}.{k}", env)
            errs += self.value.problems(x, f"{path}.{k}", env)
        return errs


class Record(Rule):
    """A nested mapping with its own declared keys (defaults filled in by `merge`)."""

    def __init__(self, **fields: "Setting"):
        self.fields = fields
        self.allowed = "a mapping with keys " + ", ".join(fields)

    def problems(self, v, path, env):
        if not isinstance(v, dict):
            return [must_be(path, v, self.allowed)]
        return _check_keys(v, self.fields, path, env)

    def merge(self, v: dict) -> dict:
        return _merge(v, self.fields)


class TaskModels(Rule):
    """``tasks``: a mapping task -> model name declared under ``models``."""
    allowed = "a mapping task -> declared model name"

    def __init__(self, min_len: int = 1, max_len: int | None = None):
        self.min_len, self.max_len = min_len, max_len
        if max_len == 1:
            self.allowed = "a mapping of exactly one task -> declared model name"

    def problems(self, v, path, env):
        if not isinstance(v, dict) or len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            return [must_be(path, v, self.allowed)]
        return [p for k, m in v.items() for p in Named("tasks").problems(k, f"{path}", env)
                + Named("models").problems(m, f"{path}.{k}", env)]


@dataclass(frozen=True)
class Setting:
    rule: Rule
    default: Any = None
    doc: str = ""

    def default_value(self):
        if self.default is REQUIRED:
            raise KeyError("required")
        d = self.default.get() if isinstance(self.default, Ref) else self.default
        if isinstance(self.rule, Record) and isinstance(d, dict):
            return self.rule.merge(d)
        return _copy(d)


def _copy(x):
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


def _check_keys(spec: Mapping, decl: Mapping[str, Setting], path: str, env: Mapping) -> list[str]:
    errs = []
    for k, v in spec.items():
        if k not in decl:
            near = difflib.get_close_matches(str(k), list(decl), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            errs.append(f"{path}.{k}: unknown setting{hint}; allowed: {', '.join(decl)}")
        else:
            errs += decl[k].rule.problems(v, f"{path}.{k}", env)
    errs += [f"{path}.{k}: required setting missing ({s.rule.allowed})"
             for k, s in decl.items() if s.default is REQUIRED and k not in spec]
    return errs


def _merge(spec: Mapping, decl: Mapping[str, Setting]) -> dict:
    out = {}
    for k, s in decl.items():
        if k in spec:
            v = spec[k]
            out[k] = s.rule.merge(v) if isinstance(s.rule, Record) and isinstance(v, dict) else _copy(v)
        elif s.default is not REQUIRED:
            out[k] = s.default_value()
    return out


# --------------------------------------------------------------------------- declarations

POS = Int(lo=1)
BATCH_SIZE = Setting(Optional(OneOf(POS, MapOf(Named("models"), POS))), None,
                     "examples per forward/backward chunk of the methods (int, or {model: int}); null: all at once")
TASKS = Setting(TaskModels(), REQUIRED, "task -> model name (declared under models)")
SEED = Setting(Optional(Int()), None, "prompt seed; null: the profile's top-level seed")
N_BY_TASK = Setting(MapOf(Named("tasks"), POS), {}, "per-task prompt counts overriding n")
EXTRA_MODELS = Setting(ListOf(Named("models"), min_len=0), [],
                       "further models every task of the experiment also runs on (results under by_model)")
MAX_EDGES = Setting(Optional(POS), None,
                    "exact edge patching only on this many edges: half the largest |EAP|, half a seeded sample "
                    "(paper_random work limit); null: every edge")
ACDC_MAX_EDGES = Setting(Optional(POS), None, "ACDC only over the top-|EAP| edges of this many (work limit); null: all")
TAU_GRID = Record(n=Setting(POS, REQUIRED, "number of taus"),
                  low_exp=Setting(Float(), REQUIRED, "smallest tau = 10^low_exp"),
                  high_exp=Setting(Float(), REQUIRED, "largest tau = 10^high_exp"))
TAUS = OneOf(ListOf(Float(lo=0.0, lo_open=True)), TAU_GRID)
EDGE_COUNTS = ListOf(POS)
SELECTION = Setting(Choice(Ref("attrpatch.circuits.select", "SELECTIONS")),
                    Ref("attrpatch.circuits.select", "CIRCUIT_SELECTION"),
                    "circuit selection: greedy growth from the logits (the EAP-IG paper's) or top-n by |score|")
STEPS = Setting(POS, Ref("attrpatch.methods.common", "DEFAULT_STEPS"), "m of EAP-IG, k of EAP-GP")
EXACT = Setting(Optional(OneOf(Bool(), POS)), None,
                "exact single-edge effects behind the Pearson r: true, false, or a prompt count; "
                "null: true for graphs of at most 5,000 edges")


PREPEND_BOS = Setting(OneOf(Bool(), MapOf(Named("tasks"), Bool())), False,
                      "prepend the tokenizer's BOS token to every prompt (true/false, or {task: bool}); the metric "
                      "position moves one right (on for the EAP-IG/EAP-GP papers' GPT-2, off for ACDC's data)")


DOCSTRING_PROMPTS = Setting(Choice(Ref("attrpatch.tasks.docstring_acdc", "PROMPT_SETS")),
                            Ref("attrpatch.tasks.docstring_acdc", "DEFAULT_PROMPT_SET"),
                            "Docstring prompts: 'toy' (one line of words, the tiny models' task) or 'acdc' "
                            "(ACDC's generator: multi-line Python, six def args, random_random; tasks.docstring_acdc)")


PROMPT_SHARDS = Setting(POS, 1, "jobs the gradient scores are split into (prompt chunks, gathered before the "
                                "curves: attrpatch.repro.shards); 1: one job; paper profile: attrpatch.repro.cost")
RUN_SHARDS = Setting(POS, 1, "jobs ACDC's runs (one per sweep and tau) are split into (cost-balanced slices, "
                             "gathered: attrpatch.repro.shards); 1: one job; paper profile: attrpatch.repro.cost")


def _common(n: int, **more: Setting) -> dict[str, Setting]:
    return {"tasks": TASKS, "n": Setting(POS, n, "prompts per task"), "seed": SEED, "prepend_bos": PREPEND_BOS,
            "docstring_prompts": DOCSTRING_PROMPTS, **more}


def _faith(methods: list[str]) -> dict[str, Setting]:
    return _common(32, n_by_task=N_BY_TASK,
                   methods=Setting(ListOf(Named("methods")), methods, "scoring methods (names of `attribute`)"),
                   steps=STEPS, selection=SELECTION,
                   edge_counts=Setting(EDGE_COUNTS, REQUIRED, "edge budgets of the faithfulness curve"),
                   edge_counts_by_task=Setting(MapOf(Named("tasks"), EDGE_COUNTS), {},
                                               "per-task edge budgets overriding edge_counts"),
                   batch_size=BATCH_SIZE, exact=EXACT, models=EXTRA_MODELS, shards=PROMPT_SHARDS,
                   tie_margin=Setting(Float(0.0), Ref("attrpatch.circuits.curves", "TIE_MARGIN"),
                                      "faithfulness AUCs of two methods closer than this are a tie (wins, ties "
                                      "and losses per task: circuits.curves.compare)"))


CIRCUIT_EDGES = Setting(POS, Ref("attrpatch.circuits.run", "DAG_CIRCUIT_EDGES"),
                        "edges of the circuit saved and drawn per task and method (ACDC: its tau closest to it)")
ROC_METHODS = ("eap", "acdc_task", "acdc_kl", "exact")
EDGES = Setting(Choice(Ref("attrpatch.circuits.roc", "EDGE_CONVENTIONS")),
                Ref("attrpatch.circuits.roc", "DEFAULT_EDGE_CONVENTION"),
                "edges counted: 'acdc' (ACDC's graph with its q/k/v direct edges: ACDC tests them, EAP and exact "
                "patching score them; the papers' count) or 'plain' (the graph's edges); eap_roc writes AUCs "
                "under both in auc_by_edges")
ATP_METHODS = ("atp", "atp_qk", "atp_graddrop", "atp_star")


class MibRuns(Rule):
    """``runs`` of mib_track: MIB model key (declared under ``models``) -> list of MIB tasks; each
    pair must be one MIB scores (`circuits.mib_submission.FOLDERS`, read when first checked)."""
    allowed = "a mapping MIB model key (declared under models) -> list of MIB tasks"

    def problems(self, v, path, env):
        if not isinstance(v, dict) or not v:
            return [must_be(path, v, self.allowed)]
        tasks = Choice(Ref("attrpatch.tasks.mib_files", "TASK_NAMES"))
        folders = Ref("attrpatch.circuits.mib_submission", "FOLDERS").get()
        errs = []
        for model, ts in v.items():
            errs += Named("models").problems(model, f"{path}.{model}", env)
            errs += ListOf(tasks).problems(ts, f"{path}.{model}", env)
            if errs or not isinstance(ts, list):
                continue
            errs += [must_be(f"{path}.{model}", t, f"a task MIB scores on {model!r}; MIB's task/model folders: "
                             + ", ".join(folders))
                     for t in ts if f"{t.replace('_', '-')}_{model}" not in folders]
        return errs

SETTINGS: dict[str, dict[str, Setting]] = {
    "graph_counts": {
        "shapes": Setting(ListOf(Tuple(POS, POS, Bool(), names=("layers", "heads", "has_mlps"))), [[12, 12, True]],
                          "graph shapes whose node/edge counts are checked against the closed form"),
    },
    "tasks_eval": _common(200, min_accuracy=Setting(Float(0.0, 1.0), 0.9, "the accuracy bar the models must clear"),
                          batch_size=BATCH_SIZE),
    "reference": _common(256, fraction=Setting(Float(0.0, 1.0, lo_open=True), 0.01,
                                               "edge is in the reference if |effect| >= fraction x summed |effects|"),
                         published=Setting(Bool(), False, "use the published circuit instead of exact patching"),
                         shards=Setting(POS, 1, "jobs the all-edge exact patching is split into (edge blocks, "
                                                "gathered into one table: attrpatch.repro.shards); 1 on the tiny profile")),
    "eap_roc": _common(32, n_by_task=N_BY_TASK,
                       methods=Setting(ListOf(Named("methods", ROC_METHODS)), list(ROC_METHODS), "ROC curves drawn"),
                       taus=Setting(TAUS, {"n": 16, "low_exp": -4.0, "high_exp": 0.5},
                                    "ACDC thresholds: a list, or {n, low_exp, high_exp} for 10^linspace"),
                       batch_size=BATCH_SIZE, max_edges=MAX_EDGES, acdc_max_edges=ACDC_MAX_EDGES,
                       auc_rule=Setting(Choice(Ref("attrpatch.circuits.roc", "AUC_RULES")),
                                        Ref("attrpatch.circuits.roc", "DEFAULT_AUC_RULE"),
                                        "AUC written as `auc` (both always written; default: the authors' rule)"),
                       edges=EDGES,
                       circuit_edges=CIRCUIT_EDGES, shards=RUN_SHARDS),
    "eap_r2": _common(40, tasks=Setting(TaskModels(max_len=1), REQUIRED, "the one task (the paper's Docstring)"),
                      alphas=Setting(Int(lo=2), 21, "points on the interpolation curve of the worst edge"),
                      pairing=Setting(Choice(Ref("attrpatch.analysis.linearity", "R2_PAIRINGS")),
                                      Ref("attrpatch.analysis.linearity", "DEFAULT_R2_PAIRING"),
                                      "R^2 pairing at the top level and in the figure (all are under fits)")),
    "eap_acdc": _common(32, n_by_task=N_BY_TASK,
                        eap_keep_fractions=Setting(ListOf(Float(0.0, 1.0, lo_open=True)), [0.1, 0.2, 0.4, 1.0],
                                                   "EAP keeps this fraction of edges, ACDC prunes the rest (1.0 added)"),
                        taus=Setting(TAUS, [0.003, 0.01, 0.03, 0.1], "ACDC thresholds"),
                        batch_size=BATCH_SIZE, acdc_max_edges=ACDC_MAX_EDGES, edges=EDGES, shards=RUN_SHARDS),
    "gradrop": _common(32, n_by_task=N_BY_TASK,
                       methods=Setting(ListOf(Named("methods", ATP_METHODS)), list(ATP_METHODS),
                                       "node scorers compared (atp is added if missing)"),
                       false_negative=Setting(Record(
                           exact_quantile=Setting(Float(0.0, 1.0), 0.75, "nodes above this quantile of |exact|"),
                           estimate_ratio=Setting(Float(0.0, lo_open=True), 0.25, "... whose |AtP| < ratio x |exact|")),
                           {}, "AtP false-negative definition (analysis.node_recovery)"),
                       batch_size=BATCH_SIZE,
                       graddrop_layer=Setting(Choice(Ref("attrpatch.methods.atp", "GRADDROP_LAYERS")),
                                              Ref("attrpatch.methods.atp", "DEFAULT_GRADDROP_LAYER"),
                                              "GradDrop unit: a whole block or attention/MLP sublayers per pass"),
                       qk_nodes=Setting(Bool(), True, "also score per-head query/key nodes against exact q/k patching")),
    "eapig_faith": {**_faith(["eap", "eap_ig", "eap_ig_kl"]), "circuit_edges": CIRCUIT_EDGES,
                    "extra_methods": Setting(ListOf(Named("methods"), min_len=0), ["eap_ig_activations"],
                                             "curves drawn beside the paper's three (`methods`) and marked as "
                                             "extras in the figure; no circuits saved for them")},
    "eapgp_gain": {**_faith(["eap_ig", "eap_gp"]),
                   "gp_step": Setting(Choice(Ref("attrpatch.methods.eap_gp", "STEPS")),
                                      Ref("attrpatch.methods.eap_gp", "DEFAULT_STEP"),
                                      "EAP-GP step rule of the `eap_gp` curve, the one the gain compares "
                                      "(methods.eap_gp; default: the cited reimplementations' unit step)"),
                   "gp_step_variants": Setting(ListOf(Choice(Ref("attrpatch.methods.eap_gp", "STEPS")), min_len=0),
                                               ["relative"],
                                               "further EAP-GP step rules, each its own curve `eap_gp_<rule>` and "
                                               "gain reported beside (default: the project's relative step)")},
    "hvp": _common(32, n_by_task=N_BY_TASK,
                   threshold=Setting(Float(0.0, lo_open=True), Ref("attrpatch.methods.hvp", "DEFAULT_THRESHOLD"),
                                     "Screen-Flag-Fix flags rho > threshold (default: methods.hvp's)"),
                   multistep=Setting(ListOf(POS), [1, 2, 4], "K of the multi-step HVP rule"),
                   subset=Setting(Record(top=Setting(Int(lo=0), 24, "edges of largest |EAP|"),
                                         random=Setting(Int(lo=0), 24, "seeded random other edges")),
                                  {}, "edges with per-edge HVP and exact patching"),
                   max_edges=Setting(Optional(POS), None, "work limit replacing subset: half top |EAP|, half random"),
                   batch_size=BATCH_SIZE, models=EXTRA_MODELS, shards=PROMPT_SHARDS,
                   ig_rule=Setting(Choice(Ref("attrpatch.methods.hvp", "IG_RULES")),
                                   Ref("attrpatch.methods.hvp", "DEFAULT_IG_RULE"),
                                   "quadrature of the per-component IG comparator (all rules are reported)"),
                   sff_steps=Setting(Optional(POS), None, "K of the multi-step HVP fix of Screen-Flag-Fix (None: largest K)"),
                   reading=Setting(Choice(Ref("attrpatch.methods.hvp", "READINGS")),
                                   Ref("attrpatch.methods.hvp", "DEFAULT_READING"),
                                   "HVP reading of the top-level fields the claims read (both are under readings)")),
    # MIB's circuit track (issue 29): defaults are MIB's (tasks.mib_files, hannamw/MIB-circuit-track b759df34)
    "mib_track": {
        "runs": Setting(MibRuns(), REQUIRED, "MIB model key -> MIB tasks (pairs MIB scores)"),
        "methods": Setting(ListOf(Named("methods")), ["eap", "eap_ig"], "edge scorers (names of `attribute`)"),
        "steps": STEPS,
        "attribution_split": Setting(Choice(Ref("attrpatch.tasks.mib_files", "SPLITS")),
                                     Ref("attrpatch.tasks.mib_files", "DEFAULT_ATTRIBUTION_SPLIT"),
                                     "split the methods score on (MIB's run_attribution.py default)"),
        "n": Setting(Optional(POS), Ref("attrpatch.tasks.mib_files", "DEFAULT_ATTRIBUTION_ROWS"),
                     "kept rows the methods score on (MIB's --num-examples); null: all"),
        "eval_split": Setting(Choice(Ref("attrpatch.tasks.mib_files", "SPLITS")),
                              Ref("attrpatch.tasks.mib_files", "DEFAULT_EVAL_SPLIT"),
                              "split CPR/CMD are measured on (MIB's run_evaluation.py default)"),
        "n_eval": Setting(Optional(POS), None, "kept rows CPR/CMD are measured on; null: all"),
        "prepend_bos": Setting(Bool(), True, "prepend BOS (the EAP-IG library's tokenize_plus: to_tokens(prepend_bos=True))"),
        "seed": SEED, "batch_size": BATCH_SIZE,
    },
}


def _cross_checks(exp: str, spec: Mapping, path: str) -> list[str]:
    """Rules between keys of one experiment."""
    errs = []
    if exp == "eapgp_gain" and isinstance(spec.get("methods"), list):
        if not {"eap_ig", "eap_gp"} <= set(spec["methods"]):
            errs.append(must_be(f"{path}.methods", spec["methods"],
                                "a list including 'eap_ig' and 'eap_gp' (the gain compares them)"))
    if exp == "eapgp_gain" and spec.get("gp_step") is not None and spec.get("gp_step") in (spec.get("gp_step_variants") or []):
        errs.append(must_be(f"{path}.gp_step_variants", spec["gp_step_variants"],
                            f"rules other than gp_step ({spec['gp_step']!r}), which the `eap_gp` curve already runs"))
    if exp == "hvp" and "subset" in spec and spec.get("max_edges") is not None:
        errs.append(f"{path}: set subset or max_edges, not both (max_edges replaces subset)")
    return errs


def check(exp: str, spec: Mapping, env: Mapping) -> list[str]:
    """Every problem of experiments.<exp> (empty: valid)."""
    path = f"experiments.{exp}"
    if exp not in SETTINGS:
        return [f"{path}: no settings declared; declared: {', '.join(SETTINGS)}"]
    return _check_keys(spec, SETTINGS[exp], path, env) + _cross_checks(exp, spec, path)


def resolve(exp: str, spec: Mapping, env: Mapping) -> tuple[dict, list[str]]:
    """(settings merged with the declared defaults, problems). Use the settings only if no problems."""
    errs = check(exp, spec, env)
    return ({} if errs else _merge(spec, SETTINGS[exp])), errs


def describe(exp: str) -> list[tuple[str, str, str, str]]:
    """(key, allowed, default, doc) rows of one experiment's declaration (docs, `attrpatch settings`)."""
    rows = []
    for k, s in SETTINGS[exp].items():
        d = "required" if s.default is REQUIRED else (f"{s.default.module}.{s.default.name}"
                                                        if isinstance(s.default, Ref) else repr(s.default))
        rows.append((k, s.rule.allowed, d, s.doc))
    return rows


# --------------------------------------------------------------------------- per task


def for_task(settings: Mapping, task: str, model_name: str, n_edges: int, *, edge_counts: bool = True) -> dict:
    """The settings of one (task, model) of an experiment: ``n`` (``n_by_task`` overrides),
    ``edge_counts`` (``edge_counts_by_task`` overrides; budgets above n_edges clipped to
    n_edges and deduplicated; with ``edge_counts=False`` None when unset), ``batch_size`` (int
    or {model: int} -> int or None), ``exact`` (null -> graphs of at most 5,000 edges: True;
    GPT-2 small's 32,491 edges x k prompts would be too many patched rows), ``max_edges`` /
    ``acdc_max_edges`` (None: unlimited)."""
    n = int((settings.get("n_by_task") or {}).get(task, settings["n"]))
    counts = (settings.get("edge_counts_by_task") or {}).get(task, settings.get("edge_counts"))
    if counts:
        counts = sorted({min(int(c), int(n_edges)) for c in counts})
    elif edge_counts:
        raise ValueError(f"edge_counts missing for task {task!r}")
    else:
        counts = None
    bs = settings.get("batch_size")
    if isinstance(bs, Mapping):
        bs = bs.get(model_name)
    exact = settings.get("exact")
    if exact is None:
        exact = n_edges <= 5000
    limits = {k: (int(settings[k]) if settings.get(k) else None) for k in ("max_edges", "acdc_max_edges")}
    return {"n": n, "edge_counts": counts, "batch_size": int(bs) if bs else None, "exact": exact, **limits}
