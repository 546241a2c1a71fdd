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
  none         the input alone (the adapter carries the task)
  description  a description, a blank line, then the input: zero-shot prompting
  few-shot     description + first shot as the first user turn, the shots' answers as assistant turns, then the
               input: in-context learning with `shots` fixed training examples
An adapted model sees `adapter_context`: none (the default); description, where the adapter carries what the
description leaves to the model (the answer's form; the family's skill) and the prompt carries the rest (which K), at
the description's prompt tokens instead of few-shot's; or few-shot, where the adapter works with in-context learning
(as meta-trained ICL does, MetaICL, Min et al. 2022) at few-shot's prompt tokens. Wherever a context is optional
(None), it is this one; its training rows cycle through the training paraphrases and, with few-shot, through draws of
the shots among the other training examples; its validation and test rows read the first held-out paraphrase and the
task's fixed shots: exactly few-shot prompting's prompts.
Adapters: LoRA on `target_modules` (PEFT's suffix rule; default the attention projections q_proj and v_proj) of the
top `top_layers` decoder layers (default 4; None: every layer). Their PEFT config says task_type CAUSAL_LM and the
base model's folder, so `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)` loads them; the
top-layers restriction is in its target_modules as full module names ("model.layers.26.self_attn.q_proj", ...), which
PEFT matches exactly: what layers_to_transform says, without depending on a layers_pattern.
Training is affordable on a CPU because of the top-layers restriction: `data` then holds the frozen prefix's hidden
states, computed once per example, and `forward` runs only the adapted layers and the LM head over the answer positions
(cached_prefix.py says how, and why fine-tuning, zoo collection and the hyper generator reach it unchanged).

Scoring (completion.py): exact match of the greedy completion (teacher forcing first, generation only for the rows it
cannot decide) and the cross-entropy per answer token; both batched under torch.no_grad. Exact-match fractions are in
[0, 1]; `accuracy` is the teacher-forced (token-level) exact match in percent, for code written for classification
suites (checkpoint selection): a lower bound that is exact for models that spell answers with the tokenizer's tokens.

Shapes: N examples, L tokens (left-padded prompt + answer), A answer positions, V vocabulary, D hidden size; `tokens`
holds x (N, 2, L) = input ids and attention mask with L = max_tokens, and y (N, A) = answer tokens right-aligned, -100
elsewhere; `data` holds the same y and, with top_layers, x (N, L, D + 2) = the prefix's states, the mask and the
answer-token flags (cached_prefix.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from loragen.conditions import Condition
from loragen.errors import ConditionError, ConfigError, LoragenError
from loragen.suites import completion
from loragen.suites.cached_prefix import cut_layer, decoder_parts, prefix_states, run_layers, top_logits
from loragen.suites.causal_lm import PACKAGED, load_model, load_tokenizer, model_folder
from loragen.suites.llm_task_families import N_TRAIN_PARAPHRASES, SPLIT_PERCENT, TaskSpec, all_task_specs, build_pools
from loragen.suites.suite import Fold, Suite, Task, TaskData, cache_root, rng, spread_folds

Context = Literal["none", "description", "few-shot"]
CONTEXTS = ("none", "description", "few-shot")
Wording = Literal["train", "eval"]
DEFAULT_TARGETS = ("q_proj", "v_proj")  # attention projections of Llama-style models
MIN_EXAMPLES = 8  # fewest examples a split of a task may have
SAMPLE_QUESTION = "What is the capital of France?"  # what `loragen base` asks the model


def context_messages(context: Context, x: str, text: str | None = None,
                     shots: list[tuple[str, str]] | None = None) -> list[dict]:
    """The chat messages of input `x` in a context (module docstring): `text` is the description (description and
    few-shot), `shots` the few-shot examples (input, answer). What the suite's prompts and `loragen chat` send."""
    if context == "none":
        return [{"role": "user", "content": x}]
    if context not in CONTEXTS:
        raise ConfigError(f"context must be one of {CONTEXTS}; found {context!r}")
    if not text:
        raise ConfigError(f"the {context} context starts with the task's description; found none")
    msgs = []
    for sx, sy in (shots or []) if context == "few-shot" else []:
        msgs += [{"role": "user", "content": sx if msgs else f"{text}\n\n{sx}"}, {"role": "assistant", "content": sy}]
    return msgs + [{"role": "user", "content": x if msgs else f"{text}\n\n{x}"}]


class LlmTasks(Suite):
    name = "llm-tasks"
    metric = "exact match"

    def __init__(self, model_path: str | Path = "smollm2", target_modules: list[str] | None = None,
                 top_layers: int | None = 4, k_exemplars: int = 8, shots: int = 4, n_train: int = 64, n_val: int = 16,
                 n_test: int = 32, max_tokens: int | None = None, answer_tokens: int = 24, cache_dir: str | Path | None = None,
                 families: list[str] | tuple[str, ...] | None = None, adapter_context: Context = "none"):
        """model_path: 'smollm2' (the packaged model, converted into the cache on first use) or a local causal-LM
        folder; target_modules: linear modules LoRA adapts, by name suffix (default q_proj, v_proj); top_layers: adapt
        only the top N decoder layers and train from cached prefix states (None: every layer, trained through the
        whole model); k_exemplars: K example lines in a condition; shots: examples in a few-shot prompt; n_*: examples
        per split (fewer when a task's atoms run out); max_tokens: L of `data` (None: 96, or 224 with the few-shot
        adapter context; with SmolLM2 the longest row is 68 tokens in context none, 207 in few-shot); answer_tokens: A,
        the answer window (the longest answer is 19 tokens, repeat-6 of a rare word); families: keep only the tasks of
        these families (None: every family but the generator-only DENSE_FAMILIES); adapter_context: what an adapted
        model's prompt holds before the input, one of CONTEXTS (module docstring)."""
        if top_layers is not None and top_layers < 1:
            raise ConfigError(f"top_layers must be >= 1, or None for every layer; found {top_layers}")
        if adapter_context not in CONTEXTS:
            raise ConfigError(f"adapter_context must be one of {CONTEXTS}; found {adapter_context!r}")
        if max_tokens is None:
            max_tokens = 224 if adapter_context == "few-shot" else 96
        self.adapter_context: Context = adapter_context
        self.model_path, self.k_exemplars, self.shots = model_path, k_exemplars, shots
        self.max_tokens, self.answer_tokens, self.top_layers = max_tokens, answer_tokens, top_layers
        self.targets = list(target_modules) if target_modules is not None else list(DEFAULT_TARGETS)
        self.cache_dir = cache_root(cache_dir)
        specs = all_task_specs(dense=families is not None)
        if families is not None:
            known = sorted({s.family for s in specs})
            unknown = sorted(set(families) - set(known))
            if unknown or not families:
                raise ConfigError(f"expected families among {known}; found {list(families)}")
            specs = [s for s in specs if s.family in families]
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
        self._data_cache: dict[tuple[str, str], TaskData] = {}  # tokens
        self._states_cache: dict[tuple[str, str], TaskData] = {}  # cached prefix states

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

    def few_shots(self, task: str, draw: int = 0, query: str | None = None) -> list[tuple[str, str]]:
        """`shots` training examples of the task, seeded by its name: draw 0 is the fixed set every few-shot prompt of
        a validation or test query shows; other draws are for training rows. Never the `query`'s own example."""
        train = self.examples(task, "train")
        key = ("shots",) if draw == 0 else ("shots", draw)
        order = torch.randperm(len(train), generator=rng(self.name, task, *key)).tolist()
        return [train[i] for i in order if train[i][0] != query][: self.shots]

    def query(self, task: str, x: str, context: Context | None = None, wording: Wording = "eval", variant: int = 0,
              text: str | None = None, shots: list[tuple[str, str]] | None = None) -> list[dict]:
        """The chat messages that ask the model for the answer to input `x` (see the module docstring for contexts;
        None: the adapter's). The description is `text`, or the task's paraphrase `variant` of the `wording` ones; a
        few-shot prompt's examples are `shots`, or the task's draw `variant` of its training examples."""
        context = context or self.adapter_context
        if context != "none" and text is None:
            texts = self.descriptions(task, wording)
            text = texts[variant % len(texts)]
        if context == "few-shot" and shots is None:
            shots = self.few_shots(task, variant, x)
        return context_messages(context, x, text, shots)

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
        """The training descriptions (the first as text, the others as paraphrases a draw chooses among) and every
        training example as a line."""
        first, *others = self.descriptions(task, "train")
        return Condition(task=task, text=first, examples=self._lines(self.examples(task, "train")), paraphrases=others)

    def folds(self, k: int) -> list[Fold]:
        """k folds over the inside and categorical tasks (each evaluated as unseen once); outside tasks (extrapolation)
        are spread over the folds' test sets and never trained on in any fold."""
        return spread_folds(self.name, [t.name for t in self.tasks() if t.params["where"] != "outside"],
                            [t.name for t in self.tasks() if t.params["where"] == "outside"], k)

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

    def cut(self) -> int:
        """The first adapted decoder layer (0 without top_layers): layers below it are the frozen, cached prefix."""
        return 0 if self.top_layers is None else cut_layer(self.base_model(), self.top_layers)

    @property
    def target_modules(self) -> list[str]:
        """The modules a LoRA layout of this suite adapts: the target suffixes (every layer), or with top_layers the
        full names of the matching linear modules in the top layers (PEFT's matching and LoraLayout take both)."""
        if self.top_layers is None:
            return list(self.targets)
        base = self.base_model()
        top = {id(m) for layer in decoder_parts(base).layers[self.cut() :] for m in layer.modules()}
        names = [n for n, m in base.named_modules() if id(m) in top and isinstance(m, nn.Linear)
                 and any(n == t or n.endswith("." + t) for t in self.targets)]
        if not names:
            linear = [n for n, m in base.named_modules() if id(m) in top and isinstance(m, nn.Linear)]
            raise ConfigError(f"expected target modules {self.targets} among the linear modules of the top "
                              f"{self.top_layers} layers; found only {linear[:12]}")
        return names

    def peft_info(self) -> dict:
        """PEFT's task type CAUSAL_LM and the base model's folder (absolute): what AutoPeftModelForCausalLM needs."""
        return {"task_type": "CAUSAL_LM", "base_model_name_or_path": str(self.model_folder().resolve())}

    def encode(self, task: str, split: str, context: Context | None = None, wording: Wording = "eval",
               limit: int | None = None) -> TaskData:
        """A split's examples as tokens. The adapter's context (None) pads to max_tokens, so that every task's data
        concatenates, and its training rows cycle: row i reads training paraphrase i and draw i of the shots; the other
        contexts pad to the longest prompt."""
        pairs = self.examples(task, split)[:limit]
        cycle = context is None and split == "train"
        queries = [self.query(task, x, context, "train" if cycle else wording, i if cycle else 0) for i, (x, _) in enumerate(pairs)]
        return completion.encode(self.tokenizer(), queries, [y for _, y in pairs], self.answer_tokens,
                                 self.max_tokens if context is None else None)

    def tokens(self, task: str, split: str) -> TaskData:
        """The split in the adapter's context as tokens (what an adapted model sees), cached."""
        key = (task, split)
        if key not in self._data_cache:
            self._data_cache[key] = self.encode(task, split)
        return self._data_cache[key]

    def data(self, task: str, split: str) -> TaskData:
        """What adapters are trained (and teacher-force scored) on: `tokens`, or with top_layers the base model's
        prefix states (N, L, D + 2) of those tokens, computed once per example and kept (cached_prefix.py)."""
        if self.top_layers is None:
            return self.tokens(task, split)
        key = (task, split)
        if key not in self._states_cache:
            t = self.tokens(task, split)
            self._states_cache[key] = TaskData(prefix_states(self.base_model(), t.x, t.y, self.cut()), t.y)
        return self._states_cache[key]

    def example_batch(self, condition: Condition) -> TaskData:
        """The condition's example lines `'<input>' -> <answer>` as tokens in the adapter's context, like `data` (a
        description there is the condition's own text; few-shot examples, the condition's other lines)."""
        pairs = condition.labelled_examples()
        if not pairs:
            raise LoragenError(f"expected labelled example lines in the condition of {condition.task!r}; found none")
        if self.adapter_context != "none" and not condition.text:
            raise LoragenError(f"adapter_context {self.adapter_context!r} reads the condition's description; found none "
                               f"for {condition.task!r}")
        queries = [self.query(condition.task, x, text=condition.text, shots=[p for p in pairs if p[0] != x][: self.shots])
                   for x, _ in pairs]
        return completion.encode(self.tokenizer(), queries, [y for _, y in pairs], self.answer_tokens, self.max_tokens)

    def example_states(self, condition: Condition) -> torch.Tensor:
        """(K, 2D): each example line as the adapted layers see it, from the frozen prefix's states entering the cut:
        the state of the last prompt token (which predicts the answer; where in-context task vectors live) and the mean
        over the answer's tokens. What the hyper generator's `states` encoder reads. Lines of the task's train split
        reuse the states `data` keeps; other lines run the prefix once."""
        if self.top_layers is None:
            raise ConfigError("example states are read at the cut of the cached prefix; this suite adapts every layer "
                              "(top_layers=None)")
        pairs = condition.labelled_examples()
        if not pairs:
            raise LoragenError(f"expected labelled example lines in the condition of {condition.task!r}; found none")
        known = {}
        if condition.task in self._tasks:
            known = {p: i for i, p in enumerate(self.examples(condition.task, "train"))}
        if all(p in known for p in pairs):
            x = self.data(condition.task, "train").x[[known[p] for p in pairs]]
        else:
            t = self.example_batch(condition)
            x = prefix_states(self.base_model(), t.x, t.y, self.cut())
        dim = x.shape[2] - 2
        answer = x[..., dim + 1]  # (K, L) 1 at answer tokens
        last_prompt = answer.argmax(1) - 1  # answers are contiguous and right-aligned: the token before the first
        prompt_state = x[torch.arange(len(x)), last_prompt, :dim]  # (K, D)
        answer_mean = (x[..., :dim] * answer[..., None]).sum(1) / answer.sum(1, keepdim=True).clamp_min(1)  # (K, D)
        return torch.cat([prompt_state, answer_mean], 1)

    @torch.no_grad()
    def icl_states(self, condition: Condition) -> torch.Tensor:
        """(K, D): the condition read by the model in context, as few-shot prompting reads a task: one conversation
        (the description and the first input, then each example's answer as the assistant's turn and the next input as
        the user's), run through the lower half of the decoder layers; row i is the state at the token that predicts
        example i's answer, having read examples 0 … i − 1 before it. In-context task vectors live there (Hendel et
        al. 2023: the task an ICL prompt shows is readable from a middle layer's state at the query's last token). What
        the hyper generator's `icl` encoder reads; one pass over ~150 tokens for K = 8."""
        pairs = condition.labelled_examples()
        if not pairs or not condition.text:
            raise ConditionError(f"expected a description and labelled example lines in the condition of "
                                 f"{condition.task!r}; found {'no description' if not condition.text else 'no example lines'}")
        tok, end = self.tokenizer(), completion.end_of_turn(self.tokenizer())
        msgs, ids, positions, text = [], [], [], ""
        for i, (x, y) in enumerate(pairs):
            msgs.append({"role": "user", "content": f"{condition.text}\n\n{x}" if i == 0 else x})
            prompt = completion.prompt_text(tok, msgs)  # the conversation so far, the assistant's turn opened
            if not prompt.startswith(text):
                raise ConfigError("expected the chat template to render a conversation as the prefix of its continuation")
            ids += tok(prompt[len(text) :], add_special_tokens=False)["input_ids"]
            positions.append(len(ids) - 1)
            ids += tok(y + end, add_special_tokens=False)["input_ids"]  # tokenised as the training rows' answers are
            text = prompt + y + end
            msgs.append({"role": "assistant", "content": y})
        parts = decoder_parts(self.base_model())
        x = torch.tensor(ids)[None]  # (1, T)
        h = run_layers(parts, parts.embed(x), torch.ones_like(x), parts.layers[: len(parts.layers) // 2])  # (1, T, D)
        return h[0, positions]  # (K, D)

    def prompt_tokens(self, task: str, split: str = "test", context: Context | None = None, limit: int | None = None) -> float:
        """Mean prompt tokens per query (the answer not counted): the inference cost a context adds."""
        d = self.encode(task, split, context, limit=limit)
        return (d.x[:, 1].sum(1) - (d.y != completion.IGNORE).sum(1)).float().mean().item()

    # ---- scoring -------------------------------------------------------------------------------------------------
    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(N, V, A) logits of the answer positions, class dimension second as F.cross_entropy(logits, y) expects
        with y (N, A): that call is the mean loss per answer token. x: tokens (N, 2, L) run the whole model; cached
        prefix states (N, L, D + 2) from `data` run only the top layers: the same logits at answer tokens while the prefix is
        frozen, and 0 at the window's other positions (the loss ignores them; the LM head never runs there)."""
        if not x.is_floating_point():
            return completion.answer_logits(model, x, self.answer_tokens).transpose(1, 2)
        if self.top_layers is None:
            raise ConfigError("expected tokens (N, 2, L): this suite adapts every layer (top_layers=None) and caches no "
                              f"prefix states; found a floating-point tensor {tuple(x.shape)}")
        return top_logits(model, x, self.cut(), self.answer_tokens).transpose(1, 2)

    def _shares_prefix(self, model: nn.Module) -> bool:
        """Whether `model`'s embeddings and prefix layers are the base model's own parameters (the same tensors), so
        that the cached prefix states are its own."""
        ours, theirs = decoder_parts(self.base_model()), decoder_parts(model)
        pick = lambda p: list(p.embed.parameters()) + list(p.layers[: self.cut()].parameters())  # noqa: E731
        a, b = pick(ours), pick(theirs)
        return len(a) == len(b) and all(x is y for x, y in zip(a, b))

    def _answer_logits(self, model: nn.Module, x: torch.Tensor, answer_tokens: int) -> torch.Tensor:
        """(N, A, V): `forward` with the answer positions second, as completion's teacher-forced passes take it."""
        return self.forward(model, x).transpose(1, 2)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, data: TaskData, batch: int = 16) -> float:
        """Teacher-forced exact match in percent: the answer's own tokens are the greedy ones (see the module
        docstring); on tokens or on cached prefix states."""
        hits = completion.token_matches(model, data, batch, self._answer_logits)
        return 100.0 * hits.float().mean().item()

    def _scored(self, task: str, split: str, context: Context | None, wording: Wording, limit: int | None) -> TaskData:
        """The tokens a score is computed on (the cached `tokens` when it is the whole split in the adapter's context)."""
        if context is None and limit is None:
            return self.tokens(task, split)
        return self.encode(task, split, context, wording, limit)

    def exact_match(self, model: nn.Module, task: str, split: str = "test", context: Context | None = None,
                    wording: Wording = "eval", limit: int | None = None, batch: int = 16) -> float:
        """Fraction of the split's queries whose greedy completion is exactly the answer. With top_layers and no
        context, the teacher-forced pass runs on the cached prefix states (the top layers only): valid for the base
        model, merged with or wrapping any adapter of this suite's layout, whose LoRA stays above the cut; any other
        model (a copy, or one whose prefix weights were trained) is teacher-forced on tokens through every layer.
        context None: the adapter's."""
        answers = [y for _, y in self.examples(task, split)[:limit]]
        tokens = self._scored(task, split, context, wording, limit)
        teacher, logits = None, None
        if context is None and self.top_layers is not None and self._shares_prefix(model):
            states = self.data(task, split)
            teacher = TaskData(states.x[:limit], states.y[:limit])
            logits = self._answer_logits
        hits = completion.exact_matches(model, self.tokenizer(), tokens, answers, batch, teacher=teacher, logits=logits)
        return hits.float().mean().item()

    def answer_loss(self, model: nn.Module, task: str, split: str = "test", context: Context | None = None,
                    wording: Wording = "eval", limit: int | None = None, batch: int = 16) -> float:
        """Mean cross-entropy per answer token (end of turn included) over the split's queries."""
        return completion.answer_loss(model, self._scored(task, split, context, wording, limit), batch)

    def complete(self, model: nn.Module, task: str, split: str = "test", context: Context | None = None,
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
