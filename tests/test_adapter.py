import json

import pytest
import torch

from loragen.adapters.adapter import CONFIG_FILE, WEIGHTS_FILE, Adapter
from loragen.adapters.apply import attach_peft, merge, merged
from loragen.adapters.layout import LoraLayout
from loragen.errors import AdapterFileError, LayoutMismatchError, LoragenError, NonFiniteError


def test_zero_b_adapter_leaves_outputs_unchanged(tiny, tiny_layout):
    v = torch.randn(tiny_layout.numel)
    t = tiny_layout.unflatten(v)
    for m in tiny_layout.modules:
        t[f"{m.name}.lora_B"].zero_()
    x = torch.randn(7, 10)
    before = tiny(x)
    with merged(tiny, Adapter(tiny_layout, t)):
        assert torch.equal(tiny(x), before)


def test_merge_changes_outputs_and_unmerge_restores_exactly(tiny, random_adapter):
    x = torch.randn(7, 10)
    weights = {k: v.clone() for k, v in tiny.state_dict().items()}
    before = tiny(x)
    handle = merge(tiny, random_adapter)
    assert not torch.allclose(tiny(x), before)
    handle.unmerge()
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, weights[k])


def test_merged_equals_unmerged_peft_forward(tiny, random_adapter):
    """Our merge gives the same outputs as PEFT running the adapter unmerged (LoRA branch in the forward pass)."""
    import copy

    x = torch.randn(7, 10)
    with merged(tiny, random_adapter):
        ours = tiny(x)
    peft_model = attach_peft(copy.deepcopy(tiny), random_adapter)
    assert torch.allclose(peft_model(x), ours, atol=1e-6)


def test_save_load_roundtrip_exact(tmp_path, random_adapter):
    random_adapter.save(tmp_path / "a")
    back = Adapter.load(tmp_path / "a")
    assert back.layout == random_adapter.layout
    assert back.meta == {**random_adapter.meta, "peft": {"task_type": None, "base_model_name_or_path": None}}
    assert torch.equal(back.vector(), random_adapter.vector())


def test_task_type_and_base_model_survive_load_and_save(tmp_path, random_adapter):
    """adapter_config.json's task_type and base_model_name_or_path -> meta["peft"] -> the saved config (issue 9)."""
    random_adapter.meta["peft"] = {"task_type": "SEQ_CLS", "base_model_name_or_path": "org/base"}
    random_adapter.save(tmp_path / "a")
    config = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert config["task_type"] == "SEQ_CLS" and config["base_model_name_or_path"] == "org/base"
    config["base_model_name_or_path"] = "/models/other"  # the config, not loragen's header copy, is what counts
    (tmp_path / "a" / CONFIG_FILE).write_text(json.dumps(config))
    back = Adapter.load(tmp_path / "a")
    assert back.meta["peft"] == {"task_type": "SEQ_CLS", "base_model_name_or_path": "/models/other"}
    back.save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / CONFIG_FILE).read_text())["base_model_name_or_path"] == "/models/other"
    back.save(tmp_path / "c", base_model_name_or_path="given")  # an explicit argument wins
    config = json.loads((tmp_path / "c" / CONFIG_FILE).read_text())
    assert config["base_model_name_or_path"] == "given" and config["task_type"] == "SEQ_CLS"
    config["task_type"] = "SORTING"
    (tmp_path / "c" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(AdapterFileError, match="expected task_type null or one of .*found 'SORTING'"):
        Adapter.load(tmp_path / "c")


def test_peft_loads_what_we_save(tmp_path, tiny, random_adapter):
    import copy

    from peft import PeftModel

    random_adapter.save(tmp_path / "a")
    config = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 4.0
    model = PeftModel.from_pretrained(copy.deepcopy(tiny), str(tmp_path / "a"))
    x = torch.randn(5, 10)
    with merged(tiny, random_adapter):
        assert torch.allclose(model(x), tiny(x), atol=1e-6)
    lora_a = model.base_model.model.lin0.lora_A["default"].weight
    assert torch.equal(lora_a, random_adapter.tensors["lin0.lora_A"])


def test_save_refuses_to_overwrite(tmp_path, random_adapter):
    random_adapter.save(tmp_path / "a")
    with pytest.raises(LoragenError, match="already exists"):
        random_adapter.save(tmp_path / "a")
    random_adapter.save(tmp_path / "a", overwrite=True)


def test_missing_adapter_folder_or_file(tmp_path, random_adapter):
    with pytest.raises(AdapterFileError, match="expected an adapter folder.*found nothing"):
        Adapter.load(tmp_path / "nope")
    random_adapter.save(tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_FILE).unlink()
    with pytest.raises(AdapterFileError, match=f"expected {WEIGHTS_FILE}, found files \\['{CONFIG_FILE}'\\]"):
        Adapter.load(tmp_path / "a")


def test_corrupt_adapter_file(tmp_path, random_adapter):
    random_adapter.save(tmp_path / "a")
    path = tmp_path / "a" / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(AdapterFileError, match="not a readable safetensors file"):
        Adapter.load(tmp_path / "a")
    random_adapter.save(tmp_path / "b")
    (tmp_path / "b" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(AdapterFileError, match="not valid JSON"):
        Adapter.load(tmp_path / "b")


def test_not_a_lora_adapter(tmp_path, random_adapter):
    random_adapter.save(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    cfg["peft_type"] = "IA3"
    (tmp_path / "a" / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(AdapterFileError, match="peft_type 'LORA'.*found peft_type 'IA3'"):
        Adapter.load(tmp_path / "a")


def test_layout_mismatch_on_load_and_merge(tmp_path, tiny, random_adapter):
    random_adapter.save(tmp_path / "a")
    other = LoraLayout.from_model(tiny, ["lin0"], rank=2, alpha=4.0)
    with pytest.raises(LayoutMismatchError, match="expected modules \\['lin0'\\], found \\['lin0', 'lin1'\\]"):
        Adapter.load(tmp_path / "a", layout=other)
    bigger = torch.nn.Sequential()
    bigger.add_module("lin0", torch.nn.Linear(12, 20))
    bigger.add_module("lin1", torch.nn.Linear(20, 3))
    with pytest.raises(LayoutMismatchError, match=r"\(in, out\) = \(10, 20\).*\(12, 20\)"):
        merge(bigger, random_adapter)
    with pytest.raises(LayoutMismatchError, match="has no module 'lin0'"):
        merge(torch.nn.Sequential(), random_adapter)


def test_nan_weights_are_refused(tmp_path, tiny, tiny_layout):
    v = torch.randn(tiny_layout.numel)
    v[3] = float("nan")
    bad = Adapter.from_vector(tiny_layout, v)
    before = {k: w.clone() for k, w in tiny.state_dict().items()}
    with pytest.raises(NonFiniteError, match="finite.*found \\d+ NaN/Inf"):
        merge(tiny, bad)
    for k, w in tiny.state_dict().items():
        assert torch.equal(w, before[k])  # nothing was touched
    with pytest.raises(NonFiniteError):
        bad.save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    # a NaN adapter written by someone else is refused on load
    from safetensors.torch import save_file

    good = Adapter.from_vector(tiny_layout, torch.randn(tiny_layout.numel))
    good.save(tmp_path / "x")
    save_file({f"base_model.model.{k.replace('.lora_', '.lora_')}.weight": t for k, t in bad.tensors.items()},
              str(tmp_path / "x" / WEIGHTS_FILE))
    with pytest.raises(NonFiniteError, match="adapter at"):
        Adapter.load(tmp_path / "x")


def test_written_files_get_normal_permissions(tmp_path, random_adapter):
    import os

    mask = os.umask(0o022)
    try:
        random_adapter.save(tmp_path / "a")
    finally:
        os.umask(mask)
    assert (tmp_path / "a" / WEIGHTS_FILE).stat().st_mode & 0o777 == 0o644
