"""HyperGenerator: a condition -> a LoRA adapter in one forward pass (Text-to-LoRA, HyperFormer).

Two objectives:
- `task` (default; T2L's "SFT" mode): each step draws a batch of training tasks, a condition of each (K random
  exemplars, or one of R encoded few-shot draws for text) and a minibatch of each task's training data; the generated
  adapters are applied per sample with `batched_lora` and the base model's cross-entropy on that data is
  back-propagated into the hypernetwork. No zoo is needed: only task data and conditions.
- `recon`: match the zoo's best-validation checkpoint of each task, in ΔW = (alpha / r) · B A (independent of LoRA's
  A/B gauge) and in the whole modules; the objective of reconstruction-trained generators, kept for comparison.
- `task` with `recon_warm_steps`: `recon` first for that many steps, then `task` (two stages of one resumable fit, each
  with its own optimiser and schedule); the recon stage runs no base model. On llm-tasks' validation probe
  (docs/llm-adapters.md) it fit the training tasks as well as `recon` alone and lost held-out ones, so no suite's
  defaults use it.

A condition is turned into a set of item features (items.py): for images, each exemplar's pixels and moments; for
text, the sentence-transformers embedding of the description + few-shot examples (one item), or each labelled example
read through the base model (`examples`, which also puts class prototypes into the head; `states` for a causal LM,
each line alone, or `icl`, the whole condition as one few-shot conversation).
Items are standardised with the training pools' statistics and pooled by a learned set encoder.
Shapes: T tasks, Tb tasks per step, n examples per task, K items per condition, D item features, P adapter size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from loragen import atomic
from loragen.adapters.adapter import Adapter
from loragen.adapters.batched import batched_lora
from loragen.adapters.layout import LoraLayout
from loragen.conditions import Condition
from loragen.errors import ConditionError, ConfigError, LoragenError
from loragen.generators.hyper.items import ITEM_ENCODERS, PRECISIONS, ConditionItems
from loragen.generators.hyper.network import HyperNetwork
from loragen.process_group import process_group
from loragen.training import train

STATE_FILE, WEIGHTS_FILE, CONFIG_FILE = "train_state.safetensors", "generator.safetensors", "generator.json"


@dataclass
class HyperConfig:
    objective: Literal["task", "recon"] = "task"  # train through the base model's task loss, or match zoo adapters
    encoder: str = "image-set"  # image-set | text | description | examples | states | icl: how a condition becomes items (items.py)
    prototype_head: bool = True  # examples encoder: add class prototypes of the examples to the generated head
    # prototype head: also give class k the bias −s·m·‖c_k‖²/2 (m the training pools' mean feature norm), which makes
    # s·c_k·f + b_k the linear form of a Euclidean nearest-centroid (Proto-MAML's W = 2c, b = −‖c‖²); without it a
    # diffuse class, such as the "rest" of a one-vs-rest task, has a short mean and loses most comparisons. Off: on
    # text-topics' validation tasks it scored 92.0% against 93.3% without (select_hyper.py --suite text-topics)
    prototype_bias: bool = False
    # examples encoder: the base-model pass that reads examples, for training pools and generation alike (items.py;
    # bf16 about halves a cold generate on CPUs with bf16 instructions and multiplies it several times on CPUs without;
    # auto: bf16 where the device has it; `loragen serve` may override it)
    condition_precision: str = "fp32"
    rank: int = 4  # LoRA rank r of generated adapters (a zoo's layout wins when fitting on a zoo)
    lora_alpha: float = 8.0  # LoRA alpha; ΔW = (lora_alpha / r) · B A
    k_exemplars: int = 32  # K: exemplar images (or few-shot examples for text) per condition
    cond_draws: int = 32  # text: R random K-example subsets per task, encoded once; one drawn per step
    # W: set encoder, trunk and head width. On validation tasks 512 led 256 by 2 points at 96 training tasks
    # (select_hyper.py, which chose steps and weight decay) and tied it at the study's 384, where 256 is the most
    # accurate width whose cold generation is ≥ 1000× faster than fine-tuning (select_hyper.py --widths; 512: 712×)
    width: int = 256
    cond_dim: int = 128  # Z: condition embedding size
    module_dim: int = 32  # M: learned per-module embedding size
    steps: int = 3000  # optimiser steps (chosen on validation tasks with width and weight decay)
    recon_warm_steps: int = 0  # task objective: steps of the recon objective first (needs a zoo of the tasks); 0: none
    lr: float = 1e-3  # AdamW learning rate, cosine-decayed to 0
    weight_decay: float = 0.05  # AdamW weight decay
    tasks_per_step: int = 16  # Tb: tasks (conditions) per step
    examples_per_task: int = 32  # n: training examples per task per step (task objective)
    checkpoint_every: int = 500  # optimiser steps between resumable training states
    seed: int = 0

    def __post_init__(self):
        if self.objective not in ("task", "recon"):
            raise ConfigError(f"objective must be 'task' or 'recon'; found {self.objective!r}")
        if self.encoder not in ITEM_ENCODERS:
            raise ConfigError(f"the hyper generator's encoder must be one of {ITEM_ENCODERS}; found {self.encoder!r}")
        if self.condition_precision not in PRECISIONS:
            raise ConfigError(f"condition_precision must be one of {PRECISIONS}; found {self.condition_precision!r}")
        for name in ("rank", "k_exemplars", "cond_draws", "width", "cond_dim", "steps", "tasks_per_step", "examples_per_task",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1; found {getattr(self, name)}")
        if self.recon_warm_steps < 0 or (self.recon_warm_steps and self.objective != "task"):
            raise ConfigError(f"recon_warm_steps must be >= 0, and used with the task objective only; found "
                              f"{self.recon_warm_steps} with objective {self.objective!r}")


class HyperGenerator:
    """Hypernetwork from a condition to a LoRA adapter; see the module docstring for its two objectives."""

    name = "hyper"

    def __init__(self, config: HyperConfig, layout: LoraLayout, tasks: list[str], item_dim: int, suite=None,
                 peft: dict | None = None, full_init: dict[str, torch.Tensor] | None = None, proto_scale: float = 1.0,
                 suite_args: dict | None = None):
        """`suite`: the suite's name, or the suite itself (the examples encoder reads examples through its base model;
        given a name, it builds the suite on first use)."""
        self.config, self.layout, self.tasks = config, layout, list(tasks)
        self.suite = suite if suite is None or isinstance(suite, str) else suite.name
        # what rebuilding the suite by name needs: the same base model (a user's own model folder) and, for a suite
        # whose adapters work with a prompt context (llm-tasks), that context and its number of shots
        model_path, context = getattr(suite, "model_path", None), getattr(suite, "adapter_context", "none")
        self.suite_args = (dict(suite_args or {}) | ({"model_path": str(model_path)} if model_path is not None else {})
                           | ({"adapter_context": context, "shots": suite.shots} if context != "none" else {}))
        self.peft = peft or {}
        head = _head_module(layout) if config.encoder == "examples" else None
        self.items = ConditionItems(config.encoder, suite, head, self.suite_args, config.condition_precision)
        self.proto_module = head if config.prototype_head else None
        self.n_classes = next((f.out_features for f in layout.full if f.name == head), 0)
        self.net = HyperNetwork(layout, item_dim, config.width, config.cond_dim, config.module_dim, full_init, self.proto_module,
                                proto_scale, proto_bias=config.prototype_bias)
        self.buffers = {"item_mean": torch.zeros(item_dim), "item_std": torch.ones(item_dim)}
        self.fit_summary: dict | None = None

    # ---- conditions ---------------------------------------------------------------------------------------------
    def _standardise(self, items_KD: torch.Tensor) -> torch.Tensor:
        if items_KD.shape[-1] != self.buffers["item_mean"].numel():
            raise ConditionError(f"the condition gives items of {items_KD.shape[-1]} features; this generator was trained on "
                                 f"{self.buffers['item_mean'].numel()} (e.g. images of another size than its tasks')")
        return (items_KD - self.buffers["item_mean"]) / self.buffers["item_std"]

    def _inputs(self, raw_BKD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw items (B, K, D) -> the network's inputs: standardised items (B, K, D) and, with a prototype head, the
        class prototypes (B, C, F)."""
        proto = ConditionItems.prototypes(raw_BKD, self.n_classes) if self.proto_module is not None else None
        return self._standardise(raw_BKD), proto

    def _eval(self) -> None:
        if self.net.training:  # eval() walks every module on each call: a tenth of a small generate
            self.net.eval()

    @torch.no_grad()
    def embed(self, conditions: list[Condition]) -> torch.Tensor:
        """(B,) conditions -> (B, Z): the learned condition embedding (used to find the nearest zoo task)."""
        self._eval()
        return torch.cat([self.net.embed(self._standardise(self.items(c))[None]) for c in conditions])

    # ---- generation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _tensors(self, condition: Condition, n: int, seed: int) -> dict[str, torch.Tensor]:
        """Adapter tensors with a leading dim N: the first from the whole condition, the others from bootstrap
        resamples of its exemplars (the spread a different draw of exemplars would give; identical for a one-item
        text condition)."""
        if n < 1:
            raise ConfigError(f"number of adapters to generate must be >= 1; found {n}")
        self._eval()
        items = self.items(condition)  # (K, D)
        sets = [items]
        if n > 1:
            g = torch.Generator().manual_seed(seed)
            sets += [items[torch.randint(len(items), (len(items),), generator=g)] for _ in range(n - 1)]
        # the network pass alone in inference mode (~7% of a cold generate); its outputs are inference tensors, which
        # callers copy (generate's clone, generate_vectors' cat) before anything can record them for autograd
        with torch.inference_mode():
            return self.net(*self._inputs(torch.stack(sets)))

    def generate_vectors(self, condition: Condition, n: int = 1, seed: int = 0) -> torch.Tensor:
        """(N, P) adapters for a condition (see `_tensors`)."""
        tensors = self._tensors(condition, n, seed)
        return torch.stack([self.layout.flatten({k: v[i] for k, v in tensors.items()}) for i in range(n)])

    @torch.no_grad()
    def generate_batch(self, conditions: list[Condition]) -> torch.Tensor:
        """(B, P): one adapter per condition, all in one forward pass (conditions of one size: K exemplars each)."""
        self._eval()
        items = [self.items(c) for c in conditions]
        if len({len(i) for i in items}) != 1:
            raise ConditionError(f"a batch of conditions needs the same number of exemplars each; found {sorted({len(i) for i in items})}")
        tensors = self.net(*self._inputs(torch.stack(items)))
        return torch.stack([self.layout.flatten({k: v[i] for k, v in tensors.items()}) for i in range(len(conditions))])

    def generate(self, condition: Condition, n: int = 1, seed: int = 0) -> list[Adapter]:
        """N adapters for a condition, seen or unseen."""
        meta = {"task": condition.task, "generator": self.name, "seed": seed} | ({"peft": self.peft} if self.peft else {})
        context = self.suite_args.get("adapter_context", "none")
        if context != "none":  # what the adapted model's prompt holds before an input (`loragen chat` sends it)
            shots = (condition.examples or [])[: self.suite_args["shots"]] if context == "few-shot" else []
            meta["prompt_context"] = {"context": context, "description": condition.text, "examples": list(shots)}
        tensors = self._tensors(condition, n, seed)
        return [Adapter(self.layout, {k: v[i].clone() for k, v in tensors.items()}, dict(meta, sample=i)) for i in range(n)]

    # ---- training -----------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, config: HyperConfig, *, suite=None, tasks: list[str] | None = None, zoo=None, out: str | Path | None = None,
            show: bool = True) -> "HyperGenerator":
        """Train on `tasks` (default: the zoo's tasks, or the suite's seen tasks). `task` needs the suite (data and
        base model); `recon` needs the zoo. With `out`, an interrupted fit resumes and the result is written there."""
        torch.manual_seed(config.seed)
        recon_steps = config.steps if config.objective == "recon" else config.recon_warm_steps
        if recon_steps and zoo is None:
            raise ConfigError("the recon objective (or recon_warm_steps) matches zoo adapters; expected a zoo, found none")
        if config.objective == "task" and suite is None:
            raise ConfigError("the task objective trains through the base model's loss; expected a suite, found none")
        if config.encoder == "examples" and suite is None:
            raise ConfigError("the examples encoder reads examples through the base model; expected a suite, found none")
        if tasks is None:
            tasks = zoo.tasks() if zoo is not None else [t.name for t in suite.seen_tasks()]
        if not tasks:
            raise ConfigError("expected at least one training task; found none")
        if zoo is not None:
            missing = sorted(set(tasks) - set(zoo.tasks()))
            if recon_steps and missing:
                raise ConfigError(f"recon training needs every task in the zoo; missing {missing[:5]}")
        base = suite.base_model() if suite is not None else None
        if zoo is not None:
            layout = zoo.layout
        else:
            layout = LoraLayout.from_model(base, suite.target_modules, config.rank, config.lora_alpha, suite.modules_to_save)
        full_init = None
        if base is not None and layout.full:
            named = dict(base.named_parameters())
            full_init = {s.key: named[s.key].detach() for s in layout.full_segments}

        items = ConditionItems(config.encoder, suite, _head_module(layout) if config.encoder == "examples" else None,
                               precision=config.condition_precision)
        g = torch.Generator().manual_seed(config.seed)
        cond_of = (lambda t: zoo.condition(t)) if zoo is not None and config.objective == "recon" else (lambda t: suite.condition_pool(t))
        try:
            pools = [items.pool(cond_of(t), config.k_exemplars, config.cond_draws, g) for t in tasks]  # T × (M, D)
        except ConditionError as e:
            raise LoragenError(f"a training task has no condition the {config.encoder!r} encoder can use: {e}") from e
        flat = torch.cat(pools)
        torch.manual_seed(config.seed)  # the network's init must not depend on what loading the encoders drew
        suite_name = suite.name if suite is not None else (zoo.info.get("suite") if zoo is not None else None)
        peft = zoo.peft_info() if zoo is not None else suite.peft_info()
        # the prototype scale s starts at 20 / (the pools' mean feature norm): logits s · prototype · f of at most ~±20
        proto_scale = 20.0 / flat[:, : flat.shape[1] - _n_classes(layout)].norm(dim=1).mean().item() if config.encoder == "examples" else 1.0
        gen = cls(config, layout, tasks, flat.shape[1], suite if suite is not None else suite_name, peft, full_init, proto_scale)
        gen.items = items  # the encoder that read the pools: its model and cache are loaded once
        gen.buffers = {"item_mean": flat.mean(0), "item_std": flat.std(0).clamp_min(1e-3)}
        k = items.per_condition or config.k_exemplars
        tb, n = min(config.tasks_per_step, len(tasks)), config.examples_per_task

        pg = process_group()  # several processes: each computes its slice of the Tb tasks drawn in every process

        def draw_tasks(g: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
            ti = torch.randperm(len(tasks), generator=g)[:tb]  # (Tb,) distinct tasks
            return ti, [torch.randperm(len(pools[t]), generator=g)[:k] for t in ti.tolist()]  # Tb × (K,) items

        def inputs_of(ti: torch.Tensor, sets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
            return gen._inputs(torch.stack([pools[t][s] for t, s in zip(ti.tolist(), sets)]))  # ((Tb, K, D), (Tb, C, F) | None)

        def task_step(step: int, g: torch.Generator) -> torch.Tensor:
            ti, sets = draw_tasks(g)
            idx = [torch.randint(len(data[t].y), (n,), generator=g) for t in ti.tolist()]
            mine = pg.local(tb)
            ti, sets, idx = ti[mine], sets[mine], idx[mine]
            tensors = gen.net(*inputs_of(ti, sets))
            x = torch.cat([data[t].x[i] for t, i in zip(ti.tolist(), idx)])  # (Tb·n, ...)
            y = torch.cat([data[t].y[i] for t, i in zip(ti.tolist(), idx)])
            with batched_lora(base, layout, tensors, per_adapter=n):
                return F.cross_entropy(suite.forward(base, x), y)

        def recon_step(step: int, g: torch.Generator) -> torch.Tensor:
            ti, sets = draw_tasks(g)
            mine = pg.local(tb)
            ti, sets = ti[mine], sets[mine]
            out = gen.net(*inputs_of(ti, sets))
            want = [layout.unflatten(targets[t]) for t in ti.tolist()]
            loss = 0.0
            for m in layout.modules:
                got = m.scaling * out[f"{m.name}.lora_B"] @ out[f"{m.name}.lora_A"]  # (Tb, o, i)
                ref = torch.stack([_delta(w, m) for w in want])
                loss = loss + (got - ref).square().mean() / scale[m.name].clamp_min(1e-12)
            for key, var in full_var.items():
                loss = loss + (out[key] - torch.stack([w[key] for w in want])).square().mean() / var
            return loss / (len(layout.modules) + len(full_var))

        if config.objective == "task":
            base.requires_grad_(False).eval()
            data = [suite.data(t, "train") for t in tasks]
        if recon_steps:
            targets = torch.stack([zoo.best_adapter(t).vector() for t in tasks])  # (T, P)
            scale = {m.name: _delta(layout.unflatten(targets[0]), m).new_tensor(0.0) for m in layout.modules}
            for v in targets:
                ts = layout.unflatten(v)
                for m in layout.modules:
                    scale[m.name] += _delta(ts, m).square().mean() / len(targets)
            full_var = {s.key: targets[:, s.offset : s.offset + s.numel].var().clamp_min(1e-8) for s in layout.full_segments}

        fingerprint = {"config": asdict(config), "tasks": tasks, "layout": layout.to_dict()}
        state = Path(out) / STATE_FILE if out is not None else None
        if state is not None:
            state.parent.mkdir(parents=True, exist_ok=True)
        stages = [("recon", recon_step, recon_steps)] if recon_steps else []
        stages += [("task", task_step, config.steps)] if config.objective == "task" else []
        first, summaries = 0, {}
        for name, step_fn, total in stages:  # a fresh optimiser and schedule per stage; one state file (training.py)
            opt = torch.optim.AdamW(gen.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            summaries[name] = train(f"hyper ({name})", {"net": gen.net}, opt, total, step_fn, first_step=first,
                                    state_path=state, fingerprint=fingerprint, checkpoint_every=config.checkpoint_every,
                                    seed=config.seed, show=show)
            first += total
        gen.fit_summary = summaries[stages[-1][0]] | {"fit_s": sum(v["fit_s"] for v in summaries.values()), "tasks": len(tasks)}
        if len(summaries) > 1:
            gen.fit_summary["stages"] = summaries
        if out is not None and pg.is_main:
            gen.save(out, overwrite=True)
            state.unlink(missing_ok=True)  # only once the result is safely written
        pg.barrier()  # the other processes return once the result is there
        return gen

    # ---- persistence --------------------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write generator.json + generator.safetensors into `path` (other files in the folder stay)."""
        path = Path(path)
        if (path / WEIGHTS_FILE).exists() and not overwrite:
            raise LoragenError(f"{path} already holds a generator; pass overwrite=True (CLI: --overwrite)")
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()} | {f"buf.{k}": v for k, v in self.buffers.items()}
        atomic.save_safetensors(path / WEIGHTS_FILE, tensors)
        atomic.write_json(path / CONFIG_FILE, {"generator": self.name, "config": asdict(self.config), "tasks": self.tasks,
                                               "layout": self.layout.to_dict(), "item_dim": int(self.buffers["item_mean"].numel()),
                                               "suite": self.suite, "suite_args": self.suite_args, "peft": self.peft,
                                               "fit_summary": self.fit_summary})

    @classmethod
    def load(cls, path: str | Path, suite=None) -> "HyperGenerator":
        """A saved generator; `suite` (an object) serves the examples encoder, else the recorded suite is built on use."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise LoragenError(f"expected a trained generator ({CONFIG_FILE}, {WEIGHTS_FILE}) in {path}; found none")
        meta = json.loads((path / CONFIG_FILE).read_text())
        if meta.get("generator") != cls.name:
            raise LoragenError(f"{path} holds a {meta.get('generator')!r} generator; expected {cls.name!r}")
        gen = cls(HyperConfig(**meta["config"]), LoraLayout.from_dict(meta["layout"]), meta["tasks"], meta["item_dim"],
                  suite if suite is not None else meta.get("suite"), meta.get("peft"), suite_args=meta.get("suite_args"))
        t = load_file(str(path / WEIGHTS_FILE))
        gen.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
        gen.buffers = {k[4:]: v for k, v in t.items() if k.startswith("buf.")}
        gen.fit_summary = meta.get("fit_summary")
        return gen


def _head_module(layout: LoraLayout) -> str:
    """The one whole module (classification head) the examples encoder reads features at."""
    if len(layout.full) != 1:
        raise ConfigError(f"the examples encoder reads the input of the base model's head, the one module adapters carry "
                          f"whole; found {len(layout.full)} ({[f.name for f in layout.full]})")
    return layout.full[0].name


def _n_classes(layout: LoraLayout) -> int:
    return layout.full[0].out_features if layout.full else 0


def _delta(tensors: dict[str, torch.Tensor], m) -> torch.Tensor:
    return m.scaling * tensors[f"{m.name}.lora_B"] @ tensors[f"{m.name}.lora_A"]  # (o, i)

