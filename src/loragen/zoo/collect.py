"""Collecting a zoo: fine-tune each task of a suite and append its checkpoints, resuming where a run stopped."""

from __future__ import annotations

from pathlib import Path

from loragen import atomic
from loragen.adapters.layout import LoraLayout
from loragen.errors import ZooError
from loragen.finetune import FinetuneConfig, finetune
from loragen.progress import progress_bar
from loragen.suites.suite import Suite
from loragen.zoo.store import INFO_FILE, Zoo


def collect(suite: Suite, out: str | Path, tasks: list[str], cfg: FinetuneConfig, show: bool = True) -> tuple[Zoo, dict]:
    """Fine-tune `tasks` into the zoo at `out`; tasks already there are skipped. Returns the zoo and a summary."""
    base = suite.base_model()
    layout = LoraLayout.from_model(base, suite.target_modules, cfg.rank, cfg.alpha, suite.modules_to_save)
    for t in tasks:
        suite.task(t)  # unknown names fail before any work
    info = {"suite": suite.name, "finetune": vars(cfg), "k_exemplars": getattr(suite, "k_exemplars", None),
            "peft": suite.peft_info()}
    zoo = Zoo.create(out, layout, info)
    if zoo.info.get("finetune") != info["finetune"] or zoo.info.get("suite") != suite.name:
        raise ZooError(f"{out} was collected from suite {zoo.info.get('suite')!r} with fine-tuning config "
                       f"{zoo.info.get('finetune')}; expected suite {suite.name!r} with {info['finetune']}. "
                       "Resume with the same settings, or use another folder")
    if "peft" in zoo.info and zoo.peft_info() != info["peft"]:
        raise ZooError(f"{out} was collected on base model {zoo.peft_info()['base_model_name_or_path']!r}; expected "
                       f"{info['peft']['base_model_name_or_path']!r}. Resume with the same model, or use another folder")
    if "peft" not in zoo.info:  # a zoo collected before loragen recorded the base model: record it now
        zoo.info["peft"] = info["peft"]
        atomic.write_json(zoo.path / INFO_FILE, zoo.info)
    todo = [t for t in tasks if t not in zoo.tasks()]
    done_before = len(tasks) - len(todo)
    times = []
    with progress_bar(show) as bar:
        job = bar.add_task(f"zoo {Path(out).name}", total=len(todo))
        for t in todo:
            adapters, seconds = finetune(suite, base, layout, t, cfg)
            zoo.add_task(t, adapters, suite.condition_pool(t), {"finetune_s": seconds})
            times.append(seconds)
            bar.update(job, advance=1, description=f"zoo {Path(out).name}: {t} val {adapters[-1].meta['val_acc']:.1f}%")
    summary = {"tasks": len(tasks), "resumed_skipped": done_before, "collected": len(todo),
               "finetune_s_mean": sum(times) / len(times) if times else None}
    return zoo, summary
