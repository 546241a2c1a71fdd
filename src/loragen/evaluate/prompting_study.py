"""The llm-tasks study: adapters for a causal LM generated from a task's condition, against what a user of an
instruction LM would try instead, k-fold over tasks, every method in the same run.

Per fold, generators and baselines see only the fold's training tasks (asserted). Each held-out (unseen) task, and a
seeded sample of `seen_per_fold` training tasks, is scored by exact match of the greedy completion on its test split:
  zero_shot           the base model with the description in the prompt
  few_shot            the base model with the description and `shots` training examples in the prompt
  finetune            the task's own fine-tuned LoRA (best validation checkpoint of the zoo): the ceiling
  generated           the hyper generator (task objective) from the task's condition, with a held-out paraphrase
  hyper_recon         the same hypernetwork trained to reconstruct the fold's zoo adapters instead (the objective
                      ablation, as in the unseen-conditions study)
  random_description  the same generator, the description replaced by a random string of the same length
  wrong_description   the same generator, the description replaced by a task of another family's
  nearest             the best adapter of the fold's zoo task whose condition is nearest in the generator's embedding
  multitask           one LoRA trained on the pooled data of the fold's training tasks
  pdiff               parameter autoencoder + latent diffusion on the fold's zoo (mean over its samples)
Prompts with a description use held-out paraphrases; an adapted model sees the suite's adapter_context: the input
alone (default), or the description then the input, as zero-shot prompting does. The two controls keep the condition's
example lines: they ask whether the generator reads the description at all (a generator that ignores it is a multi-task
LoRA in disguise); with the description in the adapted model's prompt, only the generator's condition is replaced.
Exact match is a fraction in [0, 1]; "points" below are hundredths of it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from loragen import atomic
from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.conditions import Condition
from loragen.errors import ConfigError, LoragenError
from loragen.evaluate.stats import bootstrap_ci
from loragen.evaluate.unseen import load_or_fit, load_or_fit_recon, load_or_train_multitask
from loragen.finetune import FinetuneConfig
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.generators.pdiff import PDiffConfig, PDiffGenerator
from loragen.progress import progress_bar
from loragen.suites.llm_tasks import LlmTasks
from loragen.suites.suite import Fold, rng
from loragen.zoo.collect import collect
from loragen.zoo.store import Zoo

CONTEXT_FILE = "adapter_context.json"  # in a study folder: the adapter context its adapters were trained in
PROMPTED = ("zero_shot", "few_shot", "finetune")  # scores that do not depend on the fold
METHODS = ("generated", "hyper_recon", "random_description", "wrong_description", "nearest", "multitask", "pdiff") + PROMPTED


@dataclass
class PromptingStudyConfig:
    folds: int = 3  # k
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # the zoo's and the reference fine-tunes
    hyper: HyperConfig = field(default_factory=HyperConfig)  # the generator (task objective)
    pdiff: PDiffConfig | None = field(default_factory=PDiffConfig)  # None: skip the pdiff baseline
    recon_steps: int = 0  # hyper_recon optimiser steps (same network, recon objective on the fold's zoo); 0 skips it
    multitask_steps: int = 300  # steps of the multi-task LoRA over the fold's pooled training tasks
    pdiff_samples: int = 3  # adapters pdiff generates per condition (their mean is reported)
    seen_per_fold: int = 4  # training tasks per fold scored as seen tasks
    test_limit: int | None = None  # test queries per task (None: the whole test split)
    min_gap: float = 0.1  # tasks whose fine-tuning gains less over zero-shot are left out of the per-task gap ratios


def multitask_config(finetune: FinetuneConfig, steps: int) -> FinetuneConfig:
    """The multi-task LoRA's training: the fine-tuning settings, `steps` steps, the last checkpoint kept."""
    return replace(finetune, steps=steps, save_every=max(1, steps // 10), keep_last=1)


def random_description(task: str, length: int) -> str:
    """A seeded random string of lowercase words, `length` characters long: a description that says nothing."""
    g = rng("random-description", task)
    letters = torch.randint(0, 27, (length,), generator=g).tolist()
    return "".join(" " if i == 26 else chr(ord("a") + i) for i in letters).strip() or "x"


def wrong_task(suite: LlmTasks, task: str) -> str:
    """A task of another family, chosen by a seeded draw: whose description stands in for the right one."""
    family = suite.task(task).params["family"]
    others = [t.name for t in suite.tasks() if t.params["family"] != family]
    if not others:
        raise LoragenError(f"the wrong-description control needs a task of another family than {family!r}; found none")
    return others[int(torch.randint(len(others), (1,), generator=rng("wrong-description", task)))]


def control_conditions(suite: LlmTasks, task: str, cond: Condition) -> dict[str, Condition]:
    """The description controls of a task's condition: its text replaced by a random string of the same length
    (random_description) or by another family's task's first held-out description (wrong_description)."""
    return {"random_description": replace(cond, text=random_description(task, len(cond.text))),
            "wrong_description": replace(cond, text=suite.descriptions(wrong_task(suite, task), "eval")[0])}


def study_context(folder: Path) -> str | None:
    """The adapter context a study folder's zoo and generators were trained in: its marker file; 'none' for a study from
    before adapter contexts (a zoo, no marker); None where there is no study yet."""
    path = folder / CONTEXT_FILE
    if path.exists():
        return json.loads(path.read_text())["adapter_context"]
    return "none" if (folder / "zoo").exists() else None


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PromptingStudy:
    """Collects the zoo, scores the fold-independent references once per task, then runs every fold."""

    def __init__(self, suite: LlmTasks, out: Path, cfg: PromptingStudyConfig, show: bool = True):
        self.suite, self.out, self.cfg, self.show = suite, Path(out), cfg, show
        self.base = suite.base_model()
        self.folds = suite.folds(cfg.folds)

    def exact_match(self, adapter: Adapter | None, task: str, context: str | None = None) -> float:
        if adapter is None:
            return self.suite.exact_match(self.base, task, "test", context, limit=self.cfg.test_limit)
        with merged(self.base, adapter):
            return self.suite.exact_match(self.base, task, "test", limit=self.cfg.test_limit)

    def _check_context(self) -> None:
        """Everything in `out` (zoo, generators, scores) was trained and scored in one adapter context: refuse another."""
        found, want = study_context(self.out), self.suite.adapter_context
        if found is not None and found != want:
            held = (f"whose adapted models saw {found!r}" if (self.out / CONTEXT_FILE).exists()
                    else "from before adapter contexts (input alone)")
            raise LoragenError(f"{self.out} holds a study {held}; this suite's adapter_context is {want!r}: use another "
                               "output folder")
        if not (self.out / CONTEXT_FILE).exists():
            atomic.write_json(self.out / CONTEXT_FILE, {"adapter_context": want})

    def references(self, zoo: Zoo, tasks: list[str]) -> dict[str, dict]:
        """zero_shot, few_shot and finetune per task (they do not depend on the fold), kept in references.json."""
        path = self.out / "references.json"
        key = _key([asdict(self.cfg.finetune), self.cfg.test_limit, self.suite.shots, str(self.suite.model_folder()),
                    {t: self.suite.examples(t, "test")[: self.cfg.test_limit] for t in tasks}])
        done = json.loads(path.read_text()) if path.exists() else {}
        done = done if done.get("key") == key else {"key": key, "tasks": {}}
        with progress_bar(self.show) as bar:
            job = bar.add_task("prompting and fine-tuned references", total=len(tasks))
            for t in tasks:
                if t not in done["tasks"]:
                    done["tasks"][t] = {"zero_shot": self.exact_match(None, t, "description"),
                                        "few_shot": self.exact_match(None, t, "few-shot"),
                                        "finetune": self.exact_match(zoo.best_adapter(t), t)}
                    atomic.write_json(path, done)
                bar.update(job, advance=1)
        return done["tasks"]

    def run(self, max_folds: int | None = None) -> dict:
        """The zoo and references over every fold's tasks, then the first `max_folds` folds (None: all k; fewer: a
        partial study, for a run cut short: the next run resumes it)."""
        if max_folds is not None and not 1 <= max_folds <= len(self.folds):
            raise ConfigError(f"max_folds must be in 1..{len(self.folds)}; found {max_folds}")
        t0 = time.perf_counter()
        self._check_context()
        every = sorted({t for f in self.folds for t in f.train + f.test})
        zoo, _ = collect(self.suite, self.out / "zoo", every, self.cfg.finetune, self.show)
        refs = self.references(zoo, every)
        rows, fits, runs = [], [], []
        with progress_bar(self.show) as bar:
            folds = self.folds[:max_folds]
            job = bar.add_task("folds", total=len(folds))
            for fold in folds:
                run = PromptingFold(self, zoo, fold)
                rows += run.rows(refs)
                fits.append({"fold": fold.index, "hyper_fit_s": (run.hyper.fit_summary or {}).get("fit_s"),
                             "train": len(fold.train), "test": len(fold.test)})
                runs.append(run)
                bar.update(job, advance=1)
        return {"rows": rows, "folds": fits, "zoo": zoo, "runs": runs, "wall_s": time.perf_counter() - t0}


class PromptingFold:
    """One fold: the generators and baselines trained on its training tasks, and the scoring of its rows."""

    def __init__(self, study: PromptingStudy, zoo: Zoo, fold: Fold):
        self.study, self.fold, self.suite, self.cfg = study, fold, study.suite, study.cfg
        self.out = study.out / f"fold{fold.index}"
        self.zoo = zoo.subset(list(fold.train))
        self.fold.check_unseen(self.zoo.tasks(), "the fold's zoo")
        train = list(fold.train)
        folder = self.out / "hyper"
        self.hyper = load_or_fit(HyperGenerator, folder,
                                 lambda: HyperGenerator.fit(self.cfg.hyper, suite=self.suite, tasks=train, zoo=self.zoo, out=folder,
                                                            show=study.show), self.cfg.hyper, train)
        self.fold.check_unseen(self.hyper.tasks, "the hyper generator's training tasks")
        self.recon = None
        if self.cfg.recon_steps:
            self.recon = load_or_fit_recon(self.cfg.hyper, self.cfg.recon_steps, self.suite, self.zoo, train,
                                           self.out / "hyper-recon", study.show)
            self.fold.check_unseen(self.recon.tasks, "the recon generator's training tasks")
        self.pdiff = None
        if self.cfg.pdiff is not None:
            folder = self.out / "pdiff"
            self.pdiff = load_or_fit(PDiffGenerator, folder,
                                     lambda: PDiffGenerator.fit(self.zoo, self.cfg.pdiff, out=folder, show=study.show),
                                     self.cfg.pdiff, self.zoo.tasks())
            self.fold.check_unseen(self.pdiff.tasks, "the pdiff generator's zoo")
        self.multi = self._multitask()
        self.zoo_tasks = self.zoo.tasks()
        self.zoo_emb = self.hyper.embed([self.suite.condition(t) for t in self.zoo_tasks])  # (T, Z)

    def _multitask(self) -> Adapter:
        return load_or_train_multitask(self.suite, self.study.base, self.zoo.layout, list(self.fold.train),
                                       multitask_config(self.cfg.finetune, self.cfg.multitask_steps), self.out / "multitask")

    def seen_tasks(self) -> list[str]:
        order = torch.randperm(len(self.fold.train), generator=rng("seen-sample", self.fold.index)).tolist()
        return [self.fold.train[i] for i in order[: self.cfg.seen_per_fold]]

    def score(self, task: str, group: str, refs: dict[str, dict]) -> dict:
        """Every method's exact match on one task; `group` says whether the fold trained on it ('seen') or not."""
        if (group == "unseen") != (task in self.fold.test):
            raise LoragenError(f"fold {self.fold.index}: task {task!r} is not {group} in this fold")
        suite, em = self.suite, self.study.exact_match
        cond = suite.eval_condition(task)
        other = wrong_task(suite, task)
        near = self.zoo_tasks[int(torch.cdist(self.hyper.embed([cond]), self.zoo_emb)[0].argmin())]
        row = {"task": task, "fold": self.fold.index, "group": group, "family": suite.task(task).params["family"],
               "where": suite.task(task).params["where"], "nearest_task": near, "wrong_task": other, **refs[task],
               "generated": em(self.hyper.generate(cond, 1)[0], task),
               **{name: em(self.hyper.generate(c, 1)[0], task) for name, c in control_conditions(suite, task, cond).items()},
               "nearest": em(self.zoo.best_adapter(near), task), "multitask": em(self.multi, task)}
        if self.recon is not None:
            row["hyper_recon"] = em(self.recon.generate(cond, 1)[0], task)
        if self.pdiff is not None:
            row["pdiff"] = statistics.mean(em(a, task) for a in self.pdiff.generate(cond, self.cfg.pdiff_samples))
        return row

    def rows(self, refs: dict[str, dict]) -> list[dict]:
        """The fold's rows (held-out tasks, then the seen sample), kept in rows.json keyed by what they depend on."""
        path = self.out / "rows.json"
        key = _key([asdict(self.cfg), list(self.fold.train), list(self.fold.test), refs])
        if path.exists() and json.loads(path.read_text()).get("key") == key:
            return json.loads(path.read_text())["rows"]
        todo = [(t, "unseen") for t in self.fold.test] + [(t, "seen") for t in self.seen_tasks()]
        rows = []
        with progress_bar(self.study.show) as bar:
            job = bar.add_task(f"fold {self.fold.index}: scoring", total=len(todo))
            for t, group in todo:
                rows.append(self.score(t, group, refs))
                bar.update(job, advance=1, description=f"fold {self.fold.index}: {t} generated {rows[-1]['generated']:.2f}")
        atomic.write_json(path, {"key": key, "rows": rows})
        return rows


def _paired(rows: list[dict], a: str, b: str, seed: int = 0) -> dict:
    diff = [r[a] - r[b] for r in rows]
    lo, hi = bootstrap_ci(diff, seed=seed)
    return {"mean": statistics.mean(diff), "ci": [lo, hi], "tasks": len(diff)}


def summarize(rows: list[dict], min_gap: float, seed: int = 0) -> dict:
    """Per method: exact-match mean and 95% bootstrap CI over held-out tasks, and the seen / unseen means over the same
    task groups for every method; paired differences on held-out tasks; gap recovered; the target checks' inputs."""
    unseen = [r for r in rows if r["group"] == "unseen"]
    seen = [r for r in rows if r["group"] == "seen"]
    if not unseen:
        raise LoragenError("expected held-out tasks among the rows; found none")
    methods = [m for m in METHODS if m in unseen[0]]
    out: dict = {"methods": {}}
    for m in methods:
        vals = [r[m] for r in unseen]
        lo, hi = bootstrap_ci(vals, seed=seed)
        out["methods"][m] = {"exact_match_mean": statistics.mean(vals), "exact_match_ci": [lo, hi],
                             "seen": statistics.mean(r[m] for r in seen) if seen else None, "unseen": statistics.mean(vals),
                             "interpolation": _mean([r[m] for r in unseen if r["where"] == "inside"]),
                             "extrapolation": _mean([r[m] for r in unseen if r["where"] == "outside"]),
                             "categorical": _mean([r[m] for r in unseen if r["where"] == "categorical"])}
    out["paired_vs_few_shot"] = _paired(unseen, "generated", "few_shot", seed)
    out["paired_vs_multitask"] = _paired(unseen, "generated", "multitask", seed)
    out["paired_vs_nearest"] = _paired(unseen, "generated", "nearest", seed)
    out["right_vs_random_description"] = _paired(unseen, "generated", "random_description", seed)
    out["right_vs_wrong_description"] = _paired(unseen, "generated", "wrong_description", seed)
    gap = statistics.mean(r["finetune"] - r["zero_shot"] for r in unseen)
    per_task = [(r["generated"] - r["zero_shot"]) / (r["finetune"] - r["zero_shot"]) for r in unseen
                if r["finetune"] - r["zero_shot"] >= min_gap]
    recovered = {m: statistics.mean(r[m] - r["zero_shot"] for r in unseen) / gap if gap > 0 else None for m in methods}
    out["gap_recovered"] = {"ratio_of_means": recovered["generated"], "per_task_mean": _mean(per_task),
                            "tasks_in_per_task": len(per_task), "min_gap": min_gap,
                            "by_method": recovered}  # the same ratio of means for every method: what prompting alone gets
    if seen:
        out["seen_generated_minus_finetune"] = _paired(seen, "generated", "finetune", seed)
    if "hyper_recon" in unseen[0]:
        out["recon_vs_generated"] = _paired(unseen, "hyper_recon", "generated", seed)
        if seen:
            out["seen_recon_minus_finetune"] = _paired(seen, "hyper_recon", "finetune", seed)
    out["worse_than_zero_shot"] = [r["task"] for r in unseen if r["generated"] < r["zero_shot"] - 0.01]
    out["families"] = {f: {m: statistics.mean(r[m] for r in unseen if r["family"] == f) for m in methods}
                       for f in sorted({r["family"] for r in unseen})}
    return out


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def cold_generation_s(hyper: HyperGenerator, suite: LlmTasks, tasks: list[str], repeats: int = 5) -> float:
    """Median seconds from a raw condition (the tasks' held-out ones, in turn) to an adapter, its encoding included (no
    cached embedding). The condition goes without its task's name, as a user's new task would: the states encoder
    would otherwise read a known task's example lines from the suite's cached prefix states."""
    times = []
    for i in range(repeats):
        cond = replace(suite.eval_condition(tasks[i % len(tasks)]), task=None)
        hyper.items.clear_cache()
        t0 = time.perf_counter()
        hyper.generate(cond, 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
