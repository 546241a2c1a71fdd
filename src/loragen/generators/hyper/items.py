"""Condition items: the rows the hypernetwork's set encoder reads, one per item of a condition.

    image-set    each exemplar image: its pixels and 2-D moments (ImageSetEncoder.image_features)   (K, H·W + 8)
    text         sentence-transformers embedding of description + few-shot examples, one item       (1, 384)
    description  the same of the description alone                                                  (1, 384)
    examples     each labelled few-shot example: the base model's input to its head module (the
                 features the head classifies) and the one-hot label                                 (K, F + C)
    states       each example line read by a language model's frozen prefix (the suite's
                 `example_states`: what the adapted layers see), with the description's
                 sentence-transformers embedding appended to every row                               (K, S + 384)
    icl          the condition as one few-shot conversation read by a language model, a middle layer's state
                 where each example's answer is predicted (the suite's `icl_states`)                  (K, S)

`examples` reads the task through the base model itself, so the generator can also place a prototype of each class
straight into the head (`prototypes`; Proto-MAML's initialisation of the last layer, Triantafillou et al. 2020): what
the hypernetwork then learns is a correction to a classifier that already fits the examples, which carries over to
tasks whose topics no training task touched. It needs the suite (base model and `example_batch`).
`states` does the same for a causal LM, which has no head to put prototypes in: a task is shown to the generator as
what the model itself makes of its examples (suite.example_states), and the description still counts, appended.
Its base-model pass may run in bfloat16 (`precision`; HyperConfig.condition_precision, for training pools and
generation alike, which `loragen serve --condition-precision` may override): on CPUs with bf16 instructions it is about
twice as fast, and features stay within ~1% of fp32's; on CPUs without them (AVX2 only) torch emulates it at several
times fp32's cost. `auto` picks bf16 where the device has it natively and fp32 elsewhere (`native_bf16`; measured in
benchmarks/condition_precision.py).
Shapes: K items, D item features, F head input features, C classes, B conditions.
"""

from __future__ import annotations

import copy
import functools
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from loragen.conditions import Condition, ImageSetEncoder, TextEncoder
from loragen.errors import ConditionError, ConfigError

ITEM_ENCODERS = ("image-set", "text", "description", "examples", "states", "icl")
PRECISIONS = ("fp32", "bf16", "auto")


def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` computes in bfloat16 natively: a CUDA GPU that supports it, a CPU with AVX512-BF16 or AMX."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    # torch (2.13) has no public check; its private ones are looked up, so that a torch without them reads fp32
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return device == "cpu" and any(check is not None and check() for check in checks)


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """fp32 | bf16 as given; `auto`: bf16 where `device` has it natively, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision

# base model -> {(precision, example line) -> (F + C,) item}: the base model is frozen, so an example's features never
# change; shared by every generator over one model (k-fold studies fit many). Weak keys: dropped with the model.
_EXAMPLE_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str], torch.Tensor]]" = weakref.WeakKeyDictionary()
# base model -> its bfloat16 copy for bf16 passes: autocast alone would cast every weight again on each pass (a tenth
# of a cold generate); the copy still runs under autocast, which casts the few fp32 activations a model makes itself
_BF16_COPIES: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def head_inputs(model: nn.Module, head: str, forward, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N, F): what `model`'s module `head` receives when `forward(model, x)` runs over inputs x (N, ...), in chunks of
    `batch`."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(head).register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                forward(model, x[i : i + batch])
    finally:
        handle.remove()
    return torch.cat(seen)


def _bf16_copy(base: nn.Module) -> nn.Module:
    if base not in _BF16_COPIES:
        _BF16_COPIES[base] = copy.deepcopy(base).to(torch.bfloat16).requires_grad_(False).eval()
    return _BF16_COPIES[base]


class ConditionItems:
    """Condition -> item features (K, D) by one of ITEM_ENCODERS. `examples` needs the suite (or its name, built on
    first use with `suite_args`, e.g. the user's model folder) and the name of the base model's head module."""

    def __init__(self, encoder: str, suite=None, head: str | None = None, suite_args: dict | None = None,
                 precision: str = "fp32"):
        if encoder not in ITEM_ENCODERS:
            raise ConfigError(f"the hyper generator's encoder must be one of {ITEM_ENCODERS}; found {encoder!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"condition precision must be one of {PRECISIONS}; found {precision!r}")
        if encoder == "examples" and (suite is None or head is None):
            raise ConfigError("the examples encoder reads examples through the base model; expected a suite and its head "
                              f"module (a classifier adapters carry whole); found suite={suite!r}, head={head!r}")
        self.encoder, self._suite, self.head, self.suite_args = encoder, suite, head, dict(suite_args or {})
        self.precision = precision  # of the examples encoder's base-model pass (`auto` resolved on its device)
        self._bf16_checked = False  # bf16 asked for: whether the device has it was checked (and a warning given if not)
        self.compiled = False  # ... run compiled, where the suite can (Suite.example_forward; `loragen serve --compile`)
        if encoder in ("states", "icl") and suite is None:
            raise ConfigError(f"the {encoder} encoder reads example lines through the base model; expected a suite, found none")
        self._text = TextEncoder(with_examples=encoder == "text") if encoder in ("text", "description") else None
        self._description = TextEncoder(with_examples=False) if encoder == "states" else None
        self._states: dict[str, torch.Tensor] = {}  # states encoder: example line -> (S,)

    def suite(self):
        if isinstance(self._suite, str):
            from loragen.suites import get_suite

            self._suite = get_suite(self._suite, **self.suite_args)
        return self._suite

    def __call__(self, condition: Condition) -> torch.Tensor:
        if self._text is not None:
            return self._text.encode([condition])  # (1, D)
        if self.encoder == "examples":
            return self._examples(condition)
        if self.encoder == "icl":
            return self._icl_states(condition)  # (K, S)
        if self.encoder == "states":
            feats = self._example_states(condition)  # (K, S)
            return torch.cat([feats, self._description.encode([condition]).expand(len(feats), -1)], 1)  # (K, S + 384)
        if condition.images is None or condition.images.ndim != 3:
            found = None if condition.images is None else tuple(condition.images.shape)
            raise ConditionError(f"an image-set condition needs images of shape (K, H, W); found {found} for task {condition.task!r}")
        return ImageSetEncoder.image_features(condition.images.float())  # (K, H·W + 8)

    def _examples(self, condition: Condition) -> torch.Tensor:
        if not condition.examples:
            raise ConditionError(f"the examples encoder needs labelled few-shot examples; found none for task {condition.task!r}")
        suite = self.suite()
        base = suite.base_model()
        cache = _EXAMPLE_CACHE.setdefault(base, {})
        device = next(base.parameters()).device.type
        precision = resolve_precision(self.precision, device)
        if self.precision == "bf16" and not self._bf16_checked:  # once: not on every condition's hot path
            self._bf16_checked = True
            if not native_bf16(device):
                warnings.warn(f"condition precision bf16 on a {device} without bfloat16 instructions: torch emulates it, several "
                              "times slower than fp32 (benchmarks/condition_precision.py); 'auto' picks fp32 here (HyperConfig."
                              "condition_precision, `loragen serve --condition-precision`)", stacklevel=2)
        todo = [i for i, line in enumerate(condition.examples) if (precision, line) not in cache]
        if todo:
            data = suite.example_batch(Condition(condition.task, examples=[condition.examples[i] for i in todo]))
            model = base if precision == "fp32" else _bf16_copy(base)
            if model.training:  # eval() walks every module: skipped when there is nothing to switch
                model.eval()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                forward = functools.partial(suite.example_forward, compiled=self.compiled)
                feats = head_inputs(model, self.head, forward, data.x).float()
            n_classes = base.get_submodule(self.head).out_features
            onehot = F.one_hot(data.y, n_classes).float()
            for i, row in zip(todo, torch.cat([feats, onehot], 1)):
                cache[precision, condition.examples[i]] = row
        return torch.stack([cache[precision, line] for line in condition.examples])  # (K, F + C)

    def _example_states(self, condition: Condition) -> torch.Tensor:
        if not condition.examples:
            raise ConditionError(f"the states encoder needs labelled example lines; found none for task {condition.task!r}")
        todo = [line for line in dict.fromkeys(condition.examples) if line not in self._states]
        if todo:
            suite = self.suite()
            if not hasattr(suite, "example_states"):
                raise ConfigError(f"the states encoder reads example lines through a language model's prefix "
                                  f"(llm-tasks); suite {suite.name!r} has none")
            feats = suite.example_states(Condition(condition.task, examples=todo))  # (K', S)
            self._states.update(zip(todo, feats))
        return torch.stack([self._states[line] for line in condition.examples])

    def _icl_states(self, condition: Condition) -> torch.Tensor:
        suite = self.suite()
        if not hasattr(suite, "icl_states"):
            raise ConfigError(f"the icl encoder reads a condition through a language model in context (llm-tasks); suite "
                              f"{suite.name!r} has none")
        return suite.icl_states(condition)

    def pool(self, pool: Condition, k: int, draws: int, g: torch.Generator) -> torch.Tensor:
        """Everything training conditions of one task are drawn from: every exemplar's (or example's) features (M, D);
        R encoded K-example draws (R, D) for text; for icl, R conversations of K examples and a training description
        each (R·K, D); for states, every example line's states, each with one of the
        task's training descriptions (drawn at random) appended."""
        if self._text is not None:
            return self._text.encode([pool.subset(k, g) for _ in range(draws)])
        if self.encoder == "icl":
            return torch.cat([self._icl_states(pool.subset(k, g)) for _ in range(draws)])  # subset draws a wording too
        if self.encoder == "states":
            feats = self._example_states(pool)  # (M, S)
            texts = [pool.text, *(pool.paraphrases or [])]
            desc = self._description.encode([Condition(pool.task, text=t) for t in texts])  # (P, 384)
            return torch.cat([feats, desc[torch.randint(len(texts), (len(feats),), generator=g)]], 1)
        return self(pool)

    @property
    def per_condition(self) -> int | None:
        """Items that make one condition: 1 for text; None for exemplars and examples (K, the condition's own size)."""
        return 1 if self._text is not None else None

    def clear_cache(self) -> None:
        """Forget every encoded condition (for cold timings)."""
        if self._text is not None:
            self._text._cache.clear()
        if self._description is not None:
            self._description._cache.clear()
        self._states.clear()
        if self.encoder == "examples" and not isinstance(self._suite, str):
            _EXAMPLE_CACHE.pop(self._suite.base_model(), None)

    @staticmethod
    def prototypes(raw_BKD: torch.Tensor, n_classes: int) -> torch.Tensor:
        """(B, K, F + C) raw example items -> (B, C, F): per class, the mean of its examples' L2-normalised features (a
        class without examples gets the mean of all), so prototype · f ranks classes like a cosine nearest-centroid."""
        f = F.normalize(raw_BKD[..., :-n_classes], dim=-1)  # (B, K, F)
        y = raw_BKD[..., -n_classes:]  # (B, K, C) one-hot
        counts = y.sum(1)[..., None]  # (B, C, 1)
        means = (y.transpose(1, 2) @ f) / counts.clamp_min(1.0)  # (B, C, F)
        return torch.where(counts > 0, means, f.mean(1, keepdim=True))
