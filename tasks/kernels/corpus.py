"""The built-in corpus: deterministic, seeded piano pieces written as Standard MIDI Files.

This is midipix's embedded default data source (the demo and most tests run on it, offline) and, scaled
up, the benchmark corpus: ``corpus_files(1300, minutes=9.4)`` gives about as many notes as full
MAESTRO (~7 M) at a similar density (~10 notes per second), with continuous sustain-pedal values.

Each piece is built from sections of piano texture over a chord progression in one key:

- block chords (right-hand chords on the beat, left-hand "oom-pah"),
- scales (running sixteenths that bounce between register limits, left-hand chords),
- arpeggios (broken chords held under the fingers, so keys are re-struck while still sounding),
- a melody over a bass line (Alberti or broken-chord bass).

Velocities follow phrase arches with a crescendo or diminuendo per section; the sustain pedal (CC64) is
changed with each harmony with short ramps of intermediate values; the soft (CC67) and sostenuto (CC66)
pedals appear now and then; the tempo changes once or twice at a bar line.

Invariants every piece keeps (the tests check them through mido and symusic):

- pitches within 21-108, velocities within 1-127, every note with ``offset_tick > onset_tick``;
- no two notes of one key start at the same tick, and per key the offsets are in the same order as the
  onsets, so the reader's FIFO pairing rule (a note-off closes the earliest open note of its key)
  recovers exactly these notes even where a key is re-struck while it still sounds.

Nothing here imports prefect or the store, nor writes files: :func:`corpus_files` gives names and bytes,
and ``tasks.storage.sources.generate_corpus`` writes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "CONTROL_DTYPE",
    "NOTE_DTYPE",
    "TEMPO_DTYPE",
    "TICKS_PER_BEAT",
    "GeneratedPiece",
    "encode_events_kernel",
    "corpus_files",
    "encode_events_reference",
    "generate_piece",
    "parse_generated_spec",
    "piece_name",
    "to_smf_bytes",
]

TICKS_PER_BEAT = 480
SIXTEENTH = TICKS_PER_BEAT // 4

NOTE_DTYPE = np.dtype(
    [("onset_tick", "<i8"), ("offset_tick", "<i8"), ("pitch", "u1"), ("velocity", "u1"), ("channel", "u1")]
)
CONTROL_DTYPE = np.dtype([("tick", "<i8"), ("channel", "u1"), ("control", "u1"), ("value", "u1")])
TEMPO_DTYPE = np.dtype([("tick", "<i8"), ("tempo_us", "<i8")])

PIANO_MIN, PIANO_MAX = 21, 108
SUSTAIN, SOSTENUTO, SOFT = 64, 66, 67

DEFAULT_N = 24
DEFAULT_MINUTES = 1.0

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11], dtype=np.int64)
_HARMONIC_MINOR = np.array([0, 2, 3, 5, 7, 8, 11], dtype=np.int64)

# Four-bar progressions as scale degrees (0 = tonic).
_PROGRESSIONS = np.array(
    [
        [0, 3, 4, 0],
        [0, 5, 3, 4],
        [0, 4, 5, 3],
        [1, 4, 0, 0],
        [0, 3, 1, 4],
        [5, 3, 0, 4],
        [0, 0, 3, 4],
        [0, 2, 3, 4],
    ],
    dtype=np.int64,
)

# Melody rhythms within one beat, as sixteenth offsets (-1 = unused) and their probabilities.
_BEAT_RHYTHMS = np.array(
    [[0, -1, -1, -1], [0, 2, -1, -1], [0, 3, -1, -1], [0, 1, 2, 3], [0, 2, 3, -1], [0, 1, 2, -1]],
    dtype=np.int64,
)
_BEAT_RHYTHM_P = np.array([0.22, 0.30, 0.12, 0.12, 0.14, 0.10])

# Broken-chord figures as chord-tone steps (0 = the chord root of the figure's register).
_ARPEGGIOS = np.array(
    [[0, 1, 2, 3, 4, 3, 2, 1], [0, 2, 1, 2, 0, 2, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 4, 3]],
    dtype=np.int64,
)
_ALBERTI = np.array([0, 2, 1, 2], dtype=np.int64)

# Melody steps on the scale ladder and their probabilities (0 repeats the note: a re-strike).
_MELODY_STEPS = np.array([-4, -3, -2, -1, 0, 1, 2, 3, 4], dtype=np.int64)
_MELODY_STEP_P = np.array([0.03, 0.05, 0.14, 0.24, 0.08, 0.24, 0.14, 0.05, 0.03])

# On-beat melody notes move to the nearest chord tone: shift by (scale index - chord degree) mod 7.
_CHORD_SNAP = np.array([0, -1, 0, -1, 0, -1, 1], dtype=np.int64)

# Velocity offsets by role: melody / top voice, inner voices, bass.
_ROLE_VELOCITY = np.array([10, -6, 0], dtype=np.int64)
MELODY, INNER, BASS = 0, 1, 2

N_TEXTURES = 4


@dataclass(frozen=True, eq=False)
class GeneratedPiece:
    """One generated piece, in ticks.

    Attributes
    ----------
    name : str
        ``gen-s{seed}-{index:05d}``.
    ticks_per_beat : int
        Always 480.
    notes : numpy.ndarray
        ``NOTE_DTYPE`` records (onset_tick, offset_tick, pitch, velocity, channel), sorted by onset, pitch.
    controls : numpy.ndarray
        ``CONTROL_DTYPE`` records (tick, channel, control, value) in file order (by tick, stable).
    tempos : numpy.ndarray
        ``TEMPO_DTYPE`` records (tick, tempo_us per beat); the first is at tick 0.
    time_signature : tuple[int, int]
        (numerator, denominator).
    """

    name: str
    ticks_per_beat: int
    notes: np.ndarray
    controls: np.ndarray
    tempos: np.ndarray
    time_signature: tuple[int, int]

    @property
    def n_notes(self) -> int:
        return int(self.notes.shape[0])

    @property
    def end_tick(self) -> int:
        """Tick of the last note-off or control change."""
        last_note = int(self.notes["offset_tick"].max()) if self.n_notes else 0
        last_control = int(self.controls["tick"].max()) if self.controls.shape[0] else 0
        return max(last_note, last_control)

    def ticks_to_seconds(self, ticks: np.ndarray) -> np.ndarray:
        """Convert ticks to seconds through the piece's tempo map."""
        ticks = np.asarray(ticks, dtype=np.int64)
        t0 = self.tempos["tick"]
        us_per_tick = self.tempos["tempo_us"] / self.ticks_per_beat
        seg_s = np.concatenate([[0.0], np.cumsum(np.diff(t0) * us_per_tick[:-1])]) * 1e-6
        seg = np.searchsorted(t0, ticks, side="right") - 1
        return seg_s[seg] + (ticks - t0[seg]) * us_per_tick[seg] * 1e-6

    @property
    def duration_seconds(self) -> float:
        return float(self.ticks_to_seconds(np.array([self.end_tick]))[0])


def piece_name(seed: int, index: int) -> str:
    """File stem of piece ``index`` of the corpus with ``seed``."""
    return f"gen-s{seed}-{index:05d}"


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Harmony:
    tonic: int  # pitch class
    scale: np.ndarray  # (7,) semitones
    degree: np.ndarray  # (n_bars,) chord root as a scale degree
    numerator: int
    bar_ticks: int

    def scale_pitch(self, k: np.ndarray) -> np.ndarray:
        """MIDI pitch of scale-ladder index ``k`` (k = 0 is the tonic in octave 0)."""
        return 12 + self.tonic + 12 * (k // 7) + self.scale[k % 7]

    def scale_index_near(self, pitch: np.ndarray | float) -> np.ndarray:
        return np.round((np.asarray(pitch, dtype=np.float64) - 12 - self.tonic) * 7.0 / 12.0).astype(np.int64)

    def chord_pitch(self, deg: np.ndarray, j: np.ndarray) -> np.ndarray:
        """MIDI pitch of chord-ladder index ``j`` of the triad on scale degree ``deg``."""
        return self.scale_pitch(deg + 2 * (j % 3) + 7 * (j // 3))

    def chord_index_near(self, deg: np.ndarray, pitch: np.ndarray | float) -> np.ndarray:
        k = (np.asarray(pitch, dtype=np.float64) - 12 - self.tonic) * 7.0 / 12.0
        return np.round((k - deg) * 3.0 / 7.0).astype(np.int64)


def _fold(k: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Reflect an unbounded walk into [lo, hi] (a triangle wave), so runs bounce at the limits."""
    span = max(hi - lo, 1)
    m = (k - lo) % (2 * span)
    return lo + np.where(m > span, 2 * span - m, m)


def _beat_grid(h: _Harmony, bars: np.ndarray, per_beat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onset ticks of a grid with ``per_beat`` slots per beat over ``bars``; also bar index and slot."""
    slots = h.numerator * per_beat
    step = TICKS_PER_BEAT // per_beat
    onset = (bars[:, None] * h.bar_ticks + np.arange(slots) * step).ravel()
    bar = np.repeat(bars, slots)
    slot = np.tile(np.arange(slots), bars.shape[0])
    return onset, bar, slot


_Notes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # onset, duration, pitch, role


def _block_chords(rng: np.random.Generator, h: _Harmony, bars: np.ndarray) -> _Notes:
    nb = bars.shape[0]
    onset, bar, slot = _beat_grid(h, bars, 1)
    deg = h.degree[bar]
    # right hand: a 3- or 4-note chord on every beat, legato to detached
    top = h.chord_index_near(deg, np.repeat(rng.integers(62, 74, nb), h.numerator))
    size = np.repeat(rng.integers(3, 5, nb), h.numerator)
    length = np.repeat(rng.uniform(0.45, 1.08, nb), h.numerator)
    j = top[:, None] + np.arange(4)
    keep = np.arange(4) < size[:, None]
    rh_on = np.broadcast_to(onset[:, None], j.shape)[keep]
    rh_pitch = h.chord_pitch(np.broadcast_to(deg[:, None], j.shape)[keep], j[keep])
    rh_dur = (length[:, None] * TICKS_PER_BEAT * np.ones(4))[keep]
    rh_role = np.where(np.arange(4) == size[:, None] - 1, MELODY, INNER)[keep]
    # left hand: bass root (+ octave) on even beats, two chord tones on odd beats ("oom-pah")
    bass = h.chord_index_near(deg, np.repeat(rng.integers(38, 47, nb), h.numerator))
    bass = 3 * (bass // 3)
    even = slot % 2 == 0
    lj = np.where(even[:, None], bass[:, None] + np.array([0, 3]), bass[:, None] + np.array([4, 5]))
    l_on = np.repeat(onset, 2)
    l_pitch = h.chord_pitch(np.repeat(deg, 2), lj.ravel())
    l_dur = np.repeat(np.where(even, 1.6, 0.8) * TICKS_PER_BEAT, 2)
    l_role = np.repeat(np.where(even, BASS, INNER), 2)
    return (
        np.concatenate([rh_on, l_on]),
        np.concatenate([rh_dur, l_dur]),
        np.concatenate([rh_pitch, l_pitch]),
        np.concatenate([rh_role, l_role]),
    )


def _scales(rng: np.random.Generator, h: _Harmony, bars: np.ndarray) -> _Notes:
    nb = bars.shape[0]
    per_bar = 4 * h.numerator
    onset, bar, _ = _beat_grid(h, bars, 4)
    direction = np.repeat(rng.choice(np.array([-1, 1]), nb), per_bar)
    lo, hi = int(h.scale_index_near(60)), int(h.scale_index_near(96))
    k = _fold(rng.integers(lo, hi + 1) + np.cumsum(direction), lo, hi)
    r_pitch = h.scale_pitch(k)
    r_dur = np.repeat(rng.uniform(0.85, 1.25, nb), per_bar) * SIXTEENTH
    # left hand: root and fifth on each beat
    b_on, b_bar, _ = _beat_grid(h, bars, 1)
    deg = h.degree[b_bar]
    root = 3 * (h.chord_index_near(deg, np.repeat(rng.integers(40, 50, nb), h.numerator)) // 3)
    lj = (root[:, None] + np.array([0, 2])).ravel()
    l_pitch = h.chord_pitch(np.repeat(deg, 2), lj)
    l_on = np.repeat(b_on, 2)
    l_dur = np.full(l_on.shape[0], 0.92 * TICKS_PER_BEAT)
    l_role = np.tile(np.array([BASS, INNER]), b_on.shape[0])
    return (
        np.concatenate([onset, l_on]),
        np.concatenate([r_dur, l_dur]),
        np.concatenate([r_pitch, l_pitch]),
        np.concatenate([np.full(onset.shape[0], MELODY), l_role]),
    )


def _arpeggios(rng: np.random.Generator, h: _Harmony, bars: np.ndarray) -> _Notes:
    nb = bars.shape[0]
    per_bar = 4 * h.numerator
    onset, bar, slot = _beat_grid(h, bars, 4)
    deg = h.degree[bar]
    figure = np.repeat(rng.integers(0, _ARPEGGIOS.shape[0], nb), per_bar)
    base = np.repeat(rng.integers(45, 56, nb), per_bar)
    j = h.chord_index_near(deg, base) + _ARPEGGIOS[figure, slot % _ARPEGGIOS.shape[1]]
    a_pitch = h.chord_pitch(deg, j)
    # held under the fingers: long enough that figure notes are re-struck while still sounding
    a_dur = np.repeat(rng.uniform(1.5, 3.6, nb), per_bar) * SIXTEENTH
    # right hand: a chord-tone melody on the beats
    m_on, m_bar, _ = _beat_grid(h, bars, 1)
    m_deg = h.degree[m_bar]
    walk = np.cumsum(rng.integers(-1, 2, m_on.shape[0]))
    mj = h.chord_index_near(m_deg, 74) + _fold(walk, -2, 3)
    m_pitch = h.chord_pitch(m_deg, mj)
    m_dur = rng.uniform(0.85, 1.05, m_on.shape[0]) * TICKS_PER_BEAT
    # left hand: the root held for the bar
    b_on = bars * h.bar_ticks
    b_pitch = h.chord_pitch(h.degree[bars], 3 * (h.chord_index_near(h.degree[bars], 36) // 3))
    b_dur = np.full(nb, 0.97 * h.bar_ticks)
    return (
        np.concatenate([onset, m_on, b_on]),
        np.concatenate([a_dur, m_dur, b_dur]),
        np.concatenate([a_pitch, m_pitch, b_pitch]),
        np.concatenate([np.full(onset.shape[0], INNER), np.full(m_on.shape[0], MELODY), np.full(nb, BASS)]),
    )


def _melody_over_bass(rng: np.random.Generator, h: _Harmony, bars: np.ndarray) -> _Notes:
    nb = bars.shape[0]
    # melody: a rhythm per beat, a stepwise walk on the scale, chord tones on the beat
    b_on, b_bar, _ = _beat_grid(h, bars, 1)
    rhythm = _BEAT_RHYTHMS[rng.choice(_BEAT_RHYTHMS.shape[0], b_on.shape[0], p=_BEAT_RHYTHM_P)]
    used = rhythm >= 0
    m_on = (b_on[:, None] + rhythm * SIXTEENTH)[used]
    m_bar = np.broadcast_to(b_bar[:, None], rhythm.shape)[used]
    on_beat = (rhythm == 0)[used]
    lo, hi = int(h.scale_index_near(62)), int(h.scale_index_near(88))
    steps = _MELODY_STEPS[rng.choice(_MELODY_STEPS.shape[0], m_on.shape[0], p=_MELODY_STEP_P)]
    k = _fold(rng.integers(lo, hi + 1) + np.cumsum(steps), lo, hi)
    m_deg = h.degree[m_bar]
    k = np.where(on_beat, k + _CHORD_SNAP[(k - m_deg) % 7], k)
    m_pitch = h.scale_pitch(k)
    gap = np.diff(m_on, append=m_on[-1] + TICKS_PER_BEAT) if m_on.shape[0] else m_on
    gap = np.minimum(gap, 2 * TICKS_PER_BEAT)
    m_dur = gap * rng.uniform(0.75, 1.2, nb)[np.searchsorted(bars, m_bar)]
    # bass: Alberti sixteenths or broken-chord eighths, chosen per bar
    per_bar = 4 * h.numerator
    a_on, a_bar, slot = _beat_grid(h, bars, 4)
    deg = h.degree[a_bar]
    alberti = np.repeat(rng.random(nb) < 0.6, per_bar)
    keep = alberti | (slot % 2 == 0)
    base = 3 * (h.chord_index_near(deg, np.repeat(rng.integers(40, 50, nb), per_bar)) // 3)
    step = np.where(alberti, _ALBERTI[slot % 4], _ALBERTI[(slot // 2) % 4])
    a_pitch = h.chord_pitch(deg, base + step)
    a_dur = np.where(alberti, 1.0, 2.0) * SIXTEENTH * np.repeat(rng.uniform(0.9, 1.6, nb), per_bar)
    a_role = np.where(slot == 0, BASS, INNER)
    return (
        np.concatenate([m_on, a_on[keep]]),
        np.concatenate([m_dur, a_dur[keep]]),
        np.concatenate([m_pitch, a_pitch[keep]]),
        np.concatenate([np.full(m_on.shape[0], MELODY), a_role[keep]]),
    )


_TEXTURES = (_block_chords, _scales, _arpeggios, _melody_over_bass)


def _sections(rng: np.random.Generator, n_bars: int) -> tuple[np.ndarray, np.ndarray]:
    """Section start bars (ending with n_bars) and the section index of every bar."""
    lengths = rng.integers(2, 9, n_bars)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    starts = starts[starts < n_bars]
    bounds = np.append(starts, n_bars)
    return bounds, np.repeat(np.arange(starts.shape[0]), np.diff(bounds))


def _ramp(times: np.ndarray, frm: np.ndarray, to: np.ndarray, steps: int, spacing: np.ndarray):
    """Control ramps from ``frm`` to ``to`` (exclusive of frm, ending exactly at ``to``)."""
    i = np.arange(1, steps + 1)
    ticks = times[:, None] + (i - 1) * spacing[:, None]
    values = np.round(frm[:, None] + (to - frm)[:, None] * (i / steps)).astype(np.int64)
    return ticks.ravel(), values.ravel()


def _pedals(
    rng: np.random.Generator, h: _Harmony, bounds: np.ndarray, texture: np.ndarray, soft_dyn: np.ndarray
) -> np.ndarray:
    n_sec = bounds.shape[0] - 1
    ticks: list[np.ndarray] = []
    ctrls: list[np.ndarray] = []
    values: list[np.ndarray] = []

    def emit(t: np.ndarray, c: int, v: np.ndarray) -> None:
        ticks.append(np.asarray(t, dtype=np.int64))
        ctrls.append(np.full(np.shape(t), c, dtype=np.int64))
        values.append(np.asarray(v, dtype=np.int64))

    # sustain: most sections pedal with each harmony (every bar, sometimes every half bar)
    pedalled = rng.random(n_sec) < np.where(texture == 1, 0.45, 0.92)
    half = (rng.random(n_sec) < 0.3) & (h.numerator % 2 == 0)
    per_bar = np.where(half, 2, 1)
    n_changes = (bounds[1:] - bounds[:-1]) * per_bar * pedalled
    sec = np.repeat(np.arange(n_sec), n_changes)
    first = np.concatenate([[0], np.cumsum(n_changes)[:-1]])
    within = np.arange(sec.shape[0]) - np.repeat(first, n_changes)
    change = bounds[sec] * h.bar_ticks + within * (h.bar_ticks // per_bar[sec])
    level = np.repeat(rng.integers(70, 128, n_sec), n_changes)  # some sections only half-pedal
    level = np.minimum(level + rng.integers(-6, 7, sec.shape[0]), 127)
    n = change.shape[0]
    # release just after the new harmony sounds (not at a section's first change), then press again
    rel_at = change + rng.integers(8, 30, n)
    not_first = within > 0
    prev_level = np.concatenate([[0], level[:-1]])
    t, v = _ramp(rel_at[not_first], prev_level[not_first], np.zeros(int(not_first.sum()), np.int64), 3,
                 rng.integers(8, 16, int(not_first.sum())))
    emit(t, SUSTAIN, v)
    press_at = change + rng.integers(90, 150, n)
    t, v = _ramp(press_at, np.zeros(n, np.int64), level, 5, rng.integers(6, 18, n))
    emit(t, SUSTAIN, v)
    # lift at each pedalled section's end
    ends = np.flatnonzero(pedalled)
    last_level = level[np.cumsum(n_changes)[ends] - 1] if n else np.zeros(0, np.int64)
    end_at = bounds[ends + 1] * h.bar_ticks - rng.integers(20, 40, ends.shape[0])
    t, v = _ramp(end_at, last_level, np.zeros(ends.shape[0], np.int64), 4, rng.integers(5, 12, ends.shape[0]))
    emit(t, SUSTAIN, v)
    # soft pedal for some quiet sections; sostenuto now and then
    for control, chosen, depth in (
        (SOFT, soft_dyn & (rng.random(n_sec) < 0.6), 127),
        (SOSTENUTO, rng.random(n_sec) < 0.08, 127),
    ):
        s = np.flatnonzero(chosen)
        on = bounds[s] * h.bar_ticks + rng.integers(40, 90, s.shape[0])
        off = bounds[s + 1] * h.bar_ticks - rng.integers(45, 60, s.shape[0])
        emit(np.concatenate([on, on + 12, off]), control,
             np.concatenate([np.full(s.shape[0], depth // 2), np.full(s.shape[0], depth), np.zeros(s.shape[0])]))

    tick = np.maximum(np.concatenate(ticks), 0)
    control = np.concatenate(ctrls)
    value = np.clip(np.concatenate(values), 0, 127)
    # file order: by tick, then control; one value per (tick, control), the last one emitted wins
    order = np.lexsort((control, tick))
    tick, control, value = tick[order], control[order], value[order]
    last = np.ones(tick.shape[0], dtype=bool)
    last[:-1] = (tick[1:] != tick[:-1]) | (control[1:] != control[:-1])
    out = np.zeros(int(last.sum()), dtype=CONTROL_DTYPE)
    out["tick"], out["control"], out["value"] = tick[last], control[last], value[last]
    return out


def generate_piece(seed: int, index: int, minutes: float = DEFAULT_MINUTES) -> GeneratedPiece:
    """Generate piece ``index`` of the corpus with ``seed``.

    Deterministic for (seed, index, minutes). The length varies piece to piece between about 0.5 and
    1.5 times ``minutes``; the density averages about 10 notes per second.

    Parameters
    ----------
    seed, index : int
        Non-negative; the random stream is ``numpy.random.default_rng([seed, index])``.
    minutes : float
        Nominal length in minutes (> 0).

    Returns
    -------
    GeneratedPiece
    """
    seed, index, minutes = _check_args(seed, index, minutes)
    rng = np.random.default_rng([seed, index])
    numerator = int(rng.choice(np.array([4, 4, 4, 3, 3, 2])))
    minor = bool(rng.random() < 0.4)
    h_tonic = int(rng.integers(0, 12))
    bpm = float(rng.uniform(72.0, 138.0))
    target_s = minutes * 60.0 * rng.uniform(0.5, 1.5)
    n_bars = max(2, math.ceil(target_s * bpm / 60.0 / numerator))

    progression = _PROGRESSIONS[rng.integers(0, _PROGRESSIONS.shape[0], (n_bars + 3) // 4)].ravel()[:n_bars]
    progression = progression.copy()
    progression[-1] = 0
    if n_bars > 2:
        progression[-2] = 4
    h = _Harmony(
        tonic=h_tonic,
        scale=_HARMONIC_MINOR if minor else _MAJOR,
        degree=progression,
        numerator=numerator,
        bar_ticks=numerator * TICKS_PER_BEAT,
    )
    bounds, sec_of_bar = _sections(rng, n_bars)
    n_sec = bounds.shape[0] - 1
    texture = rng.integers(0, N_TEXTURES, n_sec)
    tex_of_bar = texture[sec_of_bar]

    parts = []
    for t, make in enumerate(_TEXTURES):
        bars = np.flatnonzero(tex_of_bar == t)
        if bars.shape[0]:
            parts.append(make(rng, h, bars))
    onset = np.concatenate([p[0] for p in parts]).astype(np.int64)
    duration = np.concatenate([p[1] for p in parts])
    pitch = np.concatenate([p[2] for p in parts]).astype(np.int64)
    role = np.concatenate([p[3] for p in parts]).astype(np.int64)

    # dynamics: a level per section moving to another (crescendo / diminuendo), two-bar phrase arches,
    # metric accents, the melody on top, a little noise
    v_start = rng.uniform(34.0, 96.0, n_sec)
    v_end = np.clip(v_start + rng.uniform(-28.0, 28.0, n_sec), 20.0, 118.0)
    sec = sec_of_bar[onset // h.bar_ticks]
    sec_t0 = bounds[sec] * h.bar_ticks
    frac = (onset - sec_t0) / ((bounds[sec + 1] - bounds[sec]) * h.bar_ticks)
    phrase = np.sin(np.pi * (onset % (2 * h.bar_ticks)) / (2 * h.bar_ticks))
    in_bar = onset % h.bar_ticks
    accent = np.where(in_bar == 0, 6, np.where(in_bar % TICKS_PER_BEAT == 0, 2, 0))
    velocity = (
        v_start[sec] + (v_end - v_start)[sec] * frac + 8.0 * phrase + accent + _ROLE_VELOCITY[role]
        + rng.normal(0.0, 4.0, onset.shape[0])
    )
    velocity = np.clip(np.round(velocity), 1, 127).astype(np.int64)

    # a human touch: onsets a few ticks early or late, durations a little uneven
    onset = np.maximum(onset + rng.integers(-10, 11, onset.shape[0]), 0)
    duration = np.maximum(np.round(duration * rng.uniform(0.92, 1.08, onset.shape[0])), 24).astype(np.int64)
    pitch = np.where(pitch < PIANO_MIN, pitch + 12 * ((PIANO_MIN - pitch + 11) // 12), pitch)
    pitch = np.where(pitch > PIANO_MAX, pitch - 12 * ((pitch - PIANO_MAX + 11) // 12), pitch)
    notes = _pairable_notes(onset, onset + duration, pitch, velocity)

    # tempo: the opening tempo, then one or two changes at bar lines
    n_changes = min(int(rng.integers(1, 3)), n_bars - 1)
    change_bars = np.sort(rng.choice(np.arange(1, n_bars), n_changes, replace=False))
    factors = rng.uniform(0.06, 0.2, n_changes) * rng.choice(np.array([-1.0, 1.0]), n_changes) + 1.0
    bpms = np.concatenate([[bpm], bpm * factors])
    tempos = np.zeros(n_changes + 1, dtype=TEMPO_DTYPE)
    tempos["tick"][1:] = change_bars * h.bar_ticks
    tempos["tempo_us"] = np.round(60_000_000.0 / bpms).astype(np.int64)

    controls = _pedals(rng, h, bounds, texture, v_start < 56.0)
    return GeneratedPiece(
        name=piece_name(seed, index),
        ticks_per_beat=TICKS_PER_BEAT,
        notes=notes,
        controls=controls,
        tempos=tempos,
        time_signature=(numerator, 4),
    )


def _pairable_notes(onset: np.ndarray, offset: np.ndarray, pitch: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """Make notes that FIFO pairing reads back exactly, sorted by (onset, pitch).

    Per key: one note per onset tick (the first wins), and offsets never earlier than those of notes
    struck before (a running maximum), so the first note-off of a key closes the earliest open note.
    """
    order = np.lexsort((onset, pitch))
    onset, offset, pitch, velocity = onset[order], offset[order], pitch[order], velocity[order]
    keep = np.ones(onset.shape[0], dtype=bool)
    keep[1:] = (pitch[1:] != pitch[:-1]) | (onset[1:] != onset[:-1])
    onset, offset, pitch, velocity = onset[keep], offset[keep], pitch[keep], velocity[keep]
    big = int(offset.max()) + 1 if offset.shape[0] else 1
    offset = np.maximum.accumulate(offset + pitch * big) - pitch * big
    order = np.lexsort((pitch, onset))
    notes = np.zeros(onset.shape[0], dtype=NOTE_DTYPE)
    notes["onset_tick"] = onset[order]
    notes["offset_tick"] = offset[order]
    notes["pitch"] = pitch[order]
    notes["velocity"] = velocity[order]
    return notes


def _check_args(seed: int, index: int, minutes: float) -> tuple[int, int, float]:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if int(index) != index or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    minutes = float(minutes)
    if not math.isfinite(minutes) or minutes <= 0:
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    return int(seed), int(index), minutes


# --------------------------------------------------------------------------------------------------
# Standard MIDI File writing
# --------------------------------------------------------------------------------------------------

_NOTE_OFF, _NOTE_ON, _CONTROL, _PROGRAM = 0x80, 0x90, 0xB0, 0xC0
_OFF_VELOCITY = 64  # release velocity written with real note-off messages


@numba.njit(cache=True)
def encode_events_kernel(delta, status, data1, data2, running, out):  # pragma: no cover - compiled
    """Write channel events with two data bytes as (VLQ delta, [status], data1, data2) into ``out``.

    ``running`` is the running status in effect before the first event; the status byte is left out
    whenever it equals the previous one. Deltas must be below 2**28. Returns the number of bytes written.
    """
    pos = 0
    for i in range(delta.shape[0]):
        d = delta[i]
        if d >= 1 << 21:
            out[pos] = 0x80 | ((d >> 21) & 0x7F)
            pos += 1
        if d >= 1 << 14:
            out[pos] = 0x80 | ((d >> 14) & 0x7F)
            pos += 1
        if d >= 1 << 7:
            out[pos] = 0x80 | ((d >> 7) & 0x7F)
            pos += 1
        out[pos] = d & 0x7F
        pos += 1
        s = status[i]
        if s != running:
            out[pos] = s
            pos += 1
            running = s
        out[pos] = data1[i]
        out[pos + 1] = data2[i]
        pos += 2
    return pos


def encode_events_reference(delta, status, data1, data2, running: int) -> bytes:
    """Plain NumPy twin of :func:`encode_events_kernel` (vectorised; used in tests)."""
    delta = np.asarray(delta, dtype=np.int64)
    status = np.asarray(status, dtype=np.uint8)
    n_vlq = 1 + (delta >= 1 << 7) + (delta >= 1 << 14) + (delta >= 1 << 21)
    prev = np.concatenate([[running], status[:-1]]).astype(np.uint8)
    has_status = status != prev
    size = n_vlq + has_status + 2
    start = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    out = np.zeros(int(size.sum()), dtype=np.uint8)
    for b in range(4):  # VLQ groups, most significant first
        shift = 7 * (n_vlq - 1 - b)
        present = b < n_vlq
        cont = b < n_vlq - 1
        byte = ((delta >> np.where(present, shift, 0)) & 0x7F) | np.where(cont, 0x80, 0)
        out[(start + b)[present]] = byte[present]
    s_pos = start + n_vlq
    out[s_pos[has_status]] = status[has_status]
    d_pos = s_pos + has_status
    out[d_pos] = np.asarray(data1, dtype=np.uint8)
    out[d_pos + 1] = np.asarray(data2, dtype=np.uint8)
    return out.tobytes()


def _vlq(value: int) -> bytes:
    if value < 0 or value >= 1 << 28:
        raise ValueError(f"delta time out of range: {value}")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _meta(delta: int, kind: int, payload: bytes) -> bytes:
    return _vlq(delta) + bytes([0xFF, kind]) + _vlq(len(payload)) + payload


def _chunk(kind: bytes, body: bytes) -> bytes:
    return kind + len(body).to_bytes(4, "big") + body


_END_OF_TRACK = bytes([0x00, 0xFF, 0x2F, 0x00])


def _piano_events(piece: GeneratedPiece) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tick-ordered (tick, status, data1, data2) of the piano track: offs, then controls, then ons."""
    notes, controls = piece.notes, piece.controls
    n, c = notes.shape[0], controls.shape[0]
    on_tick = notes["onset_tick"]
    off_tick = notes["offset_tick"]
    pitch = notes["pitch"]
    channel = notes["channel"]
    # most offs as note_on velocity 0 (running status), some as real note_off
    real_off = (on_tick // SIXTEENTH + pitch) % 4 == 0
    tick = np.concatenate([off_tick, controls["tick"], on_tick])
    prio = np.concatenate([np.zeros(n, np.int64), np.ones(c, np.int64), np.full(n, 2, np.int64)])
    status = np.concatenate(
        [
            np.where(real_off, _NOTE_OFF, _NOTE_ON) | channel,
            _CONTROL | controls["channel"],
            _NOTE_ON | channel,
        ]
    ).astype(np.uint8)
    data1 = np.concatenate([pitch, controls["control"], pitch]).astype(np.uint8)
    data2 = np.concatenate(
        [np.where(real_off, _OFF_VELOCITY, 0), controls["value"], notes["velocity"]]
    ).astype(np.uint8)
    order = np.argsort(tick * 4 + prio, kind="stable")
    return tick[order], status[order], data1[order], data2[order]


def to_smf_bytes(piece: GeneratedPiece) -> bytes:
    """Encode a piece as a format-1 Standard MIDI File.

    Track 0 (conductor): track name, time signature, every tempo. Track 1 (piano): track name, program
    change 0, then notes and controls in tick order; at one tick note-offs come first, then controls,
    then note-ons. Offs are mostly note_on with velocity 0, some real note_off; running status applies.
    """
    num, den = piece.time_signature
    name = piece.name.encode("ascii")
    conductor = bytearray(_meta(0, 0x03, name))
    conductor += _meta(0, 0x58, bytes([num, int(den).bit_length() - 1, 24, 8]))
    prev = 0
    for tick, tempo in zip(piece.tempos["tick"].tolist(), piece.tempos["tempo_us"].tolist()):
        conductor += _meta(tick - prev, 0x51, int(tempo).to_bytes(3, "big"))
        prev = tick
    conductor += _END_OF_TRACK

    tick, status, data1, data2 = _piano_events(piece)
    delta = np.diff(tick, prepend=np.int64(0))
    if delta.shape[0] and (int(delta.min()) < 0 or int(tick[-1]) >= 1 << 28):
        raise ValueError("event ticks must be non-negative and below 2**28")
    body = np.empty(delta.shape[0] * 7, dtype=np.uint8)
    size = encode_events_kernel(delta, status, data1, data2, np.uint8(_PROGRAM), body)
    piano = b"".join(
        [
            _meta(0, 0x03, b"Piano"),
            bytes([0x00, _PROGRAM, 0x00]),  # program change 0 (acoustic grand), channel 0
            body[:size].tobytes(),
            _END_OF_TRACK,
        ]
    )
    header = _chunk(b"MThd", (1).to_bytes(2, "big") + (2).to_bytes(2, "big") + piece.ticks_per_beat.to_bytes(2, "big"))
    return header + _chunk(b"MTrk", bytes(conductor)) + _chunk(b"MTrk", piano)


# --------------------------------------------------------------------------------------------------
# Corpus and source spec
# --------------------------------------------------------------------------------------------------


def corpus_files(n: int, seed: int = 0, minutes: float = DEFAULT_MINUTES) -> Iterator[tuple[str, bytes]]:
    """File names (``gen-s{seed}-{i:05d}.mid``) and bytes of pieces 0..n-1 of the corpus with ``seed``.

    The arguments are checked at once; the pieces are generated one at a time as the result is iterated
    (:func:`tasks.storage.sources.generate_corpus` writes them to a folder).
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    _check_args(seed, 0, minutes)

    def files() -> Iterator[tuple[str, bytes]]:
        for i in range(int(n)):
            piece = generate_piece(seed, i, minutes)
            yield f"{piece.name}.mid", to_smf_bytes(piece)

    return files()


_SPEC = re.compile(r"generated(?::(?P<n>[^:]*)(?::(?P<minutes>[^:]*))?)?")


def parse_generated_spec(text: str) -> tuple[int, float]:
    """Parse a source string ``generated``, ``generated:N`` or ``generated:N:MINUTES``.

    Returns
    -------
    tuple[int, float]
        (n pieces, minutes per piece); defaults 24 and 1.0.

    Raises
    ------
    ValueError
        If the text is not one of these forms, N is not a positive integer or MINUTES not a positive number.
    """
    m = _SPEC.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            f"not a generated-corpus source: {text!r} (expected 'generated', 'generated:N' or 'generated:N:MINUTES')"
        )
    n, minutes = DEFAULT_N, DEFAULT_MINUTES
    if m["n"] is not None:
        if not re.fullmatch(r"\d+", m["n"]) or int(m["n"]) <= 0:
            raise ValueError(f"in {text!r}: N must be a positive integer, got {m['n']!r}")
        n = int(m["n"])
    if m["minutes"] is not None:
        try:
            minutes = float(m["minutes"])
        except ValueError:
            raise ValueError(f"in {text!r}: MINUTES must be a positive number, got {m['minutes']!r}") from None
        if not math.isfinite(minutes) or minutes <= 0:
            raise ValueError(f"in {text!r}: MINUTES must be a positive number, got {m['minutes']!r}")
    return n, minutes
