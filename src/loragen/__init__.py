"""loragen: generate LoRA adapters from a condition instead of training them."""

from loragen.adapter import Adapter
from loragen.conditions import Condition
from loragen.layout import LoraLayout, LoraModule

__all__ = ["Adapter", "Condition", "LoraLayout", "LoraModule"]
__version__ = "0.1.0"
