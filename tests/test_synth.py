"""The built-in synthesizer: determinism, pitch, envelopes, loudness, WAV files, kernel ↔ reference."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tasks.kernels.synth import (
    SAMPLE_RATE,
    guitar_kernel,
    guitar_note_reference,
    piano_kernel,
    piano_note_reference,
    render,
    to_mono,
)
from tasks.kernels.wav import wav_bytes
from tasks.storage.recordings import read_audio

SR = SAMPLE_RATE


def _note(pitch=69, velocity=90, onset=0.0, offset=1.0, **kw):
    return render([pitch], [velocity], [onset], [offset], **kw)


def _random_piece(n_notes: int, duration_s: float, seed: int = 0):
    """A piano-like piece: sorted onsets, log-normal durations (median 0.35 s), pitches around C4."""
    rng = np.random.default_rng(seed)
    onset = np.sort(rng.uniform(0, duration_s - 2.0, n_notes))
    length = np.exp(rng.normal(np.log(0.35), 0.8, n_notes)).clip(0.03, 6.0)
    pitch = np.clip(np.round(rng.normal(62, 12, n_notes)), 21, 108).astype(np.uint8)
    velocity = rng.integers(30, 110, n_notes).astype(np.uint8)
    return pitch, velocity, onset, onset + length


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))


def _peak_hz(audio: np.ndarray, sr: int = SR) -> float:
    window = np.hanning(audio.size)
    spectrum = np.abs(np.fft.rfft(audio * window, n=8 * audio.size))  # zero padding: finer bins
    return float(np.argmax(spectrum) * sr / (8 * audio.size))


# -- determinism and timbres ------------------------------------------------------------------------


@pytest.mark.parametrize("timbre", ["piano", "guitar"])
def test_same_seed_same_samples(timbre):
    p, v, on, off = _random_piece(40, 6.0, seed=1)
    a = render(p, v, on, off, timbre=timbre, seed=7)
    b = render(p, v, on, off, timbre=timbre, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
    assert not np.array_equal(a, render(p, v, on, off, timbre=timbre, seed=8))  # the noise moves


def test_timbres_differ():
    piano = _note(timbre="piano")
    guitar = _note(timbre="guitar")
    assert piano.shape == guitar.shape
    assert np.abs(piano - guitar).max() > 0.05


def test_unknown_timbre_is_refused():
    with pytest.raises(ValueError, match="timbre"):
        _note(timbre="theremin")


# -- pitch ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timbre", ["piano", "guitar"])
@pytest.mark.parametrize("seed", [0, 3])
def test_a4_sounds_at_440_hz(timbre, seed):
    audio = _note(69, 100, 0.0, 1.0, timbre=timbre, seed=seed)
    assert abs(_peak_hz(audio[:SR]) - 440.0) <= 4.4  # ± 1 %


@pytest.mark.parametrize("timbre", ["piano", "guitar"])
@pytest.mark.parametrize("pitch", [40, 57, 81, 96])
def test_other_pitches_land_on_their_fundamental(timbre, pitch):
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    audio = _note(pitch, 100, 0.0, 1.0, timbre=timbre)
    # the strongest peak may be a harmonic for low notes: check the harmonic number is whole
    ratio = _peak_hz(audio[:SR]) / f0
    assert abs(ratio - round(ratio)) <= 0.01 * round(ratio) and round(ratio) >= 1


# -- envelopes and levels ---------------------------------------------------------------------------


@pytest.mark.parametrize("timbre", ["piano", "guitar"])
def test_silent_before_onset_and_after_release(timbre):
    onset, offset, tail = 0.5, 1.0, 0.3
    audio = _note(69, 100, onset, offset, timbre=timbre, tail_s=tail, duration_s=2.0)
    assert audio.size == 2 * SR
    start, end = int(onset * SR), int(round((offset + tail) * SR))
    assert (audio[:start] == 0).all()
    assert (audio[end:] == 0).all()
    assert np.abs(audio[start : start + SR // 10]).max() > 0.01  # it does sound
    # the release is under way: the last 50 ms before the end are much quieter than the note
    assert np.abs(audio[end - SR // 20 : end]).max() < 0.1 * np.abs(audio[start:end]).max()


def test_default_length_is_last_offset_plus_tail():
    audio = render([60, 64], [80, 80], [0.0, 0.5], [2.0, 1.0], tail_s=0.25)
    assert audio.size == int(round(2.25 * SR))
    assert render([], [], [], []).size == 0


@pytest.mark.parametrize("timbre", ["piano", "guitar"])
def test_louder_velocity_gives_higher_rms(timbre):
    rms = [_rms(_note(60, v, timbre=timbre)) for v in (20, 60, 100, 127)]
    assert rms == sorted(rms) and rms[0] < rms[-1] / 4
    assert (_note(60, 0, timbre=timbre) == 0).all()  # velocity 0 is silent


@pytest.mark.parametrize("timbre", ["piano", "guitar"])
def test_output_within_unit_range_even_when_overloaded(timbre):
    pitches = np.arange(36, 96)
    audio = render(pitches, np.full(60, 127), np.zeros(60), np.ones(60), timbre=timbre, gain=5.0)
    assert np.abs(audio).max() <= 1.0
    assert np.abs(audio).max() == 1.0  # overloaded: it clipped rather than normalised


def test_fixed_gain_not_peak_normalised():
    quiet = _note(60, 40)
    loud = _note(60, 120)
    assert np.abs(quiet).max() < 0.5 * np.abs(loud).max()


# -- kernels against their references ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pitch", "velocity", "offset"), [(69, 90, 0.3), (21, 127, 0.2), (100, 40, 0.1), (60, 64, 0.0)]
)
def test_piano_kernel_matches_closed_form(pitch, velocity, offset):
    length = int(0.8 * SR)
    out = np.zeros(length, np.float32)
    notes = np.array([pitch]), np.array([velocity]), np.array([0.05]), np.array([offset])
    piano_kernel(*notes, SR, 0.3, np.uint64(5), out)
    ref = piano_note_reference(pitch, velocity, 0.05, offset, length, tail_s=0.3, seed=5, index=0)
    np.testing.assert_allclose(out, ref, atol=2e-6)


@pytest.mark.parametrize(("pitch", "velocity"), [(69, 90), (40, 127), (95, 30)])
def test_guitar_kernel_matches_textbook_recurrence(pitch, velocity):
    length = int(0.3 * SR)
    out = np.zeros(length, np.float32)
    notes = np.array([pitch]), np.array([velocity]), np.array([0.01]), np.array([0.15])
    guitar_kernel(*notes, SR, 0.1, np.uint64(2), out)
    ref = guitar_note_reference(pitch, velocity, 0.01, 0.15, length, tail_s=0.1, seed=2, index=0)
    np.testing.assert_allclose(out, ref, atol=1e-6)


# -- mono and WAV files -----------------------------------------------------------------------------


def test_to_mono_is_the_channel_mean():
    stereo = np.array([[1.0, 0.0], [0.5, -0.5], [-1.0, -1.0]], np.float32)
    np.testing.assert_array_equal(to_mono(stereo), [0.5, 0.0, -1.0])
    mono = np.array([0.1, 0.2], np.float64)
    assert to_mono(mono).dtype == np.float32


def test_wav_round_trip(tmp_path):
    audio = _note(69, 100, 0.0, 0.5)
    path = tmp_path / "a4.wav"
    path.write_bytes(wav_bytes(audio, SR))
    back, sr = read_audio(str(path))
    assert sr == SR and back.dtype == np.float32 and back.shape == audio.shape
    assert np.abs(back - audio).max() <= 1.0 / 32768 + 1e-7  # 16-bit PCM quantisation


def test_wav_stereo_is_folded_on_read(tmp_path):
    left = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    path.write_bytes(wav_bytes(np.stack([left, -left], axis=1), 22050))
    back, sr = read_audio(str(path))
    assert sr == 22050 and back.shape == (1000,)
    assert np.abs(back).max() <= 1.0 / 32768


def test_wav_bytes_clip_to_full_scale(tmp_path):
    path = tmp_path / "loud.wav"
    path.write_bytes(wav_bytes(np.array([2.0, -3.0, 0.5]), SR))  # float64 in, out of range
    back, _ = read_audio(str(path))
    np.testing.assert_allclose(back, [32767 / 32768, -1.0, 0.5], atol=1 / 32768)


# -- speed (printed, never asserted) ----------------------------------------------------------------


@pytest.mark.parametrize("timbre", ["piano", "guitar"])
def test_render_speed_sanity(timbre):
    p, v, on, off = _random_piece(1200, 120.0, seed=3)
    render(p[:3], v[:3], on[:3], off[:3], timbre=timbre)  # compile (or load the cache) first
    t0 = time.perf_counter()
    audio = render(p, v, on, off, timbre=timbre)
    elapsed = time.perf_counter() - t0
    print(f"\n{timbre}: {audio.size / SR:.0f} s of audio, {p.size} notes rendered in {elapsed:.2f} s")
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
