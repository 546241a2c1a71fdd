import pytest
import torch

from loragen.adapters.layout import LoraLayout
from loragen.errors import LayoutMismatchError


def test_layout_order_and_size(tiny, tiny_layout):
    assert tiny_layout.target_names == ["lin0", "lin1"]
    # lin0: A (2, 10) + B (20, 2); lin1: A (2, 20) + B (3, 2)
    assert tiny_layout.numel == 2 * 10 + 20 * 2 + 2 * 20 + 3 * 2
    assert [s.key for s in tiny_layout.segments] == ["lin0.lora_A", "lin0.lora_B", "lin1.lora_A", "lin1.lora_B"]


def test_flatten_unflatten_exact(tiny_layout):
    v = torch.randn(tiny_layout.numel)
    assert torch.equal(tiny_layout.flatten(tiny_layout.unflatten(v)), v)
    t = tiny_layout.unflatten(v)
    assert t["lin0.lora_B"].shape == (20, 2)
    assert torch.equal(tiny_layout.unflatten(tiny_layout.flatten(t))["lin1.lora_A"], t["lin1.lora_A"])


def test_segment_ids_cover_vector(tiny_layout):
    ids = tiny_layout.segment_ids()
    assert ids.shape == (tiny_layout.numel,)
    assert torch.bincount(ids).tolist() == [s.numel for s in tiny_layout.segments]


def test_layout_json_roundtrip(tiny_layout):
    assert LoraLayout.from_dict(tiny_layout.to_dict()) == tiny_layout


def test_bad_shapes_and_keys_raise(tiny_layout):
    t = tiny_layout.unflatten(torch.zeros(tiny_layout.numel))
    t["lin0.lora_A"] = torch.zeros(3, 10)
    with pytest.raises(LayoutMismatchError, match=r"expected shape \(2, 10\), found \(3, 10\)"):
        tiny_layout.flatten(t)
    del t["lin0.lora_A"]
    with pytest.raises(LayoutMismatchError, match="missing"):
        tiny_layout.flatten(t)
    with pytest.raises(LayoutMismatchError, match=f"expected a vector of shape \\({tiny_layout.numel},\\)"):
        tiny_layout.unflatten(torch.zeros(5))


def test_targets_matching_nothing_raise(tiny):
    with pytest.raises(LayoutMismatchError, match="match no nn.Linear.*lin0"):
        LoraLayout.from_model(tiny, ["query", "value"], rank=2, alpha=4)
