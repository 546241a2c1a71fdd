import pytest
import torch

from loragen.errors import UnknownTaskError
from loragen.suites import get_suite
from loragen.suites.digits_domains import ANGLES, THICKNESS, Domain, transform


@pytest.fixture(scope="module")
def suite():
    return get_suite("digits-domains")


def test_identity_domain_is_identity(suite):
    x = suite._images[:16]
    assert torch.allclose(transform(x, Domain(0.0, 0.0)), x, atol=1e-5)


def test_transform_axes_are_continuous_and_monotone(suite):
    x = suite._images[:64]
    mass = [transform(x, Domain(0.0, t)).sum().item() for t in (-0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5)]
    assert all(a < b for a, b in zip(mass, mass[1:]))  # thicker strokes hold more ink
    near = (transform(x, Domain(10.0, 0.0)) - transform(x, Domain(11.0, 0.0))).abs().mean()
    far = (transform(x, Domain(10.0, 0.0)) - transform(x, Domain(40.0, 0.0))).abs().mean()
    assert near < 0.2 * far


def test_grid_and_held_out_split(suite):
    tasks = suite.tasks()
    grid = [t for t in tasks if t.params["where"] == "grid"]
    held = suite.heldout_tasks()
    assert len(grid) >= 24
    assert 0.15 <= len(held) / len(tasks) <= 0.25
    inside = [t for t in held if t.params["where"] == "grid"]
    outside = [t for t in held if t.params["where"] == "outside"]
    assert inside and outside
    for t in inside:  # interpolation points are strictly inside the grid
        assert min(ANGLES) < t.params["angle"] < max(ANGLES) and min(THICKNESS) < t.params["thickness"] < max(THICKNESS)
    for t in outside:
        a, th = t.params["angle"], t.params["thickness"]
        assert not (min(ANGLES) <= a <= max(ANGLES) and min(THICKNESS) <= th <= max(THICKNESS))


def test_splits_and_condition(suite):
    name = suite.seen_tasks()[0].name
    train, val, test = (suite.data(name, s) for s in ("train", "val", "test"))
    assert len(train.y) == suite.n_train and len(val.y) == suite.n_val and len(test.y) > 500
    assert train.x.shape[1:] == (16, 16)
    cond = suite.condition(name)
    assert cond.images.shape == (suite.k_exemplars, 16, 16)
    assert torch.equal(cond.images, suite.condition(name).images)  # deterministic
    assert not torch.equal(cond.images, suite.condition(name, draw=1).images)
    members = {tuple(img.flatten().tolist()) for img in train.x}
    assert all(tuple(img.flatten().tolist()) in members for img in cond.images)  # exemplars come from the train split


def test_unknown_names(suite):
    with pytest.raises(UnknownTaskError, match=r"no task 'rot\+999'.*expected one of"):
        suite.data("rot+999", "train")
    with pytest.raises(UnknownTaskError, match="unknown suite 'mnist'"):
        get_suite("mnist")


def test_base_model_is_cached_and_accurate_on_canonical_digits(suite):
    model = suite.base_model()
    again = suite.base_model()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    canonical = Domain(0.0, 0.0).name
    assert suite.accuracy(model, suite.data(canonical, "test")) > 90.0
    assert suite.accuracy(model, suite.data(Domain(75.0, 0.0).name, "test")) < 50.0  # domains are really shifted
