"""Suite `llm-tasks`: instruction tasks with short answers for a chat causal LM (SmolLM2-135M-Instruct by default).

Why. Adapters on demand matter most for instruction-tuned language models: describe a task in words, get an adapter
that makes the model do it. The tasks come from parameterised families (llm_task_families.py: shift letters by K,
add K, the K-th item, number words, topics, polarity thresholds, format conversions, ...), so that a held-out task
can lie between seen parameter values (interpolation) or beyond them (extrapolation); Task.params record "family",
"param" and "where" ("inside" / "outside" the family's training range, or "categorical").

A task has N_PARAPHRASES descriptions (the first N_TRAIN_PARAPHRASES for training, the rest held out for evaluation),
train / val / test examples (input, answer) drawn from atoms of that split only (seeded by the task's name), and a
condition: a training description with K labelled example lines `'<input>' -> <answer>` from the train split.

Prompts use the model's chat template, with one of three contexts before the input:
  none         the input alone: what an adapted model sees (the adapter carries the task)
  description  a description, a blank line, then the input: zero-shot prompting
  few-shot     description + first shot as the first user turn, the shots' answers as assistant turns, then the
               input: in-context learning with `shots` fixed training examples
Scoring (completion.py): exact match of the greedy completion (teacher forcing first, generation only for the rows it
cannot decide) and the cross-entropy per answer token; both batched under torch.no_grad. Exact-match fractions are in
[0, 1]; `accuracy` is the teacher-forced (token-level) exact match in percent, for code written for classification
suites (checkpoint selection): a lower bound that is exact for models that spell answers with the tokenizer's tokens.

Shapes: N examples, L tokens (left-padded prompt + answer), A answer positions, V vocabulary; `data` holds
x (N, 2, L) = input ids and attention mask with L = max_tokens, and y (N, A) = answer tokens right-aligned, -100 elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from loragen.conditions import Condition
from loragen.errors import LoragenError
from loragen.suites import completion
from loragen.suites.causal_lm import PACKAGED, cache_root, load_model, load_tokenizer, model_folder
from loragen.suites.llm_task_families import N_TRAIN_PARAPHRASES, SPLIT_PERCENT, TaskSpec, all_task_specs, build_pools
from loragen.suites.suite import Fold, Suite, Task, TaskData, rng

Context = Literal["none", "description", "few-shot"]
CONTEXTS = ("none", "description", "few-shot")
Wording = Literal["train", "eval"]
MIN_EXAMPLES = 8  # fewest examples a split of a task may have
SAMPLE_QUESTION = "What is the capital of France?"  # what `loragen base` asks the model


class LlmTasks(Suite):
    name = "llm-tasks"
    target_modules = ["q_proj", "v_proj"]  # attention projections of Llama-style models
    metric = "exact match"

    def __init__(self, model_path: str | Path = "smollm2", target_modules: list[str] | None = None,
                 k_exemplars: int = 8, shots: int = 4, n_train: int = 64, n_val: int = 16, n_test: int = 32,
                 max_tokens: int = 96, answer_tokens: int = 24, cache_dir: str | Path | None = None):
        """model_path: 'smollm2' (the packaged model, converted into the cache on first use) or a local causal-LM
        folder; k_exemplars: K example lines in a condition; shots: examples in a few-shot prompt; n_*: examples per
        split (fewer when a task's atoms run out); max_tokens: L of `data`; answer_tokens: A, the answer window (with
        SmolLM2 the longest row is 68 tokens and the longest answer 19, repeat-6 of a rare word)."""
        self.model_path, self.k_exemplars, self.shots = model_path, k_exemplars, shots
        self.max_tokens, self.answer_tokens = max_tokens, answer_tokens
        if target_modules is not None:
            self.target_modules = list(target_modules)
        self.cache_dir = cache_root(cache_dir)
        specs = all_task_specs()
        self._specs: dict[str, TaskSpec] = {s.name: s for s in specs}
        self._tasks = {s.name: Task(s.name, s.heldout, {"family": s.family, "param": s.param, "where": s.where, **s.extra})
                       for s in specs}
        pools = build_pools()
        sizes = {"train": n_train, "val": n_val, "test": n_test}
        self._examples: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for s in specs:
            for split in SPLIT_PERCENT:
                pairs = s.make(pools[split], rng(self.name, s.name, split), sizes[split])
                if len(pairs) < min(MIN_EXAMPLES, sizes[split]):
                    raise LoragenError(f"task {s.name}: expected at least {min(MIN_EXAMPLES, sizes[split])} {split} "
                                       f"examples; found {len(pairs)}")
                self._examples[(s.name, split)] = pairs
        self._folder: Path | None = None
        self._tokenizer, self._base = None, None
        self._data_cache: dict[tuple[str, str], TaskData] = {}

    # ---- tasks, text and conditions ------------------------------------------------------------------------------
    def examples(self, task: str, split: str) -> list[tuple[str, str]]:
        """The task's (input, answer) pairs of a split, in a seeded order; no atom is in two splits of any tasks."""
        self.task(task)
        if split not in SPLIT_PERCENT:
            raise ValueError(f"split must be 'train', 'val' or 'test'; found {split!r}")
        return self._examples[(task, split)]

    def descriptions(self, task: str, wording: Wording = "train") -> list[str]:
        """The task's paraphrased descriptions: 'train' ones (for generators and zoos) or 'eval' ones (held out)."""
        texts = self._specs[self.task(task).name].descriptions
        if wording not in ("train", "eval"):
            raise ValueError(f"wording must be 'train' or 'eval'; found {wording!r}")
        return list(texts[:N_TRAIN_PARAPHRASES] if wording == "train" else texts[N_TRAIN_PARAPHRASES:])

    def few_shots(self, task: str) -> list[tuple[str, str]]:
        """The `shots` training examples every few-shot prompt of the task shows (seeded by its name)."""
        train = self.examples(task, "train")
        return [train[i] for i in torch.randperm(len(train), generator=rng(self.name, task, "shots"))[: self.shots].tolist()]

    def query(self, task: str, x: str, context: Context = "none", wording: Wording = "eval") -> list[dict]:
        """The chat messages that ask the model for the answer to input `x` (see the module docstring for contexts)."""
        if context == "none":
            return [{"role": "user", "content": x}]
        text = self.descriptions(task, wording)[0]
        if context == "description":
            return [{"role": "user", "content": f"{text}\n\n{x}"}]
        if context == "few-shot":
            msgs, first = [], True
            for sx, sy in self.few_shots(task):
                msgs += [{"role": "user", "content": f"{text}\n\n{sx}" if first else sx},
                         {"role": "assistant", "content": sy}]
                first = False
            return msgs + [{"role": "user", "content": x if msgs else f"{text}\n\n{x}"}]
        raise ValueError(f"context must be one of {CONTEXTS}; found {context!r}")

    def _lines(self, pairs: list[tuple[str, str]]) -> list[str]:
        return [f"{x!r} -> {y}" for x, y in pairs]

    def condition(self, task: str, draw: int = 0) -> Condition:
        """A training description (draw picks which) and K labelled example lines of the train split."""
        pool = self.condition_pool(task)
        out = pool.subset(self.k_exemplars, rng(self.name, task, "examples", draw))
        out.text = self.descriptions(task, "train")[draw % N_TRAIN_PARAPHRASES]
        return out

    def eval_condition(self, task: str, draw: int = 0) -> Condition:
        """As `condition`, with a held-out description: what a generator is scored on."""
        out = self.condition(task, draw)
        texts = self.descriptions(task, "eval")
        out.text = texts[draw % len(texts)]
        return out

    def condition_pool(self, task: str) -> Condition:
        """The first training description and every training example as a line."""
        return Condition(task=task, text=self.descriptions(task, "train")[0],
                         examples=self._lines(self.examples(task, "train")))

    def folds(self, k: int) -> list[Fold]:
        """k folds over the inside and categorical tasks (each evaluated as unseen once); outside tasks (extrapolation)
        are spread over the folds' test sets and never trained on in any fold."""
        inside = [t.name for t in self.tasks() if t.params["where"] != "outside"]
        outside = [t.name for t in self.tasks() if t.params["where"] == "outside"]
        if not 2 <= k <= len(inside):
            raise ValueError(f"k must be between 2 and the number of inside tasks ({len(inside)}); found {k}")
        order = [inside[i] for i in torch.randperm(len(inside), generator=rng(self.name, "folds")).tolist()]
        folds = []
        for i in range(k):
            test = set(order[i::k])
            folds.append(Fold(i, tuple(n for n in inside if n not in test),
                              tuple(n for n in inside if n in test) + tuple(outside[i::k])))
        return folds

    # ---- model and tokens ----------------------------------------------------------------------------------------
    def model_folder(self) -> Path:
        """The base model's folder (the packaged model is converted into the cache the first time)."""
        if self._folder is None:
            self._folder = model_folder(self.model_path, self.cache_dir)
        return self._folder

    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_folder())
        return self._tokenizer

    def base_model(self, rebuild: bool = False) -> nn.Module:
        """The causal LM in fp32, eval mode, loaded once; `rebuild` converts the packaged model again."""
        if rebuild and isinstance(self.model_path, str) and self.model_path in PACKAGED:
            self._folder, self._base = model_folder(self.model_path, self.cache_dir, rebuild=True), None
        if self._base is None:
            self._base = load_model(self.model_folder())
        return self._base

    def encode(self, task: str, split: str, context: Context = "none", wording: Wording = "eval",
               limit: int | None = None) -> TaskData:
        """A split's examples as tokens; context 'none' pads to max_tokens (every task's data concatenates), the
        others to the longest prompt."""
        pairs = self.examples(task, split)[:limit]
        queries = [self.query(task, x, context, wording) for x, _ in pairs]
        return completion.encode(self.tokenizer(), queries, [y for _, y in pairs], self.answer_tokens,
                                 self.max_tokens if context == "none" else None)

    def data(self, task: str, split: str) -> TaskData:
        """The split with context 'none' (what an adapter is trained and scored on), cached."""
        key = (task, split)
        if key not in self._data_cache:
            self._data_cache[key] = self.encode(task, split)
        return self._data_cache[key]

    def example_batch(self, condition: Condition) -> TaskData:
        """The condition's example lines `'<input>' -> <answer>` as tokens with context 'none', like `data`."""
        pairs = condition.labelled_examples()
        if not pairs:
            raise LoragenError(f"expected labelled example lines in the condition of {condition.task!r}; found none")
        queries = [[{"role": "user", "content": x}] for x, _ in pairs]
        return completion.encode(self.tokenizer(), queries, [y for _, y in pairs], self.answer_tokens, self.max_tokens)

    def prompt_tokens(self, task: str, split: str = "test", context: Context = "none", limit: int | None = None) -> float:
        """Mean prompt tokens per query (the answer not counted): the inference cost a context adds."""
        d = self.encode(task, split, context, limit=limit)
        return (d.x[:, 1].sum(1) - (d.y != completion.IGNORE).sum(1)).float().mean().item()

    # ---- scoring -------------------------------------------------------------------------------------------------
    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(N, V, A) logits of the answer positions, class dimension second as F.cross_entropy(logits, y) expects
        with y (N, A): that call is the mean loss per answer token."""
        return completion.answer_logits(model, x, self.answer_tokens).transpose(1, 2)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, data: TaskData, batch: int = 16) -> float:
        """Teacher-forced exact match in percent: the answer's own tokens are the greedy ones (see the module docstring)."""
        return 100.0 * completion.token_matches(model, data, batch).float().mean().item()

    def _scored(self, task: str, split: str, context: Context, wording: Wording, limit: int | None) -> TaskData:
        """The tokens a score is computed on (the cached `data` when it is the whole split without context)."""
        if context == "none" and limit is None:
            return self.data(task, split)
        return self.encode(task, split, context, wording, limit)

    def exact_match(self, model: nn.Module, task: str, split: str = "test", context: Context = "none",
                    wording: Wording = "eval", limit: int | None = None, batch: int = 16) -> float:
        """Fraction of the split's queries whose greedy completion is exactly the answer."""
        answers = [y for _, y in self.examples(task, split)[:limit]]
        hits = completion.exact_matches(model, self.tokenizer(), self._scored(task, split, context, wording, limit),
                                        answers, batch)
        return hits.float().mean().item()

    def answer_loss(self, model: nn.Module, task: str, split: str = "test", context: Context = "none",
                    wording: Wording = "eval", limit: int | None = None, batch: int = 16) -> float:
        """Mean cross-entropy per answer token (end of turn included) over the split's queries."""
        return completion.answer_loss(model, self._scored(task, split, context, wording, limit), batch)

    def complete(self, model: nn.Module, task: str, split: str = "test", context: Context = "none",
                 wording: Wording = "eval", limit: int | None = None, max_new_tokens: int | None = None) -> list[str]:
        """The model's greedy replies to the split's queries (generated token by token; for reading, not scoring)."""
        pairs = self.examples(task, split)[:limit]
        queries = [self.query(task, x, context, wording) for x, _ in pairs]
        return completion.greedy_complete(model, self.tokenizer(), queries, max_new_tokens or self.answer_tokens)

    def base_summary(self, model: nn.Module) -> dict[str, str]:
        """What `loragen base` prints: the folder, the size, a chat answer and zero-shot exact match on a few tasks."""
        reply = completion.greedy_complete(model, self.tokenizer(), [[{"role": "user", "content": SAMPLE_QUESTION}]], 12)[0]
        out = {"model folder": str(self.model_folder()),
               "parameters": f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M",
               f"reply to {SAMPLE_QUESTION!r}": repr(reply)}
        for t in ("add-2", "format-uppercase", "topic-2-a"):
            em = self.exact_match(model, t, context="description", limit=8)
            out[f"{t} zero-shot exact match (8 test queries)"] = f"{em:.2f}"
        return out
