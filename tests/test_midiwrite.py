"""notes_to_midi: round trips through our reader and through mido, the merge rules, and why they exist."""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from midiutil import MIDIFile

from tasks.kernels.midi import read_midi
from tasks.kernels.midiwrite import merge_notes, notes_to_midi, seconds_to_ticks, tempo_us_for

TPB = 960
SEC_PER_TICK = 0.5 / TPB  # 120 bpm


def _arrays(notes):
    """(pitch, velocity, onset_tick, offset_tick) tuples -> the four columns."""
    a = np.array(notes, dtype=np.int64).reshape(-1, 4)
    return a[:, 0].astype(np.uint8), a[:, 1].astype(np.uint8), a[:, 2], a[:, 3]


def _read(data):
    r = read_midi(data)
    return list(zip(r.pitch.tolist(), r.velocity.tolist(), r.onset_tick.tolist(), r.offset_tick.tolist()))


def _write_ticks(notes, **kw):
    p, v, on, off = _arrays(notes)
    return notes_to_midi(p, v, on * SEC_PER_TICK, off * SEC_PER_TICK, **kw)


def _read_with_mido(data):
    """Notes from mido messages, paired first-in-first-out per pitch (independent of tasks.kernels.midi)."""
    mf = mido.MidiFile(file=io.BytesIO(data))
    notes, open_ = [], {}
    for track in mf.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                open_.setdefault(msg.note, []).append((msg.velocity, tick))
            elif msg.type in ("note_on", "note_off") and open_.get(msg.note):
                vel, start = open_[msg.note].pop(0)
                notes.append((msg.note, vel, start, tick))
    assert not any(open_.values()), "every note is released"
    return sorted(notes, key=lambda n: (n[2], n[0])), mf


@st.composite
def disjoint_notes(draw):
    """Random notes on the tick grid, no two notes of one pitch overlapping (they may touch)."""
    n = draw(st.integers(1, 40))
    last_end: dict[int, int] = {}
    notes = []
    for _ in range(n):
        pitch = draw(st.integers(0, 127))
        gap = draw(st.integers(0, 3 * TPB))
        dur = draw(st.integers(1, 4 * TPB))
        vel = draw(st.integers(1, 127))
        start = last_end.get(pitch, draw(st.integers(0, 8 * TPB))) + gap
        last_end[pitch] = start + dur
        notes.append((pitch, vel, start, start + dur))
    return notes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notes=disjoint_notes(), program=st.one_of(st.none(), st.integers(0, 127)))
def test_round_trip_through_reader_and_mido(notes, program):
    data = _write_ticks(notes, program=program)
    expected = sorted(notes, key=lambda n: (n[2], n[0]))

    r = read_midi(data)
    assert _read(data) == expected
    p, v, on, off = _arrays(expected)
    np.testing.assert_allclose(r.onset_s, on * SEC_PER_TICK, atol=1e-3)
    np.testing.assert_allclose(r.offset_s, off * SEC_PER_TICK, atol=1e-3)
    assert r.ticks_per_beat == TPB
    assert set(r.program.tolist()) == {program or 0}

    by_mido, mf = _read_with_mido(data)
    assert by_mido == expected
    assert mf.ticks_per_beat == TPB
    tempos = [m.tempo for t in mf.tracks for m in t if m.type == "set_tempo"]
    assert tempos == [500_000]
    programs = [m.program for t in mf.tracks for m in t if m.type == "program_change"]
    assert programs == ([] if program is None else [program])


def test_seconds_off_the_grid_round_to_the_nearest_tick():
    onset = np.array([0.10003, 1.0])
    offset = np.array([0.2, 1.50049])
    r = read_midi(notes_to_midi(np.array([60, 61]), np.array([80, 90]), onset, offset))
    np.testing.assert_allclose(r.onset_s, onset, atol=0.5 * SEC_PER_TICK + 1e-12)
    np.testing.assert_allclose(r.offset_s, offset, atol=0.5 * SEC_PER_TICK + 1e-12)


@pytest.mark.parametrize("bpm, tpb", [(100.0, 480), (133.0, 220), (72.5, 96)])
def test_other_tempi_and_divisions_keep_times_within_half_a_tick(bpm, tpb):
    rng = np.random.default_rng(1)
    pitch = rng.permutation(128)  # one note per pitch: no merge rule applies
    onset = rng.uniform(0, 60, 128)
    offset = onset + rng.uniform(0.05, 2, 128)
    r = read_midi(notes_to_midi(pitch, np.full(128, 64), onset, offset, tempo_bpm=bpm, ticks_per_beat=tpb))
    order = np.lexsort((pitch, seconds_to_ticks(onset, tempo_bpm=bpm, ticks_per_beat=tpb)))
    assert r.tempo_us.tolist() == [tempo_us_for(bpm)]
    np.testing.assert_array_equal(r.pitch, pitch[order])
    half_tick = 0.5 * tempo_us_for(bpm) / (1e6 * tpb)
    np.testing.assert_allclose(r.onset_s, onset[order], atol=half_tick + 1e-9)
    np.testing.assert_allclose(r.offset_s, offset[order], atol=half_tick + 1e-9)


def test_same_pitch_same_start_becomes_one_note_longest_and_loudest():
    notes = [(60, 80, 0, 960), (60, 100, 0, 1920), (60, 50, 0, 480)]
    assert _read(_write_ticks(notes)) == [(60, 100, 0, 1920)]
    # the loudest and the longest need not be the same note
    notes = [(60, 120, 0, 960), (60, 30, 0, 1920)]
    assert _read(_write_ticks(notes)) == [(60, 120, 0, 1920)]


def test_overlapping_same_pitch_notes_are_cut_at_the_later_onset():
    # a short note struck inside a long one: the long one ends where the short one starts
    notes = [(60, 80, 0, 3840), (60, 100, 960, 1920)]
    assert _read(_write_ticks(notes)) == [(60, 80, 0, 960), (60, 100, 960, 1920)]
    # partial overlap, three deep, plus an unrelated pitch left alone
    notes = [(60, 1, 0, 2000), (60, 2, 1000, 2500), (60, 3, 1500, 1600), (62, 9, 100, 5000)]
    assert _read(_write_ticks(notes)) == [
        (60, 1, 0, 1000), (62, 9, 100, 5000), (60, 2, 1000, 1500), (60, 3, 1500, 1600),
    ]
    # touching notes are not overlapping and stay as they are
    notes = [(60, 10, 0, 960), (60, 20, 960, 1920)]
    assert _read(_write_ticks(notes)) == [(60, 10, 0, 960), (60, 20, 960, 1920)]


def test_merge_then_cut_and_what_read_midi_sees_agree():
    rng = np.random.default_rng(7)
    n = 3000
    pitch = rng.integers(58, 64, n)  # few pitches: many collisions and overlaps
    on = rng.integers(0, 50, n) * 96
    off = on + rng.integers(-2, 8, n) * 96
    vel = rng.integers(-10, 200, n)
    mp, mv, mon, moff = merge_notes(pitch, vel, on, off)
    assert np.all(moff > mon)
    for q in np.unique(mp):  # disjoint per pitch
        sel = mp == q
        assert np.all(mon[sel][1:] >= moff[sel][:-1])
    data = notes_to_midi(pitch, vel, on * SEC_PER_TICK, off * SEC_PER_TICK)
    r = read_midi(data)
    np.testing.assert_array_equal(r.pitch, mp)
    np.testing.assert_array_equal(r.velocity, mv)
    np.testing.assert_array_equal(r.onset_tick, mon)
    np.testing.assert_array_equal(r.offset_tick, moff)


def test_velocity_clipped_and_empty_durations_last_one_tick():
    pitch = np.array([60, 61, 62, 63])
    velocity = np.array([0, 300, -4, 63.6])
    on = np.array([0, 10, 20, 30])
    off = np.array([0, 5, 21, 40])
    data = notes_to_midi(pitch, velocity, on * SEC_PER_TICK, off * SEC_PER_TICK)
    assert _read(data) == [(60, 1, 0, 1), (61, 127, 10, 11), (62, 1, 20, 21), (63, 64, 30, 40)]


def test_bad_input_is_rejected():
    one = np.array([0.0])
    with pytest.raises(ValueError, match="pitch"):
        notes_to_midi(np.array([128]), np.array([64]), one, one + 1)
    with pytest.raises(ValueError, match="negative"):
        notes_to_midi(np.array([60]), np.array([64]), one - 1, one + 1)
    with pytest.raises(ValueError, match="finite"):
        notes_to_midi(np.array([60]), np.array([64]), one, one + np.nan)
    with pytest.raises(ValueError, match="program"):
        notes_to_midi(np.array([60]), np.array([64]), one, one + 1, program=128)
    with pytest.raises(ValueError, match="ticks_per_beat"):
        notes_to_midi(np.array([60]), np.array([64]), one, one + 1, ticks_per_beat=0)
    with pytest.raises(ValueError, match="1-d"):
        notes_to_midi(np.array([60, 61]), np.array([64]), one, one + 1)


def test_no_notes_still_writes_a_valid_file():
    data = notes_to_midi(np.array([], np.uint8), np.array([]), np.array([]), np.array([]))
    mf = mido.MidiFile(file=io.BytesIO(data))
    assert not [m for t in mf.tracks for m in t if m.type == "note_on"]


# -- why the merge exists: plain midiutil on the unmerged notes -----------------------------------------


def _plain_midiutil(notes, **kw):
    mf = MIDIFile(1, ticks_per_quarternote=TPB, **kw)
    mf.addTempo(0, 0, 120)
    for pitch, vel, on, off in notes:
        mf.addNote(0, 0, pitch, on / TPB, (off - on) / TPB, vel)
    buf = io.BytesIO()
    mf.writeFile(buf)
    return buf.getvalue()


def test_plain_midiutil_raises_or_loses_notes_on_same_start():
    notes = [(60, 80, 0, 960), (60, 100, 0, 1920)]
    with pytest.raises(IndexError):  # its default de-interleaving writer
        _plain_midiutil(notes)
    # without de-interleaving it keeps one note-on and the *shorter* release: the long note is lost
    assert _read(_plain_midiutil(notes, deinterleave=False)) == [(60, 80, 0, 960)]


def test_plain_midiutil_swaps_the_ends_of_nested_notes():
    notes = [(60, 80, 0, 3840), (60, 100, 960, 1920)]
    got = _read(_plain_midiutil(notes, deinterleave=False))
    assert got == [(60, 80, 0, 1920), (60, 100, 960, 3840)]  # the short note now outlasts the long one
    assert got != sorted(notes, key=lambda n: n[2])


def test_plain_midiutil_loses_ticks_with_float_beats():
    # tick / division as a float beat can fall one ulp short; midiutil truncates it to the tick before
    tick = 123
    assert int((tick / TPB) * TPB) == tick - 1
    assert _read(_plain_midiutil([(60, 64, tick, tick + 10)], deinterleave=False))[0][2] == tick - 1
    assert _read(_write_ticks([(60, 64, tick, tick + 10)]))[0][2] == tick
