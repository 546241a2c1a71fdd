"""Benchmark of Composer on digits-gen at real size: `loragen composer bench` plus the issue's targets.
Writes results.json, report.md, sample grids, benchmark.json and benchmark.md into --out.

    .venv/bin/python benchmarks/digits_gen.py --out runs/bench/digits-gen
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loragen.evaluate import benchmark
from loragen.experiments.composer_bench import BenchConfig, run


def targets(r: dict) -> dict:
    fd, lora = r["fd"], r["batched_lora"]
    rows = {
        "Composer digits-FD < frozen backbone's": (fd["composer"] - fd["backbone"], fd["composer"] < fd["backbone"]),
        "Composer digits-FD < static LoRA's": (fd["composer"] - fd["static_lora"], fd["composer"] < fd["static_lora"]),
    }
    for o in r["overhead"]["per_batch"]:
        rows[f"sampling time overhead <= 2% (batch {o['batch']}, {o['steps']} steps)"] = (o["time_ratio"] - 1, o["time_ratio"] <= 1.02)
        rows[f"peak memory overhead <= 5% (batch {o['batch']})"] = (o["memory_ratio"] - 1, o["memory_ratio"] <= 1.05)
    rows[f"batched LoRA, {lora['distinct_adapters']} distinct adapters, <= 1.15x base forward"] = (lora["ratio"], lora["ratio"] <= 1.15)
    return {k: {"value": v, "pass": bool(p)} for k, (v, p) in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/digits-gen"))
    args = ap.parse_args()
    results = run(args.out, BenchConfig(), overwrite=True)
    bench = {"targets": targets(results)}
    lines = benchmark.targets_table("digits-gen benchmark (Composer)", bench["targets"], value_format="+.3f")
    lines += ["", "Measured values: FD differences (negative = Composer better), overhead as ratio − 1, batched LoRA as a "
              "ratio. Full report: report.md.", ""]
    benchmark.write(args.out, bench, lines)
    print(json.dumps(bench["targets"], indent=1))


if __name__ == "__main__":
    main()
