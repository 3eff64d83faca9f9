"""What an experiment script needs from a profile: its config, models, batches, paths.

Experiments stay thin: `ctx = Context.from_args(argv)`, then `ctx.model(name)`,
`ctx.batch(task, model_name, n, seed)`, `ctx.spec`, and the library's methods. Model specs
in `config/<profile>.yaml`:

* ``{train: tiny-gpt2}``: trained by the DAG into ``models/<profile>/<name>``;
* ``{pretrained: gpt2, dtype: float32}``: real weights from the local Hugging Face cache;
* ``{random: gpt2}``: that model's exact shape with random weights and the toy vocabulary
  (the paper profile's code paths, runnable without weights); ``n_embd: 48`` narrows it
  (same layers, heads, graph and node names; the CI run of those code paths).
  ``{random: attn-only-4l}`` is the Docstring model's own class (`models.shortformer.HookedShortformer`).
  In an experiment that reads the EAP-IG paper's prompt files (tasks ``<task>_eapig``) the
  vocabulary is the stand-in tokenizer over those files (`tasks.eapig_files`).

Tokenization per experiment: ``prepend_bos`` (default false; true or false, or a mapping
task -> bool) prepends the tokenizer's BOS token to every prompt and moves the metric
position one right, as TransformerLens did for the EAP-IG and EAP-GP papers' GPT-2; the EAP
paper's data (ACDC's) had none.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from functools import cached_property
from pathlib import Path

import torch

from ..graph import Graph
from ..methods.registry import ALL_METHOD_NAMES, SCORERS
from ..models import ModelWeightsMissing, load_model, resolve_pretrained
from ..models.random import FAMILIES, GPT2_SHAPES, random_bridge, save_random_family
from ..models.shortformer import NAMES as SHORTFORMER_NAMES, missing_repos, random_shortformer
from ..models.train import CONFIGS
from ..tasks import ALL_TASK_NAMES, make_batch
from ..tasks.eapig_files import (PAPER_TASKS, data_dir, load_batch, missing_paper_data as missing_paper_files,
                                 standin_tokenizer)
from ..tasks.docstring_acdc import make_acdc_batch, stand_in_tokenizer
from ..tasks import mib_files
from ..tasks.vocab import toy_tokenizer
from . import config as config_mod, settings as settings_mod
from .claims import PROFILES as CLAIM_PROFILES
from .shards import SPLIT_EXPERIMENTS

EXPERIMENTS = ("graph_counts", "tasks_eval", "reference", "eap_roc", "eap_r2", "eap_acdc", "gradrop",
               "eapig_faith", "eapgp_gain", "hvp", "mib_track")
EXTRA_TOP_LEVEL = ("claims_profile", "strict", "description", "dtype", "resources", "paper_data_dir", "mib_data_dir")
RESOURCE_RULES = ("default", "train", "claims") + EXPERIMENTS + tuple(f"{e}_shard" for e in SPLIT_EXPERIMENTS)
RESOURCE_KEYS = ("mem_mb", "runtime", "gpu")
MODEL_KINDS = ("train", "pretrained", "random")
# keys a model spec may have besides its kind, per kind
MODEL_KEYS = {"train": ("steps", "dtype"), "pretrained": ("dtype", "kv_convention"),
              "random": ("dtype", "n_embd", "attn_only", "n_layer", "n_head", "kv_convention")}
KV_CONVENTIONS = ("grouped", "ungrouped")      # graph.KV_CONVENTIONS (checked equal in tests/test_mib_profile.py)
DTYPES = ("float32", "float64", "float16", "bfloat16")


def known_methods() -> set[str]:
    return set(ALL_METHOD_NAMES)


def known_scorers() -> set[str]:
    """Methods `attribute` scores with (the procedures acdc_task/acdc_kl/eap_acdc are not)."""
    return set(SCORERS)


def trainable_models() -> list[str]:
    return sorted(CONFIGS)


def load_profile(profile_or_path, root=None) -> dict:
    """Parse and validate a profile config (fails before any work, naming the bad entry)."""
    return config_mod.load_config(profile_or_path, known_tasks=set(ALL_TASK_NAMES), known_methods=known_methods(),
                                  known_experiments=set(EXPERIMENTS), root=root,
                                  extra_top_level=EXTRA_TOP_LEVEL, check=_check_profile)


def _check_profile(cfg: dict) -> list[str]:
    """The checks beyond repro/config.py's generic ones; replaces each experiment section by its
    settings merged with the declared defaults (attrpatch.repro.settings)."""
    errs = []
    cp = cfg.get("claims_profile", cfg.get("profile"))
    if cp not in CLAIM_PROFILES:
        errs.append(f"claims_profile: {cp!r} is not a claims profile; allowed: {list(CLAIM_PROFILES)}")
    for name, spec in cfg["models"].items():
        errs += _check_model_spec(name, spec) if isinstance(spec, dict) else []
    errs += _check_resources(cfg.get("resources", {}))
    if "strict" in cfg and not isinstance(cfg["strict"], bool):
        errs.append(settings_mod.must_be("strict", cfg["strict"],
                                        "true or false (failing claims make the workflow exit 1)"))
    env = {"tasks": set(ALL_TASK_NAMES), "models": set(cfg["models"]), "methods": known_scorers()}
    for exp, spec in cfg["experiments"].items():
        if exp in settings_mod.SETTINGS and isinstance(spec, dict):
            merged, problems = settings_mod.resolve(exp, spec, env)
            errs += problems
            cfg["experiments"][exp] = merged
    return errs


def _check_model_spec(name: str, spec: dict) -> list[str]:
    """One of train/pretrained/random, that kind's keys only, a known tiny config / shape."""
    kinds = [k for k in MODEL_KINDS if k in spec]
    if len(kinds) != 1:
        return [f"models.{name}: needs exactly one of {list(MODEL_KINDS)}, got {sorted(spec)}"]
    kind = kinds[0]
    errs = [f"models.{name}.{k}: unknown key for a {kind!r} model; allowed: {', '.join((kind,) + MODEL_KEYS[kind])}"
            for k in spec if k != kind and k not in MODEL_KEYS[kind]]
    if "kv_convention" in spec and spec["kv_convention"] not in KV_CONVENTIONS:
        errs.append(settings_mod.must_be(f"models.{name}.kv_convention", spec["kv_convention"],
                                        f"one of {', '.join(KV_CONVENTIONS)} (ungrouped: MIB's per-head keys and values)"))
    if "dtype" in spec and spec["dtype"] not in DTYPES:
        errs.append(settings_mod.must_be(f"models.{name}.dtype", spec["dtype"], f"one of {', '.join(DTYPES)}"))
    if kind == "train":
        if spec["train"] not in trainable_models():
            errs.append(f"models.{name}.train: {spec['train']!r} is not a tiny model config; "
                        f"allowed: {', '.join(trainable_models())}")
        st = spec.get("steps")
        if st is not None and not (isinstance(st, int) and not isinstance(st, bool) and st >= 1):
            errs.append(settings_mod.must_be(f"models.{name}.steps", st, "an integer >= 1"))
    elif kind == "pretrained":
        if not isinstance(spec["pretrained"], str) or not spec["pretrained"]:
            errs.append(f"models.{name}.pretrained: {spec['pretrained']!r} must be a Hugging Face model name")
    else:
        errs += _check_random_spec(name, spec)
        if "attn_only" in spec and not isinstance(spec["attn_only"], bool):
            errs.append(settings_mod.must_be(f"models.{name}.attn_only", spec["attn_only"], "true or false"))
    return errs


def _check_resources(res) -> list[str]:
    """``resources: {rule: {mem_mb, runtime (minutes), gpu}}`` (what the Snakefile's rules declare)."""
    if not isinstance(res, dict):
        return [f"resources: must map rule names to {{{', '.join(RESOURCE_KEYS)}}}, got {type(res).__name__}"]
    errs = []
    for rule, spec in res.items():
        if rule not in RESOURCE_RULES:
            errs.append(f"resources.{rule}: unknown rule; allowed: {', '.join(RESOURCE_RULES)}")
            continue
        if not isinstance(spec, dict):
            errs.append(f"resources.{rule}: must be a mapping of {', '.join(RESOURCE_KEYS)}")
            continue
        for k, v in spec.items():
            if k not in RESOURCE_KEYS:
                errs.append(f"resources.{rule}.{k}: unknown resource; allowed: {', '.join(RESOURCE_KEYS)}")
            elif not isinstance(v, int) or isinstance(v, bool) or v < 0:
                errs.append(f"resources.{rule}.{k}: {v!r} must be a non-negative integer")
    return errs


def missing_paper_data(cfg: dict) -> str | None:
    """Why the profile's EAP-IG paper prompt files cannot be read (None when they can)."""
    return missing_paper_files(cfg)


def _check_random_spec(name: str, spec: dict) -> list[str]:
    """``random:`` a GPT-2 shape (`GPT2_SHAPES`; n_layer/n_head/n_embd may override it) or a model
    family (`models.random.FAMILIES`, e.g. llama-gqa; n_layer, n_head and n_embd required)."""
    kind = spec["random"]
    if kind not in GPT2_SHAPES and kind not in FAMILIES:
        return [f"models.{name}.random: unknown shape or family {kind!r}; allowed shapes: {sorted(GPT2_SHAPES)}; "
                f"families: {sorted(FAMILIES)}"]
    if kind not in GPT2_SHAPES:
        absent = [k for k in ("n_layer", "n_head", "n_embd") if k not in spec]
        if absent:
            return [f"models.{name}: a random {kind!r} model needs {', '.join(absent)} (a family has no default size)"]
    for k in ("n_layer", "n_head", "n_embd"):
        v = spec.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            return [settings_mod.must_be(f"models.{name}.{k}", v, "a positive integer")]
    sh = random_shape(spec)
    if sh["n_embd"] % sh["n_head"]:
        return [f"models.{name}.n_embd: {sh['n_embd']!r} must be a positive multiple of the shape's {sh['n_head']} heads"]
    return []


def random_shape(spec: dict) -> dict:
    """Dimensions of a ``{random: ...}`` model spec: a GPT-2 shape's, overridden by its
    ``n_layer`` / ``n_head`` / ``n_embd`` (a family's come from those keys alone)."""
    shape = dict(GPT2_SHAPES.get(spec["random"], {}))
    for k in ("n_layer", "n_head", "n_embd"):
        if spec.get(k) is not None:
            shape[k] = int(spec[k])
    return shape


def missing_mib_data(cfg: dict) -> str | None:
    """Why a profile's MIB task files cannot be read (None when they can, or when it runs no mib_track)."""
    spec = cfg["experiments"].get("mib_track")
    if not spec:
        return None
    try:
        mib_files.require(mib_files.data_dir(cfg), mib_tasks(spec), (spec["attribution_split"], spec["eval_split"]))
    except mib_files.MibDataMissing as e:
        return str(e)
    return None


def mib_tasks(spec: dict) -> list[str]:
    """Every MIB task of a mib_track section's runs, in order, once."""
    return list(dict.fromkeys(t for ts in spec["runs"].values() for t in ts))


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def model_dir(profile: str, name: str, root: Path | None = None) -> Path:
    return (root or Path.cwd()) / "models" / profile / name


def missing_pretrained(cfg: dict) -> list[str]:
    """Names of pretrained models whose weights are not in the local cache (no download);
    for the Docstring model, the hub repos to fetch (its checkpoint and/or tokenizer)."""

    missing = []
    for name, spec in cfg["models"].items():
        if spec.get("pretrained") in SHORTFORMER_NAMES:
            missing += [r for r in missing_repos() if r not in missing]
        elif "pretrained" in spec:
            try:
                resolve_pretrained(spec["pretrained"])
            except ModelWeightsMissing:
                missing.append(spec["pretrained"])
    return missing


PACKAGE_ROOT = Path(__file__).resolve().parents[3]


def config_root(profile: str, workdir: Path) -> Path:
    """Where config/<profile>.yaml lives: the working directory if it has one, else the
    repository this package was installed from (so `snakemake --directory DIR` works)."""
    if (workdir / "config" / f"{profile}.yaml").exists() or Path(profile).suffix in (".yaml", ".yml"):
        return workdir
    return PACKAGE_ROOT


class Context:
    """One experiment run: profile config, its spec, model cache, output paths.

    Outputs and trained models are relative to the working directory (`root`).
    """

    def __init__(self, profile: str, experiment: str, root: Path | None = None, threads: int | None = None):
        self.root = Path(root or Path.cwd())
        self.cfg = load_profile(profile, root=config_root(profile, self.root))
        self.profile = self.cfg["profile"]
        self.experiment = experiment
        # the experiment's settings: its profile section merged with its declaration (attrpatch.repro.settings)
        self.spec = self.cfg["experiments"].get(experiment) or settings_mod.resolve(experiment, {}, {})[0]
        self.seed = int(self.spec["seed"] if self.spec.get("seed") is not None else self.cfg["seed"])
        self.device = resolve_device(self.cfg["device"])
        self._models: dict = {}
        if threads:
            torch.set_num_threads(int(threads))
        torch.manual_seed(self.seed)

    @classmethod
    def from_args(cls, experiment: str, argv=None) -> tuple["Context", argparse.Namespace]:
        p = argparse.ArgumentParser(description=f"attrpatch experiment {experiment}")
        p.add_argument("--profile", default="tiny")
        p.add_argument("--out", required=True, help="result JSON path")
        p.add_argument("--figure", help="figure PNG path (a PDF is written beside it)")
        p.add_argument("--table", help="optional CSV of per-item values")
        p.add_argument("--threads", type=int, default=None)
        # scatter/gather (the DAG's shard jobs, Snakefile "scatter / gather"; attrpatch.repro.shards)
        p.add_argument("--shard", type=int, help="compute only shard SHARD of SHARDS, written to --out")
        p.add_argument("--shards", type=int)
        p.add_argument("--gather", nargs="+", metavar="SHARD", help="the shard files to put together")
        args = p.parse_args(argv)
        if (args.shard is None) != (args.shards is None) or (args.shard is not None and args.gather):
            p.error("give --shard and --shards together, or --gather, or neither")
        if (args.shard is not None or args.gather) and experiment not in SPLIT_EXPERIMENTS:
            p.error(f"experiment {experiment} is not split into shards; split: {', '.join(SPLIT_EXPERIMENTS)}")
        return cls(args.profile, experiment, threads=args.threads), args

    # ---- models, tokenizers, batches --------------------------------------------------
    def model(self, name: str):
        if name not in self._models:
            self._models[name] = self._load(name)
        return self._models[name]

    def _load(self, name: str):
        spec = self.cfg["models"][name]
        dtype = getattr(torch, spec.get("dtype", "float32"))
        if "train" in spec:
            path = model_dir(self.profile, name, self.root)
            if not path.exists():
                raise FileNotFoundError(f"tiny model {name!r} not trained yet: {path} missing "
                                        f"(run `snakemake --cores all {path}`)")
            return load_model(path, device=self.device, dtype=dtype)
        kv = spec.get("kv_convention", "grouped")
        if "pretrained" in spec:
            return load_model(spec["pretrained"], device=self.device, dtype=dtype, kv_convention=kv)
        tok = self._random_tokenizer()
        if spec["random"] not in GPT2_SHAPES:      # a model family at its own tiny size (models.random)
            sh = random_shape(spec)
            with tempfile.TemporaryDirectory() as tmp:
                path = save_random_family(spec["random"], tmp, n_layer=sh["n_layer"], n_head=sh["n_head"],
                                          n_embd=sh["n_embd"], vocab_size=len(tok), n_positions=64, seed=self.seed)
                model = load_model(path, device=self.device, dtype=dtype, kv_convention=kv)
            model.attrpatch_tokenizer = tok
            return model
        if kv != "grouped":
            raise ValueError(f"models.{name}.kv_convention: a random GPT-2 shape has no grouped-query attention; "
                             f"got {kv!r}")
        if spec["random"] in SHORTFORMER_NAMES:   # the Docstring model's own class (shortformer positions)
            sh = random_shape(spec)
            model = random_shortformer(n_layers=sh["n_layer"], n_heads=sh["n_head"], d_model=sh["n_embd"],
                                       d_vocab=len(tok), n_ctx=64, seed=self.seed, device=self.device, dtype=dtype)
        else:
            model = random_bridge(**random_shape(spec), vocab_size=len(tok), seed=self.seed, device=self.device,
                                  dtype=dtype, attn_only=bool(spec.get("attn_only", False)), n_positions=64)
        model.attrpatch_tokenizer = tok
        return model

    def _random_tokenizer(self):
        """Random models: the toy tokenizer, or the stand-in over the paper's files when this
        experiment reads them (the stand-in contains the toy vocabulary)."""
        if self.experiment == "mib_track":
            sp = self.spec
            root = mib_files.data_dir(self.cfg)
            files = [mib_files.file_of(t, s) for t in mib_tasks(sp) for s in (sp["attribution_split"], sp["eval_split"])]
            mib_files.require(root, mib_tasks(sp), (sp["attribution_split"], sp["eval_split"]))
            return mib_files.standin_tokenizer(root, files)
        if any(t in PAPER_TASKS for t in self.task_models()):
            return standin_tokenizer(data_dir(self.cfg))
        if self.spec.get("docstring_prompts") == "acdc" and "docstring" in self.task_models():
            return stand_in_tokenizer()
        return toy_tokenizer()

    def prepend_bos(self, task: str) -> bool:
        """The experiment's ``prepend_bos`` for `task` (default false)."""
        v = self.spec.get("prepend_bos", False)
        return bool(v.get(task, False) if isinstance(v, dict) else v)

    def batch(self, task: str, model_name: str, n: int | None, seed: int | None = None):
        """`n` pairs of `task` for `model_name`'s tokenizer: seeded generated pairs, or the first
        `n` kept rows of the EAP-IG paper's file for a ``<task>_eapig`` task."""
        tok = self.model(model_name).attrpatch_tokenizer
        bos = self.prepend_bos(task)
        if task in PAPER_TASKS:
            return load_batch(task, n, data_dir(self.cfg), tok, prepend_bos=bos).to(self.device)
        if task == "docstring" and self.spec.get("docstring_prompts") == "acdc":
            return make_acdc_batch(int(n), self.seed if seed is None else int(seed), tok,
                                   prepend_bos=bos).to(self.device)
        b = make_batch(task, int(n), self.seed if seed is None else int(seed), tokenizer=tok)
        if bos:
            b = b.with_bos(_bos_id(tok))
        return b.to(self.device)

    def mib_batch(self, task: str, model_name: str, split: str, n: int | None):
        """The first `n` kept rows (all: None) of MIB's `task` `split` for `model_name`'s tokenizer
        (`tasks.mib_files`; the data directory: $ATTRPATCH_MIB_DATA or the profile's mib_data_dir)."""
        tok = self.model(model_name).attrpatch_tokenizer
        return mib_files.load_batch(task, n, mib_files.data_dir(self.cfg), split, tok,
                                    prepend_bos=bool(self.spec.get("prepend_bos", False))).to(self.device)

    def task_models(self) -> dict[str, str]:
        """The experiment's ``tasks`` mapping (task -> model name)."""
        t = self.spec.get("tasks", {})
        if isinstance(t, list):
            raise ValueError(f"experiments.{self.experiment}.tasks must map each task to a model name")
        return dict(t)

    def task(self, task: str, model_name: str, *, edge_counts: bool = False) -> "TaskRun":
        """The per-task prologue of an experiment: model, its graph, the task's settings
        (`settings.for_task`), and the prompt batch (made when first used)."""
        return TaskRun(self, task, model_name, edge_counts)


class TaskRun:
    """One (task, model) of an experiment: ``model``, ``graph``, ``settings`` (n, edge_counts,
    batch_size, exact, max_edges, acdc_max_edges), ``batch``, and ``opts`` (the
    ``batch_size=`` keyword for methods, empty when unset)."""

    def __init__(self, ctx: Context, task: str, model_name: str, edge_counts: bool):
        self.ctx, self.task, self.model_name = ctx, task, model_name
        self.model = ctx.model(model_name)
        self.graph = Graph.from_model(self.model)
        self.settings = settings_mod.for_task(ctx.spec, task, model_name, self.graph.n_edges, edge_counts=edge_counts)
        bs = self.settings["batch_size"]
        self.opts = {"batch_size": bs} if bs else {}

    @cached_property
    def batch(self):
        return self.ctx.batch(self.task, self.model_name, self.settings["n"])


def _bos_id(tok) -> int:
    bos = getattr(tok, "bos_id", None)
    bos = getattr(tok, "bos_token_id", None) if bos is None else bos
    if bos is None:
        raise ValueError(f"prepend_bos is set but the tokenizer {type(tok).__name__} has no BOS token")
    return int(bos)


def reference_path(profile: str, task: str, root: Path | None = None) -> Path:
    return (root or Path.cwd()) / "results" / profile / "reference" / f"{task}.csv"
