"""The cost model of LoRA on llm-tasks, and a first look at fine-tuning against prompting, on the real SmolLM2.

`--part cost`: seconds per fine-tuning step (batch 8, AdamW, LoRA r = 4 on q_proj / v_proj) for
  full        LoRA on every layer, the whole model run on tokens
  top-tokens  LoRA on the top N layers, the whole model run on tokens (what caching saves is the rest)
  top-cached  LoRA on the top N layers, run from cached prefix states (LlmTasks' default)
and the one-off cost of the prefix states per example.
`--part finetune`: for each task, fine-tune LoRA on the top N layers from cached prefix states, then exact match on the
same items of --split for the fine-tuned adapter, zero-shot (the description in the prompt) and few-shot prompting.

Both stop starting new work after --budget seconds and write what they have to --out/<part>.json. Run with one thread:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/llm_cost.py --part cost --out runs/llm-cost
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/llm_cost.py --part finetune --tasks item-2,topic-3-a --out runs/llm-cost
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/llm_cost.py --part finetune --split val --steps 150 --budget 2400 \
        --tasks shift-2,add-2,... --out runs/llm-families      # one task per family, scored on validation items
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from loragen import atomic
from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.adapters.layout import LoraLayout
from loragen.finetune import FinetuneConfig, lora_tensors, peft_model, train_lora
from loragen.suites import get_suite
from loragen.suites.cached_prefix import prefix_states


def step_seconds(suite, base, layout: LoraLayout, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Mean seconds of one AdamW step on the batch (x, y), after one untimed warm-up step."""
    model = peft_model(base, layout, init_seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = F.cross_entropy(suite.forward(model, x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def cost(suite, args) -> dict:
    base = suite.base_model()
    tokens = suite.tokens(args.task, "train")
    x, y = tokens.x[: args.batch], tokens.y[: args.batch]
    t0 = time.perf_counter()
    states = prefix_states(base, tokens.x[: args.prefix_examples], tokens.y[: args.prefix_examples], suite.cut())
    prefix_s = (time.perf_counter() - t0) / args.prefix_examples
    real = tokens.x[:, 1].sum(1).float()
    out = {"task": args.task, "batch": args.batch, "layers": len(base.model.layers), "top_layers": suite.top_layers,
           "mean_tokens_per_row": real.mean().item(), "prefix_s_per_example": prefix_s}
    every = LoraLayout.from_model(base, suite.targets, 4, 8.0)
    top = LoraLayout.from_model(base, suite.target_modules, 4, 8.0)
    for name, layout, inputs, steps in (("top-cached", top, states[: args.batch], 10), ("top-tokens", top, x, 3),
                                        ("full", every, x, 3)):
        out[f"step_s_{name}"] = step_seconds(suite, base, layout, inputs, y, steps)
        print(name, f"{out[f'step_s_{name}']:.3f} s/step", flush=True)
    out["speedup_cached_vs_full"] = out["step_s_full"] / out["step_s_top-cached"]
    return out


def finetune_vs_prompting(suite, args, deadline: float) -> dict:
    base = suite.base_model()
    layout = LoraLayout.from_model(base, suite.target_modules, 4, 8.0)
    cfg = FinetuneConfig(rank=4, alpha=8.0, steps=args.steps, batch_size=args.batch, lr=args.lr, keep_last=1, save_every=1)
    out = {"config": vars(cfg), "split": args.split, "items": args.limit, "tasks": {}}
    for task in args.tasks.split(","):
        if time.perf_counter() > deadline:
            print(f"budget spent: {task} not run", flush=True)
            break
        t0 = time.perf_counter()
        train = suite.data(task, "train")  # the one-off prefix states
        cache_s = time.perf_counter() - t0
        losses, final = [], {}

        def record(step: int, model, loss: float) -> None:
            losses.append(loss)
            if step == cfg.steps:
                final["tensors"] = lora_tensors(model, layout)

        t1 = time.perf_counter()
        train_lora(suite, base, layout, train, cfg, record)
        train_s = time.perf_counter() - t1
        adapter = Adapter(layout, final["tensors"])
        t2 = time.perf_counter()
        with merged(base, adapter):
            tuned = suite.exact_match(base, task, args.split, limit=args.limit)
        zero = suite.exact_match(base, task, args.split, context="description", limit=args.limit)
        few = suite.exact_match(base, task, args.split, context="few-shot", limit=args.limit)
        row = {"family": suite.task(task).params["family"], "finetuned": tuned, "zero_shot": zero, "few_shot": few,
               "train_loss_first": losses[1], "train_loss_last_10": sum(losses[-10:]) / 10,
               "examples": len(train.y), "prefix_cache_s": cache_s, "train_s": train_s,
               "eval_s": time.perf_counter() - t2,
               "few_shot_prompt_tokens": suite.prompt_tokens(task, args.split, "few-shot", args.limit),
               "adapter_prompt_tokens": suite.prompt_tokens(task, args.split, None, args.limit)}
        out["tasks"][task] = row
        print(task, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return out


def finetune_table(result: dict) -> str:
    """Markdown of a finetune part's JSON: exact match per task (family) fine-tuned / zero-shot / few-shot."""
    cfg = result["config"]
    lines = [f"Exact match on {result['items']} {result['split']} items per task; LoRA r {cfg['rank']} on the top layers, "
             f"{cfg['steps']} steps, lr {cfg['lr']:g}, batch {cfg['batch_size']}; {result['threads']} thread(s).", "",
             "| task | family | fine-tuned | zero-shot | few-shot | fine-tuned − few-shot | train loss, last 10 steps |",
             "|---|---|---|---|---|---|---|"]
    for task, r in result["tasks"].items():
        lines.append(f"| {task} | {r['family']} | {r['finetuned']:.2f} | {r['zero_shot']:.2f} | {r['few_shot']:.2f} | "
                     f"{r['finetuned'] - r['few_shot']:+.2f} | {r['train_loss_last_10']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("cost", "finetune", "table"), required=True,
                    help="table: finetune.md from an earlier finetune part's finetune.json in --out")
    ap.add_argument("--out", type=Path, default=Path("runs/llm-cost"))
    ap.add_argument("--model", default="smollm2", help="'smollm2' or a local causal-LM folder")
    ap.add_argument("--top-layers", type=int, default=4)
    ap.add_argument("--task", default="item-2", help="cost: the task whose rows are timed")
    ap.add_argument("--tasks", default="item-2,topic-3-a", help="finetune: comma-separated tasks")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prefix-examples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--limit", type=int, default=16, help="finetune: items scored per task")
    ap.add_argument("--split", default="test", choices=("val", "test"),
                    help="finetune: the split scored (val to choose families, test to report)")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds after which no new task starts")
    args = ap.parse_args()
    if args.part == "table":
        atomic.write_bytes(args.out / "finetune.md", finetune_table(json.loads((args.out / "finetune.json").read_text())).encode())
        return
    torch.set_num_threads(1)
    start = time.perf_counter()
    suite = get_suite("llm-tasks", model_path=args.model, top_layers=args.top_layers)
    result = cost(suite, args) if args.part == "cost" else finetune_vs_prompting(suite, args, start + args.budget)
    result |= {"threads": torch.get_num_threads(), "wall_s": time.perf_counter() - start}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out / f"{args.part}.json", result)
    if args.part == "finetune":
        atomic.write_bytes(args.out / "finetune.md", finetune_table(result).encode())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
