"""The Composer benchmark on digits-gen: Composer against the frozen backbone, a static LoRA and test-time training,
its ablations, and its inference cost. All are measured in one run.

1. Backbone and metric classifier from the suite (cached).
2. Train Composer and the static-LoRA control with the same steps, batches, noise and optimiser. Per-instance
   test-time training (TTT) fits a fresh LoRA of the same rank on each class's training images for a few steps.
3. Sample `n_samples` images of mixed classes per method and sampling seed; digits-FD and class consistency.
4. Ablations (rank, α, attention, generator), each trained like the default.
5. Cost: sampling time and peak memory of Composer vs the backbone for mixed-class batches (interleaved medians),
   TTT's cost, and per-sample batched LoRA with all-distinct adapters vs the base forward pass.
Writes DIR/results.json, DIR/report.md, DIR/grid_<method>.png, DIR/ablations.png; trained generators go to
DIR/generators/<name> and are reused when the bench runs again (an interrupted run resumes).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from loragen.adapters.batched import batched_lora
from loragen.adapters.layout import LoraLayout
from loragen.errors import LoragenError
from loragen.evaluate.cost import interleaved_times, peak_memory
from loragen.generators.composer import ComposerConfig, ComposerGenerator
from loragen.generators.composer.generator import CONFIG_FILE
from loragen.generators.composer.ttt import TestTimeTraining
from loragen.suites.digits_gen import QUICK, DigitsGen, DigitsGenConfig

METHODS = ("backbone", "static_lora", "composer", "ttt")
ABLATIONS = {  # name -> ComposerConfig changes; the default row is the main Composer run. "alpha" rows: Composer's α,
    # the context share (the names stay those of earlier results and trained folders)
    "rank=4": {"rank": 4}, "rank=16": {"rank": 16},
    "alpha=0": {"context_share": 0.0}, "alpha=0.5": {"context_share": 0.5}, "alpha=1": {"context_share": 1.0},
    "attention=standard": {"attention": "standard"}, "generator=mlp": {"generator": "mlp"},
}


@dataclass
class BenchConfig:
    suite: DigitsGenConfig = field(default_factory=DigitsGenConfig)  # backbone and classifier
    composer: ComposerConfig = field(default_factory=ComposerConfig)  # the default Composer (and its control)
    n_samples: int = 500  # images per method and seed for digits-FD (50 per class; the real test split has 539)
    seeds: int = 3  # sampling seeds; FD and class consistency are their mean (± std)
    sample_steps: int = 50  # DDIM steps (the overhead target is for >= 50)
    ttt_steps: int = 20  # test-time training: optimiser steps per condition
    ttt_lr: float = 1e-3  # test-time training: AdamW learning rate (a few steps need a larger one than 1e-4)
    overhead_batches: tuple[int, ...] = (32, 256, 1000)  # mixed-class batch sizes for the cost ratios
    overhead_repeats: int = 3  # interleaved timing rounds per batch size
    memory_steps: int = 5  # DDIM steps while profiling memory (the peak is per step)
    lora_batch: int = 256  # batch of the batched-LoRA forward-pass ratio
    ablations: bool = True  # also train and score the ablation rows

    @classmethod
    def quick(cls) -> "BenchConfig":
        """Seconds; for tests. The numbers mean nothing."""
        return cls(suite=QUICK, composer=ComposerConfig(rank=4, width=32, layers=1, heads=2, steps=6, batch_size=16,
                                                        checkpoint_every=3),
                   n_samples=20, seeds=1, sample_steps=3, ttt_steps=2, overhead_batches=(10,), overhead_repeats=1,
                   memory_steps=2, lora_batch=8)


def _train(suite: DigitsGen, backbone: nn.Module, cfg: ComposerConfig, folder: Path, show: bool, desc: str) -> ComposerGenerator:
    """Load a finished generator from `folder` if it was trained with `cfg`, else train (resuming) into it."""
    if (folder / CONFIG_FILE).exists():
        gen = ComposerGenerator.load(folder)
        if asdict(gen.config) == asdict(cfg) and gen.suite_info["config"] == asdict(suite.config):
            return gen
        raise LoragenError(f"{folder} holds a generator trained with another config; use a new --out")
    return ComposerGenerator.fit(suite, cfg, backbone=backbone, out=folder, show=show, desc=desc)


def _score(suite: DigitsGen, sample_fn, cfg: BenchConfig) -> dict:
    """Mean and std over sampling seeds of digits-FD and class consistency; the first seed's images for the grid."""
    labels = suite.balanced_labels(cfg.n_samples)
    runs, first = [], None
    for seed in range(cfg.seeds):
        images = sample_fn(labels, seed)
        first = images if first is None else first
        runs.append(suite.image_metrics(images, labels))
    out = {k: statistics.mean(r[k] for r in runs) for k in ("fd", "class_acc")}
    out |= {f"{k}_std": statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0 for k in ("fd", "class_acc")}
    return out | {"images": first, "labels": labels}


def _overhead(suite: DigitsGen, backbone: nn.Module, gen: ComposerGenerator, cfg: BenchConfig) -> list[dict]:
    """Composer vs backbone sampling, per mixed-class batch size: median time ratio and peak-memory ratio."""
    rows = []
    for batch in cfg.overhead_batches:
        labels = suite.balanced_labels(batch)
        t = interleaved_times({"backbone": lambda: suite.sample(backbone, labels, cfg.sample_steps),
                               "composer": lambda: gen.sample(suite, backbone, labels, cfg.sample_steps)},
                              repeats=cfg.overhead_repeats)
        mem_b = peak_memory(lambda: suite.sample(backbone, labels, cfg.memory_steps), [backbone])
        mem_c = peak_memory(lambda: gen.sample(suite, backbone, labels, cfg.memory_steps), [backbone, gen.net])
        rows.append({"batch": batch, "steps": cfg.sample_steps, "backbone_s": t["backbone"], "composer_s": t["composer"],
                     "time_ratio": t["composer"] / t["backbone"], "backbone_peak_mb": mem_b / 1e6,
                     "composer_peak_mb": mem_c / 1e6, "memory_ratio": mem_c / mem_b})
    return rows


def _batched_lora_ratio(backbone: nn.Module, rank: int, batch: int, repeats: int) -> dict:
    """Forward pass of the backbone with a distinct random rank-r adapter per sample on every W_Q / W_V, against
    the plain forward pass (interleaved medians)."""
    cfg = backbone.config
    layout = LoraLayout.from_model(backbone, DigitsGen.target_modules, rank, alpha=float(rank))
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for m in layout.modules:
        tensors[f"{m.name}.lora_A"] = torch.randn(batch, rank, m.in_features, generator=g) / m.in_features ** 0.5
        tensors[f"{m.name}.lora_B"] = 0.01 * torch.randn(batch, m.out_features, rank, generator=g)
    x = torch.randn(batch, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
    t, y = torch.randint(0, 1000, (batch,), generator=g), torch.arange(batch) % cfg.num_classes

    def lora():
        with batched_lora(backbone, layout, tensors):
            backbone(x, t, y)

    with torch.no_grad():
        times = interleaved_times({"base": lambda: backbone(x, t, y), "lora": lora}, repeats=max(5, 4 * repeats), warmup=2)
    return {"batch": batch, "rank": rank, "distinct_adapters": batch, "base_ms": 1e3 * times["base"],
            "lora_ms": 1e3 * times["lora"], "ratio": times["lora"] / times["base"]}


def run(out: str | Path, cfg: BenchConfig, overwrite: bool = False, show: bool = True, log=print) -> dict:
    """The whole benchmark; returns (and writes) the results dict."""
    from loragen.evaluate import composer_report

    out = Path(out)
    if (out / "results.json").exists() and not overwrite:
        raise LoragenError(f"{out / 'results.json'} exists; pass --overwrite to replace it (trained generators are reused)")
    t_start = time.perf_counter()
    torch.manual_seed(0)
    suite = DigitsGen(cfg.suite)
    backbone = suite.base_model(show=show).eval().requires_grad_(False)
    suite.classifier()
    steps = cfg.sample_steps

    # 2. train
    composer = _train(suite, backbone, cfg.composer, out / "generators" / "composer", show, "composer")
    static = _train(suite, backbone, replace(cfg.composer, generator="static"), out / "generators" / "static_lora", show,
                    "static LoRA (control)")
    ttt = TestTimeTraining(suite, backbone, cfg.composer, cfg.ttt_steps, cfg.ttt_lr)

    # 3. score
    samplers = {"backbone": lambda labels, seed: suite.sample(backbone, labels, steps, seed),
                "static_lora": lambda labels, seed: static.sample(suite, backbone, labels, steps, seed),
                "composer": lambda labels, seed: composer.sample(suite, backbone, labels, steps, seed),
                "ttt": lambda labels, seed: ttt.sample(labels, steps, seed)}
    scores = {}
    for name, fn in samplers.items():
        scores[name] = _score(suite, fn, cfg)
        log(f"{name}: digits-FD {scores[name]['fd']:.2f} ± {scores[name]['fd_std']:.2f}, "
            f"class consistency {scores[name]['class_acc']:.1f}%")

    # 4. ablations
    ablations = {"default": {k: scores["composer"][k] for k in ("fd", "fd_std", "class_acc", "class_acc_std")}}
    if cfg.ablations:
        for name, change in ABLATIONS.items():
            gen = _train(suite, backbone, replace(cfg.composer, **change), out / "generators" / name.replace("=", "-"),
                         show, f"ablation {name}")
            s = _score(suite, lambda labels, seed: gen.sample(suite, backbone, labels, steps, seed), cfg)
            ablations[name] = {k: s[k] for k in ("fd", "fd_std", "class_acc", "class_acc_std")}
            log(f"ablation {name}: digits-FD {s['fd']:.2f} ± {s['fd_std']:.2f}, class consistency {s['class_acc']:.1f}%")

    # 5. cost
    overhead = _overhead(suite, backbone, composer, cfg)
    head = overhead[-1]  # the largest batch
    head_labels = suite.balanced_labels(head["batch"])
    ttt_s = sum(ttt.fit_s.values()) + interleaved_times({"t": lambda: ttt.sample(head_labels, steps, 0)}, repeats=1,
                                                        warmup=0)["t"]
    probe = TestTimeTraining(suite, backbone, cfg.composer, cfg.ttt_steps, cfg.ttt_lr)
    # TTT's phases run one after another: its peak is the larger of one fit's and of sampling under the fitted adapters
    ttt_peak = max(peak_memory(lambda: probe.fit(0), [backbone]),
                   peak_memory(lambda: ttt.sample(head_labels, cfg.memory_steps, 0), [backbone]))
    lora = _batched_lora_ratio(backbone, cfg.composer.rank, cfg.lora_batch, cfg.overhead_repeats)

    results = {
        "suite": suite.name,
        "fd": {m: scores[m]["fd"] for m in METHODS},
        "fd_std": {m: scores[m]["fd_std"] for m in METHODS},
        "class_acc": {m: scores[m]["class_acc"] for m in METHODS},
        "class_acc_std": {m: scores[m]["class_acc_std"] for m in METHODS},
        "real_fd_floor": suite.floor_fd(),
        "overhead": {"time_ratio": head["time_ratio"], "memory_ratio": head["memory_ratio"], "batch": head["batch"],
                     "steps": steps, "per_batch": overhead},
        "ttt_cost": {"time_ratio": ttt_s / head["backbone_s"], "memory_ratio": ttt_peak / (1e6 * head["backbone_peak_mb"]),
                     "batch": head["batch"], "fit_s_per_condition": statistics.mean(ttt.fit_s.values()),
                     "steps_per_condition": cfg.ttt_steps},
        "batched_lora_ratio": lora["ratio"],
        "batched_lora": lora,
        "ablations": ablations,
        "train_s": {"composer": (composer.fit_summary or {}).get("fit_s"), "static_lora": (static.fit_summary or {}).get("fit_s")},
        "config": {"suite": asdict(cfg.suite), "composer": asdict(cfg.composer),
                   **{k: v for k, v in asdict(cfg).items() if k not in ("suite", "composer")}},
        "wall_s": time.perf_counter() - t_start,
    }
    composer_report.write(out, results, {m: (scores[m]["images"], scores[m]["labels"]) for m in METHODS})
    return results
