"""Benchmark of ECM on digits-control at real size: `loragen ecm bench` plus the issue's targets (control fidelity
against the backbone and the full fine-tune, parameter share, early-centric step time, temperature schedule, shared
vs separate FFN, sampling cost, backbone build time). Writes results.json, report.md, sample grids, plots,
benchmark.json and benchmark.md into --out.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ecm.py --out runs/bench/ecm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loragen.evaluate import benchmark
from loragen.experiments.ecm_bench import BenchConfig, run


def targets(r: dict) -> dict:
    m = r["methods"]
    ecm, full, back = m["ecm"], m["full_finetune"], m["backbone"]
    uni, sep, const = m["ecm_uniform_scales"], m["ecm_separate_ffn"], m["ecm_constant_temperature"]
    cut = r["step_time_cut"]
    spread = lambda a, b, k="control_f1": a[f"{k}_std"] + b[f"{k}_std"]  # noqa: E731  the two methods' seed stds
    rows = {
        "ECM edge F1 − backbone's >= 10 points": (ecm["control_f1"] - back["control_f1"], ecm["control_f1"] - back["control_f1"] >= 10),
        "ECM edge F1 − full fine-tune's >= −2 points": (ecm["control_f1"] - full["control_f1"], ecm["control_f1"] >= full["control_f1"] - 2),
        "ECM trainable parameters / full fine-tune's <= 10%": (ecm["param_share_of_full_finetune"], ecm["param_share_of_full_finetune"] <= 0.10),
        "early-centric training step time cut vs uniform >= 30% (median of paired rounds)": (cut["cut"], cut["cut"] >= 0.30),
        "early-centric edge F1 − uniform's >= −(seed spread)": (ecm["control_f1"] - uni["control_f1"], ecm["control_f1"] - uni["control_f1"] >= -spread(ecm, uni)),
        "temperature schedule digits-FD − constant temperature's < 0": (ecm["fd"] - const["fd"], ecm["fd"] < const["fd"]),
        "shared gated FFN edge F1 − separate FFNs' >= −(seed spread)": (ecm["control_f1"] - sep["control_f1"], ecm["control_f1"] - sep["control_f1"] >= -spread(ecm, sep)),
        "shared gated FFN parameters < separate FFNs'": (ecm["trainable_params"] - sep["trainable_params"], ecm["trainable_params"] < sep["trainable_params"]),
        "sampling time with control / backbone <= 1.3": (r["sample_time_ratio"], r["sample_time_ratio"] <= 1.3),
        "backbone + tokenizer build seconds <= 600 (2 cores)": (r["backbone_build_s"], r["backbone_build_s"] <= 600),
    }
    return {k: {"value": v, "pass": bool(p)} for k, (v, p) in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/ecm"))
    ap.add_argument("--quick", action="store_true", help="the tiny test configuration (numbers mean nothing)")
    args = ap.parse_args()
    results = run(args.out, BenchConfig.quick() if args.quick else BenchConfig(), overwrite=True)
    bench = {"targets": targets(results)}
    lines = benchmark.targets_table("digits-control benchmark (ECM)", bench["targets"], value_format="+.3f")
    lines += ["", f"Measured values: differences of test means over {results['config']['train_seeds']} training seeds "
              "(edge F1 in points, digits-FD), shares and ratios as fractions, seconds. Full report: report.md.", ""]
    benchmark.write(args.out, bench, lines)
    print(json.dumps(bench["targets"], indent=1))


if __name__ == "__main__":
    main()
