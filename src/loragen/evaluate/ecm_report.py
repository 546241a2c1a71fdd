"""Report of the ECM benchmark: report.md, sample grids (each control beside its samples), the ablation plot and the
validation edge F1 against training seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from loragen import atomic

LABELS = {"backbone": "backbone (no control)", "full_finetune": "full fine-tune + control tokens (ControlVAR-style)",
          "ecm": "ECM", "ecm_separate_ffn": "ECM, separate FFNs", "ecm_uniform_scales": "ECM, uniform scale sampling",
          "ecm_constant_temperature": "ECM, constant temperature"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_control_grid(controls_N1SS: torch.Tensor, samples_N1SS: torch.Tensor, labels_N: torch.Tensor, path: Path,
                      title: str, columns: int = 4) -> Path:
    """A PNG of control | sample pairs, `columns` pairs per row, each sample titled with the label it was drawn for."""
    plt = _plt()
    n = len(samples_N1SS)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 0.7, rows * 0.75 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")  # no frame or ticks (an empty cell stays blank)
    for i in range(n):
        r, c = divmod(i, columns)
        axes[r, 2 * c].imshow(controls_N1SS[i, 0].numpy(), cmap="magma", vmin=0, vmax=1)
        axes[r, 2 * c + 1].imshow(samples_N1SS[i, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[r, 2 * c + 1].set_title(str(int(labels_N[i])), fontsize=6, pad=1)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ablation_plot(methods: dict, path: Path) -> Path:
    """Edge F1 and digits-FD per method, ± std over seeds."""
    plt = _plt()
    names = list(methods)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "control_f1", "edge F1 (%, higher is better)"), (axes[1], "fd", "digits-FD (lower is better)")):
        ax.bar(range(len(names)), [methods[n][key] for n in names], yerr=[methods[n][f"{key}_std"] for n in names],
               color=["tab:blue" if n == "ecm" else "tab:orange" if n == "full_finetune" else "0.6" for n in names], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(label, fontsize=8)
    fig.suptitle("digits-control: ECM, its ablations and the baselines (test, mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_plot(methods: dict, target: float, path: Path) -> Path:
    """Validation edge F1 against training seconds of every trained method's seed-0 run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m, r in methods.items():
        if r.get("curve"):
            ax.plot([h["train_s"] for h in r["curve"]], [h["val_control_f1"] for h in r["curve"]], marker="o", ms=3, label=m)
    ax.axhline(target, color="0.5", ls="--", lw=1, label=f"target {target:.1f}")
    ax.set_xlabel("training seconds (2-core CPU)")
    ax.set_ylabel("validation edge F1 (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt_s(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.1f}"


def markdown(r: dict) -> str:
    m, sel = r["methods"], r["selection"]
    full, cut = m["full_finetune"], r["step_time_cut"]
    lines = ["# ECM on digits-control", "",
             f"Test: {r['config']['n_samples']} test digits' edge maps as controls, each with its digit's label; mean ± "
             f"std over {r['config']['train_seeds']} training seeds (one sampling seed each; the backbone: sampling "
             "seeds). Edge F1 is pixel-exact between the control and the sample's edge map.", "",
             "| method | edge F1 (%) | digits-FD | class consistency (%) | trainable params | share of full fine-tune | s / train step | tokens / step | lr |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, x in m.items():
        lines.append(f"| {LABELS[name]} | {x['control_f1']:.1f} ± {x['control_f1_std']:.1f} | {x['fd']:.2f} ± {x['fd_std']:.2f} | "
                     f"{x['class_acc']:.1f} ± {x['class_acc_std']:.1f} | {x['trainable_params']:,} | "
                     f"{100 * x['param_share_of_full_finetune']:.1f}% | "
                     + (f"{x['train_s_per_step'] * 1000:.1f} ms | {x['tokens_per_step']:.1f} | {x['lr']:g} |" if "lr" in x
                        else "- | - | - |"))
    lines += ["", "## Cost", "",
              f"- Training step time, interleaved on one batch sequence: ECM {m['ecm']['train_s_per_step'] * 1000:.1f} ms, "
              f"ECM with uniform scale sampling {m['ecm_uniform_scales']['train_s_per_step'] * 1000:.1f} ms "
              f"(early-centric cut, median of {cut['rounds']} paired rounds: {100 * cut['cut']:.1f}%, quartiles "
              f"{100 * cut['q1']:.1f}–{100 * cut['q3']:.1f}%, range {100 * cut['min']:.1f}–{100 * cut['max']:.1f}%), "
              f"full fine-tune {full['train_s_per_step'] * 1000:.1f} ms (medians of the rounds).",
              f"- Training seconds to validation edge F1 ≥ {r['target_f1']:.1f} (seed 0): "
              + ", ".join(f"{k} {_fmt_s(m[k]['train_s_to_target_f1'])}" for k in ("ecm", "full_finetune", "ecm_separate_ffn", "ecm_uniform_scales")) + ".",
              f"- Sampling {r['config']['cost_batch']} images: ECM / backbone time {r['sample_time_ratio']:.2f}×, full fine-tune / "
              f"backbone {r['sample_time_ratio_full_finetune']:.2f}×; peak memory ECM / backbone {r['memory_ratio']:.2f}×.",
              "", "## Choices on validation", "",
              f"- Warp strength of the training images (validation edge F1, ECM, seed 0): {sel['val_control_f1_per_augment']} "
              f"→ {sel['augment']:g}.",
              "- ECM's early-centric sampling (validation edge F1, seed 0; decay / last scale drawn per image or per batch / "
              f"token weighting): {sel['val_control_f1_per_early_sampling']}; step time cut against uniform sampling: "
              + str({k: round(v, 3) for k, v in sel.get("step_time_cut_per_early_sampling", {}).items()})
              + f" → {sel['early_decay']:g} / {sel['cut_per']} / {sel.get('scale_weighting', 'none')} (the most accurate "
              f"cutting the step time by ≥ {sel.get('min_step_cut', 0):.0%}).",
              "- lr (validation edge F1, seed 0): " + "; ".join(f"{k}: {v}" for k, v in sel["val_control_f1_per_lr"].items())
              + f" → {sel['lr']['ecm']:g} (ECM and its ablations), {sel['lr']['full_finetune']:g} (full fine-tune).",
              f"- ECM temperature schedule (validation digits-FD, late temperature @ first late scale): {sel['val_fd_per_schedule']} "
              f"→ {sel['temperatures']}.", ""]
    if r.get("mask"):
        mk = r["mask"]
        lines += ["## Second control: coarse mask", "",
                  f"- ECM: IoU {mk['ecm']['iou']:.1f} ± {mk['ecm']['iou_std']:.1f}%, RMSE {mk['ecm']['rmse']:.3f} ± "
                  f"{mk['ecm']['rmse_std']:.3f}, digits-FD {mk['ecm']['fd']:.2f}; backbone: IoU {mk['backbone']['iou']:.1f}%, "
                  f"RMSE {mk['backbone']['rmse']:.3f}, digits-FD {mk['backbone']['fd']:.2f}.", ""]
    lines += ["## Backbone", ""] + [f"- {k}: {v}" for k, v in r["backbone"].items()]
    lines += ["", "Sample grids: grid_<method>.png (control | sample). Plots: ablations.png, f1_vs_time.png.", ""]
    return "\n".join(lines)


def write(out: Path, results: dict, grids: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """report.md, grid_<method>.png, ablations.png and f1_vs_time.png into `out`."""
    for name, (images, controls, labels) in grids.items():
        save_control_grid(controls, images, labels, out / f"grid_{name}.png", f"{LABELS[name]} (test controls)")
    ablation_plot(results["methods"], out / "ablations.png")
    curve_plot(results["methods"], results["target_f1"], out / "f1_vs_time.png")
    atomic.write_bytes(out / "report.md", markdown(results).encode())
