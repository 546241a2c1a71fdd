import pytest
import torch

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.adapters.batched import batched_lora, stack_adapters
from loragen.errors import LayoutMismatchError


def _adapters(layout, n):
    g = torch.Generator().manual_seed(0)
    return [Adapter.from_vector(layout, 0.3 * torch.randn(layout.numel, generator=g)) for _ in range(n)]


def test_matches_per_sample_merged_reference(tiny, tiny_layout):
    adapters = _adapters(tiny_layout, 4)
    x = torch.randn(4, 10)
    with batched_lora(tiny, tiny_layout, stack_adapters(adapters)):
        batched = tiny(x)
    reference = []
    for a, xb in zip(adapters, x):
        with merged(tiny, a):
            reference.append(tiny(xb[None]))
    assert torch.allclose(batched, torch.cat(reference), atol=1e-5)
    assert torch.equal(tiny(x), tiny(x))  # hooks are gone: plain forward again


def test_token_inputs_and_training_gradients(tiny, tiny_layout):
    """(B, N, i) inputs; in training mode gradients reach the per-sample A and B and equal the merged reference's."""
    adapters = _adapters(tiny_layout, 3)
    tensors = {k: v.clone().requires_grad_(True) for k, v in stack_adapters(adapters).items()}
    x = torch.randn(3, 5, 10)
    tiny.train()
    with batched_lora(tiny, tiny_layout, tensors):
        tiny(x).square().mean().backward()
    grad = tensors["lin0.lora_A"].grad
    assert grad is not None and grad.abs().sum() > 0
    # reference for sample 1: a differentiable functional merge
    a0 = adapters[1].tensors["lin0.lora_A"].clone().requires_grad_(True)
    b0, m = adapters[1].tensors["lin0.lora_B"], tiny_layout.modules[0]
    h = torch.relu(x[1] @ (tiny.lin0.weight + m.scaling * b0 @ a0).T + tiny.lin0.bias)
    m1 = tiny_layout.modules[1]
    w1 = tiny.lin1.weight + m1.scaling * adapters[1].tensors["lin1.lora_B"] @ adapters[1].tensors["lin1.lora_A"]
    ((h @ w1.T + tiny.lin1.bias).square().sum() / x.shape[0] / x.shape[1] / 3).backward()
    assert torch.allclose(grad[1], a0.grad, atol=1e-5)


def test_batch_size_and_shape_mismatches(tiny, tiny_layout):
    tensors = stack_adapters(_adapters(tiny_layout, 2))
    with pytest.raises(LayoutMismatchError, match="holds 2 adapters; the input batch has 3 samples"):
        with batched_lora(tiny, tiny_layout, tensors):
            tiny(torch.randn(3, 10))
    tensors["lin0.lora_A"] = tensors["lin0.lora_A"][:, :1]
    with pytest.raises(LayoutMismatchError, match=r"expected A \(B, 2, 10\)"):
        with batched_lora(tiny, tiny_layout, tensors):
            pass


def test_grouped_matches_per_sample_batched(tiny, tiny_layout):
    """Samples sorted by adapter, one low-rank product per group == each sample under its own copy."""
    from loragen.adapters.batched import grouped_lora

    adapters = _adapters(tiny_layout, 3)
    counts = [2, 0, 3]  # adapter 1 has no samples
    per_sample = stack_adapters([adapters[0]] * 2 + [adapters[2]] * 3)
    x = torch.randn(5, 4, 10)
    with torch.no_grad():
        with batched_lora(tiny, tiny_layout, per_sample):
            reference = tiny(x)
        with grouped_lora(tiny, tiny_layout, stack_adapters(adapters), counts):
            grouped = tiny(x)
    assert torch.allclose(grouped, reference, atol=1e-5)
    assert not torch.allclose(grouped, tiny(x), atol=1e-3)
    with pytest.raises(LayoutMismatchError, match="groups of 5 samples; the input batch has 4"):
        with grouped_lora(tiny, tiny_layout, stack_adapters(adapters), counts):
            tiny(x[:4])


def test_whole_modules_per_sample_match_merged_and_grouped_refuses_them(tiny):
    """A head carried whole (modules_to_save) is applied per sample by batched_lora, equal to merging each adapter
    (which replaces the head); gradients reach each sample's head. grouped_lora refuses it rather than skip it."""
    from loragen.adapters.batched import grouped_lora
    from loragen.adapters.layout import LoraLayout

    layout = LoraLayout.from_model(tiny, ["lin0"], rank=2, alpha=4.0, modules_to_save=["lin1"])
    adapters = _adapters(layout, 3)
    tensors = {k: v.clone().requires_grad_(True) for k, v in stack_adapters(adapters).items()}
    x = torch.randn(3, 10)
    with batched_lora(tiny, layout, tensors):
        out = tiny(x)
    reference = []
    for a, xb in zip(adapters, x):
        with merged(tiny, a):
            reference.append(tiny(xb[None]))
    assert torch.allclose(out, torch.cat(reference).detach(), atol=1e-5)
    out[1].sum().backward()
    assert tensors["lin1.weight"].grad[1].abs().sum() > 0 and tensors["lin1.weight"].grad[0].abs().sum() == 0
    assert torch.allclose(tensors["lin1.bias"].grad[1], torch.ones(3))
    bad = dict(tensors, **{"lin1.weight": tensors["lin1.weight"][:, :2]})
    with pytest.raises(LayoutMismatchError, match=r"lin1: expected weight \(B, 3, 20\)"):
        with batched_lora(tiny, layout, bad):
            pass
    with pytest.raises(LayoutMismatchError, match=r"found whole modules \['lin1'\]"):
        with grouped_lora(tiny, layout, stack_adapters(adapters), [1, 1, 1]):
            pass
