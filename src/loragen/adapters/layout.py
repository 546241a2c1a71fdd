"""LoraLayout: which modules of a base model carry LoRA, in a fixed order, and the flat-vector view of an adapter.

Shapes: r = LoRA rank, i = in_features, o = out_features, P = total number of adapter parameters, B = batch.
A module's LoRA pair is A (r, i) and B (o, r), as PEFT stores them; its update is ΔW = (alpha / r) · B @ A (o, i).
A layout may also hold whole linear modules that the adapter replaces (PEFT's `modules_to_save`, e.g. a task's
classification head): their weight (o, i) and bias (o,) follow the LoRA matrices in the vector.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from loragen.errors import LayoutMismatchError


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-carrying linear module."""

    name: str  # dotted module path inside the base model, e.g. "encoder.layer.0.attention.self.query"
    in_features: int  # i: columns of the base weight
    out_features: int  # o: rows of the base weight
    rank: int  # r: LoRA rank
    alpha: float  # LoRA alpha; the update is scaled by alpha / rank

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


@dataclass(frozen=True)
class FullModule:
    """A linear module the adapter carries whole (PEFT modules_to_save), e.g. a classification head."""

    name: str  # dotted module path inside the base model
    in_features: int  # i
    out_features: int  # o
    bias: bool  # whether the module has a bias (o,)


@dataclass(frozen=True)
class Segment:
    """Where one tensor of the adapter lives in the flat vector."""

    key: str  # canonical key: "<module>.lora_A", "<module>.lora_B", "<full module>.weight" or "<full module>.bias"
    shape: tuple[int, ...]
    offset: int
    numel: int


class LoraLayout:
    """Ordered LoRA modules (+ whole modules); flattens adapter tensors to one vector (P,) and back, exactly."""

    def __init__(self, modules: list[LoraModule], full: list[FullModule] | tuple = ()):
        if not modules:
            raise LayoutMismatchError("a LoRA layout needs at least one module; found none")
        self.modules, self.full = list(modules), list(full)
        names = [m.name for m in self.modules] + [f.name for f in self.full]
        if len(set(names)) != len(names):
            raise LayoutMismatchError(f"module names in a layout must be unique; found {names}")
        shapes = []
        for m in self.modules:
            shapes += [(f"{m.name}.lora_A", (m.rank, m.in_features)), (f"{m.name}.lora_B", (m.out_features, m.rank))]
        for f in self.full:
            shapes += [(f"{f.name}.weight", (f.out_features, f.in_features))] + ([(f"{f.name}.bias", (f.out_features,))] if f.bias else [])
        self.segments: list[Segment] = []
        offset = 0
        for key, shape in shapes:
            n = math.prod(shape)
            self.segments.append(Segment(key, shape, offset, n))
            offset += n
        self.numel = offset  # P

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: nn.Module, target_modules: list[str], rank: int, alpha: float,
                   modules_to_save: list[str] | tuple = ()) -> "LoraLayout":
        """Find the nn.Linear modules whose name equals a target or ends with ".<target>" (PEFT's rule), in model order;
        `modules_to_save` names linear modules the adapter carries whole (a classification head)."""
        if rank < 1:
            raise LayoutMismatchError(f"LoRA rank must be >= 1; found {rank}")

        def matching(targets) -> list[tuple[str, nn.Linear]]:
            out = []
            for name, module in model.named_modules():
                if any(name == t or name.endswith("." + t) for t in targets):
                    if not isinstance(module, nn.Linear):
                        raise LayoutMismatchError(f"module {name!r} must be nn.Linear; found {type(module).__name__}")
                    out.append((name, module))
            if targets and not out:
                linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
                raise LayoutMismatchError(f"modules {list(targets)} match no nn.Linear in the model; its linear modules are {linear[:20]}")
            return out

        lora = [LoraModule(n, m.in_features, m.out_features, rank, float(alpha)) for n, m in matching(target_modules)]
        full = [FullModule(n, m.in_features, m.out_features, m.bias is not None) for n, m in matching(modules_to_save)]
        return cls(lora, full)

    def to_dict(self) -> dict:
        return {"modules": [asdict(m) for m in self.modules], "full": [asdict(f) for f in self.full]}

    @classmethod
    def from_dict(cls, d: dict) -> "LoraLayout":
        return cls([LoraModule(**m) for m in d["modules"]], [FullModule(**f) for f in d.get("full", [])])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoraLayout) and self.modules == other.modules and self.full == other.full

    def __repr__(self) -> str:
        return f"LoraLayout({len(self.modules)} LoRA modules, {len(self.full)} whole modules, P={self.numel})"

    @property
    def full_segments(self) -> list[Segment]:
        """Segments of the whole modules ("<name>.weight" / ".bias"), which follow the LoRA pairs."""
        return self.segments[2 * len(self.modules) :]

    @property
    def target_names(self) -> list[str]:
        return [m.name for m in self.modules]

    def describe_difference(self, other: "LoraLayout") -> str:
        """One line naming the first way `other` differs from this layout."""
        mine = {m.name: m for m in self.modules + self.full}
        theirs = {m.name: m for m in other.modules + other.full}
        if set(mine) != set(theirs):
            return f"expected modules {sorted(mine)}, found {sorted(theirs)}"
        for name, m in mine.items():
            if m != theirs[name]:
                return f"module {name!r}: expected {m}, found {theirs[name]}"
        return "module order differs"

    # ---- flat view ----------------------------------------------------------------------------------------------
    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Canonical tensors {"<module>.lora_A": (r, i), "<module>.lora_B": (o, r), ...} -> one vector (P,), float32."""
        self.check_tensors(tensors)
        return torch.cat([tensors[s.key].detach().reshape(-1).to(torch.float32) for s in self.segments])

    def check_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Raise unless the tensors have exactly the layout's keys and shapes."""
        expected = {s.key for s in self.segments}
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise LayoutMismatchError(f"adapter tensors do not match the layout: missing {missing[:6]}, unexpected {extra[:6]}")
        for s in self.segments:
            if tuple(tensors[s.key].shape) != s.shape:
                raise LayoutMismatchError(f"tensor {s.key!r}: expected shape {s.shape}, found {tuple(tensors[s.key].shape)}")

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """One vector (P,) -> canonical tensors; views are cloned so the result owns its memory."""
        if vector.ndim != 1 or vector.numel() != self.numel:
            raise LayoutMismatchError(f"expected a vector of shape ({self.numel},), found {tuple(vector.shape)}")
        return {s.key: vector[s.offset : s.offset + s.numel].reshape(s.shape).clone() for s in self.segments}

    def segment_ids(self) -> torch.Tensor:
        """(P,) long: index of the segment (one per A and per B matrix) each vector entry belongs to."""
        return torch.repeat_interleave(torch.arange(len(self.segments)), torch.tensor([s.numel for s in self.segments]))

    def check_model(self, model: nn.Module) -> None:
        """Raise if the model lacks a module of the layout or its shape differs."""
        named = dict(model.named_modules())
        for m in self.modules + self.full:
            if m.name not in named:
                raise LayoutMismatchError(f"the base model has no module {m.name!r} that the adapter targets")
            lin = named[m.name]
            if not isinstance(lin, nn.Linear) or (lin.in_features, lin.out_features) != (m.in_features, m.out_features):
                found = (getattr(lin, "in_features", None), getattr(lin, "out_features", None))
                raise LayoutMismatchError(
                    f"module {m.name!r}: adapter expects nn.Linear with (in, out) = ({m.in_features}, {m.out_features}), "
                    f"the base model has {type(lin).__name__} with {found}"
                )

