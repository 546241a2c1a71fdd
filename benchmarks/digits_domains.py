"""Benchmark on digits-domains at real size: the demo pipeline plus the issue's targets, and (optionally) the
normalisation ablation. Writes benchmark.json and benchmark.md into --out.

    .venv/bin/python benchmarks/digits_domains.py --out runs/bench/digits-domains [--ablate-normalization]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loragen import ablation
from loragen.evaluate import benchmark
from loragen.demo import DemoConfig, run


def targets(results: dict) -> dict:
    seen, unseen = results["seen"], results["unseen"]
    return {
        "seen: generated_mean >= finetuned - 0.5": {"value": seen["generated_mean"] - seen["finetuned"], "pass": seen["generated_mean"] >= seen["finetuned"] - 0.5},
        "unseen: gap recovered by generated_mean >= 50%": {"value": unseen["gap_recovered"]["generated_mean"], "pass": unseen["gap_recovered"]["generated_mean"] >= 0.5},
        "generation >= 1000x faster than fine-tuning": {"value": results["speedup"], "pass": results["speedup"] >= 1000},
        "demo wall time <= 300 s": {"value": results["wall_s"], "pass": results["wall_s"] <= 300},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/digits-domains"))
    ap.add_argument("--ablate-normalization", action="store_true", help="also train generators with global / none")
    args = ap.parse_args()
    cfg = DemoConfig.for_suite("digits-domains")
    results = run(args.out, cfg, overwrite=True)
    bench = {"results": {k: v for k, v in results.items() if k != "per_task"}, "targets": targets(results)}
    lines = benchmark.targets_table("digits-domains benchmark", bench["targets"])
    if args.ablate_normalization:
        abl = ablation.run(args.out, cfg, n_samples=cfg.n_samples, only="normalization=")
        bench["normalization"] = abl["rows"]
        lines += ["", abl["markdown"]]
    benchmark.write(args.out, bench, lines)
    print(json.dumps(bench["targets"], indent=1))


if __name__ == "__main__":
    main()
