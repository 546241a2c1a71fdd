import json

import pytest
import torch

from loragen.adapters.adapter import Adapter
from loragen.adapters.layout import LoraLayout
from loragen.conditions import Condition
from loragen.errors import LayoutMismatchError, UnknownTaskError, ZooError
from loragen.zoo.store import MANIFEST_FILE, Zoo


def _adapters(layout, task, n, seed):
    g = torch.Generator().manual_seed(seed)
    return [Adapter.from_vector(layout, torch.randn(layout.numel, generator=g), {"task": task, "step": 10 * (i + 1), "val_acc": 50.0 + i})
            for i in range(n)]


def _cond(task):
    return Condition(task=task, images=torch.rand(6, 4, 4))


def test_add_and_reopen(tmp_path, tiny_layout):
    zoo = Zoo.create(tmp_path / "z", tiny_layout, {"suite": "x"})
    a = _adapters(tiny_layout, "a", 3, 0)
    zoo.add_task("a", a, _cond("a"))
    zoo.add_task("b", _adapters(tiny_layout, "b", 2, 1), _cond("b"))
    again = Zoo.open(tmp_path / "z")
    assert again.tasks() == ["a", "b"]
    assert len(again.entries) == 5
    assert torch.equal(again.vectors("a"), torch.stack([x.vector() for x in a]))
    assert again.condition("a").images.shape == (6, 4, 4)
    x, names = again.all_vectors()
    assert x.shape == (5, tiny_layout.numel) and names == ["a"] * 3 + ["b"] * 2
    assert [e["val_acc"] for e in again.task_entries("a")] == [50.0, 51.0, 52.0]


def test_duplicate_task_refused(tmp_path, tiny_layout):
    zoo = Zoo.create(tmp_path / "z", tiny_layout)
    zoo.add_task("a", _adapters(tiny_layout, "a", 2, 0), _cond("a"))
    with pytest.raises(ZooError, match="already holds task 'a'"):
        zoo.add_task("a", _adapters(tiny_layout, "a", 2, 0), _cond("a"))
    assert len(Zoo.open(tmp_path / "z").entries) == 2


def test_torn_manifest_drops_incomplete_task_only(tmp_path, tiny_layout):
    zoo = Zoo.create(tmp_path / "z", tiny_layout)
    zoo.add_task("a", _adapters(tiny_layout, "a", 2, 0), _cond("a"))
    zoo.add_task("b", _adapters(tiny_layout, "b", 3, 1), _cond("b"))
    manifest = tmp_path / "z" / MANIFEST_FILE
    text = manifest.read_text()
    manifest.write_text(text[: len(text) - 60])  # a crash in the middle of task b's append
    repaired = Zoo.open(tmp_path / "z")
    assert repaired.tasks() == ["a"]
    assert all(json.loads(line)["task"] == "a" for line in manifest.read_text().splitlines())
    repaired.add_task("b", _adapters(tiny_layout, "b", 3, 1), _cond("b"))  # redone on resume, not duplicated
    assert len(Zoo.open(tmp_path / "z").entries) == 5


def test_empty_and_missing_zoo(tmp_path, tiny_layout):
    with pytest.raises(ZooError, match="expected a zoo folder"):
        Zoo.open(tmp_path / "none")
    zoo = Zoo.create(tmp_path / "z", tiny_layout)
    with pytest.raises(ZooError, match="is empty"):
        zoo.all_vectors()
    with pytest.raises(UnknownTaskError, match="no task 'q'"):
        zoo.vectors("q")


def test_layout_mismatch_refused(tmp_path, tiny, tiny_layout):
    Zoo.create(tmp_path / "z", tiny_layout)
    other = LoraLayout.from_model(tiny, ["lin0"], rank=2, alpha=4.0)
    with pytest.raises(LayoutMismatchError):
        Zoo.create(tmp_path / "z", other)
    zoo = Zoo.open(tmp_path / "z")
    with pytest.raises(LayoutMismatchError):
        zoo.add_task("a", _adapters(other, "a", 1, 0), _cond("a"))


def test_create_refuses_foreign_folder(tmp_path, tiny_layout):
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "notes.txt").write_text("mine")
    with pytest.raises(ZooError, match="is not a zoo"):
        Zoo.create(tmp_path / "z", tiny_layout)
    assert (tmp_path / "z" / "notes.txt").read_text() == "mine"


def test_collect_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    """An interrupted collection resumes without redoing finished tasks; other settings are refused before any work."""
    from loragen.finetune import FinetuneConfig
    from loragen.suites import get_suite
    import loragen.zoo.collect as C

    suite = get_suite("digits-domains")
    names = [t.name for t in suite.seen_tasks()[:3]]
    cfg = FinetuneConfig(steps=20, keep_last=2, save_every=5)
    C.collect(suite, tmp_path / "z", names[:2], cfg, show=False)  # "interrupted" after two tasks
    calls = []
    real = C.finetune
    monkeypatch.setattr(C, "finetune", lambda s, b, l, t, c: calls.append(t) or real(s, b, l, t, c))
    zoo, summary = C.collect(suite, tmp_path / "z", names, cfg, show=False)
    assert calls == [names[2]] and summary["resumed_skipped"] == 2
    assert zoo.tasks() == names and len(zoo.entries) == 6
    assert zoo.peft_info() == {"task_type": None, "base_model_name_or_path": "loragen:digits-domains"}
    with pytest.raises(ZooError, match="expected suite 'digits-domains' with"):
        C.collect(suite, tmp_path / "z", names, FinetuneConfig(steps=30, keep_last=2, save_every=5), show=False)
    assert calls == [names[2]]


def test_tasks_whose_names_sanitise_alike_keep_their_own_shards(tmp_path, tiny_layout):
    """'a/b', 'a_b' and 'a b' make the same file-safe text; each keeps its own checkpoints (issue 9)."""
    zoo = Zoo.create(tmp_path / "z", tiny_layout)
    stored = {}
    for seed, task in enumerate(["a/b", "a_b", "a b"]):
        stored[task] = _adapters(tiny_layout, task, 2, seed)
        zoo.add_task(task, stored[task], _cond(task))
    again = Zoo.open(tmp_path / "z")
    shards = {again.task_entries(t)[0]["shard"] for t in stored}
    assert len(shards) == 3 and all(s.startswith("shards/a_b-") for s in shards)  # distinct, still readable
    for task, adapters in stored.items():
        assert torch.equal(again.vectors(task), torch.stack([a.vector() for a in adapters])), task


def test_zoo_with_old_shard_names_still_reads(tmp_path, tiny_layout):
    """Zoos written before shard names carried a hash name their shard files in the manifest; those still open."""
    zoo = Zoo.create(tmp_path / "z", tiny_layout)
    adapters = _adapters(tiny_layout, "a/b", 2, 0)
    zoo.add_task("a/b", adapters, _cond("a/b"))
    new = zoo.task_entries("a/b")[0]["shard"]
    (tmp_path / "z" / new).rename(tmp_path / "z" / "shards" / "a_b.safetensors")  # the old name
    manifest = tmp_path / "z" / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace(new, "shards/a_b.safetensors"))
    old = Zoo.open(tmp_path / "z")
    assert torch.equal(old.vectors("a/b"), torch.stack([a.vector() for a in adapters]))
    assert old.condition("a/b").images.shape == (6, 4, 4)
    old.add_task("a_b", _adapters(tiny_layout, "a_b", 2, 1), _cond("a_b"))  # a new task never takes the old file
    assert torch.equal(Zoo.open(tmp_path / "z").vectors("a/b"), torch.stack([a.vector() for a in adapters]))


def test_peft_info_reaches_the_zoos_adapters(tmp_path, tiny_layout):
    zoo = Zoo.create(tmp_path / "z", tiny_layout, {"peft": {"task_type": "SEQ_CLS", "base_model_name_or_path": "org/m"}})
    zoo.add_task("a", _adapters(tiny_layout, "a", 2, 0), _cond("a"))
    zoo = Zoo.open(tmp_path / "z")
    assert zoo.peft_info() == {"task_type": "SEQ_CLS", "base_model_name_or_path": "org/m"}
    assert all(a.meta["peft"] == zoo.peft_info() for a in zoo.adapters("a"))
    unknown = Zoo.create(tmp_path / "old", tiny_layout)  # a zoo that never recorded them
    assert unknown.peft_info() == {"task_type": None, "base_model_name_or_path": None}
