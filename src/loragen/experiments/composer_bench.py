"""The Composer benchmark on digits-gen: Composer against the frozen backbone, two equal-effort LoRA controls and
test-time training, its ablations, and its inference cost. All are measured in one run.

1. Backbone and metric classifier from the suite (cached), trained on the train split only.
2. Learning rate per trained method, chosen on validation digits-FD: Composer and the two controls, a static LoRA
   (one LoRA shared by all classes) and a per-class LoRA (one per class), are each trained at every lr of `lr_grid`
   (extended past an edge, up to `lr_extend` times, while the best lr lies at that edge) with seed 0, by the same loop with the same steps, batches, noise and optimiser. Each is scored by digits-FD of
   `val_samples` images (one sampling seed) against the validation split, and the lr with the lowest is kept. The
   test split is not used to choose anything.
3. Training seeds: at its chosen lr, each trained method is trained with `train_seeds` seeds (seed 0 is the grid's).
   Per-instance test-time training (TTT) fits a fresh LoRA of the same rank on each class's training images for a
   few steps (its lr `ttt_lr` is fixed).
4. Test scores: `n_samples` images of mixed classes per method, training seed and sampling seed; digits-FD against
   the test split and class consistency. A trained method's score is the mean over training × sampling seeds, with
   the std over training seeds (of the per-seed means) and the mean std over sampling seeds.
5. Verdict: Composer beats a control when its FD is lower by more than the training seeds' spread (the sum of the
   two methods' stds over training seeds); the claim survives when it beats both tuned controls so.
6. Ablations (rank, α, attention, generator), each trained like the default at Composer's chosen lr, seed 0.
7. Cost: sampling time and peak memory of Composer vs the backbone for mixed-class batches (interleaved medians),
   TTT's cost, and per-sample batched LoRA with all-distinct adapters vs the base forward pass.
Writes DIR/results.json, DIR/report.md, DIR/grid_<method>.png, DIR/ablations.png; trained generators go to
DIR/generators/<method>_lr<lr>_seed<seed> (ablations: <name>_lr<lr>) and are reused when the bench runs again (an
interrupted run resumes).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from loragen.adapters.batched import batched_lora
from loragen.adapters.layout import LoraLayout
from loragen.errors import ConfigError, LoragenError
from loragen.evaluate.cost import interleaved_times, peak_memory
from loragen.generators.composer import ComposerConfig, ComposerGenerator
from loragen.generators.composer.generator import CONFIG_FILE
from loragen.generators.composer.ttt import TestTimeTraining
from loragen.suites.digits_gen import QUICK, DigitsGen, DigitsGenConfig

METHODS = ("backbone", "static_lora", "per_class_lora", "composer", "ttt")
# method -> ComposerConfig changes; each is tuned on the lr grid and trained with several seeds
TRAINED = {"composer": {}, "static_lora": {"generator": "static"}, "per_class_lora": {"generator": "per-class"}}
CONTROLS = ("static_lora", "per_class_lora")  # the equal-effort controls Composer's claim is tested against
ABLATIONS = {  # name -> ComposerConfig changes; the default row is Composer's seed-0 run. "alpha" rows: Composer's α,
    # the context share (the names stay those of earlier results and trained folders)
    "rank=4": {"rank": 4}, "rank=16": {"rank": 16},
    "alpha=0": {"context_share": 0.0}, "alpha=0.5": {"context_share": 0.5}, "alpha=1": {"context_share": 1.0},
    "attention=standard": {"attention": "standard"}, "generator=mlp": {"generator": "mlp"},
}
LR_LADDER = tuple(float(f"{m}e{e}") for e in range(-6, 0) for m in (1, 3))  # 1e-6, 3e-6, …, 3e-1: extensions
VAL_SEED = 1000  # sampling seed of validation scores, apart from the test scores' seeds 0 … seeds − 1


@dataclass
class BenchConfig:
    suite: DigitsGenConfig = field(default_factory=DigitsGenConfig)  # backbone, classifier and splits
    composer: ComposerConfig = field(default_factory=ComposerConfig)  # the default Composer; lr and seed: set by the bench
    lr_grid: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # AdamW lrs each trained method is tried at (seed 0)
    lr_extend: int = 1  # at most this many more lrs per method, one LR_LADDER step past the edge while the best is there
    val_samples: int = 250  # images per validation score, one sampling seed (25 per class; the val split has 269)
    train_seeds: int = 3  # training seeds of each trained method at its chosen lr
    n_samples: int = 500  # images per method and seed for test digits-FD (50 per class; the test split has 539)
    seeds: int = 3  # sampling seeds per trained generator; FD and class consistency are their mean (± std)
    sample_steps: int = 50  # DDIM steps (the overhead target is for >= 50)
    ttt_steps: int = 20  # test-time training: optimiser steps per condition
    ttt_lr: float = 1e-3  # test-time training: AdamW learning rate (a few steps need a larger one than 1e-4)
    overhead_batches: tuple[int, ...] = (32, 256, 1000)  # mixed-class batch sizes for the cost ratios
    overhead_repeats: int = 3  # interleaved timing rounds per batch size
    memory_steps: int = 5  # DDIM steps while profiling memory (the peak is per step)
    lora_batch: int = 256  # batch of the batched-LoRA forward-pass ratio
    ablations: bool = True  # also train and score the ablation rows

    def __post_init__(self):
        if not self.lr_grid or min(self.lr_grid) <= 0:
            raise ConfigError(f"lr_grid must hold at least one positive learning rate; found {self.lr_grid}")
        for name, least in (("val_samples", 2), ("n_samples", 2), ("train_seeds", 1), ("seeds", 1)):  # FD needs 2 images
            if getattr(self, name) < least:
                raise ConfigError(f"{name} must be >= {least}; found {getattr(self, name)}")

    @classmethod
    def quick(cls) -> "BenchConfig":
        """Seconds; for tests. The numbers mean nothing."""
        return cls(suite=QUICK, composer=ComposerConfig(rank=4, width=32, layers=1, heads=2, steps=6, batch_size=16,
                                                        checkpoint_every=3),
                   lr_grid=(1e-3, 1e-2), lr_extend=1, val_samples=20, train_seeds=2, n_samples=20, seeds=1, sample_steps=3,
                   ttt_steps=2, overhead_batches=(10,), overhead_repeats=1, memory_steps=2, lora_batch=8)


def select_lr(val_fd: dict[float, float | None]) -> float:
    """The learning rate with the lowest validation digits-FD. A run whose samples were not finite (None) ranks last;
    of equal FDs the smaller lr wins."""
    finite = {lr: fd for lr, fd in val_fd.items() if fd is not None and math.isfinite(fd)}
    if not finite:
        raise LoragenError(f"no learning rate of the grid gave finite samples; validation digits-FD per lr: {val_fd}")
    return min(finite, key=lambda lr: (finite[lr], lr))


def beyond_edge(val_fd: dict[float, float | None]) -> float | None:
    """When the best lr so far lies at an edge of those tried, the next lr of LR_LADDER past that edge (a best at the
    edge says the grid may be too narrow); else None."""
    best, tried = select_lr(val_fd), sorted(val_fd)
    if best not in (tried[0], tried[-1]) or len(tried) < 2:
        return None
    below, above = [x for x in LR_LADDER if x < tried[0]], [x for x in LR_LADDER if x > tried[-1]]
    step = below[-1:] if best == tried[0] else above[:1]
    return step[0] if step else None


def compare(fd: dict[str, float], fd_train_std: dict[str, float]) -> dict:
    """Composer against each control: margin = control's FD − Composer's (> 0: Composer better), spread = the sum of
    the two stds over training seeds, verdict 'better' / 'worse' when |margin| > spread, else 'within spread'; and
    whether the claim survives (better than every control) and which control is best."""
    rows = {}
    for c in CONTROLS:
        margin, spread = fd[c] - fd["composer"], fd_train_std[c] + fd_train_std["composer"]
        verdict = "better" if margin > spread else "worse" if -margin > spread else "within spread"
        rows[c] = {"margin": margin, "spread": spread, "verdict": verdict}
    return {"controls": rows, "best_control": min(CONTROLS, key=lambda c: fd[c]),
            "claim_survives": all(r["verdict"] == "better" for r in rows.values())}


def _folder(out: Path, name: str, lr: float, seed: int | None = None) -> Path:
    """DIR/generators/<name>_lr<lr>[_seed<seed>]: one folder per trained generator, reused when the bench reruns."""
    return out / "generators" / (f"{name}_lr{lr:g}" + ("" if seed is None else f"_seed{seed}"))


def _train(suite: DigitsGen, backbone: nn.Module, cfg: ComposerConfig, folder: Path, show: bool, desc: str) -> ComposerGenerator:
    """Load a finished generator from `folder` if it was trained with `cfg`, else train (resuming) into it."""
    if (folder / CONFIG_FILE).exists():
        gen = ComposerGenerator.load(folder)
        if asdict(gen.config) == asdict(cfg) and gen.suite_info["config"] == asdict(suite.config):
            return gen
        raise LoragenError(f"{folder} holds a generator trained with another config; use a new --out")
    return ComposerGenerator.fit(suite, cfg, backbone=backbone, out=folder, show=show, desc=desc)


def _score(suite: DigitsGen, sample_fn, n: int, seeds: int) -> dict:
    """Mean and std over sampling seeds of test digits-FD and class consistency; the first seed's images for the
    grid."""
    labels = suite.balanced_labels(n)
    runs, first = [], None
    for seed in range(seeds):
        images = sample_fn(labels, seed)
        first = images if first is None else first
        runs.append(suite.image_metrics(images, labels))
    out = {k: statistics.mean(r[k] for r in runs) for k in ("fd", "class_acc")}
    out |= {f"{k}_std": statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0 for k in ("fd", "class_acc")}
    return out | {"images": first, "labels": labels}


def _over_train_seeds(per_seed: list[dict]) -> dict:
    """One trained method's test score from its per-training-seed scores: the mean over training × sampling seeds
    (every seed has as many samples), the std over training seeds, the mean std over sampling seeds."""
    out = {}
    for k in ("fd", "class_acc"):
        values = [s[k] for s in per_seed]
        out[k] = statistics.mean(values)
        out[f"{k}_train_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"{k}_std"] = statistics.mean(s[f"{k}_std"] for s in per_seed)
        out[f"{k}_per_train_seed"] = values
    return out | {"images": per_seed[0]["images"], "labels": per_seed[0]["labels"]}


@torch.no_grad()
def _validate(suite: DigitsGen, backbone: nn.Module, gen: ComposerGenerator, cfg: BenchConfig) -> dict:
    """Validation digits-FD and class consistency of `val_samples` images (sampling seed VAL_SEED); None for both
    when the samples are not finite (a diverged training)."""
    labels = suite.balanced_labels(cfg.val_samples)
    images = gen.sample(suite, backbone, labels, cfg.sample_steps, VAL_SEED)
    if not torch.isfinite(images).all():
        return {"fd": None, "class_acc": None}
    return suite.image_metrics(images, labels, split="val")


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

    # 2. each trained method's lr, on validation digits-FD (seed 0)
    selection, chosen = {}, {}
    for method, change in TRAINED.items():
        grid, lrs = [], list(cfg.lr_grid)
        while lrs:
            lr = lrs.pop(0)
            gen = _train(suite, backbone, replace(cfg.composer, **change, lr=lr, seed=0), _folder(out, method, lr, 0),
                         show, f"{method} lr {lr:g} seed 0")
            v = _validate(suite, backbone, gen, cfg)
            grid.append({"lr": lr, "val_fd": v["fd"], "val_class_acc": v["class_acc"]})
            log(f"{method} lr {lr:g}: validation digits-FD " + ("not finite" if v["fd"] is None else f"{v['fd']:.2f}"))
            if not lrs and len(grid) < len(cfg.lr_grid) + cfg.lr_extend:
                lrs = [x for x in [beyond_edge({row["lr"]: row["val_fd"] for row in grid})] if x is not None]
        chosen[method] = select_lr({row["lr"]: row["val_fd"] for row in grid})
        selection[method] = grid
        log(f"{method}: lr {chosen[method]:g} chosen")

    # 3. training seeds at the chosen lr
    trained = {m: [_train(suite, backbone, replace(cfg.composer, **change, lr=chosen[m], seed=seed),
                          _folder(out, m, chosen[m], seed), show, f"{m} lr {chosen[m]:g} seed {seed}")
                   for seed in range(cfg.train_seeds)] for m, change in TRAINED.items()}
    composer = trained["composer"][0]
    ttt = TestTimeTraining(suite, backbone, cfg.composer, cfg.ttt_steps, cfg.ttt_lr)

    # 4. test scores
    def sampler(gen: ComposerGenerator):
        return lambda labels, seed: gen.sample(suite, backbone, labels, steps, seed)

    per_seed = {m: [_score(suite, sampler(g), cfg.n_samples, cfg.seeds) for g in gens] for m, gens in trained.items()}
    scores = {"backbone": _score(suite, lambda labels, seed: suite.sample(backbone, labels, steps, seed), cfg.n_samples,
                                 cfg.seeds),
              **{m: _over_train_seeds(per_seed[m]) for m in TRAINED},
              "ttt": _score(suite, lambda labels, seed: ttt.sample(labels, steps, seed), cfg.n_samples, cfg.seeds)}
    for name in METHODS:
        s = scores[name]
        spread = f" (± {s['fd_train_std']:.2f} over {cfg.train_seeds} training seeds)" if name in TRAINED else ""
        log(f"{name}: digits-FD {s['fd']:.2f} ± {s['fd_std']:.2f}{spread}, class consistency {s['class_acc']:.1f}%")

    # 5. verdict against the controls
    fd, fd_train_std = {m: scores[m]["fd"] for m in METHODS}, {m: scores[m]["fd_train_std"] for m in TRAINED}
    comparison = compare(fd, fd_train_std)

    # 6. ablations, at Composer's lr and seed 0; the default row is Composer's seed-0 run
    keys = ("fd", "fd_std", "class_acc", "class_acc_std")
    ablations = {"default": {k: per_seed["composer"][0][k] for k in keys}}
    if cfg.ablations:
        for name, change in ABLATIONS.items():
            gen = _train(suite, backbone, replace(cfg.composer, **change, lr=chosen["composer"], seed=0),
                         _folder(out, name.replace("=", "-"), chosen["composer"]), show, f"ablation {name}")
            s = _score(suite, sampler(gen), cfg.n_samples, cfg.seeds)
            ablations[name] = {k: s[k] for k in keys}
            log(f"ablation {name}: digits-FD {s['fd']:.2f} ± {s['fd_std']:.2f}, class consistency {s['class_acc']:.1f}%")

    # 7. cost
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
        "fd": fd,
        "fd_std": {m: scores[m]["fd_std"] for m in METHODS},
        "fd_train_std": fd_train_std,
        "fd_per_train_seed": {m: scores[m]["fd_per_train_seed"] for m in TRAINED},
        "class_acc": {m: scores[m]["class_acc"] for m in METHODS},
        "class_acc_std": {m: scores[m]["class_acc_std"] for m in METHODS},
        "class_acc_train_std": {m: scores[m]["class_acc_train_std"] for m in TRAINED},
        "lr": chosen,
        "lr_selection": selection,
        "comparison": comparison,
        "real_fd_floor": suite.floor_fd(),
        "val_fd_floor": suite.floor_fd("val"),
        "split_sizes": {k: len(suite.split(k).y) for k in ("train", "val", "test")},
        "overhead": {"time_ratio": head["time_ratio"], "memory_ratio": head["memory_ratio"], "batch": head["batch"],
                     "steps": steps, "per_batch": overhead},
        "ttt_cost": {"time_ratio": ttt_s / head["backbone_s"], "memory_ratio": ttt_peak / (1e6 * head["backbone_peak_mb"]),
                     "batch": head["batch"], "fit_s_per_condition": statistics.mean(ttt.fit_s.values()),
                     "steps_per_condition": cfg.ttt_steps},
        "batched_lora_ratio": lora["ratio"],
        "batched_lora": lora,
        "ablations": ablations,
        "train_s": {m: (gens[0].fit_summary or {}).get("fit_s") for m, gens in trained.items()},  # seed 0's
        "config": {"suite": asdict(cfg.suite), "composer": asdict(cfg.composer),
                   **{k: v for k, v in asdict(cfg).items() if k not in ("suite", "composer")}},
        "wall_s": time.perf_counter() - t_start,
    }
    composer_report.write(out, results, {m: (scores[m]["images"], scores[m]["labels"]) for m in METHODS})
    return results
