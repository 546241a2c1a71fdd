"""Does the llm-tasks hyper generator fit its own training tasks, and does fitting them better carry over to held-out
ones? The k-fold study (benchmarks/llm_tasks.py) found it under-trained (docs/llm-adapters.md); this measures how the
learning rate, the training length and the condition encoder move it, on validation items only (so a choice made here
does not touch the study's test items).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/llm_fit.py --out runs/bench/llm-fit [--lrs 1e-4,3e-4,1e-3,3e-3] \
        [--steps 400] [--encoder text|states]

--objective recon: the generator reconstructs the study's zoo adapters (--zoo) instead of training through the LM's
loss; --recon-warm-steps N: N such steps, then the task objective. With a zoo, its fine-tuned adapters are scored on
the same queries (the ceiling). Every run also records `identifiable`: whether MiniLM's embedding tells the tasks'
conditions apart (each task's evaluation condition against training conditions of every task).

Fold 0 of the study's 3 folds (same suite arguments and families): the generator is trained on the fold's training
tasks with the suite's default settings but the lr (and steps) given; then, on `--tasks` seen tasks (drawn from the
fold's training tasks) and as many held-out tasks of the fold, exact match of the greedy completion on the tasks'
validation queries: the generated adapter (from the task's held-out description paraphrase + 8 example lines, as in
the study), and zero-shot / few-shot prompting on the same queries as references. Each run's generator (lr, steps,
encoder) is kept in --out and reused by a rerun. Writes results.json and results.md.

--extra-families F,G: the generator also trains on every task of these families, which the study leaves out (its
fine-tunes learn them poorly, docs/llm-adapters.md), so are never scored; their training examples come from the
training split's atoms like every task's, so no held-out query reaches them. Text-to-LoRA found zero-shot quality to
grow with the number of training tasks; the task objective needs no zoo, so such tasks cost only their prefix states.

--controls: each run also scores the held-out tasks with the generator given a random string and another family's
task's description instead of the right one (the study's random_description / wrong_description,
prompting_study.py): does the generator read the description, or is it a multi-task LoRA in disguise?
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from loragen import atomic
from loragen.adapters.apply import merged
from loragen.adapters.layout import LoraLayout
from loragen.conditions import TextEncoder
from loragen.evaluate.prompting_study import cold_generation_s, control_conditions, multitask_config, study_context
from loragen.evaluate.unseen import load_or_train_multitask
from loragen.generators.hyper import HyperGenerator
from loragen.suites import get_suite
from loragen.suites.llm_tasks import CONTEXTS
from loragen.suites.suite import rng
from loragen.zoo.store import Zoo

sys.path.insert(0, str(Path(__file__).parent))
from llm_tasks import CONTEXT_PROSE, config  # noqa: E402  the study's settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3", help="generator learning rates, comma-separated")
    ap.add_argument("--steps", type=int, default=400, help="generator training steps (the suite's default: 400)")
    ap.add_argument("--tasks", type=int, default=8, help="seen and held-out tasks scored (each)")
    ap.add_argument("--encoder", default=None, help="the generator's condition encoder (default: the study's)")
    ap.add_argument("--extra-families", default="", help="families the generator also trains on (never scored), comma-separated")
    ap.add_argument("--recon-warm-steps", type=int, default=None,
                    help="recon steps on the study's zoo before the task objective (default: the study's)")
    ap.add_argument("--objective", default="task", choices=("task", "recon"),
                    help="task (through the LM's loss) or recon (match the zoo's adapters only; needs --zoo)")
    ap.add_argument("--adapter-context", default="none", choices=CONTEXTS,
                    help="what an adapted model's prompt holds before the input (LlmTasks.adapter_context; a new --out)")
    ap.add_argument("--multitask-steps", type=int, default=0,
                    help="also score a multi-task LoRA over the fold's training tasks, this many steps (0: none)")
    ap.add_argument("--controls", action="store_true",
                    help="also score held-out tasks from a random string and from another task's description")
    ap.add_argument("--zoo", type=Path, default=Path("runs/bench/llm-tasks/zoo"),
                    help="the study's zoo (benchmarks/llm_tasks.py collects it): recon targets and the fine-tuned reference")
    args = ap.parse_args()
    cfg, suite_kwargs = config(False)
    extra = [f for f in args.extra_families.split(",") if f]
    if set(extra) & set(suite_kwargs["families"]):
        raise SystemExit(f"--extra-families must be families the study leaves out; found {sorted(set(extra) & set(suite_kwargs['families']))}")
    suite_kwargs |= {"adapter_context": args.adapter_context}
    suite = get_suite("llm-tasks", **suite_kwargs)
    fold = suite.folds(cfg.folds)[0]  # the study's fold 0, whatever the extra tasks
    if extra:  # one suite holds every task (a task's examples depend only on its name and split, not on which families are kept)
        suite = get_suite("llm-tasks", **{**suite_kwargs, "families": list(suite_kwargs["families"]) + extra})
    train = list(fold.train) + [t.name for t in suite.tasks() if t.params["family"] in extra]
    base = suite.base_model()
    order = torch.randperm(len(fold.train), generator=rng("llm-fit-seen", 0)).tolist()
    seen = [fold.train[i] for i in order[: args.tasks]]
    unseen = list(fold.test[: args.tasks])
    limit = suite_kwargs["n_val"]
    em = lambda task, context=None: suite.exact_match(base, task, "val", context, limit=limit)  # noqa: E731

    results_path = args.out / "results.json"
    args.out.mkdir(parents=True, exist_ok=True)
    r = json.loads(results_path.read_text()) if results_path.exists() else {
        "command": "python " + " ".join(sys.argv), "fold": 0, "seen": seen, "unseen": unseen, "train_tasks": len(fold.train),
        "adapter_context": args.adapter_context, "runs": {}}
    if r.get("adapter_context", "none") != args.adapter_context:
        raise SystemExit(f"{args.out} holds runs with adapter context {r.get('adapter_context', 'none')!r}; found "
                         f"--adapter-context {args.adapter_context} (use another --out)")
    if "references" not in r:
        r["references"] = {t: {"zero_shot": em(t, "description"), "few_shot": em(t, "few-shot")} for t in seen + unseen}
        atomic.write_json(results_path, r)
    warm = cfg.hyper.recon_warm_steps if args.recon_warm_steps is None else args.recon_warm_steps
    if args.objective == "recon":
        warm = 0
    uses_zoo = bool(warm) or args.objective == "recon"  # the generator learns from the zoo's adapters
    zoo = Zoo.open(args.zoo) if Zoo.exists(args.zoo) else None
    if zoo is None and uses_zoo:
        raise SystemExit(f"--recon-warm-steps and --objective recon need the study's zoo; found none at {args.zoo} (run "
                         "benchmarks/llm_tasks.py or pass --zoo)")
    if zoo is not None and study_context(args.zoo.parent) == args.adapter_context:  # the fine-tuned adapters on the same queries: the ceiling
        for t in seen + unseen:
            if "finetune" not in r["references"][t]:
                with merged(base, zoo.best_adapter(t)):
                    r["references"][t]["finetune"] = em(t)
        atomic.write_json(results_path, r)
        zoo = zoo.subset(list(fold.train))
        if extra and uses_zoo:
            raise SystemExit("--extra-families with the zoo's adapters: the zoo holds none of the extra families")
    if args.multitask_steps and any("multitask" not in r["references"][t] for t in seen + unseen):
        layout = LoraLayout.from_model(base, suite.target_modules, cfg.finetune.rank, cfg.finetune.alpha, suite.modules_to_save)
        multi = load_or_train_multitask(suite, base, layout, list(fold.train),
                                        multitask_config(cfg.finetune, args.multitask_steps), args.out / "multitask")
        with merged(base, multi):
            for t in seen + unseen:
                r["references"][t]["multitask"] = em(t)
        atomic.write_json(results_path, r)
    if "identifiable" not in r:
        r["identifiable"] = identifiable(suite, [t.name for t in suite.tasks() if t.params["family"] not in extra])
        atomic.write_json(results_path, r)
    for lr in [float(x) for x in args.lrs.split(",")]:
        hyper = replace(cfg.hyper, lr=lr, steps=args.steps, encoder=args.encoder or cfg.hyper.encoder, recon_warm_steps=warm,
                        objective=args.objective)
        key = (f"lr{lr:g}_steps{args.steps}" + ("" if hyper.encoder == cfg.hyper.encoder else f"_{hyper.encoder}")
               + (f"_plus-{'-'.join(extra)}" if extra else "") + (f"_recon{warm}" if warm else "")
               + ("_recon-only" if args.objective == "recon" else ""))
        if key in r["runs"]:
            run = r["runs"][key]
            todo = "generate_cold_ms" not in run or (args.controls and "controls" not in run)
            gen = HyperGenerator.load(args.out / key, suite) if todo else None
            if "generate_cold_ms" not in run:  # runs from before the timing was added
                run["generate_cold_ms"] = cold_ms(gen, suite, unseen)
                atomic.write_json(results_path, r)
            if args.controls and "controls" not in run:
                run["controls"] = controls(gen, suite, base, unseen, em)
                atomic.write_json(results_path, r)
            continue
        if (args.out / key / "generator.json").exists():  # fitted, not yet scored (interrupted, or copied from another --out)
            gen = HyperGenerator.load(args.out / key, suite)
            if gen.config != hyper or sorted(gen.tasks) != sorted(train):
                raise SystemExit(f"{args.out / key} holds a generator of another configuration or task set: remove it")
        else:
            gen = HyperGenerator.fit(hyper, suite=suite, tasks=train, zoo=zoo if uses_zoo else None, out=args.out / key)
        fold.check_unseen(gen.tasks, "the generator's training tasks")
        scores = {}
        for t in seen + unseen:
            (adapter,) = gen.generate(suite.eval_condition(t), 1)
            with merged(base, adapter):
                scores[t] = em(t)
            print(f"{key} {t}: generated {scores[t]:.2f}, few-shot {r['references'][t]['few_shot']:.2f}", flush=True)
        r["runs"][key] = {"command": "python " + " ".join(sys.argv), "hyper": asdict(hyper), "fit": gen.fit_summary,
                          "train_tasks": len(train), "extra_families": extra,
                          "generated": scores, "seen_mean": statistics.mean(scores[t] for t in seen),
                          "unseen_mean": statistics.mean(scores[t] for t in unseen),
                          "generate_cold_ms": cold_ms(gen, suite, unseen)}
        if args.controls:
            r["runs"][key]["controls"] = controls(gen, suite, base, unseen, em)
        atomic.write_json(results_path, r)
    write_report(args.out, r, cfg.hyper.encoder)


def identifiable(suite, tasks: list[str], draws: int = 8) -> dict:
    """Can the text encoder's MiniLM embedding tell the tasks apart? Each task's evaluation condition (held-out
    paraphrase + 8 example lines) against `draws` training conditions of every task (training paraphrases, other
    example draws): the share whose nearest training condition (cosine) is the task's own, or of its family."""
    enc = TextEncoder(with_examples=True)
    g = torch.Generator().manual_seed(0)
    pool = torch.cat([enc.encode([suite.condition_pool(t).subset(suite.k_exemplars, g) for _ in range(draws)]) for t in tasks])
    owner = [t for t in tasks for _ in range(draws)]
    query = enc.encode([suite.eval_condition(t) for t in tasks])  # (T, D)
    sim = F.normalize(query, dim=1) @ F.normalize(pool, dim=1).T  # (T, T·draws)
    nearest = [owner[i] for i in sim.argmax(1).tolist()]
    family = lambda t: suite.task(t).params["family"]  # noqa: E731
    return {"tasks": len(tasks), "draws": draws, "task": statistics.mean(float(a == b) for a, b in zip(nearest, tasks)),
            "family": statistics.mean(float(family(a) == family(b)) for a, b in zip(nearest, tasks)),
            "confused": {t: a for t, a in zip(tasks, nearest) if a != t}}


def cold_ms(gen: HyperGenerator, suite, tasks: list[str]) -> float:
    """Median ms from a held-out task's raw condition to an adapter, its encoding included, once per task
    (prompting_study.cold_generation_s)."""
    gen.generate(suite.eval_condition(tasks[0]), 1)  # loads the encoders' models: not part of a cold generation
    return 1000 * cold_generation_s(gen, suite, tasks, repeats=len(tasks))


def controls(gen: HyperGenerator, suite, base, tasks: list[str], em) -> dict[str, dict[str, float]]:
    """Exact match of each task with the adapter generated from its evaluation condition with the description
    replaced (prompting_study.control_conditions, as the study scores them)."""
    out: dict[str, dict[str, float]] = {}
    for t in tasks:
        for name, cond in control_conditions(suite, t, suite.eval_condition(t)).items():
            (adapter,) = gen.generate(cond, 1)
            with merged(base, adapter):
                out.setdefault(name, {})[t] = em(t)
    return out


def write_report(out: Path, r: dict, study_encoder: str) -> None:
    refs, seen, unseen = r["references"], r["seen"], r["unseen"]
    mean = lambda ts, k: statistics.mean(refs[t][k] for t in ts)  # noqa: E731
    lines = ["# llm-tasks: does the hyper generator fit its training tasks? (validation queries, fold 0)", "",
             f"Adapted models' prompt: {CONTEXT_PROSE[r.get('adapter_context', 'none')]} (LlmTasks.adapter_context).", "",
             "Commands (each run's generator is kept and reused by later commands with the same --out): "
             + ", ".join(sorted({f"`{run.get('command', r['command'])}`" for run in r["runs"].values()})), "",
             f"Generator trained on the fold's {r['train_tasks']} training tasks (and, where named, every task of families the "
             "study leaves out); exact match on the validation queries of "
             f"{len(seen)} of them (seen) and of {len(unseen)} held-out tasks.", "",
             "| method | condition encoder | training tasks | train loss (EMA, last step) | fit (s) | cold generation (ms) | seen | held-out |",
             "|---|---|---|---|---|---|---|---|",
             f"| zero-shot (description) | | | | | | {mean(seen, 'zero_shot'):.2f} | {mean(unseen, 'zero_shot'):.2f} |",
             f"| few-shot (description + 4 examples) | | | | | | {mean(seen, 'few_shot'):.2f} | {mean(unseen, 'few_shot'):.2f} |"]
    tuned = all("finetune" in refs[t] for t in seen + unseen)  # a zoo was there: the fine-tuned ceiling
    if all("multitask" in refs[t] for t in seen + unseen):
        lines.append(f"| multi-task LoRA over the fold's training tasks | | | | | | {mean(seen, 'multitask'):.2f} | "
                     f"{mean(unseen, 'multitask'):.2f} |")
    if tuned:
        lines.append(f"| fine-tuned (the study's zoo, best checkpoint; the ceiling) | | | | | | {mean(seen, 'finetune'):.2f} | "
                     f"{mean(unseen, 'finetune'):.2f} |")
    # the study's encoder first, then by steps and lr
    runs = dict(sorted(r["runs"].items(), key=lambda kv: (kv[1]["hyper"]["encoder"] != study_encoder,
                                                         kv[1]["hyper"]["encoder"], kv[1]["hyper"]["steps"], kv[1]["hyper"]["lr"])))
    for key, run in runs.items():
        cold = f"{run['generate_cold_ms']:.1f}" if "generate_cold_ms" in run else "–"
        tasks = f"{run.get('train_tasks', r['train_tasks'])}" + (f" (+ {', '.join(run['extra_families'])})" if run.get("extra_families") else "")
        lines.append(f"| generated, {key} | {run['hyper']['encoder']} | {tasks} | {run['fit']['loss']:.3f} | {run['fit']['fit_s']:.0f} | "
                     f"{cold} | {run['seen_mean']:.2f} | {run['unseen_mean']:.2f} |")
        for name, scores in run.get("controls", {}).items():
            lines.append(f"| {key}, {name.replace('_', ' ')} (control) | | | | | | | {statistics.mean(scores[t] for t in unseen):.2f} |")
    if "identifiable" in r:
        i = r["identifiable"]
        lines += ["", f"Can the text encoder tell the tasks apart? Each of the suite's {i['tasks']} tasks' evaluation condition "
                  f"(held-out paraphrase + 8 example lines) has its nearest (cosine of MiniLM embeddings) among {i['draws']} "
                  f"training conditions of every task in its own task {i['task']:.0%} of the time, in its family "
                  f"{i['family']:.0%}; confused: " + (", ".join(f"{t} → {a}" for t, a in i["confused"].items()) or "none") + "."]
    lines += ["", "Per task (generated per run; few-shot" + (", fine-tuned" if tuned else "") + "):", "",
              "| task | group | few-shot | " + ("fine-tuned | " if tuned else "") + " | ".join(runs) + " |",
              "|---|---|---|" + ("---|" if tuned else "") + "---|" * len(runs)]
    for t in seen + unseen:
        lines.append(f"| {t} | {'seen' if t in seen else 'held-out'} | {refs[t]['few_shot']:.2f} | "
                     + (f"{refs[t]['finetune']:.2f} | " if tuned else "")
                     + " | ".join(f"{run['generated'][t]:.2f}" for run in runs.values()) + " |")
    atomic.write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
