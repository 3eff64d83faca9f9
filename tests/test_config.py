"""Tests for attrpatch.repro.config: profile resolution, YAML errors, entry-path error messages, hashing."""

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
try:
    import attrpatch.repro.config  # noqa: F401
except ImportError:  # package not installed: use the source tree
    sys.path.insert(0, str(ROOT / "src"))

from attrpatch.repro.config import ConfigError, config_hash, load_config  # noqa: E402

KNOWN = dict(known_tasks={"ioi", "greater_than", "docstring"},
             known_methods={"eap", "eap_ig", "acdc"},
             known_experiments={"eap_roc", "eap_r2"})


def good_cfg():
    return {"profile": "tiny", "seed": 0, "device": "cpu",
            "models": {"tiny2l": {"n_layer": 2}, "attn4l": {"n_layer": 4}},
            "experiments": {"eap_roc": {"tasks": {"ioi": "tiny2l", "docstring": "attn4l"},
                                        "methods": ["eap", "acdc"],
                                        "sweeps": [{"methods": {"eap_ig": {"steps": 5}}}]},
                            "eap_r2": None}}


def make_root(tmp_path, cfg=None, name="tiny", text=None):
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "pyproject.toml").write_text("")
    p = tmp_path / "config" / f"{name}.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(cfg if cfg is not None else good_cfg()))
    return p


def load(arg, **kw):
    return load_config(arg, **KNOWN, **kw)


def errors_for(tmp_path, mutate):
    cfg = good_cfg()
    mutate(cfg)
    make_root(tmp_path, cfg)
    with pytest.raises(ConfigError) as e:
        load("tiny", root=tmp_path)
    return str(e.value)


def test_valid_by_name_and_path(tmp_path, monkeypatch):
    p = make_root(tmp_path)
    cfg = load("tiny", root=tmp_path)
    assert cfg["experiments"]["eap_r2"] == {} and cfg["seed"] == 0
    assert load(p) == cfg
    monkeypatch.chdir(tmp_path / "config")  # root found by walking up from cwd
    assert load("tiny") == cfg


def test_unknown_profile_lists_available(tmp_path):
    make_root(tmp_path)
    make_root(tmp_path, name="paper", cfg={**good_cfg(), "profile": "paper"})
    with pytest.raises(ConfigError, match=r"no profile 'huge'.*available profiles: \['paper', 'tiny'\]"):
        load("huge", root=tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.yaml")


def test_yaml_error_names_file_and_line(tmp_path):
    make_root(tmp_path, text="profile: tiny\nseed: 0\nmodels: {a: [1, 2}\n")
    with pytest.raises(ConfigError, match=r"tiny\.yaml, line 3: invalid YAML"):
        load("tiny", root=tmp_path)


def test_duplicate_yaml_key(tmp_path):
    make_root(tmp_path, text="profile: tiny\nseed: 0\nseed: 1\n")
    with pytest.raises(ConfigError, match=r"line 3: invalid YAML: duplicate key 'seed'"):
        load("tiny", root=tmp_path)


@pytest.mark.parametrize("mutate, needle", [
    (lambda c: c["experiments"]["eap_roc"].update(tasks=["ioii"]),
     "experiments.eap_roc.tasks: unknown task 'ioii'; allowed: ['docstring', 'greater_than', 'ioi']"),
    (lambda c: c["experiments"]["eap_roc"].update(tasks={"ioi": "gpt9"}),
     "experiments.eap_roc.tasks.ioi: unknown model 'gpt9'; declared under models: ['attn4l', 'tiny2l']"),
    (lambda c: c["experiments"]["eap_roc"].update(tasks="ioi"),
     "experiments.eap_roc.tasks: must be a list of tasks or a mapping"),
    (lambda c: c["experiments"]["eap_roc"].update(methods=["eap", "magic"]),
     "experiments.eap_roc.methods: unknown method 'magic'; allowed: ['acdc', 'eap', 'eap_ig']"),
    (lambda c: c["experiments"]["eap_roc"]["sweeps"][0].update(methods={"nope": {}}),
     "experiments.eap_roc.sweeps[0].methods: unknown method 'nope'"),
    (lambda c: c["experiments"].update(gradrop={}),
     "experiments.gradrop: unknown experiment; allowed: ['eap_r2', 'eap_roc']"),
    (lambda c: c.update(experiment={}), "experiment: unknown top-level key"),
    (lambda c: c.pop("seed"), "seed: missing required top-level key"),
    (lambda c: c.update(seed="0"), "seed: must be an integer, got '0'"),
    (lambda c: c.update(device="gpu"), "device: must be one of"),
    (lambda c: c.update(profile="paper"), "profile: file for profile 'tiny' says 'paper'"),
    (lambda c: c.update(models=["a"]), "models: must be a mapping of name -> spec"),
    (lambda c: c["experiments"].update(eap_r2=[1]), "experiments.eap_r2: spec must be a mapping"),
])
def test_error_names_entry(tmp_path, mutate, needle):
    assert needle in errors_for(tmp_path, mutate)


def test_all_errors_reported_at_once(tmp_path):
    def mutate(c):
        c["experiments"]["eap_roc"]["tasks"] = ["ioii"]
        c["device"] = "gpu"
    msg = errors_for(tmp_path, mutate)
    assert "2 problem(s)" in msg and "tasks: unknown task 'ioii'" in msg and "device:" in msg


def test_extra_top_level_allowed_when_asked(tmp_path):
    make_root(tmp_path, {**good_cfg(), "threads": 2})
    assert load("tiny", root=tmp_path, extra_top_level={"threads"})["threads"] == 2


def test_config_hash_stable():
    a = {"x": 1, "y": {"b": [1, 2], "a": "s"}}
    b = {"y": {"a": "s", "b": [1, 2]}, "x": 1}
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 64
    assert config_hash(a) != config_hash({**a, "x": 2})
    with pytest.raises(TypeError):
        config_hash({"x": object()})


def test_every_profile_loads_and_names_a_claims_profile():
    """Each shipped config validates, and its claims are checked under a known claims profile."""
    from pathlib import Path

    from attrpatch.repro.claims import PROFILES
    from attrpatch.repro.context import load_profile

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "config").glob("*.yaml")):
        cfg = load_profile(path.stem, root=root)
        assert cfg.get("claims_profile", cfg["profile"]) in PROFILES, path.name
