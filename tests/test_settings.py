"""Experiment settings (attrpatch.repro.settings): one declaration per experiment, merged with the
profile; a typo'd key or a bad value fails at load time naming experiments.<exp>.<key>."""
from pathlib import Path

import pytest
import yaml

from attrpatch.repro import settings as S
from attrpatch.repro.config import ConfigError, merge_base, parse_yaml
from attrpatch.repro.context import EXPERIMENTS, load_profile

ROOT = Path(__file__).resolve().parents[1]


def _load_error(tmp_path, edit, profile="tiny") -> str:
    cfg = merge_base(parse_yaml(ROOT / "config" / f"{profile}.yaml"), ROOT / "config" / f"{profile}.yaml")
    edit(cfg)
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_profile(p)
    return str(e.value)


def test_every_experiment_has_a_declaration():
    assert set(S.SETTINGS) == set(EXPERIMENTS)


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_typo_key_fails_naming_it(tmp_path, exp):
    """A key one letter off from a declared one: rejected with the entry path and a suggestion."""
    key = sorted(S.SETTINGS[exp])[-1]
    typo = key[:-1] if len(key) > 1 else key + "x"

    def edit(cfg):
        cfg["experiments"].setdefault(exp, {"tasks": {"ioi": "tiny-gpt2"}})[typo] = 1

    msg = _load_error(tmp_path, edit)
    assert f"experiments.{exp}.{typo}: unknown setting (did you mean {key!r}?); allowed: " in msg


@pytest.mark.parametrize("value, allowed", [(-40, "an integer >= 1"), (0, "an integer >= 1"),
                                            ("forty", "an integer >= 1"), (True, "an integer >= 1")])
def test_bad_n_fails_naming_value_and_allowed(tmp_path, value, allowed):
    msg = _load_error(tmp_path, lambda c: c["experiments"]["eap_roc"].update(n=value))
    assert f"experiments.eap_roc.n must be {allowed}, got {value!r}" in msg


def test_bad_values_all_reported_at_once(tmp_path):
    def edit(cfg):
        e = cfg["experiments"]
        e["eap_acdc"]["eap_keep_fractions"] = [0.1, 1.5]
        e["eap_roc"]["taus"] = {"n": 3, "low_exp": -2}
        e["hvp"]["subset"] = {"top": 4, "rand": 4}
        e["eapgp_gain"]["methods"] = ["eap_ig"]
        e["eapig_faith"]["selection"] = "best"
        e["eap_r2"]["tasks"] = {"docstring": "tiny-attn", "ioi": "tiny-gpt2"}
        e["tasks_eval"]["min_accuracy"] = 1.5
        e["gradrop"]["methods"] = ["atp", "eap"]
        e["eapig_faith"]["batch_size"] = {"gpt9": 2}
        cfg["models"]["tiny-gpt2"]["train"] = "tiny-gpt3"

    msg = _load_error(tmp_path, edit)
    for needle in [
        "experiments.eap_acdc.eap_keep_fractions[1] must be a number > 0.0 and <= 1.0, got 1.5",
        "experiments.eap_roc.taus.high_exp: required setting missing",
        "experiments.hvp.subset.rand: unknown setting (did you mean 'random'?)",
        "experiments.eapgp_gain.methods must be a list including 'eap_ig' and 'eap_gp'",
        "experiments.eapig_faith.selection must be one of 'topn', 'greedy', got 'best'",
        "experiments.eap_r2.tasks must be a mapping of exactly one task",
        "experiments.tasks_eval.min_accuracy must be a number >= 0.0 and <= 1.0, got 1.5",
        "experiments.gradrop.methods[1] must be a known method: one of atp, atp_qk, atp_graddrop, atp_star, got 'eap'",
        "experiments.eapig_faith.batch_size.gpt9 must be a known model (declared under models)",
        "models.tiny-gpt2.train: 'tiny-gpt3' is not a tiny model config; allowed: tiny-attn, tiny-gpt2",
    ]:
        assert needle in msg, needle
    assert "10 problem(s)" in msg


def test_required_setting_missing(tmp_path):
    msg = _load_error(tmp_path, lambda c: c["experiments"]["eapig_faith"].pop("edge_counts"))
    assert "experiments.eapig_faith.edge_counts: required setting missing" in msg


def test_model_spec_keys_checked(tmp_path):
    def edit(cfg):
        cfg["models"]["tiny-attn"]["stepz"] = 3
        cfg["models"]["tiny-gpt2"]["dtype"] = "float8"

    msg = _load_error(tmp_path, edit)
    assert "models.tiny-attn.stepz: unknown key for a 'train' model; allowed: train, steps, dtype" in msg
    assert "models.tiny-gpt2.dtype must be one of" in msg and "got 'float8'" in msg


def test_merged_settings_fill_declared_defaults():
    cfg = load_profile("tiny", root=ROOT)
    hvp = cfg["experiments"]["hvp"]
    assert hvp["subset"] == {"top": 24, "random": 24} and hvp["max_edges"] is None and hvp["models"] == []
    assert cfg["experiments"]["eap_roc"]["batch_size"] is None and cfg["experiments"]["eap_roc"]["seed"] is None
    # a default that lives in the library is read from there (one home)
    from attrpatch.methods.hvp import DEFAULT_THRESHOLD
    assert S.resolve("hvp", {"tasks": {"ioi": "m"}}, {"tasks": {"ioi"}, "models": {"m"}})[0]["threshold"] == DEFAULT_THRESHOLD
    assert cfg["experiments"]["gradrop"]["false_negative"] == {"exact_quantile": 0.75, "estimate_ratio": 0.25}


def test_derived_profiles_are_base_plus_overrides():
    tiny, smoke = load_profile("tiny", root=ROOT), load_profile("smoke", root=ROOT)
    assert smoke["experiments"]["gradrop"]["methods"] == tiny["experiments"]["gradrop"]["methods"]
    assert smoke["experiments"]["gradrop"]["n"] == 6 and tiny["experiments"]["gradrop"]["n"] == 32
    assert smoke["claims_profile"] == "tiny" and smoke["models"]["tiny-gpt2"]["steps"] == 30
    paper, rnd = load_profile("paper", root=ROOT), load_profile("paper_random", root=ROOT)
    assert rnd["experiments"]["eapig_faith"]["methods"] == paper["experiments"]["eapig_faith"]["methods"]
    assert rnd["experiments"]["eapgp_gain"]["n_by_task"] == {}          # cleared, not inherited
    assert rnd["device"] == "cpu" and "gpt2-xl" not in rnd["models"]   # top-level keys replace whole
    assert "base:" in (ROOT / "config" / "smoke.yaml").read_text()


def test_base_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: nope\nprofile: a\n")
    with pytest.raises(ConfigError, match="base: no profile 'nope'"):
        load_profile(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("base: c\n")
    (tmp_path / "c.yaml").write_text("base: b\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_profile(tmp_path / "b.yaml")


def test_for_task_without_edge_counts_and_with_limits():
    spec = {"n": 4, "n_by_task": {"ioi": 6}, "batch_size": {"gpt2": 2}, "max_edges": 64}
    st = S.for_task(spec, "ioi", "gpt2", 32491, edge_counts=False)
    assert st == {"n": 6, "edge_counts": None, "batch_size": 2, "exact": False, "max_edges": 64,
                  "acdc_max_edges": None}
    assert S.for_task({"n": 7}, "sva", "m", 10, edge_counts=False)["n"] == 7
    assert S.for_task({"n": 7, "edge_counts": [5, 20, 100]}, "sva", "m", 10)["edge_counts"] == [5, 10]
    with pytest.raises(ValueError, match="edge_counts missing for task 'sva'"):
        S.for_task({"n": 7}, "sva", "m", 10)


def test_strict_must_be_a_boolean(tmp_path):
    msg = _load_error(tmp_path, lambda c: c.update(strict="yes"))
    assert "strict must be true or false" in msg and "got 'yes'" in msg


def test_eapgp_step_rules_are_checked(tmp_path):
    """gp_step and gp_step_variants name EAP-GP's step rules (methods.eap_gp.STEPS); a variant
    equal to gp_step would be a second copy of the `eap_gp` curve and is refused."""
    def edit(cfg):
        e = cfg["experiments"]
        e["eapgp_gain"]["gp_step"] = "unit"
        e["eapgp_gain"]["gp_step_variants"] = ["unit", "fraction"]
        e["eapig_faith"]["extra_methods"] = ["eap_ig_activations", "eap_ig_sideways"]

    msg = _load_error(tmp_path, edit)
    assert "experiments.eapgp_gain.gp_step_variants[1] must be one of 'unit', 'relative', got 'fraction'" in msg
    assert "experiments.eapig_faith.extra_methods[1] must be a known method" in msg
    msg = _load_error(tmp_path, lambda c: c["experiments"]["eapgp_gain"].update(gp_step="unit", gp_step_variants=["unit"]))
    assert ("experiments.eapgp_gain.gp_step_variants must be rules other than gp_step ('unit'), which the `eap_gp` "
            "curve already runs, got ['unit']") in msg
