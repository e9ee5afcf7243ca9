"""Image encodings and the configs that say how a piece becomes images.

Every dataset is rendered under one frozen, versioned config object — :class:`RollConfig` for piano
rolls, :class:`HilbertConfig` for audio images — and, for the train split's variants,
:class:`AugmentConfig`. Each is defined once, here: its defaults, its validation (``__post_init__``),
``to_dict`` / ``from_dict`` (unknown keys and other schema versions fail) and, in each field's metadata,
the one-line help that the CLI and the Prefect form show. A dataset's manifest stores its config's
``to_dict()``; :func:`config_from_dict` rebuilds the right class from it.

An encoding is a typed :class:`Encoding` (``ENCODINGS[name]``): its name, the config class it is
rendered under, its channels and pixel type. Code that treats encodings differently dispatches on
``Encoding.kind`` / the config's class, never on a name's spelling or a channel count.

A roll image is a ``uint8`` array of shape ``(channels, rows, columns)``: row ``pitch - pitch_lo`` (row 0
is the lowest key; previews flip it so that high notes are on top), column = time in steps of
``resolution_s``. A piece is cut into windows of ``columns`` columns starting every ``hop_columns``
columns (``hop_columns < columns`` gives overlapping windows).

========  ========  ==========================================================================
encoding  channels  pixels
========  ========  ==========================================================================
enc1      4         onset pixel only: length in columns (1..255), velocity, program, tempo (bpm)
enc2      3         whole span: ``ONSET`` at the onset column, ``SUSTAIN`` after it; velocity; program
enc3      1         enc2's first channel only
hilbert   1         ``float16`` in [0, 1]: 4**order audio samples on an order-``order`` Hilbert curve
========  ========  ==========================================================================

The rendering and decoding code lives in :mod:`tasks.kernels.rolls` and :mod:`tasks.kernels.hilbert`.
This module imports neither torch, prefect nor numba.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Union

from storage_schemas.tables import SPLITS

__all__ = [
    "ENCODINGS_SCHEMA_VERSION",
    "ENCODINGS",
    "ROLL_ENCODINGS",
    "CONVENTIONS",
    "AUDIO_MODES",
    "TIMBRES",
    "CHANNELS",
    "CHANNEL_NAMES",
    "ONSET",
    "SUSTAIN",
    "MAX_LENGTH",
    "Encoding",
    "RollConfig",
    "HilbertConfig",
    "AugmentConfig",
    "ImageConfig",
    "get_encoding",
    "config_from_dict",
    "field_default",
]

ENCODINGS_SCHEMA_VERSION = 1

ONSET = 125  # first channel, onset column of a note (enc2, enc3)
SUSTAIN = 255  # first channel, every later column of the note (enc2, enc3)
MAX_LENGTH = 255  # enc1 stores the length in columns in one byte

CONVENTIONS = ("midipix", "pretty_midi")
AUDIO_MODES = ("auto", "recorded", "synth")
TIMBRES = ("piano", "guitar")


def field_default(cls: type, name: str) -> Any:
    """The default of a config class's field, stated once in the class (the CLI and the forms read it)."""
    f = cls.__dataclass_fields__[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _help(text: str, **bounds: float) -> dict[str, Any]:
    """Field metadata: the help line the CLI and the Prefect form show, and numeric bounds for the form."""
    return {"help": text, **bounds}


def _check_dict(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` less its ``schema_version``; another version or a key ``cls`` does not have fails."""
    data = dict(data)
    version = data.pop("schema_version", ENCODINGS_SCHEMA_VERSION)
    if version != ENCODINGS_SCHEMA_VERSION:
        raise ValueError(f"unsupported {cls.__name__} schema_version {version!r}")
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return data


class _ImageConfig:
    """What both image configs share: their encoding's entry, and their stored form."""

    @property
    def spec(self) -> Encoding:
        return ENCODINGS[self.encoding]

    def _check_encoding(self) -> None:
        entry = ENCODINGS.get(self.encoding)
        if entry is None or entry.config_type is not type(self):
            names = tuple(n for n, e in ENCODINGS.items() if e.config_type is type(self))
            raise ValueError(f"encoding must be one of {names}, got {self.encoding!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": ENCODINGS_SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild a config written by :meth:`to_dict`; unknown keys or another schema version fail."""
        return cls(**_check_dict(cls, data))


def _int_field(obj: Any, name: str, lo: int | None = None, hi: int | None = None) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")


@dataclass(frozen=True)
class RollConfig(_ImageConfig):
    """How notes become piano-roll images (enc1, enc2, enc3).

    Parameters
    ----------
    encoding : str
        ``"enc1"``, ``"enc2"`` or ``"enc3"`` (see the module docstring).
    resolution_s : float
        Seconds per column (0.05 s: 200 columns = 10 s).
    columns : int
        Columns per window.
    hop_columns : int or None
        Columns between the starts of two consecutive windows, ``1 <= hop_columns <= columns``; less than
        ``columns`` makes windows overlap. It may not exceed ``columns``: every column of a piece lies in a
        window. ``None`` (the default) means ``columns``: windows side by side.
    pitch_lo, pitch_hi : int
        Lowest and highest MIDI pitch drawn (inclusive); 21..108 are the 88 piano keys.
    pedal : bool
        Draw notes up to their sustain-pedal release (``offset_pedal_s``) instead of the key release.
    convention : str
        Seconds to columns. ``"midipix"``: ``floor(t / resolution)`` with every note at least one column
        long. ``"pretty_midi"``: ``int(t * fs)`` for both ends, so notes shorter than a column may vanish
        (what ``pretty_midi``'s ``get_piano_roll`` does).
    """

    encoding: Literal["enc1", "enc2", "enc3"]
    resolution_s: float = field(default=0.05, metadata=_help("Seconds per column (0.05: 200 columns = 10 s)", gt=0))
    columns: int = field(default=200, metadata=_help("Columns per image (window length)", ge=1, le=100_000))
    hop_columns: int | None = field(default=None, metadata=_help(
        "Columns between window starts; less than the columns makes windows overlap (empty: the columns)", ge=1))
    pitch_lo: int = field(default=21, metadata=_help("Lowest MIDI pitch drawn (21: the piano's A0)", ge=0, le=127))
    pitch_hi: int = field(default=108, metadata=_help("Highest MIDI pitch drawn (108: the piano's C8)", ge=0, le=127))
    pedal: bool = field(default=False, metadata=_help("Draw notes for as long as the sustain pedal holds them"))
    convention: Literal["midipix", "pretty_midi"] = field(default="midipix", metadata=_help(
        "Seconds to columns: midipix keeps every note (at least one column); pretty_midi drops notes "
        "shorter than a column, as its get_piano_roll does"))

    kind: ClassVar[str] = "roll"

    def __post_init__(self) -> None:
        self._check_encoding()
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")
        res = self.resolution_s
        if isinstance(res, bool) or not isinstance(res, (int, float)) or not math.isfinite(res) or res <= 0:
            raise ValueError(f"resolution_s must be a positive number, got {res!r}")
        object.__setattr__(self, "resolution_s", float(res))
        if self.hop_columns is None:
            object.__setattr__(self, "hop_columns", self.columns)
        for name in ("columns", "hop_columns", "pitch_lo", "pitch_hi"):
            _int_field(self, name)
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
        return self.spec.channels

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one window image: ``(channels, rows, columns)``."""
        return (self.channels, self.rows, self.columns)



@dataclass(frozen=True)
class HilbertConfig(_ImageConfig):
    """Audio images: a piece's recording, or its notes rendered by the built-in synthesizer, cut into
    blocks of ``4**order`` samples laid on an order-``order`` Hilbert curve (``float16`` in [0, 1]).

    ``audio`` picks the sound: ``"auto"`` the piece's recording when it has one, else the synthesizer;
    ``"recorded"`` the recording only (a piece without one is a reject); ``"synth"`` the synthesizer
    only. ``timbre`` and ``pedal`` concern the synthesizer. Recordings are folded to mono and resampled
    to ``sample_rate``. The ``hilbert-guitar`` encoding is always synthesized with the guitar timbre.
    """

    encoding: Literal["hilbert", "hilbert-guitar"] = "hilbert"
    order: int = field(default=8, metadata=_help("Hilbert curve order: 8 gives 256 x 256 images of 65,536 samples",
                                                 ge=1, le=12))
    sample_rate: int = field(default=44100, metadata=_help("Samples per second of the sound", ge=8000))
    timbre: Literal["piano", "guitar"] = field(default="piano", metadata=_help("Synthesizer timbre"))
    pedal: bool = field(default=True, metadata=_help(
        "Synthesizer: sound notes for as long as the sustain pedal holds them"))
    audio: Literal["auto", "recorded", "synth"] = field(default="auto", metadata=_help(
        "auto: a piece's recording (a same-stem WAV/FLAC/... beside the MIDI file) when it has one, else the "
        "synthesizer; recorded: recordings only (pieces without one are left out); synth: the synthesizer only"))

    kind: ClassVar[str] = "audio"

    def __post_init__(self) -> None:
        self._check_encoding()
        _int_field(self, "order", 1, 12)
        _int_field(self, "sample_rate", 8000)
        if self.timbre not in TIMBRES:
            raise ValueError(f"timbre must be one of {TIMBRES}, got {self.timbre!r}")
        if self.audio not in AUDIO_MODES:
            raise ValueError(f"audio must be one of {AUDIO_MODES}, got {self.audio!r}")
        if not isinstance(self.pedal, bool):
            raise ValueError(f"pedal must be a bool, got {self.pedal!r}")
        if self.encoding == "hilbert-guitar" and (self.timbre, self.audio) != ("guitar", "synth"):
            raise ValueError("hilbert-guitar images are synthesized with the guitar timbre "
                             "(timbre='guitar', audio='synth')")

    @property
    def channels(self) -> int:
        return 1

    @property
    def side(self) -> int:
        return 1 << self.order

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.side, self.side)



@dataclass(frozen=True)
class AugmentConfig:
    """Which augmented variants of a piece to render (seeded; recorded per image in the manifest).

    Attributes
    ----------
    transpositions
        Shifts in semitones rendered besides the original (0 and repeats are ignored).
    noise_fraction
        Probability a note gets pitch noise; 0 renders no noisy variants.
    noise_sigma
        Standard deviation of the noise, in semitones.
    seed
        Root seed; every noisy variant's seed derives from it (``tasks.kernels.augment.plan``).
    apply_to_splits
        Splits that get augmented variants; the others render only the original.
    """

    transpositions: tuple[int, ...] = field(default=(), metadata=_help(
        "Semitone shifts rendered besides the original, e.g. [-2, 2]; a shift that would push a note off "
        "the keyboard is skipped"))
    noise_fraction: float = field(default=0.0, metadata=_help("Fraction of notes given pitch noise (0: none)",
                                                              ge=0, le=1))
    noise_sigma: float = field(default=1.0, metadata=_help("Standard deviation of the pitch noise, in semitones",
                                                           ge=0))
    seed: int = field(default=0, metadata=_help("Seed of the pitch noise", ge=0))
    apply_to_splits: tuple[Literal["train", "validation", "test"], ...] = field(
        default=("train",), metadata=_help("Splits that get the augmented variants"))

    def __post_init__(self) -> None:
        ks = tuple(self.transpositions)
        if not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in ks):
            raise ValueError(f"transpositions must be integers, got {ks!r}")
        if any(abs(int(k)) > 127 for k in ks):
            raise ValueError(f"transpositions must lie in -127..127, got {ks!r}")
        object.__setattr__(self, "transpositions", tuple(int(k) for k in ks))
        if not 0.0 <= self.noise_fraction <= 1.0:
            raise ValueError(f"noise_fraction must lie in [0, 1], got {self.noise_fraction!r}")
        if not self.noise_sigma >= 0.0:
            raise ValueError(f"noise_sigma must be >= 0, got {self.noise_sigma!r}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        object.__setattr__(self, "seed", int(seed))
        splits = (self.apply_to_splits,) if isinstance(self.apply_to_splits, str) else tuple(self.apply_to_splits)
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"unknown splits {unknown!r}; splits are {SPLITS}")
        object.__setattr__(self, "apply_to_splits", splits)
        object.__setattr__(self, "noise_fraction", float(self.noise_fraction))
        object.__setattr__(self, "noise_sigma", float(self.noise_sigma))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists for tuples)."""
        d = asdict(self)
        d["transpositions"] = list(self.transpositions)
        d["apply_to_splits"] = list(self.apply_to_splits)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take the defaults."""
        kw = _check_dict(cls, data)
        for key in ("transpositions", "apply_to_splits"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


ImageConfig = Union[RollConfig, HilbertConfig]


@dataclass(frozen=True)
class Encoding:
    """One encoding: its name, the config class it is rendered under, and what its images hold.

    ``fixed`` are config fields the encoding sets whatever the user asked (``hilbert-guitar`` is always
    synthesized with the guitar timbre).
    """

    name: str
    config_type: type
    channel_names: tuple[str, ...]
    dtype: str
    summary: str
    fixed: tuple[tuple[str, Any], ...] = ()

    @property
    def kind(self) -> str:
        """``"roll"`` or ``"audio"``: which family of renderers, decoders and previews applies."""
        return self.config_type.kind

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    def config(self, base: ImageConfig | None = None, **changes: Any) -> ImageConfig:
        """This encoding's config: ``base``'s settings (of the same kind; default the defaults) with
        ``changes`` and this encoding's fixed fields applied."""
        if base is not None and not isinstance(base, self.config_type):
            raise TypeError(f"{self.name} is rendered under a {self.config_type.__name__}, "
                            f"got a {type(base).__name__}")
        fields = {} if base is None else {k: v for k, v in asdict(base).items() if k != "encoding"}
        return self.config_type(encoding=self.name, **{**fields, **changes, **dict(self.fixed)})


ENCODINGS: dict[str, Encoding] = {e.name: e for e in (
    Encoding("enc1", RollConfig, ("length", "velocity", "program", "tempo"), "uint8",
             "onset pixel only: length in columns, velocity, program, tempo"),
    Encoding("enc2", RollConfig, ("state", "velocity", "program"), "uint8",
             "whole notes: onset 125 / sustain 255, velocity, program"),
    Encoding("enc3", RollConfig, ("state",), "uint8", "enc2's first channel only"),
    Encoding("hilbert", HilbertConfig, ("signal",), "float16",
             "the recording (or the synthesizer) on a Hilbert curve"),
    Encoding("hilbert-guitar", HilbertConfig, ("signal",), "float16",
             "the notes synthesized with a guitar timbre on a Hilbert curve (the paper's style transfer)",
             fixed=(("timbre", "guitar"), ("audio", "synth"))),
)}
ROLL_ENCODINGS = tuple(name for name, e in ENCODINGS.items() if e.kind == "roll")
CHANNELS = {name: e.channels for name, e in ENCODINGS.items()}
CHANNEL_NAMES = {name: e.channel_names for name, e in ENCODINGS.items()}


def get_encoding(name: str) -> Encoding:
    """The encoding called ``name``; an unknown name fails with the list of known ones."""
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ValueError(f"unknown encoding {name!r}; choose from {', '.join(ENCODINGS)}") from None


def config_from_dict(data: dict[str, Any]) -> ImageConfig:
    """The image config a dataset manifest stores (``config.to_dict()``), as its class."""
    if not isinstance(data, dict) or "encoding" not in data:
        raise ValueError(f"not an image config (no 'encoding'): {data!r}")
    return get_encoding(data["encoding"]).config_type.from_dict(data)
