import pytest
import torch
from torch import nn

import loragen.training as T
from loragen.errors import LoragenError


def _two_stages(state_path, after_step=None) -> tuple[nn.Module, nn.Module, list[dict]]:
    """A 2-stage fit on one state file: `a` for 6 steps (cosine), then `b` for 6 (constant) keeping `a`."""
    torch.manual_seed(0)
    a, b = nn.Linear(3, 3), nn.Linear(3, 1)
    x = torch.randn(16, 3)
    opt_a, opt_b = torch.optim.AdamW(a.parameters(), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2)

    def step_a(step: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, 16, (4,), generator=g)
        return (a(x[idx]) + 0.1 * torch.randn(4, 3) - x[idx]).square().mean()  # the global RNG too

    def step_b(step: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, 16, (4,), generator=g)
        return b(a(x[idx]).detach()).square().mean()

    run = dict(state_path=state_path, fingerprint={"n": 16}, checkpoint_every=4, seed=3, show=False)
    fits = [T.train("a", {"a": a}, opt_a, 6, step_a, **run),
            T.train("b", {"b": b}, opt_b, 6, step_b, keep={"a": a}, first_step=6, schedule="constant",
                    after_step=after_step, **run)]
    return a, b, fits


@pytest.mark.parametrize("crash_at", [1, 2])  # the first save (step 4) is in stage a, the second (step 8) in stage b
def test_interrupted_stages_resume_to_the_same_weights_and_losses(tmp_path, killed_after_save, crash_at):
    a, b, fits = _two_stages(tmp_path / "a.safetensors")
    with killed_after_save(crash_at):
        _two_stages(tmp_path / "b.safetensors")
    a2, b2, fits2 = _two_stages(tmp_path / "b.safetensors")
    assert all(torch.equal(v, w) for v, w in zip([*a.parameters(), *b.parameters()], [*a2.parameters(), *b2.parameters()]))
    assert fits2[1]["loss"] == fits[1]["loss"] and (crash_at == 2 or fits2[0]["loss"] == fits[0]["loss"])  # EMA resumed
    assert [f["resumed_at"] for f in fits2] == ([4, 0] if crash_at == 1 else [6, 2])  # a finished stage does not rerun


def test_after_step_runs_after_every_optimiser_step():
    calls = []
    _two_stages(None, after_step=lambda: calls.append(1))
    assert len(calls) == 6  # stage b's steps only


def test_refuses_another_runs_state_and_unknown_schedules(tmp_path):
    net, path = nn.Linear(2, 1), tmp_path / "s.safetensors"
    opt = torch.optim.AdamW(net.parameters())
    T.save_state(path, {"net": net}, {"opt": opt}, {"rng": torch.get_rng_state()}, {"step": 1, "fingerprint": {"n": 1}})
    with pytest.raises(LoragenError, match="belongs to another training run"):
        T.train("x", {"net": net}, opt, 2, lambda s, g: net(torch.ones(1, 2)).sum(), state_path=path, fingerprint={"n": 2},
                show=False)
    with pytest.raises(ValueError, match="schedule must be one of"):
        T.train("x", {"net": net}, opt, 2, lambda s, g: net(torch.ones(1, 2)).sum(), schedule="linear", show=False)


def test_fit_seconds_count_the_interrupted_call(tmp_path, killed_after_save, monkeypatch):
    """A clock that advances one second per step: 6 steps cost 6 s whether or not the run was killed at step 4."""
    clock = {"t": 0.0}
    monkeypatch.setattr(T.time, "perf_counter", lambda: clock["t"])
    net = nn.Linear(2, 1)

    def step_fn(step: int, g: torch.Generator) -> torch.Tensor:
        clock["t"] += 1.0
        return net(torch.randn(4, 2, generator=g)).square().mean()

    def fit(path):
        return T.train("n", {"n": net}, torch.optim.AdamW(net.parameters()), 6, step_fn, state_path=path,
                       checkpoint_every=4, show=False)

    assert fit(tmp_path / "a.safetensors")["fit_s"] == 6.0
    with killed_after_save(1):
        fit(tmp_path / "b.safetensors")
    resumed = fit(tmp_path / "b.safetensors")
    assert resumed["resumed_at"] == 4 and resumed["fit_s"] == 6.0  # 4 s before the kill + 2 s after
