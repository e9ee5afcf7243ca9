"""Networks, losses and the registry (models/): exact parameter counts against the paper, shapes for every
registry entry and encoding, one optimisation step each, overfitting a tiny batch, and the gradient penalty
against an independent per-sample autograd computation. CPU only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from models import REGISTRY, count_parameters, describe_all, get_spec
from models.decoding import Sampling
from models.autoencoder import AutoencoderConfig, ConvAutoencoder
from models.gan import LOSSES, ConvCritic, GanConfig, build_gan, critic_objective, generator_objective, gradient_penalty
from models.losses import class_cross_entropy, mse_loss, paper_custom_loss
from models.lstm import (
    LstmConfig,
    NextColumnLSTM,
    Seq2SeqLSTM,
    classes_to_roll,
    classes_to_values,
    roll_to_classes,
    values_to_classes,
)
from storage_schemas.encodings import CHANNELS

# padding="same" with the paper's even 4x4 kernels makes PyTorch warn that it pads asymmetrically (1 before,
# 2 after, as Keras does); that is the intended behaviour.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

ENTRY_ENCODINGS = [(name, enc) for name, spec in REGISTRY.items() for enc in spec.encodings]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These batches are tiny: extra intra-op threads only add synchronisation, and on a busy machine their
    spin-waiting made this file several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_importing_models_pulls_in_no_orchestration_code():
    code = (
        "import sys, models; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'tasks', 'flows')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def keras_count(module: nn.Module) -> int:
    """Parameters as Keras counts them: one bias vector (4 * hidden) per LSTM direction instead of two."""
    lstms = [m for m in module.modules() if isinstance(m, nn.LSTM)]
    extra = sum(4 * m.hidden_size * m.num_layers * (2 if m.bidirectional else 1) for m in lstms)
    return count_parameters(module) - extra


def toy_roll(batch: int, columns: int, seed: int = 0) -> torch.Tensor:
    """State values in [0, 1] shaped (B, T, 88): a few held notes, ONSET then SUSTAIN, like enc2/enc3."""
    rng = np.random.default_rng(seed)
    x = np.zeros((batch, columns, 88), dtype=np.float32)
    for b in range(batch):
        for _ in range(6):
            key, start = rng.integers(0, 88), rng.integers(0, columns - 4)
            x[b, start, key] = 125 / 255
            x[b, start + 1 : start + 1 + rng.integers(2, 8), key] = 1.0
    return torch.from_numpy(x)


def striped_roll(batch: int, columns: int) -> torch.Tensor:
    """A dense, predictable roll (B, T, 88): every key plays notes of one onset + two sustained columns and
    a rest, phase-shifted along the keys and per sequence. 75 % of the pixels are lit, so no constant
    prediction comes within 10x of a fitted model (the best constant has MSE 0.17, cross-entropy 1.04),
    and each column follows from the one before, so the next-column and seq2seq models can fit it."""
    t = torch.arange(columns)[None, :, None]
    k = torch.arange(88)[None, None, :]
    b = torch.arange(batch)[:, None, None]
    phase = (t + k + b) % 4
    lut = torch.tensor([125 / 255, 1.0, 1.0, 0.0])
    return lut[phase]  # (B, T, 88)


def dense_image(channels: int) -> torch.Tensor:
    """A roll-like image (1, C, 88, 200) with half of it lit in blocks, so that a black (or any constant)
    output stays far from it in L1."""
    rows = torch.arange(88)[:, None]
    cols = torch.arange(200)[None, :]
    lit = ((rows // 4 + cols // 25) % 2 == 0).float() * (0.5 + 0.5 * (rows % 2))
    return lit.expand(1, channels, 88, 200).clone()


def toy_image(channels: int, batch: int = 1) -> torch.Tensor:
    """A roll image in [0, 1], (B, C, 88, 200): horizontal note bars on a black background."""
    x = torch.zeros(batch, channels, 88, 200)
    for i, (key, start, length) in enumerate([(30, 10, 40), (40, 60, 80), (52, 20, 150), (70, 100, 30)]):
        x[:, :, key, start : start + length] = 1.0 - 0.1 * i
    return x


# -- parameter counts ---------------------------------------------------------------------------------


def test_autoencoder_has_the_papers_parameter_count():
    assert count_parameters(ConvAutoencoder(AutoencoderConfig())) == 148_081


def test_lstm_parameter_counts_match_the_paper_in_pytorch_and_keras_terms():
    lstm = NextColumnLSTM(LstmConfig())
    seq2seq = Seq2SeqLSTM(LstmConfig(arch="seq2seq"))
    assert count_parameters(lstm) == 122_968
    assert count_parameters(seq2seq) == 251_096
    assert keras_count(lstm) == 122_456
    assert keras_count(seq2seq) == 250_072


def test_registry_describes_every_entry_as_json_with_counts_of_the_built_default():
    described = describe_all()
    assert [d["name"] for d in described] == list(REGISTRY)
    assert set(REGISTRY) == {
        "gan", "dcgan", "wgan-gp", "autoencoder", "lstm", "lstm-custom", "lstm-classes3",
        "seq2seq", "seq2seq-classes3", "seq2seq-bidir", "transformer", "transformer-classes3",
    }  # fmt: skip
    json.dumps(described)
    by_name = {d["name"]: d for d in described}
    assert by_name["autoencoder"]["parameters"] == {"hilbert": 148_081}
    assert by_name["lstm"]["parameters"]["enc2"] == 122_968
    assert by_name["seq2seq"]["parameters"]["enc3"] == 251_096
    spec = get_spec("dcgan")
    nets = spec.networks(spec.default_config("enc3"))
    assert by_name["dcgan"]["parameters"]["enc3"] == count_parameters(tuple(nets.values()))
    with pytest.raises(KeyError, match="unknown model"):
        get_spec("vae")
    with pytest.raises(ValueError, match="accepts encodings"):
        get_spec("autoencoder").default_config("enc1")


def test_configs_round_trip_through_dicts():
    for name, enc in ENTRY_ENCODINGS:
        config = REGISTRY[name].default_config(enc)
        assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("config", [GanConfig(kind="dcgan", channels=3), LstmConfig(), AutoencoderConfig()],
                         ids=lambda c: type(c).__name__)
def test_model_configs_refuse_unknown_keys(config):
    with pytest.raises(ValueError, match=r"unknown .*Config keys \['conv_chanels'\]"):
        type(config).from_dict({**config.to_dict(), "conv_chanels": [8]})


# -- sized for a dataset ------------------------------------------------------------------------------

# a dataset of other images than the paper's: pitches 36..96 (61 rows), 64 columns; Hilbert images of order 6
OTHER_SHAPE = {"enc1": (4, 61, 64), "enc2": (3, 61, 64), "enc3": (1, 61, 64), "hilbert": (1, 64, 64)}
TINY = {"conv_channels": [8, 4, 2], "dense_generator": [16], "dense_discriminator": [16], "hidden": 8,
        "encoder": [4, 8, 8, 8]}


@pytest.mark.parametrize("name,encoding", ENTRY_ENCODINGS)
@torch.no_grad()
def test_every_entry_is_sized_by_the_datasets_images_and_samples_them(name, encoding):
    spec = REGISTRY[name]
    shape = OTHER_SHAPE[encoding]
    config = spec.config(encoding, shape, {k: v for k, v in TINY.items() if k in spec.default_config(encoding).to_dict()})
    nets = spec.networks(config)
    seeds = None
    if spec.needs_seeds:
        seeds = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
        if encoding == "hilbert":
            seeds = torch.rand(3, *shape).half()
    images = spec.sample(config, nets, 3, encoding, seeds)
    assert images.shape == (3, *shape)
    assert images.dtype == (np.float32 if encoding == "hilbert" else np.uint8)
    if spec.family == "gan":
        assert nets["critic"](torch.from_numpy(images).float() / 255).shape == (3,)
    if spec.family in ("lstm", "seq2seq"):
        assert config.features == 61 and config.context == 32 and config.horizon == 10
        # the seed columns are kept as they are, in every channel (velocities included)
        np.testing.assert_array_equal(images[..., :32], seeds[..., :32].numpy())
        if encoding != "enc1":  # generated state columns hold states only
            assert np.isin(images[:, 0, :, 32:], [0, 125, 255]).all()


def test_the_default_shape_keeps_the_papers_configs():
    assert get_spec("dcgan").config("enc2", (3, 88, 200)) == GanConfig(kind="dcgan", channels=3)
    assert get_spec("seq2seq").config("enc2", (3, 88, 200)) == LstmConfig(arch="seq2seq")
    assert get_spec("autoencoder").config("hilbert", (1, 256, 256)) == AutoencoderConfig()


def test_conv_gans_work_at_sizes_the_strides_do_not_divide():
    config = GanConfig(kind="wgan-gp", channels=3, height=61, width=64, conv_channels=(8, 4, 2))
    assert config.seed_shape == (8, 8) and config.conv_shape == (64, 64)
    generator, critic = build_gan(config)
    fake = generator.sample(2)
    assert fake.shape == (2, 3, 61, 64)
    penalty = gradient_penalty(critic, torch.rand(2, 3, 61, 64), fake)
    assert torch.isfinite(penalty)


def test_sized_configs_refuse_what_the_dataset_fixes_and_what_does_not_fit():
    with pytest.raises(ValueError, match="features follow the dataset's images"):
        get_spec("lstm").config("enc2", (3, 61, 64), {"features": 88})
    with pytest.raises(ValueError, match="height, width follow"):
        get_spec("dcgan").config("enc2", (3, 61, 64), {"height": 88, "width": 200})
    with pytest.raises(ValueError, match="exceed the dataset's windows of 64 columns"):
        get_spec("seq2seq").config("enc2", (3, 61, 64), {"context": 60})
    with pytest.raises(ValueError, match="leaves nothing to generate"):
        get_spec("lstm").config("enc2", (3, 61, 64), {"context": 64})
    with pytest.raises(ValueError, match="channel 1 is not among"):
        get_spec("lstm").config("enc3", (1, 61, 64), {"channel": 1})
    with pytest.raises(ValueError, match="square images"):
        get_spec("autoencoder").config("hilbert", (1, 64, 128))


# -- shapes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,encoding", ENTRY_ENCODINGS)
@torch.no_grad()
def test_shapes(name, encoding):
    spec = REGISTRY[name]
    config = spec.default_config(encoding)
    B = 2
    nets = spec.networks(config)
    if spec.family == "gan":
        generator, critic = nets["generator"], nets["critic"]
        images = generator.sample(B)
        assert images.shape == (B, CHANNELS[encoding], 88, 200)
        assert 0 <= images.min() and images.max() <= 1
        assert critic(images).shape == (B,)
    elif spec.family == "autoencoder":
        out = nets["model"](torch.rand(B, 1, 256, 256))
        assert out.shape == (B, 1, 256, 256)
    elif spec.family == "lstm":
        model = nets["model"]
        x = toy_roll(B, 12)
        tail = (88, 3) if config.head == "classes3" else (88,)
        assert model(x[:, :-1]).shape == (B, 11, *tail)
        assert model.generate(x, 7).shape == (B, 7, 88)
    else:
        model = nets["model"]
        x = toy_roll(B, 100)
        tail = (88, 3) if config.head == "classes3" else (88,)
        assert model(x).shape == (B, 10, *tail)
        assert model(x, horizon=100).shape == (B, 100, *tail)
        assert model.generate(x, 25).shape == (B, 25, 88)


def test_next_column_lstm_is_causal():
    """The prediction at step t uses columns <= t only (so teacher forcing never leaks the target)."""
    model = NextColumnLSTM(LstmConfig())
    x = toy_roll(1, 20)
    y = x.clone()
    y[:, 10:] = torch.rand_like(y[:, 10:])
    torch.testing.assert_close(model(x)[:, :10], model(y)[:, :10])


def test_classes3_generation_feeds_back_decoded_states():
    model = NextColumnLSTM(LstmConfig(head="classes3"))
    out = model.generate(toy_roll(2, 30), 5)
    assert torch.isin(out, torch.tensor([0.0, 125 / 255, 1.0])).all()


# -- one optimisation step ----------------------------------------------------------------------------


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(module: nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, q) for p, q in zip(module.parameters(), before))


def _batch(spec, config, B: int = 2):
    """(input, target) for a non-GAN entry: a tiny batch that a constant prediction cannot fit."""
    if spec.family == "autoencoder":
        # one smooth image (Hilbert images of audio are smooth at this scale); the convolutions are
        # size-agnostic and 64 x 64 keeps the CPU test fast
        grid = torch.linspace(0, 6.28, 64)
        x = (0.5 + 0.4 * torch.sin(grid)[:, None] * torch.cos(2 * grid)[None, :]).expand(1, 1, 64, 64)
        return x, x
    if spec.family == "lstm":
        x = striped_roll(B, 21)
        return x[:, :-1], x[:, 1:]  # teacher forcing
    x = striped_roll(B, config.context + config.horizon)
    return x[:, : config.context], x[:, config.context :]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_one_optimisation_step_changes_parameters(name):
    spec = REGISTRY[name]
    config = spec.default_config(spec.encodings[-1])
    nets = spec.networks(config)
    if spec.family == "gan":
        generator, critic = nets["generator"], nets["critic"]
        real = toy_image(config.channels, 2)
        opt_d = torch.optim.Adam(critic.parameters(), lr=1e-4)
        opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4)
        d_before, g_before = _snapshot(critic), _snapshot(generator)
        d_loss = critic_objective(config, critic, real, generator.sample(2))
        opt_d.zero_grad(), d_loss.backward(), opt_d.step()
        g_loss = generator_objective(config, critic, generator.sample(2))
        opt_g.zero_grad(), g_loss.backward(), opt_g.step()
        assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
        assert _changed(critic, d_before) and _changed(generator, g_before)
        return
    model = nets["model"]
    x, target = _batch(spec, config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = _snapshot(model)
    loss = spec.loss(model(x), target)
    opt.zero_grad(), loss.backward(), opt.step()
    assert torch.isfinite(loss)
    assert _changed(model, before)


# -- overfitting a tiny batch -------------------------------------------------------------------------


def _overfit(model: nn.Module, loss_fn, lr: float, max_steps: int) -> tuple[float, float]:
    """Adam on a fixed batch until the loss is 10x lower; returns (first loss, best loss)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = best = None
    for _ in range(max_steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.item()
        first = value if first is None else first
        best = value if best is None else min(best, value)
        if best <= first / 10:
            break
    return first, best


@pytest.mark.parametrize("name", [n for n, s in REGISTRY.items() if s.family != "gan"])
def test_overfits_a_tiny_batch(name):
    spec = REGISTRY[name]
    config = spec.default_config(spec.encodings[-1])
    model = spec.networks(config)["model"]
    x, target = _batch(spec, config)
    lr = 3e-3 if spec.family == "autoencoder" else 1e-2
    first, best = _overfit(model, lambda: spec.loss(model(x), target), lr=lr, max_steps=200)
    assert best <= first / 10, (first, best)


# GANs: the adversarial losses are no convergence signal (they oscillate by design, and the Wasserstein critic
# loss is unbounded below), so "the loss fell 10x" would be meaningless for them. What a tiny batch can show
# honestly is that each half of the game can fit its task:
# - the generator can express a target: with a fixed z, an L1 reconstruction of ONE real image falls >= 10x
#   (the image is half lit, so a black or constant output cannot get there);
# - the discriminator/critic, trained with its own loss (gradient penalty included for WGAN-GP) on ONE fixed
#   real image against a frozen generator's samples, separates real from fake, also on fresh samples.


@pytest.mark.parametrize("kind", list(LOSSES))
def test_gan_generator_can_reproduce_one_image_from_a_fixed_z(kind):
    config = GanConfig(kind=kind, channels=1)
    generator, _ = build_gan(config)
    target = dense_image(1)
    z = torch.randn(2, config.latent_dim)  # two z, one target: BatchNorm needs more than one sample
    first, best = _overfit(generator, lambda: (generator(z) - target).abs().mean(), lr=3e-3, max_steps=60)
    assert best <= first / 10, (first, best)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_gan_critic_separates_one_real_image_from_fakes(kind):
    config = GanConfig(kind=kind, channels=1)
    generator, critic = build_gan(config)
    generator.eval().requires_grad_(False)
    real = dense_image(1).expand(2, -1, -1, -1)  # ONE real image (twice, so BatchNorm sees a batch)
    fakes = generator.sample(8)  # the frozen generator's samples, drawn once
    d_loss, _, use_gp = LOSSES[kind]
    opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
    for step in range(20):
        loss = critic_objective(config, critic, real, fakes[2 * (step % 4) : 2 * (step % 4) + 2])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # scored as trained (train mode: DCGAN's BatchNorm sees real and fake batches apart)
        real_scores, fake_scores = critic(real), critic(generator.sample(8))
    assert real_scores.min() > fake_scores.max()
    if use_gp:
        penalty = gradient_penalty(critic, real, generator.sample(2), weight=config.gp_weight)
        assert torch.isfinite(penalty)
        assert real_scores.mean() - fake_scores.mean() > 1.0
    else:
        assert d_loss(real_scores, fake_scores) < 0.05
        assert torch.sigmoid(real_scores).min() > 0.9 and torch.sigmoid(fake_scores).max() < 0.1


# -- gradient penalty ---------------------------------------------------------------------------------


def test_gradient_penalty_matches_a_per_sample_autograd_computation():
    config = GanConfig(kind="wgan-gp", channels=3, conv_channels=(32, 16, 8))
    critic = ConvCritic(config).double()
    real, fake = torch.rand(3, 3, 88, 200, dtype=torch.float64), torch.rand(3, 3, 88, 200, dtype=torch.float64)
    eps = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    penalties = []
    for i in range(3):
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x)[0], x)
        norm = torch.sqrt((grad**2).sum())
        penalties.append((norm - 1) ** 2)
    expected = 10 * torch.stack(penalties).mean()
    got = gradient_penalty(critic, real, fake, weight=10, eps=eps)
    assert abs(got.item() - expected.item()) < 1e-6
    got.backward()  # differentiable wrt the critic's parameters (create_graph)
    # every weight but the last bias (a constant offset has no input gradient) receives a gradient
    assert all(p.grad is not None for p in critic.parameters() if p is not critic.score.bias)


def test_wgan_critic_has_no_batchnorm_and_dcgan_has():
    def has_bn(kind):
        return any(isinstance(m, nn.BatchNorm2d) for m in build_gan(GanConfig(kind=kind, channels=1))[1].modules())

    assert has_bn("dcgan") and not has_bn("wgan-gp")


# -- losses and the 3-class mapping -------------------------------------------------------------------


def test_paper_custom_loss_matches_a_hand_computed_example():
    y = torch.tensor([[0.2, 0.9], [0.5, 0.0]])
    t = torch.tensor([[0.0, 1.0], [0.3, 0.0]])
    # t=0: 0.8 * 0.2^2 = 0.032 | t>0: 1.5 * 0.1^2 = 0.015 | t>0: 1.5 * 0.5^2 = 0.375 | t=0: 0.8 * 0^2 = 0
    assert paper_custom_loss(y, t).item() == pytest.approx((0.032 + 0.015 + 0.375 + 0.0) / 4)
    assert paper_custom_loss(y, t, alpha=1.0, beta=0.0).item() == pytest.approx((0.01 + 0.25) / 4)
    assert mse_loss(y, t).item() == pytest.approx((0.04 + 0.01 + 0.04 + 0.0) / 4)


def test_class_cross_entropy_of_confident_correct_logits_is_small():
    classes = torch.tensor([[0, 1, 2]])
    logits = 20 * nn.functional.one_hot(classes, 3).float()
    assert class_cross_entropy(logits, classes) < 1e-6
    assert class_cross_entropy(torch.zeros(1, 3, 3), classes).item() == pytest.approx(np.log(3))


def test_three_class_mapping_round_trips():
    pixels = np.array([0, 125, 255, 0, 7, 200, 124], dtype=np.uint8)
    classes = roll_to_classes(pixels)
    np.testing.assert_array_equal(classes, [0, 1, 2, 0, 2, 2, 2])
    canonical = pixels[:4]
    np.testing.assert_array_equal(classes_to_roll(roll_to_classes(canonical)), canonical)
    np.testing.assert_array_equal(roll_to_classes(classes_to_roll(np.array([0, 1, 2]))), [0, 1, 2])
    as_tensor = torch.from_numpy(pixels)
    assert torch.equal(roll_to_classes(as_tensor), torch.from_numpy(classes))
    assert torch.equal(classes_to_roll(roll_to_classes(as_tensor[:4])), as_tensor[:4])
    assert torch.equal(values_to_classes(classes_to_values(torch.tensor([0, 1, 2]))), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("encoding", ["enc1", "enc2"])
@torch.no_grad()
def test_gan_samples_keep_velocity_and_program_in_the_midi_range(encoding):
    spec = get_spec("gan")
    config = spec.config(encoding, overrides={"dense_generator": [8]})
    nets = spec.networks(config)
    nets["generator"].net[-1].bias.fill_(10.0)  # every output pixel 255 before the clip
    images = spec.sample(config, nets, 2, encoding, sampling=Sampling("threshold"))
    assert (images[:, 1:3] == 127).all()
    if encoding == "enc2":  # one note per key held over the whole window
        assert (images[:, 0, :, 0] == 125).all() and (images[:, 0, :, 1:] == 255).all()
    else:  # enc1: a note struck at every column, each cut where the next one starts
        assert (images[:, 0, :, :-1] == 1).all() and (images[:, 0, :, -1] == 255).all()
        assert (images[:, 3] == 255).all()  # tempo is a byte of bpm, not a MIDI value
