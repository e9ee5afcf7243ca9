"""Band-limited resampling of mono audio (a polyphase Kaiser-windowed sinc in NumPy): recordings are
brought to a dataset's sample rate. Pure NumPy; no I/O."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# -- resampling ---------------------------------------------------------------------------------------

ZERO_CROSSINGS = 32  # sinc zero crossings kept on each side of the centre (at the output's cutoff)
ROLLOFF = 0.945  # cutoff as a fraction of the lower Nyquist frequency
KAISER_BETA = 8.6


@lru_cache(maxsize=16)
def resample_filter(up: int, down: int, zero_crossings: int = ZERO_CROSSINGS, rolloff: float = ROLLOFF,
                    beta: float = KAISER_BETA) -> tuple[np.ndarray, int]:
    """Polyphase table of the resampling low-pass: ``(taps (up, 2 J + 1) float32, J)``.

    Row ``p`` holds the taps for an output sample that falls ``p / up`` of an input sample after input
    sample ``i``; tap ``t`` weighs input sample ``i + t − J``. The prototype is a Kaiser-windowed sinc
    with cutoff ``fc = rolloff · min(1, up / down) / 2`` cycles per input sample, cut ``zero_crossings``
    zero crossings either side of its centre; every row is scaled to sum to 1 (exact DC gain).
    """
    fc = 0.5 * rolloff * min(1.0, up / down)
    half = zero_crossings / (2.0 * fc)  # half-width of the window, in input samples
    j = math.ceil(half) + 1
    phase = np.arange(up) / up  # (up,)
    tau = phase[:, None] - (np.arange(2 * j + 1) - j)[None, :]  # (up, 2J+1): output time − input time
    inside = np.abs(tau) <= half
    window = np.where(inside, np.i0(beta * np.sqrt(np.clip(1.0 - (tau / half) ** 2, 0.0, 1.0))) / np.i0(beta), 0.0)
    taps = 2.0 * fc * np.sinc(2.0 * fc * tau) * window
    taps /= taps.sum(axis=1, keepdims=True)
    return taps.astype(np.float32), j


def resampled_length(n: int, sr_in: int, sr_out: int) -> int:
    """Samples of a signal of ``n`` samples at ``sr_in`` once resampled to ``sr_out``: ``ceil(n · sr_out / sr_in)``."""
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    return -(-int(n) * up // down)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a mono signal by the exact ratio ``sr_out / sr_in`` (rational polyphase FIR).

    Output sample ``n`` sits at input time ``n · sr_in / sr_out`` and is the windowed-sinc interpolation
    of the input there (:func:`resample_filter`), with the low-pass at the lower of the two Nyquist
    frequencies, so downsampling does not alias. The output has :func:`resampled_length` samples; the
    input is taken as zero outside its ends. The same rates return the input (as float32) untouched.

    Quality (the prototype's response, computed for 48 → 44.1 kHz, 44.1 → 8 kHz and 2 : 1; checked on
    sines by ``tests/test_audio.py``): flat within 0.01 dB up to 0.87 of the lower Nyquist frequency
    (19.2 kHz when the output is 44.1 kHz), −3 dB at 0.93, and at least 80 dB of attenuation from 1.025
    of it on, so only the top 2.5 % above the output's Nyquist frequency can alias, into the top 2.5 %
    below it (above 21.5 kHz at 44.1 kHz). Zero phase: a sine keeps its frequency and phase (error
    below 1e-4 of full scale away from the ends). Cost: 2 J + 1 ≈ 68 / min(1, sr_out / sr_in) + 3
    multiply-adds per output sample (77 for 48 → 44.1 kHz; about 0.5 s per minute of audio here).

    Parameters
    ----------
    x : 1-D array
        Mono samples.
    sr_in, sr_out : int
        Input and output rates in Hz.

    Returns
    -------
    float32 array of ``ceil(len(x) · sr_out / sr_in)`` samples.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample expects mono (1-D) audio, got shape {x.shape}")
    sr_in, sr_out = int(sr_in), int(sr_out)
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} → {sr_out}")
    if sr_in == sr_out:
        return x
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    n_out = resampled_length(x.shape[0], sr_in, sr_out)
    out = np.empty(n_out, np.float32)
    if n_out == 0:
        return out
    taps, j = resample_filter(up, down)
    width = 2 * j + 1
    padded = np.zeros(x.shape[0] + 2 * j, np.float32)
    padded[j:j + x.shape[0]] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, width)  # (n_in + 1, width), no copy
    chunk = max(1, (1 << 22) // width)  # rows gathered at a time (~16 MB of float32)
    for r in range(min(up, n_out)):
        first = r * down // up  # input sample at or before output r
        count = -(-(n_out - r) // up)  # outputs r, r + up, r + 2 up, …
        dst = out[r::up]
        for a in range(0, count, chunk):
            b = min(count, a + chunk)
            rows = frames[first + a * down:first + (b - 1) * down + 1:down]  # (b − a, width)
            np.matmul(rows, taps[r * down % up], out=dst[a:b])
    return out


def resample_reference(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Straightforward twin of :func:`resample`: one output sample at a time, the filter evaluated there."""
    x = np.asarray(x, np.float64)
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    if up == down:
        return x.astype(np.float32)
    taps, j = resample_filter(up, down)
    out = np.zeros(resampled_length(x.shape[0], sr_in, sr_out), np.float64)
    for n in range(out.shape[0]):
        i, p = divmod(n * down, up)
        for t in range(2 * j + 1):
            m = i + t - j
            if 0 <= m < x.shape[0]:
                out[n] += float(taps[p, t]) * x[m]
    return out.astype(np.float32)
