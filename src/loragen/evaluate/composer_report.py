"""Report of the Composer benchmark: results.json, report.md (the lr selection on validation digits-FD, test scores
over training seeds, whether Composer beats each equal-effort control), a sample grid per method and the ablation
plot."""

from __future__ import annotations

from pathlib import Path

import torch

from loragen import atomic

LABELS = {"backbone": "frozen backbone", "static_lora": "static LoRA (same steps)",
          "per_class_lora": "per-class LoRA (same steps)", "composer": "Composer", "ttt": "test-time training"}
CONTROL_NAMES = {"static_lora": "static LoRA", "per_class_lora": "per-class LoRA"}  # in sentences


def save_grid(images_N1SS: torch.Tensor, labels_N: torch.Tensor, path: Path, title: str, per_class: int = 8) -> Path:
    """A PNG with one row per class and `per_class` samples of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = labels_N.unique().tolist()
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.6, len(classes) * 0.6 + 0.4), squeeze=False)
    for row, c in zip(axes, classes):
        imgs = images_N1SS[labels_N == c][:per_class]
        for k, ax in enumerate(row):
            if k < len(imgs):
                ax.imshow(imgs[k, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(str(c), rotation=0, labelpad=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def ablation_plot(ablations: dict, path: Path, lr: float) -> Path:
    """Bar chart of digits-FD (± std over sampling seeds) per ablation row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ablations)
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names)), 3.5))
    ax.bar(range(len(names)), [ablations[n]["fd"] for n in names], yerr=[ablations[n]["fd_std"] for n in names],
           color=["tab:blue" if n == "default" else "0.6" for n in names], capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("digits-FD (lower is better)")
    ax.set_title(f"Composer ablations (default: rank 8, α 0.75, global-local, Transformer; lr {lr:g}, seed 0)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def verdict(r: dict) -> list[str]:
    """Plain sentences: does Composer beat each tuned control by more than the training seeds' spread, and does its
    claim survive."""
    fd, sd, cmp, seeds = r["fd"], r["fd_train_std"], r["comparison"], r["config"]["train_seeds"]
    composer = f"Composer ({fd['composer']:.2f} ± {sd['composer']:.2f})"
    lines = [f"Test digits-FD, mean ± std over {_count(seeds, 'training seed')}:"]
    for c, row in cmp["controls"].items():
        control = f"the tuned {CONTROL_NAMES[c]} ({fd[c]:.2f} ± {sd[c]:.2f})"
        spread = f"the training seeds' spread ({row['spread']:.2f})"
        if row["verdict"] == "better":
            lines.append(f"{composer} beats {control} by {row['margin']:.2f}, more than {spread}.")
        elif row["verdict"] == "worse":
            lines.append(f"{composer} is worse than {control} by {-row['margin']:.2f}, more than {spread}.")
        else:
            lines.append(f"{composer} and {control} differ by {abs(row['margin']):.2f}, within {spread}: no clear winner.")
    if cmp["claim_survives"]:
        lines.append("Composer's claim survives: it beats both equal-effort controls, each at its own tuned lr, by more "
                     "than the training seeds' spread.")
    else:
        lost = [CONTROL_NAMES[c] for c, row in cmp["controls"].items() if row["verdict"] != "better"]
        lines.append(f"Composer's claim does not survive: it does not beat the tuned {' or the tuned '.join(lost)} by more "
                     f"than the training seeds' spread (best control: {CONTROL_NAMES[cmp['best_control']]}).")
    if seeds == 1:
        lines.append("Only one training seed: the spread is not measured (0), so these compare single runs.")
    return lines


def lr_table(r: dict) -> list[str]:
    """Markdown: validation digits-FD per trained method and lr (every lr any method tried; – where a method did not
    try it: the grid grows past an edge only for a method whose best lies there), the chosen lr in bold."""
    grid = sorted({row["lr"] for rows in r["lr_selection"].values() for row in rows})
    lines = ["| method | " + " | ".join(f"lr {lr:g}" for lr in grid) + " | chosen |", "|---" * (len(grid) + 2) + "|"]
    for m, rows in r["lr_selection"].items():
        fd = {row["lr"]: row["val_fd"] for row in rows}
        cells = []
        for lr in grid:
            cell = "–" if lr not in fd else "not finite" if fd[lr] is None else f"{fd[lr]:.2f}"
            cells.append(f"**{cell}**" if lr == r["lr"][m] else cell)
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {r['lr'][m]:g} |")
    return lines


def markdown(r: dict) -> str:
    cfg, sizes = r["config"], r["split_sizes"]
    lines = ["# loragen: Composer on digits-gen", "",
             "| method | lr | digits-FD ↓ | std over training seeds | std over sampling seeds | class consistency ↑ |",
             "|---|---|---|---|---|---|"]
    for m, label in LABELS.items():
        lr = f"{r['lr'][m]:g}" if m in r["lr"] else f"{cfg['ttt_lr']:g} (fixed)" if m == "ttt" else "—"
        train_std = f"{r['fd_train_std'][m]:.2f}" if m in r["fd_train_std"] else "—"
        lines.append(f"| {label} | {lr} | {r['fd'][m]:.2f} | {train_std} | {r['fd_std'][m]:.2f} | "
                     f"{r['class_acc'][m]:.1f} ± {r['class_acc_std'][m]:.1f}% |")
    train_seeds, seeds = _count(cfg["train_seeds"], "training seed"), _count(cfg["seeds"], "sampling seed")
    lines += ["", f"Test split ({sizes['test']} images), {cfg['n_samples']} images of mixed classes per run, "
              f"{cfg['sample_steps']} DDIM steps. Trained methods: the mean over {train_seeds} × {seeds}; the std over "
              f"training seeds is that of the per-seed means, the std over sampling seeds is averaged over the training "
              f"seeds. The backbone and test-time training: {seeds}. Real training digits score digits-FD "
              f"{r['real_fd_floor']:.2f} against the same test split (the floor).", "",
              *verdict(r), "",
              "## Learning rate, chosen on validation digits-FD", "", *lr_table(r), "",
              f"Each trained method at every lr with seed 0, the same steps, batches and noise; digits-FD of "
              f"{cfg['val_samples']} samples (one sampling seed) against the validation split ({sizes['val']} images, "
              f"carved out of the training data; the backbone, the classifier and the generators train on the other "
              f"{sizes['train']}). The test split chose nothing. Real training digits score {r['val_fd_floor']:.2f} "
              "against the validation split.", "",
              "## Cost", "", "| batch (mixed classes) | backbone s | Composer s | time ratio | backbone peak MB | "
              "Composer peak MB | memory ratio |", "|---|---|---|---|---|---|---|"]
    for o in r["overhead"]["per_batch"]:
        lines.append(f"| {o['batch']} | {o['backbone_s']:.3f} | {o['composer_s']:.3f} | {o['time_ratio']:.3f} | "
                     f"{o['backbone_peak_mb']:.1f} | {o['composer_peak_mb']:.1f} | {o['memory_ratio']:.3f} |")
    t, b = r["ttt_cost"], r["batched_lora"]
    lines += ["", f"Sampling with {r['overhead']['steps']} DDIM steps; times are medians of interleaved runs. Peak memory "
              "counts the resident weights (backbone, and the meta-generator for Composer) and the tensors allocated "
              "while sampling.", "",
              f"Test-time training ({t['steps_per_condition']} steps per condition, batch of {t['batch']}): "
              f"{t['time_ratio']:.1f}× the backbone's sampling time, {t['memory_ratio']:.2f}× its peak memory.", "",
              f"Per-sample batched LoRA, {b['distinct_adapters']} distinct rank-{b['rank']} adapters on every W_Q / W_V, "
              f"batch {b['batch']}: {b['lora_ms']:.1f} ms vs {b['base_ms']:.1f} ms for the base forward pass "
              f"(ratio {b['ratio']:.3f}).", "", "## Ablations", "",
              f"Each trained like the default at Composer's chosen lr ({r['lr']['composer']:g}) with seed 0; the default "
              "row is Composer's seed-0 run. ± over sampling seeds.", "",
              "| variant | digits-FD ↓ | class consistency ↑ |", "|---|---|---|"]
    for name, a in r["ablations"].items():
        lines.append(f"| {name} | {a['fd']:.2f} ± {a['fd_std']:.2f} | {a['class_acc']:.1f} ± {a['class_acc_std']:.1f}% |")
    lines += ["", "![ablations](ablations.png)", "", "## Samples (rows: classes; training seed 0, sampling seed 0)", ""]
    lines += [f"![{LABELS[m]}](grid_{m}.png)" for m in LABELS]
    return "\n".join(lines) + "\n"


def write(out: Path, results: dict, images: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """results.json, report.md, grid_<method>.png, ablations.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for m, (x, y) in images.items():
        save_grid(x, y, out / f"grid_{m}.png", f"{LABELS[m]}: digits-FD {results['fd'][m]:.1f}, "
                  f"class consistency {results['class_acc'][m]:.0f}%")
    ablation_plot(results["ablations"], out / "ablations.png", results["lr"]["composer"])
    atomic.write_bytes(out / "report.md", markdown(results).encode())
    atomic.write_json(out / "results.json", results)
