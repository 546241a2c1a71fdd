"""The demo: zoo → generator (hyper by default; pdiff) → generated adapters, measured against fine-tuning and the
zoo baselines, on a built-in suite."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from loragen.errors import LoragenError
from loragen.evaluate import report
from loragen.evaluate.evaluation import evaluate
from loragen.finetune import FinetuneConfig
from loragen.generators.base import CONFIG_FILE, load_generator
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.generators.pdiff import PDiffConfig, PDiffGenerator
from loragen.suites import get_suite
from loragen.zoo.collect import collect


@dataclass
class DemoConfig:
    suite: str = "digits-domains"  # built-in suite name
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # zoo collection
    method: str = "hyper"  # which generator the demo trains: hyper (the best on unseen tasks, benchmarks/unseen.py) | pdiff
    hyper: HyperConfig = field(default_factory=HyperConfig)  # hyper training (task objective: no zoo needed)
    generator: PDiffConfig = field(default_factory=PDiffConfig)  # pdiff training
    suite_kwargs: dict = field(default_factory=dict)  # arguments of the built-in suite (quick runs use fewer tasks)
    n_samples: int = 20  # N: adapters generated per condition (Cond P-Diff generates 20)
    task_stride: int = 1  # use every k-th seen task (quick runs use fewer)
    max_heldout: int | None = None  # cap on held-out tasks (quick runs)

    @classmethod
    def for_suite(cls, suite: str = "digits-domains", quick: bool = False) -> "DemoConfig":
        """The measured default configuration of a built-in suite; `quick` is a tiny one for tests (seconds, numbers
        meaningless)."""
        if suite == "text-topics":
            ft = FinetuneConfig(rank=2, alpha=4.0, steps=120, lr=2e-3, batch_size=16, keep_last=10, save_every=5)
            gen = PDiffConfig(encoder="text", k_exemplars=4, ae_patch=64, ae_steps=2000)
            hyper = HyperConfig(encoder="text", rank=ft.rank, lora_alpha=ft.alpha, k_exemplars=4, width=256, steps=600,
                                tasks_per_step=8, examples_per_task=8)
            cfg = cls(suite=suite, finetune=ft, hyper=hyper, generator=gen, n_samples=10)
        else:  # 80 + 10 tasks keep the demo within 5 minutes; benchmarks/unseen.py studies 120 + 20
            cfg = cls(suite=suite, suite_kwargs={"n_tasks": 80, "n_extrapolation": 10})
        if quick:
            cfg.finetune = replace(cfg.finetune, steps=10 if suite == "text-topics" else 40, keep_last=2, save_every=5)
            cfg.generator = replace(cfg.generator, ae_steps=40, diffusion_steps=40, ae_channels=(8, 8), latent_dim=16,
                                    width=32, depth=1, cond_draws=4, sample_steps=5, checkpoint_every=20)
            cfg.hyper = replace(cfg.hyper, steps=40, width=32, cond_dim=16, tasks_per_step=4, examples_per_task=8, checkpoint_every=20)
            cfg.n_samples, cfg.task_stride, cfg.max_heldout = 3, 6, 1 if suite == "text-topics" else 2
            if suite == "digits-domains":
                cfg.suite_kwargs, cfg.task_stride = {"n_tasks": 12, "n_extrapolation": 2}, 1
        return cfg


def run(out: str | Path, cfg: DemoConfig, overwrite: bool = False, show: bool = True, suite_kwargs: dict | None = None,
        seed: int = 0) -> dict:
    """Collect (or resume) the zoo and the held-out reference fine-tunes, train (or resume) the generator, evaluate,
    write results.json, report.md, plots and a few generated adapters as PEFT folders under `out`."""
    out = Path(out)
    if (out / "results.json").exists() and not overwrite:
        raise LoragenError(f"{out / 'results.json'} exists; pass --overwrite to replace the report (zoo and generator are reused)")
    t0 = time.perf_counter()
    suite = get_suite(cfg.suite, **cfg.suite_kwargs, **(suite_kwargs or {}))
    seen = [t.name for t in suite.seen_tasks()][:: cfg.task_stride]
    heldout = [t.name for t in suite.heldout_tasks()][: cfg.max_heldout]
    zoo, _ = collect(suite, out / "zoo", seen, cfg.finetune, show)
    reference, _ = collect(suite, out / "reference", heldout, cfg.finetune, show)
    gen_dir = out / "generator"
    gen_cfg = cfg.hyper if cfg.method == "hyper" else cfg.generator
    if (gen_dir / CONFIG_FILE).exists():
        generator = load_generator(gen_dir)
        if generator.name != cfg.method or asdict(generator.config) != asdict(gen_cfg) or generator.tasks != zoo.tasks():
            raise LoragenError(f"{gen_dir} holds a generator trained with another config or zoo; use a new --out")
    elif cfg.method == "hyper":  # trained through the task loss on the zoo's tasks (their data, not their adapters)
        generator = HyperGenerator.fit(gen_cfg, suite=suite, tasks=zoo.tasks(), zoo=zoo, out=gen_dir, show=show)
    else:
        generator = PDiffGenerator.fit(zoo, gen_cfg, out=gen_dir, show=show)
    leak = sorted(set(heldout) & set(generator.tasks))
    if leak:
        raise LoragenError(f"held-out tasks reached the generator's training tasks: {leak[:5]}")
    ev = evaluate(suite, generator, zoo, reference, cfg.n_samples, seed=seed, show=show)
    for task in (seen[0], heldout[0]):
        for i, adapter in enumerate(generator.generate(suite.condition(task), n=2)):
            adapter.save(out / "adapters" / task / f"sample_{i}", overwrite=True)
    results = report.results_json(suite.name, ev, time.perf_counter() - t0,
                                  {"config": {"finetune": asdict(cfg.finetune), "method": cfg.method,
                                              "generator": asdict(gen_cfg), "suite": cfg.suite_kwargs,
                                              "n_samples": cfg.n_samples}})
    report.write(out, results, ev)
    return results
