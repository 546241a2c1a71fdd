"""The hyper generator: a condition -> LoRA in one pass, trained through the task loss or by reconstruction."""

import json
from dataclasses import replace

import pytest
import torch

from loragen.adapters.layout import LoraLayout
from loragen.conditions import Condition, ImageSetEncoder
from loragen.errors import ConditionError, ConfigError, LoragenError
from loragen.generators import load_generator
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.generators.hyper.items import _EXAMPLE_CACHE, ConditionItems, _bf16_copy, resolve_precision
from loragen.generators.hyper.network import HyperNetwork
from loragen.suites import get_suite
from loragen.suites.text_topics import fused_qkv
from tests.test_pdiff import _toy_zoo

TINY = dict(width=32, cond_dim=16, module_dim=8, tasks_per_step=3, examples_per_task=16, checkpoint_every=20)


@pytest.fixture(scope="module")
def suite():
    return get_suite("digits-domains", n_tasks=5, n_extrapolation=1)


def test_fresh_network_is_the_base_model_and_keeps_whole_modules(tiny):
    layout = LoraLayout.from_model(tiny, ["lin0"], rank=2, alpha=4.0, modules_to_save=["lin1"])
    net = HyperNetwork(layout, item_dim=5, width=16, cond_dim=8, module_dim=4,
                       full_init={"lin1.weight": tiny.lin1.weight.detach(), "lin1.bias": tiny.lin1.bias.detach()})
    out = net(torch.randn(3, 7, 5))
    assert out["lin0.lora_A"].shape == (3, 2, 10) and out["lin0.lora_A"].abs().sum() > 0
    assert out["lin0.lora_B"].shape == (3, 20, 2) and out["lin0.lora_B"].abs().max() == 0  # ΔW = 0 at init
    assert out["lin1.weight"].shape == (3, 3, 20) and out["lin1.bias"].shape == (3, 3)
    assert torch.allclose(out["lin1.weight"][0], tiny.lin1.weight, atol=0.05)  # the head starts at the base head
    assert layout.flatten({k: v[0] for k, v in out.items()}).numel() == layout.numel


def test_prototype_bias_ranks_classes_by_euclidean_distance_to_their_centroids(tiny):
    """With proto_bias the head's prototype part is s·c_k·f − s·m·‖c_k‖²/2: for features of norm m it ranks classes
    as −‖f − m·c_k‖² does, so a short centroid (a diffuse class) is no longer at a disadvantage."""
    layout = LoraLayout.from_model(tiny, ["lin0"], rank=2, alpha=4.0, modules_to_save=["lin1"])
    kw = dict(item_dim=5, width=16, cond_dim=8, module_dim=4, proto_module="lin1", proto_scale=20.0 / 4.0)  # m = 4
    torch.manual_seed(0)
    plain = HyperNetwork(layout, **kw)
    torch.manual_seed(0)
    biased = HyperNetwork(layout, **kw, proto_bias=True)
    items, proto = torch.randn(2, 7, 5), torch.randn(2, 3, 20)
    p, b = plain(items, proto), biased(items, proto)
    s = plain.proto_log_scale.exp()
    assert torch.allclose(b["lin1.weight"], p["lin1.weight"])
    assert torch.allclose(b["lin1.bias"] - p["lin1.bias"], -s * 4.0 / 2 * proto.square().sum(-1), atol=1e-5)
    f = 4.0 * torch.nn.functional.normalize(torch.randn(20), dim=0)  # a feature of norm m
    logits = s * proto[0] @ f - s * 4.0 / 2 * proto[0].square().sum(-1)
    assert logits.argmax() == (-(f - 4.0 * proto[0]).square().sum(-1)).argmax()
    state = HyperNetwork(layout, **{**kw, "proto_scale": 1.0}, proto_bias=True)
    state.load_state_dict(biased.state_dict())  # m travels with the weights
    assert state.proto_feature_norm.item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="needs a prototype module"):
        HyperNetwork(layout, item_dim=5, width=16, cond_dim=8, module_dim=4, proto_bias=True)


def test_set_encoder_pools_before_its_last_linear_exactly_as_after(tiny):
    """embed() averages over the K items before φ's last Linear (cheaper); that must equal DeepSets' mean of φ(x_k),
    and a condition's embedding must not depend on the order of its items."""
    layout = LoraLayout.from_model(tiny, ["lin0"], rank=2, alpha=4.0)
    net = HyperNetwork(layout, item_dim=5, width=16, cond_dim=8, module_dim=4)
    x = torch.randn(3, 7, 5)
    want = net.set_mlp(net.item_mlp(x).mean(1))  # (3, 8)
    assert torch.allclose(net.embed(x), want, atol=1e-5)
    assert torch.allclose(net.embed(x[:, torch.randperm(7)]), want, atol=1e-5)
    assert not torch.allclose(net.embed(x[:, :3]), want, atol=1e-3)  # fewer items: another condition


def test_image_features_are_pixels_and_central_moments():
    """The moments come from one matmul of raw moments; they must equal the textbook central moments."""
    x = torch.rand(4, 9, 7) ** 3  # (K, H, W), uneven ink
    k, h, w = x.shape
    ys, xs = torch.linspace(-1, 1, h).view(1, h, 1), torch.linspace(-1, 1, w).view(1, 1, w)
    mass = x.sum((1, 2))
    cy, cx = (x * ys).sum((1, 2)) / mass, (x * xs).sum((1, 2)) / mass
    dy, dx = ys - cy.view(k, 1, 1), xs - cx.view(k, 1, 1)
    myy, mxx, mxy = [(x * a * b).sum((1, 2)) / mass for a, b in ((dy, dy), (dx, dx), (dx, dy))]
    phi2 = torch.atan2(2 * mxy, mxx - myy)
    want = torch.cat([x.reshape(k, -1), 4.0 * torch.stack([mass / (h * w), cy, cx, myy, mxx, mxy, phi2.cos(), phi2.sin()], 1)], 1)
    assert torch.allclose(ImageSetEncoder.image_features(x), want, atol=1e-5)
    rotated = ImageSetEncoder.image_features(x.transpose(1, 2).flip(2))  # a quarter turn: the principal axis turns too
    assert torch.allclose(rotated[:, -2:], -want[:, -2:], atol=1e-4)  # 2φ moves by 180°: cos 2φ and sin 2φ change sign


def test_task_objective_learns_the_training_tasks(suite, tmp_path):
    """Through the base model's loss alone (no zoo), generated adapters beat the base model on the training tasks."""
    tasks = [t.name for t in suite.tasks() if t.params["where"] == "inside"]
    gen = HyperGenerator.fit(HyperConfig(steps=150, lr=3e-3, **TINY), suite=suite, tasks=tasks, out=tmp_path / "g", show=False)
    base = suite.base_model()
    gains = []
    for t in tasks:
        data = suite.data(t, "train")
        (adapter,) = gen.generate(suite.condition(t), 1)
        from loragen.adapters.apply import merged

        with merged(base, adapter):
            acc = suite.accuracy(base, data)
        gains.append(acc - suite.accuracy(base, data))
    assert min(gains) > 10.0, gains
    meta = json.loads((tmp_path / "g" / "generator.json").read_text())
    assert meta["generator"] == "hyper" and meta["suite"] == "digits-domains" and meta["tasks"] == tasks
    assert meta["peft"]["base_model_name_or_path"] == "loragen:digits-domains"
    back = load_generator(tmp_path / "g")  # any generator from its folder
    cond = suite.condition(tasks[0], draw=3)
    assert isinstance(back, HyperGenerator) and torch.equal(back.generate_vectors(cond, 3, seed=1), gen.generate_vectors(cond, 3, seed=1))
    assert torch.allclose(gen.generate_batch([cond, suite.condition(tasks[1])])[0], gen.generate_vectors(cond, 1)[0], atol=1e-5)
    many = gen.generate_vectors(cond, 3, seed=1)
    assert not torch.equal(many[0], many[1])  # samples after the first come from bootstrap resamples of the exemplars
    assert gen.generate(cond, 1)[0].meta["peft"]["base_model_name_or_path"] == "loragen:digits-domains"
    # the network runs in inference mode; what callers get are ordinary tensors a warm start can train from
    warm = gen.generate(cond, 2)[0].tensors["fc1.lora_A"]
    assert not warm.is_inference() and not gen.generate_vectors(cond, 1).is_inference()
    (warm.requires_grad_() * 2).sum().backward()
    assert torch.equal(warm.grad, torch.full_like(warm, 2.0))


def test_interrupted_fit_resumes_to_the_same_weights(suite, tmp_path, killed_after_save):
    tasks = [t.name for t in suite.tasks()][:3]
    cfg = HyperConfig(steps=50, **TINY)
    straight = HyperGenerator.fit(cfg, suite=suite, tasks=tasks, out=tmp_path / "a", show=False)
    with killed_after_save(1):
        HyperGenerator.fit(cfg, suite=suite, tasks=tasks, out=tmp_path / "b", show=False)
    assert (tmp_path / "b" / "train_state.safetensors").exists()
    with pytest.raises(LoragenError, match="belongs to another training run"):  # other tasks: the state is not reused
        HyperGenerator.fit(cfg, suite=suite, tasks=tasks[:2], out=tmp_path / "b", show=False)
    resumed = HyperGenerator.fit(cfg, suite=suite, tasks=tasks, out=tmp_path / "b", show=False)
    assert resumed.fit_summary["resumed_at"] == 20 and not (tmp_path / "b" / "train_state.safetensors").exists()
    for k, v in straight.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k


def test_recon_objective_moves_toward_the_zoo(tmp_path, tiny_layout):
    zoo = _toy_zoo(tmp_path / "z", tiny_layout, n_tasks=3)
    cfg = HyperConfig(objective="recon", steps=300, lr=3e-3, k_exemplars=4, **TINY)
    gen = HyperGenerator.fit(cfg, zoo=zoo, show=False)
    for t in zoo.tasks():
        want = zoo.adapters(t)[-1]
        got = gen.generate(zoo.condition(t).subset(4, torch.Generator().manual_seed(0)), 1)[0]
        for m in tiny_layout.modules:
            err = (got.delta(m) - want.delta(m)).norm() / want.delta(m).norm()
            assert err < 0.5, (t, m.name, float(err))


def test_recon_warm_start_fits_the_zoo_first_then_the_task_loss_and_resumes_across_stages(suite, tmp_path, killed_after_save):
    """recon_warm_steps: the task fit starts from the zoo's adapters (ΔW matched first), then trains through the task
    loss; a run killed in its task stage resumes there (the recon stage is not redone) to the same weights."""
    from loragen.adapters.apply import merged
    from loragen.finetune import FinetuneConfig
    from loragen.zoo.collect import collect

    tasks = [t.name for t in suite.tasks() if t.params["where"] == "inside"][:3]
    zoo, _ = collect(suite, tmp_path / "zoo", tasks, FinetuneConfig(steps=60, keep_last=2, save_every=20), show=False)
    warm = HyperGenerator.fit(HyperConfig(recon_warm_steps=300, steps=1, lr=3e-3, **TINY), suite=suite, tasks=tasks,
                              zoo=zoo, show=False)
    assert set(warm.fit_summary["stages"]) == {"recon", "task"} and warm.fit_summary["stages"]["recon"]["steps"] == 300
    base = suite.base_model()
    for t in tasks:
        (got,) = warm.generate(suite.condition(t), 1)
        want = zoo.best_adapter(t)
        for m in zoo.layout.modules:  # after one task step the adapters are still near the zoo's (~0.25 here), not ΔW = 0
            assert (got.delta(m) - want.delta(m)).norm() < 0.4 * want.delta(m).norm(), (t, m.name)
        data = suite.data(t, "val")
        plain = suite.accuracy(base, data)
        with merged(base, got):
            assert suite.accuracy(base, data) > plain + 10.0, t  # and they adapt the base model like them

    cfg = HyperConfig(recon_warm_steps=40, steps=40, **TINY)  # states at steps 20 (recon), 60 (task)
    straight = HyperGenerator.fit(cfg, suite=suite, tasks=tasks, zoo=zoo, out=tmp_path / "a", show=False)
    with killed_after_save(2):
        HyperGenerator.fit(cfg, suite=suite, tasks=tasks, zoo=zoo, out=tmp_path / "b", show=False)
    resumed = HyperGenerator.fit(cfg, suite=suite, tasks=tasks, zoo=zoo, out=tmp_path / "b", show=False)
    assert resumed.fit_summary["stages"]["recon"]["resumed_at"] == 40 and resumed.fit_summary["resumed_at"] == 20
    for k, v in straight.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k


def test_bad_configs_and_conditions(suite, tmp_path, tiny_layout):
    with pytest.raises(ConfigError, match="objective must be"):
        HyperConfig(objective="distill")
    with pytest.raises(ConfigError, match="encoder must be one of"):
        HyperConfig(encoder="onehot")
    with pytest.raises(ConfigError, match="expected a zoo"):
        HyperGenerator.fit(HyperConfig(objective="recon"), suite=suite, show=False)
    with pytest.raises(ConfigError, match="expected a zoo"):
        HyperGenerator.fit(HyperConfig(recon_warm_steps=5), suite=suite, show=False)
    with pytest.raises(ConfigError, match="recon_warm_steps must be >= 0, and used with the task objective"):
        HyperConfig(objective="recon", recon_warm_steps=5)
    with pytest.raises(ConfigError, match="expected a suite"):
        HyperGenerator.fit(HyperConfig(), zoo=_toy_zoo(tmp_path / "z", tiny_layout), show=False)
    gen = HyperGenerator.fit(HyperConfig(steps=2, **TINY), suite=suite, tasks=[suite.tasks()[0].name], show=False)
    with pytest.raises(ConditionError, match=r"needs images of shape \(K, H, W\)"):
        gen.generate(Condition(task="x", text="a description"))
    with pytest.raises(ConditionError, match="trained on 264"):
        gen.generate(Condition(task="x", images=torch.rand(4, 8, 8)))
    with pytest.raises(LoragenError, match="expected a trained generator"):
        load_generator(tmp_path / "nowhere")


def test_labelled_examples_parse_quoted_and_bare_lines():
    c = Condition(task="t", examples=["'i love it -> really' -> yes", "so so -> no", '"a \\"b\\"" -> yes'])
    assert c.labelled_examples() == [("i love it -> really", "yes"), ("so so", "no"), ('a "b"', "yes")]
    with pytest.raises(ConditionError, match="must read '<text> -> <label>'; found 'no arrow'"):
        Condition(task="t", examples=["no arrow"]).labelled_examples()


def test_prototypes_are_class_means_of_normalised_features():
    f = torch.tensor([[[3.0, 4.0, 1, 0], [0.0, 2.0, 0, 1], [6.0, 8.0, 1, 0]], [[1.0, 0.0, 1, 0], [0.0, 1.0, 1, 0], [1.0, 1.0, 1, 0]]])
    p = ConditionItems.prototypes(f, n_classes=2)  # (B=2, C=2, F=2)
    assert torch.allclose(p[0, 0], torch.tensor([0.6, 0.8])) and torch.allclose(p[0, 1], torch.tensor([0.0, 1.0]))
    # the second condition has no example of class 1: its prototype is the mean of all examples
    assert torch.allclose(p[1, 1], p[1, 0]) and torch.allclose(p[1, 0], torch.tensor([1 + 2**-0.5, 1 + 2**-0.5]) / 3)


def test_examples_encoder_builds_a_classifier_for_a_task_no_training_task_touches(tmp_path, monkeypatch):
    """The examples encoder reads labelled examples through the base model and puts class prototypes in the head: an
    unseen pair of topics is classified well above the base model after a few steps on other topics."""
    from loragen.adapters.apply import merged

    s = get_suite("text-topics", k_exemplars=16)
    train = ["pair-coding-vs-literature", "topic-sports", "topic-money"]
    unseen = next(t.name for t in s.tasks() if t.params["kind"] == "pair" and not set(t.params["sources"]) & {"coding", "literature", "sports", "money"})
    cfg = HyperConfig(encoder="examples", rank=2, lora_alpha=4.0, k_exemplars=16, steps=3, **TINY)
    gen = HyperGenerator.fit(cfg, suite=s, tasks=train, out=tmp_path / "g", show=False)
    base, test = s.base_model(), s.data(unseen, "test")
    (adapter,) = gen.generate(s.condition(unseen), 1)
    with merged(base, adapter):
        acc = s.accuracy(base, test)
    assert acc > s.accuracy(base, test) + 10.0, (unseen, acc)
    back = HyperGenerator.load(tmp_path / "g")  # the suite is rebuilt from its recorded name on first use
    # the same up to float rounding: an example's features depend on the other texts read with it (the shapes of the
    # matrix products), and some of this condition's examples were read in a training pool (negatives of topic-sports
    # and topic-money)
    assert torch.allclose(back.generate_vectors(s.condition(unseen), 1), gen.generate_vectors(s.condition(unseen), 1), atol=1e-5)
    off = HyperGenerator(replace(cfg, prototype_head=False), gen.layout, train, gen.buffers["item_mean"].numel(), s)
    assert off.proto_module is None and not hasattr(off.net, "proto_log_scale")
    with pytest.raises(ConditionError, match="needs labelled few-shot examples"):
        gen.generate(Condition(task="x", text="about nothing"))
    with pytest.raises(ConditionError, match="need labels \\['no', 'yes'\\]; found \\['maybe'\\]"):
        gen.generate(Condition(task="x", examples=["'hi' -> maybe"]))
    # the examples encoder's base-model pass in bfloat16: close to fp32, not the same, cached apart
    cond = s.condition(unseen)
    gen.items.clear_cache()
    fp32 = gen.items(cond)
    gen.items.precision = "bf16"
    bf16 = gen.items(cond)
    assert not torch.equal(bf16, fp32) and torch.allclose(bf16, fp32, atol=0.05)
    assert torch.nn.functional.cosine_similarity(bf16, fp32).min() > 0.999
    gen.items.precision = "fp32"
    assert torch.equal(gen.items(cond), fp32)  # the fp32 rows were not overwritten by the bf16 ones
    # auto: the bf16 rows where the CPU has bf16 instructions, the fp32 rows where it has not
    gen.items.precision = "auto"
    for native, want in ((True, bf16), (False, fp32)):
        for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, check, lambda native=native: native)
        assert resolve_precision("auto") == ("bf16" if native else "fp32") and resolve_precision("fp32") == "fp32"
        assert torch.equal(gen.items(cond), want)
    # bf16 asked for on a CPU that only emulates it (AVX2): served as asked, with a warning that says what to pass
    emulated = ConditionItems("examples", s, gen.items.head, precision="bf16")
    with pytest.warns(UserWarning, match="without bfloat16 instructions: torch emulates it.*'auto' picks fp32 here"):
        assert torch.equal(emulated(cond), bf16)
    monkeypatch.undo()
    gen.items.precision = "fp32"
    with pytest.raises(ConfigError, match="condition precision must be one of"):
        ConditionItems("examples", s, "head", precision="fp16")
    # a condition's examples are padded to their longest, not to the data's MAX_LEN, and read without padding: the
    # model gives the same logits as on the data's padded inputs
    ex = s.example_batch(cond)
    full = s.encode_texts([x for x, _ in cond.labelled_examples()])
    assert ex.x.shape[-1] == int(ex.x[:, 1].sum(1).max()) < full.shape[-1]
    with torch.no_grad():
        want = s.forward(base, full)
        assert torch.allclose(s.forward(base, ex.x), want, atol=1e-5)
        assert torch.allclose(s.example_forward(base, ex.x), want, atol=1e-5)
        assert torch.allclose(s.example_forward(base, torch.cat([ex.x, ex.x])), torch.cat([want, want]), atol=1e-5)
        assert torch.allclose(base(ex.x, unpadded=True), want, atol=1e-5)
        # query, key and value run as one stacked linear layer: restacked after a weight changes in place, and not
        # used where a hook (per-sample LoRA) must see the modules' own calls
        attn = base.encoder.encoder.layer[0].attention.self
        w, _ = fused_qkv(attn)
        assert fused_qkv(attn)[0] is w and torch.equal(w, torch.cat([attn.query.weight, attn.key.weight, attn.value.weight]))
        attn.value.weight.add_(0.5)
        assert fused_qkv(attn)[0] is not w
        assert torch.allclose(base(ex.x, unpadded=True), s.forward(base, full), atol=1e-5)
        attn.value.weight.sub_(0.5)
        handle = attn.query.register_forward_hook(lambda m, args, out: 2 * out)
        try:
            assert fused_qkv(attn) is None
            assert torch.allclose(base(ex.x, unpadded=True), s.forward(base, full), atol=1e-5)
        finally:
            handle.remove()
        assert torch.allclose(base(ex.x, unpadded=True), want, atol=1e-5)
        # padding beyond the longest text, and a text of no tokens (pooled to zeros), change nothing for the others
        wide = torch.cat([full, torch.zeros(1, 2, full.shape[-1], dtype=full.dtype)])
        got = base.unpadded_pooled(wide)
        assert torch.allclose(got[:-1], base.pooled(full), atol=1e-5) and torch.equal(got[-1], torch.zeros_like(got[-1]))
    # condition_precision in the config: training pools and generation both read examples in bf16
    with pytest.raises(ConfigError, match="condition_precision must be one of"):
        HyperConfig(encoder="examples", condition_precision="fp16")
    gen.items.clear_cache()
    half = HyperGenerator.fit(replace(cfg, condition_precision="bf16"), suite=s, tasks=train, show=False)
    assert half.items.precision == "bf16" and HyperGenerator.load(tmp_path / "g").items.precision == "fp32"
    assert {p for p, _ in _EXAMPLE_CACHE[base]} == {"bf16"}  # the fit's pools were read in bf16 only
    assert torch.allclose(half.items(cond), bf16, atol=0.02)  # as before, up to what the texts read alongside change
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        unpadded = _bf16_copy(base).unpadded_pooled(ex.x).float()
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(unpadded, base.pooled(full)).min() > 0.999
    assert not torch.equal(half.buffers["item_mean"], gen.buffers["item_mean"])


def test_compiled_examples_pass_matches_the_eager_one():
    """The compiled path (torch.compile, dynamic shapes) gives what the eager one does, for conditions of other sizes
    without a graph per size; `ConditionItems.compiled` switches a generator's condition items to it."""
    from torch._dynamo.utils import counters

    s = get_suite("text-topics", k_exemplars=16)
    base = s.base_model()
    conds = [s.condition(t.name) for t in s.tasks()[:3]]
    g = torch.Generator().manual_seed(0)
    batches = [s.example_batch(c).x for c in (conds[0], conds[1].subset(9, g), conds[2].subset(5, g), conds[0].subset(3, g))]
    assert len({tuple(x.shape) for x in batches}) >= 3  # other numbers of texts and lengths
    with torch.no_grad():
        for x in batches:
            want = s.example_forward(base, x)
            assert torch.allclose(s.example_forward(base, x, compiled=True), want, atol=1e-4)
    assert 1 <= counters["stats"]["unique_graphs"] <= 2  # compiled, and with dynamic shapes: not one graph per size
    # the condition items a generator reads, switched to the compiled pass: fp32 as eager; bf16 close to its eager rows
    items = ConditionItems("examples", s, "classifier")
    for precision, atol in (("fp32", 1e-4), ("bf16", 0.02)):
        items.precision, items.compiled = precision, False
        items.clear_cache()
        eager = items(conds[1])
        items.compiled = True
        items.clear_cache()
        got = items(conds[1])
        assert got.shape == eager.shape and torch.allclose(got, eager, atol=atol), precision
        assert torch.nn.functional.cosine_similarity(got, eager).min() > 0.999


def test_examples_encoder_needs_a_classification_head(suite):
    with pytest.raises(ConfigError, match="the one module adapters carry whole; found 0"):
        HyperGenerator.fit(HyperConfig(encoder="examples", steps=2, **TINY), suite=suite, show=False)
