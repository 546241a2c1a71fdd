"""How the hyper generator's size and training length were chosen: on validation tasks, never on test.

Selection runs on a separate draw of domains (task_seed 1, same ranges): none of them is a task of the k-fold study
(task_seed 0), so no fold's test task plays any part. Of its 120 inside tasks, every fifth is a validation task and
the other 96 train the generator (the size of a fold's training set); candidates are scored by the generated
adapters' accuracy on the validation tasks' validation split.

    .venv/bin/python benchmarks/select_hyper.py --out runs/bench/select-hyper
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from loragen import atomic
from loragen.evaluate.unseen import adapter_accuracy
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.suites import get_suite

CANDIDATES = [  # every field that differs between candidates is named, so the grid does not move with HyperConfig's defaults
    dict(width=256, steps=1500, weight_decay=1e-4, tasks_per_step=16, examples_per_task=32),
    dict(width=256, steps=4000, weight_decay=1e-4, tasks_per_step=16, examples_per_task=32),
    dict(width=512, steps=4000, weight_decay=1e-4, tasks_per_step=16, examples_per_task=32),
    dict(width=512, steps=3000, weight_decay=0.05, tasks_per_step=16, examples_per_task=32),
    dict(width=256, steps=4000, weight_decay=1e-4, tasks_per_step=32, examples_per_task=16),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    suite = get_suite("digits-domains", n_tasks=120, n_extrapolation=0, task_seed=1)
    study = {t.name for t in get_suite("digits-domains", n_tasks=120, n_extrapolation=20).tasks()}
    base = suite.base_model()
    names = [t.name for t in suite.tasks()]
    assert not set(names) & study, "selection tasks must not be tasks of the k-fold study"
    val = names[::5]
    inner = [t for t in names if t not in val]
    rows = []
    for kw in CANDIDATES:
        cfg = replace(HyperConfig(), **kw)
        t0 = time.perf_counter()
        gen = HyperGenerator.fit(cfg, suite=suite, tasks=inner, show=False)
        accs = [adapter_accuracy(suite, base, gen.generate(suite.condition(t), 1)[0], suite.data(t, "val")) for t in val]
        rows.append({"candidate": kw, "val_accuracy": statistics.mean(accs), "fit_s": time.perf_counter() - t0,
                     "train_loss": gen.fit_summary["loss"]})
        print(rows[-1], flush=True)
    best = max(rows, key=lambda r: r["val_accuracy"])
    lines = ["# hyper: choice of size and training length on validation tasks", "",
             f"Command: `python {' '.join(sys.argv)}`", "",
             f"{len(inner)} training and {len(val)} validation tasks (task_seed 1: disjoint from the study's tasks); "
             "mean validation-split accuracy (%) of the generated adapters on the validation tasks.", "",
             "| candidate | validation acc | train loss | fit (s) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['candidate']} | {r['val_accuracy']:.2f} | {r['train_loss']:.4f} | {r['fit_s']:.0f} |")
    lines += ["", f"Chosen: {best['candidate']} (HyperConfig's defaults: {asdict(HyperConfig())})", ""]
    atomic.write_json(args.out / "results.json", {"rows": rows, "best": best, "inner_tasks": len(inner), "val_tasks": len(val)})
    atomic.write_bytes(args.out / "results.md", "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
