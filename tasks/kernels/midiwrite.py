"""Standard MIDI File writer: note columns in, bytes out (the decoding side of the paper).

The paper writes its decoded notes with midiutil; so do we. midiutil has two blind spots that
:func:`merge_notes` removes before anything reaches it:

* two notes of one pitch starting on the same tick with different durations make its default
  (de-interleaving) writer raise ``IndexError``, and with ``deinterleave=False`` it silently keeps
  one note-on and the *shorter* release;
* same-pitch notes that overlap are written as plain on/off events, and a reader that pairs them
  first-in-first-out (``tasks.kernels.midi``) hands the first release to the first note: a short note
  struck inside a long one swaps its end with the long one's.

Merge rules (all on the tick grid, on the one channel every note is written to)
-------------------------------------------------------------------------------
1. Times become ticks: ``tick = round(seconds * 1e6 * ticks_per_beat / tempo_us)``, where ``tempo_us``
   is the integer microseconds per beat midiutil writes for ``tempo_bpm``.
2. A note whose end is not after its start (zero or negative duration after rounding) lasts one tick.
3. Notes of one pitch starting on one tick become one note: the longest end and the highest velocity.
4. A note still sounding when the next note of its pitch starts is cut at that onset.
5. Velocities are rounded and clipped to 1..127 (velocity 0 would read as a release).

After these rules every pitch holds disjoint notes of at least one tick, so the file's events pair
unambiguously and ``tasks.kernels.midi.read_midi`` reads back exactly the merged notes.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

NOTE_TRACK = 0  # midiutil's track index; format 1 puts its tempo track in front, so the file's track 1
NOTE_CHANNEL = 0


def tempo_us_for(tempo_bpm: float) -> int:
    """Microseconds per beat that midiutil writes for ``tempo_bpm`` (it truncates)."""
    if not np.isfinite(tempo_bpm) or tempo_bpm <= 0:
        raise ValueError(f"tempo_bpm must be a positive number, got {tempo_bpm!r}")
    us = int(60_000_000 / tempo_bpm)
    if not 1 <= us < 1 << 24:
        raise ValueError(f"tempo_bpm {tempo_bpm!r} does not fit the 24-bit MIDI tempo field")
    return us


def seconds_to_ticks(seconds: np.ndarray, *, tempo_bpm: float = 120.0, ticks_per_beat: int = 960) -> np.ndarray:
    """Nearest tick of every time in ``seconds`` at a constant tempo (rule 1 of the module docstring)."""
    s = np.asarray(seconds, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("times must be finite")
    return np.rint(s * (1e6 * ticks_per_beat / tempo_us_for(tempo_bpm))).astype(np.int64)


def merge_notes(
    pitch: np.ndarray, velocity: np.ndarray, onset_tick: np.ndarray, offset_tick: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply merge rules 2-5 of the module docstring to notes on the tick grid.

    Parameters
    ----------
    pitch, velocity, onset_tick, offset_tick
        One entry per note; ``pitch`` in 0..127, ticks non-negative integers, ``velocity`` any number.

    Returns
    -------
    pitch, velocity, onset_tick, offset_tick
        ``uint8, uint8, int64, int64`` arrays sorted by (onset tick, pitch), the order
        ``tasks.kernels.midi.read_midi`` reports notes of a one-track file in.
    """
    p = np.asarray(pitch)
    n = p.shape[0]
    on = np.asarray(onset_tick, dtype=np.int64)
    off = np.asarray(offset_tick, dtype=np.int64)
    vel = np.asarray(velocity, dtype=np.float64)
    if not (on.shape == off.shape == vel.shape == p.shape and p.ndim == 1):
        raise ValueError("pitch, velocity, onset and offset must be 1-d arrays of one length")
    if n and (p.min() < 0 or p.max() > 127):
        raise ValueError("pitch must lie in 0..127")
    if n and on.min() < 0:
        raise ValueError("onsets must not be negative")
    if not np.all(np.isfinite(vel)):
        raise ValueError("velocities must be finite")
    p = p.astype(np.int64)
    vel = np.clip(np.rint(vel), 1, 127).astype(np.int64)  # rule 5
    off = np.maximum(off, on + 1)  # rule 2

    # rule 3: one note per (pitch, onset), longest end, loudest velocity
    order = np.lexsort((on, p))  # by pitch, then onset
    p, on, off, vel = p[order], on[order], off[order], vel[order]
    if n:
        first = np.ones(n, dtype=bool)
        first[1:] = (p[1:] != p[:-1]) | (on[1:] != on[:-1])
        starts = np.flatnonzero(first)
        off = np.maximum.reduceat(off, starts)
        vel = np.maximum.reduceat(vel, starts)
        p, on = p[starts], on[starts]

    # rule 4: cut a note at the next onset of its pitch (onsets of one pitch are now strictly increasing)
    if p.shape[0] > 1:
        same = p[1:] == p[:-1]
        off[:-1][same] = np.minimum(off[:-1][same], on[1:][same])

    order = np.lexsort((p, on))  # by onset, then pitch
    return p[order].astype(np.uint8), vel[order].astype(np.uint8), on[order], off[order]


def notes_to_midi(
    pitch: np.ndarray,
    velocity: np.ndarray,
    onset_s: np.ndarray,
    offset_s: np.ndarray,
    program: int | None = None,
    *,
    tempo_bpm: float = 120.0,
    ticks_per_beat: int = 960,
) -> bytes:
    """Write notes as a format-1 Standard MIDI File with midiutil.

    Every note goes to one track and channel 0 after the merge rules of the module docstring.

    Parameters
    ----------
    pitch, velocity
        MIDI pitch (0..127) and velocity (rounded, clipped to 1..127) of every note.
    onset_s, offset_s
        Note start and end in seconds (non-negative, finite).
    program
        General MIDI program (0..127) set at time 0 on the notes' channel; None writes no program change.
    tempo_bpm
        The file's one tempo; together with ``ticks_per_beat`` it fixes the tick grid.
    ticks_per_beat
        The file's division (1..32767).

    Returns
    -------
    bytes
        The file; ``tasks.kernels.midi.read_midi`` reads back the merged notes with their ticks exact.
    """
    from midiutil import MIDIFile  # heavy-ish, and only needed here

    if not 1 <= int(ticks_per_beat) <= 0x7FFF or int(ticks_per_beat) != ticks_per_beat:
        raise ValueError(f"ticks_per_beat must be an integer in 1..32767, got {ticks_per_beat!r}")
    if program is not None and not 0 <= int(program) <= 127:
        raise ValueError(f"program must lie in 0..127, got {program!r}")
    tpb = int(ticks_per_beat)
    on = seconds_to_ticks(onset_s, tempo_bpm=tempo_bpm, ticks_per_beat=tpb)
    off = seconds_to_ticks(offset_s, tempo_bpm=tempo_bpm, ticks_per_beat=tpb)
    p, vel, on, off = merge_notes(pitch, velocity, on, off)

    mf = MIDIFile(1, deinterleave=False, adjust_origin=False, ticks_per_quarternote=tpb)
    mf.addTempo(NOTE_TRACK, 0, tempo_bpm)
    if program is not None:
        mf.addProgramChange(NOTE_TRACK, NOTE_CHANNEL, 0, int(program))
    # times in beats as exact fractions: midiutil truncates beats * division to a tick, and a float
    # beat (tick / division) can land one ulp short of the tick and lose it
    for pi, vi, a, b in zip(p.tolist(), vel.tolist(), on.tolist(), off.tolist()):
        mf.addNote(NOTE_TRACK, NOTE_CHANNEL, pi, Fraction(a, tpb), Fraction(b - a, tpb), vi)
    buf = io.BytesIO()
    mf.writeFile(buf)
    return buf.getvalue()

