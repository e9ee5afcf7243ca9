"""Piano-roll image encodings: the configuration of a rendering and the pixel constants.

An image is a ``uint8`` array of shape ``(channels, rows, columns)``: row ``pitch - pitch_lo`` (row 0 is
the lowest key; previews flip it so that high notes are on top), column = time in steps of
``resolution_s``. A piece is cut into windows of ``columns`` columns starting every ``hop_columns``
columns (``hop_columns < columns`` gives overlapping windows).

========  ========  ==========================================================================
encoding  channels  pixels
========  ========  ==========================================================================
enc1      4         onset pixel only: length in columns (1..255), velocity, program, tempo (bpm)
enc2      3         whole span: ``ONSET`` at the onset column, ``SUSTAIN`` after it; velocity; program
enc3      1         enc2's first channel only
========  ========  ==========================================================================

The rendering and decoding code lives in :mod:`tasks.kernels.rolls`. This module imports neither torch, prefect
nor numba.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ENCODINGS_SCHEMA_VERSION",
    "ENCODINGS",
    "CONVENTIONS",
    "CHANNELS",
    "CHANNEL_NAMES",
    "ONSET",
    "SUSTAIN",
    "MAX_LENGTH",
    "RollConfig",
]

ENCODINGS_SCHEMA_VERSION = 1

ONSET = 125  # first channel, onset column of a note (enc2, enc3)
SUSTAIN = 255  # first channel, every later column of the note (enc2, enc3)
MAX_LENGTH = 255  # enc1 stores the length in columns in one byte

ENCODINGS = ("enc1", "enc2", "enc3")
CONVENTIONS = ("midipix", "pretty_midi")
CHANNELS = {"enc1": 4, "enc2": 3, "enc3": 1}
CHANNEL_NAMES = {
    "enc1": ("length", "velocity", "program", "tempo"),
    "enc2": ("state", "velocity", "program"),
    "enc3": ("state",),
}


@dataclass(frozen=True)
class RollConfig:
    """How notes become images.

    Parameters
    ----------
    encoding : str
        ``"enc1"``, ``"enc2"`` or ``"enc3"`` (see the module docstring).
    resolution_s : float
        Seconds per column (0.05 s: 200 columns = 10 s).
    columns : int
        Columns per window.
    hop_columns : int
        Columns between the starts of two consecutive windows, ``1 <= hop_columns <= columns``; less than
        ``columns`` makes windows overlap. It may not exceed ``columns``: every column of a piece lies in a
        window.
    pitch_lo, pitch_hi : int
        Lowest and highest MIDI pitch drawn (inclusive); 21..108 are the 88 piano keys.
    pedal : bool
        Draw notes up to their sustain-pedal release (``offset_pedal_s``) instead of the key release.
    convention : str
        Seconds to columns. ``"midipix"``: ``floor(t / resolution)`` with every note at least one column
        long. ``"pretty_midi"``: ``int(t * fs)`` for both ends, so notes shorter than a column may vanish
        (what ``pretty_midi``'s ``get_piano_roll`` does).
    """

    encoding: str
    resolution_s: float = 0.05
    columns: int = 200
    hop_columns: int = 200
    pitch_lo: int = 21
    pitch_hi: int = 108
    pedal: bool = False
    convention: str = "midipix"

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")
        res = self.resolution_s
        if isinstance(res, bool) or not isinstance(res, (int, float)) or not math.isfinite(res) or res <= 0:
            raise ValueError(f"resolution_s must be a positive number, got {res!r}")
        object.__setattr__(self, "resolution_s", float(res))
        for name in ("columns", "hop_columns", "pitch_lo", "pitch_hi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if self.columns < 1:
            raise ValueError(f"columns must be >= 1, got {self.columns}")
        if not 1 <= self.hop_columns <= self.columns:
            raise ValueError(f"hop_columns must be in 1..columns ({self.columns}), got {self.hop_columns}")
        if not 0 <= self.pitch_lo <= self.pitch_hi <= 127:
            raise ValueError(f"need 0 <= pitch_lo <= pitch_hi <= 127, got {self.pitch_lo}..{self.pitch_hi}")
        if not isinstance(self.pedal, bool):
            raise ValueError(f"pedal must be a bool, got {self.pedal!r}")

    @property
    def rows(self) -> int:
        """Number of pitches drawn (88 for the piano)."""
        return self.pitch_hi - self.pitch_lo + 1

    @property
    def channels(self) -> int:
        return CHANNELS[self.encoding]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one window image: ``(channels, rows, columns)``."""
        return (self.channels, self.rows, self.columns)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": ENCODINGS_SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RollConfig:
        """Rebuild a config written by :meth:`to_dict`; unknown keys or another schema version fail."""
        data = dict(data)
        version = data.pop("schema_version", ENCODINGS_SCHEMA_VERSION)
        if version != ENCODINGS_SCHEMA_VERSION:
            raise ValueError(f"unsupported RollConfig schema_version {version!r}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown RollConfig keys: {sorted(unknown)}")
        return cls(**data)
