"""text-topics: tasks from offline data, text conditions, your own local model, PEFT parity with a head."""

import pytest
import torch

from loragen.conditions import Condition, OneHotEncoder, TextEncoder
from loragen.errors import LayoutMismatchError, LoragenError, UnknownTaskError
from loragen.suites import get_suite
from loragen.suites.text_topics import (BANDS, HELD_OUT_SOURCES, MAX_LEN, chatterbot_categories, item_key, load_sources,
                                        vader_words)


@pytest.fixture(scope="module")
def suite():
    return get_suite("text-topics")


def test_tasks_and_splits(suite):
    tasks = suite.tasks()
    assert len(tasks) >= 60 and len(suite.seen_tasks()) >= 40
    kinds = {t.params["kind"] for t in tasks}
    assert {"topic", "pair", "group", "polarity", "intensity"} <= kinds
    names = {t.name for t in tasks}
    assert {"topic-ai", "polarity-mild", "topic-science", "topic-movies", "polarity-strong"} <= names
    assert {t.name for t in suite.heldout_tasks()} >= {"topic-science", "topic-movies", "polarity-strong"}
    for t in tasks:
        assert t.params["sources"] and set(t.params["sources"]) <= set(suite.sources()), t
        assert suite.condition_pool(t.name).text.startswith("Decide whether"), t.name
        for split in ("train", "val", "test"):
            xs, ys = suite.texts(t.name, split)
            assert xs and sum(ys) == len(ys) // 2 and len(ys) % 2 == 0, (t.name, split)  # balanced, never empty
            assert len(ys) <= 2 * suite.max_per_class
    assert suite.texts("topic-ai", "train") == get_suite("text-topics").texts("topic-ai", "train")  # seeded, fixed
    with pytest.raises(ValueError, match="split must be"):
        suite.texts("topic-ai", "dev")


def test_no_test_item_of_any_task_is_trained_on(suite):
    """Splits are global: an item is train, val or test for every task at once (the model is uncased)."""
    by_split = {s: set() for s in ("train", "val", "test")}
    for t in suite.tasks():
        for s in by_split:
            by_split[s] |= {item_key(x) for x in suite.texts(t.name, s)[0]}
    assert not by_split["test"] & by_split["train"]
    assert not by_split["val"] & by_split["train"] and not by_split["test"] & by_split["val"]


def test_tasks_draw_only_on_their_sources_and_seen_tasks_never_on_heldout_ones(suite):
    owner = {item_key(text): src for src, items in load_sources().items() for text, _ in items}
    for t in suite.tasks():
        used = {owner[item_key(x)] for s in ("train", "val", "test") for x in suite.texts(t.name, s)[0]}
        assert used == set(t.params["sources"]), (t.name, used)  # params tell the truth, every source is used
        assert t.heldout == bool(used & set(HELD_OUT_SOURCES)), t.name
    # the raw corpus texts of held-out categories and words of the held-out band never reach a seen task
    cats = chatterbot_categories()
    held = {item_key(u) for c in HELD_OUT_SOURCES if c in cats for u in cats[c]}
    held |= {item_key(w) for w, v in vader_words() if abs(v) >= BANDS["strong"][0]}
    assert len(held) > 2000
    for t in suite.seen_tasks():
        texts = {item_key(x) for s in ("train", "val", "test") for x in suite.texts(t.name, s)[0]}
        assert not texts & held, (t.name, sorted(texts & held)[:3])


@pytest.mark.parametrize("k", [5, 3])
def test_folds_are_over_sources(suite, k):
    folds, groups = suite.folds(k), suite.source_groups(k)
    assert len(folds) == k and sorted(s for g in groups for s in g) == sorted(suite.sources())
    tested = [t for f in folds for t in f.test]
    assert sorted(tested) == sorted(t.name for t in suite.tasks())  # each task evaluated as unseen exactly once
    owner = {item_key(text): src for src, items in load_sources().items() for text, _ in items}
    for f, group in zip(folds, groups):
        assert not set(f.train) & set(f.test)
        if k == 5:
            assert len(f.train) >= 25, [len(g.train) for g in folds]
        for t in f.test:
            assert suite.task(t).params["sources"][0] in group
        for t in f.train + f.generator_only:  # no training task touches the fold's sources, in params or in actual texts
            assert not set(suite.task(t).params["sources"]) & set(group), (f.index, t)
            texts = [x for s in ("train", "val", "test") for x in suite.texts(t, s)[0]]
            assert not {owner[item_key(x)] for x in texts} & set(group), (f.index, t)
        # generator-only: one-vs-rest over the fold's other categories, for every one of them; not suite tasks
        cats = [s for s in suite.sources() if not s.startswith("vader-") and s not in group]
        topics = [t for t in f.generator_only if suite.task(t).params["kind"] == "topic"]
        assert sorted(suite.task(t).params["sources"][0] for t in topics) == sorted(cats)
        assert all(sorted(suite.task(t).params["sources"]) == sorted(cats) for t in topics)
        assert not set(f.generator_only) & {t.name for t in suite.tasks()}
        assert all(suite.task(t).params["generator_only"] for t in f.generator_only)
    with pytest.raises(ValueError, match="k must be between 2 and the number of categories"):
        suite.folds(1)


def test_condition_is_description_plus_train_examples(suite):
    c = suite.condition("topic-ai")
    assert "about ai" in c.text and len(c.examples) == suite.k_exemplars
    train_lines = set(suite.condition_pool("topic-ai").examples)
    assert set(c.examples) <= train_lines
    assert c.examples != suite.condition("topic-ai", draw=1).examples
    with pytest.raises(UnknownTaskError, match="no task 'topic-cooking'"):
        suite.condition("topic-cooking")


def test_texts_padded_to_their_longest_match_the_transformers_call(suite):
    """`encode_texts(longest=True)` runs the fast tokenizer's backend directly: the same ids and mask as transformers'
    call, long texts truncated and short ones padded alike."""
    tok = suite.tokenizer()
    texts = suite.texts("topic-ai", "train")[0][:15] + ["", " ".join(["word"] * 80)]
    for xs in (texts, texts[:1], texts[-2:]):
        want = tok(xs, padding="longest", truncation=True, max_length=MAX_LEN, return_tensors="pt")
        got = suite.encode_texts(xs, longest=True)
        assert torch.equal(got, torch.stack([want["input_ids"], want["attention_mask"]], 1))
    assert suite.encode_texts(texts, longest=True).shape == (17, 2, MAX_LEN)  # the long text fills MAX_LEN


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
    from loragen.adapters.layout import LoraLayout

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

    from loragen.adapters.adapter import Adapter
    from loragen.adapters.apply import merged
    from loragen.adapters.layout import LoraLayout

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
