"""Report of an evaluation: results.json, report.md (markdown tables) and plots (PNG)."""

from __future__ import annotations

from pathlib import Path

import torch

from loragen import atomic
from loragen.evaluate.evaluation import METHODS

RESULT_KEYS = ("base", "finetuned", "soup", "nearest", "noise", "generated_mean", "generated_best")


def results_json(suite: str, ev: dict, wall_s: float, extra: dict | None = None) -> dict:
    """The stable results layout: per split the mean accuracy (%) of each method, timings, wall time."""
    s = ev["summary"]
    out = {"suite": suite, "wall_s": wall_s, "time": ev["time"]}
    for split in ("seen", "unseen"):
        out[split] = {k: s[split][k] for k in RESULT_KEYS} if split in s else {}
        if split in s:
            out[split] |= {"finetuned_last": s[split]["finetuned_last"], "gap_recovered": s[split]["gap_recovered"],
                           "novelty_mean": s[split]["novelty_mean"], "tasks": s[split]["tasks"]}
    out["speedup"] = ev["time"]["finetune_s_per_adapter"] / ev["time"]["generate_s_per_adapter"]
    out["per_task"] = ev["rows"]
    return out | (extra or {})


def markdown(results: dict) -> str:
    lines = [f"# loragen results: {results['suite']}", ""]
    lines += ["| split | tasks | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for split in ("seen", "unseen"):
        r = results[split]
        if r:
            lines.append(f"| {split} | {r['tasks']} | " + " | ".join(f"{r[m]:.1f}" for m in METHODS) + " |")
    lines += ["", "Accuracy in percent, mean over tasks. `finetuned` is the best-validation checkpoint.", ""]
    lines += ["| split | gap recovered: soup | nearest | noise | generated_mean | generated_best | novelty (L2) |",
              "|---|---|---|---|---|---|---|"]
    for split in ("seen", "unseen"):
        r = results[split]
        if r:
            g = r["gap_recovered"]
            fmt = lambda v: "n/a" if v is None else f"{100 * v:.0f}%"  # noqa: E731
            lines.append(f"| {split} | {fmt(g['soup'])} | {fmt(g['nearest'])} | {fmt(g['noise'])} | "
                         f"{fmt(g['generated_mean'])} | {fmt(g['generated_best'])} | {r['novelty_mean']:.3f} |")
    t = results["time"]
    lines += ["", "Gap recovered = (method − base) / (finetuned − base) on the split means.", "",
              f"Time to an adapter: fine-tuning {t['finetune_s_per_adapter']:.3f} s; generation "
              f"{1000 * t['generate_s_per_adapter']:.2f} ms per adapter in a call of {t['n_samples_per_call']} "
              f"({1000 * t['generate_s_single']:.1f} ms for a single adapter); speed-up {results['speedup']:.0f}×.",
              f"Wall time of the run: {results['wall_s']:.0f} s.", "", "## Per task", "",
              "| task | split | base | finetuned | soup | nearest | noise | gen mean | gen best | novelty |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["per_task"]:
        nov = sum(r["novelty"]) / len(r["novelty"])
        lines.append(f"| {r['task']} | {r['split']} | {r['base']:.1f} | {r['finetuned']:.1f} | {r['soup']:.1f} | "
                     f"{r['nearest']:.1f} | {r['noise']:.1f} | {r['generated_mean']:.1f} | {r['generated_best']:.1f} | {nov:.3f} |")
    lines += ["", "![accuracy per task](plots/accuracy_per_task.png)", "", "![PCA](plots/pca.png)", "",
              "![accuracy vs novelty](plots/accuracy_vs_novelty.png)", ""]
    return "\n".join(lines)


def plots(ev: dict, out: Path) -> list[Path]:
    """Accuracy per task and method; PCA of zoo vs generated adapters; accuracy vs novelty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rows = ev["rows"]
    paths = []

    def save(fig, ax, name: str, title: str) -> None:
        ax.set_title(title)
        fig.tight_layout()
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(8, 0.42 * len(rows)), 4.5))
    x = range(len(rows))
    for m, marker in zip(("base", "finetuned", "soup", "nearest", "noise", "generated_mean"), "o^sDxP"):
        ax.plot(x, [r[m] for r in rows], marker, label=m, alpha=0.85, markersize=6 if m != "generated_mean" else 8)
    n_seen = sum(r["split"] == "seen" for r in rows)
    ax.axvline(n_seen - 0.5, color="k", lw=0.8, ls="--")
    ax.text(n_seen - 0.3, 2, "held out →", fontsize=8)
    ax.set_xticks(list(x), [r["task"] for r in rows], rotation=75, fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(ncol=6, fontsize=8, loc="lower left")
    save(fig, ax, "accuracy_per_task", "Accuracy per task and method")

    zoo_MP, _ = ev["zoo"]
    seen = torch.cat([ev["generated"][r["task"]] for r in rows if r["split"] == "seen"])
    unseen = [ev["generated"][r["task"]] for r in rows if r["split"] == "unseen"]
    mean = zoo_MP.mean(0)
    _, _, v = torch.pca_lowrank(zoo_MP - mean, q=2, center=False)
    proj = lambda a: ((a - mean) @ v[:, :2]).numpy()  # noqa: E731
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(*proj(zoo_MP).T, s=12, c="0.6", label="zoo checkpoints")
    ax.scatter(*proj(seen).T, s=14, marker="x", c="tab:blue", label="generated, seen tasks")
    if unseen:
        ax.scatter(*proj(torch.cat(unseen)).T, s=18, marker="+", c="tab:red", label="generated, held-out tasks")
    ax.legend(fontsize=8)
    save(fig, ax, "pca", "PCA of adapter vectors (fit on the zoo)")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for split, color in (("seen", "tab:blue"), ("unseen", "tab:red")):
        sel = [r for r in rows if r["split"] == split]
        xs = [d for r in sel for d in r["novelty"]]
        ys = [a for r in sel for a in r["generated_all"]]
        if xs:
            ax.scatter(xs, ys, s=10, alpha=0.6, c=color, label=f"generated, {split}")
    ax.set_xlabel("L2 distance to nearest zoo checkpoint")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    save(fig, ax, "accuracy_vs_novelty", "Accuracy vs novelty")
    return paths


def write(out: Path, results: dict, ev: dict) -> None:
    atomic.write_json(out / "results.json", results)
    plots(ev, out / "plots")
    atomic.write_bytes(out / "report.md", markdown(results).encode())
