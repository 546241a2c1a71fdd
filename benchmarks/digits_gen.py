"""Benchmark of Composer on digits-gen at real size: `loragen composer bench` plus the issue's targets (Composer
against the backbone and against both equal-effort controls, each at its lr tuned on validation digits-FD).
Writes results.json, report.md, sample grids, benchmark.json and benchmark.md into --out.

    .venv/bin/python benchmarks/digits_gen.py --out runs/bench/digits-gen [--no-ablations]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loragen.evaluate import benchmark, composer_report
from loragen.experiments.composer_bench import BenchConfig, run


def targets(r: dict) -> dict:
    fd, lora = r["fd"], r["batched_lora"]
    rows = {"Composer digits-FD < frozen backbone's": (fd["composer"] - fd["backbone"], fd["composer"] < fd["backbone"])}
    for control, name in (("static_lora", "static LoRA"), ("per_class_lora", "per-class LoRA")):
        rows[f"Composer digits-FD < tuned {name}'s"] = (fd["composer"] - fd[control], fd["composer"] < fd[control])
    for o in r["overhead"]["per_batch"]:
        rows[f"sampling time overhead <= 2% (batch {o['batch']}, {o['steps']} steps)"] = (o["time_ratio"] - 1, o["time_ratio"] <= 1.02)
        rows[f"peak memory overhead <= 5% (batch {o['batch']})"] = (o["memory_ratio"] - 1, o["memory_ratio"] <= 1.05)
    rows[f"batched LoRA, {lora['distinct_adapters']} distinct adapters, <= 1.15x base forward"] = (lora["ratio"], lora["ratio"] <= 1.15)
    return {k: {"value": v, "pass": bool(p)} for k, (v, p) in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/digits-gen"))
    ap.add_argument("--no-ablations", action="store_true", help="skip the ablation rows (7 more Composer trainings)")
    args = ap.parse_args()
    results = run(args.out, BenchConfig(ablations=not args.no_ablations), overwrite=True)
    bench = {"targets": targets(results)}
    lines = benchmark.targets_table("digits-gen benchmark (Composer)", bench["targets"], value_format="+.3f")
    lrs = ", ".join(f"{m} {lr:g}" for m, lr in results["lr"].items())
    lines += ["", "Measured values: FD differences (negative = Composer better), overhead as ratio − 1, batched LoRA as a "
              f"ratio. Trained methods: means over {results['config']['train_seeds']} training seeds, each at its lr "
              f"chosen on validation digits-FD ({lrs}). Full report: report.md.", "", *composer_report.verdict(results), ""]
    benchmark.write(args.out, bench, lines)
    print(json.dumps(bench["targets"], indent=1))


if __name__ == "__main__":
    main()
