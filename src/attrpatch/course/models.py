"""Trained tiny models for the notebooks: trained once by the DAG's own trainer, then cached.

Circuits, ROC and ACDC mean more on a model that does the task than on random weights. The
model of a task, its trainer config, seed and step count come from the profile
(``config/<profile>.yaml``: ``models.<name>.train``/``steps``, the top-level ``seed``, the
task -> model map of ``experiments.tasks_eval.tasks``), exactly as the Snakefile's ``train``
rule reads them, and `models.train.train_tiny` trains it on one CPU thread.

Where a checkpoint is looked for, in order:

1. the repository's own DAG output, ``models/<profile>/<name>`` (`repro.context.model_dir`
   under the checkout the package runs from), when it exists and nothing is overridden;
2. the course cache, ``$ATTRPATCH_CACHE/course/<profile>/<name>`` (default
   ``$XDG_CACHE_HOME/attrpatch`` or ``~/.cache/attrpatch``), valid only when its manifest
   (``course_cache.json``, written last and atomically) names the same request and the
   checkpoint files still have the hashes it recorded: a half-written or corrupt cache is
   never loaded, it is trained again.

Training costs minutes (the trainer stops at its ``max_seconds`` wall-clock budget, 230 s on
a loaded machine: course/README.md), which does not fit a notebook's 3-minute budget, so a
notebook only *uses* a cached model (`notebook_model`, falling back to a random model with a
printed line) and the teacher builds the cache once with ``attrpatch course prepare``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..graph import Graph
from ..io import write_json
from ..models import load_model
from ..models.train import train_tiny
from ..repro.config import ConfigError, load_config
from ..repro.context import EXPERIMENTS, EXTRA_TOP_LEVEL, PACKAGE_ROOT, config_root, known_methods, model_dir
from ..tasks import ALL_TASK_NAMES
from ..tasks import make_batch
from .inputs import random_batch, random_model

DEFAULT_PROFILE = "tiny"
NOTEBOOK_TASKS = ("ioi",)           # the tasks the notebooks demonstrate on (notebook 06: circuits)
MANIFEST = "course_cache.json"
HASHED = ("config.json", "model.safetensors", "vocab.json")
TASK_MAP_EXPERIMENT = "tasks_eval"  # the profile's experiment that maps every task to its model
MODEL_ENV = "ATTRPATCH_COURSE_MODEL"  # "random": notebooks never load a trained model (the test suite's fixed cost)
MODEL_CHOICES = ("auto", "random")    # auto (default): the trained model when cached


class NotCached(RuntimeError):
    """The trained model is not cached and training was not allowed."""


def cache_root() -> Path:
    """``$ATTRPATCH_CACHE``, else ``$XDG_CACHE_HOME/attrpatch``, else ``~/.cache/attrpatch``."""
    if os.environ.get("ATTRPATCH_CACHE"):
        return Path(os.environ["ATTRPATCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attrpatch"


def _profile(profile: str) -> dict:
    """The profile as written (`repro.config.load_config`, validated, from the checkout's config/),
    without `repro.context.load_profile`'s resolution of experiment defaults (it imports every
    experiment's code, plots included: more than a notebook needs)."""
    return load_config(profile, known_tasks=set(ALL_TASK_NAMES), known_methods=known_methods(),
                       known_experiments=set(EXPERIMENTS), root=config_root(profile, Path.cwd()),
                       extra_top_level=EXTRA_TOP_LEVEL)


def model_for_task(task: str, profile: str = DEFAULT_PROFILE) -> str:
    """The profile's model for `task` (its ``experiments.tasks_eval.tasks`` map)."""
    tasks = _profile(profile)["experiments"].get(TASK_MAP_EXPERIMENT, {}).get("tasks", {})
    if task not in tasks:
        raise ValueError(f"profile {profile!r} maps no model to task {task!r}; allowed: {sorted(tasks)}")
    return tasks[task]


def _request(name: str, profile: str, overrides: dict) -> dict:
    """What the DAG's train rule would run for `name` (plus overrides): the cache's key."""
    cfg = _profile(profile)
    spec = cfg["models"].get(name)
    if not isinstance(spec, dict) or "train" not in spec:
        trained = sorted(m for m, s in cfg["models"].items() if isinstance(s, dict) and "train" in s)
        raise ValueError(f"{name!r} is not a trained model of profile {profile!r}; allowed: {trained}")
    return {"profile": profile, "name": name, "trainer": spec["train"], "seed": int(cfg["seed"]),
            "steps": spec.get("steps"), "overrides": dict(sorted(overrides.items()))}


def _hashes(path: Path) -> dict | None:
    if not all((path / f).is_file() for f in HASHED):
        return None
    return {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in HASHED}


def cached_checkpoint(path: Path, request: dict) -> bool:
    """True when `path` holds a complete checkpoint of `request` (manifest and hashes agree)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("request") == request and manifest.get("sha256") == _hashes(Path(path))


def trained_tiny(name: str = "tiny-gpt2", profile: str = DEFAULT_PROFILE, *, train: bool = True,
                 cache: Path | None = None, progress: bool = True, **overrides) -> Path:
    """The checkpoint directory of the profile's trained model `name`, training it on a miss.

    overrides: trainer settings (`models.train.CONFIGS` keys, e.g. ``steps`` or ``n_layer``) that
    change the model; they are part of the cache key, and the repository's DAG checkpoint is
    only reused without them. train=False: raise `NotCached` instead of training.
    """
    request = _request(name, profile, overrides)
    repo = model_dir(profile, name, root=PACKAGE_ROOT)
    if not overrides and _hashes(repo) is not None:
        return repo
    path = Path(cache or cache_root()) / "course" / profile / name
    if cached_checkpoint(path, request):
        return path
    if not train:
        raise NotCached(f"no trained {name} in {path} (nor {repo})")
    settings = dict(overrides)
    steps = settings.pop("steps", request["steps"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # the DAG's train rule: one thread, deterministic
    try:
        info = train_tiny(request["trainer"], path, seed=request["seed"], steps=steps, progress=progress, **settings)
    finally:
        torch.set_num_threads(threads)
    write_json(path / MANIFEST, {"request": request, "sha256": _hashes(path), "seconds": info["seconds"],
                                 "steps_run": info["steps_run"], "stop_reason": info["stop_reason"]})
    return path


def notebook_model(task: str = "ioi", n: int = 16, seed: int = 0, profile: str = DEFAULT_PROFILE):
    """(model, graph, batch, label) for a notebook: the profile's trained model of `task` when it
    is cached (never trains: that takes minutes), else a tiny random model on random prompts,
    saying so in one printed line."""
    choice = os.environ.get(MODEL_ENV) or "auto"
    if choice not in MODEL_CHOICES:
        raise ValueError(f"{MODEL_ENV} must be one of {list(MODEL_CHOICES)}, got {choice!r}")
    try:
        if choice == "random":
            raise NotCached(f"{MODEL_ENV}=random")
        try:
            name = model_for_task(task, profile)
        except ConfigError:   # installed without the checkout's config/ (e.g. Colab): nothing to look up
            raise NotCached(f"no config/{profile}.yaml here") from None
        path = trained_tiny(name, profile, train=False)
    except NotCached as why:
        model, graph = random_model(seed)
        reason = why if choice == "random" else f"{why}; your teacher can run `attrpatch course prepare`"
        print(f"no trained model for {task} ({reason}): using a random model on random prompts; the "
              f"demonstrations run, but the model does not do {task}")
        return model, graph, random_batch(seed, B=n), "random model"
    model = load_model(path)
    batch = make_batch(task, n, seed, tokenizer=model.attrpatch_tokenizer)
    print(f"trained {name} from {path}: {task}, {n} prompt pairs")
    return model, Graph.from_model(model), batch, f"trained {name}"


def prepare(profile: str = DEFAULT_PROFILE, tasks=NOTEBOOK_TASKS, progress: bool = True) -> list[Path]:
    """Train (or find) the models the notebooks use; returns their checkpoint directories."""
    return [trained_tiny(name, profile, progress=progress)
            for name in dict.fromkeys(model_for_task(t, profile) for t in tasks)]
