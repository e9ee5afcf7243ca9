"""From a GAN generator's images to rolls a MIDI decoder reads exactly, and a distance of samples to data.

A generator ends in a sigmoid: every pixel of every channel is a float in [0, 1] (a roll's pixel / 255).
A roll decoder (``tasks.kernels.rolls``) turns *every non-zero* first-channel pixel into sound, so the raw
pixels, rounded, would light almost every key. Decoding therefore decides first which pixels are lit, then
what they hold:

**Lit pixels** (first channel, per key ``k``): ``value > threshold[k]`` (``Sampling(mode="threshold")``), or a
Bernoulli draw (``mode="sample"``) with probability ``sigmoid((logit(value) - offset[k]) / T)``, ``T`` the
sampling temperature. The thresholds come from :func:`fit_key_thresholds`, the offsets from
:func:`fit_key_offsets` (``GanSpec.calibrate``: on a few hundred generated samples, the per-key lit density
of the thresholded pixels, and the expected density of the draws at ``T = 1``, matched to the training
windows'). A generator's pixels are no probabilities, so the draws need their own offsets: with
``offset = logit(threshold)`` a generator whose values cluster near the threshold would light about half of
them. Without offsets ``offset[k] = logit(threshold[k])`` (a pixel at its threshold is lit with probability
1/2); without a calibration (runs made before it existed) every key's threshold is
:func:`uncalibrated_threshold`. ``T -> 0`` gives ``value > sigmoid(offset)``.

**State channel** (enc2, enc3): a lit pixel right after a silent one is ``ONSET``; a lit pixel after a lit one
is ``ONSET`` (a new note struck) when the generator's value is nearer ``ONSET / 255`` than 1, else
``SUSTAIN``; unlit pixels are 0.

**Length channel** (enc1: a note's length in columns at its onset pixel only): a lit pixel is a note of
``clip(round(255 * value), 1, 255)`` columns, cut where the next lit pixel of its key starts (so the roll and
its MIDI hold the same notes; the MIDI writer would cut it there anyway).

**Other channels**, on lit pixels only (0 elsewhere): velocity ``clip(round(255 * value), 1, 127)`` (0 would
read as a note-off); program ``clip(.., 0, 127)`` (0 is the acoustic grand piano, the data's program);
enc1's tempo byte ``clip(.., 1, 255)`` bpm.

**Sample distance** (:func:`sample_distance`, lower is better, 0 for identical statistics)::

    D = sum_k |q_fake(k) - q_real(k)|  +  |log(nd_fake / nd_real)|  +  |log(poly_fake / poly_real)|

with ``q(k)`` the share of all sounding pixels that lie on key ``k`` (a distribution over keys; the L1 term lies
in [0, 2], 2 when the fake rolls are silent), ``nd`` the note density (notes started per column) and
``poly`` the mean polyphony (sounding keys per column, over columns where at least one key sounds). The
ratios use ``(a + 1e-6) / (b + 1e-6)``. "Sounding" is the lit span of a note: the lit pixels for enc2/enc3,
each onset pixel stretched over its length for enc1.

numpy only (the caller hands over ``tensor.cpu().numpy()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storage_schemas.encodings import MAX_LENGTH, ONSET, SUSTAIN

from .decoding import Sampling

__all__ = [
    "STATE_KINDS",
    "uncalibrated_threshold",
    "threshold_for_count",
    "fit_key_thresholds",
    "fit_key_offsets",
    "lit_density",
    "lit_pixels",
    "decode_state",
    "decode_gan_images",
    "RollStats",
    "roll_stats",
    "sample_distance",
]

STATE_KINDS = ("state", "length")  # what a roll's first channel holds: CHANNEL_NAMES[encoding][0]
_EPS = 1e-6
NEVER = 1.0  # a threshold no sigmoid value passes (lit means value > threshold)
ALWAYS = -1.0  # a threshold every value passes


def uncalibrated_threshold(state_kind: str) -> float:
    """The threshold of every key when a run has no calibration.

    ``"state"``: ``ONSET / 2 / 255`` (about 0.245), halfway between a silent pixel and an onset pixel, so that a
    generator reproducing the data's pixel values exactly decodes to the same roll. ``"length"``: ``0.5 / 255``,
    the value that rounds to a length of one column (enc1's old decoding: every pixel that rounds to non-zero).
    """
    if state_kind == "state":
        return ONSET / 2 / 255.0
    if state_kind == "length":
        return 0.5 / 255.0
    raise ValueError(f"state_kind must be one of {STATE_KINDS}, got {state_kind!r}")


def threshold_for_count(values: np.ndarray, m: int) -> float:
    """A threshold with exactly ``m`` of ``values`` (1-D) above it when the values are distinct."""
    n = values.shape[0]
    if m <= 0:
        return NEVER
    if m >= n:
        return ALWAYS
    top = np.partition(values, (n - m - 1, n - m))  # ascending: the (n-m)-th and (n-m+1)-th smallest
    lo, hi = float(top[n - m - 1]), float(top[n - m])
    return (lo + hi) / 2.0


def fit_key_thresholds(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-key thresholds under which the share of ``values > threshold`` of key ``k`` is ``target[k]``.

    Parameters
    ----------
    values : ndarray
        ``(N, K, T)`` generated first-channel values in [0, 1].
    target : ndarray
        ``(K,)`` lit densities in [0, 1] (share of pixels of that key that are lit in the training windows).

    Returns
    -------
    ndarray
        ``(K,)`` float64: the midpoint between the ``m``-th and ``m+1``-th largest value of the key
        (``m = round(target * N * T)``); 1.0 (never lit) where ``m = 0``, -1.0 (always) where ``m = N * T``.
    """
    values = np.asarray(values, np.float64)
    n, k, t = values.shape
    target = np.asarray(target, np.float64)
    if target.shape != (k,):
        raise ValueError(f"target must have one density per key ({k}), got shape {target.shape}")
    per_key = values.transpose(1, 0, 2).reshape(k, n * t)  # (K, N*T)
    counts = np.rint(np.clip(target, 0.0, 1.0) * n * t).astype(np.int64)
    return np.array([threshold_for_count(per_key[i], int(counts[i])) for i in range(k)], np.float64)


def _logit(values: np.ndarray) -> np.ndarray:
    v = np.clip(values, _EPS, 1 - _EPS)
    return np.log(v / (1 - v))


MAX_OFFSET = 40.0  # |logit offsets| are clipped here: sigmoid(-40) ~ 4e-18, "never"


def fit_key_offsets(values: np.ndarray, target: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Per-key logit offsets ``b`` with ``mean(sigmoid(logit(values[:, k]) - b[k])) = target[k]`` (bisection).

    ``values``: ``(N, K, T)`` in [0, 1]; ``target``: ``(K,)``. Returns ``(K,)`` float64 in
    [-``MAX_OFFSET``, ``MAX_OFFSET``] (the bounds for densities of 1 and 0).
    """
    values = np.asarray(values, np.float64)
    n, k, t = values.shape
    z = _logit(values).transpose(1, 0, 2).reshape(k, n * t)  # (K, N*T)
    target = np.clip(np.asarray(target, np.float64), 0.0, 1.0)
    lo, hi = np.full(k, -MAX_OFFSET), np.full(k, MAX_OFFSET)
    for _ in range(iterations):  # the expected density falls as the offset grows
        mid = (lo + hi) / 2
        density = (1.0 / (1.0 + np.exp(-(z - mid[:, None])))).mean(axis=1)  # (K,)
        too_dense = density > target
        lo = np.where(too_dense, mid, lo)
        hi = np.where(too_dense, hi, mid)
    out = (lo + hi) / 2
    return np.where(target <= 0, MAX_OFFSET, np.where(target >= 1, -MAX_OFFSET, out))


def lit_density(images: np.ndarray) -> np.ndarray:
    """Per-key share of non-zero first-channel pixels of uint8 rolls ``(N, C, K, T)`` -> ``(K,)``."""
    images = np.asarray(images)
    return (images[:, 0] != 0).mean(axis=(0, 2))


def lit_pixels(values: np.ndarray, thresholds: np.ndarray, sampling: Sampling | None = None,
               offsets: np.ndarray | None = None) -> np.ndarray:
    """Which first-channel pixels are lit, ``(N, K, T)`` bool (see the module docstring).

    ``values``: ``(N, K, T)`` in [0, 1]; ``thresholds``: ``(K,)``; ``offsets``: ``(K,)`` logit offsets of the
    draws (``mode="sample"``), default ``logit(thresholds)``.
    """
    sampling = sampling or Sampling()
    values = np.asarray(values, np.float64)
    t = np.asarray(thresholds, np.float64)[None, :, None]  # (1, K, 1)
    if sampling.mode == "threshold":
        return values > t
    b = _logit(t) if offsets is None else np.asarray(offsets, np.float64)[None, :, None]
    z = (_logit(values) - b) / sampling.temperature
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))  # (N, K, T)
    p = np.where(t >= NEVER, 0.0, np.where(t < 0, 1.0, p))  # keys never / always lit in the data stay so
    rng = np.random.default_rng(sampling.seed)
    return rng.random(values.shape) < p


def decode_state(values: np.ndarray, lit: np.ndarray, state_kind: str) -> np.ndarray:
    """First-channel pixels ``(N, K, T)`` uint8 from generated values and their lit mask (module docstring)."""
    values = np.asarray(values, np.float64)
    lit = np.asarray(lit, bool)
    if state_kind == "state":
        before = np.zeros_like(lit)
        before[..., 1:] = lit[..., :-1]
        struck = np.abs(values - ONSET / 255.0) < np.abs(values - 1.0)
        onset = lit & (~before | struck)
        return np.where(onset, ONSET, np.where(lit, SUSTAIN, 0)).astype(np.uint8)
    if state_kind == "length":
        n, k, t = lit.shape
        length = np.clip(np.rint(values * 255.0), 1, MAX_LENGTH)
        cols = np.broadcast_to(np.arange(t), lit.shape)
        # the next lit column of each key after each column (t when none): a reversed running minimum
        marks = np.where(lit, cols, t)
        nxt = np.full(lit.shape, t, np.int64)
        nxt[..., :-1] = np.minimum.accumulate(marks[..., ::-1], axis=-1)[..., ::-1][..., 1:]
        room = nxt - cols  # columns until the next onset of the key (or past the window's end)
        length = np.where(nxt < t, np.minimum(length, room), length)
        return np.where(lit, length, 0).astype(np.uint8)
    raise ValueError(f"state_kind must be one of {STATE_KINDS}, got {state_kind!r}")


# what the other channels may hold on lit pixels (0 elsewhere)
_CHANNEL_RANGES = {"velocity": (1, 127), "program": (0, 127), "tempo": (1, 255)}


def decode_gan_images(images: np.ndarray, channel_names: tuple[str, ...], thresholds: np.ndarray | None = None,
                      sampling: Sampling | None = None, offsets: np.ndarray | None = None) -> np.ndarray:
    """Generated images ``(N, C, K, T)`` in [0, 1] to uint8 rolls that decode to exactly their notes.

    Parameters
    ----------
    images : ndarray
        The generator's output.
    channel_names : tuple of str
        ``storage_schemas.encodings.CHANNEL_NAMES[encoding]``; the first is ``"state"`` or ``"length"``.
    thresholds : ndarray, optional
        ``(K,)`` per-key thresholds (a calibration); default :func:`uncalibrated_threshold` on every key.
    sampling : Sampling, optional
        Threshold (default) or Bernoulli draws at a temperature.
    offsets : ndarray, optional
        ``(K,)`` logit offsets of the draws (a calibration's); default ``logit(thresholds)``.
    """
    images = np.asarray(images, np.float64)
    if images.ndim != 4 or images.shape[1] != len(channel_names):
        raise ValueError(f"images must be (N, {len(channel_names)}, keys, columns), got {images.shape}")
    state_kind = channel_names[0]
    keys = images.shape[2]
    if thresholds is None:
        thresholds = np.full(keys, uncalibrated_threshold(state_kind))
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.shape != (keys,):
        raise ValueError(f"the calibration has {thresholds.shape[0]} thresholds for images of {keys} keys; "
                         f"calibrate the run again")
    lit = lit_pixels(images[:, 0], thresholds, sampling, offsets)  # (N, K, T)
    out = np.zeros(images.shape, np.uint8)
    out[:, 0] = decode_state(images[:, 0], lit, state_kind)
    for c, name in enumerate(channel_names[1:], start=1):
        lo, hi = _CHANNEL_RANGES[name]
        out[:, c] = np.where(lit, np.clip(np.rint(images[:, c] * 255.0), lo, hi), 0)
    return out


# -- statistics of rolls and the sample distance --------------------------------------------------------


@dataclass
class RollStats:
    """Counts over a set of rolls, summable over batches (``a + b``)."""

    key_sounding: np.ndarray  # (K,) sounding pixels per key
    notes: int = 0  # notes started
    columns: int = 0  # windows x columns
    sounding_columns: int = 0  # columns where at least one key sounds
    sounding: int = 0  # sounding pixels

    def __add__(self, other: RollStats) -> RollStats:
        return RollStats(self.key_sounding + other.key_sounding, self.notes + other.notes,
                         self.columns + other.columns, self.sounding_columns + other.sounding_columns,
                         self.sounding + other.sounding)

    @property
    def note_density(self) -> float:
        """Notes started per column."""
        return self.notes / self.columns if self.columns else 0.0

    @property
    def polyphony(self) -> float:
        """Mean number of sounding keys over the columns where any sounds."""
        return self.sounding / self.sounding_columns if self.sounding_columns else 0.0


def _sounding_from_lengths(state: np.ndarray) -> np.ndarray:
    """enc1: each non-zero pixel stretched over its length, clipped at the window's end -> bool (N, K, T)."""
    n, k, t = state.shape
    delta = np.zeros((n, k, t + 1), np.int64)
    idx = np.nonzero(state)
    delta[idx] += 1
    ends = np.minimum(idx[2] + state[idx].astype(np.int64), t)
    np.add.at(delta, (idx[0], idx[1], ends), -1)
    return np.cumsum(delta, axis=-1)[..., :t] > 0


def roll_stats(state: np.ndarray, state_kind: str) -> RollStats:
    """:class:`RollStats` of first-channel uint8 pixels ``(N, K, T)``."""
    state = np.asarray(state)
    if state_kind == "state":
        sounding = state != 0
        before = np.zeros_like(sounding)
        before[..., 1:] = sounding[..., :-1]
        notes = int((sounding & (~before | (state == ONSET))).sum())
    elif state_kind == "length":
        sounding = _sounding_from_lengths(state)
        notes = int((state != 0).sum())
    else:
        raise ValueError(f"state_kind must be one of {STATE_KINDS}, got {state_kind!r}")
    per_column = sounding.sum(axis=1)  # (N, T)
    return RollStats(sounding.sum(axis=(0, 2)).astype(np.int64), notes, int(per_column.size),
                     int((per_column > 0).sum()), int(per_column.sum()))


def _log_ratio(a: float, b: float) -> float:
    return abs(float(np.log((a + _EPS) / (b + _EPS))))


def sample_distance(fake: RollStats, real: RollStats) -> float:
    """The distance of the module docstring between generated and real rolls' statistics; lower is better."""
    total_f, total_r = fake.key_sounding.sum(), real.key_sounding.sum()
    if total_f == 0 or total_r == 0:
        keys = 0.0 if total_f == total_r else 2.0
    else:
        keys = float(np.abs(fake.key_sounding / total_f - real.key_sounding / total_r).sum())
    return keys + _log_ratio(fake.note_density, real.note_density) + _log_ratio(fake.polyphony, real.polyphony)
