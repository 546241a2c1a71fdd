"""Collecting a zoo: fine-tune each task of a suite and append its checkpoints, resuming where a run stopped.

The fine-tunes run in this process or as Ray tasks (workers.py); either way this process is the zoo's only writer and
appends the tasks in the order given, so a killed worker, a killed driver or a re-run loses and duplicates nothing.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from loragen.adapters.adapter import Adapter
from loragen.adapters.layout import LoraLayout
from loragen.conditions import Condition
from loragen.errors import ZooError
from loragen.finetune import FinetuneConfig, finetune
from loragen.progress import progress_bar
from loragen.suites.suite import Suite
from loragen.zoo.store import Zoo
from loragen.zoo.workers import RayConfig, make_workers


def finetune_task(task: str, suite: Suite, base: nn.Module, layout: LoraLayout, cfg: FinetuneConfig
                  ) -> tuple[list[Adapter], Condition, float]:
    """One job of a collection: a task's kept checkpoints, its condition pool and the fine-tune's seconds."""
    adapters, seconds = finetune(suite, base, layout, task, cfg)
    return adapters, suite.condition_pool(task), seconds


def collect(suite: Suite, out: str | Path, tasks: list[str], cfg: FinetuneConfig, show: bool = True,
            ray: RayConfig | None = None) -> tuple[Zoo, dict]:
    """Fine-tune `tasks` into the zoo at `out` (a folder or an fsspec URL); tasks already there are skipped. `ray`:
    run the fine-tunes as Ray tasks. Returns the zoo and a summary; raises ZooError after storing every other task
    when some fine-tunes failed (a re-run retries them)."""
    base = suite.base_model()
    layout = LoraLayout.from_model(base, suite.target_modules, cfg.rank, cfg.alpha, suite.modules_to_save)
    for t in tasks:
        suite.task(t)  # unknown names fail before any work
    info = {"suite": suite.name, "finetune": vars(cfg), "k_exemplars": getattr(suite, "k_exemplars", None),
            "peft": suite.peft_info()}
    context = getattr(suite, "adapter_context", "none")  # llm-tasks: what the adapters see before an input
    if context != "none":
        info["adapter_context"] = context
    zoo = Zoo.create(out, layout, info)
    if zoo.info.get("adapter_context", "none") != context:
        raise ZooError(f"{out} holds adapters trained in the prompt context {zoo.info.get('adapter_context', 'none')!r}; "
                       f"expected {context!r}. Resume with the same context, or use another folder")
    if zoo.info.get("finetune") != info["finetune"] or zoo.info.get("suite") != suite.name:
        raise ZooError(f"{out} was collected from suite {zoo.info.get('suite')!r} with fine-tuning config "
                       f"{zoo.info.get('finetune')}; expected suite {suite.name!r} with {info['finetune']}. "
                       "Resume with the same settings, or use another folder")
    if "peft" in zoo.info and zoo.peft_info() != info["peft"]:
        raise ZooError(f"{out} was collected on base model {zoo.peft_info()['base_model_name_or_path']!r}; expected "
                       f"{info['peft']['base_model_name_or_path']!r}. Resume with the same model, or use another folder")
    if "peft" not in zoo.info:  # a zoo collected before loragen recorded the base model: record it now
        zoo.info["peft"] = info["peft"]
        zoo.save_info()
    todo = [t for t in tasks if t not in zoo.tasks()]
    done_before = len(tasks) - len(todo)
    times, failed = [], {}
    name = str(out).rstrip("/").rsplit("/", 1)[-1]
    workers = make_workers(ray) if todo else None
    try:
        with progress_bar(show) as bar:
            job = bar.add_task(f"zoo {name}", total=len(todo))
            for o in (workers.run(finetune_task, todo, suite, base, layout, cfg) if todo else []):
                if o.error is not None:
                    failed[o.key] = o.error
                else:
                    adapters, condition, seconds = o.result
                    zoo.add_task(o.key, adapters, condition, {"finetune_s": seconds})
                    times.append(seconds)
                bar.update(job, completed=len(times) + len(failed),
                           description=f"zoo {name}: {len(times)} finished · {workers.running} running · {len(failed)} failed")
    finally:
        if workers is not None:
            workers.close()
    summary = {"tasks": len(tasks), "resumed_skipped": done_before, "collected": len(times), "failed": sorted(failed),
               "finetune_s_mean": sum(times) / len(times) if times else None}
    if failed:
        first = next(iter(failed.values()))
        listed = "; ".join(f"{t}: {_reason(e)}" for t, e in list(failed.items())[:3])
        raise ZooError(f"{len(failed)} of {len(todo)} fine-tunes failed ({listed}{'; ...' if len(failed) > 3 else ''}); "
                       f"the other {len(times)} tasks are in the zoo: run the same collection again to retry") from first
    return zoo, summary


def _reason(e: BaseException) -> str:
    """The last line of an error (Ray wraps a job's error in its traceback)."""
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else type(e).__name__
