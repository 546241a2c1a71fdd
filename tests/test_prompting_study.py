"""The llm-tasks study on the tiny Llama: exact match from cached prefix states, the description controls, the summary
and the benchmark's results layout."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.adapters.layout import LoraLayout
from loragen.errors import ConfigError
from loragen.evaluate.prompting_study import random_description, summarize, wrong_task
from loragen.suites import completion, get_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lm(tiny_llm_folder):
    return get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=1, answer_tokens=24, max_tokens=128,
                     n_train=24, n_val=12, n_test=12)


def test_families_filter_tasks(tiny_llm_folder):
    s = get_suite("llm-tasks", model_path=str(tiny_llm_folder), families=("add", "topic"))
    assert {t.params["family"] for t in s.tasks()} == {"add", "topic"}
    assert all(set(f.train + f.test) <= {t.name for t in s.tasks()} for f in s.folds(2))
    with pytest.raises(ConfigError, match="expected families among"):
        get_suite("llm-tasks", families=("add", "no-such-family"))


def test_exact_match_from_cached_states_equals_the_whole_model(lm):
    """An adapter merged into the base model is scored from cached prefix states; a copy of the model (prefix weights
    not shared) through every layer on tokens: both must give the same greedy completions."""
    base = lm.base_model()
    layout = LoraLayout.from_model(base, lm.target_modules, 4, 8.0)
    task = "add-2"
    for seed in range(3):
        adapter = Adapter.from_vector(layout, 2.0 * torch.randn(layout.numel, generator=torch.Generator().manual_seed(seed)))
        with merged(base, adapter):
            assert lm._shares_prefix(base)
            cached = lm.exact_match(base, task, "train")
            tokens = lm.encode(task, "train")
            pred_cached = completion.greedy_tokens(base, lm.data(task, "train"), logits=lm._answer_logits)
            copy_ = copy.deepcopy(base)
        assert not lm._shares_prefix(copy_)
        assert lm.exact_match(copy_, task, "train") == cached
        pred_tokens = completion.greedy_tokens(copy_, tokens)
        answer = tokens.y != completion.IGNORE
        assert torch.equal(pred_cached[answer], pred_tokens[answer])


def test_settled_rows_need_no_generation(lm):
    tok = lm.tokenizer()
    end = completion.end_of_turn(tok)
    end_id = tok(end, add_special_tokens=False)["input_ids"][0]
    answer = "seventy"
    target = tok(answer + end, add_special_tokens=False)["input_ids"]
    settled = completion._settled
    assert settled(tok, end, target, target, answer) is True  # every token right
    assert settled(tok, end, target, [end_id] * len(target), answer) is False  # ends the turn at once: ''
    x_id = tok.convert_tokens_to_ids("x")
    assert settled(tok, end, target, [x_id] + target[1:], answer) is False  # strays from the text: 'x...'
    s_id = tok.convert_tokens_to_ids("s")
    if target[0] != s_id:  # the first token is longer than 's': 's' may be the start of another spelling
        assert settled(tok, end, target, [s_id] + target[1:], answer) is None
    # right up to the end, then the turn ends one token early: the reply is a strict prefix of the answer
    assert settled(tok, end, target, target[:-2] + [end_id, end_id], answer) is (len(target) == 1)


def test_controls_replace_the_description(lm):
    text = random_description("add-2", 40)
    assert len(text) <= 40 and text == random_description("add-2", 40) != random_description("add-3", 40)
    other = wrong_task(lm, "add-2")
    assert lm.task(other).params["family"] != "add"


def _row(task, group, where="inside", **scores):
    base = {m: 0.0 for m in ("generated", "hyper_recon", "random_description", "wrong_description", "nearest", "multitask", "pdiff",
                             "zero_shot", "few_shot", "finetune")}
    return {"task": task, "group": group, "family": task.split("-")[0], "where": where, **base, **scores}


def test_a_study_folder_keeps_one_adapter_context(tiny_llm_folder, tmp_path):
    """Zoo, generators and scores in a folder were made in one adapter context: a study in another one is refused."""
    from loragen.errors import LoragenError
    from loragen.evaluate.prompting_study import PromptingStudy, PromptingStudyConfig

    kw = {"model_path": str(tiny_llm_folder), "top_layers": 1, "families": ("add",)}
    PromptingStudy(get_suite("llm-tasks", **kw), tmp_path / "a", PromptingStudyConfig(folds=2))._check_context()
    PromptingStudy(get_suite("llm-tasks", **kw), tmp_path / "a", PromptingStudyConfig(folds=2))._check_context()  # same: fine
    described = get_suite("llm-tasks", **kw, adapter_context="description")
    with pytest.raises(LoragenError, match="adapted models saw 'none'.*adapter_context is 'description'"):
        PromptingStudy(described, tmp_path / "a", PromptingStudyConfig(folds=2))._check_context()
    with pytest.raises(LoragenError, match="max_folds must be in 1..2; found 3"):
        PromptingStudy(described, tmp_path / "c", PromptingStudyConfig(folds=2)).run(max_folds=3)
    (tmp_path / "b" / "zoo").mkdir(parents=True)  # a study from before the marker: the input alone
    with pytest.raises(LoragenError, match="from before adapter contexts"):
        PromptingStudy(described, tmp_path / "b", PromptingStudyConfig(folds=2))._check_context()


def test_summary_means_pairs_and_gap():
    rows = [_row("a-1", "unseen", generated=0.5, few_shot=0.25, finetune=1.0, zero_shot=0.0),
            _row("a-2", "unseen", "outside", generated=0.0, few_shot=0.5, finetune=0.5, zero_shot=0.0, random_description=0.25),
            _row("b-1", "seen", generated=0.75, finetune=1.0, hyper_recon=0.5)]
    s = summarize(rows, min_gap=0.1)
    g = s["methods"]["generated"]
    assert g["unseen"] == g["exact_match_mean"] == 0.25 and g["seen"] == 0.75
    assert g["interpolation"] == 0.5 and g["extrapolation"] == 0.0 and g["categorical"] is None
    assert g["exact_match_ci"][0] <= 0.25 <= g["exact_match_ci"][1]
    assert s["paired_vs_few_shot"]["mean"] == pytest.approx(-0.125) and s["paired_vs_few_shot"]["tasks"] == 2
    assert s["right_vs_random_description"]["mean"] == pytest.approx(0.125)
    assert s["gap_recovered"]["ratio_of_means"] == pytest.approx(0.25 / 0.75)
    assert s["gap_recovered"]["per_task_mean"] == pytest.approx(0.25)
    by = s["gap_recovered"]["by_method"]
    assert by["generated"] == s["gap_recovered"]["ratio_of_means"] and by["few_shot"] == pytest.approx(0.375 / 0.75)
    assert by["zero_shot"] == 0 and by["finetune"] == 1
    assert s["seen_generated_minus_finetune"]["mean"] == pytest.approx(-0.25)
    assert s["recon_vs_generated"]["mean"] == pytest.approx(-0.25) and s["recon_vs_generated"]["tasks"] == 2
    assert s["seen_recon_minus_finetune"]["mean"] == pytest.approx(-0.5)
    assert s["worse_than_zero_shot"] == []
    assert s["families"]["a"]["generated"] == 0.25


def test_llm_benchmark_quick_on_a_local_model(tiny_llm_folder, tmp_path):
    """benchmarks/llm_tasks.py --quick on the tiny model writes the schema issue 14 asks for; a rerun resumes."""
    out = tmp_path / "b"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "llm_tasks.py"), "--quick", "--out", str(out), "--model", str(tiny_llm_folder),
           "--top-layers", "1", "--max-tokens", "128"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["suite"] == "llm-tasks" and res["folds"] == 2 and res["tasks"] == 20
    for m in ("generated", "hyper_recon", "nearest", "multitask", "zero_shot", "few_shot", "finetune", "pdiff", "random_description",
              "wrong_description"):
        s = res["methods"][m]
        assert 0.0 <= s["exact_match_ci"][0] <= s["exact_match_mean"] <= s["exact_match_ci"][1] <= 1.0
        assert s["seen"] is not None and s["unseen"] == s["exact_match_mean"]
    assert set(res["paired_vs_few_shot"]) >= {"mean", "ci"}
    c = res["cost"]
    assert c["finetune_s"] > 0 and c["generate_cold_s"] > 0 and c["few_shot_prompt_tokens"] > c["adapter_prompt_tokens"] > 0
    unseen = [row for row in res["rows"] if row["group"] == "unseen"]
    assert len({row["task"] for row in unseen}) == len(unseen)  # each task held out at most once
    for f in range(2):  # no generator of a fold trained on a task that fold holds out
        trained = set(json.loads((out / f"fold{f}" / "hyper" / "generator.json").read_text())["tasks"])
        assert set(json.loads((out / f"fold{f}" / "hyper-recon" / "generator.json").read_text())["tasks"]) == trained
        fold_rows = [row for row in res["rows"] if row["fold"] == f]
        assert not trained & {row["task"] for row in fold_rows if row["group"] == "unseen"}
        assert {row["task"] for row in fold_rows if row["group"] == "seen"} <= trained
    assert (out / "plots" / "methods.png").stat().st_size > 1000
    assert "| generated |" in (out / "results.md").read_text()
    rows_before = (out / "fold0" / "rows.json").stat().st_mtime
    r = subprocess.run(cmd + ["--max-folds", "1"], capture_output=True, text=True, timeout=900)  # a partial summary
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "fold0" / "rows.json").stat().st_mtime == rows_before  # resumed, not recomputed
    part = json.loads((out / "results.json").read_text())
    assert part["folds_run"] == 1 and {row["fold"] for row in part["rows"]} == {0}
    assert "Partial: fold 0 of 2 only" in (out / "results.md").read_text()
