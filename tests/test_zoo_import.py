import copy
import json

import pytest
import torch

from loragen.errors import AdapterFileError, LayoutMismatchError, ZooError
from loragen.zoo.peft_import import SIDECAR, import_peft
from loragen.zoo.store import Zoo


def _train_with_plain_peft(model, folder, targets, r, seed, task_type=None, base_model=None):
    """An adapter trained by someone else: plain PEFT code, a few steps of regression, save_pretrained (with the
    task_type and base_model_name_or_path their config records, when given)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    opt = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(32, 10), torch.randn(32, 3)
    for _ in range(5):
        loss = ((peft_model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    config = peft_model.peft_config["default"]
    config.task_type, config.base_model_name_or_path = task_type, base_model  # as saved from e.g. a classifier
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)  # no embeddings; skips a look-up of the base
    return peft_model


def test_import_adapters_trained_with_plain_peft(tmp_path, tiny):
    from loragen.adapters.adapter import Adapter
    from loragen.adapters.apply import merged

    trained = [_train_with_plain_peft(tiny, tmp_path / f"a{i}", ["lin0", "lin1"], 2, i) for i in range(3)]
    (tmp_path / "a2" / SIDECAR).write_text(json.dumps({"task": "other", "condition": "the other task",
                                                       "examples": ["'x' -> yes", "'y' -> no"]}))
    zoo = import_peft(tmp_path / "zoo", [tmp_path / "a0", tmp_path / "a1"], task="mine", condition="my task")
    zoo = import_peft(tmp_path / "zoo", [tmp_path / "a2"])  # extends, task and condition from the sidecar
    zoo = Zoo.open(tmp_path / "zoo")
    assert zoo.tasks() == ["mine", "other"]
    assert zoo.condition("mine").text == "my task" and zoo.condition("other").text == "the other task"
    assert zoo.condition("other").examples == ["'x' -> yes", "'y' -> no"]
    assert len(zoo.vectors("mine")) == 2
    # the imported adapter behaves exactly like the PEFT model it came from
    x = torch.randn(4, 10)
    adapter = Adapter.from_vector(zoo.layout, zoo.vectors("other")[0])
    with merged(tiny, adapter):
        assert torch.allclose(tiny(x), trained[2](x), atol=1e-5)


def test_import_refuses_mismatches(tmp_path, tiny):
    _train_with_plain_peft(tiny, tmp_path / "r2", ["lin0", "lin1"], 2, 0)
    _train_with_plain_peft(tiny, tmp_path / "r4", ["lin0", "lin1"], 4, 0)
    _train_with_plain_peft(tiny, tmp_path / "only0", ["lin0"], 2, 0)
    import_peft(tmp_path / "zoo", [tmp_path / "r2"], task="a")
    with pytest.raises(LayoutMismatchError, match="does not fit"):
        import_peft(tmp_path / "zoo", [tmp_path / "r4"], task="b")
    with pytest.raises(LayoutMismatchError, match="expected modules"):
        import_peft(tmp_path / "zoo", [tmp_path / "only0"], task="c")
    with pytest.raises(ZooError, match="expected a task name"):
        import_peft(tmp_path / "zoo2", [tmp_path / "r2"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"x")
    with pytest.raises(AdapterFileError, match="not a PEFT adapter folder"):
        import_peft(tmp_path / "zoo", [tmp_path / "junk"], task="d")
    assert Zoo.open(tmp_path / "zoo").tasks() == ["a"]  # nothing half-imported
    (tmp_path / "r2" / SIDECAR).write_text(json.dumps({"task": "a"}))
    _train_with_plain_peft(tiny, tmp_path / "new", ["lin0", "lin1"], 2, 1)
    (tmp_path / "new" / SIDECAR).write_text(json.dumps({"task": "new"}))
    with pytest.raises(ZooError, match=r"already holds tasks \['a'\]"):
        import_peft(tmp_path / "zoo", [tmp_path / "new", tmp_path / "r2"])
    assert Zoo.open(tmp_path / "zoo").tasks() == ["a"]  # "new" was not added before the clash was found


def test_cli_import(tmp_path, tiny):
    from typer.testing import CliRunner

    from loragen.cli import app

    _train_with_plain_peft(tiny, tmp_path / "a", ["lin0", "lin1"], 2, 0)
    r = CliRunner().invoke(app, ["zoo", "import", str(tmp_path / "a"), "--out", str(tmp_path / "zoo"), "--task", "t",
                                 "--condition", "detect t"])
    assert r.exit_code == 0, r.output
    assert "imported 1 adapters" in r.output
    r = CliRunner().invoke(app, ["zoo", "import", str(tmp_path / "missing"), "--out", str(tmp_path / "zoo"), "--task", "u"])
    assert r.exit_code == 2 and "expected an adapter folder" in r.output


def test_generated_adapters_keep_the_imported_task_type_and_base_model(tmp_path, tiny):
    """Issue 9: task_type and base_model_name_or_path travel import -> zoo -> generator -> generated adapter_config.json,
    which is what AutoPeftModelForSequenceClassification.from_pretrained(folder) reads."""
    from peft import PeftConfig

    from loragen.adapters.adapter import CONFIG_FILE, Adapter
    from loragen.conditions import Condition
    from loragen.generators.pdiff import PDiffConfig, PDiffGenerator

    peft = {"task_type": "SEQ_CLS", "base_model_name_or_path": "my-org/tiny-classifier"}
    for i in range(4):
        _train_with_plain_peft(tiny, tmp_path / f"a{i}", ["lin0", "lin1"], 2, i, "SEQ_CLS", "my-org/tiny-classifier")
    assert Adapter.load(tmp_path / "a0").meta["peft"] == peft
    import_peft(tmp_path / "zoo", [tmp_path / "a0", tmp_path / "a1"], task="t0")
    zoo = import_peft(tmp_path / "zoo", [tmp_path / "a2", tmp_path / "a3"], task="t1")  # extends: same base, accepted
    assert json.loads((tmp_path / "zoo" / "zoo.json").read_text())["peft"] == peft
    zoo = Zoo.open(tmp_path / "zoo")
    assert zoo.peft_info() == peft and zoo.adapters("t0")[0].meta["peft"] == peft

    cfg = PDiffConfig(encoder="onehot", ae_steps=5, diffusion_steps=5, ae_channels=(8, 8), ae_patch=4, latent_dim=8,
                      width=16, depth=1, cond_draws=2, k_exemplars=1, sample_steps=2, batch_size=4)
    PDiffGenerator.fit(zoo, cfg, out=tmp_path / "gen", show=False)
    gen = PDiffGenerator.load(tmp_path / "gen")  # kept through the generator's own files
    adapter = gen.generate(Condition(task="t1"), n=1)[0]
    adapter.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / CONFIG_FILE).read_text())
    assert saved["task_type"] == "SEQ_CLS" and saved["base_model_name_or_path"] == "my-org/tiny-classifier"
    config = PeftConfig.from_pretrained(str(tmp_path / "out"))
    assert config.task_type == "SEQ_CLS" and config.base_model_name_or_path == "my-org/tiny-classifier"


def test_import_refuses_other_task_types_or_base_models(tmp_path, tiny):
    """Two different known values are refused; null (unknown, e.g. plain PEFT on a custom model) agrees with any."""
    _train_with_plain_peft(tiny, tmp_path / "cls", ["lin0", "lin1"], 2, 0, "SEQ_CLS", "org/base")
    _train_with_plain_peft(tiny, tmp_path / "other_base", ["lin0", "lin1"], 2, 1, "SEQ_CLS", "org/another")
    _train_with_plain_peft(tiny, tmp_path / "other_type", ["lin0", "lin1"], 2, 2, "TOKEN_CLS", "org/base")
    _train_with_plain_peft(tiny, tmp_path / "unknown", ["lin0", "lin1"], 2, 3)
    with pytest.raises(ZooError, match=r"other_base: expected base_model_name_or_path 'org/base' \(that of the folders "
                                       r"before it\); found 'org/another'"):
        import_peft(tmp_path / "zoo", [tmp_path / "unknown", tmp_path / "cls", tmp_path / "other_base"], task="a")
    assert not (tmp_path / "zoo").exists()  # refused before anything was written
    import_peft(tmp_path / "zoo", [tmp_path / "unknown"], task="a")
    assert Zoo.open(tmp_path / "zoo").peft_info() == {"task_type": None, "base_model_name_or_path": None}
    import_peft(tmp_path / "zoo", [tmp_path / "cls"], task="b")  # the zoo learns what it did not know
    peft = {"task_type": "SEQ_CLS", "base_model_name_or_path": "org/base"}
    assert Zoo.open(tmp_path / "zoo").peft_info() == peft
    with pytest.raises(ZooError, match=r"expected base_model_name_or_path 'org/base' \(that of zoo .*found 'org/another'"):
        import_peft(tmp_path / "zoo", [tmp_path / "other_base"], task="c")
    with pytest.raises(ZooError, match=r"expected task_type 'SEQ_CLS' \(that of zoo .*found 'TOKEN_CLS'"):
        import_peft(tmp_path / "zoo", [tmp_path / "other_type"], task="d")
    zoo = Zoo.open(tmp_path / "zoo")
    assert zoo.tasks() == ["a", "b"] and zoo.peft_info() == peft
