import copy
import json

import pytest
import torch

from loragen.errors import AdapterFileError, LayoutMismatchError, ZooError
from loragen.zoo import SIDECAR, Zoo, import_peft


def _train_with_plain_peft(model, folder, targets, r, seed):
    """An adapter trained by someone else: plain PEFT code, a few steps of regression, save_pretrained."""
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
    peft_model.save_pretrained(str(folder))
    return peft_model


def test_import_adapters_trained_with_plain_peft(tmp_path, tiny):
    from loragen.adapter import Adapter
    from loragen.apply import merged

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
