"""What every built-in suite provides: a base model, tasks with data splits, conditions and a metric."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from loragen.conditions import Condition
from loragen.errors import ConditionError, LoragenError, UnknownTaskError


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where suites cache their base models: `cache_dir`, else $LORAGEN_CACHE, else ~/.cache/loragen."""
    return Path(cache_dir or os.environ.get("LORAGEN_CACHE", Path.home() / ".cache" / "loragen"))


def rng(*parts) -> torch.Generator:
    """A generator seeded from names (suite, task, purpose...): fixed splits and draws that do not shift when tasks
    are added or reordered."""
    return torch.Generator().manual_seed(int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16))


def hashed_split(key: str, shares: dict[str, int]) -> str:
    """The split a seeded hash of `key` falls in, `shares` percent each (they sum to 100): the same for an item in
    every task that uses it, so no item is trained on in one task and tested in another."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    for split, share in shares.items():
        if h < share:
            return split
        h -= share
    raise ValueError(f"split shares must sum to 100; found {shares}")


@dataclass(frozen=True)
class Task:
    name: str
    heldout: bool  # True: never enters the zoo; used to test generation for unseen tasks
    params: dict = field(default_factory=dict, hash=False)  # the task's generating factors, for plots and reports


@dataclass(frozen=True)
class Fold:
    """One fold of a k-fold study over tasks: generators and zoos see only `train`; `test` is evaluated as unseen."""

    index: int
    train: tuple[str, ...]  # tasks whose data, adapters and conditions a generator may use
    test: tuple[str, ...]  # tasks evaluated as never seen; disjoint from `train`
    # more training tasks built from the fold's training data alone, for generators whose objective needs no zoo
    # adapter (hyper, objective task); not tasks of the suite, never evaluated
    generator_only: tuple[str, ...] = ()

    def __post_init__(self):
        clash = set(self.train + self.generator_only) & set(self.test)
        if clash:
            raise ValueError(f"fold {self.index}: evaluated-as-unseen tasks must not be trained on; found {sorted(clash)[:5]}")

    def check_unseen(self, trained, what: str) -> None:
        """Raise when any of the `trained` tasks (what a generator or baseline of this fold learnt from) is a test task."""
        leak = sorted(set(self.test) & set(trained))
        if leak:
            raise LoragenError(f"fold {self.index}: evaluated-as-unseen tasks reached {what}: {leak[:5]}")


def spread_folds(suite_name: str, trained: list[str], never_trained: list[str], k: int) -> list[Fold]:
    """k folds over `trained` tasks in a seeded order (each evaluated as unseen exactly once); `never_trained` tasks
    (extrapolation) are spread over the folds' test sets and never trained on in any fold."""
    if not 2 <= k <= len(trained):
        raise ValueError(f"k must be between 2 and the number of tasks that may be trained on ({len(trained)}); found {k}")
    order = [trained[i] for i in torch.randperm(len(trained), generator=rng(suite_name, "folds")).tolist()]
    folds = []
    for i in range(k):
        test = set(order[i::k])
        folds.append(Fold(i, tuple(n for n in trained if n not in test),
                          tuple(n for n in trained if n in test) + tuple(never_trained[i::k])))
    return folds


@dataclass
class TaskData:
    x: torch.Tensor  # inputs, first dim N
    y: torch.Tensor  # (N,) class labels


class Suite:
    """Base class; subclasses fill in the data, the model and the conditions."""

    name: str
    target_modules: list[str]
    modules_to_save: list[str] = []  # linear modules every adapter carries whole (a classification head)
    metric: str = "accuracy"
    _tasks: dict[str, Task]  # name -> task, filled by the subclass

    def tasks(self) -> list[Task]:
        return list(self._tasks.values())

    def task(self, name: str) -> Task:
        if name not in self._tasks:
            raise UnknownTaskError(f"suite {self.name!r} has no task {name!r}; expected one of {sorted(self._tasks)}")
        return self._tasks[name]

    def data(self, task: str, split: str) -> TaskData:
        raise NotImplementedError

    def condition(self, task: str, draw: int = 0) -> Condition:
        raise NotImplementedError

    def condition_pool(self, task: str) -> Condition:
        """Everything conditions of a task are drawn from (stored in the zoo so generators can draw their own)."""
        raise NotImplementedError

    def base_model(self, rebuild: bool = False) -> nn.Module:
        raise NotImplementedError

    def example_batch(self, condition: Condition) -> TaskData:
        """The condition's labelled few-shot examples as model inputs and class ids (for generators that read the
        examples through the base model); suites whose conditions carry no labelled examples raise."""
        raise ConditionError(f"suite {self.name!r} has no labelled few-shot examples in its conditions; expected a suite "
                             f"such as text-topics")

    def forward(self, model: nn.Module, x) -> torch.Tensor:
        """Logits (N, C) for a batch of inputs."""
        raise NotImplementedError

    def example_forward(self, model: nn.Module, x, compiled: bool = False) -> torch.Tensor:
        """Logits (N, C) of the base model, in inference, for a condition's examples (`example_batch`): the same as
        `forward`, which a suite may replace by a faster way to the same result; `compiled`: by its torch.compile'd
        path, where it has one (text-topics)."""
        return self.forward(model, x)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, data: TaskData, batch: int = 1024) -> float:
        """Accuracy in percent."""
        model.eval()
        correct = 0
        for i in range(0, len(data.y), batch):
            correct += (self.forward(model, data.x[i : i + batch]).argmax(-1) == data.y[i : i + batch]).sum().item()
        return 100.0 * correct / len(data.y)

    def peft_info(self) -> dict:
        """What the suite's adapters are for, as PEFT's adapter_config.json says it: {"task_type",
        "base_model_name_or_path"}. loragen's own networks: no task type, named "loragen:<suite>"."""
        return {"task_type": None, "base_model_name_or_path": f"loragen:{self.name}"}

    def base_summary(self, model: nn.Module) -> dict[str, str]:
        """What `loragen base` prints about a built base model: test accuracy on a few tasks."""
        tasks = self.tasks()[:: max(1, len(self.tasks()) // 6)]
        return {f"{t.name} test accuracy": f"{self.accuracy(model, self.data(t.name, 'test')):.1f}%" for t in tasks}

    def seen_tasks(self) -> list[Task]:
        return [t for t in self.tasks() if not t.heldout]

    def heldout_tasks(self) -> list[Task]:
        return [t for t in self.tasks() if t.heldout]

    def folds(self, k: int) -> list[Fold]:
        """k folds over the tasks, each task evaluated as unseen in exactly one fold (seeded by the suite's name).
        Suites whose tasks share data sources override this so that a fold's held-out sources never reach training."""
        names = [t.name for t in self.tasks()]
        if not 2 <= k <= len(names):
            raise ValueError(f"k must be between 2 and the number of tasks ({len(names)}); found {k}")
        order = [names[i] for i in torch.randperm(len(names), generator=rng(self.name, "folds")).tolist()]
        groups = [order[i::k] for i in range(k)]
        return [Fold(i, tuple(n for n in names if n not in set(g)), tuple(g)) for i, g in enumerate(groups)]
