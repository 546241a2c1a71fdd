import json
from dataclasses import asdict, replace

import pytest
import torch
from typer.testing import CliRunner

from loragen.cli import app
from loragen.conditions import Condition, get_encoder
from loragen.errors import ConditionError, ConfigError
from loragen.evaluate.cost import interleaved_times, paired_cut, peak_memory
from loragen.suites import get_suite
from loragen.suites.dit import DIT_SIZES, DiT, DiTConfig
from loragen.suites.image_metrics import frechet_distance

runner = CliRunner()


def said(result) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_suite_data_and_conditions():
    s = get_suite("digits-gen", quick=True)
    train, val, test = s.split("train"), s.split("val"), s.split("test")
    assert (len(train.y), len(val.y), len(test.y)) == (989, 269, 539) and train.x.shape[1:] == (1, 8, 8)
    assert train.x.min() == -1.0 and train.x.max() == 1.0

    def rows(d):
        return set(map(tuple, d.x.flatten(1).tolist()))

    assert not rows(train) & rows(test) and not rows(val) & rows(test) and not rows(val) & rows(train)
    three = s.data("digit-3", "val")
    assert (three.y == 3).all() and len(three.y) > 10
    assert s.condition("digit-3").label == 3 and [c.label for c in s.label_conditions()] == list(range(10))
    with pytest.raises(ValueError, match="split must be one of"):
        s.split("valid")


def test_validation_split_leaves_the_test_split_as_it_was():
    """Pinned sums of the 70/30 split before the validation split existed (issue 9): the test split is the same
    539 images, and validation + train are the old train split."""
    from loragen.suites.digits_gen import QUICK, DigitsGen

    new, old = DigitsGen(QUICK), DigitsGen(replace(QUICK, val_share=0.0))
    for s in (new, old):
        assert len(s.split("test").y) == 539 and s.split("test").x.sum().item() == -13277.375
        assert s.split("test").y.sum().item() == 2362
    assert old.split("train").x.sum().item() == -31515.875 and len(old.split("train").y) == 1258
    both = new.split("train").x.sum().item() + new.split("val").x.sum().item()
    assert both == -31515.875 and len(new.split("train").y) + len(new.split("val").y) == 1258
    with pytest.raises(ValueError, match="no validation split"):
        old.split("val")
    with pytest.raises(ConfigError, match=r"val_share must lie in \[0, 0.7\)"):
        replace(QUICK, val_share=0.7)


def test_config_key_and_generators_saved_before_the_validation_split():
    """val_share 0.0 keeps the cache key of the configuration before the field existed (so its cached backbone is
    found), and a config recorded then (no val_share) loads as val_share 0.0, not as the new default."""
    import hashlib

    from loragen.suites.digits_gen import DigitsGenConfig

    before = {"dit": "small", "steps": 3000, "batch_size": 64, "lr": 0.001, "ema": 0.999, "classifier_epochs": 30,
              "checkpoint_every": 500, "seed": 0}
    old_key = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:10]
    assert DigitsGenConfig.from_dict(before).val_share == 0.0 and DigitsGenConfig.from_dict(before).key() == old_key
    assert DigitsGenConfig().key() != old_key and DigitsGenConfig.from_dict(asdict(DigitsGenConfig())) == DigitsGenConfig()


def test_digits_fd_against_the_validation_split():
    """digits-FD takes its reference from the split asked for: the validation images score ~0 against themselves
    and not against the test split; the reference features are computed once per split."""
    s = get_suite("digits-gen", quick=True)
    val, test = s.split("val"), s.split("test")
    assert abs(s.image_metrics(val.x, val.y, split="val")["fd"]) < 1e-3
    assert s.image_metrics(val.x, val.y)["fd"] > 0.1  # the default reference is the test split
    assert abs(s.image_metrics(test.x, test.y, split="test")["fd"]) < 1e-3
    assert s.real_features("val") is s.real_features("val") and s.real_features("val").shape[0] == 269
    assert s.floor_fd("val") > 0
    with pytest.raises(ValueError, match="held-out split, 'test' or 'val'; found 'train'"):
        s.real_features("train")


def test_class_encoder():
    enc = get_encoder("class", num_classes=10)
    e = enc.encode([Condition(label=2), Condition(label=9)])
    assert e.shape == (2, 10) and e[0, 2] == 1 and e[1, 9] == 1 and e.sum() == 2
    with pytest.raises(ConditionError, match=r"a label in 0 … 9; found \[12, None\]"):
        enc.encode([Condition(label=12), Condition(task="t")])


def test_dit_shapes_and_zero_init():
    dit = DiT(DIT_SIZES["tiny"])
    x = torch.randn(3, 1, 8, 8)
    out = dit(x, torch.tensor([1, 50, 999]), torch.tensor([0, 4, 9]))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # zero-initialised output layer: ε̂ = 0
    names = {n for n, _ in dit.named_modules()}
    assert {"blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v", "blocks.1.attn.v"} <= names
    with pytest.raises(ConfigError, match="image_size must be a multiple of patch"):
        DiTConfig(image_size=8, patch=3)


def test_interrupted_backbone_training_resumes_to_the_same_weights(tmp_path, killed_after_save):
    """The backbone (the EMA of the DiT's weights) of an interrupted training equals the uninterrupted one's."""
    from loragen.suites.digits_gen import STATE_FILE, DigitsGen, DigitsGenConfig

    cfg = DigitsGenConfig(dit="tiny", steps=6, checkpoint_every=2)
    straight = DigitsGen(cfg, cache_dir=tmp_path / "a").base_model(show=False)
    suite = DigitsGen(cfg, cache_dir=tmp_path / "b")
    with killed_after_save(2):
        suite.base_model(show=False)
    assert (suite.cache_dir / STATE_FILE).exists()
    resumed = suite.base_model(show=False)
    assert not (suite.cache_dir / STATE_FILE).exists()
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_frechet_distance_pinned():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g)
    assert abs(frechet_distance(a, a)) < 1e-6
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0, 0.5])  # same covariance: FD = ‖shift‖² exactly
    assert abs(frechet_distance(a, a + shift) - 5.25) < 1e-6
    expected = a.mean(0).square().sum() + a.T.cov().trace()  # ‖μ − 2μ‖² + Tr(Σ + 4Σ − 2·2Σ)
    assert abs(frechet_distance(a, 2 * a) - expected.item()) < 1e-4
    with pytest.raises(ValueError, match=r"expected two feature sets"):
        frechet_distance(a, a[:, :3])


def test_peak_memory_counts_live_tensors():
    def job():
        a = torch.ones(1_000_000)  # 4 MB
        b = a * 2  # 4 MB
        del a
        c = b + 1  # 4 MB: a is gone, so the peak is 8 MB
        return c.sum()

    resident = torch.zeros(250_000)  # 1 MB
    peak = peak_memory(job, [resident])
    assert 9.0e6 <= peak <= 9.1e6
    times = interleaved_times({"a": lambda: None, "b": lambda: sum(range(1000))}, repeats=3)
    assert set(times) == {"a", "b"} and all(v >= 0 for v in times.values())


def test_paired_cut_follows_the_rounds_not_the_medians():
    # the machine slows down 1.5x for rounds 3-5: every round's new/old ratio is 0.6
    old = [10.0, 10.0, 15.0, 15.0, 15.0]
    new = [6.0, 6.0, 9.0, 9.0, 9.0]
    cut = paired_cut(new, old)
    assert cut["cut"] == pytest.approx(0.4) and cut["min"] == pytest.approx(0.4) and cut["rounds"] == 5
    one = paired_cut([3.0], [4.0])
    assert one["cut"] == one["q1"] == one["q3"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        paired_cut([1.0], [1.0, 2.0])


def test_composer_cli_bench_train_sample(tmp_path):
    out = tmp_path / "bench"
    r = runner.invoke(app, ["composer", "bench", "--out", str(out), "--quick"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    methods, trained = {"backbone", "static_lora", "per_class_lora", "composer", "ttt"}, {"static_lora", "per_class_lora", "composer"}
    assert set(res["fd"]) == methods and set(res["class_acc"]) == methods
    assert all(v >= 0 for v in res["fd"].values()) and all(0 <= v <= 100 for v in res["class_acc"].values())
    assert {"time_ratio", "memory_ratio"} <= set(res["overhead"]) and res["batched_lora_ratio"] > 0
    assert set(res["ablations"]) == {"default", "rank=4", "rank=16", "alpha=0", "alpha=0.5", "alpha=1",
                                     "attention=standard", "generator=mlp"}
    # lr chosen per trained method on the validation split's FD; the test FD is the mean over the training seeds
    assert set(res["lr_selection"]) == set(res["lr"]) == set(res["fd_train_std"]) == trained
    for m in trained:
        grid = {row["lr"]: row["val_fd"] for row in res["lr_selection"][m]}
        assert list(grid)[:2] == [1e-3, 1e-2] and res["lr"][m] == min(grid, key=grid.get)
        # one more lr past the edge (lr_extend 1) exactly when the best of the first two lies at it: it always does
        best2 = min(list(grid)[:2], key=grid.get)
        assert list(grid)[2:] == [3e-2 if best2 == 1e-2 else 3e-4]
        assert len(res["fd_per_train_seed"][m]) == 2 and abs(sum(res["fd_per_train_seed"][m]) / 2 - res["fd"][m]) < 1e-9
        for seed in (0, 1):
            assert (out / "generators" / f"{m}_lr{res['lr'][m]:g}_seed{seed}" / "composer.json").exists()
    assert res["split_sizes"] == {"train": 989, "val": 269, "test": 539}
    assert set(res["comparison"]["controls"]) == {"static_lora", "per_class_lora"}
    for m in methods:
        assert (out / f"grid_{m}.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert report.startswith("# loragen: Composer") and "chosen on validation digits-FD" in report
    assert "Composer's claim" in report and "per-class LoRA" in report
    r = runner.invoke(app, ["composer", "bench", "--out", str(out), "--quick"])
    assert r.exit_code == 2 and "pass --overwrite" in said(r)
    # a rerun reuses every trained generator: none is trained again
    from loragen.generators.composer import ComposerGenerator

    fits = []
    real_fit = ComposerGenerator.fit.__func__
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ComposerGenerator, "fit", classmethod(lambda cls, *a, **k: fits.append(k.get("out")) or real_fit(cls, *a, **k)))
        r = runner.invoke(app, ["composer", "bench", "--out", str(out), "--quick", "--overwrite", "--no-ablations"])
    assert r.exit_code == 0, r.output
    assert all(f is None for f in fits)  # only test-time training fits (in memory, no folder)

    gen = tmp_path / "gen"
    r = runner.invoke(app, ["composer", "train", "--out", str(gen), "--quick", "--steps", "3"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["composer", "train", "--out", str(gen), "--quick"])
    assert r.exit_code == 2 and "already holds a trained generator" in said(r)
    grid, adapters = tmp_path / "grid.png", tmp_path / "adapters"
    r = runner.invoke(app, ["composer", "sample", "--generator-dir", str(gen), "--plot", str(grid), "--classes", "2,7",
                            "--n", "3", "--sample-steps", "3", "--adapters", str(adapters)])
    assert r.exit_code == 0, r.output
    assert grid.stat().st_size > 1000 and (adapters / "class_7" / "adapter_config.json").exists()
    r = runner.invoke(app, ["composer", "sample", "--generator-dir", str(gen), "--plot", str(tmp_path / "g2.png"),
                            "--classes", "2,11"])
    assert r.exit_code == 2 and "class labels in 0 … 9" in said(r)


def test_generated_update_as_peft_adapter_matches_batched_lora(tmp_path, live_dit):
    """A class's composed W_Q / W_V update, written as a PEFT folder and loaded by PEFT, gives the same backbone
    output as the per-sample batched path."""
    import copy

    from peft import PeftModel

    from loragen.generators.composer import ComposerConfig, ComposerGenerator

    suite = get_suite("digits-gen", quick=True)
    plain = copy.deepcopy(live_dit)
    cfg = ComposerConfig(rank=2, width=16, layers=1, heads=2, steps=3, batch_size=8, lr=1e-1)
    gen = ComposerGenerator.fit(suite, cfg, backbone=live_dit, show=False)
    cond = suite.label_conditions()[5]
    gen.adapters([cond])[0].save(tmp_path / "a")
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([100, 700]), torch.tensor([5, 5])
    with torch.no_grad(), gen.applied(live_dit, gen.encode([cond, cond])):
        ours = live_dit(x, t, y)
    peft = PeftModel.from_pretrained(copy.deepcopy(plain), str(tmp_path / "a"))
    with torch.no_grad():
        assert not torch.allclose(plain(x, t, y), ours, atol=1e-3)  # the update does change the output
        assert torch.allclose(peft(x, t, y), ours, atol=1e-5)
