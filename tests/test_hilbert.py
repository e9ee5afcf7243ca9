"""The Hilbert curve, its encode/decode kernels and the audio ↔ image helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tasks.kernels.hilbert import (
    audio_to_images,
    from_hilbert,
    hilbert_flat_index,
    hilbert_index_map,
    hilbert_inverse_index,
    hilbert_map_kernel,
    hilbert_map_reference,
    images_to_audio,
    to_hilbert,
)

# -- the curve --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", range(0, 7))
def test_kernel_matches_recursive_reference(order):
    ref_ys, ref_xs = hilbert_map_reference(order)
    ys, xs = hilbert_map_kernel(order)
    np.testing.assert_array_equal(ys, ref_ys)
    np.testing.assert_array_equal(xs, ref_xs)


def test_order_one_is_the_u_shape():
    ys, xs = hilbert_index_map(1)
    assert list(zip(ys.tolist(), xs.tolist())) == [(0, 0), (1, 0), (1, 1), (0, 1)]


@pytest.mark.parametrize("order", [1, 2, 3, 5, 8])
def test_every_pixel_exactly_once(order):
    side = 1 << order
    ys, xs = hilbert_index_map(order)
    assert ys.size == side * side
    assert ys.min() == 0 and xs.min() == 0 and ys.max() == side - 1 and xs.max() == side - 1
    counts = np.zeros((side, side), dtype=np.int64)
    np.add.at(counts, (ys, xs), 1)
    assert (counts == 1).all()


@pytest.mark.parametrize("order", [1, 2, 4, 8])
def test_consecutive_points_are_4_adjacent(order):
    ys, xs = hilbert_index_map(order)
    step = np.abs(np.diff(ys)) + np.abs(np.diff(xs))
    assert (step == 1).all()  # every d, not a sample of them


@pytest.mark.parametrize("order", [3, 8])
def test_curve_starts_top_left_ends_top_right(order):
    ys, xs = hilbert_index_map(order)
    side = 1 << order
    assert (ys[0], xs[0]) == (0, 0)
    assert (ys[-1], xs[-1]) == (0, side - 1)


def test_maps_are_cached_and_read_only():
    assert hilbert_index_map(6) is hilbert_index_map(6)
    ys, _ = hilbert_index_map(6)
    with pytest.raises(ValueError):
        ys[0] = 1
    flat, inv = hilbert_flat_index(6), hilbert_inverse_index(6)
    np.testing.assert_array_equal(inv[flat], np.arange(flat.size))


@pytest.mark.parametrize("order", [-1, 16])
def test_order_out_of_range(order):
    with pytest.raises(ValueError, match="order"):
        hilbert_index_map(order)


# -- encode / decode --------------------------------------------------------------------------------


def test_encode_places_sample_d_at_its_pixel():
    order = 4
    ys, xs = hilbert_index_map(order)
    image = to_hilbert(np.arange(4**order, dtype=np.float32), order)
    assert image.shape == (16, 16)
    np.testing.assert_array_equal(image[ys, xs], np.arange(4**order))


DTYPES = [np.float32, np.float16, np.uint8, np.float64, np.int16]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), order=st.integers(0, 5), dtype=st.sampled_from(DTYPES), batch=st.integers(0, 3))
def test_encode_decode_inverse(data, order, dtype, batch):
    shape = (4**order,) if batch == 0 else (batch, 4**order)
    samples = data.draw(hnp.arrays(dtype, shape))  # NaNs and infinities included: bits must survive
    image = to_hilbert(samples, order)
    side = 1 << order
    assert image.dtype == samples.dtype
    assert image.shape == shape[:-1] + (side, side)
    back = from_hilbert(image, order)
    assert back.dtype == samples.dtype and back.shape == samples.shape
    np.testing.assert_array_equal(back.view(np.uint8), samples.view(np.uint8))


@settings(max_examples=20, deadline=None)
@given(data=st.data(), order=st.integers(0, 4), dtype=st.sampled_from(DTYPES))
def test_decode_encode_inverse(data, order, dtype):
    side = 1 << order
    image = data.draw(hnp.arrays(dtype, (2, side, side)))
    back = to_hilbert(from_hilbert(image, order), order)
    np.testing.assert_array_equal(back.view(np.uint8), image.view(np.uint8))


def test_batched_equals_one_by_one_order_8():
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((3, 65536)).astype(np.float32)
    images = to_hilbert(batch)
    assert images.shape == (3, 256, 256)
    for i in range(3):
        np.testing.assert_array_equal(images[i], to_hilbert(batch[i]))
    np.testing.assert_array_equal(from_hilbert(images), batch)


def test_out_argument_and_non_contiguous_input():
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((2, 2 * 256)).astype(np.float32)
    samples = wide[:, ::2]  # not contiguous
    out = np.empty((2, 16, 16), np.float32)
    assert to_hilbert(samples, 4, out=out) is out
    np.testing.assert_array_equal(from_hilbert(out, 4), samples)
    with pytest.raises(ValueError, match="out"):
        to_hilbert(samples, 4, out=np.empty((2, 16, 16), np.float64))


def test_complex_dtype_falls_back_to_numpy():
    samples = (np.arange(64) + 1j * np.arange(64)).astype(np.complex128)
    np.testing.assert_array_equal(from_hilbert(to_hilbert(samples, 3), 3), samples)


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="trailing axis"):
        to_hilbert(np.zeros(100, np.float32), 4)
    with pytest.raises(ValueError, match="trailing axes"):
        from_hilbert(np.zeros((8, 16), np.float32), 4)


# -- audio ↔ images ---------------------------------------------------------------------------------


def test_audio_round_trip_exact_in_float32():
    rng = np.random.default_rng(3)
    audio = rng.uniform(-1, 1, 3 * 256 + 100).astype(np.float32)
    images, scale = audio_to_images(audio, order=4)
    assert images.shape == (4, 16, 16) and images.dtype == np.float32
    assert (scale.lo, scale.hi, scale.n_clipped) == (-1.0, 1.0, 0)
    assert images.min() >= 0.0 and images.max() <= 1.0
    back = images_to_audio(images, order=4)
    assert back.dtype == np.float32 and back.size == 4 * 256
    np.testing.assert_allclose(back[: audio.size], audio, atol=1e-6)
    np.testing.assert_array_equal(back[audio.size :], 0.0)  # zero padding decodes to silence
    np.testing.assert_allclose(images_to_audio(images, order=4, length=audio.size), audio, atol=1e-6)


def test_audio_round_trip_within_float16_quantisation():
    rng = np.random.default_rng(4)
    audio = rng.uniform(-1, 1, 2 * 65536 + 5).astype(np.float32)
    images, _ = audio_to_images(audio, order=8, dtype=np.float16)
    assert images.dtype == np.float16 and images.shape == (3, 256, 256)
    back = images_to_audio(images, order=8, length=audio.size)
    # pixels in [0, 1] keep 11 significant bits: |error| <= 2 * 2**-12 after mapping back
    assert np.abs(back - audio).max() <= 2.0**-11 + 1e-6  # plus float32 rounding


def test_pixels_follow_the_paper_mapping_and_clip():
    audio = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0] + [0.0] * 10, dtype=np.float32)
    images, scale = audio_to_images(audio, order=2)
    samples = from_hilbert(images, 2)[0]
    np.testing.assert_allclose(samples[:6], [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])
    assert scale.n_clipped == 2


def test_consecutive_samples_are_neighbouring_pixels_in_the_image():
    audio = np.linspace(-1, 1, 256, dtype=np.float32)  # a ramp: neighbours differ by one step
    image = audio_to_images(audio, order=4)[0][0]
    vertical = np.abs(np.diff(image, axis=0))
    horizontal = np.abs(np.diff(image, axis=1))
    step = 1.0 / 255
    # every sample but the last has its successor among its 4 neighbours
    neighbours = np.isclose(vertical, step, atol=1e-6).sum() + np.isclose(horizontal, step, atol=1e-6).sum()
    assert neighbours == 255


@pytest.mark.parametrize("hop", [64, 100, 300])
def test_overlapping_and_gapped_hops_invert(hop):
    rng = np.random.default_rng(5)
    audio = rng.uniform(-0.9, 0.9, 1000).astype(np.float32)
    images, _ = audio_to_images(audio, order=4, hop=hop)
    assert images.shape[0] == 1 + -(-(audio.size - 256) // hop)
    back = images_to_audio(images, order=4, hop=hop, length=audio.size)
    covered = np.zeros(audio.size, bool)
    for i in range(images.shape[0]):
        covered[i * hop : i * hop + 256] = True
    np.testing.assert_allclose(back[covered], audio[covered], atol=1e-6)
    np.testing.assert_array_equal(back[~covered], 0.0)  # gaps between blocks come back silent


def test_empty_and_short_audio():
    images, scale = audio_to_images(np.zeros(0, np.float32), order=3)
    assert images.shape == (0, 8, 8) and scale.n_clipped == 0
    assert images_to_audio(images, order=3).size == 0
    images, _ = audio_to_images(np.full(10, 0.5, np.float32), order=3)
    assert images.shape == (1, 8, 8)
    np.testing.assert_allclose(images_to_audio(images, order=3, length=10), 0.5)


def test_audio_must_be_mono():
    with pytest.raises(ValueError, match="mono"):
        audio_to_images(np.zeros((100, 2), np.float32), order=2)
