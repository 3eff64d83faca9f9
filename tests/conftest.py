"""Shared fixtures: small random GPT-2-architecture models and random task batches."""
from __future__ import annotations

import json

import pytest
import torch

from attrpatch.models.random import random_bridge
from attrpatch.course.inputs import random_batch as course_random_batch
from attrpatch.tasks.base import TaskBatch

import paper_data as _paper_data

pytest_plugins = ["pytester"]    # tests of the conftest hooks below (test_paper_data.py)

torch.set_num_threads(1)

VOCAB = 48


def random_batch(B=4, P=6, V=VOCAB, seed=0, metric="logit_diff", corrupt_positions=(1, 3)) -> TaskBatch:
    """Random prompts; the corrupted prompt differs at a few positions; one answer, two wrong
    (the course checkers' generator, `attrpatch.course.inputs.random_batch`, with the tests' sizes)."""
    return course_random_batch(seed=seed, B=B, P=P, V=V, corrupt_positions=corrupt_positions, metric=metric)


@pytest.fixture(scope="session")
def model():
    """2 layers x 4 heads with MLPs, random weights of scale 0.2 (nonzero biases), float64."""
    return random_bridge(n_layer=2, n_head=4, n_embd=32, vocab_size=VOCAB, weight_scale=0.2, seed=1,
                         dtype=torch.float64)


@pytest.fixture(scope="session")
def attn_model():
    """Attention-only (MLPs exactly zero), 2 layers x 4 heads, float64."""
    return random_bridge(n_layer=2, n_head=4, n_embd=32, vocab_size=VOCAB, weight_scale=0.2, seed=2,
                         attn_only=True, dtype=torch.float64)


@pytest.fixture
def batch():
    return random_batch()


@pytest.fixture(scope="session")
def trained_gpt2(tmp_path_factory):
    """A briefly trained tiny-gpt2 (2 layers x 4 heads, d 32, MLPs; 400 steps on toy IOI and
    Gender-Bias, seed 0): tests that need trained behaviour (e.g. saturated attention, a GradPath that
    heads for the corrupted input) rather than random weights. A few seconds on one CPU; no
    wall-clock stop (max_seconds=None), so a loaded machine gets the same weights."""
    from attrpatch.models import load_model
    from attrpatch.models.train import train_tiny

    out = tmp_path_factory.mktemp("trained") / "tiny-gpt2"
    train_tiny("tiny-gpt2", out, seed=0, steps=400, progress=False, n_layer=2, n_head=4, n_embd=32,
               tasks={"ioi": 1.0, "gender_bias": 0.5}, eval_every=0, early_stop=None, max_seconds=None)
    info = json.loads((out / "train_info.json").read_text())
    assert info["steps_run"] == 400, info["stop_reason"]
    return load_model(str(out))


# ---- tests that need the EAP-IG paper's files (tests/paper_data.py) ------------------------

def pytest_collection_modifyitems(config, items):
    _paper_data.collection_modifyitems(items)
    items.sort(key=_heavy_first)


# The modules with the long runs (DAG runs, notebook grading), longest first: with pytest-xdist's
# loadscope and --no-loadscope-reorder (pyproject addopts) the workers take modules in this order,
# so the long ones start at once on different workers and the short ones fill in around them
# (xdist's default order, most tests first, started them last). Measured with --durations.
HEAVY_FIRST = ("test_dag_smoke.py", "test_dag_paper.py", "test_course_notebooks.py", "test_shards_dag.py",
               "test_mib_profile.py", "test_dag.py", "test_resume.py", "test_shortformer.py")


def _heavy_first(item) -> int:
    """Sort key: the module's place in HEAVY_FIRST, the rest after it in their own order (sort is stable)."""
    name = item.path.name
    return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _paper_data.ci_skip_is_failure(item, outcome.get_result())


@pytest.fixture
def paper_data():
    """The EAP-IG paper's data directory (tests marked paper_data are skipped without it)."""
    return _paper_data.paper_data_dir()
