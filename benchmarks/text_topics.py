"""Benchmark on text-topics: the demo pipeline, its targets, and Cond P-Diff's ablations reproduced in direction:
normalisation (task / global / none), condition (description + few-shot / description / one-hot task id), zoo size
(checkpoints kept per task: 10 / 5 / 2, the last ones of each run). Writes benchmark.json and benchmark.md into --out.

    .venv/bin/python benchmarks/text_topics.py --out runs/bench/text-topics [--ablation-samples 5]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from loragen import atomic
from loragen.demo import DemoConfig, run
from loragen.evaluate.evaluation import evaluate
from loragen.generators.pdiff import PDiffGenerator
from loragen.suites import get_suite
from loragen.zoo import Zoo


def last_n(zoo: Zoo, path: Path, n: int) -> Zoo:
    """A copy of `zoo` that keeps the last n checkpoints of each task (resumes if it exists)."""
    small = Zoo.create(path, zoo.layout, {**zoo.info, "keep_last": n})
    for t in zoo.tasks():
        if t not in small.tasks():
            small.add_task(t, zoo.adapters(t)[-n:], zoo.condition(t))
    return small


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/text-topics"))
    ap.add_argument("--ablation-samples", type=int, default=5, help="generated adapters per condition in ablations")
    args = ap.parse_args()
    cfg = DemoConfig.for_suite("text-topics")
    results = run(args.out, cfg, overwrite=True)
    seen, unseen = results["seen"], results["unseen"]
    bench = {"results": {k: v for k, v in results.items() if k != "per_task"}, "targets": {
        "seen: generated_mean >= finetuned - 1": {"value": seen["generated_mean"] - seen["finetuned"],
                                                  "pass": seen["generated_mean"] >= seen["finetuned"] - 1},
        "unseen: gap recovered (generated_mean / nearest / soup)": {
            "value": [unseen["gap_recovered"][m] for m in ("generated_mean", "nearest", "soup")], "pass": None},
        "zoo collection <= 15 min": {"value": results["time"]["finetune_s_per_adapter"] * (seen["tasks"] + unseen["tasks"]),
                                     "pass": results["time"]["finetune_s_per_adapter"] * (seen["tasks"] + unseen["tasks"]) <= 900},
    }}
    suite = get_suite(cfg.suite)
    zoo, ref = Zoo.open(args.out / "zoo"), Zoo.open(args.out / "reference")
    variants = {
        "normalization=task, condition=text, keep=10": (zoo, cfg.generator),
        "normalization=global": (zoo, replace(cfg.generator, normalization="global")),
        "normalization=none": (zoo, replace(cfg.generator, normalization="none")),
        "condition=description": (zoo, replace(cfg.generator, encoder="description")),
        "condition=onehot": (zoo, replace(cfg.generator, encoder="onehot")),
        "keep=5": (last_n(zoo, args.out / "zoo-last5", 5), cfg.generator),
        "keep=2": (last_n(zoo, args.out / "zoo-last2", 2), cfg.generator),
    }
    rows = {}
    for name, (z, gcfg) in variants.items():
        t0 = time.perf_counter()
        gen = PDiffGenerator.fit(z, gcfg)
        ev = evaluate(suite, gen, z, ref, args.ablation_samples)
        s = ev["summary"]
        rows[name] = {"seen": s["seen"]["generated_mean"], "unseen": s["unseen"]["generated_mean"],
                      "seen_ft": s["seen"]["finetuned"], "unseen_gap": s["unseen"]["gap_recovered"]["generated_mean"],
                      "wall_s": time.perf_counter() - t0}
        print(name, rows[name], flush=True)
    bench["ablations"] = rows
    lines = ["# text-topics benchmark", "", "| target | measured | pass |", "|---|---|---|"]
    lines += [f"| {k} | {json.dumps(v['value'], default=lambda x: round(x, 3)) if isinstance(v['value'], list) else round(v['value'], 3)} | "
              f"{'-' if v['pass'] is None else ('yes' if v['pass'] else 'no')} |" for k, v in bench["targets"].items()]
    lines += ["", f"Ablations (generated mean accuracy, %, N = {args.ablation_samples} per condition):", "",
              "| variant | seen | held out | held-out gap recovered |", "|---|---|---|---|"]
    lines += [f"| {k} | {r['seen']:.1f} | {r['unseen']:.1f} | {100 * r['unseen_gap']:.0f}% |" for k, r in rows.items()]
    atomic.write_json(args.out / "benchmark.json", bench)
    atomic.write_bytes(args.out / "benchmark.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
