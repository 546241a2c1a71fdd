"""The held-out study's invariants: disjoint folds, the gap formula, CIs, merges, warm starts, and the benchmark."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from loragen.adapters.adapter import Adapter
from loragen.errors import LoragenError
from loragen.evaluate.merge import ZooMerger, similarity_weights
from loragen.evaluate.stats import bootstrap_ci
from loragen.evaluate.unseen import load_or_fit, recovered, summarize
from loragen.suites.suite import Fold

ROOT = Path(__file__).resolve().parents[1]


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_tasks():
    g = torch.Generator().manual_seed(0)
    few = (torch.randn(10, generator=g) + 1).tolist()
    many = (torch.randn(200, generator=g) + 1).tolist()
    lo, hi = bootstrap_ci(few)
    assert lo < sum(few) / len(few) < hi
    lo2, hi2 = bootstrap_ci(many)
    assert hi2 - lo2 < hi - lo and lo2 < 1 < hi2
    assert bootstrap_ci(few) == (lo, hi)  # seeded
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_ci([])


def _row(task, base, ft, gen, near, where="inside", **rest):
    return {"task": task, "params": {"where": where}, "base": base, "finetuned": ft, "generated": gen, "nearest": near,
            "merge": near, **rest}


def test_gap_formula_exclusion_and_paired_difference():
    rows = [_row("a", 20, 80, 74, 50), _row("b", 10, 90, 90, 10, "outside"), _row("c", 50, 51, 20, 51),  # c: gap < 2
            _row("d", 30, 70, 28.5, 40)]
    assert recovered(rows, "generated", 2.0) == pytest.approx([0.9, 1.0, -0.0375])
    s = summarize(rows, ["generated", "nearest", "merge"], 2.0)
    assert s["tasks"] == 4 and s["tasks_in_ratios"] == 3
    g = s["methods"]["generated"]
    assert g["recovered_mean"] == pytest.approx((0.9 + 1.0 - 0.0375) / 3)
    assert g["interpolation"] == pytest.approx((0.9 - 0.0375) / 2) and g["extrapolation"] == pytest.approx(1.0)
    assert g["recovered_median"] == pytest.approx(0.9)
    assert s["paired_vs_nearest"]["mean"] == pytest.approx(((0.9 - 0.5) + 1.0 + (-0.0375 - 0.25)) / 3)
    assert s["worse_than_base"] == 2  # c (20 < 49) and d (28.5 < 29); the gap filter does not hide a task here


def test_fold_refuses_overlap():
    with pytest.raises(ValueError, match="must not be trained on"):
        Fold(0, ("a", "b"), ("b",))
    with pytest.raises(ValueError, match="must not be trained on"):
        Fold(0, ("a",), ("b",), generator_only=("c", "b"))


def test_merge_cat_is_the_weighted_sum_of_updates(tiny, tiny_layout):
    g = torch.Generator().manual_seed(0)
    adapters = {f"t{i}": Adapter.from_vector(tiny_layout, torch.randn(tiny_layout.numel, generator=g)) for i in range(3)}
    merger = ZooMerger(tiny, tiny_layout, adapters)
    w = similarity_weights(torch.tensor([1.0, 2.0]))
    assert w == pytest.approx([2 / 3, 1 / 3])
    merged = merger.merge(["t0", "t2"], w, "cat")
    for m, mm in zip(tiny_layout.modules, merged.layout.modules):
        want = w[0] * adapters["t0"].delta(m) + w[1] * adapters["t2"].delta(m)
        assert mm.rank == 2 * m.rank and torch.allclose(merged.delta(mm), want, atol=1e-5)
    assert merger.merge(["t0", "t1"], [0.5, 0.5], "linear").layout.modules[0].rank == tiny_layout.modules[0].rank
    with pytest.raises(ValueError, match="combination must be one of"):
        merger.merge(["t0"], [1.0], "magic")


def test_warm_start_begins_where_its_adapter_is():
    from loragen.adapters.layout import LoraLayout
    from loragen.finetune import FinetuneConfig, finetune, validation_curve
    from loragen.suites import get_suite

    suite = get_suite("digits-domains", n_tasks=2, n_extrapolation=0)
    base, task = suite.base_model(), suite.tasks()[0].name
    cfg = FinetuneConfig(steps=40, keep_last=2, save_every=5)
    layout = LoraLayout.from_model(base, suite.target_modules, cfg.rank, cfg.alpha)
    kept, _ = finetune(suite, base, layout, task, cfg)
    curve = validation_curve(suite, base, layout, task, cfg, init=kept[-1], every=10)
    assert [s for s, _, _ in curve] == [0, 10, 20, 30, 40]
    assert curve[0][1] == pytest.approx(kept[-1].meta["val_acc"])  # step 0 is the adapter itself
    scratch = validation_curve(suite, base, layout, task, cfg, every=10)
    assert scratch[0][1] == pytest.approx(suite.accuracy(base, suite.data(task, "val")))  # LoRA's init: B = 0
    # stop_at ends the run at the first check at or above it; the checks before are those of the whole run
    bar = scratch[2][1]
    first = next(i for i, (_, a, _) in enumerate(scratch) if a >= bar)
    stopped = validation_curve(suite, base, layout, task, cfg, every=10, stop_at=bar)
    assert len(stopped) == first + 1 < len(scratch)
    assert [s for s, _, _ in stopped] == [s for s, _, _ in scratch[: first + 1]]
    assert [a for _, a, _ in stopped] == pytest.approx([a for _, a, _ in scratch[: first + 1]])


def test_lr_schedule_ramps_up_then_falls_back_to_the_finetuning_lr():
    from loragen.errors import ConfigError
    from loragen.finetune import LrSchedule

    # the multiple of the lr for the step after `done` steps (LambdaLR's argument; train_lora applies it, next test)
    assert [LrSchedule()(done) for done in range(5)] == [1.0] * 5
    # ramp to 10x over 4 steps (step s at 10 · s / 5), then fall to 1x over 4 steps and stay there
    want = [10 * s / 5 for s in range(1, 5)] + [10.0, 7.75, 5.5, 3.25, 1.0, 1.0, 1.0]
    assert [LrSchedule(10.0, 4, 4)(done) for done in range(11)] == pytest.approx(want)
    assert [LrSchedule(10.0, 4)(done) for done in range(11)] == pytest.approx(want[:4] + [10.0] * 7)
    assert LrSchedule(0.5, 0, 2)(1) == pytest.approx(0.75)  # a peak below 1 rises back to 1
    for bad in (dict(peak=0.0), dict(warmup=-1), dict(decay=-2)):
        with pytest.raises(ConfigError, match="lr schedule needs"):
            LrSchedule(**bad)


def test_train_lora_applies_the_lr_schedule():
    from loragen.adapters.layout import LoraLayout
    from loragen.finetune import FinetuneConfig, LrSchedule, train_lora
    from loragen.suites import get_suite

    suite = get_suite("digits-domains", n_tasks=2, n_extrapolation=0)
    base, task = suite.base_model(), suite.tasks()[0].name
    cfg = FinetuneConfig(steps=6, keep_last=1, save_every=5, lr=1e-2)
    layout = LoraLayout.from_model(base, suite.target_modules, cfg.rank, cfg.alpha)
    key = f"base_model.model.{layout.modules[0].name}.lora_B.default.weight"  # B starts at 0 (LoRA's init)

    def first_move(schedule: LrSchedule) -> float:
        """The largest change of one LoRA B weight in the first optimiser step."""
        seen: list[torch.Tensor] = []

        def grab(step, model, loss):
            seen.append(dict(model.named_parameters())[key].detach().clone())
            return step == 1

        train_lora(suite, base, layout, suite.data(task, "train"), cfg, grab, schedule=schedule)
        return float((seen[1] - seen[0]).abs().max())

    # Adam's first step moves a weight by ~lr whatever its gradient: the ramp makes step s's lr peak · lr · s / (warmup + 1)
    assert first_move(LrSchedule()) == pytest.approx(cfg.lr, rel=1e-3)
    assert first_move(LrSchedule(1.0, 3)) == pytest.approx(cfg.lr / 4, rel=1e-3)
    assert first_move(LrSchedule(8.0, 3)) == pytest.approx(2 * cfg.lr, rel=1e-3)


def test_warm_start_target_is_share_of_where_scratch_settles():
    from loragen.evaluate.unseen import reach

    # scratch settles at 80 (last quarter of 8 checks: 80, 80); one lucky check at 100 must not set the target
    scratch = [(s, a, s / 10) for s, a in zip(range(0, 80, 10), [50, 60, 100, 70, 78, 80, 80, 80])]
    curves = {"scratch": scratch, "generated": [(0, 77.0, 0.0), (10, 90.0, 1.0)], "nearest": [(0, 10.0, 0.0), (10, 20.0, 1.0)]}
    target, hits = reach(curves)
    assert target == pytest.approx(0.95 * 80)
    assert hits["scratch"] == {"steps": 20, "seconds": 2.0, "start_acc": 50}
    assert hits["generated"]["steps"] == 0 and hits["generated"]["start_acc"] == 77.0
    assert hits["nearest"] == {"steps": None, "seconds": None, "start_acc": 10.0}


def test_warm_condition_draws_its_examples_from_the_training_split():
    from loragen.evaluate.unseen import warm_condition
    from loragen.suites import get_suite

    suite = get_suite("text-topics")
    task = suite.tasks()[0].name
    assert warm_condition(suite, task, None) == suite.condition(task)  # the zero-shot condition
    pool = suite.condition_pool(task).examples
    k48 = warm_condition(suite, task, 48)
    assert len(k48.examples) == 48 == len(set(k48.examples)) and set(k48.examples) <= set(pool)
    assert k48.text == suite.condition(task).text and warm_condition(suite, task, 48) == k48  # the same draw each time
    assert sorted(warm_condition(suite, task, 10_000).examples) == sorted(pool)  # more than there are: all of them
    train = {f"{x!r}" for x in suite.texts(task, "train")[0]}
    assert {line.rsplit(" -> ", 1)[0] for line in pool} == train  # the training split, nothing else


def test_unseen_benchmark_quick_end_to_end(tmp_path):
    """The k-fold benchmark's tiny configuration writes the documented results layout; rerunning reuses its work."""
    out = tmp_path / "u"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "unseen.py"), "--quick", "--out", str(out), "--seeds", "0,1"]
    r = subprocess.run(cmd + ["--timing-runs", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "needs a finished study" in r.stderr  # the cost alone needs the study's generator
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["suite"] == "digits-domains" and res["folds"] == 3 and res["tasks"] == 12
    for m in ("generated", "nearest", "merge", "multitask", "pdiff", "hyper_recon"):
        s = res["methods"][m]
        assert {"recovered_mean", "recovered_ci", "recovered_median", "interpolation", "extrapolation"} <= set(s)
        assert s["recovered_ci"][0] <= s["recovered_mean"] <= s["recovered_ci"][1]
    assert set(res["paired_vs_nearest"]) >= {"mean", "ci"} and isinstance(res["worse_than_base"], int)
    for row in res["rows"]:  # the quick run scores two draws of each condition; a row holds their mean
        assert len(row["generated_draws"]) == 2 and row["generated"] == pytest.approx(sum(row["generated_draws"]) / 2)
    assert len(res["worse_than_base_by_draw"]) == 2
    assert res["warm_start"]["steps_ratio"] >= 0 and res["time"]["generate_cold_s"] > 0 and res["time"]["finetune_s"] > 0
    spread = res["warm_start"]["seed_spread"]  # a warm start from each seed's generator, the first one the main run's
    assert spread["seeds"] == [0, 1] and spread["steps_ratio"][0] == res["warm_start"]["steps_ratio"]
    assert all("generated_seed1" in p for p in res["warm_start"]["per_task"])
    assert len(res["seed_spread"]["recovered_mean"]) == 2 and len(res["sweep"]) == 3
    tested = [row["task"] for row in res["rows"]]
    assert len(tested) == len(set(tested)) == 12  # each task evaluated as unseen exactly once
    for f in range(3):  # no generator of a fold trained on a task that fold evaluates
        gen_tasks = set(json.loads((out / f"fold{f}" / "hyper-seed0" / "generator.json").read_text())["tasks"])
        assert not gen_tasks & {row["task"] for row in res["rows"] if row["fold"] == f}
    for png in ("recovered", "sweep", "warm_start"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000
    assert "| generated |" in (out / "results.md").read_text()
    other = [c if c != "0,1" else "0" for c in cmd]  # another configuration would time a generator the study never scored
    r = subprocess.run(other + ["--timing-runs", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "the configuration the study" in r.stderr
    r = subprocess.run(cmd + ["--timing-runs", "2"], capture_output=True, text=True, timeout=600)  # the cost alone, again
    assert r.returncode == 0, r.stderr[-2000:]
    timing = json.loads((out / "timing.json").read_text())
    assert len(timing["runs"]) == 2 and all(v > 0 for v in timing["speedup_cold"])
    assert min(timing["speedup_cold"]) <= timing["speedup_cold_median"] <= max(timing["speedup_cold"])


def test_fold_run_refuses_a_generator_that_saw_a_test_task():
    from loragen.evaluate.unseen import FoldRun

    class Stub:
        tasks = ["b"]

    run = FoldRun.__new__(FoldRun)
    run.fold = Fold(0, ("a",), ("b",))
    with pytest.raises(LoragenError, match="evaluated-as-unseen tasks reached"):
        run.fold.check_unseen(Stub.tasks, "the generator's training tasks")
    run.fold.check_unseen(["a"], "the generator's training tasks")  # a training task is fine


@pytest.mark.parametrize("generator_only", [False, True])
def test_fold_run_trains_generator_and_multitask_on_generator_only_tasks_when_asked(tmp_path, monkeypatch, generator_only):
    """The hyper generator and the multi-task LoRA train on the same tasks: the fold's, and its generator-only ones when
    the study uses them."""
    import loragen.evaluate.unseen as unseen
    from loragen.evaluate.unseen import FoldRun, UnseenConfig, HyperGenerator

    def fake_fit(cfg, *, suite, tasks, zoo, out, show):
        return type("Fitted", (), {"tasks": tasks})()

    monkeypatch.setattr(HyperGenerator, "fit", staticmethod(fake_fit))
    monkeypatch.setattr(unseen, "load_or_train_multitask", lambda suite, base, layout, tasks, cfg, folder: tasks)
    run = FoldRun.__new__(FoldRun)
    run.suite = run.base = None
    run.zoo = type("Zoo", (), {"layout": None})()
    run.fold, run.out, run.show, run._hypers = Fold(0, ("a",), ("b",), generator_only=("c",)), tmp_path, False, {}
    run.cfg = UnseenConfig(generator_only=generator_only)
    want = ["a", "c"] if generator_only else ["a"]
    assert run.hyper(0).tasks == want and run.multitask() == want
    object.__setattr__(run.fold, "generator_only", ("b",))  # a test task among them (Fold refuses one) is refused
    if generator_only:
        with pytest.raises(LoragenError, match="the multi-task LoRA's training tasks"):
            run.multitask()


def test_merge_carries_a_whole_head_as_the_weighted_average(tiny):
    """PEFT refuses several adapters with the same modules_to_save, so heads are averaged with the merge weights."""
    from loragen.adapters.layout import LoraLayout

    layout = LoraLayout.from_model(tiny, ["lin0"], rank=2, alpha=4.0, modules_to_save=["lin1"])
    g = torch.Generator().manual_seed(1)
    adapters = {f"t{i}": Adapter.from_vector(layout, torch.randn(layout.numel, generator=g)) for i in range(2)}
    merged = ZooMerger(tiny, layout, adapters).merge(["t0", "t1"], [0.25, 0.75], "svd")
    for key in ("lin1.weight", "lin1.bias"):
        want = 0.25 * adapters["t0"].tensors[key] + 0.75 * adapters["t1"].tensors[key]
        assert torch.allclose(merged.tensors[key], want)
    assert merged.layout.full == layout.full


def test_noise_control_sits_exactly_at_the_requested_distance_from_the_zoo():
    """The memorisation control (a zoo checkpoint plus noise) is placed at the generated adapters' novelty."""
    from loragen.evaluate.metrics import noise_at_novelty, novelty

    g = torch.Generator().manual_seed(0)
    zoo = torch.randn(20, 50, generator=g)
    noisy = noise_at_novelty(zoo[3], zoo, target=0.7, n=4, seed=1)
    assert noisy.shape == (4, 50)
    assert torch.allclose(novelty(noisy, zoo), torch.full((4,), 0.7), atol=1e-4)
    assert not torch.allclose(noisy[0], noisy[1])


@dataclass
class _Config:
    a: int = 1
    b: tuple = (2, 3)  # a field added after the stored generator was trained


def test_load_or_fit_reuses_a_generator_trained_before_a_config_field_was_added(tmp_path):
    class Gen:
        load = staticmethod(lambda folder: "loaded")

    def fit():
        return "fitted"

    assert load_or_fit(Gen, tmp_path, fit, _Config(), ["t"]) == "fitted"  # nothing stored yet
    (tmp_path / "generator.json").write_text(json.dumps({"config": {"a": 1}, "tasks": ["t"]}))
    assert load_or_fit(Gen, tmp_path, fit, _Config(), ["t"]) == "loaded"  # b missing: trained as its default
    assert load_or_fit(Gen, tmp_path, fit, _Config(b=(2, 4)), ["t"]) == "fitted"  # ... which is not this b
    assert load_or_fit(Gen, tmp_path, fit, _Config(a=5), ["t"]) == "fitted"
    assert load_or_fit(Gen, tmp_path, fit, _Config(), ["t", "u"]) == "fitted"
