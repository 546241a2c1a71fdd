import pytest
import torch
from torch import nn

from loragen.adapters.batched import batched_lora
from loragen.adapters.layout import LoraLayout
from loragen.errors import ConfigError, LoragenError
from loragen.generators.composer import ComposerConfig, ComposerGenerator
from loragen.generators.composer.context_batches import context_batch
from loragen.generators.composer.generator import STATE_FILE, target_weights
from loragen.generators.composer.meta_generator import MetaGenerator, attention_mask
from loragen.suites.dit import DiT


def _generator(dit: DiT, attention: str = "global-local", layers: int = 2) -> tuple[MetaGenerator, LoraLayout]:
    layout = LoraLayout.from_model(dit, ["q", "v"], rank=2, alpha=2.0)
    torch.manual_seed(1)
    return MetaGenerator(target_weights(dit, layout), 10, 2, width=16, layers=layers, heads=2, prompt_tokens=3,
                         attention=attention), layout


def _as_tensors(layout: LoraLayout, a_CMri: torch.Tensor, b_CMor: torch.Tensor, index_B: torch.Tensor) -> dict:
    return {k: v for j, m in enumerate(layout.modules)
            for k, v in ((f"{m.name}.lora_A", a_CMri[:, j][index_B]), (f"{m.name}.lora_B", b_CMor[:, j][index_B]))}


def test_attention_mask_global_local():
    P, M, T = 2, 3, 4
    blocked = attention_mask(P, M, T, "global-local")
    allowed = ~blocked
    tok = lambda m, s: P + m * T + s  # noqa: E731 index of slot s of block m
    assert allowed[:P, :P].all() and blocked[:P, P:].all()  # prompt tokens never read component tokens
    assert allowed[P:, :P].all()  # every component token reads every prompt token
    assert allowed[tok(1, 2), tok(1, 0)] and allowed[tok(1, 2), tok(1, 3)]  # local: within its block
    assert blocked[tok(1, 2), tok(0, 2)] and blocked[tok(1, 2), tok(2, 0)]  # a non-first token never leaves its block
    assert allowed[tok(0, 0), tok(2, 0)] and allowed[tok(2, 0), tok(1, 0)]  # global: first tokens across blocks
    assert blocked[tok(0, 0), tok(2, 1)]  # ... but only to other blocks' first tokens
    assert not attention_mask(P, M, T, "standard").any()
    with pytest.raises(ConfigError, match="attention must be one of"):
        attention_mask(P, M, T, "local")


def test_starts_at_the_pretrained_weights(live_dit):
    """Head B is zero at init: W' = W, the backbone's output is unchanged under the generated update."""
    dit = live_dit
    net, layout = _generator(dit)
    a, b = net(torch.eye(10)[[3, 5]])
    assert a.shape == (2, len(layout.modules), 2, 32) and b.shape == (2, len(layout.modules), 32, 2)
    assert torch.count_nonzero(b) == 0 and a.abs().mean() > 0
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([10, 500]), torch.tensor([3, 5])
    with batched_lora(dit, layout, _as_tensors(layout, a, b, torch.arange(2))):
        out = dit(x, t, y)
    assert torch.equal(out, dit(x, t, y))


def test_global_local_attention_limits_what_a_block_reads(live_dit):
    """One layer: block 0's non-first tokens (the B columns) read only prompt and own block, so changing block 1's
    tokens leaves them alone under global-local and changes them under standard attention."""
    for attention, should_change in (("global-local", False), ("standard", True)):
        net, _ = _generator(live_dit, attention, layers=1)
        nn.init.normal_(net.head_b.weight)
        cond = torch.eye(10)[[4]]
        a0, b0 = net(cond)
        with torch.no_grad():
            net.block_pos[1] += torch.randn(net.block_pos.shape[1:])  # not a constant: LayerNorm removes those
        a1, b1 = net(cond)
        assert torch.allclose(b0[:, 0], b1[:, 0]) != should_change, attention
        assert not torch.allclose(a0[:, 0, 0], a1[:, 0, 0])  # slot 0 is block 0's first token: it reads block 1's
        assert not torch.allclose(b0[:, 1], b1[:, 1])


def test_finalize_keeps_outputs_and_drops_the_projection(live_dit):
    net, _ = _generator(live_dit)
    nn.init.normal_(net.head_b.weight)
    cond = torch.eye(10)[[0, 7]]
    before = net(cond)
    net.finalize()
    after = net(cond)
    assert net.finalized and torch.allclose(before[0], after[0], atol=1e-6) and torch.allclose(before[1], after[1], atol=1e-6)
    keys = set(net.state_dict())
    assert "tokens_MTD" in keys and not {"weights_MOI", "proj_left", "proj_right"} & keys


def test_gradients_reach_the_generator_in_training_mode(live_dit):
    """Through per-sample batched LoRA and the backbone's diffusion loss; the second step reaches the whole
    generator (at step one B = 0, so only head B gets a gradient, as in LoRA)."""
    from loragen.diffusion import Diffusion

    dit = live_dit
    net, layout = _generator(dit)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    diffusion, y = Diffusion(prediction_type="epsilon"), torch.tensor([1, 1, 6, 9])
    for step in range(2):
        a, b = net(torch.eye(10)[[1, 6, 9]])
        with batched_lora(dit, layout, _as_tensors(layout, a, b, torch.tensor([0, 0, 1, 2]))):
            loss = diffusion.training_loss(dit, torch.randn(4, 1, 8, 8), y, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert net.head_b.weight.grad.abs().sum() > 0
            assert net.prompt.weight.grad is None or net.prompt.weight.grad.abs().sum() == 0
        opt.step()
    for name in ("prompt.weight", "proj_left", "proj_right", "head_a.weight", "head_b.weight"):
        assert dict(net.named_parameters())[name].grad.abs().sum() > 0, name
    assert all(p.grad is None for p in dit.parameters())  # the backbone stays frozen


def test_context_batches():
    labels = torch.arange(100) % 5
    g = torch.Generator().manual_seed(0)
    idx = context_batch(labels, 16, 0.75, g)
    counts = torch.bincount(labels[idx], minlength=5)
    assert len(idx) == 16 and counts.max() == 12 and counts.sum() - counts.max() == 4  # 4 from the other classes
    assert len(labels[context_batch(labels, 16, 1.0, g)].unique()) == 1
    assert len(context_batch(labels, 16, 0.0, g)) == 16
    with pytest.raises(ConfigError, match=r"context_share must lie in \[0, 1\]; found 1.5"):
        context_batch(labels, 16, 1.5, g)
    with pytest.raises(ConfigError, match="the pool holds one class only"):
        context_batch(torch.zeros(10, dtype=torch.long), 8, 0.5, g)


def test_config_validation():
    with pytest.raises(ConfigError, match="generator must be one of"):
        ComposerConfig(generator="cnn")
    with pytest.raises(ConfigError, match="rank must be >= 1; found 0"):
        ComposerConfig(rank=0)
    with pytest.raises(ConfigError, match=r"context_share must lie in \[0, 1\]; found -0.1"):
        ComposerConfig(context_share=-0.1)


@pytest.fixture(scope="module")
def quick_suite():
    from loragen.suites import get_suite

    suite = get_suite("digits-gen", quick=True)
    suite.base_model(show=False)
    return suite


def _tiny_config(**kw) -> ComposerConfig:
    return ComposerConfig(**({"rank": 2, "width": 16, "layers": 1, "heads": 2, "steps": 4, "batch_size": 8,
                              "checkpoint_every": 2, "lr": 1e-2} | kw))


def test_update_computed_once_per_condition(quick_suite, live_dit):
    gen = ComposerGenerator.fit(quick_suite, _tiny_config(), backbone=live_dit, show=False)
    seen = []
    gen.net.register_forward_hook(lambda mod, inp, out: seen.append(len(inp[0])))
    t = gen.tensors(gen.encode([quick_suite.label_conditions()[c] for c in (3, 3, 5, 3)]))
    assert seen == [2]  # two distinct conditions in a batch of four
    b = t["blocks.0.attn.q.lora_B"]
    assert torch.equal(b[0], b[1]) and torch.equal(b[0], b[3]) and not torch.equal(b[0], b[2])


def test_fit_resumes_after_an_interruption(quick_suite, tmp_path, monkeypatch):
    """An interrupted fit restarts from its last saved state and ends with the uninterrupted fit's weights."""
    cfg = _tiny_config()
    whole = ComposerGenerator.fit(quick_suite, cfg, show=False)
    calls = {"n": 0}
    original = quick_suite.diffusion.training_loss

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(quick_suite.diffusion, "training_loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        ComposerGenerator.fit(quick_suite, cfg, out=tmp_path / "gen", show=False)
    assert (tmp_path / "gen" / STATE_FILE).exists()
    calls["n"] = -100
    resumed = ComposerGenerator.fit(quick_suite, cfg, out=tmp_path / "gen", show=False)
    assert calls["n"] == -98  # steps 3 and 4 only
    assert not (tmp_path / "gen" / STATE_FILE).exists()
    for (k, v), w in zip(whole.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k
    loaded = ComposerGenerator.load(tmp_path / "gen")
    cond = loaded.encode(quick_suite.label_conditions())
    for k, v in resumed.tensors(cond).items():
        assert torch.equal(v, loaded.tensors(cond)[k])
    # a leftover state of another configuration is refused, not silently reused
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        ComposerGenerator.fit(quick_suite, cfg, out=tmp_path / "other", show=False)
    with pytest.raises(LoragenError, match="belongs to another training run"):
        ComposerGenerator.fit(quick_suite, _tiny_config(rank=4), out=tmp_path / "other", show=False)



def test_load_accepts_the_old_alpha_key(quick_suite, live_dit, tmp_path):
    """composer.json written before the context share was renamed (issue 9) names it `alpha`; it still loads."""
    import json

    from loragen.generators.composer.generator import CONFIG_FILE

    gen = ComposerGenerator.fit(quick_suite, _tiny_config(context_share=0.5), backbone=live_dit, out=tmp_path, show=False)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["config"]["alpha"] = meta["config"].pop("context_share")
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    loaded = ComposerGenerator.load(tmp_path)
    assert loaded.config == gen.config and loaded.config.context_share == 0.5

def test_static_control_ignores_the_condition(quick_suite, live_dit):
    gen = ComposerGenerator.fit(quick_suite, _tiny_config(generator="static"), backbone=live_dit, show=False)
    t = gen.tensors(gen.encode(quick_suite.label_conditions()[:3]))
    b = t["blocks.1.attn.v.lora_B"]
    assert torch.equal(b[0], b[2]) and b.abs().sum() > 0  # trained away from B = 0, the same for every class


def test_grouped_sampling_matches_the_per_sample_path(quick_suite, live_dit):
    """ComposerGenerator.sample (sorted groups, one update per condition) == every sample under its own copy of its
    condition's update. Labels 9, 9, 3 are already in group order, so both draw the same noise per sample."""
    gen = ComposerGenerator.fit(quick_suite, _tiny_config(lr=1e-1), backbone=live_dit, show=False)
    labels = torch.tensor([9, 9, 3])
    grouped = gen.sample(quick_suite, live_dit, labels, steps=3, seed=1)
    conds = quick_suite.label_conditions()
    with torch.no_grad(), gen.applied(live_dit, gen.encode([conds[9], conds[9], conds[3]])):
        reference = quick_suite.sample(live_dit, labels, 3, 1)
    assert torch.allclose(grouped, reference, atol=1e-5)
    assert not torch.allclose(grouped, quick_suite.sample(live_dit, labels, 3, 1), atol=1e-3)


def test_cli_quick_trains_the_quick_config_and_only_given_options_override_it(quick_suite, tmp_path):
    """`composer train --quick` used to train rank 8: the options' own defaults overrode the quick config (issue 9)."""
    from dataclasses import asdict, replace

    from typer.testing import CliRunner

    from loragen.cli import app
    from loragen.experiments.composer_bench import BenchConfig

    quick = BenchConfig.quick().composer
    r = CliRunner().invoke(app, ["composer", "train", "--out", str(tmp_path / "q"), "--quick"])
    assert r.exit_code == 0, r.output
    trained = ComposerGenerator.load(tmp_path / "q").config
    assert trained.rank == quick.rank and asdict(trained) == asdict(quick)
    r = CliRunner().invoke(app, ["composer", "train", "--out", str(tmp_path / "r2"), "--quick", "--rank", "2", "--lr", "0.01",
                                 "--arch", "mlp", "--context-share", "0.5"])
    assert r.exit_code == 0, r.output
    assert asdict(ComposerGenerator.load(tmp_path / "r2").config) == asdict(replace(quick, rank=2, lr=0.01, generator="mlp",
                                                                                    context_share=0.5))


def test_per_class_control_learns_one_update_per_class(quick_suite, live_dit, tmp_path):
    """The per-class LoRA (issue 9): distinct classes get distinct trained updates, a class never in a batch keeps
    B = 0 (no update at all), and save -> load gives the same updates."""
    cfg = _tiny_config(generator="per-class", steps=6)
    gen = ComposerGenerator.fit(quick_suite, cfg, backbone=live_dit, out=tmp_path / "pc", show=False, labels=[2, 5])
    conds = quick_suite.label_conditions()
    t = gen.tensors(gen.encode([conds[2], conds[5], conds[2], conds[7]]))
    b = t["blocks.0.attn.q.lora_B"]
    assert torch.equal(b[0], b[2]) and not torch.allclose(b[0], b[1])  # per class, not per sample
    assert b[0].abs().sum() > 0 and b[1].abs().sum() > 0 and torch.count_nonzero(b[3]) == 0
    assert not torch.equal(t["blocks.0.attn.q.lora_A"][0], t["blocks.0.attn.q.lora_A"][1])  # each class its own A
    loaded = ComposerGenerator.load(tmp_path / "pc")
    assert loaded.config == cfg
    cond = loaded.encode(conds)
    for k, v in gen.tensors(cond).items():
        assert torch.equal(v, loaded.tensors(cond)[k]), k


def test_controls_see_the_same_batches_and_noise(quick_suite, live_dit, monkeypatch):
    """Equal effort: Composer and both controls trained with one seed are shown the same images, labels and noise
    draws at every step."""
    seen = {}
    original = quick_suite.diffusion.training_loss

    def recording(model, x, y, generator):
        seen[name].append((x, y, generator.get_state()))
        return original(model, x, y, generator=generator)

    monkeypatch.setattr(quick_suite.diffusion, "training_loss", recording)
    for name in ("transformer", "static", "per-class"):
        seen[name] = []
        ComposerGenerator.fit(quick_suite, _tiny_config(generator=name), backbone=live_dit, show=False)
    for name in ("static", "per-class"):
        assert len(seen[name]) == 4
        for (x, y, g), (x0, y0, g0) in zip(seen[name], seen["transformer"]):
            assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(g, g0)


def test_per_class_needs_one_hot_class_conditions():
    from loragen.errors import ConditionError
    from loragen.generators.composer.per_class_lora import PerClassLoRA

    with pytest.raises(ConfigError, match="needs encoder 'class'; found 'text'"):
        ComposerConfig(generator="per-class", encoder="text")
    net = PerClassLoRA(classes=4, blocks=2, rows=3, cols=5, rank=2)
    a, b = net(torch.eye(4)[[1, 3, 1]])
    assert a.shape == (3, 2, 2, 5) and b.shape == (3, 2, 3, 2) and torch.equal(a[0], a[2]) and torch.count_nonzero(b) == 0
    assert torch.equal(a[1], net.a[3])
    for bad in (torch.eye(5)[[1]], torch.tensor([[0.5, 0.5, 0.0, 0.0]]), torch.zeros(1, 4)):
        with pytest.raises(ConditionError, match=r"one-hot class conditions \(C, 4\)"):
            net(bad)
