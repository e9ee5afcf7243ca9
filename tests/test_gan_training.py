"""GANs that make rolls a MIDI decoder reads as they look: decoding of generator images (models.gan_decode),
threshold calibration, the training settings (n_critic, the GAN optimizers' lr and betas, the paper preset)
and checkpoints chosen by a distance of samples to the validation windows. Tiny configs, CPU only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from mido_oracle import read_with_mido
from models import get_spec
from models.decoding import Sampling
from models.gan import GanConfig, build_gan
from models.gan_decode import (
    RollStats,
    decode_gan_images,
    decode_state,
    fit_key_offsets,
    fit_key_thresholds,
    lit_pixels,
    roll_stats,
    sample_distance,
    uncalibrated_threshold,
)
from models.modules import AdversarialModule
from models.registry import PAPER_GAN_TRAINING
from models.trainer import MemoryCheckpoints, Trainer, TrainConfig
from storage_schemas.encodings import CHANNEL_NAMES, ONSET, SUSTAIN, RollConfig
from tasks.steps.decode import rolls_to_midi

KEYS, COLS = 12, 32  # tiny rolls: pitches 60..71, 32 columns
SMALL = {"conv_channels": [4, 4], "latent_dim": 8, "dense_generator": [16], "dense_discriminator": [16]}


pytestmark = pytest.mark.usefixtures("torch_one_thread", "torch_seeded")


def tiny_config(kind: str, encoding: str = "enc2", **overrides) -> GanConfig:
    spec = get_spec(kind)
    return spec.config(encoding, (len(CHANNEL_NAMES[encoding]), KEYS, COLS), {**SMALL, **overrides})


def toy_windows(n: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """enc2-like uint8 windows (n, 3, KEYS, COLS): a few notes on the middle keys, ONSET then SUSTAIN."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, channels, KEYS, COLS), np.uint8)
    for b in range(n):
        for _ in range(4):
            key, start, length = rng.integers(3, 9), rng.integers(0, COLS - 6), rng.integers(1, 6)
            x[b, 0, key, start] = ONSET
            x[b, 0, key, start + 1:start + length] = SUSTAIN
            if channels > 1:
                x[b, 1, key, start:start + length] = rng.integers(30, 100)  # velocity; program 0
    return torch.from_numpy(x)


# -- decoding ---------------------------------------------------------------------------------------------


def test_a_hand_built_row_decodes_to_the_stated_states():
    values = np.array([[[0.0, 0.5, 0.9, 0.45, 0.1, 1.0, 0.2]]])  # (1, 1 key, 7 columns)
    lit = lit_pixels(values, np.array([0.3]))
    np.testing.assert_array_equal(lit[0, 0], [0, 1, 1, 1, 0, 1, 0])
    # lit after silent: onset; 0.9 is nearer 1 than 125/255: sustain; 0.45 is nearer 125/255: struck again
    np.testing.assert_array_equal(decode_state(values, lit, "state")[0, 0], [0, ONSET, SUSTAIN, ONSET, 0, ONSET, 0])


def test_enc1_lengths_are_rounded_and_cut_at_the_next_onset_of_their_key():
    values = np.array([[[10 / 255, 0.0, 0.0, 3 / 255, 0.0, 0.0, 0.0, 0.9], [0.0] * 7 + [0.5]]])  # (1, 2, 8)
    lit = values > 0.001
    np.testing.assert_array_equal(decode_state(values, lit, "length")[0],
                                  [[3, 0, 0, 3, 0, 0, 0, 230], [0] * 7 + [128]])


@pytest.mark.parametrize("encoding", ["enc1", "enc2", "enc3"])
@pytest.mark.parametrize("sampling", [Sampling(), Sampling("sample", 1.0, 3)])
def test_decoded_samples_hold_only_valid_pixel_values(encoding, sampling):
    names = CHANNEL_NAMES[encoding]
    images = np.random.default_rng(1).random((4, len(names), KEYS, COLS)) ** 3  # any generator output
    out = decode_gan_images(images, names, sampling=sampling)
    assert out.dtype == np.uint8 and out.shape == images.shape
    lit = out[:, 0] > 0
    assert 0 < lit.mean() < 1
    if names[0] == "state":
        assert set(np.unique(out[:, 0])) <= {0, ONSET, SUSTAIN}
    for c, name in enumerate(names[1:], start=1):
        assert (out[:, c][~lit] == 0).all()
        low = {"velocity": 1, "program": 0, "tempo": 1}[name]
        high = 255 if name == "tempo" else 127
        assert out[:, c][lit].min() >= low and out[:, c][lit].max() <= high
    assert (out[:, 1][lit] >= 1).all() if len(names) > 1 else True  # no velocity 0 (a note-off) on a note


def test_sample_mode_is_seeded_and_sharpens_to_the_threshold_at_low_temperature():
    values = np.random.default_rng(2).random((8, KEYS, COLS))
    t = np.full(KEYS, 0.7)
    a = lit_pixels(values, t, Sampling("sample", 1.0, 5))
    np.testing.assert_array_equal(a, lit_pixels(values, t, Sampling("sample", 1.0, 5)))
    assert not np.array_equal(a, lit_pixels(values, t, Sampling("sample", 1.0, 6)))
    # mismatches of Bernoulli draws against the thresholded mask: fewer at T = 0.05 than at T = 1 by far
    sharp = (lit_pixels(values, t, Sampling("sample", 0.05, 5)) != (values > 0.7)).mean()
    flat = (a != (values > 0.7)).mean()
    assert sharp < 0.02 and flat > 0.1
    # at the threshold itself, a coin toss; a key that is never (threshold 1) or always (-1) lit stays so
    half = lit_pixels(np.full((1, 1, 4000), 0.7), np.array([0.7]), Sampling("sample", 1.0, 0)).mean()
    assert 0.45 < half < 0.55
    never_always = lit_pixels(np.full((1, 2, 50), 1.0), np.array([1.0, -1.0]), Sampling("sample", 1.0, 0))
    assert not never_always[0, 0].any() and never_always[0, 1].all()


def _notes_of_state(state: np.ndarray, pitch_lo: int, encoding: str) -> list[tuple[int, int, int]]:
    """(pitch, start column, end column) of a first channel (K, T), read pixel by pixel."""
    notes = []
    keys, cols = state.shape
    for k in range(keys):
        if encoding == "enc1":
            notes += [(pitch_lo + k, c, c + int(state[k, c])) for c in range(cols) if state[k, c]]
            continue
        start = None
        for c in range(cols + 1):
            v = state[k, c] if c < cols else 0
            if start is not None and (v == 0 or v == ONSET):
                notes.append((pitch_lo + k, start, c))
                start = None
            if v != 0 and start is None:
                start = c
    return sorted(notes, key=lambda n: (n[1], n[0]))


@pytest.mark.parametrize("encoding", ["enc1", "enc2", "enc3"])
def test_the_midi_of_a_decoded_sample_holds_exactly_the_notes_its_state_channel_shows(encoding):
    names = CHANNEL_NAMES[encoding]
    config = RollConfig(encoding=encoding, columns=COLS, pitch_lo=60, pitch_hi=60 + KEYS - 1)
    images = np.random.default_rng(3).random((2, len(names), KEYS, COLS)) ** 2
    thresholds = np.linspace(0.3, 0.8, KEYS)
    for image in decode_gan_images(images, names, thresholds):
        expected = _notes_of_state(image[0], 60, encoding)
        assert len(expected) > 20
        data, count = rolls_to_midi(image, config)
        midi = read_with_mido(data)["notes"]
        res = config.resolution_s
        got = sorted(((n["pitch"], round(n["onset_s"] / res), round(n["offset_s"] / res)) for n in midi),
                     key=lambda n: (n[1], n[0]))
        assert count == len(expected) and got == expected
        if encoding != "enc3":
            assert all(1 <= n["velocity"] <= 127 for n in midi)


# -- calibration ------------------------------------------------------------------------------------------


def test_fitted_thresholds_light_exactly_the_target_density():
    values = np.random.default_rng(4).random((50, 6, 40))
    target = np.array([0.0, 0.01, 0.1, 0.5, 0.97, 1.0])
    thresholds = fit_key_thresholds(values, target)
    achieved = (values > thresholds[None, :, None]).mean(axis=(0, 2))
    np.testing.assert_allclose(achieved, target, atol=1 / (50 * 40))
    assert thresholds[0] == 1.0 and thresholds[-1] == -1.0


def test_fitted_offsets_give_draws_of_the_target_expected_density():
    values = 0.5 + 0.02 * np.random.default_rng(5).standard_normal((40, 4, 50))  # clustered, as an early generator
    target = np.array([0.0, 0.02, 0.3, 1.0])
    offsets = fit_key_offsets(values, target)
    z = np.log(values / (1 - values))
    expected = (1 / (1 + np.exp(-(z - offsets[None, :, None])))).mean(axis=(0, 2))
    np.testing.assert_allclose(expected[1:3], target[1:3], rtol=1e-6)
    assert expected[0] < 1e-12 and expected[3] > 1 - 1e-12
    thresholds = fit_key_thresholds(values, target)
    drawn = lit_pixels(np.repeat(values, 20, axis=0), thresholds, Sampling("sample", 1.0, 0), offsets)
    np.testing.assert_allclose(drawn.mean(axis=(0, 2)), target, atol=0.01)
    # the offsets matter: logit(threshold) would light about half of the clustered values of key 1
    assert lit_pixels(values, thresholds, Sampling("sample", 1.0, 0))[:, 1].mean() > 0.3


def test_calibration_matches_the_training_windows_per_key_density():
    spec = get_spec("dcgan")
    config = tiny_config("dcgan")
    nets = spec.networks(config)
    windows = toy_windows(40)
    batches = [(windows[:16], {}), (windows[16:], {})]
    calibration = spec.calibrate(config, nets, batches)
    target = (windows[:, 0] != 0).float().mean(dim=(0, 2)).numpy()
    np.testing.assert_allclose(calibration["target_density"], target, atol=1e-12)
    np.testing.assert_allclose(calibration["generated_density"], target, atol=1 / (spec.calibration_samples * COLS))
    assert len(calibration["thresholds"]) == KEYS and calibration["windows"] == 40
    # the calibrated samples themselves come out near the data's density (fresh noise, so not exactly)
    images = spec.sample(config, nets, 64, "enc2", calibration=calibration, sampling=Sampling("threshold"))
    got = (images[:, 0] != 0).mean(axis=(0, 2))
    assert np.abs(got - target).max() < 0.06 and (got[target == 0] == 0).all()
    drawn = spec.sample(config, nets, 64, "enc2", calibration=calibration, sampling=Sampling("sample", 1.0, 1))
    got = (drawn[:, 0] != 0).mean(axis=(0, 2))
    assert np.abs(got - target).max() < 0.06 and (got[target == 0] == 0).all()


# -- training settings ------------------------------------------------------------------------------------


def test_wgan_gp_defaults_follow_gulrajani_and_the_paper_preset_restores_the_old_settings():
    wgan = tiny_config("wgan-gp")
    assert (wgan.n_critic, wgan.lr, wgan.betas) == (5, 1e-4, (0.0, 0.9))
    for kind in ("gan", "dcgan"):
        c = tiny_config(kind)
        assert (c.n_critic, c.lr, c.betas) == (1, None, None)
    for kind in ("gan", "dcgan", "wgan-gp"):
        spec = get_spec(kind)
        paper = spec.config("enc2", (3, KEYS, COLS), SMALL, preset="paper")
        assert paper == tiny_config(kind, **spec.presets["paper"])
        assert (paper.n_critic, paper.lr, paper.betas) == (1, 1e-3, (0.9, 0.999))
        assert spec.config("enc2", (3, KEYS, COLS), {**SMALL, "n_critic": 2}, preset="paper").n_critic == 2
        # the old trainer: TrainConfig's Adam (1e-3, 0.9/0.999) for both nets, one critic step per step
        module = spec.train_module(paper, spec.networks(paper))
        old = TrainConfig()
        for opt in module.optimizers(old).values():
            assert (opt.defaults["lr"], opt.defaults["betas"]) == (old.lr, old.betas)
    assert PAPER_GAN_TRAINING["n_critic"] == 1


def test_the_gan_optimizer_settings_reach_the_optimizers():
    spec = get_spec("wgan-gp")
    config = tiny_config("wgan-gp", lr=3e-4, betas=[0.5, 0.8])
    module = spec.train_module(config, spec.networks(config))
    opts = module.optimizers(TrainConfig(lr=1e-2, betas=(0.9, 0.99), weight_decay=1e-5))
    assert set(opts) == {"generator", "critic"}
    for opt in opts.values():
        assert opt.defaults["lr"] == 3e-4 and opt.defaults["betas"] == (0.5, 0.8)
        assert opt.defaults["weight_decay"] == 1e-5  # the rest still from the TrainConfig
    unset = tiny_config("dcgan")
    module = get_spec("dcgan").train_module(unset, get_spec("dcgan").networks(unset))
    for opt in module.optimizers(TrainConfig(lr=2e-3, betas=(0.8, 0.9))).values():
        assert opt.defaults["lr"] == 2e-3 and opt.defaults["betas"] == (0.8, 0.9)


def test_gan_configs_refuse_bad_training_settings():
    for bad in ({"n_critic": 0}, {"lr": -1.0}, {"betas": [0.5]}, {"betas": [1.0, 0.9]}):
        with pytest.raises(ValueError):
            tiny_config("wgan-gp", **bad)
    with pytest.raises(ValueError, match="state_channel follows the encoding"):
        tiny_config("wgan-gp", state_channel="length")
    assert tiny_config("wgan-gp", "enc1").state_channel == "length"
    assert GanConfig.from_dict(tiny_config("wgan-gp").to_dict()) == tiny_config("wgan-gp")


def _adam_steps(opt: torch.optim.Optimizer) -> int:
    return int(next(iter(opt.state.values()))["step"])


@pytest.mark.parametrize("n_critic", [1, 3])
def test_n_critic_critic_updates_per_generator_update(n_critic):
    spec = get_spec("wgan-gp")
    config = tiny_config("wgan-gp", n_critic=n_critic)
    module = spec.train_module(config, spec.networks(config))
    windows = toy_windows(6 * 4)
    train = [(windows[i:i + 4], {}) for i in range(0, 24, 4)]  # 6 steps per epoch
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", log_every=0)
    trainer = Trainer(module, cfg, train, None, MemoryCheckpoints())
    result = trainer.fit()
    opts = trainer.optimizers
    assert _adam_steps(opts["critic"]) == 6 and _adam_steps(opts["generator"]) == 6 // n_critic
    assert np.isfinite(result.history[0]["train"]["loss"])


# -- checkpoints by a distance of samples --------------------------------------------------------------------


def test_roll_stats_and_the_sample_distance_on_hand_built_rolls():
    state = np.zeros((1, 3, 4), np.uint8)
    state[0, 0] = [ONSET, SUSTAIN, ONSET, 0]  # two notes on key 0
    state[0, 2] = [0, ONSET, SUSTAIN, SUSTAIN]  # one on key 2
    s = roll_stats(state, "state")
    np.testing.assert_array_equal(s.key_sounding, [3, 0, 3])
    assert (s.notes, s.columns, s.sounding_columns, s.sounding) == (3, 4, 4, 6)
    assert s.note_density == 3 / 4 and s.polyphony == 6 / 4
    enc1 = np.zeros((1, 3, 4), np.uint8)
    enc1[0, 0, 0], enc1[0, 2, 1] = 3, 9  # lengths; the second runs past the window
    e = roll_stats(enc1, "length")
    np.testing.assert_array_equal(e.key_sounding, [3, 0, 3])
    assert (e.notes, e.sounding_columns, e.sounding) == (2, 4, 6)
    assert sample_distance(s, s) == 0.0
    other = RollStats(np.array([6, 0, 0]), 6, 4, 2, 6)  # all on key 0, twice the notes, polyphony 3
    expected = (1 / 2 + 0 + 1 / 2) + abs(np.log((1.5 + 1e-6) / (0.75 + 1e-6))) + abs(np.log((3 + 1e-6) / (1.5 + 1e-6)))
    assert sample_distance(other, s) == pytest.approx(expected)
    silent = RollStats(np.zeros(3, np.int64), 0, 4, 0, 0)
    assert sample_distance(silent, s) > 2 + 2 * np.log(0.75 / 1e-6) - 1


class _Replay(nn.Module):
    """A "generator" whose every sample is one of the given images (cycled), whatever the noise."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images)
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(z.shape[0]) % self.images.shape[0]
        return self.images[idx] + 0 * self.w


def test_the_sample_distance_is_zero_for_a_generator_replaying_the_validation_windows():
    config = tiny_config("dcgan")
    _, critic = build_gan(config)
    val = toy_windows(64, seed=7)
    for images, near in ((val.float() / 255, True), (torch.rand(64, 3, KEYS, COLS), False)):
        module = AdversarialModule(config, _Replay(images), critic, val_samples=64)
        with torch.no_grad():
            for i in range(0, 64, 16):
                module.val_step((val[i:i + 16], {}))
            metrics = module.val_epoch_end()
        assert (metrics["sample_distance"] < 1e-6) == near, metrics
        assert metrics["val_note_density"] == roll_stats(val[:, 0].numpy(), "state").note_density
    assert module.val_epoch_end() == {}  # gathered statistics are reset after each pass


class _Scripted(AdversarialModule):
    """Sample distances per validation pass as scripted; the generator loss falls all along."""

    def __init__(self, *args, distances, **kwargs):
        super().__init__(*args, **kwargs)
        self.distances = list(distances)
        self.passes = 0

    def val_step(self, batch):
        metrics = super().val_step(batch)
        return {**metrics, "loss": -float(self.passes)}  # generator loss better every epoch

    def val_epoch_end(self):
        real = super().val_epoch_end()
        assert real["val_note_density"] > 0
        self.passes += 1
        return {**real, "sample_distance": self.distances[self.passes - 1]}


def test_the_best_checkpoint_is_the_epoch_with_the_smallest_sample_distance():
    spec = get_spec("dcgan")
    config = tiny_config("dcgan")
    nets = spec.networks(config)
    module = _Scripted(config, nets["generator"], nets["critic"], val_samples=8, distances=[3.0, 1.0, 2.0, 1.5])
    windows = toy_windows(16)
    train = [(windows[:8], {}), (windows[8:], {})]
    cfg = TrainConfig(epochs=4, batch_size=8, device="cpu", log_every=0)
    result = Trainer(module, cfg, train, [(windows[:8], {})], MemoryCheckpoints()).fit()
    assert result.best_epoch == 2 and result.best_metric == 1.0
    assert [h["val"]["sample_distance"] for h in result.history] == [3.0, 1.0, 2.0, 1.5]


def test_uncalibrated_thresholds_sit_between_silence_and_the_smallest_lit_value():
    assert 0 < uncalibrated_threshold("state") < ONSET / 255 and uncalibrated_threshold("state") == ONSET / 510
    assert 0 < uncalibrated_threshold("length") < 1 / 255
    with pytest.raises(ValueError):
        uncalibrated_threshold("velocity")
