"""Command line: `loragen demo | base | zoo collect/import/info | train | generate | chat | serve | composer
train/sample/bench | ecm train/sample/bench`.

One meaning per option name across commands: --out is always a folder, --arch a generator architecture,
--generator-dir a trained generator's folder, --steps optimiser steps. Closed sets of choices are Enums of the
registries they come from, so `--help` lists them and typer refuses anything else.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loragen.conditions import ENCODERS
from loragen.errors import LoragenError
from loragen.generators.base import GENERATORS
from loragen.generators.composer.generator import GENERATORS as COMPOSER_ARCHS
from loragen.generators.composer.meta_generator import ATTENTIONS
from loragen.generators.hyper.items import ITEM_ENCODERS
from loragen.generators.pdiff.normalizer import MODES
from loragen.suites import SUITES
from loragen.suites.llm_tasks import CONTEXTS


def _choices(name: str, values) -> type[Enum]:
    """A str-valued Enum of a registry's names: typer lists its values in --help and refuses others."""
    return Enum(name, {v: v for v in values}, type=str)


SuiteName = _choices("SuiteName", [s for s in SUITES if s != "digits-control"])  # suites of tasks and LoRA adapters
BaseSuiteName = _choices("BaseSuiteName", SUITES)  # every suite with a base model (digits-control: `loragen ecm`)
Arch = _choices("Arch", GENERATORS)  # hyper | pdiff
ComposerArch = _choices("ComposerArch", COMPOSER_ARCHS)  # transformer | mlp | static | per-class
Attention = _choices("Attention", ATTENTIONS)
Objective = _choices("Objective", ("task", "recon"))  # HyperConfig.objective
Encoder = _choices("Encoder", sorted(set(ENCODERS) | set(ITEM_ENCODERS)))  # pdiff's and hyper's condition encoders
Normalization = _choices("Normalization", MODES)  # PDiffConfig.normalization
PromptContext = _choices("PromptContext", CONTEXTS)  # llm-tasks: what an adapted model's prompt holds before the input

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Generate LoRA adapters from a condition.")
zoo_app = typer.Typer(no_args_is_help=True, help="Collect, import and inspect zoos of LoRA checkpoints.")
app.add_typer(zoo_app, name="zoo")
composer_app = typer.Typer(no_args_is_help=True, help="Composer: per-condition W_Q / W_V updates of the digits-gen DiT.")
app.add_typer(composer_app, name="composer")
ecm_app = typer.Typer(no_args_is_help=True, help="ECM: control modules (edge map, coarse mask) for the digits-control VAR.")
app.add_typer(ecm_app, name="ecm")
console = Console()


def _friendly(fn):
    """The one error handler of every command: loragen's own errors print as one red line and exit 2, instead of a
    traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LoragenError as e:
            console.print(f"[red]error:[/red] {escape(str(e))}")  # escaped: "loragen[ray]" is text, not rich markup
            raise typer.Exit(2)

    return wrapper


def _value(choice: Optional[Enum]) -> Optional[str]:
    """The string an Enum option stands for (None when the option was left out)."""
    return None if choice is None else choice.value


def _suite_kwargs(model: Optional[Path], targets: Optional[str]) -> dict:
    """Suite arguments for a user's own model folder and target modules (text-topics)."""
    kw = {}
    if model is not None:
        kw["model_path"] = model
    if targets:
        kw["target_modules"] = [t.strip() for t in targets.split(",") if t.strip()]
    return kw


def _suite(name: str, quick: bool, model: Optional[Path], targets: Optional[str], context: Optional[str] = None):
    """A built-in suite: its tiny test configuration with `quick`, a user's model folder and target modules, and
    llm-tasks' adapter context."""
    from loragen.suites import get_suite
    from loragen.suites.defaults import suite_defaults

    kw = (suite_defaults(name, quick).suite_kwargs if quick else {}) | _suite_kwargs(model, targets)
    if context is not None:
        if name != "llm-tasks":
            raise LoragenError(f"--adapter-context applies to the suite llm-tasks; found {name}")
        kw["adapter_context"] = context
        if context == "few-shot" and "max_tokens" in kw:  # its prompts hold the shots too: about 3x the tokens
            kw["max_tokens"] *= 3
    return get_suite(name, **kw)


Model = Annotated[Optional[Path], typer.Option(help="Your own local Hugging Face model folder (text-topics; llm-tasks: a causal LM).")]
Targets = Annotated[Optional[str], typer.Option(help="Comma-separated LoRA target modules of --model.")]
AdapterContext = Annotated[Optional[PromptContext], typer.Option(help="llm-tasks: what an adapted model's prompt holds before the input: none (default; the adapter carries the task) | description | few-shot (description + examples; adapters that work with in-context learning).")]


def _summary_table(results: dict) -> Table:
    cols = {"base": "base", "finetuned": "fine-tuned", "soup": "soup", "nearest": "nearest", "noise": "noise",
            "generated_mean": "gen mean", "generated_best": "gen best"}
    table = Table(title=f"{results['suite']}: test accuracy (%), mean over tasks")
    table.add_column("split")
    for name in cols.values():
        table.add_column(name, justify="right")
    table.add_column("gap recov.", justify="right")
    for split in ("seen", "unseen"):
        r = results[split]
        if r:
            g = r["gap_recovered"]["generated_mean"]
            table.add_row(split, *(f"{r[m]:.1f}" for m in cols), "n/a" if g is None else f"{100 * g:.0f}%")
    return table


@app.command()
@_friendly
def demo(out: Annotated[Path, typer.Option(help="Output folder: zoo, generator, report.md, results.json, plots.")],
         suite: Annotated[SuiteName, typer.Option(help="Built-in suite.")] = SuiteName("digits-domains"),
         quick: Annotated[bool, typer.Option(help="Tiny configuration (seconds; for tests).")] = False,
         overwrite: Annotated[bool, typer.Option(help="Replace an existing report in OUT (zoo and generator are reused).")] = False,
         model: Model = None,
         targets: Targets = None,
         ablations: Annotated[bool, typer.Option(help="Also run the normalisation / condition / zoo-size ablations.")] = False):
    """Run the whole pipeline on a built-in suite and write a report."""
    from loragen.experiments.demo import DemoConfig, run

    if ablations and (model is not None or targets):
        raise LoragenError("--ablations runs on the built-in base model; drop --model / --targets")
    cfg = DemoConfig.for_suite(suite.value, quick)
    results = run(out, cfg, overwrite=overwrite, suite_kwargs=_suite_kwargs(model, targets))
    console.print(_summary_table(results))
    t = results["time"]
    console.print(f"time to an adapter: fine-tune {t['finetune_s_per_adapter']:.3f} s, generate "
                  f"{1000 * t['generate_s_per_adapter']:.2f} ms ({results['speedup']:.0f}× faster); "
                  f"wall {results['wall_s']:.0f} s")
    console.print(f"report: {out / 'report.md'}  results: {out / 'results.json'}  plots: {out / 'plots'}")
    if ablations:
        from loragen.experiments import ablation

        console.print(ablation.run(out, cfg, n_samples=min(5, cfg.n_samples))["markdown"])
        console.print(f"ablation table: {out / 'ablations.md'}")


@app.command()
@_friendly
def base(suite: Annotated[Optional[BaseSuiteName], typer.Option(help="Built-in suite (default: digits-domains, or llm-tasks with --model).")] = None,
         model: Annotated[Optional[str], typer.Option(help="llm-tasks: 'smollm2' (converted once into the cache) or a local causal-LM folder; text-topics: a local model folder.")] = None,
         rebuild: Annotated[bool, typer.Option(help="Retrain (or convert again) even if cached.")] = False,
         quick: Annotated[bool, typer.Option(help="digits-gen, digits-control: the tiny test configuration (other suites have one base).")] = False):
    """Produce and cache a suite's pretrained base model (and, for digits-gen, its metric classifier)."""
    import inspect
    import time

    from loragen.suites import get_suite

    suite = _value(suite) or ("llm-tasks" if model is not None else "digits-domains")
    if model is not None and suite not in ("llm-tasks", "text-topics"):
        raise LoragenError(f"--model applies to the suites llm-tasks and text-topics; found --suite {suite}")
    s = get_suite(suite, **({"model_path": model} if model is not None else {}))
    if quick:
        if "quick" in inspect.signature(type(s)).parameters:  # only suites that have a tiny configuration take it
            s = get_suite(suite, quick=True)
        else:
            console.print(f"note: --quick has no effect on suite {suite}: it has a single base model (only suites with "
                          "a tiny configuration, e.g. digits-gen, take --quick); building that one")
    t0 = time.perf_counter()
    built = s.base_model(rebuild=rebuild)
    where = f": {s.model_folder()}" if suite == "llm-tasks" else f" cached under {s.cache_dir}"
    console.print(f"base model of {suite}{where} (ready in {time.perf_counter() - t0:.1f} s)")
    for k, v in s.base_summary(built).items():
        console.print(f"  {k}: {v}")


@zoo_app.command("collect")
@_friendly
def zoo_collect(out: Annotated[str, typer.Option(help="Zoo folder or fsspec URL, e.g. s3://bucket/zoo (created, or resumed if it exists).")],
                suite: Annotated[SuiteName, typer.Option(help="Built-in suite.")] = SuiteName("digits-domains"),
                tasks: Annotated[str, typer.Option(help="'seen', 'heldout', 'all' or comma-separated task names.")] = "seen",
                keep_last: Annotated[Optional[int], typer.Option(help="N: checkpoints kept per task (default: the suite's).")] = None,
                save_every: Annotated[Optional[int], typer.Option(help="Steps between kept checkpoints.")] = None,
                steps: Annotated[Optional[int], typer.Option(help="Fine-tuning steps per task.")] = None,
                rank: Annotated[Optional[int], typer.Option(help="LoRA rank.")] = None,
                model: Model = None,
                targets: Targets = None,
                adapter_context: AdapterContext = None,
                quick: Annotated[bool, typer.Option(help="The suite's tiny test configuration (seconds; the numbers mean nothing).")] = False,
                ray: Annotated[bool, typer.Option(help="Run the fine-tunes as Ray tasks (pip install 'loragen[ray]'); "
                                                       "Ray starts on this machine unless --ray-address is given.")] = False,
                ray_address: Annotated[Optional[str], typer.Option(help="Join a running Ray cluster: 'auto' or ray://HOST:10001 "
                                                                     "(loragen installed on its nodes); implies --ray.")] = None,
                workers: Annotated[Optional[int], typer.Option(help="With --ray: fine-tunes at once (default: CPUs // --cpus-per-task).")] = None,
                cpus_per_task: Annotated[int, typer.Option(help="With --ray: CPUs (and torch threads) of each fine-tune.")] = 1,
                retries: Annotated[int, typer.Option(help="With --ray: reruns of a fine-tune whose worker process died.")] = 2):
    """LoRA-fine-tune each task with PEFT and keep its last N checkpoints; resumes an interrupted run."""
    from loragen.finetune import FinetuneConfig
    from loragen.suites.defaults import suite_defaults
    from loragen.zoo.collect import collect

    suite = suite.value
    defaults = suite_defaults(suite, quick)  # a suite without adapters is refused before any work
    s = _suite(suite, quick, model, targets, _value(adapter_context))
    groups = {"seen": s.seen_tasks(), "heldout": s.heldout_tasks(), "all": s.tasks()}
    names = [t.name for t in groups[tasks]] if tasks in groups else [n.strip() for n in tasks.split(",") if n.strip()]
    given = {"rank": rank, "steps": steps, "keep_last": keep_last, "save_every": save_every}
    cfg = FinetuneConfig(**defaults.finetune | {k: v for k, v in given.items() if v is not None})
    if rank is not None:
        cfg = replace(cfg, alpha=2.0 * rank)
    fan_out = None
    if ray or ray_address is not None:
        from loragen.zoo.workers import RayConfig

        fan_out = RayConfig(address=ray_address, workers=workers, cpus_per_task=cpus_per_task, retries=retries)
    elif workers is not None:
        raise LoragenError("--workers sets how many Ray workers run fine-tunes; expected --ray with it, found none")
    zoo, summary = collect(s, out, names, cfg, ray=fan_out)
    console.print(f"zoo {out}: {len(zoo.tasks())} tasks, {len(zoo.entries)} checkpoints "
                  f"({summary['collected']} collected now, {summary['resumed_skipped']} already there)")


@zoo_app.command("import")
@_friendly
def zoo_import(folders: Annotated[list[Path], typer.Argument(help="PEFT LoRA adapter folders.")],
               out: Annotated[Path, typer.Option(help="Zoo folder (created, or extended if it exists).")],
               task: Annotated[Optional[str], typer.Option(help="Task of all FOLDERS (else each folder's loragen_task.json).")] = None,
               condition: Annotated[Optional[str], typer.Option(help="Condition text of the task (its description).")] = None,
               example: Annotated[Optional[list[str]], typer.Option(help="A few-shot example line of the task (repeatable).")] = None):
    """Build or extend a zoo from PEFT adapters trained by anyone."""
    from loragen.zoo.peft_import import import_peft
    from loragen.zoo.store import Zoo

    before = len(Zoo.open(out).entries) if Zoo.exists(out) else 0
    zoo = import_peft(out, folders, task, condition, list(example or []) or None)
    console.print(f"zoo {out}: imported {len(zoo.entries) - before} adapters; {len(zoo.tasks())} tasks, "
                  f"{len(zoo.entries)} checkpoints")


@zoo_app.command("info")
@_friendly
def zoo_info(path: Annotated[str, typer.Argument(help="Zoo folder or fsspec URL.")]):
    """Summarise a zoo: tasks, checkpoints, layout, validation accuracy, size."""
    from loragen.zoo.store import Zoo

    zoo = Zoo.open(path)
    layout = zoo.layout
    console.print(f"zoo {path}: suite {zoo.info.get('suite')}, {len(zoo.tasks())} tasks, {len(zoo.entries)} checkpoints, "
                  f"{zoo.size_bytes() / 1e6:.1f} MB")
    console.print(f"layout: {len(layout.modules)} modules, P = {layout.numel} parameters: "
                  + ", ".join(f"{m.name} ({m.in_features}→{m.out_features}, r={m.rank})" for m in layout.modules))
    table = Table()
    for col in ("task", "checkpoints", "steps", "val acc (last)", "val acc (best)"):
        table.add_column(col)
    for t in zoo.tasks():
        rows = sorted(zoo.task_entries(t), key=lambda e: e["step"])
        accs = [e["val_acc"] for e in rows if e["val_acc"] is not None]
        table.add_row(t, str(len(rows)), f"{rows[0]['step']}–{rows[-1]['step']}",
                      f"{accs[-1]:.1f}" if accs else "-", f"{max(accs):.1f}" if accs else "-")
    console.print(table)


@app.command()
@_friendly
def train(out: Annotated[Optional[Path], typer.Option(help="Generator folder (an interrupted fit resumes from it); default with --suite: the suite's default generator in the cache, which `generate --suite` uses.")] = None,
          arch: Annotated[Optional[Arch], typer.Option(help="hyper (hypernetwork; default with a built-in suite) | pdiff (autoencoder + latent diffusion; default for an imported zoo).")] = None,
          objective: Annotated[Objective, typer.Option(help="hyper: task (through the base model's loss; needs a built-in suite) | recon (match the zoo).")] = Objective("task"),
          zoo: Annotated[Optional[Path], typer.Option(help="Zoo folder (pdiff and hyper recon need one; hyper task takes its tasks).")] = None,
          suite: Annotated[Optional[SuiteName], typer.Option(help="Built-in suite for hyper's task objective (default: the zoo's).")] = None,
          steps: Annotated[Optional[int], typer.Option(help="hyper: optimiser steps (default: HyperConfig's).")] = None,
          recon_warm_steps: Annotated[Optional[int], typer.Option(help="hyper task objective: steps matching --zoo's adapters before the task loss (default 0).")] = None,
          normalization: Annotated[Optional[Normalization], typer.Option(help="pdiff: zoo normalisation (default: task).")] = None,
          encoder: Annotated[Optional[Encoder], typer.Option(help="Condition encoder (default: the suite's).")] = None,
          ae_steps: Annotated[Optional[int], typer.Option(help="pdiff: autoencoder steps (default: PDiffConfig's).")] = None,
          diffusion_steps: Annotated[Optional[int], typer.Option(help="pdiff: denoiser steps (default: PDiffConfig's).")] = None,
          model: Model = None,
          targets: Targets = None,
          adapter_context: Annotated[Optional[PromptContext], typer.Option(help="llm-tasks: what an adapted model's prompt holds before the input: none | description | few-shot (default: the zoo's, else none); `loragen chat` sends it.")] = None,
          quick: Annotated[bool, typer.Option(help="The suite's tiny test configuration (seconds; the numbers mean nothing).")] = False,
          overwrite: Annotated[bool, typer.Option(help="Replace a finished generator in OUT.")] = False):
    """Fit a generator: hyper (on a suite's tasks, or a zoo) or pdiff (on a zoo)."""
    from loragen.generators.base import CONFIG_FILE
    from loragen.suites.defaults import SuiteDefaults, suite_defaults
    from loragen.zoo.store import Zoo

    arch, objective, suite, normalization, encoder, context = map(_value, (arch, objective, suite, normalization, encoder,
                                                                         adapter_context))
    if out is None:
        if suite is None:
            raise LoragenError("expected --out, or --suite to train the suite's default generator; found neither")
        out = default_generator_dir(suite)
    if (out / CONFIG_FILE).exists() and not overwrite:
        raise LoragenError(f"{out} already holds a trained generator; pass --overwrite to replace it")
    z = Zoo.open(zoo) if zoo is not None else None
    if z is not None:
        z.require_nonempty()
    suite_name = suite or (z.info.get("suite") if z is not None else None)
    arch = arch or ("hyper" if suite_name else "pdiff")
    if arch == "pdiff" or objective == "recon":
        if z is None:
            raise LoragenError(f"{arch} {'(recon) ' if arch == 'hyper' else ''}learns from zoo adapters; expected --zoo, found none")
    elif suite_name is None:
        raise LoragenError("hyper's task objective trains through a built-in suite's task loss; expected --suite or a zoo collected from a suite")
    text = z is not None and not z.info.get("suite") and bool(z.condition(z.tasks()[0]).text)  # an imported text zoo
    defaults = suite_defaults(suite_name, quick) if suite_name else SuiteDefaults()
    if arch == "hyper":
        from loragen.generators.hyper import HyperConfig, HyperGenerator

        given = {"objective": objective, "steps": steps, "encoder": encoder, "recon_warm_steps": recon_warm_steps}
        cfg = HyperConfig(**defaults.hyper | ({"encoder": "text", "k_exemplars": 4} if text else {})
                          | {k: v for k, v in given.items() if v is not None})
        s = None
        if suite_name is not None:  # the suite's full task set: it holds the demo's tasks and a collected zoo's
            recorded = z.info.get("adapter_context") if z is not None else None
            if context and recorded and context != recorded:
                raise LoragenError(f"--zoo {zoo} holds adapters trained in the prompt context {recorded!r}; found "
                                   f"--adapter-context {context}")
            s = _suite(suite_name, quick, model, targets, context or recorded)
        gen = HyperGenerator.fit(cfg, suite=s, zoo=z, out=out)
        f = gen.fit_summary
        warm = f" after {cfg.recon_warm_steps} recon steps" if cfg.recon_warm_steps else ""
        console.print(f"generator {out}: hyper ({objective}{warm}), {f['tasks']} tasks, loss {f['loss']:.4f}, {f['fit_s']:.0f} s")
        return
    from loragen.generators.pdiff import PDiffConfig, PDiffGenerator

    if context:
        raise LoragenError("--adapter-context sets the prompt the hyper generator trains its adapters with; pdiff "
                           "learns from the zoo's adapters, whatever context they were trained in")
    pdefaults = PDiffConfig(**defaults.pdiff) if z.info.get("suite") else PDiffConfig(encoder="text" if text else "image-set")
    given = {"normalization": normalization, "encoder": encoder, "ae_steps": ae_steps, "diffusion_steps": diffusion_steps}
    cfg = replace(pdefaults, **{k: v for k, v in given.items() if v is not None})
    gen = PDiffGenerator.fit(z, cfg, out=out)
    s = gen.fit_summary
    console.print(f"generator {out}: {s['tasks']} tasks, {s['checkpoints']} checkpoints, autoencoder loss {s['ae_loss']:.4f}, "
                  f"diffusion loss {s['diffusion_loss']:.5f}, {s['fit_s']:.0f} s")


@app.command()
@_friendly
def generate(text: Annotated[Optional[str], typer.Argument(help="Text condition: the task's description (as --description).")] = None,
             generator_dir: Annotated[Optional[Path], typer.Option(help="Trained generator folder (hyper or pdiff); default with --suite: the suite's default generator (`loragen train --suite`).")] = None,
             out: Annotated[Path, typer.Option(help="Folder for the adapters (one PEFT folder each).")] = Path("adapters"),
             task: Annotated[Optional[str], typer.Option(help="A suite task whose exemplars are the condition.")] = None,
             images: Annotated[Optional[Path], typer.Option(help="Condition from a safetensors file with 'images' (K, H, W).")] = None,
             description: Annotated[Optional[str], typer.Option(help="Text condition: the task's description.")] = None,
             example: Annotated[Optional[list[str]], typer.Option(help="Text condition: a few-shot example line (repeatable).")] = None,
             suite: Annotated[Optional[SuiteName], typer.Option(help="Built-in suite of --task (default: the generator's own); without --generator-dir, its default generator.")] = None,
             n: Annotated[int, typer.Option(help="Number of adapters.")] = 5,
             seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
             overwrite: Annotated[bool, typer.Option(help="Replace existing adapter folders.")] = False):
    """Write N adapters for a condition as PEFT folders."""
    import time

    from loragen.conditions import Condition
    from loragen.generators.base import load_generator

    given = [name for name, v in (("--task", task), ("--images", images), ("--description", description), ("TEXT", text))
             if v is not None]
    if len(given) != 1:
        raise LoragenError(f"give exactly one condition: TEXT, --description TEXT, --task NAME or --images FILE; found {given or 'none'}")
    description = description if description is not None else text
    if generator_dir is None:
        if suite is None:
            raise LoragenError("expected --generator-dir, or --suite to use the suite's default generator; found neither")
        generator_dir = default_generator_dir(_value(suite))
        if not (generator_dir / "generator.json").exists():
            raise LoragenError(f"the default generator of {_value(suite)} is not trained yet ({generator_dir}); run "
                               f"`loragen train --suite {_value(suite)}` first, or pass --generator-dir")
    gen = load_generator(generator_dir)
    if description is not None:
        cond = Condition(task="custom", text=description, examples=list(example or []))
    elif task is not None:
        from loragen.suites import get_suite

        cond = get_suite(_value(suite) or getattr(gen, "suite", None) or "digits-domains").condition(task)
    else:
        from safetensors.torch import load_file

        try:
            cond = Condition(task=images.stem, images=load_file(str(images))["images"])
        except Exception as e:
            raise LoragenError(f"expected a safetensors file with a tensor 'images' (K, H, W) at {images}: {e}") from e
    t0 = time.perf_counter()
    adapters = gen.generate(cond, n=n, seed=seed)
    dt = time.perf_counter() - t0
    for i, a in enumerate(adapters):
        a.save(out / f"adapter_{i}", overwrite=overwrite)
    console.print(f"{n} adapters for {cond.task!r} from {gen.name} in {1000 * dt:.1f} ms, written to {out}/adapter_*/ (PEFT folders)")


@app.command()
@_friendly
def serve(generator: Annotated[Path, typer.Option(help="Trained generator folder (hyper or pdiff); it records its suite.")],
          host: Annotated[str, typer.Option(help="Bind address; anything but loopback needs --api-key-file.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          api_key_file: Annotated[Optional[Path], typer.Option(help="File holding the API key every route but /healthz and /readyz needs.")] = None,
          mode: Annotated[str, typer.Option(help="batched: many adapters in one forward; merge: one request at a time (a baseline).")] = "batched",
          max_batch: Annotated[int, typer.Option(help="Most samples in one micro-batch.")] = 64,
          max_wait_ms: Annotated[float, typer.Option(help="Longest wait for a micro-batch to fill.")] = 5.0,
          queue_size: Annotated[int, typer.Option(help="Most waiting predict requests; more get 429.")] = 256,
          cache_adapters: Annotated[int, typer.Option(help="Most generated adapters kept (LRU).")] = 512,
          condition_precision: Annotated[Optional[str], typer.Option(help="fp32 | bf16 | auto: the examples encoder's base-model pass (bf16: about 2× faster on CPUs with bf16 instructions, several times slower on CPUs without; auto: bf16 where the CPU has it); default: the generator's own.")] = None,
          compile_conditions: Annotated[bool, typer.Option("--compile", help="Run the examples encoder's base-model pass compiled (torch.compile; text-topics: a cold adapter up to ~15% faster; compiling at start takes ~25 s and a C++ compiler).")] = False,
          threads: Annotated[int, typer.Option(help="torch threads of the model thread.")] = 1):
    """Serve adapters on demand over HTTP: /v1/adapters, /v1/predict (micro-batched), /docs, a web page at /."""
    from loragen.serve.config import ServeConfig
    from loragen.serve.server import run

    config = ServeConfig(generator, host=host, port=port, api_key_file=api_key_file, mode=mode, max_batch=max_batch,
                         max_wait_ms=max_wait_ms, queue_size=queue_size, cache_adapters=cache_adapters, threads=threads,
                         condition_precision=condition_precision, compile_conditions=compile_conditions)
    console.print(f"serving {generator} on http://{host}:{port} (docs: /docs, page: /)")
    run(config)


def default_generator_dir(suite: str) -> Path:
    """Where `train --suite S` puts the suite's default generator and `generate --suite S` finds it."""
    from loragen.suites.suite import cache_root

    return cache_root() / "generators" / suite


@app.command()
@_friendly
def chat(prompt: Annotated[str, typer.Argument(help="The user's message.")],
         adapter: Annotated[Optional[Path], typer.Option(help="PEFT adapter folder (e.g. from `loragen generate`); none: the base model alone.")] = None,
         model: Annotated[Optional[Path], typer.Option(help="Base causal-LM folder (default: the adapter's base_model_name_or_path, or the packaged SmolLM2).")] = None,
         max_new_tokens: Annotated[int, typer.Option(help="Most tokens of the reply.")] = 64,
         context: Annotated[Optional[PromptContext], typer.Option(help="What the prompt holds before the message: none | description | few-shot (default: what the adapter records, from a generator trained with --adapter-context; else none).")] = None,
         description: Annotated[Optional[str], typer.Option(help="The task's description for the description / few-shot contexts (default: the adapter's).")] = None,
         example: Annotated[Optional[list[str]], typer.Option(help="A few-shot example line '<input>' -> <answer> (repeatable; default: the adapter's).")] = None):
    """Stream the (adapted) model's greedy reply to a chat message."""
    from loragen.suites.chat import chat_messages, load_chat_model, stream_reply

    messages, said = chat_messages(prompt, adapter, _value(context), description, list(example or []))
    lm, tokenizer = load_chat_model(adapter, model)
    if said:
        Console(stderr=True).print(said)
    stream_reply(lm, tokenizer, messages, max_new_tokens, sys.stdout)


def _digits_gen(quick: bool, config: Optional[dict] = None):
    from loragen.suites.digits_gen import DigitsGen, DigitsGenConfig

    return DigitsGen(DigitsGenConfig.from_dict(config)) if config else DigitsGen(quick=quick)


@composer_app.command("train")
@_friendly
def composer_train(out: Annotated[Path, typer.Option(help="Generator folder (an interrupted fit resumes from it).")],
                   arch: Annotated[Optional[ComposerArch], typer.Option(help="transformer (Composer) | mlp | static (one shared LoRA) | per-class (a LoRA per class).")] = None,
                   attention: Annotated[Optional[Attention], typer.Option(help="Meta-generator attention.")] = None,
                   rank: Annotated[Optional[int], typer.Option(help="r of every W_Q / W_V update.")] = None,
                   context_share: Annotated[Optional[float], typer.Option(help="Context-aware batches: share of a batch from one class (Composer's α).")] = None,
                   steps: Annotated[Optional[int], typer.Option(help="Optimiser steps.")] = None,
                   lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate.")] = None,
                   quick: Annotated[bool, typer.Option(help="Tiny backbone and generator (seconds; for tests).")] = False,
                   overwrite: Annotated[bool, typer.Option(help="Replace a finished generator in OUT.")] = False):
    """Train a meta-generator on the digits-gen backbone (built and cached first if needed). Options left out take
    ComposerConfig's defaults, or with --quick the tiny test configuration's."""
    from loragen.experiments.composer_bench import BenchConfig
    from loragen.generators.composer import ComposerConfig, ComposerGenerator
    from loragen.generators.composer.generator import CONFIG_FILE

    arch, attention = _value(arch), _value(attention)
    if (out / CONFIG_FILE).exists() and not overwrite:
        raise LoragenError(f"{out} already holds a trained generator; pass --overwrite to replace it")
    defaults = BenchConfig.quick().composer if quick else ComposerConfig()
    # only what the user gave overrides the config (--quick's tiny config included)
    given = {"generator": arch, "attention": attention, "rank": rank, "context_share": context_share, "lr": lr, "steps": steps}
    cfg = replace(defaults, **{k: v for k, v in given.items() if v is not None})
    gen = ComposerGenerator.fit(_digits_gen(quick), cfg, out=out)
    s = gen.fit_summary
    console.print(f"generator {out}: {cfg.generator}, rank {cfg.rank}, {s['steps']} steps, loss {s['loss']:.4f}, {s['fit_s']:.0f} s")


@composer_app.command("sample")
@_friendly
def composer_sample(generator_dir: Annotated[Path, typer.Option(help="Trained Composer folder.")],
                    plot: Annotated[Path, typer.Option(help="PNG grid of the samples (rows: classes).")],
                    classes: Annotated[str, typer.Option(help="Comma-separated class labels.")] = "0,1,2,3,4,5,6,7,8,9",
                    n: Annotated[int, typer.Option(help="Samples per class.")] = 8,
                    sample_steps: Annotated[int, typer.Option(help="DDIM steps.")] = 50,
                    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
                    save_images: Annotated[Optional[Path], typer.Option(help="Also save the images and labels (a safetensors file).")] = None,
                    adapters: Annotated[Optional[Path], typer.Option(help="Also write each class's W_Q/W_V update as a PEFT folder under this folder.")] = None,
                    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False):
    """Sample class-conditional digits with the backbone under per-class composed weights."""
    import torch

    from loragen import atomic
    from loragen.evaluate.composer_report import save_grid
    from loragen.generators.composer import ComposerGenerator

    gen = ComposerGenerator.load(generator_dir)
    suite = _digits_gen(False, gen.suite_info["config"])
    try:
        wanted = [int(c) for c in classes.split(",") if c.strip()]
    except ValueError as e:
        raise LoragenError(f"--classes expects comma-separated integers, e.g. 0,3,7; found {classes!r}") from e
    bad = [c for c in wanted if not 0 <= c < suite.num_classes]
    if bad or not wanted or n < 1:
        raise LoragenError(f"expected class labels in 0 … {suite.num_classes - 1} and n >= 1; found {wanted} and n = {n}")
    for path in (plot, save_images, adapters):
        if path is not None and path.exists() and not overwrite:
            raise LoragenError(f"{path} already exists; pass --overwrite to replace it")
    labels = torch.tensor(wanted).repeat_interleave(n)
    x = gen.sample(suite, suite.base_model(), labels, sample_steps, seed)
    metrics = suite.image_metrics(x, labels)
    save_grid(x, labels, plot, f"Composer ({gen.config.generator}), {sample_steps} DDIM steps", per_class=n)
    if save_images is not None:
        atomic.save_safetensors(save_images, {"images": x, "labels": labels})
    if adapters is not None:
        for c, adapter in zip(wanted, gen.adapters([suite.label_conditions()[c] for c in wanted])):
            adapter.save(adapters / f"class_{c}", overwrite=overwrite)
    console.print(f"{len(labels)} samples → {plot}; class consistency {metrics['class_acc']:.1f}%"
                  + (f"; adapters → {adapters}/class_*/ (PEFT folders)" if adapters is not None else ""))


@composer_app.command("bench")
@_friendly
def composer_bench(out: Annotated[Path, typer.Option(help="Output folder: results.json, report.md, sample grids.")],
                   quick: Annotated[bool, typer.Option(help="Tiny configuration (seconds; numbers mean nothing).")] = False,
                   ablations: Annotated[bool, typer.Option(help="Also train and score the ablation rows.")] = True,
                   overwrite: Annotated[bool, typer.Option(help="Replace an existing report (trained generators are reused).")] = False):
    """Composer vs frozen backbone, static and per-class LoRA (lr tuned on validation digits-FD, several training
    seeds) and test-time training; ablations; inference overhead."""
    from loragen.evaluate.composer_report import verdict
    from loragen.experiments.composer_bench import METHODS, BenchConfig, run

    cfg = BenchConfig.quick() if quick else BenchConfig()
    cfg.ablations = ablations
    r = run(out, cfg, overwrite=overwrite, log=console.print)
    table = Table(title="digits-gen: Composer and baselines (test split)")
    for col in ("method", "lr", "digits-FD", "± training seeds", "± sampling seeds", "class consistency"):
        table.add_column(col, justify="right")
    for m in METHODS:
        table.add_row(m, f"{r['lr'][m]:g}" if m in r["lr"] else "—", f"{r['fd'][m]:.2f}",
                      f"{r['fd_train_std'][m]:.2f}" if m in r["fd_train_std"] else "—", f"{r['fd_std'][m]:.2f}",
                      f"{r['class_acc'][m]:.1f}%")
    console.print(table)
    console.print(" ".join(verdict(r)))
    o = r["overhead"]
    console.print(f"Composer overhead (batch {o['batch']}, {o['steps']} steps): time ×{o['time_ratio']:.3f}, "
                  f"peak memory ×{o['memory_ratio']:.3f}; batched LoRA forward ×{r['batched_lora_ratio']:.3f}; "
                  f"TTT time ×{r['ttt_cost']['time_ratio']:.1f}; wall {r['wall_s']:.0f} s")
    console.print(f"report: {out / 'report.md'}  results: {out / 'results.json'}")


ControlName = _choices("ControlName", ("edges", "mask"))
ControlMethod = _choices("ControlMethod", ("ecm", "full_finetune"))
ScaleSampling = _choices("ScaleSampling", ("early", "uniform"))
CutPer = _choices("CutPer", ("sample", "batch"))
ScaleWeighting = _choices("ScaleWeighting", ("none", "inverse"))


@ecm_app.command("train")
@_friendly
def ecm_train(out: Annotated[Path, typer.Option(help="Control module folder (an interrupted training resumes from it).")],
              control: Annotated[ControlName, typer.Option(help="The spatial control the module follows.")] = ControlName("edges"),
              method: Annotated[ControlMethod, typer.Option(help="ecm (adapters on the frozen backbone) | full_finetune (ControlVAR-style baseline).")] = ControlMethod("ecm"),
              scale_sampling: Annotated[Optional[ScaleSampling], typer.Option(help="early (ECM's early-centric sampling) | uniform (every scale every step).")] = None,
              early_decay: Annotated[Optional[float], typer.Option(help="Early-centric sampling: P(last scale = k) ∝ decay^k, in (0, 2].")] = None,
              cut_per: Annotated[Optional[CutPer], typer.Option(help="Early-centric sampling draws the last scale per image (sample) or per batch.")] = None,
              scale_weighting: Annotated[Optional[ScaleWeighting], typer.Option(help="Early-centric sampling: none (mean over the tokens seen) | inverse (tokens weighted by 1 / P(their scale is kept): unbiased for uniform sampling's loss).")] = None,
              shared_ffn: Annotated[bool, typer.Option(help="One gated FFN shared by the adapter blocks (--no-shared-ffn: one each).")] = True,
              steps: Annotated[Optional[int], typer.Option(help="Optimiser steps.")] = None,
              lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate.")] = None,
              seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
              quick: Annotated[bool, typer.Option(help="Tiny backbone and module (seconds; for tests).")] = False):
    """Train a control module on the digits-control backbone (built and cached first if needed). Options left out
    take ECMConfig's defaults, or with --quick the tiny test configuration's."""
    from loragen.experiments.ecm_bench import BenchConfig
    from loragen.generators.ecm.config import ECMConfig
    from loragen.generators.ecm.trained_control import train_control
    from loragen.suites.digits_control import DigitsControl

    defaults = BenchConfig.quick().ecm if quick else ECMConfig()
    given = {"control": control.value, "method": method.value, "scale_sampling": _value(scale_sampling), "steps": steps,
             "early_decay": early_decay, "cut_per": _value(cut_per), "scale_weighting": _value(scale_weighting),
             "lr": lr, "seed": seed, "shared_ffn": shared_ffn}
    cfg = replace(defaults, **{k: v for k, v in given.items() if v is not None})
    tc = train_control(DigitsControl(quick=quick), cfg, out)
    console.print(f"control module {out}: {cfg.method} ({cfg.control}), {tc.trainable_params:,} trainable parameters, "
                  f"{cfg.steps} steps, loss {tc.fit.get('loss', float('nan')):.4f}, {tc.fit.get('fit_s', 0):.0f} s")


@ecm_app.command("sample")
@_friendly
def ecm_sample(generator_dir: Annotated[Path, typer.Option(help="Trained control module folder (`loragen ecm train`).")],
               control: Annotated[Path, typer.Option(help="Control map: a 16×16 greyscale PNG (white = 1) or a .npy of 0…1 values, (S, S), (B, S, S) or (B, 1, S, S).")],
               plot: Annotated[Path, typer.Option(help="PNG grid: each control beside its samples.")],
               label: Annotated[int, typer.Option(help="The digit to draw under every control.")],
               n: Annotated[int, typer.Option(help="Samples per control.")] = 4,
               seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
               late_temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature of the late scales (the early ones sample at 1.0; 1.0 here: a constant temperature). Default: 0.6 for ECM, 1.0 for a full fine-tune, as the bench samples them.")] = None,
               late_from: Annotated[int, typer.Option(help="The first late scale (0-based).")] = 4,
               overwrite: Annotated[bool, typer.Option(help="Replace an existing PNG.")] = False):
    """Draw digits that follow a control map with a trained control module; writes a grid PNG with the controls
    beside the samples and prints the control fidelity. ECM's default temperature schedule (0.6 from scale 4) is the
    one `loragen ecm bench` chose on validation digits-FD."""
    import torch

    from loragen.evaluate.ecm_report import save_control_grid
    from loragen.experiments.ecm_bench import BenchConfig
    from loragen.generators.ecm.trained_control import load_control
    from loragen.suites.spatial_controls import control_metrics
    from loragen.suites.spatial_controls import load_control as load_control_map
    from loragen.suites.var_sampling import temperature_schedule

    if not 0 <= label < 10 or n < 1:
        raise LoragenError(f"expected --label in 0 … 9 and --n >= 1; found {label} and {n}")
    if plot.exists() and not overwrite:
        raise LoragenError(f"{plot} already exists; pass --overwrite to replace it")
    tc = load_control(generator_dir)  # on the backbone it was trained on
    suite = tc.suite
    controls = load_control_map(control, suite.side).repeat_interleave(n, 0)  # (B·n, 1, S, S)
    labels = torch.full((len(controls),), label)
    if late_temperature is None:
        late_temperature = 1.0 if tc.config.method == "full_finetune" else 0.6
    if late_temperature <= 0 or late_from < 0:
        raise LoragenError(f"expected --late-temperature > 0 and --late-from >= 0; found {late_temperature} and {late_from}")
    sampling = BenchConfig().sampling(temperature_schedule(len(tc.backbone.scales), 1.0, late_temperature, late_from))
    images = suite.generate(tc.model_fn(controls), labels, sampling, seed)
    m = control_metrics(tc.config.control, controls, images)
    save_control_grid(controls, images, labels, plot, f"{tc.config.method} ({tc.config.control}), digit {label}", columns=n)
    console.print(f"{len(images)} samples → {plot}; " + ", ".join(f"{k} {v:.3g}" for k, v in m.items()))


@ecm_app.command("bench")
@_friendly
def ecm_bench(out: Annotated[Path, typer.Option(help="Output folder: results.json, report.md, sample grids, plots.")],
              quick: Annotated[bool, typer.Option(help="Tiny configuration (seconds; numbers mean nothing).")] = False,
              overwrite: Annotated[bool, typer.Option(help="Replace an existing report (trained modules are reused).")] = False):
    """ECM vs the backbone and a ControlVAR-style full fine-tune (lr chosen on validation edge F1, several seeds);
    ablations (separate FFNs, uniform scale sampling, constant temperature); costs."""
    from loragen.experiments.ecm_bench import METHODS, BenchConfig, run

    r = run(out, BenchConfig.quick() if quick else BenchConfig(), overwrite=overwrite, log=console.print)
    table = Table(title="digits-control: ECM and baselines (test controls)")
    for col in ("method", "edge F1 %", "digits-FD", "class consistency %", "trainable params", "ms / train step"):
        table.add_column(col, justify="right")
    for m in METHODS:
        x = r["methods"][m]
        table.add_row(m, f"{x['control_f1']:.1f} ± {x['control_f1_std']:.1f}", f"{x['fd']:.2f} ± {x['fd_std']:.2f}",
                      f"{x['class_acc']:.1f}", f"{x['trainable_params']:,}", f"{1000 * x['train_s_per_step']:.1f}")
    console.print(table)
    console.print(f"sampling time ECM / backbone ×{r['sample_time_ratio']:.2f}; early-centric step-time cut "
                  f"{100 * r['step_time_cut']['cut']:.0f}%; report: {out / 'report.md'}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
