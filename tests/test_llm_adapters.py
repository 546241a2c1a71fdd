"""LoRA adapters on llm-tasks, on a tiny random Llama: cached-prefix parity, per-sample LoRA, fine-tuning, PEFT
folders, zoo collection and the hyper generator through the same path."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.adapters.batched import batched_lora, stack_adapters
from loragen.adapters.layout import LoraLayout
from loragen.errors import ConfigError, LayoutMismatchError
from loragen.finetune import FinetuneConfig, finetune, peft_model
from loragen.suites import cached_prefix, completion, get_suite

TASK = "every-word-2"  # rows of different lengths: left padding matters


@pytest.fixture(scope="module")
def lm(tiny_llm_folder):
    """llm-tasks on the 2-layer tiny Llama, adapting its top layer (layer 0 is the cached prefix)."""
    return get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=1, answer_tokens=24, max_tokens=128,
                     n_train=24, n_val=12, n_test=12)


def _random_adapters(layout: LoraLayout, n: int, seed: int = 0) -> list[Adapter]:
    g = torch.Generator().manual_seed(seed)
    return [Adapter.from_vector(layout, 0.5 * torch.randn(layout.numel, generator=g)) for _ in range(n)]


def test_top_layers_pick_the_modules_and_the_cut(lm, tiny_llm_folder):
    assert lm.cut() == 1
    assert lm.target_modules == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    every = get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=None)
    assert every.target_modules == ["q_proj", "v_proj"] and every.cut() == 0
    assert every.data("add-2", "val") is every.tokens("add-2", "val")  # no prefix to cache
    mlp = get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=2, target_modules=["down_proj"])
    assert mlp.target_modules == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    with pytest.raises(ConfigError, match="top_layers must be between 1 and the model's 2 decoder layers; found 4"):
        get_suite("llm-tasks", model_path=str(tiny_llm_folder)).target_modules  # the default 4 needs a deeper model
    with pytest.raises(ConfigError, match=r"expected target modules \['nothing'\]"):
        get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=1, target_modules=["nothing"]).target_modules
    with pytest.raises(ConfigError, match="top_layers must be >= 1"):
        get_suite("llm-tasks", top_layers=0)
    with pytest.raises(ConfigError, match="expected tokens"):
        every.forward(every.base_model(), lm.data("add-2", "val").x)


def test_prefix_states_are_the_models_own_hidden_states(lm):
    base = lm.base_model()
    tokens, states = lm.tokens(TASK, "train"), lm.data(TASK, "train")
    n, _, length = tokens.x.shape
    assert states.x.shape == (n, length, base.config.hidden_size + 2) and torch.equal(states.y, tokens.y)
    assert torch.equal(states.x[..., -2], tokens.x[:, 1].float())  # the mask, then the answer-token flags
    assert torch.equal(states.x[:, -lm.answer_tokens :, -1].bool(), tokens.y != completion.IGNORE)
    assert states.x[:, : -lm.answer_tokens, -1].sum() == 0
    assert lm.data(TASK, "train") is states  # computed once per example, then kept
    for i in (0, 5):  # each row alone, unpadded, through transformers' own forward
        real = tokens.x[i, 1].bool()
        with torch.no_grad():
            hidden = base(tokens.x[i, 0][real][None], output_hidden_states=True).hidden_states[1][0]  # after layer 0
        assert torch.allclose(states.x[i, real, :-2], hidden, atol=1e-5)
        assert (states.x[i, ~real] == 0).all()


def test_cached_prefix_gives_the_whole_models_logits_loss_and_gradients(lm):
    """Full forward vs cached-prefix forward with a LoRA on the top layer: same answer logits, loss and LoRA gradients."""
    base = lm.base_model()
    layout = LoraLayout.from_model(base, lm.target_modules, rank=2, alpha=4.0)
    model = peft_model(base, layout, init_seed=0)
    with torch.no_grad():  # B = 0 at LoRA's init: give it values so that the adapter changes the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    tokens, states = lm.tokens(TASK, "train"), lm.data(TASK, "train")
    rows = torch.arange(6)
    results = []
    for x in (tokens.x[rows], states.x[rows]):
        model.zero_grad()
        logits = lm.forward(model, x)  # (n, V, A)
        loss = F.cross_entropy(logits, tokens.y[rows])
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((logits.detach(), loss.item(), grads))
    (full, full_loss, full_grads), (cached, cached_loss, cached_grads) = results
    answer = (tokens.y[rows] != completion.IGNORE)[:, None, :].expand_as(full)
    assert torch.allclose(full[answer], cached[answer], atol=1e-4)
    assert (cached[~answer] == 0).all()  # the LM head runs over answer tokens only
    assert abs(full_loss - cached_loss) < 1e-5
    assert len(full_grads) == 4 and all(g.abs().sum() > 0 for g in full_grads.values())
    for name, g in full_grads.items():
        assert torch.allclose(g, cached_grads[name], atol=1e-5, rtol=1e-4), name
    with torch.no_grad():  # the LoRA matters: without it the logits differ
        assert (lm.forward(base, tokens.x[rows]) - full).abs().max() > 1e-2
    # teacher-forced accuracy reads either form the same way
    assert lm.accuracy(model, tokens) == lm.accuracy(model, states)


def test_per_sample_lora_on_the_llm_equals_each_adapter_alone(lm, tiny_llm_folder):
    """adapters/batched.py on q_proj / v_proj: sample b under adapter b == that adapter merged alone, on tokens (every
    layer adapted) and on cached prefix states (top layer); gradients reach every adapter."""
    every = get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=None, answer_tokens=24, max_tokens=128)
    base = lm.base_model()
    per = 2  # samples per adapter
    for suite, x in ((every, lm.tokens(TASK, "train").x[:6]), (lm, lm.data(TASK, "train").x[:6])):
        layout = LoraLayout.from_model(base, suite.target_modules, rank=2, alpha=4.0)
        adapters = _random_adapters(layout, 3)
        tensors = {k: v.requires_grad_() for k, v in stack_adapters(adapters).items()}
        with batched_lora(base, layout, tensors, per_adapter=per):
            together = suite.forward(base, x)  # (6, V, A)
        together.square().mean().backward()
        assert all(t.grad[i].abs().sum() > 0 for t in tensors.values() for i in range(3))
        for i, a in enumerate(adapters):
            with merged(base, a), torch.no_grad():
                alone = suite.forward(base, x[per * i : per * (i + 1)])
            assert torch.allclose(together[per * i : per * (i + 1)].detach(), alone, atol=1e-4), (suite.top_layers, i)
        with merged(base, adapters[1]), torch.no_grad():  # another adapter on the same samples: another output
            assert (suite.forward(base, x[:per]) - together[:per]).abs().max() > 1e-3


def test_cached_states_refuse_an_adapter_below_the_cut(lm):
    base = lm.base_model()
    every_layer = LoraLayout.from_model(base, ["q_proj", "v_proj"], rank=2, alpha=4.0)
    x = lm.data(TASK, "train").x[:2]
    tensors = stack_adapters(_random_adapters(every_layer, 2))
    with batched_lora(base, every_layer, tensors), pytest.raises(LayoutMismatchError, match="adapter on layer 0"):
        lm.forward(base, x)
    with pytest.raises(LayoutMismatchError, match="adapter on layer 0"):
        lm.forward(peft_model(base, every_layer, init_seed=0), x)
    with pytest.raises(ConfigError, match=r"expected packed prefix states \(N, L, 34\)"):
        cached_prefix.top_logits(base, x[..., :-2], lm.cut(), lm.answer_tokens)
    lm.forward(base, x)  # the hooks are gone again: the base model passes


def test_finetuned_adapter_is_a_peft_causal_lm_folder(lm, tiny_llm_folder, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = lm.base_model()
    layout = LoraLayout.from_model(base, lm.target_modules, rank=2, alpha=4.0)
    task = "format-uppercase"
    cfg = FinetuneConfig(rank=2, alpha=4.0, steps=30, batch_size=8, lr=5e-2, keep_last=2, save_every=5)
    adapters, seconds = finetune(lm, base, layout, task, cfg)
    assert [a.meta["step"] for a in adapters] == [25, 30] and 0.0 <= adapters[-1].meta["val_acc"] <= 100.0
    train = lm.data(task, "train")
    with torch.no_grad():
        before = F.cross_entropy(lm.forward(base, train.x), train.y).item()
        with merged(base, adapters[-1]):
            after = F.cross_entropy(lm.forward(base, train.x), train.y).item()
    # 30 steps learn something (seen: 7.08 -> 6.98; q / v of a random tiny Llama barely reach its output)
    assert after < before - 0.05

    adapter = adapters[-1]
    adapter.meta["peft"] = lm.peft_info()
    folder = adapter.save(tmp_path / "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == str(tiny_llm_folder.resolve())
    assert sorted(config["target_modules"]) == lm.target_modules
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llm_folder)), str(folder)).eval()
    assert type(loaded).__name__ == "PeftModelForCausalLM"
    tokens = lm.tokens(task, "test")
    with torch.no_grad():
        with merged(base, adapter):
            want = lm.forward(base, tokens.x)
        assert torch.allclose(lm.forward(loaded, tokens.x), want, atol=1e-4)  # PEFT's own forward
        answer = (tokens.y != completion.IGNORE)[:, None, :].expand_as(want)  # cached states: answer positions only
        assert torch.allclose(lm.forward(loaded, lm.data(task, "test").x)[answer], want[answer], atol=1e-4)
    assert Adapter.load(folder).meta["peft"] == lm.peft_info()


def test_zoo_collect_quick_on_a_local_causal_lm(tiny_llm_folder, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from loragen.cli import app
    from loragen.suites.defaults import suite_defaults
    from loragen.zoo.store import Zoo

    out = tmp_path / "zoo"
    r = CliRunner().invoke(app, ["zoo", "collect", "--suite", "llm-tasks", "--quick", "--model", str(tiny_llm_folder),
                                 "--tasks", "add-2,format-uppercase", "--out", str(out)])
    assert r.exit_code == 0, r.output
    zoo = Zoo.open(out)
    quick = suite_defaults("llm-tasks", quick=True)
    assert zoo.tasks() == ["add-2", "format-uppercase"] and len(zoo.entries) == 2 * quick.finetune["keep_last"]
    assert zoo.info["suite"] == "llm-tasks" and zoo.info["finetune"]["steps"] == quick.finetune["steps"]
    assert zoo.peft_info() == {"task_type": "CAUSAL_LM", "base_model_name_or_path": str(tiny_llm_folder.resolve())}
    assert zoo.layout.target_names == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    assert zoo.condition("add-2").text and zoo.condition("add-2").examples
    folder = zoo.best_adapter("add-2").save(tmp_path / "best")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llm_folder)), str(folder))
    assert type(model).__name__ == "PeftModelForCausalLM"
    # resuming with the same settings collects nothing again
    r = CliRunner().invoke(app, ["zoo", "collect", "--suite", "llm-tasks", "--quick", "--model", str(tiny_llm_folder),
                                 "--tasks", "add-2,format-uppercase", "--out", str(out)])
    assert r.exit_code == 0 and "0 collected now, 2 already there" in r.output


def test_hyper_generator_trains_through_the_cached_prefix(lm, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loragen.generators.hyper import HyperConfig, HyperGenerator
    from loragen.suites.defaults import suite_defaults

    cfg = HyperConfig(**suite_defaults("llm-tasks", quick=True).hyper | {"steps": 6, "cond_draws": 2})
    gen = HyperGenerator.fit(cfg, suite=lm, tasks=["add-2", "format-uppercase"], show=False)
    assert gen.layout.target_names == lm.target_modules and gen.peft == lm.peft_info()
    assert torch.isfinite(torch.tensor(gen.fit_summary["loss"]))
    adapter = gen.generate(lm.eval_condition("add-3"))[0]  # an unseen task, a held-out description
    assert adapter.vector().abs().sum() > 0
    folder = adapter.save(tmp_path / "generated")
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(lm.model_folder())), str(folder))


def test_example_states_read_each_line_at_the_cut(lm):
    """The states encoder's rows: the prefix state of each example line's last prompt token and its answer tokens'
    mean, the same whether the line's states come from the train split's cache or from a fresh prefix pass."""
    from loragen.conditions import Condition
    from loragen.generators.hyper.items import ConditionItems

    cond = lm.eval_condition(TASK)
    cached = lm.example_states(cond)  # lines of the train split: read from `data`
    fresh = lm.example_states(Condition("a-new-task", text="x", examples=cond.examples))  # the prefix runs again
    dim = lm.base_model().config.hidden_size
    assert cached.shape == (lm.k_exemplars, 2 * dim)
    assert torch.allclose(cached, fresh, atol=1e-4)
    # by hand, for the first line: its tokens through layer 0 alone, unpadded
    tokens = lm.example_batch(replace(cond, examples=cond.examples[:1]))  # the first line as `data` pads it
    real = tokens.x[0, 1].bool()
    with torch.no_grad():
        hidden = lm.base_model()(tokens.x[0, 0][real][None], output_hidden_states=True).hidden_states[1][0]
    flags = torch.zeros(tokens.x.shape[2], dtype=torch.bool)
    flags[-lm.answer_tokens :] = tokens.y[0] != completion.IGNORE
    flags = flags[real]
    first = int(flags.long().argmax())
    assert torch.allclose(cached[0, :dim], hidden[first - 1], atol=1e-4)
    assert torch.allclose(cached[0, dim:], hidden[flags].mean(0), atol=1e-4)
    items = ConditionItems("states", lm)
    rows = items(cond)
    assert rows.shape == (lm.k_exemplars, 2 * dim + 384)
    assert torch.equal(rows[:, : 2 * dim], cached) and torch.allclose(rows[0, 2 * dim :], rows[-1, 2 * dim :])
    other = items(Condition(cond.task, text="Something else entirely", examples=cond.examples))
    assert torch.equal(other[:, : 2 * dim], cached) and not torch.allclose(other[:, 2 * dim :], rows[:, 2 * dim :])
    with pytest.raises(ConfigError, match="expected a suite"):
        ConditionItems("states")


def test_quick_demo_on_a_local_causal_lm(tiny_llm_folder, tmp_path):
    """The whole pipeline (zoo, reference fine-tunes, hyper generator, evaluation, PEFT folders) runs on llm-tasks."""
    from typer.testing import CliRunner

    from loragen.cli import app

    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--suite", "llm-tasks", "--quick", "--model", str(tiny_llm_folder),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == "llm-tasks" and results["seen"] and results["unseen"]
    configs = sorted(out.glob("adapters/*/sample_0/adapter_config.json"))
    assert len(configs) == 2 and all(json.loads(c.read_text())["task_type"] == "CAUSAL_LM" for c in configs)


def test_train_generate_load_and_chat_from_the_command_line(tiny_llm_folder, tmp_path):
    """`loragen train --suite llm-tasks`, `loragen generate "<description>"` writes a PEFT folder that
    PeftModel.from_pretrained loads with the same outputs as the adapter merged; `loragen chat` streams its reply."""
    import io

    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from loragen.cli import app
    from loragen.suites.chat import load_chat_model, stream_reply

    runner, gen_dir, out = CliRunner(), tmp_path / "gen", tmp_path / "adapters"
    r = runner.invoke(app, ["train", "--suite", "llm-tasks", "--model", str(tiny_llm_folder), "--quick", "--out", str(gen_dir)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["generate", "Add 2 to the number.", "--example", "'5' -> 7", "--generator-dir", str(gen_dir),
                            "--out", str(out), "--n", "1"])
    assert r.exit_code == 0, r.output
    folder = out / "adapter_0"
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llm_folder)), str(folder)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llm_folder)).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad(), merged(base, Adapter.load(folder)):
        want = base(input_ids=ids).logits
    with torch.no_grad():
        assert torch.allclose(peft(input_ids=ids).logits, want, atol=1e-5)
        assert not torch.allclose(AutoModelForCausalLM.from_pretrained(str(tiny_llm_folder))(input_ids=ids).logits, want, atol=1e-5)
    lm, tok = load_chat_model(folder)  # the base model comes from the adapter's config
    buf = io.StringIO()
    reply = stream_reply(lm, tok, "12", 6, buf)
    assert buf.getvalue().strip() == reply  # what was streamed is the reply
    assert reply == completion.greedy_complete(peft, tok, [[{"role": "user", "content": "12"}]], 6)[0]
    r = runner.invoke(app, ["chat", "12", "--adapter", str(folder), "--max-new-tokens", "6"])
    assert r.exit_code == 0 and reply in r.output, r.output
    r = runner.invoke(app, ["chat", "12", "--adapter", str(tmp_path)])
    assert r.exit_code == 2 and "expected a PEFT adapter folder" in r.output
    r = runner.invoke(app, ["generate", "Add 2.", "--suite", "digits-gen"])
    assert r.exit_code == 2 and ("not trained yet" in r.output or "digits-gen" in r.output)


def test_icl_states_read_the_condition_in_context(lm, tmp_path):
    """The icl encoder's rows: one conversation of the condition's examples through the lower half of the layers, row
    i at the token that predicts example i's answer, having read only what comes before it."""
    from loragen.errors import ConditionError
    from loragen.generators.hyper import HyperConfig, HyperGenerator
    from loragen.generators.hyper.items import ConditionItems
    from loragen.suites.defaults import suite_defaults

    cond = lm.eval_condition(TASK)
    rows = lm.icl_states(cond)
    assert rows.shape == (lm.k_exemplars, lm.base_model().config.hidden_size)
    # row 0 by hand: the first example asked with the description (zero-shot's prompt), through layer 0 of the 2
    x0, y0 = cond.labelled_examples()[0]
    tokens = completion.encode(lm.tokenizer(), [lm.query(TASK, x0, "description", text=cond.text)], [y0], lm.answer_tokens)
    with torch.no_grad():
        hidden = lm.base_model()(tokens.x[0, 0][None], output_hidden_states=True).hidden_states[1][0]
    prompt_len = len(lm.tokenizer()(completion.prompt_text(lm.tokenizer(), lm.query(TASK, x0, "description", text=cond.text)),
                                    add_special_tokens=False)["input_ids"])
    assert torch.allclose(rows[0], hidden[prompt_len - 1], atol=1e-4)
    # causal: a shorter conversation gives the same rows; a row reads the answers before it, not its own or later ones
    assert torch.allclose(lm.icl_states(replace(cond, examples=cond.examples[:3])), rows[:3], atol=1e-4)
    lines = list(cond.examples)
    lines[1] = lines[1].rpartition(" -> ")[0] + " -> something else"
    changed = lm.icl_states(replace(cond, examples=lines))
    assert torch.allclose(changed[:2], rows[:2], atol=1e-4) and not torch.allclose(changed[2], rows[2], atol=1e-4)
    assert not torch.allclose(lm.icl_states(replace(cond, text="Another task")), rows, atol=1e-4)
    with pytest.raises(ConditionError, match="expected a description"):
        ConditionItems("icl", lm)(replace(cond, text=None))
    # the generator learns from them and generates for an unseen task
    cfg = HyperConfig(**suite_defaults("llm-tasks", quick=True).hyper | {"encoder": "icl", "steps": 4, "cond_draws": 2})
    gen = HyperGenerator.fit(cfg, suite=lm, tasks=["add-2", "format-uppercase"], show=False)
    assert gen.generate(lm.eval_condition("add-3"))[0].vector().abs().sum() > 0


def test_adapters_trained_in_a_prompt_context_chat_in_it(tiny_llm_folder, tmp_path):
    """`train --adapter-context few-shot`: the generator records the context (a reloaded one rebuilds the same suite),
    each adapter records its prompt (the condition's description and first `shots` example lines), and `loragen chat`
    sends the message in that prompt: the suite's own few-shot prompt. A zoo refuses a second context."""
    from typer.testing import CliRunner

    from loragen.cli import app
    from loragen.errors import ZooError
    from loragen.generators.base import load_generator
    from loragen.suites.chat import chat_messages
    from loragen.suites.defaults import suite_defaults
    from loragen.zoo.collect import collect

    runner, gen_dir, out = CliRunner(), tmp_path / "gen", tmp_path / "adapters"
    r = runner.invoke(app, ["train", "--suite", "llm-tasks", "--model", str(tiny_llm_folder), "--quick", "--out", str(gen_dir),
                            "--adapter-context", "few-shot"])
    assert r.exit_code == 0, r.output
    gen = load_generator(gen_dir)
    assert gen.suite_args["adapter_context"] == "few-shot" and gen.items.suite().adapter_context == "few-shot"
    lines = ["'5' -> 7", "'12' -> 14", "'30' -> 32", "'1' -> 3", "'8' -> 10", "'40' -> 42"]
    args = ["generate", "Add 2 to the number.", "--generator-dir", str(gen_dir), "--out", str(out), "--n", "1"]
    r = runner.invoke(app, args + [a for line in lines for a in ("--example", line)])
    assert r.exit_code == 0, r.output
    folder = out / "adapter_0"
    shots = gen.items.suite().shots
    assert Adapter.load(folder).meta["prompt_context"] == {"context": "few-shot", "description": "Add 2 to the number.",
                                                            "examples": lines[:shots]}
    messages, said = chat_messages("20", folder)
    suite = get_suite("llm-tasks", model_path=str(tiny_llm_folder))
    pairs = [(x.strip("'"), y) for x, y in (line.split(" -> ") for line in lines[:shots])]
    assert messages == suite.query("add-2", "20", "few-shot", text="Add 2 to the number.", shots=pairs)
    assert "as the adapter was trained" in said and f"{shots} examples" in said
    # the user's own context wins; the message alone for an adapter that records none
    assert chat_messages("20", folder, context="none")[0] == [{"role": "user", "content": "20"}]
    assert chat_messages("20", folder, context="description")[0] == [{"role": "user", "content": "Add 2 to the number.\n\n20"}]
    assert chat_messages("20")[0] == [{"role": "user", "content": "20"}]
    with pytest.raises(ConfigError, match="found none"):
        chat_messages("20", context="description")
    r = runner.invoke(app, ["chat", "20", "--adapter", str(folder), "--max-new-tokens", "4"])
    assert r.exit_code == 0 and "prompt context few-shot (as the adapter was trained)" in r.output, r.output

    # a zoo holds one context; --adapter-context belongs to llm-tasks
    zoo_dir, cfg = tmp_path / "zoo", FinetuneConfig(steps=2, keep_last=1, save_every=2)
    quick = suite_defaults("llm-tasks", quick=True).suite_kwargs
    collect(get_suite("llm-tasks", model_path=str(tiny_llm_folder), **quick), zoo_dir, ["add-2"], cfg, show=False)
    fewshot = get_suite("llm-tasks", model_path=str(tiny_llm_folder), adapter_context="few-shot", **quick)
    with pytest.raises(ZooError, match="prompt context 'none'; expected 'few-shot'"):
        collect(fewshot, zoo_dir, ["add-2"], cfg, show=False)
    r = runner.invoke(app, ["zoo", "collect", "--out", str(zoo_dir), "--suite", "digits-domains", "--adapter-context", "few-shot"])
    assert r.exit_code == 2 and "applies to the suite llm-tasks" in r.output
