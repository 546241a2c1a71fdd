"""The ECM benchmark on digits-control: ECM against the frozen backbone and a ControlVAR-style full fine-tune, its
ablations, and its costs, all measured in one run.

1. Backbone (tokenizer + transformer) from the suite (cached), trained on the train split only.
2. Choices on the validation split, each by the edge F1 of `val_samples` validation controls (seed-0 runs):
   first the strength of the training images' random warp (`augment_grid`, ECM at its defaults), used by every
   trained method; then ECM's early-centric sampling (`early_grid`: decay and whether the last scale is drawn per
   image or per batch, and whether late scales' tokens are weighted up to make a step unbiased for the whole
   sequence): the most accurate of those whose training step is ≥ `min_step_cut` faster than uniform sampling's,
   used by ECM and its separate-FFN ablation; then the learning rate of ECM and of the full
   fine-tune, each from its `lr_grid`. ECM's ablations (separate FFNs, uniform scale sampling) use ECM's lr.
3. ECM's inference temperature schedule (early scales at 1.0, later ones at `late`, from scale `switch` on) is
   chosen on validation digits-FD among `schedules`, with ECM's seed-0 run; `ecm_constant_temperature` samples the
   same trained ECM runs at temperature 1.0 throughout. The backbone and the full fine-tune sample at 1.0.
4. Training seeds: every trained method is trained with `train_seeds` seeds at its lr (seed 0 is the grid's).
5. Test scores: `n_samples` test digits' edge maps as controls, each with its digit's label; one sample per control,
   one sampling seed per training seed (the backbone: `train_seeds` sampling seeds). Edge F1, digits-FD and class
   consistency: mean and std over seeds.
6. Cost: trainable parameters; seconds per training step of every trained method, interleaved on one batch
   sequence; training seconds to a validation edge F1 target (seed-0 runs evaluated every `eval_every` steps); sampling
   time and peak memory of each method vs the backbone (interleaved medians).
7. A second control (the coarse mask): ECM with the same settings, IoU / RMSE against the backbone's.
Writes DIR/results.json, DIR/report.md, DIR/grid_<method>.png, DIR/ablations.png, DIR/f1_vs_time.png; trained
modules go to DIR/modules/<method>_lr<lr>_seed<seed> and are reused when the bench runs again (an interrupted run
resumes).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from loragen import atomic
from loragen.errors import ConfigError, LoragenError
from loragen.evaluate.cost import interleaved_rounds, interleaved_times, paired_cut, peak_memory
from loragen.generators.ecm.config import ECMConfig
from loragen.generators.ecm.trained_control import TrainedControl, expected_tokens, train_control, training_rounds
from loragen.suites.digits_control import QUICK, DigitsControl, DigitsControlConfig
from loragen.suites.var_sampling import SamplingConfig, temperature_schedule

METHODS = ("backbone", "full_finetune", "ecm", "ecm_separate_ffn", "ecm_uniform_scales", "ecm_constant_temperature")
TRAINED = {  # method -> ECMConfig changes
    "full_finetune": {"method": "full_finetune", "scale_sampling": "uniform"},
    "ecm": {},
    "ecm_separate_ffn": {"shared_ffn": False},
    "ecm_uniform_scales": {"scale_sampling": "uniform"},
}
TUNED = ("ecm", "full_finetune")  # methods with their own lr; the ECM ablations take ECM's
EARLY_FIELDS = ("early_decay", "cut_per", "scale_weighting")  # the ECMConfig fields of an early_grid candidate
VAL_SEED = 1000  # sampling seed of validation scores, apart from the test seeds


@dataclass
class BenchConfig:
    suite: DigitsControlConfig = field(default_factory=DigitsControlConfig)
    ecm: ECMConfig = field(default_factory=lambda: ECMConfig(lr=3e-3, early_decay=1.0))  # ECM's settings; the bench
    # chooses the warp at this lr and decay, then early-centric sampling at this lr, then the lr. ECMConfig's defaults
    # are the bench's choices: starting from them would change what the first choices are made with
    augment_grid: tuple[float, ...] = (0.0, 0.5, 1.0)  # warp strengths tried (ECM at the lr and decay above, seed 0)
    early_grid: tuple[tuple[float, str, str], ...] = ((0.7, "batch", "none"), (0.7, "sample", "none"), (1.0, "sample", "none"),
                                                      (1.0, "sample", "inverse"), (1.1, "sample", "none"), (1.2, "sample", "none"),
                                                      (1.4, "sample", "none"), (1.5, "sample", "none"))
    # ECM's early-centric sampling candidates (early_decay, cut_per, scale_weighting); decays above 1 keep more late
    # tokens: 1.0 keeps 41 of 130 tokens a sequence, 1.2 keeps 54, 1.5 keeps 70 (1.6: 75, a step only ~25% faster)
    min_step_cut: float = 0.30  # early-centric sampling must make a training step at least this much faster than
    # uniform sampling (the target): the most accurate candidate that does is chosen
    lr_grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: {"ecm": (1e-3, 3e-3, 1e-2, 3e-2),
                                                                          "full_finetune": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)})
    # lrs ECM and the full fine-tune are tried at (seed 0); ECM's diverges at 3e-2
    schedules: tuple[tuple[float, int], ...] = ((0.8, 3), (0.8, 4), (0.6, 3), (0.6, 4))  # (late temperature, switch
    # scale) candidates of ECM's temperature schedule; early scales sample at 1.0
    guidance: float = 1.5  # classifier-free guidance at the last scale (VAR's ramp)
    top_p: float = 0.96  # VAR's nucleus sampling
    val_samples: int = 250  # validation controls per score (the val split has 269)
    n_samples: int = 500  # test controls per score (the test split has 539)
    train_seeds: int = 3  # training seeds of every trained method (and sampling seeds of the backbone)
    eval_every: int = 150  # steps between validation edge F1 evaluations of the seed-0 runs (the time-to-F1 curve)
    curve_samples: int = 100  # validation controls per curve point
    target_share: float = 0.95  # the F1 target: this share of the lower of ECM's and the full fine-tune's final F1
    timing_steps: int = 10  # training steps per timing round (the same batch sequence for every method)
    timing_repeats: int = 15  # interleaved timing rounds (a step's time varies ~10% between rounds on 2 cores; the
    # step-time cut is the median of the per-round cuts)
    cost_batch: int = 100  # controls per sampling-time / memory measurement
    mask_control: bool = True  # also train ECM on the coarse mask control (train_seeds seeds)

    def __post_init__(self):
        if set(self.lr_grid) != set(TUNED) or min(min(g, default=0) for g in self.lr_grid.values()) <= 0:
            raise ConfigError(f"lr_grid must give positive learning rates for {TUNED}; found {self.lr_grid}")
        if not self.augment_grid or min(self.augment_grid) < 0:
            raise ConfigError(f"augment_grid must hold warp strengths >= 0; found {self.augment_grid}")
        for name, least in (("val_samples", 2), ("n_samples", 2), ("train_seeds", 1), ("curve_samples", 2)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name} must be >= {least}; found {getattr(self, name)}")

    @classmethod
    def quick(cls) -> "BenchConfig":
        """Seconds; for tests. The numbers mean nothing."""
        return cls(suite=QUICK, ecm=ECMConfig(steps=8, batch_size=8, adapters=2, width=16, encoder_width=8),
                   augment_grid=(0.0, 0.5), early_grid=((0.7, "batch", "none"), (1.0, "sample", "inverse")), lr_grid={"ecm": (1e-3, 3e-3), "full_finetune": (1e-3,)}, schedules=((0.6, 2),), val_samples=10, n_samples=10, train_seeds=2,
                   eval_every=4, curve_samples=4, timing_steps=2, timing_repeats=1, cost_batch=4, mask_control=True)

    def sampling(self, temperatures: tuple[float, ...] | float = 1.0) -> SamplingConfig:
        return SamplingConfig(guidance=self.guidance, top_p=self.top_p, temperatures=temperatures)


class Bench:
    """One run of the benchmark: the suite, its data and every trained module's folder under `out`."""

    def __init__(self, out: Path, cfg: BenchConfig, show: bool, log):
        self.out, self.cfg, self.show, self.log = out, cfg, show, log
        self.suite = DigitsControl(cfg.suite)
        self.tokenizer, self.backbone = self.suite.networks(show=show)
        self._controls: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.augment = self.cfg.ecm.augment  # until chosen on validation
        self.early = tuple(getattr(self.cfg.ecm, f) for f in EARLY_FIELDS)  # early-centric sampling, until chosen

    def controls(self, kind: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A split's controls (N, 1, S, S) and labels (N,), computed once."""
        if (kind, split) not in self._controls:
            self._controls[kind, split] = self.suite.controls(kind, split)
        return self._controls[kind, split]

    def method_config(self, method: str, lr: float, seed: int, control: str = "edges") -> ECMConfig:
        config = replace(self.cfg.ecm, **TRAINED[method], lr=lr, seed=seed, control=control, augment=self.augment)
        if config.scale_sampling == "uniform":
            return config
        return replace(config, **dict(zip(EARLY_FIELDS, self.early)))

    def trained(self, method: str, lr: float, seed: int, control: str = "edges") -> TrainedControl:
        config = self.method_config(method, lr, seed, control)
        early = "" if config.scale_sampling == "uniform" else (f"_early{config.early_decay:g}-{config.cut_per}"
                                                               + ("-inverse" if config.scale_weighting == "inverse" else ""))
        folder = self.out / "modules" / (f"{method}{'' if control == 'edges' else '_' + control}{early}"
                                         f"_aug{self.augment:g}_lr{lr:g}_seed{seed}")
        curve = (lambda tc: self.score(tc, 1.0, "val", self.cfg.curve_samples, VAL_SEED)["control_f1"]) if seed == 0 else None
        return train_control(self.suite, config, folder, self.show, evaluate=curve,
                             eval_every=self.cfg.eval_every if curve else 0)

    def images(self, tc: TrainedControl | None, temperatures, split: str, n: int, seed: int, control: str = "edges"):
        """Samples (n, 1, S, S) for the first n controls of `split` (None: the backbone, without control)."""
        controls, labels = (x[:n] for x in self.controls(control, split))
        model = self.backbone if tc is None else tc.model_fn(controls)
        return self.suite.generate(model, labels, self.cfg.sampling(temperatures), seed), controls, labels

    def score(self, tc: TrainedControl | None, temperatures, split: str, n: int, seed: int, control: str = "edges") -> dict:
        images, controls, labels = self.images(tc, temperatures, split, n, seed, control)
        return self.suite.metrics(control, controls, images, labels, split)


def _mean_std(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        values = [r[k] for r in rows]
        out[k], out[f"{k}_std"] = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def seconds_to_target(history: list[dict], target: float) -> float | None:
    """Training seconds at the first evaluation whose validation edge F1 reached `target` (None: never)."""
    return next((h["train_s"] for h in history if h["val_control_f1"] >= target), None)


def run(out: str | Path, cfg: BenchConfig, overwrite: bool = False, show: bool = True, log=print) -> dict:
    """Run the benchmark into `out` (see the module docstring); returns the results dict also written to
    results.json."""
    from loragen.evaluate import ecm_report

    out = Path(out)
    if (out / "results.json").exists() and not overwrite:
        raise LoragenError(f"{out} already holds results.json; pass overwrite=True (--overwrite) to replace it")
    b = Bench(out, cfg, show, log)
    base_val = b.score(None, 1.0, "val", cfg.val_samples, VAL_SEED)
    log(f"backbone on validation: edge F1 {base_val['control_f1']:.1f}, digits-FD {base_val['fd']:.2f}")

    # 2. the training images' warp, then the lr per tuned method, on validation edge F1 (seed 0)
    val_f1_aug = {}
    for a in cfg.augment_grid:
        b.augment = a
        val_f1_aug[a] = b.score(b.trained("ecm", cfg.ecm.lr, 0), 1.0, "val", cfg.val_samples, VAL_SEED)["control_f1"]
    b.augment = max(val_f1_aug, key=lambda a: (val_f1_aug[a], -a))
    log(f"warp strength: validation edge F1 {val_f1_aug} → {b.augment:g}")
    # early-centric sampling: the most accurate candidate whose step is at least min_step_cut faster than uniform
    # sampling's (interleaved timing of training's first steps); if none is, the fastest
    val_f1_early, rounds = {}, {}
    for early in cfg.early_grid:
        b.early = early
        val_f1_early[early] = b.score(b.trained("ecm", cfg.ecm.lr, 0), 1.0, "val", cfg.val_samples, VAL_SEED)["control_f1"]
        rounds[early] = training_rounds(b.suite, b.method_config("ecm", cfg.ecm.lr, 0), cfg.timing_steps)
    rounds["uniform"] = training_rounds(b.suite, b.method_config("ecm_uniform_scales", cfg.ecm.lr, 0), cfg.timing_steps)
    times = interleaved_rounds(rounds, repeats=cfg.timing_repeats)
    cut_early = {e: paired_cut(times[e], times["uniform"])["cut"] for e in cfg.early_grid}
    fast = [e for e in cfg.early_grid if cut_early[e] >= cfg.min_step_cut]
    b.early = max(fast, key=val_f1_early.get) if fast else max(cut_early, key=cut_early.get)
    log(f"early-centric sampling: validation edge F1 {val_f1_early}, step time cut {cut_early} → {b.early}")
    val_f1: dict[str, dict[float, float]] = {}
    for method in TUNED:
        val_f1[method] = {lr: b.score(b.trained(method, lr, 0), 1.0, "val", cfg.val_samples, VAL_SEED)["control_f1"]
                          for lr in cfg.lr_grid[method]}
        log(f"{method}: validation edge F1 per lr {val_f1[method]}")
    lr = {m: max(val_f1[m], key=lambda x: (val_f1[m][x], -x)) for m in TUNED}
    lr |= {m: lr["ecm"] for m in TRAINED if m not in TUNED}

    # 3. ECM's temperature schedule, on validation digits-FD
    ecm0 = b.trained("ecm", lr["ecm"], 0)
    K = len(b.backbone.scales)
    fd_of = {(late, switch): b.score(ecm0, temperature_schedule(K, 1.0, late, switch), "val", cfg.val_samples,
                                     VAL_SEED)["fd"] for late, switch in cfg.schedules}
    schedule = temperature_schedule(K, 1.0, *min(fd_of, key=fd_of.get))
    val_fd = {f"{late:g}@{switch}": fd for (late, switch), fd in fd_of.items()}
    val_fd["constant"] = b.score(ecm0, 1.0, "val", cfg.val_samples, VAL_SEED)["fd"]
    log(f"ECM temperature schedule: validation digits-FD {val_fd}; chosen {schedule}")

    # 4-5. every trained method x training seeds; test scores
    runs = {m: [b.trained(m, lr[m], s) for s in range(cfg.train_seeds)] for m in TRAINED}
    runs["ecm_constant_temperature"] = runs["ecm"]  # the same trained modules, sampled at a constant temperature
    temps = {"backbone": 1.0, "full_finetune": 1.0, "ecm": schedule, "ecm_separate_ffn": schedule,
             "ecm_uniform_scales": schedule, "ecm_constant_temperature": 1.0}
    scores: dict[str, list[dict]] = {"backbone": [b.score(None, 1.0, "test", cfg.n_samples, s) for s in range(cfg.train_seeds)]}
    for m in METHODS[1:]:
        scores[m] = [b.score(tc, temps[m], "test", cfg.n_samples, s) for s, tc in enumerate(runs[m])]
    grids = {m: b.images(runs[m][0] if m in runs else None, temps[m], "test", 40, 0) for m in METHODS}

    # 6. cost
    params = {m: runs[m][0].trainable_params if m in runs else 0 for m in METHODS}
    backbone_params = sum(p.numel() for p in b.backbone.parameters())
    rounds = {m: training_rounds(b.suite, b.method_config(m, lr[m], 0), cfg.timing_steps) for m in TRAINED}
    times = interleaved_rounds(rounds, repeats=cfg.timing_repeats)
    step_s = {m: statistics.median(t) / cfg.timing_steps for m, t in times.items()}
    step_s["ecm_constant_temperature"], step_s["backbone"] = step_s["ecm"], 0.0
    target = cfg.target_share * min(runs["ecm"][0].history[-1]["val_control_f1"], runs["full_finetune"][0].history[-1]["val_control_f1"])
    to_target = {m: seconds_to_target(runs[m][0].history, target) for m in TRAINED}
    cost_controls, cost_labels = (x[: cfg.cost_batch] for x in b.controls("edges", "test"))
    samplers = {"backbone": b.backbone, "ecm": runs["ecm"][0].model_fn(cost_controls),
                "full_finetune": runs["full_finetune"][0].model_fn(cost_controls)}
    sampling = {m: (lambda f=f, t=temps[m]: b.suite.generate(f, cost_labels, cfg.sampling(t), 0)) for m, f in samplers.items()}
    sample_s = interleaved_times(sampling, repeats=5)
    memory = {m: peak_memory(fn, resident=[b.backbone, b.tokenizer] + ([runs[m][0].module] if m != "backbone" else [])
                             + ([runs[m][0].backbone] if m == "full_finetune" else []))
              for m, fn in sampling.items()}

    # 7. the mask control
    mask = None
    if cfg.mask_control:
        mask_runs = [b.trained("ecm", lr["ecm"], s, "mask") for s in range(cfg.train_seeds)]
        mask = {"ecm": _mean_std([b.score(tc, schedule, "test", cfg.n_samples, s, "mask") for s, tc in enumerate(mask_runs)]),
                "backbone": _mean_std([b.score(None, 1.0, "test", cfg.n_samples, s, "mask") for s in range(cfg.train_seeds)])}

    methods = {}
    for m in METHODS:
        s = _mean_std(scores[m])
        methods[m] = {k: s[k] for k in ("control_f1", "control_f1_std", "fd", "fd_std", "class_acc", "class_acc_std")} | {
            "trainable_params": params[m], "train_s_per_step": step_s[m],
            "param_share_of_full_finetune": params[m] / params["full_finetune"]}
        if m in TRAINED:
            config = b.method_config(m, lr[m], 0)
            methods[m] |= {"lr": lr[m], "tokens_per_step": expected_tokens(config, b.backbone.scales),
                           "train_s_to_target_f1": to_target[m], "curve": runs[m][0].history}
    results = {
        "methods": methods,
        "sample_time_ratio": sample_s["ecm"] / sample_s["backbone"],
        "sample_time_ratio_full_finetune": sample_s["full_finetune"] / sample_s["backbone"],
        "sample_s": sample_s, "peak_memory_bytes": memory,
        "memory_ratio": memory["ecm"] / memory["backbone"],
        "step_time_cut": paired_cut(times["ecm"], times["ecm_uniform_scales"]),
        "target_f1": target, "backbone_params": backbone_params, "backbone_build_s": b.suite.build_seconds(),
        "selection": {"val_control_f1_per_augment": {f"{k:g}": v for k, v in val_f1_aug.items()}, "augment": b.augment,
                      "val_control_f1_per_early_sampling": {f"{d:g}/{c}/{w}": v for (d, c, w), v in val_f1_early.items()},
                      "step_time_cut_per_early_sampling": {f"{d:g}/{c}/{w}": v for (d, c, w), v in cut_early.items()},
                      "min_step_cut": cfg.min_step_cut,
                      **dict(zip(EARLY_FIELDS, b.early)),
                      "val_control_f1_per_lr": {m: {f"{k:g}": v for k, v in d.items()} for m, d in val_f1.items()},
                      "lr": lr, "val_fd_per_schedule": val_fd, "temperatures": list(schedule),
                      "backbone_val": base_val},
        "mask": mask,
        "backbone": b.suite.base_summary(),
        "config": asdict(cfg) | {"ecm": asdict(cfg.ecm), "suite": asdict(cfg.suite)},
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "results.json", results)
    ecm_report.write(out, results, grids)
    return results
