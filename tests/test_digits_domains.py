import pytest
import torch

from loragen.errors import UnknownTaskError
from loragen.suites import get_suite
from loragen.suites.digits_domains import OUTSIDE, RANGES, Domain, transform


@pytest.fixture(scope="module")
def suite():
    return get_suite("digits-domains")


def test_identity_domain_is_identity(suite):
    x = suite._images[:16]
    assert torch.allclose(transform(x, Domain()), x, atol=1e-5)


def test_transform_axes_are_continuous_and_monotone(suite):
    x = suite._images[:64]
    mass = [transform(x, Domain(thickness=t)).sum().item() for t in (-0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5)]
    assert all(a < b for a, b in zip(mass, mass[1:]))  # thicker strokes hold more ink
    for factor, a, b, c in (("angle", 10.0, 11.0, 40.0), ("zoom", 1.0, 1.02, 1.3), ("shift_x", 0.0, 0.01, 0.2),
                            ("contrast", 1.0, 0.98, 0.5)):
        near = (transform(x, Domain(**{factor: a})) - transform(x, Domain(**{factor: b}))).abs().mean()
        far = (transform(x, Domain(**{factor: a})) - transform(x, Domain(**{factor: c}))).abs().mean()
        assert 0 < near < 0.2 * far, factor
    ink = lambda d: (transform(x, d) > 0.75).float().sum((1, 2)).mean()  # noqa: E731
    assert ink(Domain(zoom=1.25)) > ink(Domain()) > ink(Domain(zoom=0.75))  # zoom enlarges the digit
    cols = torch.arange(16.0)
    centre = lambda d: (transform(x, d).sum(1) * cols).sum() / transform(x, d).sum()  # noqa: E731
    assert centre(Domain(shift_x=0.2)) > centre(Domain()) + 1.0  # shifted right by ~1.6 pixels
    low = transform(x, Domain(contrast=0.4))
    assert low.min() >= 0.3 - 1e-6 and low.max() <= 0.7 + 1e-6


def test_sampled_tasks_inside_and_outside_the_ranges(suite):
    inside = [t for t in suite.tasks() if t.params["where"] == "inside"]
    outside = [t for t in suite.tasks() if t.params["where"] == "outside"]
    assert len(inside) == 120 and len(outside) == 20
    for t in inside:  # interpolation tasks: every factor inside its sampled range
        assert all(lo <= t.params[k] <= hi for k, (lo, hi) in RANGES.items()), t.name
    for t in outside:  # extrapolation: exactly its family's factor leaves the range, into an OUTSIDE interval
        fam = t.params["family"]
        assert any(lo <= t.params[fam] <= hi for lo, hi in OUTSIDE[fam])
        assert all(lo <= t.params[k] <= hi for k, (lo, hi) in RANGES.items() if k != fam), t.name
    assert {t.params["family"] for t in outside} == set(RANGES)
    held = suite.heldout_tasks()
    assert set(outside) <= set(held) and 0.15 <= len([t for t in held if t in inside]) / len(inside) <= 0.25
    small = get_suite("digits-domains", n_tasks=10, n_extrapolation=2)  # a prefix of the same draws: names agree
    assert [t.name for t in small.tasks()][:10] == [t.name for t in inside[:10]]


def test_folds_hold_out_every_task_once_and_never_train_on_outside_tasks(suite):
    folds = suite.folds(5)
    tested = [t for f in folds for t in f.test]
    assert sorted(tested) == sorted(t.name for t in suite.tasks())  # every task evaluated as unseen exactly once
    outside = {t.name for t in suite.tasks() if t.params["where"] == "outside"}
    for f in folds:
        assert not set(f.train) & set(f.test) and not set(f.train) & outside
        assert len(f.train) == 96
    with pytest.raises(ValueError, match="k must be between 2"):
        suite.folds(1)


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
    canonical = suite.add_domain(Domain(), where="sweep").name
    assert suite.accuracy(model, suite.data(canonical, "test")) > 90.0
    shifted = suite.add_domain(Domain(angle=75.0), where="sweep").name
    assert suite.accuracy(model, suite.data(shifted, "test")) < 50.0  # domains are really shifted
    with pytest.raises(ValueError, match="already holds a task"):
        suite.add_domain(Domain())
