"""SuiteDefaults: each built-in suite's measured defaults for the demo and the CLI, and a tiny `quick` variant for tests.

The configs' settings are keyword arguments (of FinetuneConfig, HyperConfig, PDiffConfig) rather than the configs
themselves, so that suites import neither the zoo nor the generators; the demo and the CLI build the configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from loragen.errors import UnknownTaskError


@dataclass(frozen=True)
class SuiteDefaults:
    finetune: dict = field(default_factory=dict)  # FinetuneConfig arguments (zoo collection)
    hyper: dict = field(default_factory=dict)  # HyperConfig arguments
    pdiff: dict = field(default_factory=dict)  # PDiffConfig arguments
    suite_kwargs: dict = field(default_factory=dict)  # arguments of the suite (the demo may use fewer tasks)
    n_samples: int = 20  # N: adapters generated per condition (Cond P-Diff generates 20)
    task_stride: int = 1  # the demo uses every k-th seen task (quick runs use fewer)
    max_heldout: int | None = None  # cap on the demo's held-out tasks (quick runs)


DEFAULTS = {
    # 80 + 10 tasks keep the demo within 5 minutes; benchmarks/unseen.py studies 480 + 20
    "digits-domains": SuiteDefaults(suite_kwargs={"n_tasks": 80, "n_extrapolation": 10}),
    # a condition: description + 16 labelled examples; the generator reads each example through the base model (in
    # bf16 where the CPU has bf16 instructions, else fp32: `auto`) and starts the head from class prototypes (training
    # length and precision: benchmarks/select_hyper.py --suite text-topics, on a CPU with bf16 instructions, where
    # fp32's cold generation was under 1000x faster than fine-tuning and bf16's was not; on a CPU without them bf16
    # made it several times slower than fp32: benchmarks/condition_precision.py)
    "text-topics": SuiteDefaults(
        finetune={"rank": 2, "alpha": 4.0, "steps": 120, "lr": 2e-3, "batch_size": 16, "keep_last": 10, "save_every": 5},
        hyper={"encoder": "examples", "rank": 2, "lora_alpha": 4.0, "k_exemplars": 16, "width": 256, "steps": 10,
               "condition_precision": "auto", "tasks_per_step": 8, "examples_per_task": 8},
        pdiff={"encoder": "text", "k_exemplars": 16, "ae_patch": 64, "ae_steps": 2000},
        n_samples=10),
    "digits-gen": SuiteDefaults(),
    # LoRA r = 4 on q_proj / v_proj of SmolLM2's top 4 layers, trained from cached prefix states (LlmTasks' default
    # top_layers); batch 8 and lr 2e-3 from the family survey on validation items (docs/llm-adapters.md); a condition: a
    # description + 8 example lines, read by the text encoder. Sized for 2 CPU cores. The hyper lr, 3e-4, was chosen on
    # validation queries of fold 0 (benchmarks/llm_fit.py: 1e-4, 3e-4, 1e-3, 3e-3; 1e-3 ended at twice the training loss
    # and 3e-3 diverged; the states encoder lifted seen tasks only, at 19x the cold time); its other settings and
    # pdiff's are first guesses. benchmarks/llm_tasks.py runs at these defaults.
    "llm-tasks": SuiteDefaults(
        finetune={"rank": 4, "alpha": 8.0, "steps": 120, "lr": 2e-3, "batch_size": 8, "keep_last": 5, "save_every": 10},
        hyper={"encoder": "text", "rank": 4, "lora_alpha": 8.0, "k_exemplars": 8, "cond_draws": 16, "width": 256,
               "steps": 400, "lr": 3e-4, "tasks_per_step": 4, "examples_per_task": 8, "checkpoint_every": 50},
        pdiff={"encoder": "text", "k_exemplars": 8, "ae_patch": 64, "ae_steps": 1000, "diffusion_steps": 1000,
               "cond_draws": 16},
        n_samples=5),
}

# quick: seconds, for tests; the numbers mean nothing
_QUICK_PDIFF = {"ae_steps": 40, "diffusion_steps": 40, "ae_channels": (8, 8), "latent_dim": 16, "width": 32, "depth": 1,
                "cond_draws": 4, "sample_steps": 5, "checkpoint_every": 20}
_QUICK_HYPER = {"steps": 40, "width": 32, "cond_dim": 16, "tasks_per_step": 4, "examples_per_task": 8, "cond_draws": 4,
                "checkpoint_every": 20}


def _quick(d: SuiteDefaults, finetune_steps: int, **changes) -> SuiteDefaults:
    return replace(d, finetune={**d.finetune, "steps": finetune_steps, "keep_last": 2, "save_every": 5},
                   hyper={**d.hyper, **_QUICK_HYPER}, pdiff={**d.pdiff, **_QUICK_PDIFF}, n_samples=3, **changes)


QUICK = {
    "digits-domains": _quick(DEFAULTS["digits-domains"], 40, suite_kwargs={"n_tasks": 12, "n_extrapolation": 2},
                             max_heldout=2),
    "text-topics": _quick(DEFAULTS["text-topics"], 10, task_stride=6, max_heldout=1),
    "digits-gen": _quick(DEFAULTS["digits-gen"], 40, task_stride=6, max_heldout=2),
    # the top layer only, so that any model of two layers or more (the tests' tiny Llama) has a cached prefix; 128
    # tokens: a small vocabulary spells the longest rows in more than the default 96
    "llm-tasks": _quick(DEFAULTS["llm-tasks"], 10,
                        suite_kwargs={"top_layers": 1, "n_train": 24, "n_val": 12, "n_test": 12, "max_tokens": 128},
                        task_stride=12, max_heldout=1),
}


def suite_defaults(suite: str, quick: bool = False) -> SuiteDefaults:
    """The measured defaults of a built-in suite; `quick`: the tiny test configuration."""
    table = QUICK if quick else DEFAULTS
    if suite not in table:
        raise UnknownTaskError(f"unknown suite {suite!r}; expected one of {list(table)}")
    return table[suite]
