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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .configs import config_from_dict

__all__ = ["SAMPLING_MODES", "Sampling"]

SAMPLING_MODES = ("threshold", "sample")


@dataclass(frozen=True)
class Sampling:
    """How scores become pixels when a model generates.

    Parameters
    ----------
    mode : str
        ``"threshold"`` (the calibrated per-key thresholds; deterministic) or ``"sample"`` (Bernoulli /
        softmax draws).
    temperature : float
        ``"sample"`` only: > 0; below 1 sharpens the probabilities towards the thresholded output, above 1
        flattens them.
    seed : int
        Seed of the draws.
    """

    mode: str = "threshold"
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
