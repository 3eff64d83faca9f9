"""What a profile's heavy experiments cost, and how many shard jobs keep each job under an hour.

Why: the DAG splits its heavy rules into shard jobs (`repro.shards`); the paper profile's shard
counts must come from a computation, not a guess. The model here:

    cost = passes per prompt (per method, counted in forward-equivalents) x FLOPs of one forward
           of the model's shape at P positions x prompts   (x edges for exact patching / ACDC)

* Passes per prompt per method (`method_passes`) are the methods' own counts, checked against
  hooks that count the forward and backward rows really run (tests/test_cost.py).
* A backward costs ``BACKWARD_FORWARDS`` forwards, a double backward (HVP) ``DOUBLE_BACKWARD_FORWARDS``
  (the usual 2x estimate for a backward; the double backward's is an assumption).
* FLOPs of one forward: 2 x the multiply-adds `patch_cost.full_forward` counts for the shape.
* Exact patching and ACDC are counted as a full forward per patched edge and prompt: an upper
  bound (the Patcher's prefix and window paths recompute less: `patch_cost.recompute_fraction`).
  ACDC at T thresholds is bounded by every edge (its q/k/v direct edges too) tested once per threshold.
* Seconds = FLOPs / throughput. ``GPU_FLOPS`` is an ASSUMPTION (no GPU was lent to measure one);
  `measure_cpu_flops` measures this machine's CPU throughput on a GPT-2-small-shaped forward, the
  calibration the README quotes beside the load.

`profile_costs(cfg)` prices every split experiment of a profile: the part its shards divide
(prompt chunks of the scores; ACDC's runs, one per sweep and threshold, `acdc_runs`) and the part
its gather job still runs whole (faithfulness curves, EAP, exact patching), and `needed_shards` the
shard count that keeps the longest shard under ``SHARD_HOURS`` (ACDC's runs are split into
cost-balanced slices, `repro.shards.cost_slices`, so a shard's work is the costs' business, not
only their number). ``python -m attrpatch.repro.cost --profile paper`` prints the
table; tests/test_cost.py checks config/paper.yaml's shard counts against it.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Mapping

import torch

from ..analysis.second_order import ig_alphas, multistep_alphas
from ..circuits.mib_metrics import PERCENTAGES
from ..circuits.roc import DEFAULT_EDGE_CONVENTION, taus_from_spec
from ..graph import Graph
from ..methods.common import DEFAULT_STEPS
from ..methods.hvp import IG_RULES
from ..models.random import GPT2_SHAPES, random_bridge
from ..models.train import CONFIGS
from ..patch_cost import Shape, full_forward
from ..qkv_direct import n_edges_with_direct
from .context import load_profile
from .shards import cost_slices, needed_slices, run_shard

BACKWARD_FORWARDS = 2.0         # a backward ~ two forwards (the usual estimate: twice the matmuls)
DOUBLE_BACKWARD_FORWARDS = 2.0  # ASSUMPTION: HVP's double backward priced as one more backward
GPU_FLOPS = 10e12               # ASSUMPTION: sustained FLOP/s of one data-centre GPU (A100/H100 class, fp32/TF32)
#                                 on hooked TransformerLens forwards of 25-50 prompts; not measured (no GPU lent)
POSITIONS = 24                  # ASSUMPTION: tokens per prompt (the EAP-IG files' IOI prompts are ~20 GPT-2 tokens
#                                 with BOS; Docstring's ~40 on a 4-layer model, a small share of the total)
SHARD_HOURS = 1.0               # a shard job should need at most this long on one GPU
VOCAB = 50257                   # GPT-2's vocabulary (every model of the paper profile uses it or less)
PRICED = ("eapig_faith", "eapgp_gain", "eap_roc", "eap_acdc", "hvp")   # experiments the model prices
HVP_SUBSET = 48                 # hvp's default per-edge subset (top 24 + random 24: repro.settings)


@dataclass(frozen=True)
class Passes:
    """Forward, backward and double-backward rows per prompt."""
    forwards: float
    backwards: float = 0.0
    double_backwards: float = 0.0

    @property
    def forward_equivalents(self) -> float:
        return self.forwards + BACKWARD_FORWARDS * self.backwards + DOUBLE_BACKWARD_FORWARDS * self.double_backwards


def components(n_layers: int, has_mlps: bool = True) -> int:
    """Components EAP-IG-activations interpolates: the input, each layer's heads, each MLP."""
    return 1 + n_layers * (2 if has_mlps else 1)


def method_passes(method: str, *, steps: int = DEFAULT_STEPS, n_layers: int = 12, has_mlps: bool = True,
                  n_edges: int | None = None, hvp_components: int = HVP_SUBSET, taus: int = 1) -> Passes:
    """Rows per prompt of one run of `method` (the counts in each method's docstring):

    eap: the base run with gradients (its forward gives the base activations) + the source run;
    eap_ig: 2 forwards + ``steps`` forward/backward (eap_ig_kl: one forward more, the base run's
    distribution); eap_ig_activations: 2 + steps x components;
    eap_gp: k + 4 forwards, 2k backwards; hvp: 2 forwards + per component one forward, backward,
    double backward; exact: 2 cached runs + one patched forward per edge; acdc: the 2 cached runs
    + at most one test per edge per threshold."""
    m = int(steps)
    if method == "eap":
        return Passes(2, 1)
    if method == "eap_ig":
        return Passes(2 + m, m)
    if method == "eap_ig_kl":    # + the base run's output distribution, which the KL compares against
        return Passes(3 + m, m)
    if method == "eap_ig_activations":
        c = components(n_layers, has_mlps)
        return Passes(2 + m * c, m * c)
    if method == "eap_gp":
        return Passes(m + 4, 2 * m)
    if method == "hvp":
        return Passes(2 + hvp_components, hvp_components, hvp_components)
    if method in ("exact", "acdc"):
        if n_edges is None:
            raise ValueError(f"{method}: give n_edges")
        return Passes(2 + int(n_edges) * (int(taus) if method == "acdc" else 1))
    raise ValueError(f"no pass count for method {method!r}; allowed: eap, eap_ig, eap_ig_kl, eap_ig_activations, eap_gp, "
                     "hvp, exact, acdc")


def hvp_study_passes(ks, n_subset: int) -> Passes:
    """Rows per prompt of `analysis.hvp_study.second_order_study` on one (task, model), from the
    primitives' counts above: EAP; the activation differences (2 forwards); at each multi-step
    point (`multistep_alphas`) one forward, backward and double backward per subset edge
    (per-component reading) and one for the whole graph (one-pass reading); at each further
    per-component IG point (`ig_alphas` of every rule at 2K steps) one forward and backward per
    subset edge; exact patching of the subset (counted as full forwards: an upper bound); EAP-IG
    at K and 2K steps for every K."""
    n = int(n_subset)
    points = multistep_alphas(ks)
    ig_only = set().union(*[ig_alphas(sorted({2 * int(k) for k in ks}), r) for r in IG_RULES]) - set(points)
    total = Passes(2 + 2 + len(points) * (n + 1) + len(ig_only) * n, 1 + len(points) * (n + 1) + len(ig_only) * n,
                   len(points) * (n + 1))
    for p in [method_passes("exact", n_edges=n)] + [method_passes("eap_ig", steps=m)
                                                    for m in sorted({int(k) for k in ks} | {2 * int(k) for k in ks})]:
        total = Passes(total.forwards + p.forwards, total.backwards + p.backwards, total.double_backwards)
    return total


def model_shape(name_or_spec) -> tuple[Shape, int, bool]:
    """(patch_cost.Shape, n_heads, has_mlps) of a profile model: GPT-2 sizes by name (pretrained or
    random, a random spec's own n_layer/n_head/n_embd winning), the tiny trained models by their
    training config (`models.train.CONFIGS`), so the smoke profile's shards are split like the paper's."""
    if isinstance(name_or_spec, Mapping) and "train" in name_or_spec and name_or_spec["train"] in CONFIGS:
        s = CONFIGS[name_or_spec["train"]]
        d = int(s["n_embd"])
        return Shape(int(s["n_layer"]), d, 0 if s["attn_only"] else 4 * d, VOCAB), int(s["n_head"]), not s["attn_only"]
    key = name_or_spec
    if isinstance(name_or_spec, Mapping):
        key = name_or_spec.get("pretrained") or name_or_spec.get("random")
    if key not in GPT2_SHAPES:
        raise ValueError(f"no shape for model {name_or_spec!r}; known: {', '.join(GPT2_SHAPES)}, "
                         f"trained: {', '.join(CONFIGS)}")
    s = dict(GPT2_SHAPES[key])
    if isinstance(name_or_spec, Mapping):
        s.update({k: name_or_spec[k] for k in ("n_layer", "n_head", "n_embd") if name_or_spec.get(k) is not None})
    attn_only = key.startswith("attn-only") or bool(isinstance(name_or_spec, Mapping) and name_or_spec.get("attn_only"))
    d = int(s["n_embd"])
    return Shape(int(s["n_layer"]), d, 0 if attn_only else 4 * d, VOCAB), int(s["n_head"]), not attn_only


def forward_flops(shape: Shape, positions: int = POSITIONS) -> float:
    """FLOPs of one forward of one prompt (2 per multiply-add)."""
    return 2.0 * full_forward(shape, int(positions))


def _n(spec: Mapping, task: str) -> int:
    return int((spec.get("n_by_task") or {}).get(task, spec["n"]))


def _edge_counts(spec: Mapping, task: str) -> list:
    return list((spec.get("edge_counts_by_task") or {}).get(task, spec.get("edge_counts") or []))


@dataclass
class Cost:
    """FLOPs of one experiment: the part its shards divide and the part its gather job runs whole."""
    experiment: str
    kind: str               # prompts | runs (repro.shards.SPLIT_EXPERIMENTS)
    split_flops: float = 0.0
    whole_flops: float = 0.0
    max_shards: int = 10 ** 9   # no more shards than items (prompts of the smallest task, ACDC runs)
    unit_flops: list = field(default_factory=list)  # runs: each ACDC run's FLOPs (shards are cost-balanced slices)

    def hours(self, flops: float, throughput: float = GPU_FLOPS) -> float:
        return flops / throughput / 3600.0

    def shard_hours(self, count: int, throughput: float = GPU_FLOPS) -> float:
        """GPU-hours of the longest of `count` shards: prompt chunks are equal shares, ACDC's runs
        are split by `repro.shards.cost_slices` (the shard with the costliest slice)."""
        if not self.unit_flops:
            return self.hours(self.split_flops, throughput) / count
        return max(self.hours(sum(self.unit_flops[s:e]), throughput) for s, e in cost_slices(self.unit_flops, count))


def _scoring_runs(spec: Mapping) -> list[str]:
    """The method of every scoring run of eapig_faith / eapgp_gain: its methods, its extra_methods,
    one more eap_gp per further step rule (gp_step_variants)."""
    runs = list(spec["methods"]) + [m for m in dict.fromkeys(spec.get("extra_methods") or []) if m not in spec["methods"]]
    rules = [r for r in dict.fromkeys(spec.get("gp_step_variants") or []) if r != spec.get("gp_step")]
    return runs + ["eap_gp"] * (len(rules) if "eap_gp" in spec["methods"] else 0)


def _task_models(cfg: Mapping, spec: Mapping):
    """(task, model name, model spec) pairs an experiment runs, its extra `models` included."""
    pairs = list(spec["tasks"].items())
    extra = [m for m in spec.get("models") or [] if not all(m == mm for _, mm in pairs)]
    return [(t, m, cfg["models"][m]) for t, m in pairs + [(t, x) for x in extra for t, _ in pairs]]


def sweep_key(task: str, what) -> str:
    """The name of one ACDC sweep in a run shard: "ioi/acdc_kl" (eap_roc), "ioi/f=0.1" (eap_acdc)."""
    return f"{task}/{what}" if isinstance(what, str) else f"{task}/f={float(what):g}"


def acdc_keys(spec: Mapping, exp: str) -> list[tuple[str, str, object]]:
    """(key, task, what) of every ACDC sweep of eap_roc (what: its ACDC method, e.g. "acdc_kl")
    or eap_acdc (what: the EAP keep fraction, 1.0 included: plain ACDC), in a fixed order."""
    if exp == "eap_roc":
        return [(sweep_key(t, m), t, m) for t in spec["tasks"] for m in spec["methods"] if m.startswith("acdc")]
    if exp == "eap_acdc":
        fractions = sorted(set(map(float, spec["eap_keep_fractions"])) | {1.0})
        return [(sweep_key(t, fr), t, fr) for t in spec["tasks"] for fr in fractions]
    raise ValueError(f"no ACDC runs in experiment {exp!r}; allowed: eap_roc, eap_acdc")


def acdc_runs(cfg: Mapping, exp: str, positions: int = POSITIONS) -> list[tuple[tuple[str, float], float]]:
    """((sweep key, tau), FLOPs) of every ACDC run of eap_roc or eap_acdc, in the order the DAG
    splits them (`repro.shards.run_shard`): sweeps as `acdc_keys`, then taus. A run costs its 2
    cached forwards + one forward per edge it may test (every edge of ACDC's graph, q/k/v direct
    edges included under the "acdc" edge convention; at most acdc_max_edges; eap_acdc: the
    kept fraction of them), per prompt: an upper bound."""
    spec = cfg["experiments"][exp]
    taus = taus_from_spec(spec["taus"])
    out = []
    for key, task, what in acdc_keys(spec, exp):
        shape, heads, mlps = model_shape(cfg["models"][spec["tasks"][task]])
        g = Graph(shape.n_layers, heads, has_mlps=mlps)
        tested = n_edges_with_direct(g) if spec.get("edges", DEFAULT_EDGE_CONVENTION) == "acdc" else g.n_edges
        edges = min(tested, int(spec.get("acdc_max_edges") or tested))
        if exp == "eap_acdc":
            edges = min(edges, math.ceil(float(what) * tested))
        flops = method_passes("acdc", n_edges=edges).forward_equivalents * forward_flops(shape, positions) * _n(spec, task)
        out += [((key, float(t)), flops) for t in taus]
    return out


@functools.lru_cache(maxsize=8)
def _layout(cfg_key: str, exp: str, count: int) -> tuple[str, ...]:
    cfg = json.loads(cfg_key)
    runs = acdc_runs(cfg, exp)
    return tuple(json.dumps(run_shard([r for r, _ in runs], [c for _, c in runs], i, count), sort_keys=True)
                 for i in range(count))


def run_layout(cfg: Mapping, exp: str, count: int) -> tuple[str, ...]:
    """Per shard of eap_roc / eap_acdc, its runs as JSON ({sweep key: taus}): what the Snakefile
    passes as a shard job's params, so a changed split reruns the shards it changes."""
    # the key keeps the config's order (the runs' order: tasks as listed)
    return _layout(json.dumps({"models": cfg["models"], "experiments": {exp: cfg["experiments"][exp]}}, default=str),
                   exp, int(count))


def experiment_cost(cfg: Mapping, exp: str, positions: int = POSITIONS) -> Cost:
    """FLOPs of experiment `exp` of profile `cfg` (one of PRICED)."""
    spec = cfg["experiments"][exp]
    if exp in ("eapig_faith", "eapgp_gain"):
        out = Cost(exp, "prompts")
        steps = int(spec.get("steps", DEFAULT_STEPS))
        for task, _, mspec in _task_models(cfg, spec):
            shape, heads, mlps = model_shape(mspec)
            f, n = forward_flops(shape, positions), _n(spec, task)
            runs = _scoring_runs(spec)
            for m in runs:
                p = method_passes(m, steps=steps, n_layers=shape.n_layers, has_mlps=mlps)
                out.split_flops += p.forward_equivalents * f * n
            # gather job: each run's circuits at every budget and MIB's two curves, one forward each
            evals = len(_edge_counts(spec, task)) + (2 * len(PERCENTAGES) if exp == "eapig_faith" else 0)
            out.whole_flops += len(runs) * evals * f * n
            out.max_shards = min(out.max_shards, n)
        return out
    if exp in ("eap_roc", "eap_acdc"):   # ACDC's runs, one per (sweep, tau), split across shards
        runs = acdc_runs(cfg, exp, positions)
        out = Cost(exp, "runs", split_flops=sum(f for _, f in runs), unit_flops=[f for _, f in runs])
        out.max_shards = len(runs)
        for task, _, mspec in _task_models(cfg, spec):
            shape, heads, mlps = model_shape(mspec)
            f, n = forward_flops(shape, positions), _n(spec, task)
            whole = method_passes("eap").forward_equivalents      # the gather job: EAP, exact patching
            if exp == "eap_roc" and "exact" in spec["methods"]:
                edges = Graph(shape.n_layers, heads, has_mlps=mlps).n_edges
                whole += method_passes("exact", n_edges=min(edges, int(spec.get("max_edges") or edges))).forward_equivalents
            out.whole_flops += whole * f * n
        return out
    if exp == "hvp":      # the study on every task and model, its model-running parts split by prompts
        out = Cost(exp, "prompts")
        sub = spec.get("subset") or {}
        n_sub = int(spec["max_edges"]) if spec.get("max_edges") else int(sub.get("top", 24)) + int(sub.get("random", 24))
        eap = method_passes("eap").forward_equivalents
        p = hvp_study_passes(spec["multistep"], n_sub).forward_equivalents - eap
        for task, _, mspec in _task_models(cfg, spec):
            shape, _, _ = model_shape(mspec)
            f, n = forward_flops(shape, positions), _n(spec, task)
            out.split_flops += p * f * n
            out.whole_flops += eap * f * n      # the gather job's EAP, to choose the edges (each shard's too)
            out.max_shards = min(out.max_shards, n)
        return out
    raise ValueError(f"no cost model for experiment {exp!r}; priced: {', '.join(PRICED)}")


def needed_shards(cost: Cost, shard_hours: float = SHARD_HOURS, throughput: float = GPU_FLOPS) -> int:
    """Fewest shards that keep every shard job's split part under `shard_hours` (at most one per
    item; an ACDC run above it alone in its shard)."""
    if cost.unit_flops:
        return needed_slices([cost.hours(f, throughput) for f in cost.unit_flops], shard_hours)
    return max(1, min(cost.max_shards, math.ceil(cost.hours(cost.split_flops, throughput) / shard_hours)))


def profile_costs(cfg: Mapping, positions: int = POSITIONS, throughput: float = GPU_FLOPS) -> list[dict]:
    """One row per priced experiment of the profile: GPU-hours split and whole, needed and set shards."""
    rows = []
    for exp in PRICED:
        if exp not in cfg.get("experiments", {}):
            continue
        c = experiment_cost(cfg, exp, positions)
        k = needed_shards(c, throughput=throughput)
        rows.append({"experiment": exp, "kind": c.kind,
                     "split_gpu_h": c.hours(c.split_flops, throughput), "whole_gpu_h": c.hours(c.whole_flops, throughput),
                     "needed_shards": k, "set_shards": int(cfg["experiments"][exp].get("shards", 1)),
                     "gpu_h_per_shard": c.shard_hours(int(cfg["experiments"][exp].get("shards", 1)), throughput)})
    return rows


def measure_cpu_flops(model_name: str = "gpt2", batch: int = 4, positions: int = POSITIONS, repeats: int = 3) -> dict:
    """This machine's CPU throughput on forwards of a random model of `model_name`'s shape: the
    best of `repeats` timed forwards (after one warm-up), as FLOP/s of the FLOPs counted here."""
    shape, heads, mlps = model_shape(model_name)
    model = random_bridge(n_layer=shape.n_layers, n_head=heads, n_embd=shape.d_model, vocab_size=VOCAB,
                          attn_only=not mlps, seed=0, dtype=torch.float32)
    tokens = torch.randint(0, VOCAB, (batch, positions), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.no_grad():
        model(tokens)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(tokens)
            best = min(best, time.perf_counter() - t0)
    flops = forward_flops(shape, positions) * batch
    return {"model": model_name, "batch": batch, "positions": positions, "seconds_per_forward": best / batch,
            "flops_per_forward": flops / batch, "cpu_flops": flops / best, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="GPU-hours and shard counts of a profile's split experiments "
                                            "(attrpatch.repro.cost: FLOP model, assumed GPU throughput)")
    p.add_argument("--profile", default="paper")
    p.add_argument("--gpu-tflops", type=float, default=GPU_FLOPS / 1e12, help="assumed sustained TFLOP/s of one GPU")
    p.add_argument("--positions", type=int, default=POSITIONS)
    p.add_argument("--calibrate", action="store_true", help="also time a GPT-2-small forward on this CPU")
    args = p.parse_args(argv)
    cfg = load_profile(args.profile)
    thr = args.gpu_tflops * 1e12
    print(f"profile {cfg['profile']}: estimated at an ASSUMED {args.gpu_tflops:g} TFLOP/s per GPU, "
          f"{args.positions} positions per prompt, exact/ACDC as full forwards (upper bound)")
    print(f"{'experiment':<12} {'kind':<8} {'split GPU-h':>12} {'whole GPU-h':>12} {'needed':>7} {'set':>5} {'max GPU-h/shard':>16}")
    for r in profile_costs(cfg, args.positions, thr):
        print(f"{r['experiment']:<12} {r['kind']:<8} {r['split_gpu_h']:>12.2f} {r['whole_gpu_h']:>12.2f} "
              f"{r['needed_shards']:>7} {r['set_shards']:>5} {r['gpu_h_per_shard']:>16.2f}")
    if args.calibrate:
        m = measure_cpu_flops()
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(f"CPU calibration: GPT-2-small forward, batch {m['batch']} x {m['positions']} positions: "
              f"{m['seconds_per_forward'] * 1e3:.1f} ms per prompt, {m['cpu_flops'] / 1e9:.1f} GFLOP/s "
              f"({m['threads']} threads, load {' '.join(load)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
