"""Benchmark on text-topics: the demo pipeline, its targets, and Cond P-Diff's ablations reproduced in direction:
normalisation (task / global / none), condition (description + few-shot / description / one-hot task id), zoo size
(checkpoints kept per task: 10 / 5 / 2, the last ones of each run). Writes benchmark.json and benchmark.md into --out.

    .venv/bin/python benchmarks/text_topics.py --out runs/bench/text-topics [--ablation-samples 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loragen import ablation, atomic
from loragen.demo import DemoConfig, run


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
    lines = ["# text-topics benchmark", "", "| target | measured | pass |", "|---|---|---|"]
    for k, v in bench["targets"].items():
        value = json.dumps([round(x, 3) for x in v["value"]]) if isinstance(v["value"], list) else f"{v['value']:.3f}"
        lines.append(f"| {k} | {value} | {'-' if v['pass'] is None else ('yes' if v['pass'] else 'no')} |")
    lines += ["", abl["markdown"]]
    atomic.write_json(args.out / "benchmark.json", bench)
    atomic.write_bytes(args.out / "benchmark.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
