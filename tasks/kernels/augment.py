"""MIDI augmentation on note arrays: transposition and "wrong note" pitch noise (the paper's two).

Everything here works on the ``pitch`` column alone and is pure and seeded: a function returns the new
pitches of the notes it keeps and a boolean ``keep`` mask over its input, so a caller slices every other
column it carries (onsets, velocities, ...) with the same mask. Nothing ever wraps or clips a pitch:
a note that would leave ``lo..hi`` (the piano's 21..108 by default) is dropped and counted, or the whole
transposition is skipped.
"""

from __future__ import annotations

import numpy as np

from storage_schemas.encodings import AugmentConfig
from storage_schemas.tables import SPLITS

PIANO_LO, PIANO_HI = 21, 108
POLICIES = ("skip", "drop")


def _check_range(lo: int, hi: int) -> None:
    if not 0 <= lo <= hi <= 127:
        raise ValueError(f"need 0 <= lo <= hi <= 127, got lo={lo}, hi={hi}")


def transpose(
    pitch: np.ndarray, k: int, lo: int = PIANO_LO, hi: int = PIANO_HI, policy: str = "skip"
) -> tuple[np.ndarray | None, np.ndarray, int]:
    """Shift every note by ``k`` semitones.

    Parameters
    ----------
    pitch
        Note pitches, any integer dtype.
    k
        Semitones to shift by (negative: down).
    lo, hi
        The pitch range the result must lie in (inclusive). Notes already outside it count as out.
    policy
        ``"skip"``: if any shifted note falls outside ``lo..hi`` the transposition is skipped as a whole.
        ``"drop"``: the notes that fall outside are dropped.

    Returns
    -------
    new_pitch
        Shifted pitches of the kept notes (input dtype), or None when ``"skip"`` skipped the shift.
    keep
        Boolean mask over the input: the notes ``new_pitch`` holds (all False when skipped).
    n_out
        How many shifted notes fell outside ``lo..hi`` (dropped, or the reason for the skip).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    _check_range(lo, hi)
    p = np.asarray(pitch)
    shifted = p.astype(np.int64) + int(k)  # wide type: uint8 arithmetic would wrap
    keep = (shifted >= lo) & (shifted <= hi)
    n_out = int(p.shape[0] - np.count_nonzero(keep))
    if n_out and policy == "skip":
        return None, np.zeros_like(keep), n_out
    return shifted[keep].astype(p.dtype), keep, n_out


def pitch_noise(
    pitch: np.ndarray,
    fraction: float,
    sigma: float = 1.0,
    *,
    seed: int,
    lo: int = PIANO_LO,
    hi: int = PIANO_HI,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Wrong notes: each note, with probability ``fraction``, moves by ``round(N(0, sigma))`` semitones.

    Each note draws one uniform (is it picked?) and one normal (its shift) from ``seed``, whatever
    ``fraction`` is, so one seed with a larger ``fraction`` picks a superset of notes with the same shifts.
    A picked note can draw a shift of 0 and stay as it is.

    Parameters
    ----------
    pitch
        Note pitches, any integer dtype.
    fraction
        Probability in [0, 1] that a note is picked.
    sigma
        Standard deviation of the shift, in semitones (>= 0).
    seed
        Seed of ``numpy.random.default_rng``; one seed, one result.
    lo, hi
        Range (inclusive) a moved note must stay in; a note pushed outside is dropped, never clipped.

    Returns
    -------
    new_pitch
        Pitches of the kept notes (input dtype).
    keep
        Boolean mask over the input: False only for notes the noise pushed out of ``lo..hi``.
    n_changed
        Kept notes whose pitch changed.
    n_dropped
        Notes dropped for leaving ``lo..hi``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    if not sigma >= 0.0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    _check_range(lo, hi)
    p = np.asarray(pitch)
    n = p.shape[0]
    rng = np.random.default_rng(seed)
    picked = rng.random(n) < fraction
    shift = np.where(picked, np.rint(rng.standard_normal(n) * sigma), 0.0).astype(np.int64)
    moved = p.astype(np.int64) + shift
    # only notes the noise moved can be dropped; an untouched note stays even if it was out of range
    keep = (shift == 0) | ((moved >= lo) & (moved <= hi))
    n_changed = int(np.count_nonzero((shift != 0) & keep))
    n_dropped = int(n - np.count_nonzero(keep))
    return moved[keep].astype(p.dtype), keep, n_changed, n_dropped


def noise_seed(cfg: AugmentConfig, k: int, piece_id: int = 0) -> int:
    """Seed of the noisy variant with transposition ``k`` of piece ``piece_id`` (a 32-bit integer)."""
    ss = np.random.SeedSequence([cfg.seed, int(piece_id) % (1 << 64), int(k) % (1 << 16)])
    return int(ss.generate_state(1, np.uint32)[0])


def plan(cfg: AugmentConfig, split: str, piece_id: int = 0) -> list[tuple[int, int | None]]:
    """The variants ``(transposition k, noise seed or None)`` to render for one piece of ``split``.

    The original ``(0, None)`` always comes first. For a split in ``cfg.apply_to_splits`` every
    transposition follows in the config's order (zeros and repeats dropped); when
    ``cfg.noise_fraction > 0`` each of these shifts, the original included, is followed by a noisy
    twin whose seed :func:`noise_seed` derives from ``cfg.seed``, ``k`` and ``piece_id`` (pass the
    piece's id so pieces get independent noise). Other splits get the original only.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
    if split not in cfg.apply_to_splits:
        return [(0, None)]
    shifts = [0]
    for k in cfg.transpositions:
        if k not in shifts:
            shifts.append(k)
    out: list[tuple[int, int | None]] = []
    for k in shifts:
        out.append((k, None))
        if cfg.noise_fraction > 0:
            out.append((k, noise_seed(cfg, k, piece_id)))
    return out


def apply_variant(
    pitch: np.ndarray,
    k: int,
    seed: int | None,
    cfg: AugmentConfig,
    *,
    policy: str = "skip",
    lo: int = PIANO_LO,
    hi: int = PIANO_HI,
) -> tuple[np.ndarray | None, np.ndarray, int, int]:
    """Render one :func:`plan` variant: transpose by ``k``, then add noise when ``seed`` is not None.

    Returns ``(new_pitch or None, keep, n_out, n_changed)``: ``keep`` masks the input notes that
    survive both steps; ``n_out`` counts notes lost (to the transposition and to the noise); ``new_pitch``
    is None when the ``"skip"`` policy skipped the transposition.
    """
    new, keep, n_out = transpose(pitch, k, lo, hi, policy)
    if new is None or seed is None:
        return new, keep, n_out, 0
    noisy, keep2, n_changed, n_dropped = pitch_noise(new, cfg.noise_fraction, cfg.noise_sigma, seed=seed,
                                                     lo=lo, hi=hi)
    idx = np.flatnonzero(keep)
    keep = np.zeros_like(keep)
    keep[idx[keep2]] = True
    return noisy, keep, n_out + n_dropped, n_changed
