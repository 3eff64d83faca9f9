"""The one door (`attrpatch.methods.registry`): the registry holds functions, every scorer takes
batch_size (chunked scores equal the unchunked ones), attribute returns scores only (the
diagnostic options stay on the direct functions), ACDC comes through it, and the package
exports the names a user needs."""
import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.registry import METHODS, SCORERS, attribute, method_options

from conftest import random_batch


def test_registry_holds_functions_and_every_scorer_takes_batch_size():
    for name, spec in METHODS.items():
        assert callable(spec.fn), name
        assert not any(o.startswith("return_") for o in method_options(name)), name
    assert all("batch_size" in method_options(m) for m in SCORERS)
    assert "acdc" in METHODS and "acdc" not in SCORERS


@pytest.mark.parametrize("method", ["exact", "exact_nodes", "hvp"])
def test_chunked_scores_equal_whole_batch(model, method):
    b = random_batch(B=4)
    g = Graph.from_model(model)
    whole = attribute(model, b, method, graph=g)
    chunked = attribute(model, b, method, graph=g, batch_size=3)     # chunks of 3 and 1
    torch.testing.assert_close(chunked, whole, rtol=1e-9, atol=1e-12)


def test_diagnostics_are_not_on_the_door(model, batch):
    with pytest.raises(ValueError, match=r"method 'atp_graddrop' has no option\(s\) \['return_details'\]"):
        attribute(model, batch, "atp_graddrop", return_details=True)


def test_acdc_through_the_door_is_its_circuit(model):
    from attrpatch.methods.acdc import acdc
    from test_acdc import model_batch

    g, mb = Graph.from_model(model), model_batch(model)      # prompts on which ACDC keeps a circuit
    s = attribute(model, mb, "acdc", graph=g, tau=0.01)
    res = acdc(model, g, mb, tau=0.01, progress=False)
    assert s.dtype == torch.float64 and torch.equal(s.bool(), res.mask) and 0 < int(res.mask.sum()) < g.n_edges
    with pytest.raises(ValueError, match="tau must be a finite number"):
        attribute(model, mb, "acdc", graph=g, tau=float("nan"))
    d = attribute(model, mb, "acdc", graph=g, tau=0.01, direct=True)      # ACDC's q/k/v direct edges
    res_d = acdc(model, g, mb, tau=0.01, progress=False, direct=True)
    assert torch.equal(d.bool(), res_d.mask) and res_d.direct is not None
    assert not torch.equal(res_d.mask, res.mask)        # the option reaches ACDC (a different circuit here)


def test_package_exports():
    import attrpatch

    for name in ("attribute", "Graph", "load_model", "make_batch", "TASKS", "Patcher", "acdc", "METHODS"):
        assert getattr(attrpatch, name) is not None, name
    with pytest.raises(AttributeError):
        attrpatch.not_a_name  # noqa: B018
