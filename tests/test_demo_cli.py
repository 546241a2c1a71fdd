import json

import torch
from typer.testing import CliRunner

from loragen.cli import app

runner = CliRunner()


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick"])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    keys = {"base", "finetuned", "soup", "nearest", "noise", "generated_mean", "generated_best"}
    for split in ("seen", "unseen"):
        assert keys <= set(results[split])
        assert all(0.0 <= results[split][k] <= 100.0 for k in keys)
    assert results["suite"] == "digits-domains"
    assert results["time"]["finetune_s_per_adapter"] > 0 and results["time"]["generate_s_per_adapter"] > 0
    assert results["wall_s"] > 0
    assert (out / "report.md").read_text().startswith("# loragen results")
    for png in ("accuracy_per_task", "pca", "accuracy_vs_novelty"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000

    # generated adapters were written as PEFT folders that PEFT loads onto the base model
    from peft import PeftModel

    from loragen.adapters.adapter import Adapter
    from loragen.adapters.apply import merged
    from loragen.suites import get_suite

    suite = get_suite("digits-domains")
    folder = next((out / "adapters").glob("*/sample_0"))
    peft_model = PeftModel.from_pretrained(suite.base_model(), str(folder))
    x = suite.data(folder.parent.name, "test").x[:8]
    base = suite.base_model()
    with merged(base, Adapter.load(folder)):
        assert torch.allclose(peft_model(x), base(x), atol=1e-5)
    config = json.loads((folder / "adapter_config.json").read_text())  # the base model travels zoo -> generator -> folder
    assert config["base_model_name_or_path"] == "loragen:digits-domains" and config["task_type"] is None

    # a second run refuses to overwrite the report, and with --overwrite reuses zoo and generator
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick"])
    assert r.exit_code == 2 and "pass --overwrite" in r.output
    manifest = (out / "zoo" / "manifest.jsonl").read_text()
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (out / "zoo" / "manifest.jsonl").read_text() == manifest

    r = runner.invoke(app, ["zoo", "info", str(out / "zoo")])
    assert r.exit_code == 0 and "checkpoints" in r.output

    r = runner.invoke(app, ["generate", "--generator-dir", str(out / "generator"), "--task", "nope", "--out", str(tmp_path / "g")])
    assert r.exit_code == 2 and "no task 'nope'" in r.output
    first = get_suite("digits-domains").tasks()[0].name  # the generator records its suite: no --suite needed
    r = runner.invoke(app, ["generate", "--generator-dir", str(out / "generator"), "--task", first,
                            "--n", "2", "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    assert Adapter.load(tmp_path / "g" / "adapter_1").layout.numel == Adapter.load(folder).layout.numel


def test_cli_errors_are_one_line(tmp_path):
    r = runner.invoke(app, ["zoo", "info", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "expected a zoo folder" in r.output
    r = runner.invoke(app, ["train", "--zoo", str(tmp_path / "missing"), "--out", str(tmp_path / "g")])
    assert r.exit_code == 2 and "expected a zoo folder" in r.output
    r = runner.invoke(app, ["generate", "--generator-dir", str(tmp_path), "--out", str(tmp_path / "g")])
    assert r.exit_code == 2 and "exactly one condition" in r.output


def test_quick_text_demo_on_your_own_model(tmp_path, tiny_bert_folder):
    out = tmp_path / "text"
    r = runner.invoke(app, ["demo", "--suite", "text-topics", "--out", str(out), "--quick", "--model", str(tiny_bert_folder),
                            "--targets", "query,value"])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == "text-topics" and results["seen"]["tasks"] >= 1 and results["unseen"]["tasks"] == 1
    from loragen.adapters.adapter import Adapter

    folder = next((out / "adapters").glob("*/sample_0"))
    adapter = Adapter.load(folder)
    assert adapter.layout.full[0].name == "classifier"  # the head travels with the adapter
    assert adapter.meta["peft"]["base_model_name_or_path"] == str(tiny_bert_folder.resolve())  # the user's model folder
    # the generator reads examples through the user's model again once loaded from its folder (not the default MiniLM)
    from loragen.generators import load_generator
    from loragen.suites import get_suite

    gen = load_generator(out / "generator")
    assert gen.suite_args == {"model_path": str(tiny_bert_folder)}
    own = get_suite("text-topics", model_path=tiny_bert_folder)
    assert gen.generate(own.condition("topic-ai"))[0].layout == adapter.layout
    # the generated adapter gives the same logits through PEFT as through loragen's merge
    import copy

    from peft import PeftModel

    from loragen.adapters.apply import merged

    suite = get_suite("text-topics", model_path=tiny_bert_folder)
    base = suite.base_model()
    x = suite.data(folder.parent.name, "test").x[:8]
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()(x)
        with merged(base, adapter):
            assert torch.allclose(theirs, base(x), atol=1e-5)
    r = runner.invoke(app, ["demo", "--suite", "text-topics", "--out", str(tmp_path / "x"), "--quick", "--model",
                            str(tmp_path / "none")])
    assert r.exit_code == 2 and "expected a local Hugging Face model folder" in r.output


def test_train_on_an_imported_text_zoo(tmp_path, tiny):
    """`loragen train` on a zoo imported from PEFT folders picks the text encoder from its conditions."""
    from tests.test_zoo_import import _train_with_plain_peft

    for i in range(3):
        _train_with_plain_peft(tiny, tmp_path / f"a{i}", ["lin0", "lin1"], 2, i)
        r = runner.invoke(app, ["zoo", "import", str(tmp_path / f"a{i}"), "--out", str(tmp_path / "zoo"), "--task", f"t{i}",
                                "--condition", f"task number {i}", "--example", "'a' -> yes"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--zoo", str(tmp_path / "zoo"), "--out", str(tmp_path / "gen"), "--ae-steps", "5",
                            "--diffusion-steps", "5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["generate", "--generator-dir", str(tmp_path / "gen"), "--description", "task number 1",
                            "--example", "'a' -> yes", "--n", "2", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "adapter_1" / "adapter_model.safetensors").exists()
    r = runner.invoke(app, ["train", "--zoo", str(tmp_path / "zoo"), "--out", str(tmp_path / "gen2"), "--encoder", "clip"])
    assert r.exit_code == 2 and "'clip' is not one of" in r.output and "'image-set'" in r.output


def test_quick_demo_with_ablation_table(tmp_path):
    out = tmp_path / "abl"
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick", "--ablations"])
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "ablations.json").read_text())
    assert {"normalization=global", "normalization=none", "keep=1"} <= set(rows)
    assert all(0.0 <= v["seen"] <= 100.0 and 0.0 <= v["unseen"] <= 100.0 for v in rows.values())
    assert "| variant | seen | held out |" in (out / "ablations.md").read_text()
    from loragen.zoo.store import Zoo

    small, full = Zoo.open(out / "zoo-last1"), Zoo.open(out / "zoo")
    task = small.tasks()[0]
    assert len(small.vectors(task)) == 1 and torch.equal(small.vectors(task)[0], full.vectors(task)[-1])


def test_base_quick_applies_only_to_suites_that_take_it():
    """`base --suite digits-domains --quick` used to fail: --quick went to a suite that does not take it (issue 9)."""
    r = runner.invoke(app, ["base", "--suite", "digits-domains", "--quick"])
    assert r.exit_code == 0, r.output
    assert "--quick has no effect on suite digits-domains" in r.output and "base model of digits-domains cached" in r.output
    from loragen.suites.digits_gen import DigitsGen

    r = runner.invoke(app, ["base", "--suite", "digits-gen", "--quick"])
    assert r.exit_code == 0, r.output
    assert "has no effect" not in r.output
    quick_dir, full_dir = DigitsGen(quick=True).cache_dir, DigitsGen().cache_dir
    assert quick_dir != full_dir and any(quick_dir.iterdir())  # the tiny configuration's base was built
    r = runner.invoke(app, ["base", "--suite", "nope", "--quick"])
    assert r.exit_code == 2 and "'nope' is not one of" in r.output and "'digits-gen'" in r.output


def test_train_hyper_from_a_suite_without_a_zoo_then_generate(tmp_path):
    """`loragen train --suite S` fits hyper through the task loss (no zoo); `generate` then needs only its folder."""
    from loragen.suites import get_suite

    r = runner.invoke(app, ["train", "--suite", "digits-domains", "--out", str(tmp_path / "gen"), "--steps", "3"])
    assert r.exit_code == 0, r.output
    assert "hyper (task)" in r.output
    task = get_suite("digits-domains").heldout_tasks()[0].name
    r = runner.invoke(app, ["generate", "--generator-dir", str(tmp_path / "gen"), "--task", task, "--n", "2", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "a" / "adapter_1" / "adapter_config.json").read_text())["r"] == 4
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "g2"), "--objective", "recon", "--suite", "digits-domains"])
    assert r.exit_code == 2 and "expected --zoo" in r.output
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "g4"), "--suite", "digits-domains", "--recon-warm-steps", "5"])
    assert r.exit_code == 2 and "(or recon_warm_steps) matches zoo adapters" in r.output
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "g3"), "--arch", "hyper"])  # hyper's task objective
    assert r.exit_code == 2 and "expected --suite" in r.output
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "g3")])  # no suite, no zoo: pdiff, which needs a zoo
    assert r.exit_code == 2 and "expected --zoo" in r.output


def test_option_names_have_one_meaning_across_commands(tmp_path):
    """--generator meant a folder in `generate` and an architecture in `train`; --out a PNG in `composer sample` and a
    folder elsewhere; --alpha Composer's batch share (issue 9). Each is now one name for one meaning, and the closed
    sets of choices are listed by --help."""
    for args in (["train", "--out", str(tmp_path / "g"), "--generator", "hyper"],
                 ["generate", "--generator", str(tmp_path), "--out", str(tmp_path / "a")],
                 ["composer", "train", "--out", str(tmp_path / "c"), "--generator", "mlp"],
                 ["composer", "train", "--out", str(tmp_path / "c"), "--alpha", "0.5"],
                 ["composer", "sample", "--generator-dir", str(tmp_path), "--out", str(tmp_path / "grid.png")],
                 ["composer", "sample", "--generator-dir", str(tmp_path), "--plot", str(tmp_path / "grid.png"),
                  "--steps", "3"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "No such option" in r.output, (args, r.output)
    helps = {cmd: runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "300"}).output  # wide: one line per option
             for cmd in (("train",), ("composer", "train"), ("demo",))}
    assert "<hyper|pdiff>" in helps[("train",)] and "<task|recon>" in helps[("train",)]
    assert "<transformer|mlp|static|per-class>" in helps[("composer", "train")] and "--context-share" in helps[("composer", "train")]
    assert "<digits-domains|text-topics|digits-gen|llm-tasks>" in helps[("demo",)]
