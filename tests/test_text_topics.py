"""text-topics: tasks from offline data, text conditions, your own local model, PEFT parity with a head."""

import pytest
import torch

from loragen.conditions import Condition, OneHotEncoder, TextEncoder
from loragen.errors import LayoutMismatchError, LoragenError, UnknownTaskError
from loragen.suites import get_suite


@pytest.fixture(scope="module")
def suite():
    return get_suite("text-topics")


def test_tasks_and_splits(suite):
    tasks = suite.tasks()
    assert len(tasks) >= 12
    assert any(t.name.startswith("topic-") for t in tasks) and any(t.name.startswith("polarity-") for t in tasks)
    assert 1 <= len(suite.heldout_tasks()) < len(tasks) // 2
    for t in ("topic-ai", "polarity-mild"):
        parts = [suite.texts(t, s) for s in ("train", "val", "test")]
        texts = [set(p[0]) for p in parts]
        assert not (texts[0] & texts[2]) and not (texts[1] & texts[2])  # no test text leaks into training
        labels = parts[0][1] + parts[1][1] + parts[2][1]
        assert sum(labels) == len(labels) // 2  # balanced positives / negatives
        assert parts[0] == suite.texts(t, "train")  # seeded, fixed


def test_condition_is_description_plus_train_examples(suite):
    c = suite.condition("topic-ai")
    assert "about ai" in c.text and len(c.examples) == suite.k_exemplars
    train_lines = set(suite.condition_pool("topic-ai").examples)
    assert set(c.examples) <= train_lines
    assert c.examples != suite.condition("topic-ai", draw=1).examples
    with pytest.raises(UnknownTaskError, match="no task 'topic-cooking'"):
        suite.condition("topic-cooking")


def test_text_encoder_variants_and_cache(suite, monkeypatch):
    enc = TextEncoder()
    c = suite.condition("topic-ai")
    e = enc.encode([c, suite.condition("polarity-mild")])
    assert e.shape == (2, 384) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-4)
    monkeypatch.setattr(enc._model, "encode", lambda *a, **k: pytest.fail("cached text was encoded again"))
    assert torch.equal(enc.encode([c])[0], e[0])
    desc = TextEncoder(with_examples=False)
    desc._model = enc._model
    assert desc.render(c) == c.text and "Examples" in enc.render(c)
    one = OneHotEncoder(["a", "b"]).encode([Condition(task="b"), Condition(task="new")])
    assert one.tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_own_model_folder_and_targets(tiny_bert_folder, tmp_path):
    from loragen.layout import LoraLayout

    s = get_suite("text-topics", model_path=tiny_bert_folder, target_modules=["query", "value"])
    base = s.base_model()
    layout = LoraLayout.from_model(base, s.target_modules, 2, 4.0, s.modules_to_save)
    assert len(layout.modules) == 4 and layout.full[0].name == "classifier"  # 2 layers × query/value + head
    assert s.accuracy(base, s.data("topic-ai", "test")) >= 0.0
    with pytest.raises(LoragenError, match="expected a local Hugging Face model folder with config.json"):
        get_suite("text-topics", model_path=tmp_path / "nowhere").base_model()
    with pytest.raises(LayoutMismatchError, match=r"\['q_proj'\] match no nn.Linear"):
        LoraLayout.from_model(base, ["q_proj"], 2, 4.0)


def test_peft_parity_with_head_on_a_transformer(tiny_bert_folder, tmp_path):
    """A generated-style adapter (LoRA on query/value + head) saved as a PEFT folder gives the same logits through
    peft.PeftModel.from_pretrained as through loragen's merge."""
    import copy

    from peft import PeftModel

    from loragen.adapter import Adapter
    from loragen.apply import merged
    from loragen.layout import LoraLayout

    s = get_suite("text-topics", model_path=tiny_bert_folder)
    base = s.base_model()
    layout = LoraLayout.from_model(base, s.target_modules, 2, 4.0, s.modules_to_save)
    torch.manual_seed(3)
    adapter = Adapter.from_vector(layout, 0.2 * torch.randn(layout.numel), {"task": "topic-ai"})
    adapter.save(tmp_path / "a")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "a")).eval()
    x = s.data("topic-ai", "test").x[:8]
    with torch.no_grad():
        theirs = peft_model(x)
        with merged(base, adapter):
            ours = base(x)
    assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()


def test_unknown_suite_argument():
    with pytest.raises(LoragenError, match="does not take \\['model_path'\\]"):
        get_suite("digits-domains", model_path="x")
