"""The contract every adapter generator keeps, and loading any trained generator from its folder.

A generator folder holds generator.json ({"generator": "<name>", "config": ..., "tasks": [...], "layout": ...}) and
generator.safetensors. `load_generator` reads the name and hands the folder to that generator's `load`, so the CLI and
evaluation take any generator. (Composer is a per-input generator of the digits-gen backbone with its own surface:
`loragen composer ...`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch

from loragen.adapters.adapter import Adapter
from loragen.adapters.layout import LoraLayout
from loragen.conditions import Condition
from loragen.errors import LoragenError

CONFIG_FILE = "generator.json"
GENERATORS = ("hyper", "pdiff")


class Generator(Protocol):
    name: str
    layout: LoraLayout
    tasks: list[str]  # the tasks it was trained on (evaluation asserts unseen tasks are not among them)

    def embed(self, conditions: list[Condition]) -> torch.Tensor:
        """(B, E) the generator's own condition embedding (nearest-task retrieval uses it)."""

    def generate_vectors(self, condition: Condition, n: int, seed: int = 0) -> torch.Tensor:
        """(N, P) adapter vectors in layout order."""

    def generate(self, condition: Condition, n: int = 1, seed: int = 0) -> list[Adapter]:
        """N adapters for a condition, seen or unseen."""

    def save(self, path: str | Path, overwrite: bool = False) -> None: ...


def generator_class(name: str):
    if name == "hyper":
        from loragen.generators.hyper import HyperGenerator

        return HyperGenerator
    if name == "pdiff":
        from loragen.generators.pdiff import PDiffGenerator

        return PDiffGenerator
    raise LoragenError(f"unknown generator {name!r}; expected one of {GENERATORS}")


def load_generator(path: str | Path, suite=None) -> Generator:
    """Any trained generator from its folder; `suite` (a built suite object) is shared with generators that read
    conditions through its base model (hyper's examples encoder) instead of their building another."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise LoragenError(f"expected a trained generator ({CONFIG_FILE}) in {path}; found none")
    try:
        name = json.loads((path / CONFIG_FILE).read_text()).get("generator")
    except json.JSONDecodeError as e:
        raise LoragenError(f"{path / CONFIG_FILE} is not valid JSON: {e}") from e
    cls = generator_class(name)
    return cls.load(path, suite=suite) if suite is not None and name == "hyper" else cls.load(path)
