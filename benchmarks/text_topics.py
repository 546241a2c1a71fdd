"""Benchmark on text-topics: the demo pipeline, its targets, and Cond P-Diff's ablations reproduced in direction:
normalisation (task / global / none), condition (description + few-shot / description / one-hot task id), zoo size
(checkpoints kept per task: 10 / 5 / 2, the last ones of each run). Writes benchmark.json and benchmark.md into --out.

    .venv/bin/python benchmarks/text_topics.py --out runs/bench/text-topics [--ablation-samples 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loragen.evaluate import benchmark
from loragen.experiments import ablation
from loragen.experiments.demo import DemoConfig, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/text-topics"))
    ap.add_argument("--ablation-samples", type=int, default=5, help="generated adapters per condition in ablations")
    args = ap.parse_args()
    cfg = DemoConfig.for_suite("text-topics")
    results = run(args.out, cfg, overwrite=True)
    seen, unseen = results["seen"], results["unseen"]
    collect_s = results["time"]["finetune_s_per_adapter"] * (seen["tasks"] + unseen["tasks"])
    bench = {"results": {k: v for k, v in results.items() if k != "per_task"}, "targets": {
        "seen: generated_mean >= finetuned - 1": {"value": seen["generated_mean"] - seen["finetuned"],
                                                  "pass": seen["generated_mean"] >= seen["finetuned"] - 1},
        "unseen: gap recovered (generated_mean / nearest / soup)": {
            "value": [unseen["gap_recovered"][m] for m in ("generated_mean", "nearest", "soup")], "pass": None},
        "zoo collection <= 15 min (s)": {"value": collect_s, "pass": collect_s <= 900},
    }}
    abl = ablation.run(args.out, cfg, n_samples=args.ablation_samples)
    bench["ablations"] = abl["rows"]
    lines = benchmark.targets_table("text-topics benchmark", bench["targets"]) + ["", abl["markdown"]]
    benchmark.write(args.out, bench, lines)


if __name__ == "__main__":
    main()
