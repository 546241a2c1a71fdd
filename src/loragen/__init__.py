"""loragen: generate LoRA adapters from a condition instead of training them.

The public API:
    Condition        what a task looks like (description + examples, exemplar images, a class label)
    Adapter          LoRA tensors + layout; save / load PEFT folders
    LoraLayout       which modules carry LoRA; the flat-vector view of an adapter
    Zoo              a folder of LoRA checkpoints with each task's condition
    get_suite        a built-in offline suite (base model, tasks, conditions, metric)
    load_generator   any trained generator (hyper, pdiff) from its folder
    merged           `with merged(model, adapter):` runs a block with the adapter merged, restored exactly after
    batched_lora     a different adapter for every sample of one batch (training or inference)
"""

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.adapters.batched import batched_lora
from loragen.adapters.layout import LoraLayout, LoraModule
from loragen.conditions import Condition
from loragen.generators.base import load_generator
from loragen.suites import get_suite
from loragen.zoo.store import Zoo

__all__ = ["Adapter", "Condition", "LoraLayout", "LoraModule", "Zoo", "batched_lora", "get_suite", "load_generator", "merged"]
__version__ = "0.1.0"
