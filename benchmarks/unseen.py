"""Unseen conditions, k-fold over tasks: generated adapters against the baselines a user would try for a new task.

    .venv/bin/python benchmarks/unseen.py --suite digits-domains --out runs/bench/unseen-digits [--quick] [--seeds 0,1,2]

Every task is evaluated as unseen exactly once (see loragen.evaluate.unseen for the methods). Writes into --out:
results.json (per-method recovered-gap mean, 95% bootstrap CI, median, interpolation / extrapolation means, the paired
difference generated − nearest / − merge, warm start, cost, the interpolation sweep), results.md and plots/*.png.
Trained pieces (zoo, per-fold generators) stay in --out, so a rerun resumes and reuses them.

    .venv/bin/python benchmarks/unseen.py --suite text-topics --out runs/bench/unseen-text --timing-runs 5

repeats only the cost measurement (cold generation against fine-tuning, interleaved) of a finished study N times with
fold 0's generator, for the spread the machine's state gives it, into --out/timing.json and timing.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from loragen import atomic
from loragen.evaluate.unseen import METHODS, FoldRun, UnseenConfig, counted_steps, recovered, run_study, summarize, sweep
from loragen.finetune import FinetuneConfig, LrSchedule, finetune
from loragen.generators.hyper import HyperConfig
from loragen.generators.pdiff import PDiffConfig
from loragen.evaluate.cost import interleaved_times
from loragen.suites import get_suite
from loragen.suites.defaults import suite_defaults
from loragen.zoo.store import Zoo
from loragen.zoo.workers import RayConfig


def config(suite: str, quick: bool, seeds: tuple[int, ...]) -> tuple[UnseenConfig, dict]:
    """The study's configuration and the suite's arguments (real sizes, or a tiny run for tests)."""
    if suite == "text-topics":
        # the suite's defaults (a condition: description + 16 labelled examples; the generator reads each example
        # through the base model, in bf16 where the CPU has it, and starts the head from class prototypes); sized for
        # 2 CPU cores
        d = suite_defaults("text-topics")
        cfg = UnseenConfig(hyper=HyperConfig(**d.hyper), pdiff=PDiffConfig(**d.pdiff),
                           finetune=FinetuneConfig(rank=2, alpha=4.0, steps=120, lr=2e-3, batch_size=16, keep_last=5, save_every=5),
                           recon_steps=400, multitask_steps=400, merge_val_tasks=8,
                           # fine-tuning from scratch gets there within ~10 steps: check every step (validation is
                           # 20-40 sentences); the warm starts' lr schedule was chosen on validation tasks (select_hyper.py
                           # --warm-start); every test task (the first two of each fold were all topic-vs-rest, the
                           # hardest family), warm starts only until they reach the target
                           warm_tasks_per_fold=None, warm_every=1, warm_schedule=LrSchedule(10.0, 4), warm_until_target=True,
                           # a warm start generates its adapter from the training split it fine-tunes on (120 examples
                           # at most: all of them), not the zero-shot condition's 16: 1.26 mean steps on validation tasks
                           # against 2.14 (select_hyper.py --warm-start --warm-examples none,48,120)
                           warm_examples=120,
                           # a test task's 16 examples move its generated accuracy by up to ~12 points from one draw to
                           # the next (test sets are 16-40 sentences): score the mean over 5 draws
                           condition_draws=5,
                           # topic and group tasks rebuilt from each fold's training sources train the generator too
                           # (no fold could train on one-vs-rest tasks before): fewer warm-start steps on validation tasks
                           # (select_hyper.py --generator-only)
                           generator_only=True)
        suite_kwargs: dict = {}
    else:
        cfg = UnseenConfig()
        # 480 sampled tasks (384 train each fold): on validation tasks of another draw, 96 → 384 training tasks raised
        # generated accuracy by 8 points inside the ranges and 11 outside (select_hyper.py --task-counts)
        suite_kwargs = {"n_tasks": 480, "n_extrapolation": 20}
    cfg = replace(cfg, seeds=seeds)
    if quick:
        cfg = replace(cfg, folds=3, recon_steps=30, multitask_steps=40, merge_k=(2,), merge_val_tasks=3, warm_tasks_per_fold=1, condition_draws=2,
                      hyper=replace(cfg.hyper, steps=40, width=32, cond_dim=16, tasks_per_step=4, examples_per_task=8),
                      pdiff=replace(cfg.pdiff, ae_steps=20, diffusion_steps=20, ae_channels=(8, 8), latent_dim=16, width=32,
                                    depth=1, cond_draws=4, sample_steps=5),
                      finetune=replace(cfg.finetune, steps=40, keep_last=2, save_every=5), pdiff_samples=2)
        if suite == "digits-domains":
            suite_kwargs = {"n_tasks": 9, "n_extrapolation": 3}
    return cfg, suite_kwargs


def sweep_domains(n: int) -> list:
    """Rotation −75° → 75° at fixed thickness 0.25, contrast 0.7, no zoom or shift (ends lie outside the range)."""
    from loragen.suites.digits_domains import Domain

    return [Domain(angle=float(a), thickness=0.25, contrast=0.7) for a in torch.linspace(-75, 75, n).tolist()]


def timing(gen, suite, base, layout, tasks: list[str], ft: FinetuneConfig, n_conditions: int = 10, repeats: int = 5) -> dict:
    """Cold time to an adapter from a raw condition (condition encoding included), alone and in a batch, against
    fine-tuning one adapter (the zoo's recipe) in the same minutes: they alternate (measure.interleaved_times), so
    load from other work on the machine falls on all alike. Each generate round makes one adapter after another for
    `n_conditions` conditions, every one cold (encoder caches cleared first): per adapter, the round's time / n; the
    round's first adapter, right after a fine-tune has filled the CPU caches with other data, is also kept apart.
    Generation is timed as `loragen serve --compile` runs it (`generate_cold_s`; the compiling is timed apart, once) and
    as plain eager PyTorch (`generate_cold_eager_s`); the two are the same where the suite has no compiled path."""
    conds = [suite.condition(t, draw=7) for t in tasks[:n_conditions]]
    first: list[float] = []  # compiled rounds' first adapter

    def cold_round(compiled: bool) -> None:
        gen.items.compiled = compiled
        for i, c in enumerate(conds):
            t0 = time.perf_counter()
            gen.items.clear_cache()  # cold: no cached text embedding or example features
            gen.generate(c, 1)
            if i == 0 and compiled:
                first.append(time.perf_counter() - t0)

    def finetune_one() -> None:
        finetune(suite, base, layout, tasks[0], ft)

    t0 = time.perf_counter()
    cold_round(True)  # compiles where the suite can (the warm-up of `loragen serve --compile`)
    compile_s = time.perf_counter() - t0
    med = interleaved_times({"finetune": finetune_one, "generate": lambda: cold_round(True), "eager": lambda: cold_round(False)},
                            repeats=repeats)  # rounds: warm-up + repeats
    gen.items.compiled = True
    gen.items.clear_cache()
    t0 = time.perf_counter()
    gen.generate_batch(conds)
    return {"finetune_s": med["finetune"], "generate_cold_s": med["generate"] / len(conds),
            "generate_cold_eager_s": med["eager"] / len(conds), "compile_round_s": compile_s,
            "generate_cold_after_finetune_s": statistics.median(first[-repeats:]), "timing_repeats": repeats,
            "generate_batch_s_per_adapter": (time.perf_counter() - t0) / len(conds), "batch": len(conds)}


def plots(out: Path, rows: list[dict], methods: list[str], sweep_rows: list[dict], warm: list[dict], min_gap: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    data = [[100 * v for v in recovered(rows, m, min_gap)] for m in methods]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(methods) + 1), methods)
    ax.axhline(100, ls="--", c="grey", lw=0.8)
    ax.axhline(0, ls=":", c="grey", lw=0.8)
    ax.set_ylabel("gap recovered per unseen task (%)")
    ax.set_title("unseen tasks, k-fold: share of the fine-tuning gain recovered")
    fig.tight_layout()
    fig.savefig(out / "plots" / "recovered.png", dpi=110)
    plt.close(fig)
    if sweep_rows:
        fig, ax = plt.subplots(figsize=(8, 4))
        angles = [r["params"]["angle"] for r in sweep_rows]
        for m in ("finetuned", "generated", "merge", "nearest", "base"):
            ax.plot(angles, [r[m] for r in sweep_rows], marker="o", ms=3, label=m)
        ax.axvspan(-60, 60, color="grey", alpha=0.08, label="sampled range")
        ax.set_xlabel("rotation (degrees); thickness 0.25, contrast 0.7")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=8)
        ax.set_title("interpolation sweep (fold 0's generator and zoo)")
        fig.tight_layout()
        fig.savefig(out / "plots" / "sweep.png", dpi=110)
        plt.close(fig)
    if warm:
        fig, ax = plt.subplots(figsize=(8, 4))
        w = warm[0]
        for k in ("scratch", "generated", "nearest"):  # markers: a warm start at the target from step 0 is one point
            curve = w["curves"][k]
            ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", ms=3, label=f"from {k}")
        ax.axhline(w["target_val_acc"], ls="--", c="grey", lw=0.8, label="target: 95% of where scratch settles")
        ax.set_xlabel("fine-tuning steps")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"warm start on unseen task {w['task']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "plots" / "warm_start.png", dpi=110)
        plt.close(fig)


def markdown(r: dict) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"# Unseen tasks, {r['folds']}-fold over {r['tasks']} tasks ({r['suite']})", "",
             f"Command: `{r['command']}`", "",
             f"Gap recovered = (method − base) / (fine-tuned − base) per task, in %, over the {r['tasks_in_ratios']} tasks "
             f"where fine-tuning gains ≥ {r['min_gap']} points; CI: 95% bootstrap over tasks.", "",
             "| method | test acc | recovered mean [95% CI] | median | interpolation | extrapolation |", "|---|---|---|---|---|---|"]
    for m in ("base", "finetuned"):
        lines.append(f"| {m} | {r['methods'][m]['accuracy_mean']:.1f} | | | | |")
    # best first (results.json stores its keys sorted, so the order of a dict read back from it means nothing)
    scored = [(m, s) for m, s in r["methods"].items() if "recovered_mean" in s]
    for m, s in sorted(scored, key=lambda ms: -ms[1]["recovered_mean"]):
        lines.append(f"| {m} | {s['accuracy_mean']:.1f} | {pct(s['recovered_mean'])} [{pct(s['recovered_ci'][0])}, "
                     f"{pct(s['recovered_ci'][1])}] | {pct(s['recovered_median'])} | {pct(s['interpolation'])} | {pct(s['extrapolation'])} |")
    lines += ["", "Paired difference of gap recovered, generated − baseline (points of %):", "",
              "| vs | all [95% CI] | interpolation | extrapolation |", "|---|---|---|---|"]
    for other in ("nearest", "merge"):
        p = r[f"paired_vs_{other}"]
        part = lambda k: f"{pct(p[k]['mean'])} [{pct(p[k]['ci'][0])}, {pct(p[k]['ci'][1])}]" if k in p else "–"  # noqa: E731
        lines.append(f"| {other} | {pct(p['mean'])} [{pct(p['ci'][0])}, {pct(p['ci'][1])}] | {part('interpolation')} | {part('extrapolation')} |")
    t, w = r["time"], r["warm_start"]
    draws = r["config"].get("condition_draws", 1)
    run_steps = r["config"]["finetune"]["steps"]
    # task by task, beside the ratio of means: how many reach the target within 1/5 of their own steps from scratch
    within = sum(counted_steps(p["generated"], run_steps) <= p["scratch"]["steps"] / 5 for p in w["per_task"])
    at_start = sum(p["generated"]["steps"] == 0 for p in w["per_task"])
    # how soon plain fine-tuning is near its result: steps from scratch to the warm-start target (never: all of them)
    scratch = [counted_steps(p["scratch"], run_steps) for p in w["per_task"]]
    scratch_median, step_s = statistics.median(scratch), t["finetune_s"] / run_steps
    lines += ["", f"- Held-out tasks where generated is more than 1 point below base: {r['worse_than_base']}"
              + (f" (methods that read the condition: mean over {draws} draws of its exemplars; each draw alone: "
                 f"{r['worse_than_base_by_draw']})" if draws > 1 else "") + ".",
              *(["- The generator and the multi-task LoRA (not the zoo baselines, which need zoo adapters) also train on each "
                 "fold's generator-only tasks: topic and group tasks rebuilt from the fold's training sources alone "
                 "(select_hyper.py --generator-only)."]
                if r["config"].get("generator_only") else []),
              f"- Warm start: fine-tuning steps until validation accuracy reaches 95% of the accuracy the run from scratch settles at "
              f"(its mean over the last quarter of {r['config']['warm_every']}-step checks), "
              f"mean from the generated adapter ÷ mean from scratch = {w['steps_ratio']:.3f} (from the nearest adapter: "
              f"{w['nearest_steps_ratio']:.3f}) over {w['tasks']} tasks; runs that never reach it (counted as the full "
              f"{run_steps} steps): {', '.join(f'{k} {v}' for k, v in sorted(w['never_reached'].items()))}; task by task, {within} of {w['tasks']} reach it within 1/5 of "
              f"their steps from scratch ({at_start} from the start). Warm starts fine-tune with {schedule_text(r['config'].get('warm_schedule'))}"
              + (f", from an adapter generated from {r['config']['warm_examples']} examples of the training split (all of them "
                 "if there are fewer) instead of the zero-shot condition" if r["config"].get("warm_examples") else "")
              + ("; by family: " + ", ".join(f"{f} {v['steps_ratio']:.3f} ({v['tasks']})" for f, v in sorted(w["by_family"].items()))
                 if len(w.get("by_family", {})) > 1 else "")
              + (f"; from the generators of hyper training seeds {w['seed_spread']['seeds']}: "
                 + ", ".join(f"{v:.3f}" for v in w["seed_spread"]["steps_ratio"]) if len(w.get("seed_spread", {}).get("seeds", [])) > 1 else "")
              + ".",
              f"- Cost (medians of {t['timing_repeats']} alternating runs): fine-tuning {t['finetune_s']:.2f} s per adapter; generated "
              f"one at a time, cold (condition encoding included) {1000 * t['generate_cold_s']:.2f} ms ({t['speedup_cold']:.0f}× faster"
              + (f", as `loragen serve --compile` runs it; {1000 * t['generate_cold_eager_s']:.2f} ms, "
                 f"{t['finetune_s'] / t['generate_cold_eager_s']:.0f}×, uncompiled; the first round, compiling, took {t['compile_round_s']:.1f} s"
                 if "generate_cold_eager_s" in t else "") + "; "
              f"the first right after a fine-tune {1000 * t['generate_cold_after_finetune_s']:.2f} ms, "
              f"{t['finetune_s'] / t['generate_cold_after_finetune_s']:.0f}×), {1000 * t['generate_batch_s_per_adapter']:.2f} ms "
              f"per adapter in a batch of {t['batch']}; hyper training {t['hyper_fit_s']:.0f} s per fold (median), zoo collection {t['zoo_collect_s']:.0f} s. "
              f"Break-even: {math.ceil(t['break_even_adapters'])} adapters (hyper training alone; {math.ceil(t['break_even_with_zoo'])} counting the zoo).",
              f"- Fine-tuning comes near its result long before its {run_steps} steps: from scratch, validation accuracy reaches "
              f"the warm-start target above after a median of {scratch_median:g} steps (mean {statistics.mean(scratch):.1f}); at "
              f"the recipe's {1000 * step_s:.3g} ms a step that is {scratch_median * step_s:.2f} s, "
              f"{scratch_median * step_s / t['generate_cold_s']:.0f}× the cold generation above (the cost target compares "
              "with the whole recipe, which sets the accuracy the gap is measured to).",
              "- Merge chosen per fold on training tasks: " + ", ".join(f"k={c['k']} {c['combination']}" for c in r["merge_choices"]) + "."]
    if r.get("seed_spread"):
        s = r["seed_spread"]
        lines.append(f"- Generated, hyper training seeds {s['seeds']}: recovered mean {', '.join(pct(v) for v in s['recovered_mean'])} "
                     f"(std {pct(s['std'])}).")
    lines += ["", "![recovered](plots/recovered.png)"]
    if r.get("sweep"):
        lines += ["", "![sweep](plots/sweep.png)"]
    lines += ["", "![warm start](plots/warm_start.png)", ""]
    return "\n".join(lines)


def schedule_text(s: dict | None) -> str:
    """A warm start's lr schedule (finetune.LrSchedule, as the results hold it) in words; None: results from before
    warm starts had a schedule, which fine-tuned at the fine-tuning lr."""
    if s is None:
        return "the fine-tuning lr"
    return (f"{s['peak']:g}× the fine-tuning lr" + (f", ramped up over {s['warmup']} steps" if s["warmup"] else "")
            + (f", falling back to 1× over {s['decay']} steps" if s["decay"] else ""))


def timing_runs(suite, out: Path, cfg: UnseenConfig, n: int) -> None:
    """`timing` n times with fold 0's saved generator and zoo (a finished study in `out`, run with this configuration:
    another would refit the generator here, and time one the study never scored): the spread of the speedup."""
    done = out / "results.json"
    if not done.exists():
        raise SystemExit(f"--timing-runs needs a finished study in {out}; found no results.json there")
    if json.loads(done.read_text()).get("config") != json.loads(json.dumps(asdict(cfg))):
        raise SystemExit(f"--timing-runs needs the configuration the study in {out} ran with; its results.json records "
                         "another (other --seeds, --quick or code): rerun the study first")
    run = FoldRun(suite, Zoo.open(out / "zoo"), suite.folds(cfg.folds)[0], cfg, out / "fold0", show=False)
    gen = run.hyper(cfg.seeds[0])
    runs = [timing(gen, suite, run.base, run.zoo.layout, run.fold.test, cfg.finetune) for _ in range(n)]
    speed = [t["finetune_s"] / t["generate_cold_s"] for t in runs]
    eager = [t["finetune_s"] / t["generate_cold_eager_s"] for t in runs]
    r = {"command": "python " + " ".join(sys.argv), "runs": runs, "speedup_cold": speed,
         "speedup_cold_median": statistics.median(speed), "speedup_cold_eager": eager,
         "speedup_cold_eager_median": statistics.median(eager)}
    atomic.write_json(out / "timing.json", r)
    lines = [f"# Cold generation against fine-tuning, {n} timing runs ({suite.name}, fold 0's generator)", "",
             f"Command: `{r['command']}`", "", "Cold generation as `loragen serve --compile` runs it (compiled; the first round, "
             "compiling, timed apart) and uncompiled; each run alternates the three.", "",
             "| run | fine-tuning (s) | cold generation (ms) | speedup | uncompiled (ms) | speedup | compiling round (s) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {i} | {t['finetune_s']:.2f} | {1000 * t['generate_cold_s']:.2f} | {v:.0f}× | {1000 * t['generate_cold_eager_s']:.2f} | "
              f"{e:.0f}× | {t['compile_round_s']:.1f} |" for i, (t, v, e) in enumerate(zip(runs, speed, eager))]
    lines += ["", f"Median speedup {r['speedup_cold_median']:.0f}× (range {min(speed):.0f}–{max(speed):.0f}×); uncompiled "
              f"{r['speedup_cold_eager_median']:.0f}× ({min(eager):.0f}–{max(eager):.0f}×).", ""]
    atomic.write_bytes(out / "timing.md", "\n".join(lines).encode())
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="digits-domains", choices=["digits-domains", "text-topics"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="tiny configuration (minutes; numbers mean nothing)")
    ap.add_argument("--seeds", default="0", help="hyper training seeds, comma-separated; the first is the main run")
    ap.add_argument("--sweep-points", type=int, default=21, help="digits-domains: points of the rotation sweep (0: none)")
    ap.add_argument("--ray", action="store_true", help="collect the zoo's fine-tunes as Ray tasks on this machine")
    ap.add_argument("--ray-address", default=None, help="... or on a running Ray cluster ('auto', ray://HOST:10001)")
    ap.add_argument("--ray-workers", type=int, default=None, help="with --ray: fine-tunes at once")
    ap.add_argument("--timing-runs", type=int, default=0, help="only repeat a finished study's cost measurement N times")
    ap.add_argument("--render", action="store_true", help="only rewrite a finished study's results.md from its results.json")
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    cfg, suite_kwargs = config(args.suite, args.quick, seeds)
    suite = get_suite(args.suite, **suite_kwargs)
    if args.render:
        md = markdown(json.loads((args.out / "results.json").read_text()))
        return atomic.write_bytes(args.out / "results.md", md.encode())
    if args.timing_runs:
        return timing_runs(suite, args.out, cfg, args.timing_runs)
    ray = RayConfig(args.ray_address, workers=args.ray_workers) if args.ray or args.ray_address else None
    study = run_study(suite, args.out, cfg, ray=ray)
    rows, first = study["rows"], study["runs"][0]
    methods = [m for m in METHODS if m in rows[0]]
    r = {"suite": args.suite, "command": "python " + " ".join(sys.argv), "tasks": len(rows), "folds": cfg.folds,
         "min_gap": cfg.min_gap, **summarize(rows, methods, cfg.min_gap)}
    per_seed = ["generated", *(f"generated_seed{s}" for s in seeds[1:])]  # FoldRun's names for each seed's generator
    if len(seeds) > 1:
        means = [statistics.mean(recovered(rows, k, cfg.min_gap)) for k in per_seed]
        r["seed_spread"] = {"seeds": list(seeds), "recovered_mean": means, "std": statistics.stdev(means)}
    warm = [w for f in study["folds"] for w in f["warm"]]
    starts = ("scratch", "generated", "nearest")
    never = {k: sum(w["reach"][k]["steps"] is None for w in warm) for k in starts}
    finite = {k: [counted_steps(w["reach"][k], cfg.finetune.steps) for w in warm] for k in dict.fromkeys((*starts, *per_seed))}
    family = [w["task"].split("-")[0] for w in warm]  # text-topics: topic, pair, group, polarity, intensity

    def ratio(start: str, fam: str | None = None) -> float:
        keep = [i for i, f in enumerate(family) if fam in (None, f)]
        return statistics.mean(finite[start][i] for i in keep) / max(1e-9, statistics.mean(finite["scratch"][i] for i in keep))

    r["warm_start"] = {"tasks": len(warm), "steps_ratio": ratio("generated"), "nearest_steps_ratio": ratio("nearest"),
                       "by_family": {f: {"tasks": family.count(f), "steps_ratio": ratio("generated", f)} for f in dict.fromkeys(family)},
                       "seed_spread": {"seeds": list(seeds), "steps_ratio": [ratio(k) for k in per_seed]},
                       "never_reached": never, "per_task": [{"task": w["task"], "target_val_acc": w["target_val_acc"], **w["reach"],
                                                               "curves": {k: [c[:2] for c in v] for k, v in w["curves"].items()}}
                                                              for w in warm]}
    t = timing(first.gens["generated"], suite, first.base, first.zoo.layout, first.fold.test, cfg.finetune, repeats=2 if args.quick else 5)
    ft_s = t["finetune_s"]
    # median over folds: one fit slowed by other work on the machine should not move the cost
    fit_s = statistics.median(s for s in study["hyper_fit_s"] if s is not None) if any(study["hyper_fit_s"]) else float("nan")
    r["time"] = {**t, "zoo_finetune_s_mean": statistics.mean(e["finetune_s"] for e in study["zoo"].entries),
                 "speedup_cold": ft_s / t["generate_cold_s"], "hyper_fit_s": fit_s,
                 "zoo_collect_s": study["zoo_collect_s"], "break_even_adapters": fit_s / (ft_s - t["generate_cold_s"]),
                 "break_even_with_zoo": (fit_s + study["zoo_collect_s"]) / (ft_s - t["generate_cold_s"])}
    r["merge_choices"] = [f["merge_choice"] for f in study["folds"]]
    r["fold_sizes"] = [{"train": f["train"], "test": f["test"]} for f in study["folds"]]
    sweep_rows = []
    if args.suite == "digits-domains" and args.sweep_points:
        sweep_rows = sweep(first, sweep_domains(3 if args.quick else args.sweep_points), args.out / "sweep-zoo")
        r["sweep"] = [{"angle": s["params"]["angle"], **{m: s[m] for m in ("base", "finetuned", "generated", "nearest", "merge")}}
                      for s in sweep_rows]
    r["config"] = json.loads(json.dumps(asdict(cfg), default=str))
    r["rows"] = rows
    r["wall_s"] = study["wall_s"]
    atomic.write_json(args.out / "results.json", r)
    plots(args.out, rows, methods, sweep_rows, warm, cfg.min_gap)
    md = markdown(r)
    atomic.write_bytes(args.out / "results.md", md.encode())
    print(md)


if __name__ == "__main__":
    main()
