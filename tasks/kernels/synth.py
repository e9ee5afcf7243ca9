"""A small deterministic synthesizer: a piece's notes → mono float32 audio.

MAESTRO ships audio, but a corpus of MIDI alone does not; this renders any ``notes`` table (pitch,
velocity, onset_s, offset_s — or offset_pedal_s for pedalled notes) so the Hilbert-curve encoding and the
paper's piano → guitar style-transfer experiment can run on MIDI-only data. Two timbres, each a numba
kernel that adds one note at a time into the output, over the note's own span only:

piano (:func:`piano_kernel`)
    Additive synthesis. Up to 10 partials below 0.45 · sample_rate at ``n · f0 · sqrt(1 + B n²)``, with
    an inharmonicity B = 1e-4 · 2^((pitch − 69) / 24) that grows with pitch. Partial n has amplitude
    ∝ exp(−r (n − 1)) / n, where the roll-off r is larger for soft notes (softer = darker), and decays
    exponentially with time constant τ₁ / (1 + 0.7 (n − 1)), τ₁ = 5 · 2^(−(pitch − 21) / 30) s
    clipped to [0.3, 5] (low notes ring longer). A 10 ms lowpassed, seeded noise burst is the hammer.
guitar (:func:`guitar_kernel`)
    Karplus–Strong plucked string. The delay line starts as the plucked string's triangle plus a
    seeded, lowpassed noise burst (peak 1.5 × the velocity gain, so a guitar piece is about as loud as
    a piano one); each pass through the loop averages two neighbouring samples (a lowpass) and scales
    by a decay factor giving a T60 of 3 · 2^(−(pitch − 40) / 24) s clipped to [0.4, 4]. A first-order
    allpass supplies the fractional part of the loop delay sr / f0, so the pitch is exact; after the
    offset the string is damped.

Both timbres
    Amplitude (velocity / 127)^1.5. After the offset a release envelope
    ``exp(−4 u) · (1 − u)``, u = (t − offset) / tail_s, brings the note to exactly zero at
    offset + tail_s; a note also stops once it has decayed below −100 dB. Before its onset a note is
    exactly silent. The mix is scaled by a fixed ``gain`` (not by the piece's peak, so loudness follows
    velocity) and clipped to [−1, 1]. Noise is drawn from a splitmix64 generator keyed by (seed, note
    index), so the same notes and seed give the same samples on every machine.

Nothing here knows about Prefect or storage.
"""

from __future__ import annotations

import math

import numba
import numpy as np

SAMPLE_RATE = 44100
TIMBRES = ("piano", "guitar")
DEFAULT_GAIN = 0.25  # fixed headroom: a few loud notes together reach full scale
FLOOR = 1e-5  # a partial (or string) whose amplitude falls below this (−100 dB) stops being rendered
MAX_PARTIALS = 10
HAMMER_S = 0.010
PLUCK_AT = 0.25  # where the string is plucked, as a fraction of its length
PLUCK_NOISE = 0.3  # noise burst level relative to the pluck's triangle
GUITAR_LEVEL = 1.5  # pluck peak per unit of velocity gain: brings a guitar piece near a piano one in RMS

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S11 = np.uint64(11)


# -- shared pieces ----------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _splitmix64(state):
    """Advance the generator; returns (new state, 64 random bits)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return state, z ^ (z >> _S31)


@numba.njit(cache=True, nogil=True)
def _note_state(seed, index):
    """Generator state of note ``index`` under ``seed`` (both uint64)."""
    state, a = _splitmix64(seed)
    state, b = _splitmix64(a ^ (index * _MIX1))
    return b


@numba.njit(cache=True, nogil=True)
def _noise_burst(seed, index, n, cutoff_hz, sample_rate):
    """``n`` samples of uniform noise in [−1, 1), one-pole lowpassed at ``cutoff_hz``."""
    state = _note_state(seed, index)
    a = math.exp(-2.0 * math.pi * cutoff_hz / sample_rate)
    out = np.empty(n, np.float64)
    y = 0.0
    for t in range(n):
        state, bits = _splitmix64(state)
        x = (bits >> _S11) * (2.0 / 9007199254740992.0) - 1.0  # 53 bits → [−1, 1)
        y = (1.0 - a) * x + a * y
        out[t] = y
    return out


@numba.njit(cache=True, nogil=True)
def _release(u):
    """Release envelope at u = (t − offset) / tail in [0, 1): 1 at u = 0, exactly 0 from u = 1 on."""
    if u >= 1.0:
        return 0.0
    return math.exp(-4.0 * u) * (1.0 - u)


@numba.njit(cache=True, nogil=True)
def _velocity_gain(velocity):
    v = min(max(velocity, 0), 127) / 127.0
    return v**1.5


@numba.njit(cache=True, nogil=True)
def _note_span(velocity, onset_s, offset_s, sr, size):
    """Onset and offset sample of a note in an output of ``size`` samples; (−1, −1) if it adds nothing
    (silent, or starting outside the output)."""
    start = int(round(onset_s * sr))
    if velocity <= 0 or start < 0 or start >= size:
        return -1, -1
    return start, max(start, int(round(offset_s * sr)))


def midi_to_hz(pitch):
    """Equal temperament, A4 (MIDI 69) = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0)


# -- piano ------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def piano_partials(pitch, velocity, sample_rate):
    """Frequencies (Hz), amplitudes (velocity gain included) and decay times (s) of a piano note.

    Only partials below 0.45 · sample_rate are kept (at least none above Nyquist, possibly none).
    """
    f0 = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)
    b = 1e-4 * 2.0 ** ((pitch - 69.0) / 24.0)
    v = min(max(velocity, 0), 127) / 127.0
    rolloff = 0.25 + 0.5 * (1.0 - v)
    tau1 = min(max(5.0 * 2.0 ** (-(pitch - 21.0) / 30.0), 0.3), 5.0)
    n = 0
    while n < MAX_PARTIALS and (n + 1) * f0 * math.sqrt(1.0 + b * (n + 1) ** 2) < 0.45 * sample_rate:
        n += 1
    freq = np.empty(n, np.float64)
    amp = np.empty(n, np.float64)
    tau = np.empty(n, np.float64)
    total = 0.0
    for k in range(n):
        m = k + 1.0
        freq[k] = m * f0 * math.sqrt(1.0 + b * m * m)
        amp[k] = math.exp(-rolloff * k) / m
        tau[k] = tau1 / (1.0 + 0.7 * k)
        total += amp[k]
    g = _velocity_gain(velocity)
    for k in range(n):
        amp[k] *= g / total
    return freq, amp, tau


@numba.njit(cache=True, nogil=True)
def _partial_length(amp, tau, sample_rate):
    """Samples until a partial of amplitude ``amp`` and decay time ``tau`` falls below FLOOR."""
    if amp <= FLOOR:
        return 0
    return int(math.ceil(tau * math.log(amp / FLOOR) * sample_rate))


@numba.njit(cache=True, nogil=True)
def _hammer(seed, index, velocity, sample_rate):
    """The hammer's knock: a 10 ms lowpassed noise burst decaying with a 2 ms time constant."""
    g = _velocity_gain(velocity)
    n = int(round(HAMMER_S * sample_rate))
    cutoff = 1500.0 + 6000.0 * min(max(velocity, 0), 127) / 127.0
    burst = _noise_burst(seed, index, n, cutoff, sample_rate)
    for t in range(n):
        burst[t] *= 0.3 * g * math.exp(-t / (0.002 * sample_rate))
    return burst


@numba.njit(cache=True, nogil=True)
def piano_kernel(pitch, velocity, onset_s, offset_s, sample_rate, tail_s, seed, out):
    """Add every note, rendered as a piano, into ``out`` (float32, length fixed by the caller).

    Each partial is a damped complex phasor advanced by one complex multiplication per sample (no
    ``sin`` / ``exp`` in the loop); partials drop out of the loop once they fall below FLOOR.
    """
    sr = float(sample_rate)
    tail_n = int(round(tail_s * sr))
    size = out.size
    re = np.empty(MAX_PARTIALS, np.float64)
    im = np.empty(MAX_PARTIALS, np.float64)
    wr = np.empty(MAX_PARTIALS, np.float64)
    wi = np.empty(MAX_PARTIALS, np.float64)
    a = np.empty(MAX_PARTIALS, np.float64)
    ends = np.empty(MAX_PARTIALS, np.int64)
    for i in range(pitch.size):
        start, off = _note_span(velocity[i], onset_s[i], offset_s[i], sr, size)
        if start < 0:
            continue
        freq, amp, tau = piano_partials(pitch[i], velocity[i], sr)
        n = freq.size
        note_end = min(off + tail_n, size)
        longest = start
        for k in range(n):
            r = math.exp(-1.0 / (tau[k] * sr))
            w = 2.0 * math.pi * freq[k] / sr
            wr[k] = r * math.cos(w)
            wi[k] = r * math.sin(w)
            re[k] = 1.0  # phase 0: the partial is sin(w t), silent at the onset
            im[k] = 0.0
            a[k] = amp[k]
            ends[k] = start + _partial_length(amp[k], tau[k], sr)
            longest = max(longest, ends[k])
        hammer = _hammer(seed, np.uint64(i), velocity[i], sr)
        note_end = min(note_end, max(longest, start + hammer.size))
        active = n
        for t in range(start, note_end):
            while active > 0 and ends[active - 1] <= t:  # higher partials die first
                active -= 1
            s = 0.0
            for k in range(active):
                s += a[k] * im[k]
                x = re[k] * wr[k] - im[k] * wi[k]
                im[k] = re[k] * wi[k] + im[k] * wr[k]
                re[k] = x
            if t - start < hammer.size:
                s += hammer[t - start]
            if t >= off:
                s *= _release((t - off) / tail_n) if tail_n > 0 else 0.0
            out[t] += s


def _reference_note(velocity, onset_s, offset_s, length, sample_rate, tail_s):
    """What both reference twins start from: the rate, a silent output, the note's first and release
    samples, and the tail's length in samples."""
    sr = float(sample_rate)
    start = int(round(onset_s * sr))
    return sr, np.zeros(length, np.float64), start, max(start, int(round(offset_s * sr))), int(round(tail_s * sr))


def piano_note_reference(
    pitch: int, velocity: int, onset_s: float, offset_s: float, length: int, *,
    sample_rate: int = SAMPLE_RATE, tail_s: float = 0.3, seed: int = 0, index: int = 0,
) -> np.ndarray:
    """One piano note in closed form (NumPy ``sin`` / ``exp``): the twin of :func:`piano_kernel`."""
    sr, out, start, off, tail_n = _reference_note(velocity, onset_s, offset_s, length, sample_rate, tail_s)
    if velocity <= 0:
        return out
    freq, amp, tau = piano_partials(pitch, velocity, sr)
    hammer = _hammer(np.uint64(seed), np.uint64(index), velocity, sr)
    ends = [start + _partial_length(amp[k], tau[k], sr) for k in range(freq.size)]
    end = min(off + tail_n, length, max(ends + [start + hammer.size]))
    t = np.arange(end - start, dtype=np.float64)
    note = np.zeros(t.size)
    for k in range(freq.size):
        alive = t < ends[k] - start
        partial = amp[k] * np.exp(-t / (tau[k] * sr)) * np.sin(2 * np.pi * freq[k] / sr * t)
        note += np.where(alive, partial, 0.0)
    h = min(hammer.size, t.size)
    note[:h] += hammer[:h]
    u = (t + start - off) / max(tail_n, 1)
    if tail_n > 0:
        env = np.where(u < 0, 1.0, np.where(u < 1, np.exp(-4 * u) * (1 - u), 0.0))
    else:
        env = np.where(u < 0, 1.0, 0.0)
    out[start:end] = note * env
    return out


# -- guitar -----------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def guitar_string(pitch, sample_rate):
    """Delay-line length N, allpass coefficient C and decay time T60 (s) of a Karplus–Strong string.

    The loop delays N samples (line) + 1/2 (two-point average) + frac (allpass) = sample_rate / f0,
    with frac kept in [0.1, 1.1) where the first-order allpass is well behaved.
    """
    f0 = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)
    d = sample_rate / f0
    n = max(1, int(math.floor(d - 0.5 - 0.1)))
    frac = d - 0.5 - n
    c = (1.0 - frac) / (1.0 + frac)
    t60 = min(max(3.0 * 2.0 ** (-(pitch - 40.0) / 24.0), 0.4), 4.0)
    return n, c, t60


@numba.njit(cache=True, nogil=True)
def _pluck(seed, index, n, velocity, sample_rate):
    """The initial contents of the delay line: the string's shape when released.

    A triangle with its apex a quarter along the string (harmonics fall as 1/n², so the fundamental
    leads) plus a seeded, lowpassed noise burst (darker when soft); zero mean, peak GUITAR_LEVEL ×
    velocity gain.
    """
    cutoff = 1000.0 + 7000.0 * min(max(velocity, 0), 127) / 127.0
    burst = _noise_burst(seed, index, n, cutoff, sample_rate)
    for t in range(n):
        x = (t + 0.5) / n
        burst[t] = PLUCK_NOISE * burst[t] + (x / PLUCK_AT if x < PLUCK_AT else (1.0 - x) / (1.0 - PLUCK_AT))
    burst -= burst.mean()
    peak = np.abs(burst).max()
    if peak > 0:
        burst *= GUITAR_LEVEL * _velocity_gain(velocity) / peak
    return burst


@numba.njit(cache=True, nogil=True)
def guitar_kernel(pitch, velocity, onset_s, offset_s, sample_rate, tail_s, seed, out):
    """Add every note, rendered as a plucked string, into ``out`` (float32, length fixed by the caller)."""
    sr = float(sample_rate)
    tail_n = int(round(tail_s * sr))
    size = out.size
    for i in range(pitch.size):
        start, off = _note_span(velocity[i], onset_s[i], offset_s[i], sr, size)
        if start < 0:
            continue
        n, c, t60 = guitar_string(pitch[i], sr)
        d = sr / (440.0 * 2.0 ** ((pitch[i] - 69.0) / 12.0))
        rho = 10.0 ** (-3.0 * d / (t60 * sr))  # per pass through the loop: −60 dB after t60
        rho_damped = 10.0 ** (-3.0 * d / (max(tail_s, 1e-3) * 0.5 * sr))  # after the offset
        g = _velocity_gain(velocity[i])
        decay_n = int(math.ceil(t60 / 3.0 * math.log10(g / FLOOR) * sr)) if g > FLOOR else 0
        note_end = min(off + tail_n, start + max(decay_n, n), size)
        line = np.zeros(n + 1, np.float64)  # the last n + 1 outputs; slot n starts as y[−1] = 0
        line[:n] = _pluck(seed, np.uint64(i), n, velocity[i], sr)
        w = 0  # slot of y[t − n − 1], overwritten by y[t]
        u_prev = 0.0
        ap_prev = 0.0
        for t in range(note_end - start):
            if t < n:
                y = line[t]
            else:
                r = w + 1 if w < n else 0  # slot of y[t − n]
                gain = rho if start + t < off else rho_damped
                u = gain * 0.5 * (line[r] + line[w])
                y = c * u + u_prev - c * ap_prev  # allpass: the fractional delay
                u_prev = u
                ap_prev = y
                line[w] = y
            w = w + 1 if w < n else 0
            s = y
            if start + t >= off:
                s *= _release((start + t - off) / tail_n) if tail_n > 0 else 0.0
            out[start + t] += s


def guitar_note_reference(
    pitch: int, velocity: int, onset_s: float, offset_s: float, length: int, *,
    sample_rate: int = SAMPLE_RATE, tail_s: float = 0.3, seed: int = 0, index: int = 0,
) -> np.ndarray:
    """One plucked note by the textbook recurrence on a growing list (pure Python): the twin of
    :func:`guitar_kernel`. Slow; for short notes in tests."""
    sr, out, start, off, tail_n = _reference_note(velocity, onset_s, offset_s, length, sample_rate, tail_s)
    if velocity <= 0:
        return out
    n, c, t60 = guitar_string(pitch, sr)
    d = sr / float(midi_to_hz(pitch))
    rho = 10.0 ** (-3.0 * d / (t60 * sr))
    rho_damped = 10.0 ** (-3.0 * d / (max(tail_s, 1e-3) * 0.5 * sr))
    g = float(_velocity_gain(velocity))
    decay_n = int(math.ceil(t60 / 3.0 * math.log10(g / FLOOR) * sr)) if g > FLOOR else 0
    end = min(off + tail_n, start + max(decay_n, n), length)
    y = list(_pluck(np.uint64(seed), np.uint64(index), n, velocity, sr))
    u = [0.0] * n  # the averaged signal entering the allpass (none during the burst)
    for t in range(n, end - start):
        rho_t = rho if start + t < off else rho_damped
        u.append(rho_t * 0.5 * (y[t - n] + (y[t - n - 1] if t > n else 0.0)))
        y_prev = y[t - 1] if t > n else 0.0
        u_prev = u[t - 1] if t > n else 0.0
        y.append(c * u[t] + u_prev - c * y_prev)
    for t in range(end - start):
        env = 1.0
        if start + t >= off:
            env = float(_release((start + t - off) / tail_n)) if tail_n > 0 else 0.0
        out[start + t] = y[t] * env
    return out


# -- the public face --------------------------------------------------------------------------------

_KERNELS = {"piano": piano_kernel, "guitar": guitar_kernel}


def render(
    pitch,
    velocity,
    onset_s,
    offset_s,
    *,
    sample_rate: int = SAMPLE_RATE,
    timbre: str = "piano",
    tail_s: float = 0.3,
    seed: int = 0,
    gain: float = DEFAULT_GAIN,
    duration_s: float | None = None,
) -> np.ndarray:
    """Render notes to mono audio.

    Parameters
    ----------
    pitch, velocity : int arrays
        MIDI pitch and velocity per note (the ``notes`` table's uint8 columns; velocity 0 is silent).
    onset_s, offset_s : float arrays
        Note start and end in seconds. Pass ``offset_pedal_s`` as ``offset_s`` to hear the sustain pedal.
    sample_rate : int
        Output rate in Hz.
    timbre : {"piano", "guitar"}
    tail_s : float
        Release time: a note fades to exactly zero ``tail_s`` seconds after its offset.
    seed : int
        Seeds the hammer / pluck noise; the same notes and seed give identical samples.
    gain : float
        Fixed scale of the mix before clipping to [−1, 1] (no per-piece normalisation).
    duration_s : float, optional
        Output length in seconds; by default the last offset plus ``tail_s``.

    Returns
    -------
    np.ndarray, float32, shape (n_samples,), values in [−1, 1]
    """
    if timbre not in _KERNELS:
        raise ValueError(f"timbre must be one of {TIMBRES}, got {timbre!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if tail_s < 0:
        raise ValueError(f"tail_s must be >= 0, got {tail_s}")
    pitch = np.ascontiguousarray(pitch, dtype=np.int64).reshape(-1)
    velocity = np.ascontiguousarray(velocity, dtype=np.int64).reshape(-1)
    onset_s = np.ascontiguousarray(onset_s, dtype=np.float64).reshape(-1)
    offset_s = np.ascontiguousarray(offset_s, dtype=np.float64).reshape(-1)
    if not pitch.size == velocity.size == onset_s.size == offset_s.size:
        raise ValueError("pitch, velocity, onset_s and offset_s must have one entry per note")
    if not (np.isfinite(onset_s).all() and np.isfinite(offset_s).all()):
        raise ValueError("onset_s and offset_s must be finite")
    if duration_s is not None:
        length = max(0, int(round(duration_s * sample_rate)))
    elif pitch.size:
        last = np.round(np.maximum(onset_s, offset_s) * sample_rate).max()
        length = max(0, int(last) + int(round(tail_s * sample_rate)))
    else:
        length = 0
    out = np.zeros(length, dtype=np.float32)
    seed_bits = np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
    _KERNELS[timbre](pitch, velocity, onset_s, offset_s, int(sample_rate), float(tail_s), seed_bits, out)
    out *= np.float32(gain)
    np.clip(out, -1.0, 1.0, out=out)
    return out


def to_mono(stereo: np.ndarray) -> np.ndarray:
    """Fold (frames, channels) audio — soundfile's layout — to mono by the mean of the channels."""
    stereo = np.asarray(stereo)
    if stereo.ndim == 1:
        return stereo.astype(np.float32)
    if stereo.ndim != 2:
        raise ValueError(f"expected (frames, channels), got shape {stereo.shape}")
    return stereo.mean(axis=1, dtype=np.float64).astype(np.float32)
