"""From a network's outputs to the pixels a roll decoder reads: how a sample is drawn.

Every model ends in scores per pixel (a sigmoid value, 3-class logits, a generator's image); a roll's state
channel holds exactly 0 (silent), ``ONSET`` (a note starts) or ``SUSTAIN`` (it is held). A
:class:`Sampling` says how one becomes the other:

- ``mode="threshold"``: a pixel is lit where its score passes the run's calibrated threshold for its key;
- ``mode="sample"``: a pixel is lit with a probability from its score, sharpened or flattened by
  ``temperature`` (seeded by ``seed``, so a sample is reproducible).

The calibration (per-key thresholds fitted on the training split so that the density of lit and onset
pixels of the output matches the data's) is computed once per checkpoint by ``ModelSpec.calibrate`` and
stored with the run as plain JSON.

Scores and calibrations describe a roll's *state* channel (enc2, enc3). enc1's first channel holds note
lengths at onset pixels instead: its sequence models keep their own decode path (the nearest length in
0..255), and calibration and the onset F1 do not apply to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from storage_schemas.encodings import ONSET, SUSTAIN

from .configs import config_from_dict

__all__ = ["SAMPLING_MODES", "Sampling", "Calibration", "DEFAULT_THRESHOLD", "regression_scores",
           "classes3_scores", "scores_of", "density_threshold", "density_offset", "tempered", "decode",
           "onset_f1_counts", "f1"]

SAMPLING_MODES = ("threshold", "sample")


@dataclass(frozen=True)
class Sampling:
    """How scores become pixels when a model generates.

    Parameters
    ----------
    mode : str
        ``"sample"`` (Bernoulli / softmax draws; the default) or ``"threshold"`` (the calibrated per-key
        thresholds; deterministic). Draws are the default because thresholds, fitted on teacher-forced
        scores, start too few notes once a model runs on its own output: measured on 60 MAESTRO pieces
        (enc2, 150 s of CPU training), free-running lstm / lstm-classes3 continuations held 0.09x / 0.04x
        the test split's notes per second with thresholds and 0.89x / 0.70x with draws at temperature 1.
        Teacher-forced scoring always uses the thresholds.
    temperature : float
        ``"sample"`` only: > 0; below 1 sharpens the probabilities towards the thresholded output, above 1
        flattens them.
    seed : int
        Seed of the draws.
    """

    mode: str = "sample"
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {self.mode!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sampling:
        return config_from_dict(cls, data)


# -- scores ------------------------------------------------------------------------------------------

DEFAULT_THRESHOLD = 0.5  # a run without a calibration (runs trained before calibrations were stored)
ONSET_LEVEL = ONSET / 255.0  # a regression head's target value at an onset pixel (125/255 = 0.49)
MIN_POSITIVES = 20  # a key with fewer positive training pixels takes the pooled threshold


def regression_scores(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lit, onset)`` scores of a regression head's values in [0, 1], each the shape of ``values``.

    ``lit`` is the value itself (trained towards 0 on silent pixels, 125/255 on onsets, 1 on held ones).
    ``onset`` says how much closer the value lies to the onset level ``ONSET/255`` than to 1 (the held
    level): ``(1 - v) / (1 - ONSET/255)`` clipped to [0, 1], so 1 at or below the onset level, 0 at 1 and
    0.5 half-way. It only matters where the key is lit.
    """
    v = values.float().clamp(0.0, 1.0)
    return v, ((1.0 - v) / (1.0 - ONSET_LEVEL)).clamp(0.0, 1.0)


def classes3_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lit, onset)`` scores of 3-class logits ``(..., 3)`` (silent / onset / held), each ``(...)``:
    ``lit = 1 - p(silent)``, ``onset = p(onset) / (p(onset) + p(held))``."""
    p = torch.softmax(logits.float(), dim=-1)
    return 1.0 - p[..., 0], p[..., 1] / (p[..., 1] + p[..., 2]).clamp_min(1e-12)


def scores_of(output: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`regression_scores` or :func:`classes3_scores` of a model's output, by ``head``."""
    return classes3_scores(output) if head == "classes3" else regression_scores(output)


# -- calibration -------------------------------------------------------------------------------------


def density_threshold(scores: np.ndarray, positives: int) -> float:
    """The threshold under which ``score > threshold`` holds for ``positives`` of ``scores`` (ties aside):
    half-way between the ``positives``-th and the next highest score; above the highest for 0."""
    s = np.sort(np.asarray(scores, np.float64).ravel())[::-1]  # descending
    if s.size == 0:
        return DEFAULT_THRESHOLD
    k = int(np.clip(positives, 0, s.size))
    if k == 0:
        return float(np.nextafter(s[0], np.inf))
    if k == s.size:
        return float(np.nextafter(s[-1], -np.inf))
    return float((s[k - 1] + s[k]) / 2.0)


def _np_logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def density_offset(scores: np.ndarray, threshold: float, density: float, max_pixels: int = 20_000) -> float:
    """The offset ``a`` for which ``sigmoid(a + logit(score) - logit(threshold))`` averages ``density`` over
    ``scores`` (bisection; at most ``max_pixels`` evenly spaced scores): draws at temperature 1 are then as
    dense as the data, on the scores' distribution."""
    s = np.asarray(scores, np.float64).ravel()
    if s.size == 0 or density <= 0:
        return -20.0
    s = s[:: max(1, s.size // max_pixels)]
    z = _np_logit(s) - _np_logit(threshold)
    lo, hi = -20.0, 20.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if (1.0 / (1.0 + np.exp(-(mid + z)))).mean() < density:
            lo = mid
        else:
            hi = mid
    return float((lo + hi) / 2)


def _fit_keys(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray, min_positives: int
              ) -> tuple[list[float], list[float], list[float], float]:
    """Per-key thresholds and draw offsets (:func:`density_offset`) matching each key's density of
    ``targets`` among the ``mask`` pixels of ``(N, K)`` arrays; keys with fewer than ``min_positives``
    positives take the pooled ones. Returns thresholds, offsets, densities and the pooled density."""
    pos = (targets & mask).sum(axis=0)  # (K,)
    tot = mask.sum(axis=0)
    pooled_density = float(pos.sum() / max(1, tot.sum()))
    pooled = density_threshold(scores[mask], int(pos.sum()))
    pooled_offset = density_offset(scores[mask], pooled, pooled_density)
    thresholds, offsets, densities = [], [], []
    for k in range(scores.shape[1]):
        m = mask[:, k]
        densities.append(float(pos[k] / tot[k]) if tot[k] else 0.0)
        if pos[k] >= min_positives:
            thresholds.append(density_threshold(scores[m, k], int(pos[k])))
            offsets.append(density_offset(scores[m, k], thresholds[-1], densities[-1]))
        else:
            thresholds.append(pooled)
            offsets.append(pooled_offset)
    return thresholds, offsets, densities, pooled_density


@dataclass(frozen=True)
class Calibration:
    """Per-key thresholds that make a model's output as dense as the data it was fitted on.

    The lit threshold depends on the key's previous column: ``lit_thresholds[k]``: key ``k``, silent in the
    previous column, sounds (starts a note) where its lit score is above it; ``hold_thresholds[k]``: key
    ``k``, lit in the previous column, keeps sounding where its lit score is above it (empty: the lit
    thresholds). ``onset_thresholds[k]``: a key lit in the previous column too starts a new note (a
    re-strike) where its onset score is above it (a key lit after silence always starts one).

    Fitted by density matching (:meth:`fit`) on teacher-forced scores: the lit threshold of a key lets as
    many of its after-silence scores pass as its after-silence training pixels are lit, the hold threshold
    as many of its after-lit scores as its after-lit pixels stay lit (so notes start and end as often as
    in the data: one threshold for both let a model whose "still held" scores are high hold every note
    for ever), the onset threshold as many of its lit-after-lit pixels as are onsets in the data.
    ``lit_density``, ``hold_density`` and ``onset_density`` are those training densities (per key;
    ``pooled_*`` over all keys), ``windows`` and ``pixels`` what they were counted on. ``*_offsets``: the
    log-odds at a key's threshold that ``sample`` mode draws with at temperature 1 (:func:`tempered`),
    fitted so that the draws are as dense as the data on the training scores (:func:`density_offset`);
    empty: ``logit(threshold)``, i.e. the model's own probabilities.
    """

    lit_thresholds: tuple[float, ...]
    onset_thresholds: tuple[float, ...]
    lit_density: tuple[float, ...] = ()
    onset_density: tuple[float, ...] = ()
    pooled_lit_density: float = 0.0
    pooled_onset_density: float = 0.0
    windows: int = 0
    pixels: int = 0
    min_positives: int = MIN_POSITIVES
    lit_offsets: tuple[float, ...] = ()
    onset_offsets: tuple[float, ...] = ()
    hold_thresholds: tuple[float, ...] = ()
    hold_offsets: tuple[float, ...] = ()
    hold_density: tuple[float, ...] = ()
    pooled_hold_density: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lit_thresholds", "onset_thresholds", "lit_density", "onset_density", "lit_offsets",
                     "onset_offsets", "hold_thresholds", "hold_offsets", "hold_density"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if len(self.lit_thresholds) != len(self.onset_thresholds):
            raise ValueError("a calibration needs as many onset thresholds as lit thresholds (one per key)")

    @property
    def keys(self) -> int:
        return len(self.lit_thresholds)

    @classmethod
    def default(cls, keys: int, threshold: float = DEFAULT_THRESHOLD) -> Calibration:
        """No calibration: every key at ``threshold`` (0.5) for both scores."""
        return cls((threshold,) * keys, (threshold,) * keys)

    @classmethod
    def fit(cls, lit: np.ndarray, onset: np.ndarray, state: np.ndarray, prev_state: np.ndarray,
            min_positives: int = MIN_POSITIVES, windows: int = 0) -> Calibration:
        """Fit on teacher-forced scores ``lit``, ``onset`` ``(N, K)`` of N columns (any leading shape is
        flattened) against the real state pixels ``state`` and those of the column before ``prev_state``."""
        K = lit.shape[-1]
        lit, onset = np.asarray(lit, np.float32).reshape(-1, K), np.asarray(onset, np.float32).reshape(-1, K)
        state, prev_state = np.asarray(state).reshape(-1, K), np.asarray(prev_state).reshape(-1, K)
        on, prev_on = state != 0, prev_state != 0
        lit_thr, lit_off, lit_dens, lit_pool = _fit_keys(lit, on, ~prev_on, min_positives)
        hold_thr, hold_off, hold_dens, hold_pool = _fit_keys(lit, on, prev_on, min_positives)
        on_thr, on_off, on_dens, on_pool = _fit_keys(onset, state == ONSET, on & prev_on, min_positives)
        return cls(tuple(lit_thr), tuple(on_thr), tuple(lit_dens), tuple(on_dens), lit_pool, on_pool,
                   int(windows), int(lit.shape[0]), int(min_positives), tuple(lit_off), tuple(on_off),
                   tuple(hold_thr), tuple(hold_off), tuple(hold_dens), hold_pool)

    def thresholds(self, which: str) -> tuple[float, ...]:
        """``lit``, ``hold`` or ``onset`` thresholds; hold: the lit ones where none were fitted."""
        own = getattr(self, f"{which}_thresholds")
        return own if len(own) == self.keys else self.lit_thresholds

    def offsets(self, which: str) -> tuple[float, ...]:
        """``lit``, ``hold`` or ``onset`` draw offsets; ``logit(threshold)`` where none were fitted."""
        fitted, thresholds = getattr(self, f"{which}_offsets"), self.thresholds(which)
        return fitted if len(fitted) == self.keys else tuple(float(v) for v in _np_logit(thresholds))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return config_from_dict(cls, data)


# -- decoding ----------------------------------------------------------------------------------------


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def tempered(score: torch.Tensor, threshold: torch.Tensor, temperature: float,
             offset: torch.Tensor | None = None) -> torch.Tensor:
    """The probability a draw uses: ``sigmoid(offset + (logit(score) - logit(thr)) / temperature)``.

    ``offset`` defaults to ``logit(thr)``: then temperature 1 gives the score itself (the model's own
    probability); a calibration's fitted offsets instead make the draws at temperature 1 as dense as the
    data (:func:`density_offset`). Towards 0 the probability becomes 1 above the calibrated threshold and
    0 below it (the threshold decode); above 1 it flattens towards ``sigmoid(offset)``. For a classes3 head
    (``lit = 1 - p(silent)``) this is the temperature-scaled two-way softmax of silent against sounding
    (and of onset against held), its logits shifted so that its decision boundary is the threshold.
    """
    thr = _logit(threshold.to(score))
    offset = thr if offset is None else offset.to(score)
    return torch.sigmoid(offset + (_logit(score.float()) - thr) / temperature)


def decode(lit: torch.Tensor, onset: torch.Tensor, prev_lit: torch.Tensor, calibration: Calibration | None,
           sampling: Sampling | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """State pixels (uint8: 0, ``ONSET`` or ``SUSTAIN``) of one or more columns from their scores.

    Parameters
    ----------
    lit, onset : Tensor
        ``(..., K)`` scores (:func:`scores_of`).
    prev_lit : Tensor
        ``(..., K)`` bool: whether each key sounded in the column before.
    calibration : Calibration or None
        Per-key thresholds; None: :data:`DEFAULT_THRESHOLD` for every key.
    sampling : Sampling, optional
        ``threshold`` (the default here, when None: teacher-forced predictions and validation decode
        this way; generation passes its own, drawing by default): lit where ``lit`` passes the key's lit threshold (after a silent column)
        or hold threshold (after a lit one); ``sample``: lit drawn with probability
        :func:`tempered` with the calibration's offsets (seeded by ``generator``). The same rule, with the onset thresholds, says whether
        a key that was lit before starts a new note.
    generator : torch.Generator, optional
        The source of the draws (``sample`` mode).

    Returns
    -------
    Tensor
        uint8 ``(..., K)``: a lit key after a silent column is an ``ONSET``; a lit key after a lit one is an
        ``ONSET`` where its onset score passes, else ``SUSTAIN``; an unlit key is 0.
    """
    sampling = sampling or Sampling("threshold")
    K = lit.shape[-1]
    calibration = calibration or Calibration.default(K)
    if calibration.keys != K:
        raise ValueError(f"the calibration has {calibration.keys} keys, the scores {K}; recalibrate the run")
    prev_lit = prev_lit.bool()
    per_key = lambda values: torch.tensor(values, device=lit.device)  # noqa: E731
    lit_thr = torch.where(prev_lit, per_key(calibration.thresholds("hold")), per_key(calibration.lit_thresholds))
    onset_thr = per_key(calibration.onset_thresholds)
    if sampling.mode == "threshold":
        is_lit, restrike = lit > lit_thr, onset > onset_thr
    else:
        lit_off = torch.where(prev_lit, per_key(calibration.offsets("hold")), per_key(calibration.offsets("lit")))
        onset_off = per_key(calibration.offsets("onset"))
        p_lit = tempered(lit, lit_thr, sampling.temperature, lit_off)
        p_onset = tempered(onset, onset_thr, sampling.temperature, onset_off)
        is_lit = torch.rand(p_lit.shape, generator=generator, device=p_lit.device) < p_lit
        restrike = torch.rand(p_onset.shape, generator=generator, device=p_onset.device) < p_onset
    starts = ~prev_lit | restrike
    out = torch.where(starts, ONSET, SUSTAIN).to(torch.uint8)
    return torch.where(is_lit, out, torch.zeros_like(out))


def onset_f1_counts(pred: np.ndarray, real: np.ndarray) -> dict[str, int]:
    """True / false positives and false negatives of lit pixels (``frame_*``) and of onset pixels
    (``onset_*``) of predicted against real state pixels of the same shape."""
    pred, real = np.asarray(pred), np.asarray(real)
    out = {}
    for name, p, r in (("frame", pred != 0, real != 0), ("onset", pred == ONSET, real == ONSET)):
        out[f"{name}_tp"] = int((p & r).sum())
        out[f"{name}_fp"] = int((p & ~r).sum())
        out[f"{name}_fn"] = int((~p & r).sum())
    return out


def f1(tp: int, fp: int, fn: int) -> float:
    """``2 tp / (2 tp + fp + fn)``; 0 when there is nothing to find and nothing found."""
    return 2.0 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
