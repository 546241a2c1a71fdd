"""How the hyper generator's size and training length were chosen: on validation tasks, never on test.

digits-domains: selection runs on a separate draw of domains (task_seed 1, same ranges): none of them is a task of
the k-fold study (task_seed 0), so no fold's test task plays any part. Of its 120 inside tasks, every fifth is a
validation task and the other 96 train the generator (the size of a fold's training set).
text-topics: there is no second draw of tasks, so the choice is made inside fold 0's training tasks (nested): those
that use none of fold 1's sources train, those whose first source is in fold 1's group validate; fold 0's test tasks
play no part (asserted). The validation tasks are test tasks of another fold of the study, as in any global choice
made inside a k-fold study; they stay unseen by every generator trained here for their own fold.
Both: candidates are scored by the generated adapters' accuracy on the validation tasks' validation split; the best
wins (text-topics: the best of those whose cold generation is ≥ MIN_SPEEDUP× faster than fine-tuning, the issue's cost
target, as --widths does for digits).

    .venv/bin/python benchmarks/select_hyper.py --out runs/bench/select-hyper
    .venv/bin/python benchmarks/select_hyper.py --suite text-topics --out runs/bench/select-hyper-text
    .venv/bin/python benchmarks/select_hyper.py --task-counts --out runs/bench/select-tasks
    .venv/bin/python benchmarks/select_hyper.py --widths --out runs/bench/select-widths
    .venv/bin/python benchmarks/select_hyper.py --warm-start --out runs/bench/select-warm-decay
    .venv/bin/python benchmarks/select_hyper.py --warm-start --recipes 10:4,10:4:10,10:4:20,10:4:40 --seeds 0,1,2 --out runs/bench/select-warm-seeds
    .venv/bin/python benchmarks/select_hyper.py --warm-start --recipes 10:4 --warm-examples none,48,120 --seeds 0,1,2 --out runs/bench/select-warm-examples
    .venv/bin/python benchmarks/select_hyper.py --generator-only --out runs/bench/select-generator-only

--task-counts (digits-domains): how many training tasks the study should sample. The generator (defaults) is fitted on
the first N of 420 inside tasks of the selection draw for each N in TASK_COUNTS and scored on 24 inside and 24
extrapolation validation tasks of the same draw (task_seed 1: none is a task of the study).
--widths (digits-domains): at 384 training tasks of that draw, the same validation accuracy and the cold cost per width
(see `widths` for the rule).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from loragen import atomic
from loragen.evaluate.unseen import adapter_accuracy
from loragen.finetune import LrSchedule
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.suites import get_suite
from loragen.suites.defaults import suite_defaults

from unseen import config as study_config, timing  # benchmarks/unseen.py (this script's folder is on sys.path)

CANDIDATES = [  # every field that differs between candidates is named, so the grid does not move with HyperConfig's defaults
    dict(width=256, steps=1500, weight_decay=1e-4, tasks_per_step=16, examples_per_task=32),
    dict(width=256, steps=4000, weight_decay=1e-4, tasks_per_step=16, examples_per_task=32),
    dict(width=512, steps=4000, weight_decay=1e-4, tasks_per_step=16, examples_per_task=32),
    dict(width=512, steps=3000, weight_decay=0.05, tasks_per_step=16, examples_per_task=32),
    dict(width=256, steps=4000, weight_decay=1e-4, tasks_per_step=32, examples_per_task=16),
]


# text-topics: the study's configuration (suite defaults) with these changes
TASK_COUNTS = [96, 192, 384]
WIDTHS = [128, 192, 256, 384, 512]
MIN_SPEEDUP = 1000
TEXT_CANDIDATES = [dict(steps=s, condition_precision=p, prototype_bias=False) for p in ("fp32", "bf16") for s in (10, 30)] + [
    dict(steps=100, condition_precision="fp32", prototype_bias=False),
    dict(steps=100, prototype_head=False, condition_precision="fp32", prototype_bias=False)] + [
    dict(steps=s, condition_precision="bf16", prototype_bias=True) for s in (10, 30)]


def study_tasks() -> set[str]:
    """Names of the digits-domains k-fold study's tasks (benchmarks/unseen.py's suite): selection must use none."""
    return {t.name for t in get_suite("digits-domains", **study_config("digits-domains", False, (0,))[1]).tasks()}


def nested(folds: list, j: int) -> tuple[list[str], list[str]]:
    """The nested split every text-topics choice is made on, inside fold 0's training tasks as the study splits: (those
    that use none of fold j's sources, those whose first source is in fold j's group); fold 0's test tasks play no part."""
    inner = [t for t in folds[0].train if t in folds[j].train]
    val = [t for t in folds[0].train if t in folds[j].test]
    assert not set(inner + val) & set(folds[0].test), "selection tasks must not be fold 0's test tasks"
    return inner, val


def split(suite_name: str):
    """(suite, training tasks, validation tasks, the study's default HyperConfig) for the selection."""
    if suite_name == "text-topics":
        d = suite_defaults("text-topics")
        suite = get_suite("text-topics", **d.suite_kwargs)
        inner, val = nested(suite.folds(study_config("text-topics", False, (0,))[0].folds), 1)
        return suite, inner, val, HyperConfig(**d.hyper), TEXT_CANDIDATES
    suite = get_suite("digits-domains", n_tasks=120, n_extrapolation=0, task_seed=1)
    names = [t.name for t in suite.tasks()]
    assert not set(names) & study_tasks(), "selection tasks must not be tasks of the k-fold study"
    val = names[::5]
    return suite, [t for t in names if t not in val], val, HyperConfig(), CANDIDATES


def selection_draw():
    """The digits-domains draw that --task-counts and --widths select on (task_seed 1: none of it is a study task):
    (suite, 24 inside validation tasks, the other inside tasks to train on, 24 extrapolation validation tasks)."""
    suite = get_suite("digits-domains", n_tasks=420, n_extrapolation=24, task_seed=1)
    inside = [t.name for t in suite.tasks() if t.params["where"] == "inside"]
    outside = [t.name for t in suite.tasks() if t.params["where"] == "outside"]
    assert not set(inside + outside) & study_tasks(), "selection tasks must not be tasks of the k-fold study"
    return suite, inside[:24], inside[24:], outside


def best_fast_enough(rows: list[dict], score) -> dict:
    """The rule of every choice here, fixed before the runs: the row with the highest `score` among those whose cold
    generation is at least MIN_SPEEDUP times faster than fine-tuning (a row without a measured "speedup" counts as
    fast enough); if none is, the fastest."""
    fast = [r for r in rows if r.get("speedup", MIN_SPEEDUP) >= MIN_SPEEDUP]
    return max(fast, key=score) if fast else max(rows, key=lambda r: r["speedup"])


def val_accuracy(suite, base, gen: HyperGenerator, val: list[str], outside: list[str]) -> dict[str, float]:
    """Mean validation-split accuracy (%) of the generated adapters on the inside and the extrapolation tasks."""
    return {name: statistics.mean(adapter_accuracy(suite, base, gen.generate(suite.condition(t), 1)[0], suite.data(t, "val"))
                                  for t in tasks) for name, tasks in (("inside", val), ("outside", outside))}


def task_counts(out: Path) -> None:
    """Validation accuracy inside and outside the sampled ranges against the number of training tasks."""
    suite, val, pool, outside = selection_draw()
    base = suite.base_model()
    rows = []
    for n in TASK_COUNTS:
        t0 = time.perf_counter()
        gen = HyperGenerator.fit(HyperConfig(), suite=suite, tasks=pool[:n], show=False)
        acc = val_accuracy(suite, base, gen, val, outside)
        rows.append({"train_tasks": n, "val_inside": acc["inside"], "val_outside": acc["outside"], "fit_s": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    lines = ["# hyper: validation accuracy against the number of training tasks (digits-domains)", "",
             f"Command: `python {' '.join(sys.argv)}`", "",
             f"Selection draw (task_seed 1); {len(val)} inside and {len(outside)} extrapolation validation tasks; mean "
             "validation-split accuracy (%) of the generated adapters; HyperConfig defaults.", "",
             "| training tasks | inside | extrapolation | fit (s) |", "|---|---|---|---|"]
    lines += [f"| {r['train_tasks']} | {r['val_inside']:.2f} | {r['val_outside']:.2f} | {r['fit_s']:.0f} |" for r in rows]
    atomic.write_json(out / "results.json", {"rows": rows})
    atomic.write_bytes(out / "results.md", "\n".join(lines + [""]).encode())
    print("\n".join(lines))


def widths(out: Path) -> None:
    """Validation accuracy and cold cost against the network's width, at the study's fold size (384 training tasks).
    Rule, fixed before the runs: the most accurate width (mean of inside and extrapolation validation accuracy) whose
    cold generation is at least MIN_SPEEDUP times faster than fine-tuning (the issue's cost target) on this machine;
    if none is, the fastest."""
    suite, val, pool, outside = selection_draw()
    pool = pool[: TASK_COUNTS[-1]]
    base, ft = suite.base_model(), study_config("digits-domains", False, (0,))[0].finetune
    rows = []
    for w in WIDTHS:
        t0 = time.perf_counter()
        gen = HyperGenerator.fit(replace(HyperConfig(), width=w), suite=suite, tasks=pool, show=False)
        fit_s = time.perf_counter() - t0
        acc = val_accuracy(suite, base, gen, val, outside)
        t = timing(gen, suite, base, gen.layout, val, ft)
        rows.append({"width": w, "val_inside": acc["inside"], "val_outside": acc["outside"], "fit_s": fit_s,
                     "generate_cold_s": t["generate_cold_s"], "finetune_s": t["finetune_s"],
                     "speedup": t["finetune_s"] / t["generate_cold_s"]})
        print(rows[-1], flush=True)
    score = lambda r: (r["val_inside"] + r["val_outside"]) / 2  # noqa: E731
    chosen = best_fast_enough(rows, score)
    lines = ["# hyper: validation accuracy and cold cost against the width (digits-domains)", "",
             f"Command: `python {' '.join(sys.argv)}`", "",
             f"Selection draw (task_seed 1); {len(pool)} training tasks (a fold's size in the study), {len(val)} inside and "
             f"{len(outside)} extrapolation validation tasks; mean validation-split accuracy (%) of the generated adapters; "
             "cold generation (condition encoding included) against fine-tuning, medians of 5 alternating rounds "
             "(benchmarks/unseen.py's protocol). HyperConfig defaults but the width.", "",
             "| width | inside | extrapolation | cold generation (ms) | fine-tune (s) | speedup | fit (s) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['width']} | {r['val_inside']:.2f} | {r['val_outside']:.2f} | {1e3 * r['generate_cold_s']:.3f} | "
              f"{r['finetune_s']:.2f} | {r['speedup']:.0f}x | {r['fit_s']:.0f} |" for r in rows]
    lines += ["", f"Chosen: width {chosen['width']} (the most accurate of those at least {MIN_SPEEDUP}x faster than fine-tuning; "
              "if none were, the fastest).", ""]
    atomic.write_json(out / "results.json", {"rows": rows, "chosen": chosen, "min_speedup": MIN_SPEEDUP})
    atomic.write_bytes(out / "results.md", "\n".join(lines).encode())
    print("\n".join(lines))


# warm-start lr schedules (peak as a multiple of the fine-tuning lr, ramp-up steps, steps of the fall back to 1×). An
# earlier protocol (checks every 2 steps, a generator without the generator-only tasks, 30 tasks; commit 461be1d)
# compared peaks 1, 3, 10 and 30 with and without a 4-step ramp: 10, ramped over 4, won. This grid asks whether a fall
# back to 1× helps (it was added after 10x runs oscillated below the target on 3 of 186 test-task runs of the study)
WARM_RECIPES = [LrSchedule(1.0), LrSchedule(10.0, 4)] + [LrSchedule(k, 4, d) for k in (10.0, 30.0) for d in (10, 20, 40)]


def recipe_name(s: LrSchedule) -> str:
    return f"x{s.peak:g}" + (f"-w{s.warmup}" if s.warmup else "") + (f"-d{s.decay}" if s.decay else "")


def parse_recipes(text: str) -> list[LrSchedule]:
    """--recipes "10:4,30:4:20" -> [LrSchedule(10.0, 4), LrSchedule(30.0, 4, 20)]."""
    try:
        return [LrSchedule(float(k), *(int(x) for x in rest)) for k, *rest in (r.split(":") for r in text.split(","))]
    except (ValueError, TypeError):
        raise SystemExit(f"--recipes expects peak:warm-up[:decay] triples, comma-separated (e.g. 10:4,30:4:20); found {text!r}") from None


def nested_with_extra(suite, folds: list, groups: list, j: int) -> tuple[list[str], list[str], list[str]]:
    """`nested`'s split for fold j, with generator-only tasks: (training tasks, the generator-only tasks that hold out
    groups 0 and j, validation tasks: `nested`'s and fold 0's generator-only tasks whose first source is in group j,
    the one-vs-rest tasks the suite's own folds cannot give)."""
    inner, val = nested(folds, j)
    extra = list(suite.within_tasks(set(groups[0]) | set(groups[j])))
    val += [t for t in folds[0].generator_only if suite.task(t).params["sources"][0] in groups[j]]
    assert not set(extra + val) & set(folds[0].test), "selection tasks must not be fold 0's test tasks"
    assert not set(val) & set(inner + extra), "validation tasks must not be trained on"
    return inner, extra, val


def warm_recipe(out: Path, recipes: list[LrSchedule] = WARM_RECIPES, seeds: tuple[int, ...] = (0,),
                examples: tuple[int | None, ...] = (None,)) -> None:
    """text-topics: the lr schedule a warm start from the generated adapter fine-tunes with (finetune.LrSchedule).
    Nested inside fold 0's training data as the study splits it (`nested_with_extra`): for each other fold j, the
    study's generator (its configuration, with the generator-only tasks when the study trains on them; one per training
    seed in `seeds`, as the study reports the seeds' spread) is fitted on the tasks that use none of group j's sources
    and validated on those whose first source is in group j. On each, fine-tuning from scratch (the fine-tuning lr,
    constant) and from each seed's generated adapter with each schedule (WARM_RECIPES unless given), generated from
    each condition in `examples` (UnseenConfig.warm_examples: None, the zero-shot condition; K, K training examples),
    checked as the study checks them (benchmarks/unseen.py: `reach`, every `warm_every` steps). Rule, fixed before the
    run: the candidate with the fewest mean steps to the target (95% of where scratch settles; never reached: the whole
    run) over tasks and seeds; ties go to the zero-shot condition, then fewer examples, then the lower peak, then the
    shorter ramp, then the shorter fall."""
    from loragen.evaluate.unseen import counted_steps, warm_condition, warm_curves

    d = suite_defaults("text-topics")
    suite = get_suite("text-topics", **d.suite_kwargs)
    study = study_config("text-topics", False, (0,))[0]
    folds, groups = suite.folds(study.folds), suite.source_groups(study.folds)  # the study's folds: fold 0's test tasks are its
    base, ft, rows = suite.base_model(), study.finetune, []
    candidates = [(r, k) for k in examples for r in recipes]
    names = [recipe_name(r) + ("" if k is None else f"-k{k}") for r, k in candidates]
    for fj in folds[1:]:
        inner, extra, val = nested_with_extra(suite, folds, groups, fj.index)
        train = inner + (extra if study.generator_only else [])
        gens = {seed: HyperGenerator.fit(replace(study.hyper, seed=seed), suite=suite, tasks=train, show=False) for seed in seeds}
        for t in val:
            starts = {(seed, k): g.generate(warm_condition(suite, t, k), 1)[0] for seed, g in gens.items() for k in examples}
            _, target, hits = warm_curves(suite, base, gens[seeds[0]].layout, t, ft,
                                          {f"{n}@{seed}": (starts[seed, k], r) for seed in seeds for n, (r, k) in zip(names, candidates)},
                                          study.warm_every, until_target=True)
            for seed in seeds:
                mine = {k: hits[f"{k}@{seed}"] for k in names} | {"scratch": hits["scratch"]}
                rows.append({"task": t, "seed": seed, "kind": suite.task(t).params["kind"], "inner_fold": fj.index,
                             "train_tasks": len(train), "target_val_acc": target, "start_acc": hits["scratch"]["start_acc"],
                             "generated_start_acc": mine[names[0]]["start_acc"],
                             "start_accs": {k: h["start_acc"] for k, h in mine.items()},
                             "never": [k for k, h in mine.items() if h["steps"] is None],
                             "steps": {k: counted_steps(h, ft.steps) for k, h in mine.items()}})
                print(rows[-1], flush=True)
    keys = ["scratch"] + names
    mean = {k: statistics.mean(r["steps"][k] for r in rows) for k in keys}
    never = {k: sum(k in r["never"] for r in rows) for k in keys}
    kinds = sorted({r["kind"] for r in rows})
    by_kind = {kind: {k: statistics.mean(r["steps"][k] for r in rows if r["kind"] == kind) for k in keys} for kind in kinds}
    by_seed = {seed: {k: statistics.mean(r["steps"][k] for r in rows if r["seed"] == seed) for k in keys} for seed in seeds}
    def rank(c: tuple[str, tuple[LrSchedule, int | None]]) -> tuple:
        name, (r, k) = c
        return mean[name], k is not None, k or 0, r.peak, r.warmup, r.decay

    name, (chosen, chosen_k) = min(zip(names, candidates), key=rank)
    n_tasks = len(rows) // len(seeds)
    lines = ["# hyper: the warm-start lr schedule on validation tasks (text-topics)", "", f"Command: `python {' '.join(sys.argv)}`", "",
             f"{n_tasks} validation tasks, nested in fold 0's training data (see `warm_recipe` in the script), each "
             f"validated with the study's generator (training seeds {list(seeds)}) fitted on tasks that share none of its "
             f"sources. Steps until validation accuracy reaches 95% of where fine-tuning from scratch settles, checked every "
             f"{study.warm_every} step(s) (never reached: counted as {ft.steps}); fine-tuning lr {ft.lr:g}. A schedule "
             "x<peak>-w<ramp>-d<fall>: the lr ramps up to peak × the fine-tuning lr over <ramp> steps, then falls back to 1× "
             "over <fall> steps; -k<K>: the start is generated from K examples of the task's training split instead of the "
             "zero-shot condition. Means over tasks and seeds.", "",
             "| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys),
             "| mean steps | " + " | ".join(f"{mean[k]:.2f}" for k in keys) + " |",
             "| never reached | " + " | ".join(str(never[k]) for k in keys) + " |",
             "| mean start accuracy | " + " | ".join(f"{statistics.mean(r['start_accs'][k] for r in rows):.1f}" for k in keys) + " |"]
    if len(seeds) > 1:
        lines += [f"| seed {seed} | " + " | ".join(f"{by_seed[seed][k]:.2f}" for k in keys) + " |" for seed in seeds]
    lines += [f"| {kind} ({sum(r['kind'] == kind for r in rows) // len(seeds)}) | "
              + " | ".join(f"{by_kind[kind][k]:.2f}" for k in keys) + " |" for kind in kinds]
    lines += ["", f"Chosen: {name} (ratio to scratch {mean[name] / mean['scratch']:.3f}; the fewest mean steps; ties: the "
              "zero-shot condition, then fewer examples, the lower peak, the shorter ramp, the shorter fall).", "",
              "| task | seed | target | generated starts at | " + " | ".join(keys) + " |", "|---|---|---|---|" + "---|" * len(keys)]
    lines += [f"| {r['task']} | {r['seed']} | {r['target_val_acc']:.1f} | {r['generated_start_acc']:.1f} | "
              + " | ".join(str(r["steps"][k]) for k in keys) + " |" for r in rows]
    atomic.write_json(out / "results.json", {"rows": rows, "mean_steps": mean, "never_reached": never, "by_kind": by_kind,
                                             "by_seed": by_seed, "seeds": list(seeds), "chosen": asdict(chosen),
                                             "chosen_warm_examples": chosen_k, "recipes": [asdict(r) for r in recipes],
                                             "warm_examples": list(examples)})
    atomic.write_bytes(out / "results.md", "\n".join(lines + [""]).encode())
    print("\n".join(lines))


def generator_only(out: Path, steps: tuple[int, ...] = (10, 30)) -> None:
    """text-topics: whether the hyper generator should also train on a fold's generator-only tasks (topic and group
    tasks rebuilt from the fold's training sources, TextTopics.within_tasks), and at which training length. Nested in
    fold 0's training data as `warm_recipe`: for each other fold j, generators are fitted on the fold-0 training tasks
    that use none of group j's sources, with or without the generator-only tasks that hold out groups 0 and j, and
    validated on the fold-0 training tasks whose first source is in group j plus fold 0's generator-only tasks whose
    first source is (the one-vs-rest validation tasks the suite's own folds cannot give). Scored: validation-split
    accuracy of the generated adapter and warm-start steps to the target (the study's recipe). Rule, fixed before the
    run: the fewest mean warm-start steps; ties go to fewer training tasks, then fewer steps."""
    from loragen.evaluate.unseen import counted_steps, warm_curves

    d = suite_defaults("text-topics")
    suite = get_suite("text-topics", **d.suite_kwargs)
    study = study_config("text-topics", False, (0,))[0]
    folds, groups = suite.folds(study.folds), suite.source_groups(study.folds)
    base, ft, rows = suite.base_model(), study.finetune, []
    candidates = {f"{w}-{n}": (w == "with", n) for w in ("without", "with") for n in steps}  # name -> (extra tasks?, steps)
    names = list(candidates)
    for fj in folds[1:]:
        inner, extra, val = nested_with_extra(suite, folds, groups, fj.index)
        gens = {k: HyperGenerator.fit(replace(HyperConfig(**d.hyper), steps=n), suite=suite,
                                      tasks=inner + (extra if with_extra else []), show=False)
                for k, (with_extra, n) in candidates.items()}
        for t in val:
            starts = {k: g.generate(suite.condition(t), 1)[0] for k, g in gens.items()}
            _, target, hits = warm_curves(suite, base, gens[names[0]].layout, t, ft, {k: (a, study.warm_schedule) for k, a in starts.items()},
                                          study.warm_every, until_target=True)
            rows.append({"task": t, "kind": suite.task(t).params["kind"], "inner_fold": fj.index, "target_val_acc": target,
                         "train_tasks": {"without": len(inner), "with": len(inner + extra)},
                         "val_acc": {k: hits[k]["start_acc"] for k in names},
                         "steps": {k: counted_steps(h, ft.steps) for k, h in hits.items()}})
            print(rows[-1], flush=True)
    keys = ["scratch"] + names
    mean = {k: statistics.mean(r["steps"][k] for r in rows) for k in keys}
    acc = {k: statistics.mean(r["val_acc"][k] for r in rows) for k in names}
    kinds = sorted({r["kind"] for r in rows})
    by_kind = {kind: {k: statistics.mean(r["steps"][k] for r in rows if r["kind"] == kind) for k in keys} for kind in kinds}
    chosen = min(names, key=lambda k: (mean[k], *candidates[k]))
    lines = ["# hyper: generator-only training tasks on validation tasks (text-topics)", "", f"Command: `python {' '.join(sys.argv)}`", "",
             f"{len(rows)} validation tasks, nested in fold 0's training data (see `generator_only` in the script). A candidate "
             "is with or without the generator-only tasks, at a number of training steps. Warm start: steps until "
             f"validation accuracy reaches 95% of where fine-tuning from scratch settles, checked every {study.warm_every} "
             f"steps, with the study's lr schedule ({recipe_name(study.warm_schedule)}: `warm_recipe`).", "",
             "| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys),
             "| mean warm-start steps | " + " | ".join(f"{mean[k]:.2f}" for k in keys) + " |"]
    lines += [f"| {kind} ({sum(r['kind'] == kind for r in rows)}) | " + " | ".join(f"{by_kind[kind][k]:.2f}" for k in keys) + " |"
              for kind in kinds]
    lines += ["| validation accuracy of the generated adapter | | " + " | ".join(f"{acc[k]:.1f}" for k in names) + " |", "",
              f"Chosen: {chosen} (ratio to scratch {mean[chosen] / mean['scratch']:.3f}; the fewest mean steps; ties: "
              "without the generator-only tasks, then fewer steps).", ""]
    atomic.write_json(out / "results.json", {"rows": rows, "mean_steps": mean, "val_acc": acc, "by_kind": by_kind, "chosen": chosen})
    atomic.write_bytes(out / "results.md", "\n".join(lines).encode())
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="digits-domains", choices=["digits-domains", "text-topics"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--task-counts", action="store_true", help="digits-domains: validation accuracy against training tasks")
    ap.add_argument("--widths", action="store_true", help="digits-domains: validation accuracy and cold cost against width")
    ap.add_argument("--warm-start", action="store_true", help="text-topics: the warm-start lr schedule on validation tasks")
    ap.add_argument("--generator-only", action="store_true", help="text-topics: train on generator-only tasks too?")
    ap.add_argument("--recipes", default=None, help="--warm-start: lr schedules to compare instead of WARM_RECIPES, as "
                                                     "peak:warm-up[:decay], comma-separated (e.g. 10:4,30:4:20)")
    ap.add_argument("--seeds", default="0", help="--warm-start: the generator's training seeds, comma-separated")
    ap.add_argument("--warm-examples", default="none", help="--warm-start: the conditions to generate the start from, "
                                                            "comma-separated: none (the zero-shot one) or K training examples")
    args = ap.parse_args()
    if args.warm_start:
        return warm_recipe(args.out, WARM_RECIPES if args.recipes is None else parse_recipes(args.recipes),
                           tuple(int(x) for x in args.seeds.split(",")),
                           tuple(None if x == "none" else int(x) for x in args.warm_examples.split(",")))
    if args.generator_only:
        return generator_only(args.out)
    if args.task_counts:
        return task_counts(args.out)
    if args.widths:
        return widths(args.out)
    suite, inner, val, default, candidates = split(args.suite)
    base = suite.base_model()
    # text: candidates differ in the precision of the condition's base-model pass, so the cold cost is part of the rule
    # (as in --widths); it depends on that precision alone and is measured once for each
    timed = args.suite == "text-topics"
    ft, cost, rows = study_config(args.suite, False, (0,))[0].finetune, {}, []
    for kw in candidates:
        cfg = replace(default, **kw)
        t0 = time.perf_counter()
        gen = HyperGenerator.fit(cfg, suite=suite, tasks=inner, show=False)
        fit_s = time.perf_counter() - t0
        accs = [adapter_accuracy(suite, base, gen.generate(suite.condition(t), 1)[0], suite.data(t, "val")) for t in val]
        rows.append({"candidate": kw, "val_accuracy": statistics.mean(accs), "fit_s": fit_s, "train_loss": gen.fit_summary["loss"]})
        if timed:
            if cfg.condition_precision not in cost:
                cost[cfg.condition_precision] = timing(gen, suite, base, gen.layout, val, ft)
            t = cost[cfg.condition_precision]
            rows[-1] |= {"generate_cold_s": t["generate_cold_s"], "finetune_s": t["finetune_s"],
                         "speedup": t["finetune_s"] / t["generate_cold_s"]}
        print(rows[-1], flush=True)
    best = best_fast_enough(rows, lambda r: r["val_accuracy"])
    lines = ["# hyper: choice of size and training length on validation tasks", "",
             f"Command: `python {' '.join(sys.argv)}`", "",
             f"{args.suite}: {len(inner)} training and {len(val)} validation tasks (see the script's docstring for how they are "
             "kept apart from the study's test tasks); mean validation-split accuracy (%) of the generated adapters on the "
             "validation tasks" + ("; cold generation (condition encoding included) against fine-tuning, medians of 5 "
                                   "alternating rounds (benchmarks/unseen.py's protocol), per precision." if timed else "."), "",
             "| candidate | validation acc | train loss | fit (s) |" + (" cold (ms) | speedup |" if timed else ""),
             "|---|---|---|---|" + ("---|---|" if timed else "")]
    for r in rows:
        lines.append(f"| {r['candidate']} | {r['val_accuracy']:.2f} | {r['train_loss']:.4f} | {r['fit_s']:.0f} |"
                     + (f" {1e3 * r['generate_cold_s']:.1f} | {r['speedup']:.0f}x |" if timed else ""))
    rule = (f"the most accurate of those at least {MIN_SPEEDUP}x faster than fine-tuning (if none were, the fastest)"
            if timed else "the most accurate")
    lines += ["", f"Best: {best['candidate']}, {rule} (the configuration it changes: {asdict(default)})", ""]
    atomic.write_json(args.out / "results.json", {"rows": rows, "best": best, "inner_tasks": len(inner), "val_tasks": len(val)})
    atomic.write_bytes(args.out / "results.md", "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
