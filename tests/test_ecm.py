"""digits-control and ECM (issue 10): the VAR backbone's invariants, the control module's, controls and their errors,
the CLI, and the benchmark's output schema, all on the tiny configuration."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from loragen.cli import app
from loragen.errors import ConditionError, ConfigError
from loragen.generators.ecm.config import ECMConfig
from loragen.generators.ecm.control_module import ECMControl, adapter_positions
from loragen.generators.ecm.trained_control import (_objective, expected_tokens, forward_passes, last_scale_probs, load_control,
                                                    token_weights, train_control)
from loragen.suites.digits_control import DigitsControl
from loragen.suites.spatial_controls import check_control, control_map, control_metrics, load_control as load_control_map
from loragen.suites.var import VAR, VARConfig, block_causal_mask, prefix_lengths
from loragen.suites.var_sampling import SamplingConfig, sample_codes, temperature_schedule
from loragen.suites.var_tokenizer import MultiScaleVQ, TokenizerConfig

TINY = ECMConfig(steps=6, batch_size=8, adapters=2, width=16, encoder_width=8)


@pytest.fixture(scope="module")
def suite():
    s = DigitsControl(quick=True)
    s.networks(show=False)
    return s


def test_block_causal_mask_lets_a_token_see_its_own_and_earlier_scales():
    m = block_causal_mask((1, 2))  # tokens: [s0] [s1 s1 s1 s1]
    assert m.shape == (5, 5)
    assert m[0].tolist() == [True, False, False, False, False]
    assert m[1:].all()  # every scale-1 token sees scale 0 and all of scale 1
    assert prefix_lengths((1, 2, 3)) == [0, 1, 5, 14]


def test_the_logits_of_a_prefix_of_scales_are_those_of_the_full_sequence():
    """What makes early-centric sampling exact: a cut after scale k changes no logit of scales <= k."""
    torch.manual_seed(0)
    tc = TokenizerConfig(channels=4, codebook=8, scales=(1, 2, 3), hidden=8)
    var = VAR(VARConfig(width=16, depth=2, heads=2, mlp_ratio=2), tc).eval()
    for block in var.blocks:  # adaLN-Zero starts every block as the identity; make them act
        torch.nn.init.normal_(block.ada[1].weight, std=0.3)
    inputs, labels = torch.randn(3, tc.tokens - 1, 4), torch.tensor([0, 4, 10])
    full = var(inputs, labels)  # (3, 14, V)
    assert full.shape == (3, 14, 8)
    for T in (1, 5):
        assert torch.allclose(var(inputs[:, : T - 1], labels), full[:, :T], atol=1e-5)
    changed = inputs.clone()
    changed[:, 4:] += 1.0  # scale-2 inputs: scale 0 and 1 logits must not move, scale-2 logits must
    after = var(changed, labels)
    assert torch.allclose(after[:, :5], full[:, :5], atol=1e-5) and not torch.allclose(after[:, 5:], full[:, 5:])


def test_tokenizer_teacher_inputs_are_what_sampling_feeds_back():
    torch.manual_seed(0)
    tok = MultiScaleVQ(TokenizerConfig(channels=4, codebook=8, scales=(1, 2, 4), hidden=8)).eval()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    codes = tok.encode(x)
    assert [c.shape for c in codes] == [(2, 1), (2, 4), (2, 16)]
    teacher = tok.teacher_inputs(codes)  # (B, L - 1, C)
    assert teacher.shape == (2, 20, 4)
    f_hat, fed = 0, []
    for k in range(2):  # the sampler's loop with the encoded codes
        f_hat = f_hat + tok.scale_contribution(k, codes[k])
        fed.append(tok.next_input(f_hat, k + 1))
    assert torch.allclose(torch.cat(fed, 1), teacher)
    assert tok.decode(codes).shape == x.shape and tok.decode(codes).abs().max() <= 1.0


def test_sampling_settings_are_checked_and_greedy_sampling_ignores_the_seed(suite):
    tok, var = suite.networks()
    with pytest.raises(ValueError, match="one temperature per scale"):
        sample_codes(var, tok, torch.tensor([1]), var.null_class, SamplingConfig(temperatures=(1.0, 0.5)))
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        SamplingConfig(temperatures=0.0)
    assert temperature_schedule(4, 1.0, 0.6, 2) == (1.0, 1.0, 0.6, 0.6)
    greedy = SamplingConfig(top_k=1)
    a = sample_codes(var, tok, torch.tensor([3, 7]), var.null_class, greedy, torch.Generator().manual_seed(0))
    b = sample_codes(var, tok, torch.tensor([3, 7]), var.null_class, greedy, torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [c.shape[1] for c in a] == [p * p for p in tok.config.scales]


def test_controls_and_their_metrics():
    digits = torch.full((2, 1, 16, 16), -1.0)
    digits[:, :, 4:12, 6:10] = 1.0  # a bar
    edges, mask = control_map("edges", digits), control_map("mask", digits)
    assert edges.shape == mask.shape == (2, 1, 16, 16) and set(edges.unique().tolist()) == {0.0, 1.0}
    assert control_map("edges", torch.full((1, 1, 16, 16), -1.0)).sum() == 0  # a blank image has no edges
    assert control_metrics("edges", edges, digits)["control_f1"] == pytest.approx(100.0)
    assert control_metrics("edges", edges, torch.full_like(digits, -1.0))["control_f1"] == 0.0
    m = control_metrics("mask", mask, digits)
    assert m["iou"] == pytest.approx(100.0) and m["rmse"] < 0.5
    with pytest.raises(ValueError, match="control kind must be one of"):
        control_map("depth", digits)


def test_bad_controls_get_one_line_errors(tmp_path):
    from PIL import Image

    with pytest.raises(ConditionError, match="16×16 pixels; found 8×8"):
        check_control(torch.zeros(1, 1, 8, 8), 16)
    with pytest.raises(ConditionError, match="1 channel.*found shape \\(1, 3, 16, 16\\)"):
        check_control(torch.zeros(1, 3, 16, 16), 16)
    with pytest.raises(ConditionError, match="finite; found NaN"):
        check_control(torch.full((16, 16), float("nan")), 16)
    with pytest.raises(ConditionError, match="values lie in \\[0, 1\\]"):
        check_control(torch.full((16, 16), 2.0), 16)
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ConditionError, match="1 channel \\(greyscale\\); found 3"):
        load_control_map(tmp_path / "rgb.png", 16)
    grey = np.zeros((16, 16), dtype=np.uint8)
    grey[3:9, 5] = 255
    Image.fromarray(grey).save(tmp_path / "edges.png")
    c = load_control_map(tmp_path / "edges.png", 16)
    assert c.shape == (1, 1, 16, 16) and c.sum() == 6
    np.save(tmp_path / "c.npy", grey[None] / 255.0)
    assert torch.equal(load_control_map(tmp_path / "c.npy", 16), c)


def test_ecm_config_and_scale_sampling():
    with pytest.raises(ConfigError, match="scale_sampling must be one of"):
        ECMConfig(scale_sampling="late")
    with pytest.raises(ConfigError, match="control must be one of"):
        ECMConfig(control="depth")
    scales = (1, 2, 3, 4, 6, 8)
    with pytest.raises(ConfigError, match="cut_per must be one of"):
        ECMConfig(cut_per="step")
    early, uniform = last_scale_probs(ECMConfig(early_decay=0.7), 6), last_scale_probs(ECMConfig(scale_sampling="uniform"), 6)
    assert early.sum() == pytest.approx(1.0) and (early[:-1] > early[1:]).all()  # biased to early scales
    assert last_scale_probs(ECMConfig(early_decay=1.0), 6).tolist() == pytest.approx([1 / 6] * 6)  # every cut alike
    assert uniform.tolist() == [0, 0, 0, 0, 0, 1]
    assert expected_tokens(ECMConfig(scale_sampling="uniform"), scales) == 130
    assert expected_tokens(ECMConfig(early_decay=1.0), scales) == pytest.approx((1 + 5 + 14 + 30 + 66 + 130) / 6)
    assert expected_tokens(ECMConfig(early_decay=0.7), scales) < 0.3 * 130


def test_inverse_scale_weights_make_early_centric_steps_unbiased_for_the_whole_sequence():
    """Under "inverse" weighting, a step's expected loss over its random cut is the mean over all L tokens."""
    scales = (1, 2, 3, 4, 6, 8)
    starts = prefix_lengths(scales)
    ce = torch.rand(starts[-1])  # any per-token losses (L,)
    for config in (ECMConfig(early_decay=0.7, scale_weighting="inverse"), ECMConfig(early_decay=1.0, scale_weighting="inverse")):
        probs, w = last_scale_probs(config, 6), token_weights(config, scales)
        expected = sum(float(p) * float((w[: starts[k + 1]] * ce[: starts[k + 1]]).sum()) for k, p in enumerate(probs))
        assert expected / starts[-1] == pytest.approx(float(ce.mean()), rel=1e-5)
        assert w[-1] == pytest.approx(1 / float(probs[-1])) and w[0] == pytest.approx(1.0)  # scale 0 is always kept
    assert torch.equal(token_weights(ECMConfig(scale_sampling="uniform", scale_weighting="inverse"), scales), torch.ones(130))
    assert torch.equal(token_weights(ECMConfig(early_decay=0.7), scales), torch.ones(130))  # "none"
    with pytest.raises(ConfigError, match="scale_weighting must be one of"):
        ECMConfig(scale_weighting="sqrt")


def test_short_prefixes_share_one_forward_pass_and_every_image_is_in_exactly_one():
    lengths = torch.tensor([130, 1, 14, 30, 5, 130, 30, 66])
    passes = forward_passes(lengths, shared_upto=16)
    assert [T for T, _ in passes] == [14, 30, 66, 130]  # 1, 5 and 14 tokens share the 14-token pass
    assert torch.equal(sum(rows.int() for _, rows in passes), torch.ones(8, dtype=torch.int))
    assert all(bool((lengths[rows] <= T).all()) for T, rows in passes)
    assert [T for T, _ in forward_passes(lengths, shared_upto=0)] == [1, 5, 14, 30, 66, 130]
    assert [T for T, _ in forward_passes(torch.tensor([1, 5]))] == [5]


@pytest.mark.parametrize("cut_per,weighting", [("sample", "none"), ("batch", "none"), ("sample", "inverse")])
def test_a_training_step_loss_is_the_mean_token_loss_of_each_image_cut_at_its_last_scale(suite, cut_per, weighting):
    """The objective's forward passes (one per distinct cut; short prefixes share one, padded) give the loss of every
    image's own prefix, read from one full-sequence pass (exact under the block-causal mask); weighted per token under
    inverse weighting."""
    _, var = suite.networks()
    config = ECMConfig(**{**TINY.__dict__, "cut_per": cut_per, "early_decay": 1.0, "batch_size": 12, "scale_weighting": weighting})
    torch.manual_seed(0)
    module = ECMControl(config, var)
    with torch.no_grad():
        for p in module.parameters():  # away from the zero-initialised start, so the control matters
            p.add_(0.05 * torch.randn_like(p))
    loss = _objective(suite, config, module, var)(0, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, in the objective's order
    batch = suite.train_batch(torch.randint(0, len(suite.split("train").y), (12,), generator=g), config.augment, g)
    probs = last_scale_probs(config, len(var.scales))
    cuts = (torch.multinomial(probs, 12, replacement=True, generator=g) if cut_per == "sample"
            else torch.multinomial(probs, 1, generator=g).expand(12))
    labels = batch.labels.clone()
    labels[torch.rand(12, generator=g) < config.class_dropout] = var.null_class
    assert cut_per == "batch" or len(cuts.unique()) > 1
    with torch.no_grad():
        logits = module(var, batch.inputs, labels, control_map("edges", batch.images))  # (B, L, V)
    starts = prefix_lengths(var.scales)
    w = token_weights(config, var.scales)
    ce = [(torch.nn.functional.cross_entropy(logits[i, : starts[k + 1]], batch.codes[i, : starts[k + 1]], reduction="none")
           * w[: starts[k + 1]]).sum() for i, k in enumerate(cuts.tolist())]
    tokens = 12 * starts[-1] if weighting == "inverse" else sum(starts[k + 1] for k in cuts.tolist())
    assert loss.item() == pytest.approx(float(sum(ce) / tokens), rel=1e-4)
    assert weighting == "none" or w.max() > 1  # late scales weigh more
    assert adapter_positions(4, 3) == [0, 1, 3] and adapter_positions(4, 1) == [0]


def test_ecm_starts_as_the_backbone_and_never_changes_it(suite, tmp_path):
    _, var = suite.networks()
    data = suite.teacher("val")
    controls = control_map("edges", data.images[:4])
    module = ECMControl(TINY, var)
    with torch.no_grad():
        assert torch.allclose(module(var, data.inputs[:4], data.labels[:4], controls), var(data.inputs[:4], data.labels[:4]))
    before = {k: v.clone() for k, v in var.state_dict().items()}
    tc = train_control(suite, TINY, tmp_path / "ecm", show=False)
    assert all(torch.equal(before[k], v) for k, v in var.state_dict().items())  # the backbone is frozen
    assert tc.backbone is var
    with torch.no_grad():  # the trained module changes the backbone's outputs under a control
        assert not torch.allclose(tc.logits(data.inputs[:4], data.labels[:4], controls), var(data.inputs[:4], data.labels[:4]))
        again = load_control(tmp_path / "ecm", suite)
        assert torch.equal(again.logits(data.inputs[:4], data.labels[:4], controls),
                           tc.logits(data.inputs[:4], data.labels[:4], controls))
    assert train_control(suite, TINY, tmp_path / "ecm", show=False).fit == tc.fit  # a finished folder is reused


def test_shared_gated_ffn_has_fewer_parameters_and_full_finetune_trains_a_copy(suite, tmp_path):
    _, var = suite.networks()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    shared, separate = ECMControl(TINY, var), ECMControl(ECMConfig(**{**TINY.__dict__, "shared_ffn": False}), var)
    assert count(shared) < count(separate)
    before = {k: v.clone() for k, v in var.state_dict().items()}
    full = train_control(suite, ECMConfig(**{**TINY.__dict__, "method": "full_finetune", "scale_sampling": "uniform"}),
                         tmp_path / "full", show=False)
    assert full.backbone is not var and all(torch.equal(before[k], v) for k, v in var.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in full.backbone.state_dict().items())
    assert full.trainable_params > count(var) > count(shared)
    loaded = load_control(tmp_path / "full")
    assert all(torch.equal(a, b) for a, b in zip(loaded.backbone.state_dict().values(), full.backbone.state_dict().values()))


def test_cli_train_sample_and_bad_control(tmp_path):
    from PIL import Image

    runner = CliRunner()
    r = runner.invoke(app, ["base", "--suite", "digits-control", "--quick"])
    assert r.exit_code == 0 and "tokenizer codes used" in r.output, r.output
    r = runner.invoke(app, ["ecm", "train", "--out", str(tmp_path / "m"), "--quick", "--steps", "4", "--early-decay", "0.8",
                            "--cut-per", "batch", "--scale-weighting", "inverse"])
    assert r.exit_code == 0, r.output
    assert "trainable parameters" in r.output
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["ecm"]
    assert (saved["early_decay"], saved["cut_per"], saved["steps"], saved["scale_weighting"]) == (0.8, "batch", 4, "inverse")
    r = runner.invoke(app, ["ecm", "train", "--out", str(tmp_path / "m2"), "--quick", "--early-decay", "2.5"])
    assert r.exit_code != 0 and "early_decay must lie in (0, 2]; found 2.5" in r.output
    grey = np.zeros((16, 16), dtype=np.uint8)
    grey[3:12, 7] = 255
    Image.fromarray(grey).save(tmp_path / "c.png")
    r = runner.invoke(app, ["ecm", "sample", "--generator-dir", str(tmp_path / "m"), "--control", str(tmp_path / "c.png"),
                            "--plot", str(tmp_path / "g.png"), "--label", "1", "--n", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").stat().st_size > 0 and "control_f1" in r.output
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "small.png")
    r = runner.invoke(app, ["ecm", "sample", "--generator-dir", str(tmp_path / "m"), "--control", str(tmp_path / "small.png"),
                            "--plot", str(tmp_path / "g2.png"), "--label", "1"])
    assert r.exit_code == 2 and "16×16 pixels; found 8×8" in r.output and "Traceback" not in r.output


def test_bench_quick_writes_the_issue_schema(tmp_path):
    r = CliRunner().invoke(app, ["ecm", "bench", "--out", str(tmp_path / "b"), "--quick"])
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    methods = ("backbone", "full_finetune", "ecm", "ecm_separate_ffn", "ecm_uniform_scales", "ecm_constant_temperature")
    assert set(results["methods"]) == set(methods)
    for m in methods:
        assert {"control_f1", "fd", "class_acc", "trainable_params", "train_s_per_step"} <= set(results["methods"][m])
    assert results["sample_time_ratio"] > 0
    ecm, full = results["methods"]["ecm"], results["methods"]["full_finetune"]
    assert 0 < ecm["trainable_params"] < full["trainable_params"]
    assert ecm["tokens_per_step"] < results["methods"]["ecm_uniform_scales"]["tokens_per_step"]
    # the early-centric choice: the most accurate of the candidates fast enough, else the fastest
    sel = results["selection"]
    f1, cut = sel["val_control_f1_per_early_sampling"], sel["step_time_cut_per_early_sampling"]
    assert set(f1) == set(cut) == {"0.7/batch/none", "1/sample/inverse"}
    fast = [k for k in cut if cut[k] >= sel["min_step_cut"]]
    chosen = max(fast, key=f1.get) if fast else max(cut, key=cut.get)
    assert chosen == f"{sel['early_decay']:g}/{sel['cut_per']}/{sel['scale_weighting']}"
    for png in ("grid_ecm.png", "ablations.png", "f1_vs_time.png"):
        assert (tmp_path / "b" / png).stat().st_size > 0
    assert "# ECM on digits-control" in (tmp_path / "b" / "report.md").read_text()
