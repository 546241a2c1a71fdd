import pytest
import torch

from loragen.adapters.adapter import Adapter
from loragen.conditions import Condition
from loragen.diffusion import Diffusion
from loragen.errors import ConfigError, LoragenError, ZooError
from loragen.generators.pdiff import PDiffConfig, PDiffGenerator
from loragen.generators.pdiff.autoencoder import ParamAutoencoder
from loragen.generators.pdiff.normalizer import Normalizer
from loragen.zoo.store import Zoo

TINY = dict(ae_steps=30, diffusion_steps=30, ae_channels=(8, 8), ae_patch=4, latent_dim=8, width=32, depth=1,
            cond_draws=3, k_exemplars=4, sample_steps=4, checkpoint_every=20, batch_size=8)


@pytest.mark.parametrize("mode", ["task", "global", "none"])
def test_normalizer_roundtrip(mode, tiny_layout):
    x = torch.randn(12, tiny_layout.numel) * 3 + 1
    task = torch.tensor([0] * 6 + [1] * 6)
    n = Normalizer(mode, tiny_layout.segment_ids(), 2).fit(x, task)
    z = n.normalize(x, task)
    assert n.stat_features(task).shape == (12, n.n_features)
    assert torch.allclose(n.denormalize(z, n.stat_features(task)), x, atol=1e-5)
    if mode == "task":  # each task's segment is z-scored
        seg0 = tiny_layout.segment_ids() == 0
        assert abs(z[:6, seg0].mean().item()) < 1e-5 and abs(z[:6, seg0].std(unbiased=False).item() - 1) < 1e-4


def test_autoencoder_shapes_and_noise_only_in_training():
    ae = ParamAutoencoder(100, latent_dim=6, channels=(4, 4), patch=4)
    x = torch.randn(3, 100)
    ae.eval()
    z = ae.encode(x)
    assert z.shape == (3, 6)
    assert torch.allclose(z.pow(2).mean(-1), torch.ones(3), atol=1e-4)  # unit RMS latent
    assert ae.decode(z).shape == (3, 100)
    assert torch.equal(ae(x), ae(x))  # eval: deterministic
    ae.train()
    assert not torch.equal(ae(x), ae(x))  # training: noise on input and latent


def test_diffusion_rejects_unknown_prediction_type():
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        Diffusion(prediction_type="x0")


def test_config_validation():
    with pytest.raises(ConfigError, match="normalization must be one of"):
        PDiffConfig(normalization="batch")
    with pytest.raises(ConfigError, match="ae_steps must be >= 1"):
        PDiffConfig(ae_steps=0)


def _toy_zoo(path, layout, n_tasks=3, n_ckpt=4):
    """Tasks whose adapters are a task-specific vector plus small noise, and whose exemplars differ in brightness."""
    zoo = Zoo.create(path, layout, {"suite": "toy"})
    g = torch.Generator().manual_seed(0)
    for t in range(n_tasks):
        centre = torch.randn(layout.numel, generator=g)
        ads = [Adapter.from_vector(layout, centre + 0.01 * torch.randn(layout.numel, generator=g), {"step": i, "val_acc": 0.0})
               for i in range(n_ckpt)]
        zoo.add_task(f"t{t}", ads, Condition(task=f"t{t}", images=torch.rand(8, 4, 4, generator=g) * (t + 1) / n_tasks))
    return zoo


def test_fit_generate_save_load(tmp_path, tiny_layout):
    zoo = _toy_zoo(tmp_path / "z", tiny_layout)
    gen = PDiffGenerator.fit(zoo, PDiffConfig(**TINY), out=tmp_path / "g", show=False)
    cond = Condition(task="new", images=torch.rand(4, 4, 4))
    ads = gen.generate(cond, n=3, seed=5)
    assert len(ads) == 3 and all(a.layout == tiny_layout for a in ads)
    assert all(torch.isfinite(a.vector()).all() for a in ads)
    assert not torch.equal(ads[0].vector(), ads[1].vector())
    back = PDiffGenerator.load(tmp_path / "g")
    assert torch.equal(back.generate_vectors(cond, 3, seed=5), gen.generate_vectors(cond, 3, seed=5))
    with pytest.raises(ConfigError, match=">= 1"):
        gen.generate(cond, n=0)


@pytest.mark.parametrize("crash_at", [1, 2])  # the first save is in the autoencoder stage, the second in diffusion
def test_interrupted_fit_resumes_to_the_same_weights(tmp_path, tiny_layout, killed_after_save, crash_at):
    from loragen.generators.pdiff.generator import STATE_FILE

    zoo = _toy_zoo(tmp_path / "z", tiny_layout)
    cfg = PDiffConfig(**TINY)
    straight = PDiffGenerator.fit(zoo, cfg, out=tmp_path / "a", show=False)
    with killed_after_save(crash_at):
        PDiffGenerator.fit(zoo, cfg, out=tmp_path / "b", show=False)
    assert (tmp_path / "b" / STATE_FILE).exists()
    with pytest.raises(LoragenError, match="belongs to another training run"):  # another config: the state is not reused
        PDiffGenerator.fit(zoo, PDiffConfig(**TINY | {"latent_dim": 4}), out=tmp_path / "b", show=False)
    resumed = PDiffGenerator.fit(zoo, cfg, out=tmp_path / "b", show=False)
    assert not (tmp_path / "b" / STATE_FILE).exists()
    for k, v in straight.autoencoder.state_dict().items():
        assert torch.equal(v, resumed.autoencoder.state_dict()[k]), k
    for k, v in straight.denoiser.state_dict().items():
        assert torch.equal(v, resumed.denoiser.state_dict()[k]), k
    assert straight.fit_summary["diffusion_loss"] == resumed.fit_summary["diffusion_loss"]


def test_empty_zoo_refused(tmp_path, tiny_layout):
    zoo = Zoo.create(tmp_path / "z", tiny_layout)
    with pytest.raises(ZooError, match="is empty"):
        PDiffGenerator.fit(zoo, PDiffConfig(**TINY), show=False)


def test_wrong_condition_kind(tmp_path, tiny_layout):
    zoo = _toy_zoo(tmp_path / "z", tiny_layout)
    gen = PDiffGenerator.fit(zoo, PDiffConfig(**TINY), show=False)
    with pytest.raises(ValueError, match=r"images of shape \(K, H, W\); found None"):
        gen.generate(Condition(task="x", text="a description"))


def test_condition_of_the_wrong_size(tmp_path, tiny_layout):
    from loragen.errors import ConditionError

    zoo = _toy_zoo(tmp_path / "z", tiny_layout)
    gen = PDiffGenerator.fit(zoo, PDiffConfig(**TINY), show=False)
    with pytest.raises(ConditionError, match="encodes to 44 numbers; this generator was trained on conditions of 24"):
        gen.generate(Condition(task="x", images=torch.rand(4, 6, 6)))
