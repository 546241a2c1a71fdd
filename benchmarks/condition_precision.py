"""The precision of the examples encoder's base-model pass on this machine: cold generation against fine-tuning, per
precision, and what `auto` picks here.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/condition_precision.py --out runs/bench/condition-precision

text-topics' generator reads each example of a condition through MiniLM (HyperConfig.condition_precision). bf16 about
halves that pass on CPUs with bf16 instructions (AVX512-BF16 or AMX); on CPUs without them torch emulates it, and it
costs several times fp32's. `auto` (the suite's default) picks bf16 only where the CPU has the instructions. This script
fits the suite's default generator on its seen tasks (fp32 pools; the network's weights do not change the cost), then
times, for fp32 and bf16, cold generation of the held-out tasks' conditions against fine-tuning one adapter
(benchmarks/unseen.py's `timing`: alternating rounds, compiled as `loragen serve --compile` runs it and eager), and how
far bf16's condition items lie from fp32's. Writes results.json and results.md, naming the CPU.
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

from loragen import atomic
from loragen.finetune import FinetuneConfig
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.generators.hyper.items import native_bf16, resolve_precision
from loragen.suites import get_suite
from loragen.suites.defaults import suite_defaults

from unseen import timing  # benchmarks/unseen.py (this script's folder is on sys.path)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=5, help="alternating timing rounds (the median is kept)")
    args = ap.parse_args()
    suite = get_suite("text-topics")
    d = suite_defaults("text-topics")
    gen = HyperGenerator.fit(replace(HyperConfig(**d.hyper), condition_precision="fp32"), suite=suite, show=False)
    base, ft = suite.base_model(), FinetuneConfig(**d.finetune)
    tasks = [t.name for t in suite.heldout_tasks()]
    conds = [suite.condition(t, draw=7) for t in tasks]
    rows = {}
    for precision in ("fp32", "bf16"):
        gen.items.precision = precision
        gen.items.clear_cache()
        items = torch.cat([gen.items(c) for c in conds])  # (ΣK, F + C)
        if precision == "fp32":
            ref = items
        t = timing(gen, suite, base, gen.layout, tasks, ft, repeats=args.repeats)
        rows[precision] = {**t, "speedup_cold": t["finetune_s"] / t["generate_cold_s"],
                           "speedup_cold_eager": t["finetune_s"] / t["generate_cold_eager_s"],
                           "item_cosine_min": torch.nn.functional.cosine_similarity(items, ref).min().item(),
                           "item_rel_error": ((items - ref).norm() / ref.norm()).item()}
        print(precision, rows[precision], flush=True)
    r = {"command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
         "native_bf16": native_bf16("cpu"), "auto": resolve_precision("auto", "cpu"), "threads": torch.get_num_threads(),
         "conditions": len(conds), "precisions": rows}
    lines = [f"# Condition precision on this machine: {r['cpu']} ({r['cpu_capability']}, {r['threads']} threads)", "",
             f"Command: `{r['command']}`", "",
             f"text-topics' default generator, cold generation for {rows['fp32']['batch']} held-out tasks' conditions (16 "
             "examples each, read through MiniLM; condition encoding included) against fine-tuning one adapter (the zoo's "
             f"recipe), medians of {args.repeats} alternating rounds; items: the condition rows bf16 gives for all "
             f"{len(conds)} held-out tasks, against fp32's.", "",
             "| precision | fine-tuning (s) | cold, compiled (ms) | speedup | cold, eager (ms) | speedup | item cosine (min) | item error |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {p} | {t['finetune_s']:.2f} | {1e3 * t['generate_cold_s']:.2f} | {t['speedup_cold']:.0f}× | "
              f"{1e3 * t['generate_cold_eager_s']:.2f} | {t['speedup_cold_eager']:.0f}× | {t['item_cosine_min']:.5f} | "
              f"{100 * t['item_rel_error']:.2f}% |" for p, t in rows.items()]
    lines += ["", f"bf16 instructions here: {'yes' if r['native_bf16'] else 'no'}; `auto` picks **{r['auto']}**.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out / "results.json", r)
    atomic.write_bytes(args.out / "results.md", "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
