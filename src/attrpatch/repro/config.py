"""Load and validate a profile configuration (``config/tiny.yaml``, ``config/paper.yaml``).

Why validate at all: the Snakefile reads the config before any rule runs, so a typo
(``tasks: [ioii]``, an experiment name no script implements, a task mapped to a model
that is not declared) should stop the DAG at once with the offending entry path, not
after an hour of training. The checks are generic, driven by the ``known_*`` sets the
caller passes in, so this module imports nothing from the rest of the package and the
task/method/experiment registries stay the single source of truth.

A profile may derive from another (``base: tiny``; see `merge_base`): config/smoke.yaml is
tiny.yaml plus its overrides, paper_random.yaml is paper.yaml plus its overrides.

``config_hash`` gives a stable key for a config section, for caches that must be
invalidated exactly when the settings that produced them change.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

REQUIRED_TOP_LEVEL = ("profile", "seed", "device", "models", "experiments")
BASE_KEY = "base"
DEVICE_RE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """The configuration is unreadable or invalid; the message names file and entry path."""


# --------------------------------------------------------------------------- locating


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The repo root: the nearest directory at or above ``start`` (default: cwd) holding
    ``pyproject.toml`` and ``config/``; else the checkout this module lives in."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "config").is_dir():
            return d
    return Path(__file__).resolve().parents[3]


def available_profiles(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "config").glob("*.yaml"))


def _looks_like_name(arg: str | os.PathLike) -> bool:
    """A bare word ("tiny") is a profile name; anything with a separator or suffix is a path."""
    s = str(arg)
    return not any(c in s for c in "/\\") and not s.endswith((".yaml", ".yml"))


def resolve_config_path(profile_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Map a profile name to ``<root>/config/<name>.yaml``, or check that a path exists."""
    if _looks_like_name(profile_or_path):
        base = Path(root).resolve() if root else find_root()
        path = base / "config" / f"{profile_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"no profile {str(profile_or_path)!r}: {path} does not exist; "
                              f"available profiles: {available_profiles(base)}")
        return path
    path = Path(profile_or_path)
    if not path.is_absolute() and root:
        path = Path(root) / path
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return path


# --------------------------------------------------------------------------- parsing


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":    # `<<: *anchor`: merged keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_strict(text: str) -> Any:
    """The project's one YAML reader (profiles and paper_claims.yaml): safe, and a duplicated
    mapping key is an error (yaml.ConstructorError with its line), never last-one-wins."""
    return yaml.load(text, Loader=_StrictLoader)


def parse_yaml(path: Path) -> Any:
    """Parse YAML; errors become ConfigError naming the file and the 1-based line."""
    try:
        return load_yaml_strict(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from e


def merge_base(cfg: Any, path: Path, seen: tuple[Path, ...] = ()) -> Any:
    """Resolve ``base: <profile>`` (a file in the same directory): the base's config with
    this file's keys on top. Top-level keys replace the base's whole (``models``,
    ``resources``, scalars), except ``experiments``: an experiment named here takes the
    base's settings with this file's keys replacing theirs one by one (a nested mapping such
    as ``taus`` is replaced whole; set a key to its empty value, e.g. ``n_by_task: {}``, to
    clear it). An experiment not named here is the base's as is."""
    if not isinstance(cfg, dict) or BASE_KEY not in cfg:
        return cfg
    name = cfg[BASE_KEY]
    if not isinstance(name, str) or not _looks_like_name(name):
        raise ConfigError(f"{path}: base: must be a profile name in the same directory, got {name!r}")
    base_path = path.parent / f"{name}.yaml"
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: no profile {name!r} ({base_path} does not exist)")
    if base_path.resolve() in seen:
        raise ConfigError(f"{path}: base: cycle through {base_path}")
    base = merge_base(parse_yaml(base_path), base_path, seen + (path.resolve(),))
    if not isinstance(base, dict):
        raise ConfigError(f"{base_path}: top level must be a mapping")
    out = {k: v for k, v in base.items() if k != BASE_KEY}
    for k, v in cfg.items():
        if k == BASE_KEY:
            continue
        if k == "experiments" and isinstance(v, dict) and isinstance(out.get(k), dict):
            exps = dict(out[k])
            for e, spec in v.items():
                b = exps.get(e)
                exps[e] = {**b, **spec} if isinstance(b, dict) and isinstance(spec, dict) else spec
            out[k] = exps
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- validating


def _allowed(known: Iterable[str]) -> str:
    return str(sorted(known))


def _did_you_mean(key: Any, allowed: Iterable[str]) -> str:
    near = difflib.get_close_matches(str(key), list(allowed), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _check_top_level(cfg: Any, extra: set[str], expected_profile: str | None) -> list[str]:
    """Required keys present, no unknown keys, scalar fields of the right type."""
    if not isinstance(cfg, dict):
        return [f"top level: must be a mapping, got {type(cfg).__name__}"]
    allowed = set(REQUIRED_TOP_LEVEL) | extra
    errs = [f"{k}: unknown top-level key{_did_you_mean(k, allowed)}; allowed: {_allowed(allowed)}"
            for k in cfg if k not in allowed]
    errs += [f"{k}: missing required top-level key" for k in REQUIRED_TOP_LEVEL if k not in cfg]
    if "profile" in cfg and not isinstance(cfg["profile"], str):
        errs.append(f"profile: must be a string, got {cfg['profile']!r}")
    elif expected_profile and cfg.get("profile", expected_profile) != expected_profile:
        errs.append(f"profile: file for profile {expected_profile!r} says {cfg['profile']!r}")
    if "seed" in cfg and (not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool)):
        errs.append(f"seed: must be an integer, got {cfg['seed']!r}")
    if "device" in cfg and not (isinstance(cfg["device"], str) and DEVICE_RE.match(cfg["device"])):
        errs.append(f"device: must be one of cpu, auto, mps, cuda, cuda:N; got {cfg['device']!r}")
    return errs


def _check_named_specs(cfg: dict, key: str) -> list[str]:
    """``models`` / ``experiments``: a mapping of name -> mapping (empty spec allowed)."""
    section = cfg.get(key)
    if key not in cfg:
        return []
    if not isinstance(section, dict):
        return [f"{key}: must be a mapping of name -> spec, got {type(section).__name__}"]
    return [f"{key}.{name}: spec must be a mapping, got {type(spec).__name__}"
            for name, spec in section.items() if spec is not None and not isinstance(spec, dict)]


def _check_tasks(value: Any, path: str, known_tasks: set[str], models: set[str]) -> list[str]:
    """``tasks``: a list of task names, or a mapping task -> declared model name."""
    if isinstance(value, list):
        return [f"{path}: unknown task {t!r}; allowed: {_allowed(known_tasks)}"
                for t in value if t not in known_tasks]
    if isinstance(value, dict):
        errs = [f"{path}: unknown task {t!r}; allowed: {_allowed(known_tasks)}"
                for t in value if t not in known_tasks]
        errs += [f"{path}.{t}: unknown model {m!r}; declared under models: {_allowed(models)}"
                 for t, m in value.items() if not isinstance(m, str) or m not in models]
        return errs
    return [f"{path}: must be a list of tasks or a mapping task -> model, got {value!r}"]


def _check_methods(value: Any, path: str, known_methods: set[str]) -> list[str]:
    """``methods``: a list of method names, or a mapping method -> its settings."""
    if not isinstance(value, (list, dict)):
        return [f"{path}: must be a list of methods or a mapping method -> settings, got {value!r}"]
    return [f"{path}: unknown method {m!r}; allowed: {_allowed(known_methods)}"
            for m in value if m not in known_methods]


def _walk_spec(node: Any, path: str, known_tasks: set[str], known_methods: set[str],
               models: set[str]) -> list[str]:
    """Check every ``tasks`` and ``methods`` key at any depth of an experiment spec."""
    errs: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{path}.{k}"
            if k == "tasks":
                errs += _check_tasks(v, sub, known_tasks, models)
            elif k == "methods":
                errs += _check_methods(v, sub, known_methods)
            else:
                errs += _walk_spec(v, sub, known_tasks, known_methods, models)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            errs += _walk_spec(v, f"{path}[{i}]", known_tasks, known_methods, models)
    return errs


def _check_experiments(cfg: dict, known_tasks: set[str], known_methods: set[str],
                       known_experiments: set[str]) -> list[str]:
    exps = cfg.get("experiments")
    if not isinstance(exps, dict):
        return []
    models = set(cfg["models"]) if isinstance(cfg.get("models"), dict) else set()
    errs = []
    for name, spec in exps.items():
        if name not in known_experiments:
            errs.append(f"experiments.{name}: unknown experiment; allowed: {_allowed(known_experiments)}")
        errs += _walk_spec(spec, f"experiments.{name}", known_tasks, known_methods, models)
    return errs


def validate_config(cfg: Any, *, known_tasks: Iterable[str], known_methods: Iterable[str],
                    known_experiments: Iterable[str], extra_top_level: Iterable[str] = (),
                    expected_profile: str | None = None) -> list[str]:
    """Every problem in ``cfg`` as ``entry.path: message`` lines (empty list = valid)."""
    errs = _check_top_level(cfg, set(extra_top_level), expected_profile)
    if not isinstance(cfg, dict):
        return errs
    errs += _check_named_specs(cfg, "models") + _check_named_specs(cfg, "experiments")
    errs += _check_experiments(cfg, set(known_tasks), set(known_methods), set(known_experiments))
    return errs


def load_config(profile_or_path: str | os.PathLike, *, known_tasks: Iterable[str],
                known_methods: Iterable[str], known_experiments: Iterable[str],
                root: str | os.PathLike | None = None, extra_top_level: Iterable[str] = (),
                check: Callable[[dict], list[str]] | None = None) -> dict:
    """Parse and validate a profile config; raise ConfigError listing every problem.

    ``profile_or_path``: a profile name ("tiny", "paper") resolved to
    ``<root>/config/<name>.yaml`` (root: the ``root`` kwarg, else found upward from the
    current directory), or a path to a YAML file. ``extra_top_level``: top-level keys a
    caller allows besides the required ones. Experiment specs that are empty in YAML
    (``eap_roc:``) come back as ``{}``. ``check(cfg)``: the caller's further problems (run
    when ``models`` and ``experiments`` are mappings; it may rewrite ``cfg`` in place), reported
    with the generic ones, except where a generic problem already names the same entry.
    """
    path = resolve_config_path(profile_or_path, root)
    cfg = merge_base(parse_yaml(path), path)
    expected = str(profile_or_path) if _looks_like_name(profile_or_path) else None
    errs = validate_config(cfg, known_tasks=known_tasks, known_methods=known_methods,
                           known_experiments=known_experiments, extra_top_level=extra_top_level,
                           expected_profile=expected)
    if isinstance(cfg, dict) and all(isinstance(cfg.get(k), dict) for k in ("models", "experiments")):
        for key in ("models", "experiments"):
            cfg[key] = {name: spec if spec is not None else {} for name, spec in cfg[key].items()}
        if check is not None:
            named = {e.split(": ", 1)[0] for e in errs}
            errs += [e for e in check(cfg)
                     if not any(e.split(": ", 1)[0].startswith(n) for n in named)]
    if errs:
        raise ConfigError(f"{path}: {len(errs)} problem(s):\n  " + "\n  ".join(errs))
    return cfg


def config_hash(cfg_section: Any) -> str:
    """sha256 of a canonical JSON dump (sorted keys, no whitespace): equal settings give
    equal keys whatever the key order in YAML. Non-JSON values raise TypeError rather
    than hash to something unstable. Note 1 and 1.0 hash differently."""
    text = json.dumps(cfg_section, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
