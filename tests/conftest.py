import os
import tempfile

import pytest
import torch
from torch import nn

# Built-in suites cache their base models here for the whole test session, never in the user's home.
os.environ.setdefault("LORAGEN_CACHE", tempfile.mkdtemp(prefix="loragen-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


class TinyNet(nn.Module):
    """nn.Linear(10, 20) → ReLU → nn.Linear(20, 3), the PEFT tests' kind of model."""

    def __init__(self):
        super().__init__()
        self.lin0 = nn.Linear(10, 20)
        self.lin1 = nn.Linear(20, 3)

    def forward(self, x):
        return self.lin1(torch.relu(self.lin0(x)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def tiny_layout(tiny):
    from loragen.layout import LoraLayout

    return LoraLayout.from_model(tiny, ["lin0", "lin1"], rank=2, alpha=4.0)


@pytest.fixture
def random_adapter(tiny_layout):
    from loragen.adapter import Adapter

    torch.manual_seed(1)
    return Adapter.from_vector(tiny_layout, torch.randn(tiny_layout.numel) * 0.3, {"task": "t0", "step": 3})
