"""Notes to piano-roll images and back (encodings 1, 2 and 3 of the paper).

The layout, the pixel values and :class:`~storage_schemas.encodings.RollConfig` are described in
:mod:`storage_schemas.encodings`. Rendering is three numba kernels (``render_enc*_kernel``) that draw
every window of one piece at once into a preallocated ``(n_windows, channels, rows, columns)`` array,
each with a plain NumPy/Python twin (``*_reference``, a different algorithm: draw the whole piece, then
slice it) that the tests compare it with. Nothing here knows about Prefect or storage.

Seconds to columns
------------------
``"midipix"`` convention (the default): ``start = floor(onset * fs)``, ``stop = max(floor(offset * fs),
start + 1)`` with ``fs = 1 / res``, half-open; a time within 1e-9 column of a boundary counts as on it,
so ``k * res`` computed in floating point lands in column ``k``. ``"pretty_midi"`` convention: ``start = int(onset *
fs)``, ``stop = int(offset * fs)`` with ``fs = 1 / res``, exactly what ``pretty_midi``'s
``get_piano_roll`` does; a note with ``stop <= start`` draws nothing and takes part in nothing.

Same-pitch overlaps
-------------------
Notes of one pitch (any program) are taken in onset order (ties: array order). The pixels drawn for a
pitch are exactly the union of its notes' spans, and every pixel belongs to one note: a later onset
starts a new note there and the earlier note is cut at it; the later note runs on to the end of the
covered stretch (``max`` of the stops seen so far). So a re-struck key keeps sounding as long as any
of its notes does, and a pixel's velocity and program are those of the last onset before it: they
are never summed (never above 127). Of several notes of one pitch starting in the same column, only
the last is drawn.

What an image loses (encode -> decode)
--------------------------------------
1. Sub-grid timing: onsets and offsets are quantised to the column grid. In the midipix convention the
   decoded onset is ``floor(onset / res) * res`` (in ``(onset - res, onset]``) and, for a note with no
   same-pitch overlap, the decoded offset is within one column of the true offset.
2. A note of length 0 columns (shorter than one column after quantisation) becomes exactly 1 column
   long in the midipix convention; in the pretty_midi convention it is lost.
3. Overlapping same-pitch notes: the earlier note is cut at the later onset's column and the later
   note ends where the last of them ends (see above); a note whose start column equals that of a
   later note of the same pitch is lost.
4. enc3 loses velocity and program (decoded as ``default_velocity`` and ``default_program``).
5. enc1 clips lengths at 255 columns (12.75 s at 0.05 s); enc2 and enc3 keep any length.
6. Tempo: only enc1 keeps it, as whole bpm in 0..255 at each onset.
7. Notes outside ``pitch_lo..pitch_hi`` are not drawn; the renderers return how many were skipped.

On the grid, with no two notes of one pitch overlapping, enc1 (lengths <= 255), enc2 and enc3 (velocity
and program aside) decode to exactly the notes drawn, and re-encoding gives the same images bit for bit.

Decoding
--------
In the first channel of enc2/enc3, each run of non-zero pixels in a row is one note, and an ``ONSET``
pixel inside a run starts a new one; any other non-zero value counts as sustained. A run that begins
without an onset pixel (a note continuing from before the window) is still a note, flagged
``has_onset = False``. Velocity and program are read at the note's first pixel. In enc1 each non-zero
first-channel pixel is a note whose length is the pixel value. :func:`from_windows` pastes a piece's
windows side by side before decoding, so a run reaching a window's last column, continued by a run at
column 0 of the next window without an onset, is one note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from storage_schemas.encodings import MAX_LENGTH, ONSET, SUSTAIN, RollConfig
from tasks.kernels.simd import BLOCK, blend_block, fill_run, store_block

__all__ = [
    "GridNotes",
    "Windows",
    "note_columns",
    "window_starts",
    "tempo_at",
    "render_windows",
    "to_windows",
    "stitch_windows",
    "from_enc1",
    "from_enc2",
    "from_enc3",
    "from_windows",
    "render_enc1_kernel",
    "render_enc2_kernel",
    "render_enc3_kernel",
    "render_enc1_reference",
    "render_enc2_reference",
    "render_enc3_reference",
    "decode_runs_kernel",
    "decode_runs_reference",
]

# how each roll encoding is drawn (by name: a new encoding without an entry here is refused, never drawn
# as the one its channel count resembles)
ONSET_PIXELS, SPANS, SPANS_COLOUR = 0, 1, 2
STYLES = {"enc1": ONSET_PIXELS, "enc2": SPANS_COLOUR, "enc3": SPANS}

GRID_EPS = 1e-9  # in columns: a time this close below a column boundary counts as on it
DEFAULT_BPM = 120.0
_NO_TEMPO = np.zeros(0, np.uint8)


@dataclass(frozen=True)
class GridNotes:
    """Notes on the column grid, as decoded from images, sorted by start column, then pitch.

    ``start_col``/``stop_col`` are half-open spans in piece columns; ``has_onset`` is False for a note
    whose run begins without an onset pixel (it continues from before the decoded image);
    ``tempo_bpm`` is enc1's fourth channel and None for the other encodings.
    """

    pitch: np.ndarray  # (N,) uint8
    velocity: np.ndarray  # (N,) uint8
    program: np.ndarray  # (N,) uint8
    start_col: np.ndarray  # (N,) int64
    stop_col: np.ndarray  # (N,) int64
    has_onset: np.ndarray  # (N,) bool
    resolution_s: float
    tempo_bpm: np.ndarray | None = None  # (N,) float64, enc1 only

    def __len__(self) -> int:
        return int(self.pitch.shape[0])

    @property
    def onset_s(self) -> np.ndarray:
        return self.start_col * self.resolution_s

    @property
    def offset_s(self) -> np.ndarray:
        return self.stop_col * self.resolution_s


class Windows(NamedTuple):
    """All windows of one piece: ``images[w]`` covers piece columns ``starts[w] .. starts[w] + columns - 1``.

    A named tuple rather than a frozen dataclass: one is made per piece rendered, and a frozen
    dataclass's ``__init__`` costs several times as much."""

    images: np.ndarray  # (W, C, rows, columns) uint8
    starts: np.ndarray  # (W,) int64
    n_columns: int  # columns the piece spans; the last window is padded with silence past it
    n_skipped: int  # notes outside pitch_lo..pitch_hi


# -- time to columns ---------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _column_of(t, fs, pretty):
    """Column of time ``t`` (seconds) at ``fs`` columns per second, in either convention."""
    if pretty:
        return np.int64(t * fs)  # truncation, as int() in pretty_midi
    return np.int64(np.floor(t * fs + GRID_EPS))


@numba.njit(cache=True, nogil=True, inline="always")
def _span_of(onset, offset, fs, pretty):
    """Half-open column span ``(start, stop)`` of one note: in the midipix convention at least a column."""
    s = _column_of(onset, fs, pretty)
    e = _column_of(offset, fs, pretty)
    if not pretty and e <= s:
        e = s + 1
    return s, e


@numba.njit(cache=True, nogil=True)
def _columns_kernel(onset, offset, res, pretty):
    """``(start, stop, end, ordered)``: column spans, the largest stop (>= 0) and whether the starts
    are non-decreasing."""
    n = onset.shape[0]
    start = np.empty(n, np.int64)
    stop = np.empty(n, np.int64)
    fs = 1.0 / res
    end = np.int64(0)
    ordered = True
    for i in range(n):
        s, e = _span_of(onset[i], offset[i], fs, pretty)
        start[i] = s
        stop[i] = e
        if i > 0 and s < start[i - 1]:
            ordered = False
        if e > end:
            end = e
    return start, stop, end, ordered


def _times(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {arr.shape}")
    return arr


def note_columns(onset_s, offset_s, cfg: RollConfig) -> tuple[np.ndarray, np.ndarray]:
    """Half-open column spans ``(start, stop)`` of notes, both int64, in ``cfg.convention``.

    Parameters
    ----------
    onset_s, offset_s : array_like of float
        Note times in seconds (``offset_s`` is the key release or the pedal release, as the caller
        chooses).
    cfg : RollConfig
        ``resolution_s`` and ``convention`` are used.

    Returns
    -------
    start, stop : np.ndarray
        In the midipix convention ``stop > start`` always; in the pretty_midi convention a note with
        ``stop <= start`` draws nothing.
    """
    onset, offset = _times(onset_s, "onset_s"), _times(offset_s, "offset_s")
    if offset.shape != onset.shape:
        raise ValueError("onset_s and offset_s must have one length")
    start, stop, _, _ = _columns_kernel(onset, offset, cfg.resolution_s, cfg.convention == "pretty_midi")
    return start, stop


def window_starts(n_columns_total: int, cfg: RollConfig) -> np.ndarray:
    """First column of each window: ``0, hop, 2 * hop, ...`` up to the first window reaching the end.

    At least one window, even for an empty piece; the last one may reach past the piece (it is padded
    with silence). Returns int64.
    """
    return np.arange(_n_windows(n_columns_total, cfg), dtype=np.int64) * cfg.hop_columns


def _n_windows(n_columns_total: int, cfg: RollConfig) -> int:
    return int(_window_count(max(int(n_columns_total), 0), cfg.columns, cfg.hop_columns))


@numba.njit(cache=True, nogil=True)
def _window_count(n_columns, cols, hop):
    """Windows of ``cols`` columns every ``hop`` columns covering ``n_columns`` (at least one)."""
    return 1 if n_columns <= cols else 1 + (n_columns - cols + hop - 1) // hop


def tempo_at(onset_s, tempo_time_s, tempo_bpm, default_bpm: float = DEFAULT_BPM) -> np.ndarray:
    """Tempo in bpm in force at each onset, from a piece's tempo map (the ``tempos`` table: event times
    sorted, the last of equal times wins, ``default_bpm`` before the first event). Returns float64."""
    onset = np.asarray(onset_s, dtype=np.float64)
    times = np.asarray(tempo_time_s, dtype=np.float64)
    bpm = np.asarray(tempo_bpm, dtype=np.float64)
    if bpm.size == 0:
        return np.full(onset.shape, float(default_bpm))
    idx = np.searchsorted(times, onset, side="right") - 1
    return np.where(idx >= 0, bpm[np.maximum(idx, 0)], float(default_bpm))


# -- rendering kernels -------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _owned_stops(pitch, start, stop):
    """Stop of the span each note owns (see "Same-pitch overlaps"); notes sorted by start column.

    A note that draws nothing keeps a stop <= its start.
    """
    eff = stop.copy()
    last = np.full(256, -1, np.int64)  # per pitch: the note that owns the open stretch
    run_end = np.zeros(256, np.int64)  # per pitch: where that stretch ends
    for i in range(pitch.shape[0]):
        s = start[i]
        e = stop[i]
        if e <= s:
            continue
        p = pitch[i]
        j = last[p]
        if j >= 0 and run_end[p] > s:
            eff[j] = s  # cut at the later onset (to nothing when both start in one column)
            if run_end[p] > e:
                e = run_end[p]
        eff[i] = e
        run_end[p] = e
        last[p] = i
    return eff


@numba.njit(cache=True, nogil=True, inline="always")  # no arrays: inlining adds no refcounts
def _paint_note(addr, w0, r, s, e, vel, prog, hop, n_win, cols, wsize, plane, colour, overlap):
    """Draw one note (row ``r``, columns ``s .. e-1``) into every window holding part of it, in the
    zero-filled array at address ``addr`` (no array arguments: see :mod:`tasks.kernels.simd`).

    Notes arrive in order of start column; the caller keeps, per pitch, where the stretch drawn so far
    ends (``run_end``): a note starting inside it (``overlap``) has ``e`` extended to its end and
    overwrites the earlier note's tail from its own onset on, which is what cutting the earlier note
    there would draw (see "Same-pitch overlaps"). ``w0`` is the first window that can hold column
    ``s``; it only moves forward, so no division per note. Zero values are not written outside
    overlaps. Returns the new ``w0``.
    """
    while w0 * hop + cols <= s:
        w0 += 1
    w = w0
    ws = w * hop
    v8 = np.uint8(vel)
    g8 = np.uint8(prog)
    with_vel = colour and (vel != 0 or overlap)
    with_prog = colour and (prog != 0 or overlap)
    row_len = np.uint64(cols)
    base = np.uint64(w) * wsize + np.uint64(r * cols)  # flat indices are unsigned: no wrap-around
    while ws < e and w < n_win:
        ua = base + np.uint64((s if s > ws else ws) - ws)  # window columns a .. b-1, never empty
        ub = base + np.uint64((e if e < ws + cols else ws + cols) - ws)
        fill_run(addr, base, row_len, ua, ub, ONSET if s >= ws else SUSTAIN, SUSTAIN)
        if with_vel:
            fill_run(addr, base + plane, row_len, ua + plane, ub + plane, v8, v8)
        if with_prog:
            fill_run(addr, base + plane + plane, row_len, ua + plane + plane, ub + plane + plane, g8, g8)
        w += 1
        ws += hop
        base += wsize
    return w0


@numba.njit(cache=True, nogil=True, inline="always")  # no arrays: inlining adds no refcounts
def _paint_segment(addr, row0, c, n, first, vel, prog, with_vel, with_prog, cols, plane):
    """Columns ``c .. c+n-1`` (``n <= BLOCK <= cols``) of the row at flat index ``row0``: state ``first``
    then ``SUSTAIN``, velocity and program where asked. Nothing at or after column ``c`` of the row
    has been drawn (see :func:`_paint_short`): a block starting at ``c`` is stored whole, without
    reading it; a block slid back from the row's end holds earlier pixels and is blended."""
    m = np.uint64(n)
    if c + BLOCK <= cols:
        at = row0 + np.uint64(c)
        zero = np.uint64(0)
        store_block(addr, at, zero, m, np.uint8(first), np.uint8(SUSTAIN))
        if with_vel:
            store_block(addr, at + plane, zero, m, np.uint8(vel), np.uint8(vel))
        if with_prog:
            store_block(addr, at + plane + plane, zero, m, np.uint8(prog), np.uint8(prog))
        return
    block = row0 + np.uint64(cols - BLOCK)  # the row's last BLOCK bytes: stay inside the row
    lo = np.uint64(c - (cols - BLOCK))
    blend_block(addr, block, lo, m, np.uint8(first), np.uint8(SUSTAIN))
    if with_vel:
        blend_block(addr, block + plane, lo, m, np.uint8(vel), np.uint8(vel))
    if with_prog:
        blend_block(addr, block + plane + plane, lo, m, np.uint8(prog), np.uint8(prog))


@numba.njit(cache=True, nogil=True, inline="always")  # no arrays: inlining adds no refcounts
def _paint_short(addr, wbase, ws, r, s, e, vel, prog, cols, plane, wsize, colour, overlap):
    """Draw a short note without a loop: ``ws <= s < ws + cols`` (the window starting at column ``ws``,
    flat index ``wbase`` of the zero-filled array at address ``addr``), ``e - s <= BLOCK <= cols``, and
    when ``e > ws + cols`` the next window exists. ``overlap``: an earlier note of the pitch reaches
    past ``s`` (and ``e`` is already at least where it ends), so zero velocity and program are written
    too. The caller keeps ``run_end``. No array arguments: see :mod:`tasks.kernels.simd`.

    Notes come in order of start column, so when this note is drawn nothing after column ``s`` of its
    row has been drawn except the tail of the earlier note it overlaps, which it covers.
    """
    with_vel = colour and (vel != 0 or overlap)
    with_prog = colour and (prog != 0 or overlap)
    row0 = wbase + np.uint64(r * cols)
    end = ws + cols
    if e <= end:
        _paint_segment(addr, row0, s - ws, e - s, ONSET, vel, prog, with_vel, with_prog, cols, plane)
        return
    _paint_segment(addr, row0, s - ws, end - s, ONSET, vel, prog, with_vel, with_prog, cols, plane)
    _paint_segment(addr, row0 + wsize, 0, e - end, SUSTAIN, vel, prog, with_vel, with_prog, cols, plane)


@numba.njit(cache=True, nogil=True)
def _spans_kernel(out, zeroed, onset, offset, fs, pretty, pitch, velocity, program, pitch_lo, hop, colour):
    """The one span renderer (enc2 with ``colour``, enc3 without): draw notes into ``out`` (W, C, rows,
    columns), window ``w`` starting at column ``w * hop``.

    The notes' times are turned into columns here (:func:`_span_of`, at ``fs`` columns a second in the
    ``pretty`` convention); integer columns given as floats with ``fs = 1`` and ``pretty`` (:func:`_exact`)
    pass unchanged. Windows ``zeroed ..`` of ``out`` are not yet zero: with windows side by side
    (``hop == cols``) each is zero-filled just before the first note drawn into it, so it is still in cache
    while it is drawn, and the rest at the end; short notes take :func:`_paint_short`, other notes and
    layouts :func:`_paint_note`.

    Returns ``(skipped, ok)``: notes outside the pitch range, and False (``out`` to be discarded) when
    the notes are not sorted by start column or a MIDI value lies outside 0..127.
    """
    n_win, channels, rows, cols = out.shape
    flat = out.reshape(-1)
    plane = np.uint64(rows * cols)
    wsize = np.uint64(channels * rows * cols)
    run_end = np.zeros(256, np.int64)  # per pitch: where the stretch drawn so far ends
    addr = np.uint64(flat.ctypes.data)
    tiled = hop == cols and cols >= BLOCK  # windows side by side: short-note path, lazy zeroing
    skipped = 0
    w0 = 0
    ws = np.int64(0)  # first column of window w0
    wbase = np.uint64(0)  # flat index of window w0
    previous = np.int64(-(2 ** 62))
    if not tiled:  # other layouts: zero-filled first
        zeroed = _zero_windows(flat, zeroed, n_win, wsize)
    for i in range(pitch.shape[0]):
        s, e = _span_of(onset[i], offset[i], fs, pretty)
        p = np.int64(pitch[i])
        vel = np.int64(velocity[i])
        prog = np.int64(program[i])
        if s < previous or np.uint64(p | vel | prog) > np.uint64(127):  # unsorted, or a value outside 0..127
            return skipped, False
        previous = s
        r = p - pitch_lo
        if r < 0 or r >= rows:
            skipped += 1
            continue
        if e <= s:
            continue
        held = run_end[p]
        overlap = held > s
        if overlap and held > e:
            e = held
        run_end[p] = e
        if tiled:
            while s >= ws + cols:  # the window holding column s (hop == cols: exactly one)
                w0 += 1
                ws += cols
                wbase += wsize
            if w0 < n_win and ws <= s and e - s <= BLOCK:
                reach = w0 + 1 if e <= ws + cols else w0 + 2  # windows the note touches: w0 .. reach-1
                if reach <= n_win:
                    if zeroed < reach:  # first note in these windows: zero them (and any skipped) now;
                        # written out rather than _zero_windows: that call takes the array (refcounts per note)
                        flat[np.uint64(zeroed) * wsize : np.uint64(reach) * wsize] = 0
                        zeroed = reach
                    _paint_short(addr, wbase, ws, r, s, e, vel, prog, cols, plane, wsize, colour, overlap)
                    continue
            zeroed = _zero_windows(flat, zeroed, min(n_win, (e - 1) // cols + 1), wsize)
        w0 = _paint_note(addr, w0, r, s, e, vel, prog, hop, n_win, cols, wsize, plane, colour, overlap)
        ws = w0 * hop
        wbase = np.uint64(w0) * wsize
    _zero_windows(flat, zeroed, n_win, wsize)
    return skipped, True


@numba.njit(cache=True, nogil=True)
def _exact(columns):
    """Integer columns as the float times :func:`_spans_kernel` takes: ``fs = 1`` in the truncating
    convention gives them back exactly (any column below 2**53)."""
    return columns.astype(np.float64)


@numba.njit(cache=True, nogil=True)
def render_enc2_kernel(pitch, velocity, program, start, stop, pitch_lo, hop, out):
    """Draw enc2 into ``out`` (W, 3, rows, columns), window ``w`` starting at column ``w * hop``.

    ``pitch``/``velocity``/``program`` uint8, ``start``/``stop`` int64 sorted by ``start``; ``out``
    C-contiguous and zero. Returns the number of notes outside ``pitch_lo .. pitch_lo + rows - 1``.
    """
    return _spans_kernel(out, out.shape[0], _exact(start), _exact(stop), 1.0, True, pitch, velocity, program,
                         pitch_lo, hop, True)[0]


@numba.njit(cache=True, nogil=True)
def render_enc3_kernel(pitch, start, stop, pitch_lo, hop, out):
    """Draw enc3 into ``out`` (W, 1, rows, columns); see :func:`render_enc2_kernel`."""
    return _spans_kernel(out, out.shape[0], _exact(start), _exact(stop), 1.0, True, pitch, pitch, pitch, pitch_lo, hop,
                         False)[0]


@numba.njit(cache=True, nogil=True)
def render_enc1_kernel(pitch, velocity, program, tempo, start, stop, pitch_lo, hop, out):
    """Draw enc1 into ``out`` (W, 4, rows, columns): one pixel per note at its onset column, in every
    window holding that column; ``tempo`` is the per-note fourth-channel value (uint8). Same input
    rules as :func:`render_enc2_kernel`; returns the number of notes outside the pitch range."""
    n_win, _, rows, cols = out.shape
    eff = _owned_stops(pitch, start, stop)
    skipped = 0
    for i in range(pitch.shape[0]):
        r = np.int64(pitch[i]) - pitch_lo
        if r < 0 or r >= rows:
            skipped += 1
            continue
        s = start[i]
        length = eff[i] - s
        if length <= 0:
            continue
        if length > MAX_LENGTH:
            length = MAX_LENGTH
        w = (s - cols) // hop + 1
        if w < 0:
            w = 0
        ws = w * hop
        while ws <= s and w < n_win:
            c = s - ws
            out[w, 0, r, c] = length
            out[w, 1, r, c] = velocity[i]
            out[w, 2, r, c] = program[i]
            out[w, 3, r, c] = tempo[i]
            w += 1
            ws += hop
    return skipped


# -- reference twins (plain NumPy: draw the whole piece, then slice windows out of it) ---------------


def _owned_stops_reference(pitch, start, stop):
    """Twin of :func:`_owned_stops` from coverage instead of a scan: a note owns its columns up to the
    next onset of its pitch ("next": a greater start, or the same start later in the arrays) or to the
    end of the covered stretch of its row, whichever comes first. Any input order."""
    pitch, start, stop = (np.asarray(a).astype(np.int64) for a in (pitch, start, stop))
    eff = stop.copy()
    drawn = stop > start
    if not drawn.any():
        return eff
    lo, hi = int(start[drawn].min()), int(stop[drawn].max())
    covered = np.zeros((256, hi - lo + 1), bool)  # one spare column: every stretch ends in the array
    for i in np.flatnonzero(drawn):
        covered[pitch[i], start[i] - lo : stop[i] - lo] = True
    idx = np.arange(pitch.shape[0])
    for i in np.flatnonzero(drawn):
        s = start[i]
        stretch_end = s + int(np.argmin(covered[pitch[i], s - lo :]))
        later = drawn & (pitch == pitch[i]) & ((start > s) | ((start == s) & (idx > i)))
        eff[i] = min(stretch_end, int(start[later].min())) if later.any() else stretch_end
    return eff


def _slice_windows(full, hop, out):
    for w in range(out.shape[0]):
        out[w] = full[:, :, w * hop : w * hop + out.shape[3]]


def _reference_notes(pitch, start, stop, pitch_lo, out, hop):
    """What both twins start from: the whole piece's zero canvas ``(channels, rows, width)``, the notes
    on the keyboard as ``(note, row, start, owned stop)`` and how many are off it."""
    n_win, channels, rows, cols = out.shape
    full = np.zeros((channels, rows, (n_win - 1) * hop + cols), np.uint8)
    eff = _owned_stops_reference(pitch, start, stop)
    rows_of = [int(p) - pitch_lo for p in pitch]
    notes = [(i, r, int(start[i]), int(eff[i])) for i, r in enumerate(rows_of) if 0 <= r < rows]
    return full, notes, len(rows_of) - len(notes)


def _spans_reference(pitch, velocity, program, start, stop, pitch_lo, hop, out):
    full, notes, skipped = _reference_notes(pitch, start, stop, pitch_lo, out, hop)
    for i, r, s, e in notes:
        a, e = max(s, 0), min(e, full.shape[2])
        if e <= a:
            continue
        full[0, r, a:e] = SUSTAIN
        if s >= 0:
            full[0, r, s] = ONSET
        if velocity is not None:
            full[1, r, a:e] = velocity[i]
            full[2, r, a:e] = program[i]
    _slice_windows(full, hop, out)
    return skipped


def render_enc2_reference(pitch, velocity, program, start, stop, pitch_lo, hop, out):
    """Plain twin of :func:`render_enc2_kernel`."""
    return _spans_reference(pitch, velocity, program, start, stop, pitch_lo, hop, out)


def render_enc3_reference(pitch, start, stop, pitch_lo, hop, out):
    """Plain twin of :func:`render_enc3_kernel`."""
    return _spans_reference(pitch, None, None, start, stop, pitch_lo, hop, out)


def render_enc1_reference(pitch, velocity, program, tempo, start, stop, pitch_lo, hop, out):
    """Plain twin of :func:`render_enc1_kernel`."""
    full, notes, skipped = _reference_notes(pitch, start, stop, pitch_lo, out, hop)
    for i, r, s, e in notes:
        if e > s and 0 <= s < full.shape[2]:
            full[:, r, s] = (min(e - s, MAX_LENGTH), velocity[i], program[i], tempo[i])
    _slice_windows(full, hop, out)
    return skipped


# -- rendering API -----------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _value_range(a, b, c):
    """Smallest and largest value in three integer arrays of one length, in one pass."""
    lo = 0
    hi = 0
    for i in range(a.shape[0]):
        lo = min(lo, a[i], b[i], c[i])
        hi = max(hi, a[i], b[i], c[i])
    return lo, hi


def _midi_values(pitch, velocity, program, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three per-note MIDI columns as contiguous uint8, checked to lie in 0..127."""
    arrays = []
    for name, values in (("pitch", pitch), ("velocity", velocity), ("program", program)):
        arr = np.asarray(values)
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integers, got {arr.dtype}")
        arrays.append(arr)
    lo, hi = _value_range(*(a.astype(np.int64) if a.dtype != np.uint8 else a for a in arrays))
    if lo < 0 or hi > 127:
        raise ValueError("pitch, velocity and program must lie in 0..127")
    p, v, g = (np.ascontiguousarray(a, dtype=np.uint8) for a in arrays)
    return p, v, g


def _style(cfg: RollConfig) -> int:
    try:
        return STYLES[cfg.encoding]
    except KeyError:
        raise ValueError(f"no roll renderer for encoding {cfg.encoding!r}") from None


def _tempo_pixels(tempo_bpm, n: int) -> np.ndarray:
    """enc1's fourth channel for ``n`` notes: the bpm at each onset (default 120), rounded, clipped to 0..255."""
    bpm = np.broadcast_to(np.asarray(DEFAULT_BPM if tempo_bpm is None else tempo_bpm, np.float64), (n,))
    return np.clip(np.rint(bpm), 0, 255).astype(np.uint8)


def _render(out, pitch, velocity, program, start, stop, ordered: bool, cfg: RollConfig, tempo_bpm) -> int:
    n = start.shape[0]
    pitch, velocity, program = _midi_values(pitch, velocity, program, n)
    if not ordered:
        order = np.argsort(start, kind="stable")  # ties keep array order: the later note wins
        start, stop, pitch, velocity, program = start[order], stop[order], pitch[order], velocity[order], program[order]
    lo, hop, style = cfg.pitch_lo, cfg.hop_columns, _style(cfg)
    if style != ONSET_PIXELS:
        return int(_spans_kernel(out, out.shape[0], _exact(start), _exact(stop), 1.0, True, pitch, velocity,
                                 program, lo, hop, style == SPANS_COLOUR)[0])
    tempo = _tempo_pixels(tempo_bpm, n)
    if not ordered:
        tempo = tempo[order]
    return int(render_enc1_kernel(pitch, velocity, program, tempo, start, stop, lo, hop, out))


def render_windows(out, pitch, velocity, program, start, stop, cfg: RollConfig, *, tempo_bpm=None) -> int:
    """Draw one piece's notes into ``out``, all windows at once.

    Parameters
    ----------
    out : np.ndarray
        ``(n_windows, *cfg.shape)`` uint8, C-contiguous and zero-filled; window ``w`` starts at column
        ``w * cfg.hop_columns``.
    pitch, velocity, program : array_like of int
        Per-note MIDI values (0..127).
    start, stop : array_like of int
        Half-open column spans (from :func:`note_columns`). Notes need not be sorted: they are taken in
        order of ``start`` (stable), so of same-pitch notes a later onset wins.
    cfg : RollConfig
    tempo_bpm : float or array_like, optional
        enc1 only: tempo at each onset (default 120 bpm), rounded and clipped to 0..255.

    Returns
    -------
    int
        Number of notes outside ``cfg.pitch_lo .. cfg.pitch_hi`` (not drawn).
    """
    if (out.dtype != np.uint8 or out.ndim != 4 or out.shape[1:] != cfg.shape
            or not out.flags.c_contiguous):
        raise ValueError(f"out must be C-contiguous uint8 of shape (n_windows, {cfg.shape}), "
                         f"got {out.dtype} {out.shape}")
    start = np.ascontiguousarray(start, dtype=np.int64)
    stop = np.ascontiguousarray(stop, dtype=np.int64)
    if start.ndim != 1 or stop.shape != start.shape:
        raise ValueError("start and stop must be 1-d arrays of one length")
    ordered = bool(start.shape[0] < 2 or np.all(start[1:] >= start[:-1]))
    return _render(out, pitch, velocity, program, start, stop, ordered, cfg, tempo_bpm)


@numba.njit(cache=True, nogil=True)
def _piece_end(onset, offset, fs, pretty):
    """Largest stop column (>= 0) of notes sorted by onset, from the latest offset and the last onset
    (stops are monotone in the offset, and at least ``start + 1`` in the midipix convention)."""
    n = onset.shape[0]
    if n == 0:
        return np.int64(0)
    latest = offset[0]
    for i in range(1, n):
        if offset[i] > latest:
            latest = offset[i]
    end = _column_of(latest, fs, pretty)
    if not pretty:
        end = max(end, _column_of(onset[n - 1], fs, pretty) + 1)
    return max(end, np.int64(0))


@numba.njit(cache=True, nogil=True)
def _zero_windows(flat, lo, hi, wsize):
    """Zero-fill windows ``lo .. hi-1`` of a flat image array; returns ``max(lo, hi)``."""
    if hi <= lo:
        return lo
    flat[np.uint64(lo) * wsize : np.uint64(hi) * wsize] = 0
    return hi


@numba.njit(cache=True, nogil=True)
def _render_piece_kernel(onset, offset, pitch, velocity, program, tempo, res, pretty, style, channels, pitch_lo,
                         rows, cols, hop, n_columns):
    """:func:`to_windows` in one call for the common case: columns, checks, allocation and drawing.

    ``style`` is :data:`ONSET_PIXELS` (enc1: :func:`render_enc1_kernel`) or :data:`SPANS` /
    :data:`SPANS_COLOUR` (:func:`_spans_kernel`, which takes the seconds itself: one pass over the notes).
    Returns ``(out, n_columns, skipped, ok)``; ``ok`` is False (and ``out`` is to be discarded) when the
    notes are not sorted by start column or a MIDI value lies outside 0..127, for the caller to handle.
    """
    fs = 1.0 / res
    if n_columns < 0:
        n_columns = _piece_end(onset, offset, fs, pretty)
    n_win = _window_count(n_columns, cols, hop)
    if style == ONSET_PIXELS:
        out = np.zeros((n_win, channels, rows, cols), np.uint8)  # (W, C, rows, columns)
        start, stop, _, ordered = _columns_kernel(onset, offset, res, pretty)
        lo, hi = _value_range(pitch, velocity, program)
        if not ordered or lo < 0 or hi > 127:
            return out, n_columns, 0, False
        skipped = render_enc1_kernel(pitch.astype(np.uint8), velocity.astype(np.uint8), program.astype(np.uint8),
                                     tempo, start, stop, pitch_lo, hop, out)
        return out, n_columns, skipped, True
    out = np.empty((n_win, channels, rows, cols), np.uint8)  # zero-filled by the renderer, window by window
    skipped, ok = _spans_kernel(out, 0, onset, offset, fs, pretty, pitch, velocity, program, pitch_lo, hop,
                                style == SPANS_COLOUR)
    return out, n_columns, skipped, ok


def _midi_column(values, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers of shape ({n},), got {arr.dtype} {arr.shape}")
    return arr


def to_windows(
    pitch,
    velocity,
    program,
    onset_s,
    offset_s,
    cfg: RollConfig,
    *,
    offset_pedal_s=None,
    tempo_bpm=None,
    n_columns: int | None = None,
) -> Windows:
    """Render a whole piece (one piece's rows of the ``notes`` table) into windows.

    Parameters
    ----------
    pitch, velocity, program, onset_s, offset_s : array_like
        Note columns. ``offset_pedal_s`` is required when ``cfg.pedal`` is set, and then drawn instead
        of ``offset_s``.
    cfg : RollConfig
    tempo_bpm : float or array_like, optional
        enc1: tempo at each onset (see :func:`tempo_at`); 120 bpm when omitted.
    n_columns : int, optional
        Length of the piece in columns (>= 0); by default the end of its last note. Notes reaching past
        the last window are cut there.

    Returns
    -------
    Windows
        ``images`` of shape ``(n_windows, *cfg.shape)``, their start columns, the piece length and
        the number of notes outside the pitch range.
    """
    if cfg.pedal:
        if offset_pedal_s is None:
            raise ValueError("cfg.pedal is set: pass offset_pedal_s")
        offset_s = offset_pedal_s
    onset, offset = _times(onset_s, "onset_s"), _times(offset_s, "offset_s")
    if offset.shape != onset.shape:
        raise ValueError("onset_s and offset_s must have one length")
    if n_columns is not None and int(n_columns) < 0:
        raise ValueError(f"n_columns must be >= 0, got {n_columns}")
    n = onset.shape[0]
    pitch = _midi_column(pitch, "pitch", n)
    velocity = _midi_column(velocity, "velocity", n)
    program = _midi_column(program, "program", n)
    style = _style(cfg)
    tempo = _tempo_pixels(tempo_bpm, n) if style == ONSET_PIXELS else _NO_TEMPO
    pretty = cfg.convention == "pretty_midi"
    out, n_cols, skipped, ok = _render_piece_kernel(
        onset, offset, pitch, velocity, program, tempo, cfg.resolution_s, pretty, style, cfg.channels,
        cfg.pitch_lo, cfg.rows, cfg.columns, cfg.hop_columns, -1 if n_columns is None else int(n_columns))
    if not ok:  # unsorted notes, or values to reject: the general path sorts or raises
        start, stop, end, ordered = _columns_kernel(onset, offset, cfg.resolution_s, pretty)
        n_cols = int(end) if n_columns is None else int(n_columns)
        out = np.zeros((_n_windows(n_cols, cfg),) + cfg.shape, np.uint8)
        skipped = _render(out, pitch, velocity, program, start, stop, ordered, cfg, tempo_bpm)
    starts = np.arange(0, out.shape[0] * cfg.hop_columns, cfg.hop_columns, dtype=np.int64)
    return Windows(images=out, starts=starts, n_columns=int(n_cols), n_skipped=int(skipped))


def stitch_windows(images, starts) -> np.ndarray:
    """Paste windows ``(W, C, rows, columns)`` at their start columns into one ``(C, rows, width)``
    roll, ``width = max(starts) + columns``; later windows overwrite overlaps."""
    images = np.asarray(images)
    starts = np.asarray(starts, dtype=np.int64)
    if images.ndim != 4 or images.shape[0] == 0 or starts.shape != (images.shape[0],):
        raise ValueError("need images (W, C, rows, columns) with W >= 1 and one start per window")
    if starts.min() < 0:
        raise ValueError("window starts must be >= 0")
    cols = images.shape[3]
    full = np.zeros(images.shape[1:3] + (int(starts.max()) + cols,), images.dtype)
    for w in range(images.shape[0]):
        full[:, :, starts[w] : starts[w] + cols] = images[w]
    return full


# -- decoding ----------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def decode_runs_kernel(state):
    """Notes in a first-channel roll ``(rows, columns)``: ``(row, start, stop, has_onset)`` ordered by
    row, then column. A run of non-zero pixels is a note; an ``ONSET`` pixel starts a new one."""
    rows, cols = state.shape
    n = 0
    for r in range(rows):
        prev = 0
        for c in range(cols):
            v = state[r, c]
            if v != 0 and (prev == 0 or v == ONSET):
                n += 1
            prev = v
    row = np.empty(n, np.int64)
    start = np.empty(n, np.int64)
    stop = np.empty(n, np.int64)
    has_onset = np.empty(n, np.bool_)
    k = 0
    for r in range(rows):
        open_run = False
        for c in range(cols):
            v = state[r, c]
            if v == 0:
                if open_run:
                    stop[k - 1] = c
                    open_run = False
            elif not open_run or v == ONSET:
                if open_run:
                    stop[k - 1] = c
                row[k] = r
                start[k] = c
                has_onset[k] = v == ONSET
                k += 1
                open_run = True
        if open_run:
            stop[k - 1] = cols
    return row, start, stop, has_onset


def decode_runs_reference(state):
    """Plain twin of :func:`decode_runs_kernel` (whole-array comparisons instead of a scan)."""
    state = np.asarray(state)
    on = state != 0
    onset = state == ONSET
    before = np.zeros_like(on)
    before[:, 1:] = on[:, :-1]
    after = np.zeros_like(on)
    after[:, :-1] = on[:, 1:]
    onset_after = np.zeros_like(on)
    onset_after[:, :-1] = onset[:, 1:]
    first = on & (~before | onset)  # a note's first pixel
    last = on & (~after | onset_after)  # a note's last pixel
    row, start = np.nonzero(first)
    row_last, col_last = np.nonzero(last)
    assert np.array_equal(row, row_last)
    return row.astype(np.int64), start.astype(np.int64), col_last.astype(np.int64) + 1, onset[row, start]


def _check_image(image, cfg: RollConfig, encoding: str) -> np.ndarray:
    if cfg.encoding != encoding:
        raise ValueError(f"cfg.encoding is {cfg.encoding!r}, not {encoding!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != cfg.shape:
        raise ValueError(f"{encoding} image must be uint8 of shape {cfg.shape}, got {image.dtype} {image.shape}")
    return image


def _decode_spans(image, col0: int, cfg: RollConfig, default_velocity: int, default_program: int) -> GridNotes:
    row, start, stop, has_onset = decode_runs_kernel(np.ascontiguousarray(image[0]))
    order = np.lexsort((row, start))
    row, start, stop, has_onset = row[order], start[order], stop[order], has_onset[order]
    if image.shape[0] >= 3:
        velocity = image[1][row, start]
        program = image[2][row, start]
    else:
        velocity = np.full(row.shape, default_velocity, np.uint8)
        program = np.full(row.shape, default_program, np.uint8)
    return GridNotes(
        pitch=(row + cfg.pitch_lo).astype(np.uint8), velocity=velocity, program=program,
        start_col=start + col0, stop_col=stop + col0, has_onset=has_onset, resolution_s=cfg.resolution_s,
    )


def _decode_enc1(image, col0: int, cfg: RollConfig) -> GridNotes:
    row, col = np.nonzero(image[0])
    order = np.lexsort((row, col))
    row, col = row[order], col[order]
    start = col.astype(np.int64) + col0
    return GridNotes(
        pitch=(row + cfg.pitch_lo).astype(np.uint8), velocity=image[1][row, col], program=image[2][row, col],
        start_col=start, stop_col=start + image[0][row, col], has_onset=np.ones(row.shape, np.bool_),
        resolution_s=cfg.resolution_s, tempo_bpm=image[3][row, col].astype(np.float64),
    )


def from_enc1(image, window_start: int, cfg: RollConfig) -> GridNotes:
    """Decode one enc1 window ``(4, rows, columns)`` whose first column is piece column ``window_start``.

    Every non-zero first-channel pixel is a note that many columns long (its end may lie past the
    window); velocity, program and tempo come from the other channels.
    """
    return _decode_enc1(_check_image(image, cfg, "enc1"), int(window_start), cfg)


def from_enc2(image, window_start: int, cfg: RollConfig) -> GridNotes:
    """Decode one enc2 window ``(3, rows, columns)`` whose first column is piece column ``window_start``.

    Runs of non-zero first-channel pixels are notes (an ``ONSET`` pixel starts a new one), cut at the
    window's edges; velocity and program are read at each note's first pixel.
    """
    return _decode_spans(_check_image(image, cfg, "enc2"), int(window_start), cfg, 0, 0)


def from_enc3(image, window_start: int, cfg: RollConfig, *, default_velocity: int = 64,
              default_program: int = 0) -> GridNotes:
    """Decode one enc3 window ``(1, rows, columns)`` like :func:`from_enc2`; enc3 holds no velocity or
    program, so every note gets ``default_velocity`` and ``default_program``."""
    return _decode_spans(_check_image(image, cfg, "enc3"), int(window_start), cfg, default_velocity,
                         default_program)


def from_windows(images, cfg: RollConfig, *, starts=None, default_velocity: int = 64,
                 default_program: int = 0) -> GridNotes:
    """Decode all windows of one piece into its notes.

    Parameters
    ----------
    images : array_like
        ``(W, *cfg.shape)`` uint8, as made by :func:`to_windows`.
    cfg : RollConfig
    starts : array_like of int, optional
        First column of each window; ``w * cfg.hop_columns`` by default.
    default_velocity, default_program : int
        enc3 only.

    Returns
    -------
    GridNotes
        The windows are pasted side by side first (later windows overwrite overlaps), so a note that
        crosses window edges comes back as one note.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != cfg.shape:
        raise ValueError(f"images must be uint8 of shape (W, {cfg.shape}), got {images.dtype} {images.shape}")
    if starts is None:
        starts = np.arange(images.shape[0], dtype=np.int64) * cfg.hop_columns
    roll = stitch_windows(images, starts)  # (C, rows, width)
    if _style(cfg) == ONSET_PIXELS:
        return _decode_enc1(roll, 0, cfg)
    return _decode_spans(roll, 0, cfg, default_velocity, default_program)
