"""The MIDI reader (`tasks.kernels.midi.read_midi`) against its contract, three other readers and broken input.

1. Every real file under ../shared/data/midi: the mido oracle (same rules, independent code), symusic and
   pretty_midi (whose different note pairing is accounted for note by note).
2. Hand-built files whose answers are worked out by hand: tempo map, FIFO pairing, End-of-Track
   closing, programs, running status, the sustain-pedal rule (plus a plain-Python twin of that rule).
3. Broken files: every way listed in the contract, each with its `MidiError.kind`.
4. Hypothesis: random bytes and mutated files never raise anything but `MidiError`, results keep their
   invariants, and whatever mido reads (with a note) we do not reject for a reason mido would disagree with.
5. The generated corpus reads back exactly.
"""

from __future__ import annotations

import heapq
import io
import math
import warnings
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import midi_fixtures as fx
from conftest import shared_midi_files
from mido_oracle import read_with_mido
from tasks.kernels.corpus import generate_piece, to_smf_bytes
from tasks.kernels.midi import MidiError, ParsedMidi, read_midi, scan_smf_kernel

MS = 1e-3  # tolerance for seconds computed by another library
US = 1e-6  # tolerance for seconds computed in float64 from the same ticks (mido oracle, hand values)

REAL_FILES = shared_midi_files()
real_file = pytest.mark.parametrize(
    "path", REAL_FILES or [None], ids=[p.name for p in REAL_FILES] or ["no-shared-midi"]
)

_cache: dict = {}


def _cached(kind, path, make):
    key = (kind, str(path))
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def _real(path):
    """(bytes, ParsedMidi) of a shared file; skips when shared/ is absent."""
    if path is None:
        pytest.skip("no MIDI files under ../shared/data/midi")
    return _cached("ours", path, lambda: (path.read_bytes(), read_midi(path.read_bytes())))


def _oracle(path):
    return _cached("oracle", path, lambda: read_with_mido(path.read_bytes()))


def _seconds_of(r: ParsedMidi) -> dict[int, float]:
    """tick -> our seconds, for every tick our reader reports a time for."""
    ticks = np.concatenate((r.onset_tick, r.offset_tick, r.cc_tick, r.tempo_tick, [r.end_tick]))
    secs = np.concatenate((r.onset_s, r.offset_s, r.cc_s, r.tempo_s, [r.duration_s]))
    return dict(zip(ticks.tolist(), secs.tolist()))


def sustain_reference(notes, pedal_events, end_tick: int) -> list[int]:
    """The contract's sustain rule in plain Python: extended release tick of every note.

    ``notes``: (channel, pitch, onset_tick, offset_tick); ``pedal_events``: (tick, channel, value) of
    controller 64 in merged order (tick, then track, then position).
    """
    pedal = defaultdict(list)
    for tick, ch, value in pedal_events:
        pedal[ch].append((tick, value))
    pedal_ticks = {ch: [t for t, _ in evs] for ch, evs in pedal.items()}
    onsets = defaultdict(list)
    for ch, p, a, _ in notes:
        onsets[ch, p].append(a)
    for v in onsets.values():
        v.sort()
    out = []
    for ch, p, a, b in notes:
        evs = pedal.get(ch, [])
        k = bisect_right(pedal_ticks.get(ch, []), b) - 1  # the pedal state at the release tick, that tick included
        if k < 0 or evs[k][1] < 64:
            out.append(b)
            continue
        up = end_tick  # a pedal never lifted holds to the end of the file
        for t, value in evs[k + 1:]:
            if value < 64:
                up = t
                break
        ons = onsets[ch, p]
        i = bisect_left(ons, max(a + 1, b))  # next onset of the key after this onset, not before the release
        nxt = ons[i] if i < len(ons) else math.inf
        out.append(max(b, min(up, nxt)))
    return out


def check_invariants(r: ParsedMidi) -> None:
    assert r.n_notes > 0
    assert (r.offset_tick >= r.onset_tick).all()
    assert (r.onset_tick >= 0).all()
    assert (r.offset_s >= r.onset_s).all()
    assert (r.offset_pedal_s >= r.offset_s).all()
    assert (r.pitch < 128).all() and (r.velocity < 128).all() and (r.velocity > 0).all()
    assert (r.channel < 16).all() and (r.program < 128).all()
    assert (r.track >= 0).all() and (r.track < r.n_tracks).all()
    assert (np.diff(r.onset_tick) >= 0).all(), "notes not sorted by onset tick"
    assert (r.offset_tick <= r.end_tick).all()
    ticks = np.concatenate((r.onset_tick, r.offset_tick, r.cc_tick, r.tempo_tick, [r.end_tick]))
    secs = np.concatenate((r.onset_s, r.offset_s, r.cc_s, r.tempo_s, [r.duration_s]))
    assert np.isfinite(secs).all()
    o = np.lexsort((secs, ticks))
    dt, ds = np.diff(ticks[o]), np.diff(secs[o])
    assert (ds[dt == 0] == 0).all(), "one tick, two different times"
    assert (ds >= 0).all(), "seconds decrease while ticks increase"


# ---------------------------------------------------------------------------------------------------
# 1. Real files
# ---------------------------------------------------------------------------------------------------


@real_file
def test_real_file_matches_mido_oracle(path):
    data, r = _real(path)
    o = _oracle(path)
    fmt, n_declared, division = (int.from_bytes(data[i:i + 2], "big") for i in (8, 10, 12))
    assert (r.smf_format, r.n_tracks, r.ticks_per_beat) == (fmt, n_declared, division)
    assert r.ticks_per_beat == o["ticks_per_beat"]
    notes = o["notes"]
    assert r.n_notes == len(notes)
    for col in ("track", "channel", "program", "pitch", "velocity", "onset_tick", "offset_tick"):
        np.testing.assert_array_equal(getattr(r, col), [n[col] for n in notes], err_msg=col)
    np.testing.assert_allclose(r.onset_s, [n["onset_s"] for n in notes], rtol=0, atol=US)
    np.testing.assert_allclose(r.offset_s, [n["offset_s"] for n in notes], rtol=0, atol=US)

    controls = o["controls"]  # (tick, track, channel, control, value) in merged order
    assert r.cc_tick.shape[0] == len(controls)
    got = np.stack([r.cc_tick, r.cc_track, r.cc_channel, r.cc_control, r.cc_value], axis=1)
    np.testing.assert_array_equal(got, np.array(controls, dtype=np.int64).reshape(-1, 5))
    np.testing.assert_allclose(r.cc_s, [o["seconds"](c[0]) for c in controls], rtol=0, atol=US)

    tempos = o["tempos"]  # (tick, track, index, tempo) in merged order
    assert r.tempo_tick.tolist() == [t[0] for t in tempos]
    assert r.tempo_us.tolist() == [t[3] for t in tempos]
    np.testing.assert_allclose(r.tempo_s, [o["seconds"](t[0]) for t in tempos], rtol=0, atol=US)

    assert r.end_tick == o["end_tick"]
    assert abs(r.duration_s - o["duration_s"]) < MS  # mido's MidiFile.length

    # the sustain rule, from mido's notes and pedal events through the plain-Python twin
    pedal = [(c[0], c[2], c[4]) for c in controls if c[3] == 64]
    ends = sustain_reference([(n["channel"], n["pitch"], n["onset_tick"], n["offset_tick"]) for n in notes],
                             pedal, o["end_tick"])
    np.testing.assert_allclose(r.offset_pedal_s, [o["seconds"](t) for t in ends], rtol=0, atol=US)


@real_file
def test_real_file_matches_symusic(path):
    symusic = pytest.importorskip("symusic")
    data, r = _real(path)
    score = symusic.Score.from_midi(data)  # ticks
    theirs = Counter((n.pitch, n.time, n.velocity, n.time + n.duration) for t in score.tracks for n in t.notes)
    ours = Counter(zip(r.pitch.tolist(), r.onset_tick.tolist(), r.velocity.tolist(), r.offset_tick.tolist()))
    assert sum(theirs.values()) == r.n_notes
    assert Counter(k[:3] for k in theirs.elements()) == Counter(k[:3] for k in ours.elements())
    # symusic 0.6 pairs FIFO per (channel, pitch) within a track too, so no pairing difference shows on
    # these files: even the offsets agree note for note (re-strikes in the GiantMIDI transcriptions included).
    assert theirs == ours
    assert [(t.time, t.mspq) for t in score.tempos] == list(zip(r.tempo_tick.tolist(), r.tempo_us.tolist()))

    # Duration: symusic's end() is its last event (note end, controller, ...) and ignores End of Track,
    # which MAESTRO files put one tick after the last event and DAW exports later still; ours is the
    # End-of-Track tick, the same as mido's length.
    assert int(r.offset_tick.max()) <= score.end() <= r.end_tick
    # seconds (symusic converts in float32: ~0.25 ms resolution at one hour)
    sec = score.to("second")
    their_on = np.sort(np.array([n.time for t in sec.tracks for n in t.notes]))
    np.testing.assert_allclose(their_on, np.sort(r.onset_s), rtol=0, atol=MS)
    our_end_s = _seconds_of(r).get(score.end())
    assert our_end_s is not None  # on these files symusic's end is a note end or a controller
    assert abs(sec.end() - our_end_s) < MS


def _pretty_midi_prediction(r: ParsedMidi):
    """What pretty_midi should report for each of our notes, derived from our (FIFO-paired) notes.

    pretty_midi closes *every* open note of a key at a release (except those struck on the release's own
    tick). So a note struck while earlier notes of its key still sound (a re-strike) ends at the first
    release after its onset, which is the earliest of those earlier notes' FIFO offsets; any other note
    ends where ours does. Returns (predicted (pitch, velocity, onset, end) per note, previous note of the
    same (track, channel, pitch) or -1, whether the note was a re-strike).
    """
    n = r.n_notes
    pred_end = r.offset_tick.copy()
    prev = np.full(n, -1, np.int64)
    restrike = np.zeros(n, bool)
    order = np.lexsort((r.onset_tick, r.pitch, r.channel, r.track))
    last_key, sounding, last = None, [], -1
    for i in order.tolist():
        key = (int(r.track[i]), int(r.channel[i]), int(r.pitch[i]))
        if key != last_key:
            last_key, sounding, last = key, [], -1
        on = int(r.onset_tick[i])
        while sounding and sounding[0] <= on:
            heapq.heappop(sounding)
        if sounding:
            restrike[i] = True
            pred_end[i] = sounding[0]
        prev[i] = last
        heapq.heappush(sounding, int(r.offset_tick[i]))
        last = i
    tuples = list(zip(r.pitch.tolist(), r.velocity.tolist(), r.onset_tick.tolist(), pred_end.tolist()))
    return tuples, prev, restrike


@real_file
def test_real_file_matches_pretty_midi_up_to_pairing(path):
    pretty_midi = pytest.importorskip("pretty_midi")
    data, r = _real(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    sec = _seconds_of(r)
    actual = Counter()
    for inst in pm.instruments:
        for note in inst.notes:
            a, b = pm.time_to_tick(note.start), pm.time_to_tick(note.end)
            assert a in sec and abs(sec[a] - note.start) < MS, (note, a)
            assert b in sec and abs(sec[b] - note.end) < MS, (note, b)
            actual[note.pitch, note.velocity, a, b] += 1

    if sum(actual.values()) == r.n_notes:
        ours = Counter(zip(r.pitch.tolist(), r.velocity.tolist(), r.onset_tick.tolist(), r.offset_tick.tolist()))
        assert actual == ours  # same count: the same notes, ends included (within 1 ms, checked above)
        return

    tuples, prev, restrike = _pretty_midi_prediction(r)
    predicted = Counter(tuples)
    # every pretty_midi note is one of ours (pitch, velocity, onset) ending where the pairing rule says
    assert not (actual - predicted), sorted((actual - predicted).elements())[:5]
    # re-strikes really occur and are the whole story of the shorter notes
    assert restrike.any()
    missing = predicted - actual
    absent = np.array([missing[t] > 0 for t in tuples])
    # What the data shows about every note of ours pretty_midi lacks: it is not itself struck over a
    # sounding note, but struck on the very tick at which (FIFO) the previous note of its key is released,
    # and that previous note was no longer open in pretty_midi (closed earlier as a re-strike, or itself
    # absent). Its note-on precedes that release in the file, so pretty_midi finds only the new note open,
    # started on the release tick, and drops it.
    notes_of = defaultdict(list)
    for i, t in enumerate(tuples):
        notes_of[t].append(i)
    for t, m in missing.items():
        ok = 0
        for i in notes_of[t]:
            p = prev[i]
            ok += bool(
                not restrike[i] and p >= 0 and r.offset_tick[p] == r.onset_tick[i]
                and (restrike[p] or absent[p])
            )
        assert ok >= m, (t, m)


# ---------------------------------------------------------------------------------------------------
# 2. Hand-built files
# ---------------------------------------------------------------------------------------------------


def _notes(r: ParsedMidi) -> list[tuple]:
    return list(zip(r.track.tolist(), r.channel.tolist(), r.pitch.tolist(), r.onset_tick.tolist(),
                    r.offset_tick.tolist()))


def _matches_oracle(data: bytes, r: ParsedMidi) -> None:
    o = read_with_mido(data)
    assert [(n["track"], n["channel"], n["pitch"], n["onset_tick"], n["offset_tick"]) for n in o["notes"]] \
        == _notes(r)


def test_tempo_map_from_every_track_last_tempo_on_a_tick_wins():
    data = fx.mido_smf(
        [fx.on(0, 60), fx.off(960, 60), fx.tempo(960, 300_000), fx.end_of_track(1920)],
        [fx.tempo(480, 1_000_000), fx.tempo(960, 250_000), fx.tempo(960, 750_000), fx.on(1440, 62),
         fx.off(1920, 62)],
    )
    r = read_midi(data)
    # 0-480 at the default 500 000 us/beat: 0.5 s; 480-960 at 1 000 000: +1.0 s; from 960 the last of the
    # three tempos on that tick (track 1's second, 750 000) rules: 480 ticks = 0.75 s.
    assert r.tempo_tick.tolist() == [480, 960, 960, 960]
    assert r.tempo_us.tolist() == [1_000_000, 300_000, 250_000, 750_000]
    np.testing.assert_allclose(r.tempo_s, [0.5, 1.5, 1.5, 1.5], rtol=0, atol=US)
    assert r.pitch.tolist() == [60, 62]
    np.testing.assert_allclose(r.onset_s, [0.0, 2.25], rtol=0, atol=US)
    np.testing.assert_allclose(r.offset_s, [1.5, 3.0], rtol=0, atol=US)
    assert r.end_tick == 1920 and abs(r.duration_s - 3.0) < US
    assert abs(read_with_mido(data)["duration_s"] - 3.0) < US


def test_tempo_in_track_one_only_and_format_0_duplicates():
    # tempo only in track 1, before any note of track 0: it applies to track 0 too
    r = read_midi(fx.mido_smf([fx.on(0, 60), fx.off(960, 60)], [fx.tempo(0, 1_000_000)]))
    np.testing.assert_allclose(r.offset_s, [2.0], rtol=0, atol=US)
    # format 0: two tempos on tick 480, the second wins
    r = read_midi(fx.mido_smf([fx.on(0, 60), fx.tempo(480, 250_000), fx.tempo(480, 2_000_000), fx.off(960, 60)],
                              smf_type=0))
    np.testing.assert_allclose(r.offset_s, [0.5 + 2.0], rtol=0, atol=US)


def test_fifo_pairing_of_restruck_keys():
    data = fx.mido_smf([
        fx.on(0, 60, 10), fx.on(100, 60, 20), fx.off(200, 60), fx.off(300, 60, as_note_on=True),
        fx.on(400, 62, 30), fx.on(410, 62, 40), fx.on(420, 62, 50),
        fx.off(430, 62), fx.off(440, 62), fx.off(450, 62), fx.off(460, 62),  # the last release: nothing open
    ])
    r = read_midi(data)
    assert list(zip(r.pitch.tolist(), r.velocity.tolist(), r.onset_tick.tolist(), r.offset_tick.tolist())) == [
        (60, 10, 0, 200), (60, 20, 100, 300),  # each release ends the oldest open note of the key
        (62, 30, 400, 430), (62, 40, 410, 440), (62, 50, 420, 450),
    ]
    _matches_oracle(data, r)


def test_keys_are_per_track_and_channel():
    data = fx.mido_smf(
        [fx.on(0, 60), fx.off(10, 60, channel=1), fx.on(5, 64, channel=1), fx.off(20, 64, channel=1),
         fx.end_of_track(50)],
        [fx.off(30, 60), fx.end_of_track(90)],
    )
    r = read_midi(data)
    # ch 1's release and track 1's release do not close track 0 / ch 0's note: it ends with its track
    assert _notes(r) == [(0, 0, 60, 0, 50), (0, 1, 64, 5, 20)]
    assert r.end_tick == 90
    _matches_oracle(data, r)


def test_note_open_at_end_of_track_closes_there():
    data = fx.mido_smf([fx.on(0, 60), fx.on(100, 62), fx.off(200, 62), fx.end_of_track(1000)],
                       [fx.on(0, 48), fx.end_of_track(3000)])
    r = read_midi(data)
    assert _notes(r) == [(1, 0, 48, 0, 3000), (0, 0, 60, 0, 1000), (0, 0, 62, 100, 200)]
    np.testing.assert_allclose(r.offset_s, [3000 / 960, 1000 / 960, 200 / 960], rtol=0, atol=US)
    # raw bytes without any End-of-Track event: the track ends at its last event
    r = read_midi(fx.smf(b"\x00\x90\x3c\x40" + b"\x83\x60\xb0\x40\x00"))  # note_on at 0, a CC at 480
    assert (r.onset_tick.tolist(), r.offset_tick.tolist(), r.end_tick) == ([0], [480], 480)


def test_program_per_track_and_channel_at_note_on():
    data = fx.mido_smf(
        [fx.program(0, 5), fx.on(10, 60), fx.off(40, 60), fx.on(10, 61, channel=1), fx.off(40, 61, channel=1),
         fx.on(15, 62), fx.program(20, 7), fx.off(50, 62), fx.on(30, 63), fx.off(60, 63)],
        [fx.on(0, 70), fx.off(10, 70), fx.program(50, 9), fx.on(60, 71), fx.off(70, 71)],
    )
    r = read_midi(data)
    got = dict(zip(r.pitch.tolist(), zip(r.track.tolist(), r.channel.tolist(), r.program.tolist())))
    assert got == {
        60: (0, 0, 5), 61: (0, 1, 0),  # channel 1 has no program change: 0
        62: (0, 0, 5),  # a change while the note sounds does not reach it
        63: (0, 0, 7),
        70: (1, 0, 0),  # programs do not carry over to another track
        71: (1, 0, 9),
    }
    o = read_with_mido(data)
    assert [n["program"] for n in o["notes"]] == r.program.tolist()


def test_note_on_velocity_zero_is_a_release():
    data = fx.mido_smf([fx.on(0, 60, 100), fx.off(100, 60, as_note_on=True), fx.on(0, 62), fx.off(50, 62)])
    r = read_midi(data)
    assert list(zip(r.pitch.tolist(), r.velocity.tolist(), r.offset_tick.tolist())) == [(60, 100, 100),
                                                                                       (62, 64, 50)]


def test_running_status_across_a_meta_event_is_accepted():
    data = fx.running_status_across_meta()
    r = read_midi(data)
    assert (r.pitch.tolist(), r.onset_tick.tolist(), r.offset_tick.tolist()) == ([60], [0], [96])
    _matches_oracle(data, r)  # mido agrees: meta events leave running status alone


@pytest.mark.parametrize("make", [fx.running_status_at_track_start, fx.running_status_after_sysex],
                         ids=["track-start", "after-sysex"])
def test_running_status_without_a_status_is_rejected(make):
    with pytest.raises(MidiError) as e:
        read_midi(make())
    assert e.value.kind == "running_status"


def test_running_status_resets_per_track():
    data = fx.smf(b"\x00\x90\x3c\x40\x10\x3c\x00" + fx.EOT, b"\x00\x3e\x40" + fx.EOT)
    with pytest.raises(MidiError) as e:
        read_midi(data)
    assert e.value.kind == "running_status"


# sustain pedal, tpb 480 at 120 bpm: 960 ticks per second. Channel 0's pedal lives in track 1.
PEDAL_CH0 = [(100, 127), (600, 0), (800, 100), (900, 30), (950, 64)]  # (tick, value); never lifted after 950
PEDAL_NOTES = [  # (channel, pitch, on, off, expected end under the pedal)
    (0, 72, 20, 80, 80),  # released before the pedal goes down
    (0, 60, 0, 200, 600),  # released under the pedal: held to pedal-up
    (0, 62, 150, 300, 400),  # ... but cut at the next onset of its key (400) before pedal-up
    (0, 62, 400, 450, 600),
    (0, 69, 200, 300, 600),  # FIFO pair of a re-strike: the re-strike at 250 sounded before the release
    (0, 69, 250, 500, 600),  # so it does not cut (Magenta would shorten the first note to 250)
    (0, 71, 300, 400, 400),  # next onset on the release tick: neither extended nor shortened
    (0, 71, 400, 450, 600),
    (0, 74, 550, 600, 600),  # released on the pedal-up tick: that event counts, not held
    (0, 64, 700, 800, 900),  # pedal-down on the release tick counts: held to the next pedal-up
    (0, 65, 850, 1000, 1200),  # pedal never lifted: held to the end of the file (track 1 ends at 1200)
    (1, 60, 10, 20, 50),  # channel 1: value 64 is down, 63 is up
    (1, 61, 100, 200, 200),  # channel 0's pedal does not hold channel 1
]


def _pedal_file() -> bytes:
    t0 = [fx.cc(0, 64, 64, channel=1), fx.cc(50, 64, 63, channel=1), fx.end_of_track(1100)]
    for ch, p, a, b, _ in PEDAL_NOTES:
        t0 += [fx.on(a, p, channel=ch), fx.off(b, p, channel=ch)]
    t0.sort(key=lambda e: (e[0], e[1].type != "note_off"))  # releases before onsets on a tick
    t1 = [fx.cc(t, 64, v) for t, v in PEDAL_CH0] + [fx.end_of_track(1200)]
    return fx.mido_smf(t0, t1)


def test_sustain_pedal_hand_computed():
    r = read_midi(_pedal_file())
    got = {(c, p, a): (b, round(s * 960, 6)) for c, p, a, b, s in
           zip(r.channel.tolist(), r.pitch.tolist(), r.onset_tick.tolist(), r.offset_tick.tolist(),
               r.offset_pedal_s.tolist())}
    want = {(c, p, a): (b, float(e)) for c, p, a, b, e in PEDAL_NOTES}
    assert got == want
    assert r.end_tick == 1200
    # the plain-Python twin agrees on the same file
    ped = [(t, c, v) for t, c, k, v in zip(r.cc_tick.tolist(), r.cc_channel.tolist(), r.cc_control.tolist(),
                                            r.cc_value.tolist()) if k == 64]
    notes = [(c, p, a, b) for c, p, a, b in zip(r.channel.tolist(), r.pitch.tolist(), r.onset_tick.tolist(),
                                                r.offset_tick.tolist())]
    assert sustain_reference(notes, ped, r.end_tick) == [want[n[0], n[1], n[2]][1] for n in notes]


@pytest.mark.parametrize("index", range(4))
def test_sustain_pedal_matches_reference_on_generated_pieces(index):
    piece = generate_piece(0, index, 0.3)
    data = to_smf_bytes(piece)
    r = read_midi(data)
    o = read_with_mido(data)
    ped = [(c[0], c[2], c[4]) for c in o["controls"] if c[3] == 64]
    assert len(ped) > 10  # the generator pedals continuously
    notes = [(n["channel"], n["pitch"], n["onset_tick"], n["offset_tick"]) for n in o["notes"]]
    ends = sustain_reference(notes, ped, o["end_tick"])
    assert sum(e > n[3] for e, n in zip(ends, notes)) > r.n_notes // 10  # the pedal really extends notes
    np.testing.assert_allclose(r.offset_pedal_s, [o["seconds"](t) for t in ends], rtol=0, atol=US)


def test_four_byte_delta_is_accepted():
    r = read_midi(fx.smf(b"\xff\xff\xff\x7f\x90\x3c\x40" + b"\x10\x80\x3c\x00" + fx.EOT))
    assert r.onset_tick.tolist() == [(1 << 28) - 1]


def test_unknown_chunks_are_skipped():
    r = read_midi(fx.with_unknown_chunk())
    assert (r.n_tracks, r.pitch.tolist(), r.offset_tick.tolist()) == (1, [60], [96])


# ---------------------------------------------------------------------------------------------------
# 3. Broken files
# ---------------------------------------------------------------------------------------------------

BROKEN = {
    "empty-file": (b"", "not_midi"),
    "text-file": (b"This is not a MIDI file, only a text file named song.mid.\n" * 3, "not_midi"),
    "garbage": (bytes(np.random.default_rng(7).integers(0, 256, 300, dtype=np.uint8)), "not_midi"),
    "riff": (b"RIFF\x00\x00\x00\x20RMIDdata" + bytes(20), "not_midi"),
    "header-only-magic": (b"MThd", "not_midi"),
    "zero-division": (fx.zero_division(), "zero_division"),
    "smpte-division": (fx.smpte_division(), "smpte_division"),
    "format-2": (fx.format_2(), "format_2"),
    "format-3": (fx.format_3(), "bad_header"),
    "short-header": (fx.short_header(), "bad_header"),
    "only-empty-tracks": (fx.only_empty_tracks(), "empty"),
    "no-track-chunks": (fx.no_track_chunks(), "empty"),
    "only-releases": (fx.only_releases(), "empty"),
    "missing-tracks": (fx.missing_tracks(), "missing_tracks"),
    "data-byte-high": (fx.data_byte_high(), "bad_data"),
    "data1-is-status": (fx.smf(b"\x00\x90\x90\x40" + fx.EOT), "bad_data"),
    "five-byte-delta": (fx.five_byte_delta(), "bad_varlen"),
    "five-byte-meta-length": (fx.five_byte_meta_length(), "bad_varlen"),
    "system-common-f1": (fx.system_common_in_track(), "bad_status"),
    "realtime-f8": (fx.realtime_in_track(), "bad_status"),
    "chunk-longer-than-file": (fx.chunk_longer_than_file(), "truncated"),
    "event-cut-by-chunk-end": (fx.event_cut_by_chunk_end(), "truncated"),
    "meta-longer-than-chunk": (fx.smf(b"\x00\x90\x3c\x40\x00\xff\x01\x40abc"), "truncated"),
    "header-longer-than-file": (b"MThd" + (256).to_bytes(4, "big") + bytes(20), "truncated"),
    "running-status-at-start": (fx.running_status_at_track_start(), "running_status"),
    "running-status-after-sysex": (fx.running_status_after_sysex(), "running_status"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_file_raises_midi_error_with_kind(name):
    data, kind = BROKEN[name]
    with pytest.raises(MidiError) as e:
        read_midi(data)
    assert e.value.kind == kind
    assert isinstance(e.value, ValueError) and str(e.value)


def _cut_expectation(data: bytes, cut: int) -> str | None:
    """The kind a prefix of ``data`` (a well-formed file) must raise; None where the prefix must parse."""
    if cut < 14:
        return "not_midi"  # shorter than a whole header: read as not a MIDI file at all
    pos = 14
    for _ in range(int.from_bytes(data[10:12], "big")):  # the declared tracks
        body = pos + 8
        end = body + int.from_bytes(data[pos + 4:body], "big")
        if pos <= cut < body:
            return "missing_tracks"  # the next declared track chunk is absent or has half a header
        if body <= cut < end:
            return "truncated"  # inside a chunk body
        pos = end
    # After the last declared track: the Lakh file d6caebd1... ends with b"\n\n". Fewer trailing bytes
    # than a chunk header are ignored (as mido ignores everything after the declared tracks).
    assert len(data) - pos < 8
    return None


def _check_every_cut(data: bytes, step: int = 1) -> None:
    full = read_midi(data)
    for cut in list(range(0, len(data), step)) + [len(data)]:
        want = _cut_expectation(data, cut)
        if want is None:
            assert read_midi(data[:cut]).n_notes == full.n_notes
            continue
        with pytest.raises(MidiError) as e:
            read_midi(data[:cut])
        assert e.value.kind == want, cut


def test_every_cut_of_a_generated_file():
    _check_every_cut(to_smf_bytes(generate_piece(0, 1, 0.1)))


@real_file
def test_cuts_of_a_real_file(path):
    data, _ = _real(path)
    _check_every_cut(data, step=max(1, len(data) // 1500))


def test_trailing_bytes_after_the_tracks():
    data = fx.with_trailing_unknown_chunk()  # one track, then an unknown chunk with an 8-byte body
    tracks_end = len(data) - 16
    for cut in [tracks_end, *range(tracks_end + 1, tracks_end + 8), len(data)]:
        assert read_midi(data[:cut]).n_notes == 1  # at a boundary, or less than a chunk header left over
    for cut in range(tracks_end + 8, len(data)):  # inside the trailing chunk's body
        with pytest.raises(MidiError) as e:
            read_midi(data[:cut])
        assert e.value.kind == "truncated"


def test_more_than_32767_tracks_is_rejected_not_wrapped():
    # track numbers are int16 in the tables: refuse rather than wrap to -32768
    with pytest.raises(MidiError) as e:
        read_midi(fx.too_many_tracks())
    assert e.value.kind == "too_many_tracks"


def test_notes_sorted_beyond_tick_2_pow_39():
    r = read_midi(fx.huge_tick_note())
    assert r.pitch.tolist() == [64, 60]
    assert (np.diff(r.onset_tick) >= 0).all()


# ---------------------------------------------------------------------------------------------------
# 4. Fuzzing
# ---------------------------------------------------------------------------------------------------

FUZZ_BASE = to_smf_bytes(generate_piece(0, 2, 0.05))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read_or_error(data: bytes) -> ParsedMidi | MidiError:
    try:
        r = read_midi(data)
    except MidiError as e:
        assert e.kind and str(e)
        return e
    check_invariants(r)
    return r


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data):
    _read_or_error(data)


@FUZZ
@given(st.integers(0, 1), st.integers(0, 3), st.sampled_from([96, 480, 0x7FFF]), st.binary(max_size=300))
def test_fuzz_random_track_bodies(fmt, n_tracks, division, body):
    _read_or_error(fx.header(fmt, n_tracks, division) + fx.chunk(b"MTrk", body))


@st.composite
def mutated_files(draw):
    data = bytearray(FUZZ_BASE)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0xF0, 0xF1, 0xF7, 0xFF, 0x2F, 0x51]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _mido_reads_a_note(data: bytes):
    """mido's MidiFile when it reads ``data`` (clip=False) as format 0/1 with tpb > 0 and a sounding note."""
    try:
        mf = mido.MidiFile(file=io.BytesIO(data), clip=False)
    except Exception:  # mido raises OSError, EOFError, ValueError, IndexError, KeyError ... on bad input
        return None
    if mf.type not in (0, 1) or mf.ticks_per_beat <= 0:
        return None
    for track in mf.tracks:
        for msg in track:
            # mido keeps reading a chunk after its End of Track; the contract (and the oracle) stop there
            if msg.type == "end_of_track":
                break
            if msg.type == "note_on" and msg.velocity > 0:
                return mf
    return None


SYSTEM_TYPES = {"quarter_frame", "songpos", "song_select", "tune_request", "clock", "start", "continue", "stop",
                "active_sensing"}


@FUZZ
@given(mutated_files())
def test_fuzz_mutated_files(data):
    got = _read_or_error(data)
    mf = _mido_reads_a_note(data)
    if mf is None or not isinstance(got, MidiError):
        return
    if got.kind in ("missing_tracks", "truncated"):
        # mido reads only the declared number of tracks and ignores what follows; we read every chunk
        # to the end of the data (a mutated chunk length leaves junk there that we call truncated).
        return
    # The remaining disagreements are rules of the contract that mido does not have; each one is
    # checked against what the bytes hold rather than taken on trust.
    err_pos = int(scan_smf_kernel(np.frombuffer(data, np.uint8))[1])
    if got.kind == "bad_varlen":  # mido reads variable-length numbers of any length
        assert all(b >= 0x80 for b in data[err_pos - 4:err_pos])
    elif got.kind == "bad_status":  # mido accepts system-common and real-time messages in a track
        assert 0xF1 <= data[err_pos] <= 0xFE and data[err_pos] != 0xF7
        assert any(m.type in SYSTEM_TYPES for t in mf.tracks for m in t)
    elif got.kind == "running_status":  # mido lets a sysex message set running status
        assert data[err_pos] < 0x80
        assert any(m.type == "sysex" for t in mf.tracks for m in t)
    else:
        pytest.fail(f"mido reads this file but we reject it as {got.kind}: {got}")


def test_real_and_generated_files_keep_invariants():
    for i in range(3):
        check_invariants(read_midi(to_smf_bytes(generate_piece(1, i, 0.2))))
    for path in REAL_FILES:
        check_invariants(_real(path)[1])


# ---------------------------------------------------------------------------------------------------
# 5. The generated corpus
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(8))
def test_generated_piece_reads_back_exactly(index):
    piece = generate_piece(seed=0, index=index, minutes=0.5)
    r = read_midi(to_smf_bytes(piece))
    want = piece.notes[np.lexsort((piece.notes["pitch"], piece.notes["onset_tick"]))]
    assert r.n_notes == want.shape[0]
    for col in ("onset_tick", "offset_tick", "pitch", "velocity", "channel"):
        np.testing.assert_array_equal(getattr(r, col), want[col], err_msg=col)
    assert (r.track == 1).all() and (r.program == 0).all()
    np.testing.assert_allclose(r.onset_s, piece.ticks_to_seconds(want["onset_tick"]), rtol=0, atol=US)
    np.testing.assert_allclose(r.offset_s, piece.ticks_to_seconds(want["offset_tick"]), rtol=0, atol=US)
    assert r.tempo_tick.tolist() == piece.tempos["tick"].tolist()
    assert r.tempo_us.tolist() == piece.tempos["tempo_us"].tolist()
    got_cc = list(zip(r.cc_tick.tolist(), r.cc_channel.tolist(), r.cc_control.tolist(), r.cc_value.tolist()))
    assert got_cc == [tuple(c) for c in piece.controls.tolist()]
    assert r.end_tick == piece.end_tick
    assert abs(r.duration_s - piece.duration_seconds) < US
