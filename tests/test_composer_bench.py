"""The Composer benchmark's equal-effort logic (issue 9) on made-up numbers: lr selection on validation digits-FD,
the aggregation over training seeds, and the verdict against the controls."""

import math

import pytest

from loragen.errors import ConfigError, LoragenError
from loragen.evaluate.composer_report import lr_table, verdict
from loragen.experiments.composer_bench import BenchConfig, _over_train_seeds, compare, select_lr


def test_select_lr_picks_the_lowest_validation_fd():
    assert select_lr({1e-4: 60.0, 3e-4: 41.5, 1e-3: 38.2, 3e-3: 55.0}) == 1e-3
    assert select_lr({1e-4: 30.0, 3e-4: 41.5, 1e-3: 38.2}) == 1e-4  # the grid's edge is allowed
    assert select_lr({1e-4: 50.0, 1e-3: 40.0, 3e-3: None, 1e-2: math.nan}) == 1e-3  # diverged runs rank last
    assert select_lr({3e-4: 40.0, 1e-4: 40.0}) == 1e-4  # a tie goes to the smaller lr, whatever the order
    with pytest.raises(LoragenError, match="no learning rate of the grid gave finite samples"):
        select_lr({1e-3: None, 3e-3: math.inf})


def test_the_grid_grows_past_an_edge_only_while_the_best_is_there():
    from loragen.experiments.composer_bench import beyond_edge

    assert beyond_edge({1e-4: 60.0, 3e-4: 41.5, 1e-3: 38.2, 3e-3: 55.0}) is None  # best inside
    assert beyond_edge({1e-4: 60.0, 1e-3: 50.0, 1e-2: 40.0}) == 3e-2  # best at the top: one ladder step up
    assert beyond_edge({1e-4: 30.0, 3e-4: 41.5}) == 3e-5  # best at the bottom: one step down
    assert beyond_edge({1e-6: 30.0, 3e-6: 41.5}) is None  # the ladder ends
    assert beyond_edge({1e-3: 30.0}) is None  # one lr has no edge to speak of


def test_bench_config_validation():
    with pytest.raises(ConfigError, match="lr_grid must hold at least one positive learning rate"):
        BenchConfig(lr_grid=())
    with pytest.raises(ConfigError, match="train_seeds must be >= 1; found 0"):
        BenchConfig(train_seeds=0)
    quick = BenchConfig.quick()
    assert len(quick.lr_grid) == 2 and quick.train_seeds >= 1


def test_over_train_seeds_means_and_spreads():
    per_seed = [{"fd": 40.0, "fd_std": 2.0, "class_acc": 80.0, "class_acc_std": 1.0, "images": "x0", "labels": "y0"},
                {"fd": 44.0, "fd_std": 4.0, "class_acc": 90.0, "class_acc_std": 3.0, "images": "x1", "labels": "y1"}]
    s = _over_train_seeds(per_seed)
    assert s["fd"] == 42.0 and s["fd_std"] == 3.0 and abs(s["fd_train_std"] - 2 ** 1.5) < 1e-12  # stdev(40, 44) = √8
    assert s["class_acc"] == 85.0 and s["fd_per_train_seed"] == [40.0, 44.0] and s["images"] == "x0"
    assert _over_train_seeds(per_seed[:1])["fd_train_std"] == 0.0


def _results(fd: dict, train_std: dict, seeds: int = 3) -> dict:
    return {"fd": fd, "fd_train_std": train_std, "comparison": compare(fd, train_std), "config": {"train_seeds": seeds}}


def test_compare_and_verdict():
    # beats static LoRA by 20 (spread 3), loses to the per-class LoRA by 10 (spread 4)
    r = _results({"composer": 50.0, "static_lora": 70.0, "per_class_lora": 40.0},
                 {"composer": 1.0, "static_lora": 2.0, "per_class_lora": 3.0})
    c = r["comparison"]
    assert c["controls"]["static_lora"] == {"margin": 20.0, "spread": 3.0, "verdict": "better"}
    assert c["controls"]["per_class_lora"]["verdict"] == "worse" and c["best_control"] == "per_class_lora"
    assert not c["claim_survives"]
    text = " ".join(verdict(r))
    assert "beats the tuned static LoRA (70.00 ± 2.00) by 20.00, more than the training seeds' spread (3.00)" in text
    assert "is worse than the tuned per-class LoRA (40.00 ± 3.00) by 10.00" in text
    assert "claim does not survive: it does not beat the tuned per-class LoRA" in text

    # a lower mean that is within the seeds' spread is no win
    r = _results({"composer": 50.0, "static_lora": 70.0, "per_class_lora": 52.0},
                 {"composer": 1.5, "static_lora": 2.0, "per_class_lora": 1.0})
    assert r["comparison"]["controls"]["per_class_lora"]["verdict"] == "within spread"
    assert not r["comparison"]["claim_survives"] and "within the training seeds' spread (2.50): no clear winner" in " ".join(verdict(r))

    r = _results({"composer": 30.0, "static_lora": 70.0, "per_class_lora": 40.0},
                 {"composer": 1.0, "static_lora": 2.0, "per_class_lora": 3.0})
    assert r["comparison"]["claim_survives"] and "claim survives" in " ".join(verdict(r))
    r = _results({"composer": 30.0, "static_lora": 70.0, "per_class_lora": 40.0},
                 {"composer": 0.0, "static_lora": 0.0, "per_class_lora": 0.0}, seeds=1)
    assert "Only one training seed" in verdict(r)[-1]


def test_lr_table_marks_the_chosen_lr():
    r = {"config": {"lr_grid": [1e-4, 1e-3]}, "lr": {"composer": 1e-4},
         "lr_selection": {"composer": [{"lr": 1e-4, "val_fd": 61.0}, {"lr": 1e-3, "val_fd": None}]}}
    assert lr_table(r)[-1] == "| Composer | **61.00** | not finite | 0.0001 |"
    r["lr_selection"]["static_lora"] = [{"lr": 1e-3, "val_fd": 50.0}, {"lr": 3e-3, "val_fd": 45.0}]  # grown past the edge
    r["lr"]["static_lora"] = 3e-3
    table = lr_table(r)
    assert table[0] == "| method | lr 0.0001 | lr 0.001 | lr 0.003 | chosen |"
    assert table[-2:] == ["| Composer | **61.00** | not finite | – | 0.0001 |", "| static LoRA (same steps) | – | 50.00 | **45.00** | 0.003 |"]
