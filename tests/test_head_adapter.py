"""Adapters that carry a whole module (PEFT modules_to_save), e.g. a task's classification head."""

import copy

import pytest
import torch

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merge, merged
from loragen.adapters.layout import LoraLayout
from loragen.errors import LayoutMismatchError


@pytest.fixture
def head_layout(tiny):
    return LoraLayout.from_model(tiny, ["lin0"], rank=2, alpha=4.0, modules_to_save=["lin1"])


def test_layout_with_head(head_layout):
    assert [s.key for s in head_layout.segments] == ["lin0.lora_A", "lin0.lora_B", "lin1.weight", "lin1.bias"]
    assert head_layout.numel == 2 * 10 + 20 * 2 + 3 * 20 + 3
    v = torch.randn(head_layout.numel)
    assert torch.equal(head_layout.flatten(head_layout.unflatten(v)), v)
    assert LoraLayout.from_dict(head_layout.to_dict()) == head_layout


def test_head_is_replaced_and_restored(tiny, head_layout):
    a = Adapter.from_vector(head_layout, torch.randn(head_layout.numel))
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with merged(tiny, a):
        assert torch.equal(tiny.lin1.weight, a.tensors["lin1.weight"])
        assert torch.equal(tiny.lin1.bias, a.tensors["lin1.bias"])
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, before[k])


def test_peft_loads_head_adapter_with_same_logits(tmp_path, tiny, head_layout):
    from peft import PeftModel

    a = Adapter.from_vector(head_layout, torch.randn(head_layout.numel) * 0.3, {"task": "h"})
    a.save(tmp_path / "a")
    back = Adapter.load(tmp_path / "a")
    assert back.layout == head_layout and torch.equal(back.vector(), a.vector())
    peft_model = PeftModel.from_pretrained(copy.deepcopy(tiny), str(tmp_path / "a"))
    x = torch.randn(6, 10)
    with merged(tiny, a):
        assert torch.allclose(peft_model(x), tiny(x), atol=1e-6)


def test_finetuned_head_comes_out_of_peft(tiny, head_layout):
    from loragen.finetune import lora_tensors, peft_model

    model = peft_model(tiny, head_layout, init_seed=0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    a = Adapter(head_layout, lora_tensors(model, head_layout))
    assert not torch.equal(a.tensors["lin1.weight"], tiny.lin1.weight)  # the head was trained and extracted
    with merged(tiny, a):
        assert torch.allclose(tiny(x), model(x), atol=1e-5)


def test_head_shape_mismatch(tiny, head_layout):
    other = torch.nn.Sequential()
    other.add_module("lin0", torch.nn.Linear(10, 20))
    other.add_module("lin1", torch.nn.Linear(20, 5))
    with pytest.raises(LayoutMismatchError, match=r"module 'lin1'.*\(20, 3\).*\(20, 5\)"):
        merge(other, Adapter.from_vector(head_layout, torch.zeros(head_layout.numel)))
