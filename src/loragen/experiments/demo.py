"""The demo: zoo → generator (hyper by default; pdiff) → generated adapters, measured against fine-tuning and the
zoo baselines, on a built-in suite."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loragen.errors import LoragenError
from loragen.evaluate import report
from loragen.evaluate.evaluation import evaluate
from loragen.finetune import FinetuneConfig
from loragen.generators.base import CONFIG_FILE, load_generator
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.generators.pdiff import PDiffConfig, PDiffGenerator
from loragen.suites import get_suite
from loragen.suites.defaults import suite_defaults
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
        """The measured default configuration of a built-in suite (its SuiteDefaults); `quick` is a tiny one for tests
        (seconds, numbers meaningless)."""
        d = suite_defaults(suite, quick)
        return cls(suite=suite, finetune=FinetuneConfig(**d.finetune), hyper=HyperConfig(**d.hyper),
                   generator=PDiffConfig(**d.pdiff), suite_kwargs=dict(d.suite_kwargs), n_samples=d.n_samples,
                   task_stride=d.task_stride, max_heldout=d.max_heldout)


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
