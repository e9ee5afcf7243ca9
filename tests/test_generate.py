"""The built-in generated corpus, read back by independent MIDI readers (mido, symusic)."""

from __future__ import annotations

import io
from collections import defaultdict, deque
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.kernels.corpus import (
    CONTROL_DTYPE,
    NOTE_DTYPE,
    TICKS_PER_BEAT,
    GeneratedPiece,
    encode_events_kernel,
    corpus_files,
    encode_events_reference,
    generate_piece,
    parse_generated_spec,
    to_smf_bytes,
)
from tasks.storage.sources import generate_corpus

PEDALS = (64, 66, 67)


def read_with_mido(data: bytes) -> dict:
    """Notes (FIFO-paired per channel and key), controls, tempos and metadata as mido sees them."""
    mid = mido.MidiFile(file=io.BytesIO(data))
    notes, controls, tempos, time_sigs, programs = [], [], [], [], []
    open_notes: dict[tuple[int, int], deque] = defaultdict(deque)
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes[(msg.channel, msg.note)].append((tick, msg.velocity))
            elif msg.type in ("note_off", "note_on"):
                onset, velocity = open_notes[(msg.channel, msg.note)].popleft()  # the earliest open note
                notes.append((onset, tick, msg.note, velocity, msg.channel))
            elif msg.type == "control_change":
                controls.append((tick, msg.channel, msg.control, msg.value))
            elif msg.type == "set_tempo":
                tempos.append((tick, msg.tempo))
            elif msg.type == "time_signature":
                time_sigs.append((msg.numerator, msg.denominator))
            elif msg.type == "program_change":
                programs.append(msg.program)
    assert not any(open_notes.values()), "notes left open at the end of the file"
    return {
        "mid": mid,
        "notes": sorted(notes, key=lambda n: (n[0], n[2])),
        "controls": controls,
        "tempos": tempos,
        "time_sigs": time_sigs,
        "programs": programs,
    }


def assert_round_trip(piece: GeneratedPiece, data: bytes) -> dict:
    got = read_with_mido(data)
    assert got["mid"].type == 1 and len(got["mid"].tracks) == 2
    assert got["mid"].ticks_per_beat == piece.ticks_per_beat == TICKS_PER_BEAT
    expected = [tuple(int(x) for x in rec) for rec in piece.notes.tolist()]
    assert got["notes"] == expected
    pedals = [tuple(int(x) for x in rec) for rec in piece.controls.tolist() if rec[2] in PEDALS]
    assert [c for c in got["controls"] if c[2] in PEDALS] == pedals
    assert got["tempos"] == [tuple(int(x) for x in rec) for rec in piece.tempos.tolist()]
    assert got["time_sigs"] == [piece.time_signature]
    assert got["programs"] == [0]
    return got


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return generate_corpus(tmp_path_factory.mktemp("gen"), 6, seed=0, minutes=0.5)


def test_corpus_files_read_back_exactly_by_mido(corpus):
    assert [p.name for p in corpus] == [f"gen-s0-{i:05d}.mid" for i in range(6)]
    for i, path in enumerate(corpus):
        piece = generate_piece(0, i, 0.5)
        data = path.read_bytes()
        assert data == to_smf_bytes(piece)
        assert_round_trip(piece, data)


def test_file_uses_both_note_off_forms_and_running_status():
    piece = generate_piece(0, 1, 1.0)
    data = to_smf_bytes(piece)
    track = mido.MidiFile(file=io.BytesIO(data)).tracks[1]
    kinds = {m.type for m in track}
    assert {"note_off", "note_on", "control_change", "program_change", "end_of_track"} <= kinds
    assert any(m.type == "note_on" and m.velocity == 0 for m in track)
    assert track[-1].type == "end_of_track"
    # running status: the piano chunk is shorter than its messages written out with every status byte
    conductor_len = int.from_bytes(data[18:22], "big")
    piano_at = 14 + 8 + conductor_len
    assert data[piano_at : piano_at + 4] == b"MTrk"
    piano_len = int.from_bytes(data[piano_at + 4 : piano_at + 8], "big")
    assert piano_at + 8 + piano_len == len(data)
    full = sum(len(_vlq(m.time)) + len(m.bytes()) for m in track)
    saved = full - piano_len
    n_channel = sum(1 for m in track if not m.is_meta)
    assert n_channel // 2 < saved < n_channel


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    while value > 0x7F:
        value >>= 7
        out.append(0x80 | (value & 0x7F))
    return bytes(reversed(out))


def test_same_tick_offs_before_ons():
    piece = generate_piece(0, 2, 1.0)
    track = mido.MidiFile(file=io.BytesIO(to_smf_bytes(piece))).tracks[1]
    tick, last = 0, {}
    for m in track:
        tick += m.time
        if m.type in ("note_on", "note_off"):
            is_on = m.type == "note_on" and m.velocity > 0
            if not is_on:
                assert last.get(tick) != "on", f"note-off after a note-on at tick {tick}"
            last[tick] = "on" if is_on else "off"


def test_symusic_agrees_on_note_count(corpus):
    symusic = pytest.importorskip("symusic")
    for i, path in enumerate(corpus):
        score = symusic.Score.from_midi(path.read_bytes())
        assert sum(len(t.notes) for t in score.tracks) == generate_piece(0, i, 0.5).n_notes
        assert score.ticks_per_quarter == TICKS_PER_BEAT


def test_deterministic_per_seed_and_index():
    a = to_smf_bytes(generate_piece(3, 7, 0.3))
    assert a == to_smf_bytes(generate_piece(3, 7, 0.3))
    assert a != to_smf_bytes(generate_piece(4, 7, 0.3))
    assert a != to_smf_bytes(generate_piece(3, 8, 0.3))


def test_piece_invariants():
    pieces = [generate_piece(0, i, 1.0) for i in range(12)]
    for p in pieces:
        assert p.name.startswith("gen-s0-") and p.notes.dtype == NOTE_DTYPE and p.controls.dtype == CONTROL_DTYPE
        n = p.notes
        assert n["pitch"].min() >= 21 and n["pitch"].max() <= 108
        assert n["velocity"].min() >= 1 and n["velocity"].max() <= 127
        assert (n["offset_tick"] > n["onset_tick"]).all()
        assert (n["onset_tick"] >= 0).all()
        assert len(np.unique(n["velocity"])) > 20  # varied dynamics
        assert p.tempos["tick"][0] == 0 and 2 <= len(p.tempos) <= 3  # one or two tempo changes
        assert (np.diff(p.tempos["tick"]) > 0).all()
        cc = p.controls
        sustain = cc[cc["control"] == 64]["value"]
        assert len(sustain) > 20 and ((sustain > 0) & (sustain < 127)).any()  # pedal, with half values
        assert (np.diff(cc["tick"]) >= 0).all()
        # re-struck keys: the same key struck again while its previous note still sounds
        assert _restruck_count(n) > 0
    controls = set(np.concatenate([p.controls["control"] for p in pieces]).tolist())
    assert controls == {64, 66, 67}
    density = sum(p.n_notes for p in pieces) / sum(p.duration_seconds for p in pieces)
    assert 7.0 < density < 13.0  # about MAESTRO's 10 notes per second


def _restruck_count(notes: np.ndarray) -> int:
    order = np.lexsort((notes["onset_tick"], notes["pitch"]))
    n = notes[order]
    same = n["pitch"][1:] == n["pitch"][:-1]
    return int((same & (n["onset_tick"][1:] < n["offset_tick"][:-1])).sum())


def test_lengths_vary_around_minutes():
    seconds = np.array([generate_piece(1, i, 1.0).duration_seconds for i in range(30)])
    assert seconds.min() > 0.4 * 60 and seconds.max() < 1.7 * 60
    assert seconds.max() - seconds.min() > 20
    short = generate_piece(1, 0, 0.2).duration_seconds
    long = generate_piece(1, 0, 3.0).duration_seconds
    assert long > 5 * short


def test_generate_corpus_idempotent_and_atomic(tmp_path):
    paths = generate_corpus(tmp_path, 3, seed=2, minutes=0.2)
    assert paths == sorted(paths) and all(p.exists() for p in paths)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    # one file changed by hand: rewritten; the others left alone
    paths[1].write_bytes(b"junk")
    again = generate_corpus(tmp_path, 3, seed=2, minutes=0.2)
    assert again == paths
    assert paths[0].stat().st_mtime_ns == mtimes[0] and paths[2].stat().st_mtime_ns == mtimes[2]
    assert paths[1].read_bytes() == to_smf_bytes(generate_piece(2, 1, 0.2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]  # no temp files left


def test_parse_generated_spec():
    assert parse_generated_spec("generated") == (24, 1.0)
    assert parse_generated_spec("generated:5") == (5, 1.0)
    assert parse_generated_spec("generated:1300:9.4") == (1300, 9.4)
    for bad in ("gen", "generated:", "generated:0", "generated:-3", "generated:x", "generated:3:0",
                "generated:3:-1", "generated:3:nan", "generated:3:abc", "generated:1:2:3", "maestro"):
        with pytest.raises(ValueError):
            parse_generated_spec(bad)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_piece(-1, 0)
    with pytest.raises(ValueError):
        generate_piece(0, 0, minutes=0)
    for n, minutes in ((-1, 1.0), (1.5, 1.0), (0, 0.0)):  # refused before anything is generated or written
        with pytest.raises(ValueError):
            corpus_files(n, minutes=minutes)
        with pytest.raises(ValueError):
            generate_corpus(tmp_path / "corpus", n, minutes=minutes)
    assert not (tmp_path / "corpus").exists()


def test_encode_kernel_matches_reference():
    rng = np.random.default_rng(0)
    n = 500
    delta = rng.choice(np.array([0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1]), n)
    delta = np.where(rng.random(n) < 0.5, rng.integers(0, 300, n), delta).astype(np.int64)
    status = rng.choice(np.array([0x80, 0x90, 0xB0, 0x91], dtype=np.uint8), n)
    status[10:40] = 0x90
    d1 = rng.integers(0, 128, n).astype(np.uint8)
    d2 = rng.integers(0, 128, n).astype(np.uint8)
    out = np.empty(n * 7, dtype=np.uint8)
    size = encode_events_kernel(delta, status, d1, d2, np.uint8(0xC0), out)
    assert out[:size].tobytes() == encode_events_reference(delta, status, d1, d2, 0xC0)
    # and on a real piece's stream, through mido's own VLQ reader
    piece = generate_piece(5, 5, 0.3)
    assert_round_trip(piece, to_smf_bytes(piece))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    index=st.integers(0, 99_999),
    minutes=st.floats(0.01, 0.4, allow_nan=False, allow_infinity=False),
)
def test_round_trip_property(seed, index, minutes):
    piece = generate_piece(seed, index, minutes)
    assert piece.n_notes > 0
    assert_round_trip(piece, to_smf_bytes(piece))
