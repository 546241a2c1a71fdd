"""Evaluate a generator on a suite: every method on every task, seen (in the zoo) and held out (never in the zoo).

Methods per task (accuracy on the task's test split, in percent):
  base            the base model, no adapter
  finetuned       the fine-tuned checkpoint with the best validation accuracy (finetuned_last: the last one);
                  for held-out tasks these come from a reference zoo that the generator never sees
  soup            mean of the task's checkpoints; for held-out tasks the mean of all zoo adapters
  nearest         the last checkpoint of the zoo task whose condition is closest in the generator's embedding
  noise           a zoo checkpoint (the task's own, or the nearest task's) plus noise, at the generated adapters'
                  mean distance to their nearest zoo checkpoint
  generated_mean  mean over N generated adapters
  generated_best  the generated adapter with the best training-split accuracy (Cond P-Diff's protocol)
"""

from __future__ import annotations

import statistics
import time

import torch

from loragen.evaluate.metrics import accuracy, noise_at_novelty, novelty
from loragen.progress import progress_bar
from loragen.suites.suite import Suite
from loragen.zoo.store import Zoo

METHODS = ("base", "finetuned", "finetuned_last", "soup", "nearest", "noise", "generated_mean", "generated_best")


def _best_row(zoo: Zoo, task: str) -> int:
    rows = sorted(zoo.task_entries(task), key=lambda e: e["step"])
    return max(range(len(rows)), key=lambda i: (rows[i]["val_acc"] or 0.0, rows[i]["step"]))


def evaluate(suite: Suite, generator, zoo: Zoo, reference: Zoo | None, n_samples: int = 10, seed: int = 0,
             show: bool = True) -> dict:
    """Run every method on the zoo's tasks (seen) and the reference zoo's tasks (unseen); returns per-task rows,
    per-split means, novelty, timings and the vectors needed for plots."""
    base = suite.base_model()
    layout = zoo.layout
    zoo_MP, zoo_tasks = zoo.all_vectors()
    g, k = torch.Generator().manual_seed(seed), generator.config.k_exemplars
    # (T, E) in the generator's own condition embedding: mean over 8 conditions drawn like the query
    zoo_emb = torch.stack([generator.embed([zoo.condition(t).subset(k, g) for _ in range(8)]).mean(0) for t in zoo.tasks()])
    all_soup = zoo_MP.mean(0)
    plan = [(t, "seen", zoo) for t in zoo.tasks()] + [(t, "unseen", reference) for t in (reference.tasks() if reference else [])]
    rows, generated, gen_times = [], {}, []
    generator.generate_vectors(suite.condition(plan[0][0]), 1, seed)  # warm-up, not timed
    with progress_bar(show) as bar:
        job = bar.add_task("evaluate", total=len(plan))
        for task, split, source in plan:
            test, train = suite.data(task, "test"), suite.data(task, "train")
            acc = lambda v: accuracy(suite, base, layout, v, test)  # noqa: E731
            own = source.vectors(task)  # (N, P) fine-tuned checkpoints, step order
            cond = suite.condition(task)
            near_task = zoo.tasks()[int(torch.cdist(generator.embed([cond]), zoo_emb).argmin())]
            t0 = time.perf_counter()
            gen = generator.generate_vectors(cond, n_samples, seed)  # (N, P)
            gen_times.append((time.perf_counter() - t0) / n_samples)
            gen_acc = [acc(v) for v in gen]
            gen_train = [accuracy(suite, base, layout, v, train) for v in gen]
            nov = novelty(gen, zoo_MP)
            anchor = own[-1] if split == "seen" else zoo.vectors(near_task)[-1]
            noise = noise_at_novelty(anchor, zoo_MP, float(nov.mean()), n=min(n_samples, 5), seed=seed)
            row = {
                "task": task, "split": split, "params": suite.task(task).params, "nearest_task": near_task,
                "base": acc(None), "finetuned": acc(own[_best_row(source, task)]), "finetuned_last": acc(own[-1]),
                "soup": acc(own.mean(0) if split == "seen" else all_soup), "nearest": acc(zoo.vectors(near_task)[-1]),
                "noise": statistics.mean(acc(v) for v in noise), "generated_mean": statistics.mean(gen_acc),
                "generated_best": gen_acc[max(range(len(gen)), key=lambda i: gen_train[i])],
                "generated_all": gen_acc, "novelty": nov.tolist(),
                "finetune_s": statistics.mean(e.get("finetune_s", float("nan")) for e in source.task_entries(task)),
            }
            rows.append(row)
            generated[task] = gen
            bar.update(job, advance=1, description=f"evaluate {task}: gen {row['generated_mean']:.1f}% ft {row['finetuned']:.1f}%")
    t0 = time.perf_counter()
    generator.generate_vectors(suite.condition(plan[0][0]), 1, seed + 1)
    single_s = time.perf_counter() - t0
    return {"rows": rows, "summary": summarize(rows), "generated": generated, "zoo": (zoo_MP, zoo_tasks),
            "time": {"finetune_s_per_adapter": statistics.mean(r["finetune_s"] for r in rows),
                     "generate_s_per_adapter": statistics.mean(gen_times), "generate_s_single": single_s,
                     "n_samples_per_call": n_samples}}


def summarize(rows: list[dict]) -> dict:
    """Per split: the mean of each method over tasks, novelty, and the share of the (finetuned − base) gap recovered."""
    out = {}
    for split in ("seen", "unseen"):
        sel = [r for r in rows if r["split"] == split]
        if not sel:
            continue
        means = {m: statistics.mean(r[m] for r in sel) for m in METHODS}
        gap = means["finetuned"] - means["base"]
        means["gap_recovered"] = {m: (means[m] - means["base"]) / gap if abs(gap) > 1e-9 else None
                                  for m in ("soup", "nearest", "noise", "generated_mean", "generated_best")}
        means["novelty_mean"] = statistics.mean(statistics.mean(r["novelty"]) for r in sel)
        means["tasks"] = len(sel)
        out[split] = means
    return out
