"""Cond P-Diff's ablations on a collected demo folder: normalisation, condition, zoo size (checkpoints per task)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from loragen import atomic
from loragen.evaluate.evaluation import evaluate
from loragen.experiments.demo import DemoConfig
from loragen.generators.pdiff import PDiffGenerator
from loragen.suites import get_suite
from loragen.zoo.store import Zoo


def last_n(zoo: Zoo, path: Path, n: int) -> Zoo:
    """A copy of `zoo` that keeps the last n checkpoints of each task (resumes if it exists)."""
    small = Zoo.create(path, zoo.layout, {**zoo.info, "keep_last": n})
    for t in zoo.tasks():
        if t not in small.tasks():
            small.add_task(t, zoo.adapters(t)[-n:], zoo.condition(t))
    return small


def variants(out: Path, cfg: DemoConfig) -> dict:
    """Name -> (zoo, generator config); the first is the demo's own configuration."""
    zoo, g = Zoo.open(out / "zoo"), cfg.generator
    keep = cfg.finetune.keep_last
    rows = {f"normalization={g.normalization}, condition={g.encoder}, keep={keep}": (zoo, g)}
    rows |= {f"normalization={m}": (zoo, replace(g, normalization=m)) for m in ("task", "global", "none") if m != g.normalization}
    if g.encoder == "text":
        rows |= {f"condition={e}": (zoo, replace(g, encoder=e)) for e in ("description", "onehot")}
    rows |= {f"keep={n}": (last_n(zoo, out / f"zoo-last{n}", n), g) for n in (keep // 2, max(1, keep // 5)) if n < keep}
    return rows


def run(out: str | Path, cfg: DemoConfig, n_samples: int = 5, show: bool = True, only: str = "") -> dict:
    """Fit and evaluate every variant (those whose name starts with `only`, and the demo's own) on the demo's zoo and
    reference; write ablations.json and ablations.md."""
    out = Path(out)
    suite = get_suite(cfg.suite, **cfg.suite_kwargs)
    reference = Zoo.open(out / "reference")
    rows = {}
    for i, (name, (zoo, gcfg)) in enumerate(variants(out, cfg).items()):
        if i > 0 and not name.startswith(only):
            continue
        t0 = time.perf_counter()
        gen = PDiffGenerator.fit(zoo, gcfg, show=show)
        s = evaluate(suite, gen, zoo, reference, n_samples, show=show)["summary"]
        rows[name] = {"seen": s["seen"]["generated_mean"], "unseen": s["unseen"]["generated_mean"],
                      "seen_finetuned": s["seen"]["finetuned"], "unseen_gap": s["unseen"]["gap_recovered"]["generated_mean"],
                      "wall_s": time.perf_counter() - t0}
    lines = [f"Ablations on {cfg.suite} (generated mean accuracy, %, N = {n_samples} per condition):", "",
             "| variant | seen | held out | held-out gap recovered |", "|---|---|---|---|"]
    lines += [f"| {k} | {r['seen']:.1f} | {r['unseen']:.1f} | {100 * r['unseen_gap']:.0f}% |" for k, r in rows.items()]
    atomic.write_json(out / "ablations.json", rows)
    atomic.write_bytes(out / "ablations.md", ("\n".join(lines) + "\n").encode())
    return {"rows": rows, "markdown": "\n".join(lines)}
