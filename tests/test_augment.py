"""Augmentation: exact transpositions, skip/drop policies, seeded pitch noise, and the variant plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tasks.kernels.augment import AugmentConfig, apply_variant, noise_seed, pitch_noise, plan, transpose

piano_pitches = hnp.arrays(np.uint8, st.integers(0, 200), elements=st.integers(21, 108))


# -- transpose -----------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(pitch=piano_pitches, k=st.integers(-90, 90))
def test_transpose_is_exact_or_skipped(pitch, k):
    new, keep, n_out = transpose(pitch, k)
    wide = pitch.astype(np.int64) + k
    n_bad = int(np.count_nonzero((wide < 21) | (wide > 108)))
    assert n_out == n_bad
    if n_bad:
        assert new is None and not keep.any()
    else:
        assert new.dtype == np.uint8
        assert keep.all()
        np.testing.assert_array_equal(new.astype(np.int64), wide)


@settings(max_examples=100, deadline=None)
@given(pitch=piano_pitches, k=st.integers(-90, 90))
def test_transpose_drop_keeps_exactly_the_in_range_notes(pitch, k):
    new, keep, n_out = transpose(pitch, k, policy="drop")
    wide = pitch.astype(np.int64) + k
    inside = (wide >= 21) & (wide <= 108)
    np.testing.assert_array_equal(keep, inside)
    np.testing.assert_array_equal(new.astype(np.int64), wide[inside])
    assert n_out == len(pitch) - len(new)
    assert new.size == 0 or (new.min() >= 21 and new.max() <= 108)


def test_transpose_counts_and_never_wraps():
    pitch = np.array([21, 60, 100, 108], np.uint8)
    new, keep, n_out = transpose(pitch, 9, policy="skip")
    assert new is None and n_out == 2 and keep.tolist() == [False] * 4
    new, keep, n_out = transpose(pitch, 9, policy="drop")
    assert new.tolist() == [30, 69] and keep.tolist() == [True, True, False, False] and n_out == 2
    # a uint8 shift down past zero would wrap to 255 - 3; here it is dropped
    new, keep, n_out = transpose(np.array([2, 60], np.uint8), -5, lo=0, hi=127, policy="drop")
    assert new.tolist() == [55] and n_out == 1
    new, keep, n_out = transpose(np.array([125], np.uint8), 5, lo=0, hi=127)
    assert new is None and n_out == 1
    new, keep, n_out = transpose(pitch, 0)
    assert new.tolist() == pitch.tolist() and n_out == 0
    # other columns follow the mask
    onsets = np.array([0.0, 1.0, 2.0, 3.0])
    assert onsets[transpose(pitch, -1, policy="drop")[1]].tolist() == [1.0, 2.0, 3.0]


def test_transpose_rejects_bad_arguments():
    with pytest.raises(ValueError, match="policy"):
        transpose(np.array([60]), 1, policy="wrap")
    with pytest.raises(ValueError, match="lo"):
        transpose(np.array([60]), 1, lo=100, hi=50)


# -- pitch noise ---------------------------------------------------------------------------------------


def _random_piano(n, seed=0):
    return np.random.default_rng(seed).integers(40, 90, n).astype(np.uint8)


def test_noise_is_deterministic_per_seed():
    pitch = _random_piano(5000)
    a = pitch_noise(pitch, 0.3, seed=11)
    b = pitch_noise(pitch, 0.3, seed=11)
    c = pitch_noise(pitch, 0.3, seed=12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:] == b[2:]
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.uint8


def test_fraction_is_respected_and_larger_fractions_pick_supersets():
    n = 100_000
    pitch = _random_piano(n)
    diffs = {}
    for fraction in (0.0, 0.1, 0.5, 1.0):
        new, keep, n_changed, n_dropped = pitch_noise(pitch, fraction, seed=3)
        assert keep.all() and n_dropped == 0  # 40..89 +- a few never leaves the piano
        d = new.astype(np.int64) - pitch
        diffs[fraction] = d
        assert n_changed == np.count_nonzero(d)
        # a picked note changes with P(|N(0,1)| >= 0.5) = 0.617
        expected = fraction * 0.617 * n
        assert abs(n_changed - expected) <= 5 * np.sqrt(n * 0.617 * fraction * (1 - 0.617 * fraction)) + 1
    assert not diffs[0.0].any()
    # the same seed with a larger fraction keeps every shift of the smaller one
    changed = diffs[0.1] != 0
    np.testing.assert_array_equal(diffs[0.5][changed], diffs[0.1][changed])


def test_sigma_one_changes_are_mostly_one_semitone():
    n = 200_000
    pitch = np.full(n, 64, np.uint8)
    new, keep, n_changed, _ = pitch_noise(pitch, 1.0, sigma=1.0, seed=5)
    d = new.astype(np.int64) - 64
    share = {v: np.mean(d == v) for v in range(-4, 5)}
    # round(N(0, 1)): P(0) = 0.383, P(+-1) = 0.242 each, P(+-2) = 0.061 each, P(|d| >= 3) = 0.012
    assert share[0] == pytest.approx(0.383, abs=0.01)
    for v in (-1, 1):
        assert share[v] == pytest.approx(0.242, abs=0.01)
    for v in (-2, 2):
        assert share[v] == pytest.approx(0.061, abs=0.005)
    assert np.mean(np.abs(d) >= 3) == pytest.approx(0.012, abs=0.003)
    assert abs(d.mean()) < 0.01
    # among changed notes, +-1 dominates
    assert np.mean(np.abs(d[d != 0]) == 1) > 0.7
    # sigma 0 changes nothing
    assert pitch_noise(pitch, 1.0, sigma=0.0, seed=5)[2] == 0


@settings(max_examples=60, deadline=None)
@given(pitch=piano_pitches, fraction=st.floats(0, 1), sigma=st.floats(0, 20), seed=st.integers(0, 2**32 - 1))
def test_noise_never_leaves_the_range_and_counts_add_up(pitch, fraction, sigma, seed):
    new, keep, n_changed, n_dropped = pitch_noise(pitch, fraction, sigma, seed=seed)
    assert new.size == 0 or (new.min() >= 21 and new.max() <= 108)
    assert n_dropped == len(pitch) - int(keep.sum()) == len(pitch) - len(new)
    assert n_changed == int(np.count_nonzero(new != pitch[keep]))


def test_noise_drops_notes_pushed_out_instead_of_clipping():
    pitch = np.full(20_000, 21, np.uint8)  # the lowest key: half the moves go below it
    new, keep, n_changed, n_dropped = pitch_noise(pitch, 1.0, seed=1)
    assert n_dropped > 0 and n_changed > 0
    assert n_dropped + n_changed + np.count_nonzero(new == 21) == len(pitch)
    assert n_dropped == pytest.approx(n_changed, rel=0.05)  # symmetric noise
    assert new.min() >= 21


def test_noise_rejects_bad_arguments():
    with pytest.raises(ValueError, match="fraction"):
        pitch_noise(np.array([60]), 1.5, seed=0)
    with pytest.raises(ValueError, match="sigma"):
        pitch_noise(np.array([60]), 0.5, -1.0, seed=0)
    with pytest.raises(TypeError):
        pitch_noise(np.array([60]), 0.5)  # the seed is required


# -- config and plan -----------------------------------------------------------------------------------


def test_config_round_trips_through_json():
    cfg = AugmentConfig(transpositions=(-2, 3), noise_fraction=0.1, noise_sigma=1.0, seed=9,
                        apply_to_splits=("train", "validation"))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert AugmentConfig.from_dict(d) == cfg
    assert AugmentConfig.from_dict({}) == AugmentConfig()
    assert AugmentConfig(transpositions=[1, 2]).transpositions == (1, 2)


@pytest.mark.parametrize("bad", [
    {"transpositions": (1.5,)}, {"noise_fraction": 2.0}, {"noise_sigma": -1.0}, {"seed": -1},
    {"apply_to_splits": ("val",)},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        AugmentConfig(**bad)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig.from_dict({"transpose": [1]})


def test_plan_augments_only_the_training_split_by_default():
    cfg = AugmentConfig(transpositions=(-1, 1, 2), noise_fraction=0.2)
    for split in ("validation", "test"):
        assert plan(cfg, split) == [(0, None)]
    variants = plan(cfg, "train")
    assert variants[0] == (0, None)
    assert [k for k, _ in variants] == [0, 0, -1, -1, 1, 1, 2, 2]
    seeds = [s for _, s in variants if s is not None]
    assert len(seeds) == 4 and len(set(seeds)) == 4
    assert plan(cfg, "train") == variants  # deterministic
    assert plan(cfg, "train", piece_id=5) != variants  # different pieces, different noise
    assert plan(AugmentConfig(), "train") == [(0, None)]
    with pytest.raises(ValueError, match="split"):
        plan(cfg, "val")


def test_plan_without_noise_and_with_repeats():
    cfg = AugmentConfig(transpositions=(2, 0, 2, -3), apply_to_splits=("train", "test"))
    assert plan(cfg, "train") == [(0, None), (2, None), (-3, None)]
    assert plan(cfg, "test") == plan(cfg, "train")
    assert plan(cfg, "validation") == [(0, None)]


def test_noise_seed_depends_on_everything_it_should():
    cfg = AugmentConfig(noise_fraction=0.1, seed=1)
    base = noise_seed(cfg, 0, 7)
    assert noise_seed(cfg, 0, 7) == base
    assert len({base, noise_seed(cfg, 1, 7), noise_seed(cfg, 0, 8), noise_seed(AugmentConfig(seed=2), 0, 7),
                noise_seed(cfg, 0, -7)}) == 5


def test_apply_variant_masks_line_up_with_other_columns():
    cfg = AugmentConfig(transpositions=(12,), noise_fraction=1.0, noise_sigma=3.0)
    pitch = np.array([30, 60, 100, 95, 50], np.uint8)
    onset = np.arange(5.0)
    new, keep, n_out, _ = apply_variant(pitch, 12, None, cfg, policy="skip")
    assert new is None and n_out == 1
    new, keep, n_out, _ = apply_variant(pitch, 12, None, cfg, policy="drop")
    assert onset[keep].tolist() == [0.0, 1.0, 3.0, 4.0] and n_out == 1
    for seed in range(20):
        new, keep, n_out, n_changed = apply_variant(pitch, 12, seed, cfg, policy="drop")
        assert len(new) == keep.sum() == len(pitch) - n_out
        assert new.min() >= 21 and new.max() <= 108
        # each kept note moved by 12 plus its noise, noise drawn on the transposed notes
        t, tkeep, _ = transpose(pitch, 12, policy="drop")
        noisy, nkeep, _, _ = pitch_noise(t, 1.0, 3.0, seed=seed)
        np.testing.assert_array_equal(new, noisy)
        np.testing.assert_array_equal(onset[keep], onset[tkeep][nkeep])
