"""Adapters for SmolLM2-135M-Instruct generated from a task's condition, against prompting, retrieval, a multi-task
LoRA and per-task fine-tuning, k-fold over llm-tasks (loragen.evaluate.prompting_study says what each method is).

    .venv/bin/python benchmarks/llm_tasks.py --out runs/bench/llm-tasks [--quick] [--model smollm2|DIR] [--top-layers 4] \
        [--adapter-context none|description|few-shot]

Writes into --out: results.json (schema in issue 14: per-method exact-match mean and 95% bootstrap CI over held-out
tasks, seen / unseen means, paired generated − few-shot, cost), results.md and plots/*.png. Trained pieces (zoo,
per-fold generators, scored rows) stay in --out, so a rerun resumes and reuses them. --quick: a small run (families
topic, add and words-to-number, tiny training) that finishes within 15 minutes on 2 cores; its numbers mean little.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from loragen import atomic
from loragen.evaluate.prompting_study import METHODS, PromptingStudy, PromptingStudyConfig, cold_generation_s, summarize
from loragen.finetune import FinetuneConfig
from loragen.generators.hyper import HyperConfig
from loragen.generators.pdiff import PDiffConfig
from loragen.suites import get_suite
from loragen.suites.defaults import suite_defaults
from loragen.suites.llm_tasks import CONTEXTS

# Families whose fine-tuned adapter reached ≥ 0.3 exact match with a training loss < 1.5 on validation items in the
# family survey (docs/llm-adapters/family-survey.md: one task per family, 150 steps): fine-tuning clearly beats the
# zero-shot base model (0 everywhere). Not learnt there, left out: shift, multiply, every-word, last-letters, format.
FAMILIES = ("add", "first-letters", "item", "number-to-words", "words-to-number", "polarity", "remainder", "repeat", "topic")
QUICK_FAMILIES = ("topic", "add", "words-to-number")
CONTEXT_PROSE = {"none": "the input alone", "description": "the description, then the input (as zero-shot prompting)",
                 "few-shot": "few-shot prompting's prompts (the description and the shots as a conversation, then the input)"}


def config(quick: bool) -> tuple[PromptingStudyConfig, dict]:
    """The study's configuration and the suite's arguments; sized for 2 CPU cores (the full run states its time)."""
    if quick:
        cfg = PromptingStudyConfig(
            folds=2, seen_per_fold=2, multitask_steps=20, pdiff_samples=2, recon_steps=20,
            finetune=FinetuneConfig(rank=4, alpha=8.0, steps=20, lr=2e-3, batch_size=8, keep_last=2, save_every=5),
            hyper=HyperConfig(encoder="text", rank=4, lora_alpha=8.0, k_exemplars=8, cond_draws=4, width=32, cond_dim=16,
                              steps=20, tasks_per_step=4, examples_per_task=4, checkpoint_every=10),
            pdiff=PDiffConfig(encoder="text", k_exemplars=8, ae_patch=64, ae_steps=20, diffusion_steps=20, ae_channels=(8, 8),
                              latent_dim=16, width=32, depth=1, cond_draws=4, sample_steps=5, checkpoint_every=10))
        return cfg, {"families": QUICK_FAMILIES, "n_train": 24, "n_val": 16, "n_test": 12}
    d = suite_defaults("llm-tasks")  # the suite's defaults are this benchmark's settings
    cfg = PromptingStudyConfig(folds=3, seen_per_fold=4, multitask_steps=300, pdiff_samples=3, recon_steps=3000,
                               finetune=FinetuneConfig(**d.finetune), hyper=HyperConfig(**d.hyper),
                               pdiff=PDiffConfig(**d.pdiff))
    return cfg, {"families": FAMILIES, "n_train": 48, "n_val": 16, "n_test": 24}


def _folds_run(r: dict) -> str:
    """'fold 0' / 'folds 0–1' for a partial study (`--max-folds`), '' for a whole one."""
    n = r.get("folds_run", r["folds"])
    return "" if n == r["folds"] else "fold 0" if n == 1 else f"folds 0–{n - 1}"


def plots(out: Path, r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(parents=True, exist_ok=True)
    methods = list(r["methods"])
    fig, ax = plt.subplots(figsize=(10, 4))
    xs = range(len(methods))
    unseen = [r["methods"][m]["unseen"] for m in methods]
    err = [[u - r["methods"][m]["exact_match_ci"][0] for m, u in zip(methods, unseen)],
           [r["methods"][m]["exact_match_ci"][1] - u for m, u in zip(methods, unseen)]]
    ax.bar([x - 0.2 for x in xs], unseen, 0.4, yerr=err, capsize=3, label="held-out tasks (95% CI)")
    ax.bar([x + 0.2 for x in xs], [r["methods"][m]["seen"] or 0 for m in methods], 0.4, label="seen tasks")
    ax.set_xticks(list(xs), methods, rotation=30, ha="right")
    ax.set_ylabel("exact match")
    run = _folds_run(r)
    part = f", {run} only" if run else ""
    ax.set_title(f"llm-tasks, {r['folds']}-fold over {r['tasks']} tasks{part} ({r['model']}, {r['adapter_context']} context)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plots" / "methods.png", dpi=110)
    plt.close(fig)
    fams = r["families"]
    show = ["zero_shot", "few_shot", "generated", "multitask", "finetune"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(show)
    for i, m in enumerate(show):
        ax.bar([j + (i - len(show) / 2 + 0.5) * width for j in range(len(fams))], [fams[f][m] for f in fams], width, label=m)
    ax.set_xticks(range(len(fams)), list(fams), rotation=30, ha="right")
    ax.set_ylabel("exact match, held-out tasks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plots" / "families.png", dpi=110)
    plt.close(fig)


def markdown(r: dict) -> str:
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    pts = lambda p: f"{100 * p['mean']:+.1f} [{100 * p['ci'][0]:+.1f}, {100 * p['ci'][1]:+.1f}] points over {p['tasks']} tasks"  # noqa: E731
    c, g = r["cost"], r["gap_recovered"]
    run = _folds_run(r)
    partial = (f"**Partial: {run} of {r['folds']} only (`--max-folds`): {sum(x['group'] == 'unseen' for x in r['rows'])} "
               f"of the {r['tasks']} tasks scored as held-out.** ") if run else ""
    lines = [f"# llm-tasks: generated adapters against prompting ({r['model']})", "",
             f"Command: `{r['command']}` ({r['wall_s'] / 60:.0f} minutes on {r['threads']} thread(s)).", "",
             f"Adapted models see {CONTEXT_PROSE[r.get('adapter_context', 'none')]}. "
             f"{r['folds']}-fold over {r['tasks']} tasks of families {', '.join(r['families'])}; every inside or categorical task "
             f"is held out once, outside (extrapolation) tasks are never trained on. {partial}Exact match of the greedy "
             f"completion on each task's {r['test_queries']} test queries; CI: 95% bootstrap over held-out tasks. Seen: {r['seen_rows']} "
             "training tasks scored per fold (same tasks for every method).", "",
             "| method | held-out [95% CI] | seen | interpolation | extrapolation |", "|---|---|---|---|---|"]
    for m, s in r["methods"].items():
        lines.append(f"| {m} | {f(s['exact_match_mean'])} [{f(s['exact_match_ci'][0])}, {f(s['exact_match_ci'][1])}] | "
                     f"{f(s['seen'])} | {f(s['interpolation'])} | {f(s['extrapolation'])} |")
    lines += ["", "Paired differences on held-out tasks (exact match in points):", "",
              f"- generated − few-shot: {pts(r['paired_vs_few_shot'])}",
              f"- generated − multi-task LoRA: {pts(r['paired_vs_multitask'])}",
              f"- generated − nearest zoo adapter: {pts(r['paired_vs_nearest'])}",
              f"- right description − random string: {pts(r['right_vs_random_description'])}",
              f"- right description − another task's description: {pts(r['right_vs_wrong_description'])}"]
    if "seen_generated_minus_finetune" in r:
        lines.append(f"- seen tasks, generated − fine-tuned: {pts(r['seen_generated_minus_finetune'])}")
    if "recon_vs_generated" in r:
        lines.append(f"- hyper_recon (reconstructs the zoo) − generated (task objective): {pts(r['recon_vs_generated'])}")
    if "seen_recon_minus_finetune" in r:
        lines.append(f"- seen tasks, hyper_recon − fine-tuned: {pts(r['seen_recon_minus_finetune'])}")
    ratio = "–" if g["ratio_of_means"] is None else f"{100 * g['ratio_of_means']:.0f}%"
    lines += ["", f"- Zero-shot → fine-tuned gap recovered by generated on held-out tasks: {ratio} (ratio of means); "
              f"per-task mean {f(g['per_task_mean'])} over the {g['tasks_in_per_task']} tasks where fine-tuning gains ≥ {g['min_gap']}.",
              "- The same ratio for every method: " + ", ".join(
                  f"{m} {100 * v:.0f}%" for m, v in g["by_method"].items() if v is not None and m not in ("zero_shot", "finetune"))
              + (". Adapted models see few-shot's prompt here, so few-shot prompting alone is the baseline to read it against."
                 if r.get("adapter_context") == "few-shot" else "."),
              f"- Held-out tasks where generated is more than 1 point below zero-shot: {len(r['worse_than_zero_shot'])} "
              f"{r['worse_than_zero_shot'] or ''}.",
              f"- Cost: fine-tuning one task {c['finetune_s']:.1f} s (zoo mean, prefix states included); a generated adapter cold "
              f"(condition encoding included) {1000 * c['generate_cold_s']:.1f} ms: {c['finetune_s'] / c['generate_cold_s']:.0f}× "
              f"faster. Prompt tokens per query: few-shot {c['few_shot_prompt_tokens']:.0f}, zero-shot "
              f"{c['zero_shot_prompt_tokens']:.0f}, adapter {c['adapter_prompt_tokens']:.0f}. Hyper training "
              f"{c['hyper_fit_s_median']:.0f} s per fold (median), zoo {c['zoo_s'] / 60:.0f} minutes.",
              "", "Held-out tasks by family:", "", "| family | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    for fam, s in r["families"].items():
        lines.append(f"| {fam} | " + " | ".join(f(s.get(m)) for m in METHODS) + " |")
    lines += ["", "![methods](plots/methods.png)", "", "![families](plots/families.png)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="a small run within 15 minutes (numbers mean little)")
    ap.add_argument("--model", default="smollm2", help="'smollm2' (packaged) or a local causal-LM folder")
    ap.add_argument("--top-layers", type=int, default=4, help="decoder layers LoRA adapts (the rest is the cached prefix)")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="token budget of a prompt + answer (default: the suite's, 96 or 224 with --adapter-context few-shot)")
    ap.add_argument("--adapter-context", default="none", choices=CONTEXTS,
                    help="what an adapted model's prompt holds before the input (LlmTasks.adapter_context)")
    ap.add_argument("--max-folds", type=int, default=None,
                    help="run and summarise only the first N of the k folds (a partial study, marked so in results.md)")
    args = ap.parse_args()
    import torch

    cfg, suite_kwargs = config(args.quick)
    suite = get_suite("llm-tasks", model_path=args.model, top_layers=args.top_layers, max_tokens=args.max_tokens,
                      adapter_context=args.adapter_context, **suite_kwargs)
    t0 = time.perf_counter()
    study = PromptingStudy(suite, args.out, cfg)
    res = study.run(args.max_folds)
    rows = res["rows"]
    unseen = [r["task"] for r in rows if r["group"] == "unseen"]
    first = res["runs"][0]
    zoo = res["zoo"]
    fits = [f["hyper_fit_s"] for f in res["folds"] if f["hyper_fit_s"] is not None]
    r = {"suite": "llm-tasks", "model": str(args.model), "command": "python " + " ".join(sys.argv), "tasks": len(suite.tasks()),
         "folds": cfg.folds, "folds_run": len(res["folds"]), "adapter_context": args.adapter_context, "families": list(suite_kwargs["families"]), "threads": torch.get_num_threads(),
         "test_queries": len(suite.examples(unseen[0], "test")[: cfg.test_limit]),
         "seen_rows": cfg.seen_per_fold, **summarize(rows, cfg.min_gap)}
    r["cost"] = {"finetune_s": statistics.mean(e["finetune_s"] for e in zoo.entries),
                 "generate_cold_s": cold_generation_s(first.hyper, suite, list(first.fold.test)),
                 "few_shot_prompt_tokens": statistics.mean(suite.prompt_tokens(t, "test", "few-shot") for t in unseen),
                 "zero_shot_prompt_tokens": statistics.mean(suite.prompt_tokens(t, "test", "description") for t in unseen),
                 "adapter_prompt_tokens": statistics.mean(suite.prompt_tokens(t, "test") for t in unseen),
                 "hyper_fit_s_median": statistics.median(fits) if fits else float("nan"),
                 "zoo_s": sum(statistics.mean(e["finetune_s"] for e in zoo.task_entries(t)) for t in zoo.tasks())}
    r["fold_sizes"] = res["folds"]
    r["config"] = json.loads(json.dumps(asdict(cfg), default=str))
    r["rows"] = rows
    r["wall_s"] = time.perf_counter() - t0
    atomic.write_json(args.out / "results.json", r)
    plots(args.out, r)
    md = markdown(r)
    atomic.write_bytes(args.out / "results.md", md.encode())
    print(md)


if __name__ == "__main__":
    main()
