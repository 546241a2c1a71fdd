"""The held-out study: k-fold over tasks, every task evaluated as unseen exactly once, every method in the same run.

Per fold, generators and baselines see only the fold's training tasks (asserted); each test task is scored by
  base        the base model
  finetuned   its own fine-tuned LoRA (best-validation checkpoint): the reference the gap is measured to
  generated   the default generator (hyper, task objective) from the task's condition
  hyper_recon the same hypernetwork trained to reconstruct zoo adapters instead (the objective ablation)
  pdiff       parameter autoencoder + latent diffusion (mean over its samples)
  nearest     the best-validation adapter of the zoo task whose condition is nearest in the generator's embedding
  merge       similarity-weighted merge of the k nearest zoo adapters (PEFT add_weighted_adapter); k and the
              combination type are chosen on the fold's training tasks (leave-one-out, validation split)
  multitask   one LoRA trained on the pooled data of all training tasks
Gap recovered per task = (method − base) / (finetuned − base), on the test split.
Shapes: T tasks, P adapter size, Z condition embedding size.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.conditions import Condition
from loragen.errors import LoragenError
from loragen.evaluate.merge import COMBINATIONS, ZooMerger, similarity_weights
from loragen.evaluate.stats import bootstrap_ci
from loragen.finetune import FinetuneConfig, LrSchedule, multitask, validation_curve
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.generators.pdiff import PDiffConfig, PDiffGenerator
from loragen.progress import progress_bar
from loragen.suites.suite import Fold, Suite, TaskData, rng
from loragen.zoo.collect import collect
from loragen.zoo.workers import RayConfig
from loragen.zoo.store import Zoo

METHODS = ("generated", "hyper_recon", "pdiff", "nearest", "merge", "multitask")


@dataclass
class UnseenConfig:
    folds: int = 5  # k
    hyper: HyperConfig = field(default_factory=HyperConfig)  # the default generator (task objective)
    pdiff: PDiffConfig | None = field(default_factory=PDiffConfig)  # None: skip the pdiff baseline
    recon_steps: int = 2000  # hyper_recon optimiser steps (same network, recon objective); 0 skips it
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # the zoo and reference fine-tunes
    multitask_steps: int = 3000  # multi-task LoRA steps over the pooled training tasks
    pdiff_samples: int = 5  # adapters pdiff generates per condition (their mean accuracy is reported)
    merge_k: tuple[int, ...] = (2, 4, 8)  # candidate neighbour counts for merges
    merge_val_tasks: int = 16  # training tasks used (leave-one-out) to choose the merge's k and combination
    warm_tasks_per_fold: int | None = 2  # test tasks per fold fine-tuned from scratch / generated / nearest; None: all
    warm_every: int = 10  # steps between validation checks on the warm-start curves
    warm_until_target: bool = False  # True: warm starts stop once they reach the target (all the ratio needs)
    # warm starts (from the generated and the nearest adapter) fine-tune with this lr schedule (multiples of finetune.lr:
    # a ramp up to a peak, then a fall back to 1); fine-tuning from LoRA's init keeps finetune.lr, chosen for it. The
    # schedule is chosen for the generated start on validation tasks (select_hyper.py --warm-start for text-topics);
    # the nearest start shares it
    warm_schedule: LrSchedule = field(default_factory=LrSchedule)
    # the condition a warm start generates from: None, the zero-shot one (the suite's K examples); K, K examples of the
    # task's training split, the data the warm start fine-tunes on anyway (all of them if there are fewer)
    warm_examples: int | None = None
    min_gap: float = 2.0  # points: tasks whose fine-tuning gains less over base are left out of the ratios
    seeds: tuple[int, ...] = (0,)  # hyper training seeds; the first is the main run, the others give the spread
    condition_draws: int = 1  # draws of each test task's condition exemplars; methods that read it score their mean
    generator_only: bool = False  # the hyper generator and the multi-task LoRA also train on the fold's generator-only tasks


def adapter_accuracy(suite: Suite, base, adapter: Adapter | None, data: TaskData) -> float:
    if adapter is None:
        return suite.accuracy(base, data)
    with merged(base, adapter):
        return suite.accuracy(base, data)


def load_or_fit(cls, folder: Path, fit, config, tasks: list[str]):
    """A generator from `folder` when it was trained with `config` (a dataclass) on `tasks`, else fit it there. A stored
    config that predates a field was trained with that field's default, and is compared so."""
    if (folder / "generator.json").exists():
        meta = json.loads((folder / "generator.json").read_text())
        stored = {"config": {**asdict(type(config)()), **(meta.get("config") or {})}, "tasks": meta.get("tasks")}
        if json.loads(json.dumps(stored)) == json.loads(json.dumps({"config": asdict(config), "tasks": tasks})):
            return cls.load(folder)
    return fit()


def load_or_fit_recon(hyper: HyperConfig, steps: int, suite: Suite, zoo: Zoo, tasks: list[str], folder: Path,
                      show: bool) -> HyperGenerator:
    """The hyper_recon ablation: the `hyper` network trained `steps` steps to reconstruct `zoo`'s adapters of `tasks`
    (the recon objective), from `folder` when it was trained so, else fit there."""
    cfg = replace(hyper, objective="recon", steps=steps)
    return load_or_fit(HyperGenerator, folder,
                       lambda: HyperGenerator.fit(cfg, suite=suite, tasks=tasks, zoo=zoo, out=folder, show=show), cfg, tasks)


def load_or_train_multitask(suite: Suite, base, layout, tasks: list[str], cfg: FinetuneConfig, folder: Path) -> Adapter:
    """The multi-task LoRA of `tasks` from `folder` when it was trained on them with `cfg`, else trained and saved there."""
    want = {"trained_on": list(tasks), "config": asdict(cfg)}
    if (folder / "adapter_config.json").exists():
        adapter = Adapter.load(folder)
        if {k: adapter.meta.get(k) for k in want} == json.loads(json.dumps(want)):
            return adapter
    adapter = multitask(suite, base, layout, list(tasks), cfg)
    adapter.meta |= want
    adapter.save(folder, overwrite=True)
    return adapter


class FoldRun:
    """Everything one fold trains, and the scoring of its test tasks."""

    def __init__(self, suite: Suite, zoo: Zoo, fold: Fold, cfg: UnseenConfig, out: Path, show: bool):
        self.suite, self.fold, self.cfg, self.out, self.show = suite, fold, cfg, out, show
        self.base = suite.base_model()
        self.zoo = zoo.subset(list(fold.train))
        self.fold.check_unseen(self.zoo.tasks(), "the fold's zoo")
        self._hypers: dict[int, HyperGenerator] = {}  # by training seed: loaded or fitted once per fold

    # ---- training ---------------------------------------------------------------------------------------------
    @property
    def training_tasks(self) -> list[str]:
        """What the hyper generator and the multi-task LoRA train on: the fold's training tasks, and its generator-only
        tasks (Fold.generator_only: more tasks from the same training sources, not in the zoo) when the study uses them."""
        return list(self.fold.train) + (list(self.fold.generator_only) if self.cfg.generator_only else [])

    def hyper(self, seed: int) -> HyperGenerator:
        if seed in self._hypers:
            return self._hypers[seed]
        cfg = HyperConfig(**{**asdict(self.cfg.hyper), "seed": seed})
        folder = self.out / f"hyper-seed{seed}"
        # the zoo gives the layout (the same rank and alpha as every baseline); the task objective uses no checkpoint
        tasks = self.training_tasks
        gen = load_or_fit(HyperGenerator, folder, lambda: HyperGenerator.fit(cfg, suite=self.suite, tasks=tasks, zoo=self.zoo,
                                                                               out=folder, show=self.show), cfg, tasks)
        self.fold.check_unseen(gen.tasks, "the hyper generator's training tasks")
        self._hypers[seed] = gen
        return gen

    def hyper_recon(self) -> HyperGenerator:
        gen = load_or_fit_recon(self.cfg.hyper, self.cfg.recon_steps, self.suite, self.zoo, self.zoo.tasks(),
                                self.out / "hyper-recon", self.show)
        self.fold.check_unseen(gen.tasks, "the recon generator's training tasks")
        return gen

    def pdiff(self) -> PDiffGenerator:
        folder = self.out / "pdiff"
        gen = load_or_fit(PDiffGenerator, folder, lambda: PDiffGenerator.fit(self.zoo, self.cfg.pdiff, out=folder, show=self.show),
                          self.cfg.pdiff, self.zoo.tasks())
        self.fold.check_unseen(gen.tasks, "the pdiff generator's zoo")
        return gen

    def multitask(self) -> Adapter:
        cfg = replace(self.cfg.finetune, steps=self.cfg.multitask_steps, save_every=min(100, self.cfg.multitask_steps), keep_last=1)
        tasks = self.training_tasks
        self.fold.check_unseen(tasks, "the multi-task LoRA's training tasks")
        return load_or_train_multitask(self.suite, self.base, self.zoo.layout, tasks, cfg, self.out / "multitask")

    # ---- retrieval baselines ------------------------------------------------------------------------------------
    def neighbours(self, gen: HyperGenerator) -> tuple[list[str], torch.Tensor]:
        """Zoo tasks and their condition embeddings (T, Z) under the generator's own condition embedding."""
        tasks = self.zoo.tasks()
        return tasks, gen.embed([self.suite.condition(t) for t in tasks])

    def choose_merge(self, merger: ZooMerger, tasks: list[str], emb_TZ: torch.Tensor) -> dict:
        """k and combination type with the best mean validation accuracy over training tasks, each merged from its
        neighbours among the other training tasks."""
        g = torch.Generator().manual_seed(self.fold.index)
        val_tasks = [tasks[i] for i in torch.randperm(len(tasks), generator=g)[: self.cfg.merge_val_tasks].tolist()]
        scores = {}
        for k in self.cfg.merge_k:
            for comb in COMBINATIONS:
                accs = []
                for t in val_tasks:
                    d = torch.cdist(emb_TZ[tasks.index(t)][None], emb_TZ)[0]
                    d[tasks.index(t)] = float("inf")  # leave the task itself out
                    near = d.argsort()[:k]
                    adapter = merger.merge([tasks[i] for i in near.tolist()], similarity_weights(d[near]), comb)
                    accs.append(adapter_accuracy(self.suite, self.base, adapter, self.suite.data(t, "val")))
                scores[f"k={k},{comb}"] = statistics.mean(accs)
        best = max(scores, key=scores.get)
        k, comb = best.split(",")
        return {"k": int(k[2:]), "combination": comb, "val_scores": scores}

    # ---- scoring ----------------------------------------------------------------------------------------------
    def prepare(self, log) -> None:
        """Train (or load) everything the fold scores with, and choose the merge on its training tasks."""
        cfg = self.cfg
        self.gens = {"generated": self.hyper(cfg.seeds[0])}
        if cfg.recon_steps:
            self.gens["hyper_recon"] = self.hyper_recon()
        self.pdiff_gen = self.pdiff() if cfg.pdiff is not None else None
        self.multi = self.multitask()
        self.tasks, self.emb = self.neighbours(self.gens["generated"])
        self.best = {t: self.zoo.best_adapter(t) for t in self.tasks}
        self.merger = ZooMerger(self.base, self.zoo.layout, self.best)
        self.choice = self.choose_merge(self.merger, self.tasks, self.emb)
        log(f"fold {self.fold.index}: merge chosen on training tasks: k={self.choice['k']}, {self.choice['combination']}")

    def score(self, task: str, reference: Zoo, methods: tuple[str, ...] | None = None) -> dict:
        """Test accuracy of every method on one unseen task; `reference` holds the task's own fine-tunes. Methods that
        read the condition score the mean over `condition_draws` draws of its exemplars (the first draw's nearest
        task is recorded; with more than one draw, the generated adapter's accuracy per draw too)."""
        if task in self.fold.train:
            raise LoragenError(f"fold {self.fold.index}: task {task!r} is one of the fold's training tasks; expected an unseen task")
        test = self.suite.data(task, "test")
        want = lambda m: methods is None or m in methods  # noqa: E731
        acc = lambda a: adapter_accuracy(self.suite, self.base, a, test)  # noqa: E731
        row = {"task": task, "fold": self.fold.index, "params": self.suite.task(task).params,
               "base": acc(None), "finetuned": acc(reference.best_adapter(task))}
        if want("multitask"):
            row["multitask"] = acc(self.multi)
        draws = [self.conditioned(self.suite.condition(task, draw), acc, want) for draw in range(self.cfg.condition_draws)]
        row["nearest_task"] = draws[0]["nearest_task"]
        row |= {k: statistics.mean(d[k] for d in draws) for k in draws[0] if k != "nearest_task"}
        if len(draws) > 1:
            row["generated_draws"] = [d["generated"] for d in draws]
        return row

    def conditioned(self, cond: Condition, acc, want) -> dict:
        """Accuracies (`acc` of an adapter) of the methods that read the condition: nearest, merge, the generators."""
        d = torch.cdist(self.gens["generated"].embed([cond]), self.emb)[0]
        near = d.argsort()[: self.choice["k"]]
        out = {"nearest_task": self.tasks[int(near[0])], "nearest": acc(self.best[self.tasks[int(near[0])]]),
               "merge": acc(self.merger.merge([self.tasks[i] for i in near.tolist()], similarity_weights(d[near]), self.choice["combination"]))}
        for name, gen in self.gens.items():
            if want(name):
                out[name] = acc(gen.generate(cond, 1)[0])
        if self.pdiff_gen is not None and want("pdiff"):
            out["pdiff"] = statistics.mean(acc(a) for a in self.pdiff_gen.generate(cond, self.cfg.pdiff_samples))
        if want("generated_seeds"):
            for seed in self.cfg.seeds[1:]:
                out[f"generated_seed{seed}"] = acc(self.hyper(seed).generate(cond, 1)[0])
        return out

    def run(self, reference: Zoo, log) -> dict:
        self.prepare(log)
        rows = [self.score(t, reference) for t in self.fold.test]
        return {"rows": rows, "merge_choice": self.choice, "warm": self.warm_start(self.gens["generated"], self.best, self.tasks, self.emb)}

    def warm_start(self, gen: HyperGenerator, best: dict[str, Adapter], tasks: list[str], emb: torch.Tensor) -> list[dict]:
        """Fine-tuning curves from LoRA's init, from the generated adapter (and from those of the other hyper training
        seeds, `generated_seed<s>`: the spread) and from the nearest zoo adapter, on the first `warm_tasks_per_fold`
        inside test tasks of the fold (None: all of them): steps and seconds until validation accuracy reaches 95% of
        the accuracy the run from scratch settles at (`warm_curves`, `reach`)."""
        inside = [t for t in self.fold.test if self.suite.task(t).params.get("where", "inside") == "inside"]
        warm = self.cfg.warm_schedule
        out = []
        for t in inside[: self.cfg.warm_tasks_per_fold]:
            cond = warm_condition(self.suite, t, self.cfg.warm_examples)
            near = tasks[int(torch.cdist(gen.embed([self.suite.condition(t)]), emb)[0].argmin())]
            starts = {"generated": (gen.generate(cond, 1)[0], warm), "nearest": (best[near], warm)}
            starts |= {f"generated_seed{s}": (self.hyper(s).generate(cond, 1)[0], warm) for s in self.cfg.seeds[1:]}
            curves, target, hits = warm_curves(self.suite, self.base, self.zoo.layout, t, self.cfg.finetune, starts,
                                               self.cfg.warm_every, self.cfg.warm_until_target)
            out.append({"task": t, "target_val_acc": target, "reach": hits, "curves": curves})
        return out


def warm_condition(suite: Suite, task: str, examples: int | None) -> Condition:
    """The condition a warm start generates from (UnseenConfig.warm_examples): the zero-shot one, or `examples` drawn
    from the task's training split (`condition_pool`)."""
    if examples is None:
        return suite.condition(task)
    return suite.condition_pool(task).subset(examples, rng(suite.name, task, "warm-examples"))


def warm_curves(suite: Suite, base, layout, task: str, cfg: FinetuneConfig,
                starts: dict[str, tuple[Adapter, LrSchedule]], every: int, until_target: bool = False
                ) -> tuple[dict[str, list[tuple[int, float, float]]], float, dict]:
    """Validation curves of fine-tuning `task` with `cfg` from LoRA's init (constant lr) and from each named start (its
    adapter and lr schedule), checked every `every` steps, and `reach` of them: (curves, target, hits). The run from
    scratch goes the whole way (it sets the target); with `until_target` the starts stop once they reach it."""
    curves = {"scratch": validation_curve(suite, base, layout, task, cfg, every=every)}
    target = reach(curves)[0]
    for k, (adapter, schedule) in starts.items():
        curves[k] = validation_curve(suite, base, layout, task, cfg, init=adapter, every=every,
                                     stop_at=target if until_target else None, schedule=schedule)
    target, hits = reach(curves)
    return curves, target, hits


def reach(curves: dict[str, list[tuple[int, float, float]]], share: float = 0.95) -> tuple[float, dict]:
    """The target, `share` of the accuracy the run from scratch settles at (the mean over the last quarter of its
    checks: the maximum of a noisy curve on a small validation split would reward one lucky check), and per curve
    the first (step, seconds) at or above it (None: never), with the accuracy it starts from."""
    scratch = [acc for _, acc, _ in curves["scratch"]]
    target = share * sum(scratch[-max(1, len(scratch) // 4):]) / max(1, len(scratch) // 4)
    hits = {}
    for k, curve in curves.items():
        step, sec = next(((s, sec) for s, acc, sec in curve if acc >= target), (None, None))
        hits[k] = {"steps": step, "seconds": sec, "start_acc": curve[0][1]}
    return target, hits


def counted_steps(hit: dict, run_steps: int) -> int:
    """A `reach` hit's steps; a run that never reached the target counts as the whole run (`run_steps`)."""
    return run_steps if hit["steps"] is None else hit["steps"]


def recovered(rows: list[dict], method: str, min_gap: float) -> list[float]:
    """Per-task gap recovered by `method`, over tasks whose fine-tuning gains at least `min_gap` points."""
    return [(r[method] - r["base"]) / (r["finetuned"] - r["base"]) for r in rows if r["finetuned"] - r["base"] >= min_gap]


def summarize(rows: list[dict], methods: list[str], min_gap: float, seed: int = 0) -> dict:
    """Mean with 95% bootstrap CI, median, and inside / outside means of gap recovered per method; the paired
    difference generated − nearest (and − merge) with its CI; tasks where generated is > 1 point below base."""
    def where(r):
        return r["params"].get("where", "inside")

    if not recovered(rows, "base", min_gap):
        raise LoragenError(f"no task gains {min_gap} points or more from fine-tuning; gap recovered is undefined for all {len(rows)}")

    out = {"methods": {}, "tasks": len(rows), "tasks_in_ratios": sum(r["finetuned"] - r["base"] >= min_gap for r in rows)}
    for m in methods:
        vals = recovered(rows, m, min_gap)
        inside = recovered([r for r in rows if where(r) == "inside"], m, min_gap)
        outside = recovered([r for r in rows if where(r) != "inside"], m, min_gap)
        out["methods"][m] = {"recovered_mean": statistics.mean(vals), "recovered_ci": list(bootstrap_ci(vals, seed=seed)),
                             "recovered_median": statistics.median(vals),
                             "interpolation": statistics.mean(inside) if inside else None,
                             "extrapolation": statistics.mean(outside) if outside else None,
                             "accuracy_mean": statistics.mean(r[m] for r in rows)}
    for ref in ("base", "finetuned"):
        out["methods"][ref] = {"accuracy_mean": statistics.mean(r[ref] for r in rows)}
    for other in ("nearest", "merge"):
        diff = [g - n for g, n in zip(recovered(rows, "generated", min_gap), recovered(rows, other, min_gap))]
        out[f"paired_vs_{other}"] = {"mean": statistics.mean(diff), "ci": list(bootstrap_ci(diff, seed=seed))}
        for part, inside in (("interpolation", True), ("extrapolation", False)):
            sub = [r for r in rows if (where(r) == "inside") == inside]
            d = [g - n for g, n in zip(recovered(sub, "generated", min_gap), recovered(sub, other, min_gap))]
            if d:
                out[f"paired_vs_{other}"][part] = {"mean": statistics.mean(d), "ci": list(bootstrap_ci(d, seed=seed))}
    out["worse_than_base"] = sum(r["generated"] < r["base"] - 1.0 for r in rows)
    if "generated_draws" in rows[0]:  # the same count for each draw of the exemplars alone
        out["worse_than_base_by_draw"] = [sum(r["generated_draws"][i] < r["base"] - 1.0 for r in rows)
                                          for i in range(len(rows[0]["generated_draws"]))]
    return out


def run_study(suite: Suite, out: Path, cfg: UnseenConfig, show: bool = True, log=print, ray: RayConfig | None = None
              ) -> dict:
    """Collect (or resume) the zoo of every task (`ray`: its fine-tunes as Ray tasks), then run every fold; returns
    rows, fold details and timings."""
    out = Path(out)
    folds = suite.folds(cfg.folds)
    every = sorted({t for f in folds for t in f.train + f.test})
    t0 = time.perf_counter()
    zoo, _ = collect(suite, out / "zoo", every, cfg.finetune, show, ray=ray)
    zoo_s = sum(statistics.mean(e["finetune_s"] for e in zoo.task_entries(t)) for t in zoo.tasks())
    rows, details, fit_s, runs = [], [], [], []
    with progress_bar(show) as bar:
        job = bar.add_task("folds", total=len(folds))
        for fold in folds:
            run = FoldRun(suite, zoo, fold, cfg, out / f"fold{fold.index}", show)
            r = run.run(zoo, log)  # the reference fine-tunes of the test tasks come from the full zoo
            runs.append(run)
            rows += r["rows"]
            details.append({"fold": fold.index, "train": len(fold.train), "test": len(fold.test),
                            "merge_choice": r["merge_choice"], "warm": r["warm"]})
            fit_s.append((run.hyper(cfg.seeds[0]).fit_summary or {}).get("fit_s"))
            bar.update(job, advance=1)
    return {"rows": rows, "folds": details, "zoo": zoo, "zoo_collect_s": zoo_s, "hyper_fit_s": fit_s,
            "wall_s": time.perf_counter() - t0, "runs": runs}


def sweep(run: FoldRun, domains: list, out: Path, show: bool = True) -> list[dict]:
    """Score generated / nearest / merge / fine-tuned along a path of new domains (registered on the suite; their
    fine-tunes go to `out`): the interpolation curve of Cond P-Diff / Wild-P-Diff RQ2."""
    names = [run.suite.add_domain(d, heldout=True, where="sweep").name for d in domains]
    reference, _ = collect(run.suite, out, names, run.cfg.finetune, show)
    return [run.score(t, reference, methods=("generated",)) for t in names]
