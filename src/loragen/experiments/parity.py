"""Data-parallel parity: a tiny hyper fit (digits-domains, quick) that N processes under `accelerate launch` must train
to the weights one process reaches with the same global batch.

    accelerate launch --multi_gpu --num_processes 2 -m loragen.experiments.parity --out DIR   # gloo on a CPU machine
    python -m loragen.experiments.parity --out DIR          # the one-process reference

Writes the generator to DIR (main process only) and DIR/parity.json with the fit's seconds per step.
`--stop-after-save`: the main process exits right after the first training-state save, as if the run were killed
there; the same command again resumes it.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from loragen import atomic

QUICK_SUITE = {"n_tasks": 12, "n_extrapolation": 2}


def hyper_config(steps: int, tasks_per_step: int):
    """The quick digits-domains hyper config: `tasks_per_step` tasks of 8 examples a step, a state every steps / 2."""
    from loragen.generators.hyper import HyperConfig
    from loragen.suites.defaults import suite_defaults

    cfg = HyperConfig(**suite_defaults("digits-domains", quick=True).hyper)
    return replace(cfg, steps=steps, tasks_per_step=tasks_per_step, checkpoint_every=max(1, steps // 2))


def fit(out: str | Path, steps: int = 20, tasks_per_step: int = 4, show: bool = False):
    """Fit the tiny hyper generator into `out` (resuming a state there); returns it."""
    from loragen.generators.hyper import HyperGenerator
    from loragen.suites import get_suite

    suite = get_suite("digits-domains", **QUICK_SUITE)
    return HyperGenerator.fit(hyper_config(steps, tasks_per_step), suite=suite, out=out, show=show)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tasks-per-step", type=int, default=4, help="the global batch: tasks per step (8 examples each)")
    ap.add_argument("--stop-after-save", action="store_true", help="exit after the first state save (a killed run)")
    args = ap.parse_args(argv)
    import loragen.training as T
    from loragen.process_group import process_group

    pg = process_group()
    if args.stop_after_save:
        real = T.save_state

        def save_then_exit(*a, **k):
            real(*a, **k)
            os._exit(17)  # the launcher stops the other processes

        T.save_state = save_then_exit
    t0 = time.perf_counter()
    gen = fit(args.out, args.steps, args.tasks_per_step)
    if pg.is_main:
        summary = gen.fit_summary
        atomic.write_json(args.out / "parity.json", {"processes": pg.world, "steps": args.steps,
                                                     "fit_s": summary["fit_s"], "wall_s": time.perf_counter() - t0,
                                                     "step_s": summary["fit_s"] / max(1, args.steps - summary["resumed_at"]),
                                                     "loss": summary["loss"], "resumed_at": summary["resumed_at"]})


if __name__ == "__main__":
    main()
