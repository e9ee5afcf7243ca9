"""Standard MIDI File reader: bytes in, column arrays out.

The reader is a handful of numba kernels (``*_kernel``) that scan the file once, pair note events into
notes, convert ticks to seconds through the file's full tempo map and extend note ends under the
sustain pedal. :func:`read_midi` ties them together and turns every way a file can be broken into a
:class:`MidiError` with a kind and a readable message. Nothing here knows about Prefect or storage.

Rules (the contract the tests pin down against mido, symusic and pretty_midi)
--------------------------------------------------------------------------------
Time
    ``seconds(tick)`` integrates the tempo map: tempo events from *all* tracks, ordered by tick, then
    track, then position in the track; of several tempo events on one tick the last one wins. Before
    the first tempo event the tempo is 500,000 µs per beat (120 bpm).
Note pairing
    Notes are keyed by (track, channel, pitch). A ``note_on`` with velocity > 0 opens a note; a
    ``note_off`` or a ``note_on`` with velocity 0 closes the *earliest* still-open note of that key
    (first in, first out). A key struck again while it still sounds therefore yields two overlapping
    notes, and each release ends the oldest one. A release with no open note is ignored. Notes still
    open when their track ends are closed at the track's end (its End-of-Track tick).
    pretty_midi instead lets one release close every open note of the key struck on an earlier tick,
    so it reports fewer, shorter notes on files that re-strike keys before releasing them.
Program
    The program of a note is the last ``program_change`` on its (track, channel) before the note-on
    (0 when there is none).
Sustain pedal
    ``offset_pedal_s`` follows Magenta's rule: if controller 64 on the note's channel (any track) is
    >= 64 at the release tick (a pedal event on that very tick counts), the note is held until the
    next pedal value < 64, or until the next onset of the same channel and pitch, whichever comes
    first; a pedal that never comes up holds it to the end of the file. It never shortens a note.
Rejected files
    Not MIDI, truncated chunks or events, division 0, SMPTE division, format 2, running status with
    no status to run on, data bytes >= 0x80, system-common / real-time status bytes inside a track,
    variable-length numbers longer than 4 bytes, fewer track chunks than the header declares, more
    than 32,767 track chunks, and files without a single note.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

# error codes returned by the scanner (0 = fine)
OK = 0
NOT_MIDI = 1
TRUNCATED = 2
BAD_HEADER = 3
ZERO_DIVISION = 4
SMPTE_DIVISION = 5
FORMAT_2 = 6
RUNNING_STATUS = 7
BAD_VARLEN = 8
BAD_STATUS = 9
BAD_DATA = 10
MISSING_TRACKS = 11
TOO_MANY_TRACKS = 12
MAX_TRACKS = 32767  # track numbers are int16 in the tables

ERROR_KINDS = {
    NOT_MIDI: "not_midi",
    TRUNCATED: "truncated",
    BAD_HEADER: "bad_header",
    ZERO_DIVISION: "zero_division",
    SMPTE_DIVISION: "smpte_division",
    FORMAT_2: "format_2",
    RUNNING_STATUS: "running_status",
    BAD_VARLEN: "bad_varlen",
    BAD_STATUS: "bad_status",
    BAD_DATA: "bad_data",
    MISSING_TRACKS: "missing_tracks",
    TOO_MANY_TRACKS: "too_many_tracks",
}

_MESSAGES = {
    NOT_MIDI: "not a Standard MIDI File: no 'MThd' header chunk",
    TRUNCATED: "file is truncated: a chunk or event runs past the end of the data",
    BAD_HEADER: "malformed 'MThd' header chunk",
    ZERO_DIVISION: "time division is 0 ticks per beat",
    SMPTE_DIVISION: "SMPTE time division is not supported (only ticks per beat)",
    FORMAT_2: "SMF format 2 (independent sequences) is not supported",
    RUNNING_STATUS: "running status used with no previous channel status in the track",
    BAD_VARLEN: "variable-length quantity longer than 4 bytes",
    BAD_STATUS: "status byte not allowed in a MIDI file track",
    BAD_DATA: "data byte >= 0x80 inside a channel message",
    MISSING_TRACKS: "fewer track chunks than the header declares",
    TOO_MANY_TRACKS: f"more than {MAX_TRACKS} track chunks",
}

DEFAULT_TEMPO_US = 500_000
SUSTAIN, SOSTENUTO, SOFT = 64, 66, 67


class MidiError(ValueError):
    """A file that cannot be read; ``kind`` is a short machine-readable reason."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@numba.njit(cache=True, nogil=True)
def _u32(buf, pos):
    return (np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16) | (np.int64(buf[pos + 2]) << 8) | np.int64(
        buf[pos + 3]
    )


@numba.njit(cache=True, nogil=True, inline="always")
def _varlen(buf, p, end):
    """A variable-length quantity at ``p`` (at most four bytes, before ``end``): ``(value, next p, err)``,
    ``err`` 0, ``TRUNCATED`` or ``BAD_VARLEN``."""
    value = np.int64(0)
    for k in range(4):
        if p >= end:
            return value, p, TRUNCATED
        b = buf[p]
        p += 1
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, p, 0
    return value, p, BAD_VARLEN


@numba.njit(cache=True, nogil=True)
def scan_smf_kernel(buf):
    """Scan an SMF byte buffer into flat event arrays.

    Returns ``(err, err_pos, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
    tempo_tick, tempo_track, tempo_us, n_tempo, track_end)``. Only note on/off, control change and
    program change events are kept; everything else is parsed and skipped.
    """
    n = buf.shape[0]
    cap = n // 2 + 8
    ev_track = np.empty(cap, np.int16)
    ev_tick = np.empty(cap, np.int64)
    ev_status = np.empty(cap, np.uint8)
    ev_d1 = np.empty(cap, np.uint8)
    ev_d2 = np.empty(cap, np.uint8)
    tcap = n // 6 + 2
    tempo_tick = np.empty(tcap, np.int64)
    tempo_track = np.empty(tcap, np.int16)
    tempo_us = np.empty(tcap, np.int32)
    track_end = np.zeros(n // 8 + 1, np.int64)
    n_ev = 0
    n_tempo = 0
    fmt = 0
    division = 0
    n_tracks = 0

    if n < 14 or buf[0] != 0x4D or buf[1] != 0x54 or buf[2] != 0x68 or buf[3] != 0x64:
        return (NOT_MIDI, 0, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
    hlen = _u32(buf, 4)
    if hlen < 6:
        return (BAD_HEADER, 4, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
    if 8 + hlen > n:
        return (TRUNCATED, 4, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
    fmt = (np.int64(buf[8]) << 8) | buf[9]
    declared = (np.int64(buf[10]) << 8) | buf[11]
    division = (np.int64(buf[12]) << 8) | buf[13]
    err = OK
    if fmt > 2:
        err = BAD_HEADER
    elif fmt == 2:
        err = FORMAT_2
    elif division & 0x8000:
        err = SMPTE_DIVISION
    elif division == 0:
        err = ZERO_DIVISION
    if err != OK:
        return (err, 8, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                tempo_tick, tempo_track, tempo_us, n_tempo, track_end)

    pos = 8 + hlen
    while pos + 8 <= n:
        clen = _u32(buf, pos + 4)
        is_track = buf[pos] == 0x4D and buf[pos + 1] == 0x54 and buf[pos + 2] == 0x72 and buf[pos + 3] == 0x6B
        start = pos + 8
        end = start + clen
        if end > n:
            return (TRUNCATED, pos, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                    tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
        pos = end
        if not is_track:
            continue  # unknown chunk types are skipped, as the standard asks
        if n_tracks == MAX_TRACKS:
            return (TOO_MANY_TRACKS, pos, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2,
                    n_ev, tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
        tr = n_tracks
        n_tracks += 1
        p = start
        tick = np.int64(0)
        running = 0
        while p < end:
            # delta time
            delta, p, err = _varlen(buf, p, end)
            if err:
                return (err, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2,
                        n_ev, tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
            tick += delta
            if p >= end:
                return (TRUNCATED, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                        tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
            st = np.int64(buf[p])
            if st == 0xFF or st == 0xF0 or st == 0xF7:
                p += 1
                mtype = 0
                if st == 0xFF:
                    if p >= end:
                        return (TRUNCATED, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2,
                                n_ev, tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
                    mtype = buf[p]
                    p += 1
                else:
                    running = 0  # sysex cancels running status
                length, p, err = _varlen(buf, p, end)
                if err:
                    return (err, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2,
                            n_ev, tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
                if p + length > end:
                    return (TRUNCATED, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2,
                            n_ev, tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
                if st == 0xFF:
                    if mtype == 0x51 and length == 3:
                        if n_tempo < tcap:
                            tempo_tick[n_tempo] = tick
                            tempo_track[n_tempo] = tr
                            tempo_us[n_tempo] = (np.int32(buf[p]) << 16) | (np.int32(buf[p + 1]) << 8) | buf[p + 2]
                            n_tempo += 1
                    elif mtype == 0x2F:
                        p += length
                        break  # End of Track: whatever follows in the chunk is ignored
                p += length
                continue
            if st >= 0x80:
                if st >= 0xF0:
                    return (BAD_STATUS, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2,
                            n_ev, tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
                running = st
                p += 1
            elif running == 0:
                return (RUNNING_STATUS, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2,
                        n_ev, tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
            kind = running & 0xF0
            nbytes = 1 if (kind == 0xC0 or kind == 0xD0) else 2
            if p + nbytes > end:
                return (TRUNCATED, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                        tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
            d1 = buf[p]
            d2 = buf[p + 1] if nbytes == 2 else np.uint8(0)
            if d1 >= 0x80 or d2 >= 0x80:
                return (BAD_DATA, p, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                        tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
            p += nbytes
            if kind == 0x80 or kind == 0x90 or kind == 0xB0 or kind == 0xC0:
                ev_track[n_ev] = tr
                ev_tick[n_ev] = tick
                ev_status[n_ev] = running
                ev_d1[n_ev] = d1
                ev_d2[n_ev] = d2
                n_ev += 1
        if tr < track_end.shape[0]:
            track_end[tr] = tick
    if n_tracks < declared:
        return (MISSING_TRACKS, pos, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                tempo_tick, tempo_track, tempo_us, n_tempo, track_end)
    return (OK, 0, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
            tempo_tick, tempo_track, tempo_us, n_tempo, track_end)


@numba.njit(cache=True, nogil=True)
def pair_notes_kernel(ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev, track_end):
    """Pair note events into notes (FIFO per (track, channel, pitch)); see the module docstring.

    Returns ``(track, channel, program, pitch, velocity, on_tick, off_tick, n_notes)`` in note-on order.
    """
    cap = n_ev // 1 + 1
    n_track = np.empty(cap, np.int16)
    n_chan = np.empty(cap, np.uint8)
    n_prog = np.empty(cap, np.uint8)
    n_pitch = np.empty(cap, np.uint8)
    n_vel = np.empty(cap, np.uint8)
    n_on = np.empty(cap, np.int64)
    n_off = np.empty(cap, np.int64)
    nxt = np.empty(cap, np.int64)
    head = np.full(16 * 128, -1, np.int64)
    tail = np.full(16 * 128, -1, np.int64)
    program = np.zeros(16, np.uint8)
    count = 0
    cur = -1
    first_open = 0  # notes before this index belong to finished tracks
    for i in range(n_ev + 1):
        tr = ev_track[i] if i < n_ev else -2
        if tr != cur:
            # close the previous track's open notes at its end, then reset per-track state
            if cur >= 0:
                for j in range(first_open, count):
                    if n_off[j] < 0:
                        n_off[j] = track_end[cur]
            if i == n_ev:
                break
            head[:] = -1
            tail[:] = -1
            program[:] = 0
            cur = tr
            first_open = count
        st = ev_status[i]
        kind = st & 0xF0
        ch = st & 0x0F
        if kind == 0xC0:
            program[ch] = ev_d1[i]
            continue
        if kind == 0xB0:
            continue
        key = ch * 128 + ev_d1[i]
        if kind == 0x90 and ev_d2[i] > 0:
            n_track[count] = tr
            n_chan[count] = ch
            n_prog[count] = program[ch]
            n_pitch[count] = ev_d1[i]
            n_vel[count] = ev_d2[i]
            n_on[count] = ev_tick[i]
            n_off[count] = -1
            nxt[count] = -1
            if tail[key] >= 0:
                nxt[tail[key]] = count
            else:
                head[key] = count
            tail[key] = count
            count += 1
        else:
            h = head[key]
            if h >= 0:
                n_off[h] = ev_tick[i]
                head[key] = nxt[h]
                if head[key] < 0:
                    tail[key] = -1
    return n_track, n_chan, n_prog, n_pitch, n_vel, n_on, n_off, count


@numba.njit(cache=True, nogil=True)
def tempo_segments_kernel(tempo_tick, tempo_us, n_tempo):
    """Segment starts of the tempo map from tempo events already in merged order.

    Returns ``(seg_tick, seg_us, seg_sec_times_division)``: the map is piecewise linear; seconds at
    ``t`` are ``(seg_base[i] + (t - seg_tick[i]) * seg_us[i]) / (1e6 * division)`` for the last
    segment ``i`` with ``seg_tick[i] <= t``.
    """
    seg_tick = np.empty(n_tempo + 1, np.int64)
    seg_us = np.empty(n_tempo + 1, np.float64)
    seg_base = np.empty(n_tempo + 1, np.float64)
    seg_tick[0] = 0
    seg_us[0] = DEFAULT_TEMPO_US
    seg_base[0] = 0.0
    m = 1
    for i in range(n_tempo):
        t = tempo_tick[i]
        if t == seg_tick[m - 1]:
            seg_us[m - 1] = tempo_us[i]  # last tempo on a tick wins
        else:
            seg_tick[m] = t
            seg_us[m] = tempo_us[i]
            seg_base[m] = seg_base[m - 1] + (t - seg_tick[m - 1]) * seg_us[m - 1]
            m += 1
    return seg_tick[:m], seg_us[:m], seg_base[:m]


@numba.njit(cache=True, nogil=True)
def ticks_to_seconds_kernel(ticks, seg_tick, seg_us, seg_base, division):
    """Seconds of every tick in ``ticks`` through the tempo map (see :func:`tempo_segments_kernel`)."""
    out = np.empty(ticks.shape[0], np.float64)
    scale = 1.0 / (1e6 * division)
    for i in range(ticks.shape[0]):
        t = ticks[i]
        j = np.searchsorted(seg_tick, t, side="right") - 1
        out[i] = (seg_base[j] + (t - seg_tick[j]) * seg_us[j]) * scale
    return out


@numba.njit(cache=True, nogil=True)
def _group_order(keys, n_keys):
    """Stable counting sort: ``(order, start)`` with group ``g`` at ``order[start[g]:start[g + 1]]``."""
    start = np.zeros(n_keys + 1, np.int64)
    for i in range(keys.shape[0]):
        start[keys[i] + 1] += 1
    for g in range(n_keys):
        start[g + 1] += start[g]
    fill = start[:-1].copy()
    order = np.empty(keys.shape[0], np.int64)
    for i in range(keys.shape[0]):
        order[fill[keys[i]]] = i
        fill[keys[i]] += 1
    return order, start


@numba.njit(cache=True, nogil=True)
def sustain_offsets_kernel(chan, pitch, on_tick, off_tick, ped_chan, ped_tick, ped_val, end_tick):
    """Release ticks extended by the sustain pedal (Magenta's rule; see the module docstring).

    Notes must be sorted by onset tick. ``ped_*`` are the controller-64 events of the piece in merged
    order (tick, then track, then position). Returns the extended offset tick of every note.
    """
    n = chan.shape[0]
    out = off_tick.copy()
    m = ped_tick.shape[0]
    if m == 0 or n == 0:
        return out
    porder, pstart = _group_order(ped_chan.astype(np.int64), 16)
    pt = ped_tick[porder]
    pv = ped_val[porder]
    next_up = np.empty(m, np.int64)  # tick of the first pedal-up after event k on its channel
    for c in range(16):
        up = end_tick
        for k in range(pstart[c + 1] - 1, pstart[c] - 1, -1):
            next_up[k] = up
            if pv[k] < 64:
                up = pt[k]
    # pedal state at every release: one binary search per note in its channel's pedal events
    hold = np.full(n, -1, np.int64)  # tick the pedal holds the note to, -1 when not held
    for c in range(16):
        lo, hi = pstart[c], pstart[c + 1]
        if lo == hi:
            continue
        sel = np.flatnonzero(chan == c)
        ks = np.searchsorted(pt[lo:hi], off_tick[sel], side="right") - 1 + lo
        for q in range(sel.shape[0]):
            k = ks[q]
            if k >= lo and pv[k] >= 64:
                hold[sel[q]] = next_up[k]
    # cut at the next onset of the same key after this onset and not before the release
    order, start = _group_order(chan.astype(np.int64) * 128 + pitch, 16 * 128)
    for g in range(16 * 128):
        for a in range(start[g], start[g + 1]):
            i = order[a]
            h = hold[i]
            if h < 0:
                continue
            t = off_tick[i]
            for b in range(a + 1, start[g + 1]):
                j = order[b]
                if on_tick[j] > on_tick[i] and on_tick[j] >= t:
                    if on_tick[j] < h:
                        h = on_tick[j]
                    break
            if h > out[i]:
                out[i] = h
    return out


@dataclass(frozen=True)
class ParsedMidi:
    """Columns of one MIDI file. Note arrays are sorted by (onset tick, pitch, track)."""

    smf_format: int
    n_tracks: int
    ticks_per_beat: int
    end_tick: int
    duration_s: float
    # notes
    track: np.ndarray
    channel: np.ndarray
    program: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    onset_tick: np.ndarray
    offset_tick: np.ndarray
    onset_s: np.ndarray
    offset_s: np.ndarray
    offset_pedal_s: np.ndarray
    # control changes, in merged order
    cc_track: np.ndarray
    cc_channel: np.ndarray
    cc_control: np.ndarray
    cc_value: np.ndarray
    cc_tick: np.ndarray
    cc_s: np.ndarray
    # tempo events, in merged order
    tempo_tick: np.ndarray
    tempo_us: np.ndarray
    tempo_s: np.ndarray

    @property
    def n_notes(self) -> int:
        return int(self.pitch.shape[0])


def read_midi(data: bytes | bytearray | memoryview | np.ndarray) -> ParsedMidi:
    """Read one Standard MIDI File.

    Parameters
    ----------
    data
        The file's bytes.

    Returns
    -------
    ParsedMidi
        Notes, control changes and tempo events as NumPy columns, times in ticks and seconds.

    Raises
    ------
    MidiError
        When the bytes are not a readable format-0/1 SMF with at least one note; ``kind`` says why.
    """
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    (err, err_pos, fmt, n_tracks, division, ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
     t_tick, t_track, t_us, n_tempo, track_end) = scan_smf_kernel(buf)
    if err != OK:
        raise MidiError(ERROR_KINDS[err], f"{_MESSAGES[err]} (byte offset {err_pos})")
    if n_tracks == 0:
        raise MidiError("empty", "no track chunks")
    ev_track, ev_tick, ev_status = ev_track[:n_ev], ev_tick[:n_ev], ev_status[:n_ev]
    ev_d1, ev_d2 = ev_d1[:n_ev], ev_d2[:n_ev]
    track_end = track_end[:n_tracks]
    (nt, nc, npg, npi, nv, non, noff, nn) = pair_notes_kernel(ev_track, ev_tick, ev_status, ev_d1, ev_d2, n_ev,
                                                             track_end)
    if nn == 0:
        raise MidiError("empty", "the file holds no notes")
    end_tick = int(track_end.max())

    # tempo events in merged order: tick, then track, then file position (argsort is stable)
    t_tick, t_track, t_us = t_tick[:n_tempo], t_track[:n_tempo], t_us[:n_tempo]
    if n_tempo > 1:
        o = np.lexsort((t_track, t_tick))
        t_tick, t_us = t_tick[o], t_us[o]
    seg_tick, seg_us, seg_base = tempo_segments_kernel(t_tick, t_us, n_tempo)

    # notes sorted by onset, pitch, track (timsort: note-on order is nearly sorted already); the packed
    # key holds onsets below 2**39 ticks, absurd files beyond that take the slower lexsort
    if non[:nn].max() < (1 << 39):
        o = np.argsort((non[:nn] << 24) | (npi[:nn].astype(np.int64) << 16) | nt[:nn].astype(np.int64),
                       kind="stable")
    else:
        o = np.lexsort((nt[:nn], npi[:nn], non[:nn]))
    track, chan, prog = nt[o], nc[o], npg[o]
    pitch, vel, on, off = npi[o], nv[o], non[o], noff[o]

    cc = (ev_status & 0xF0) == 0xB0
    cc_idx = np.flatnonzero(cc)
    if len(np.unique(ev_track[cc_idx])) > 1:
        cc_idx = cc_idx[np.lexsort((ev_track[cc_idx], ev_tick[cc_idx]))]
    cc_tick = ev_tick[cc_idx]
    cc_chan = ev_status[cc_idx] & 0x0F
    cc_ctl = ev_d1[cc_idx]
    cc_val = ev_d2[cc_idx]
    ped = cc_ctl == SUSTAIN
    off_ped = sustain_offsets_kernel(chan, pitch, on, off, cc_chan[ped], cc_tick[ped], cc_val[ped], end_tick)

    secs = ticks_to_seconds_kernel(np.concatenate((on, off, off_ped, cc_tick, t_tick, np.array([end_tick]))),
                                   seg_tick, seg_us, seg_base, division)
    a, b, c, d, e = nn, 2 * nn, 3 * nn, 3 * nn + cc_tick.shape[0], 3 * nn + cc_tick.shape[0] + n_tempo
    return ParsedMidi(
        smf_format=int(fmt), n_tracks=int(n_tracks), ticks_per_beat=int(division), end_tick=end_tick,
        duration_s=float(secs[-1]),
        track=track, channel=chan, program=prog, pitch=pitch, velocity=vel, onset_tick=on, offset_tick=off,
        onset_s=secs[:a], offset_s=secs[a:b], offset_pedal_s=secs[b:c],
        cc_track=ev_track[cc_idx], cc_channel=cc_chan, cc_control=cc_ctl, cc_value=cc_val, cc_tick=cc_tick,
        cc_s=secs[c:d],
        tempo_tick=t_tick, tempo_us=t_us, tempo_s=secs[d:e],
    )
