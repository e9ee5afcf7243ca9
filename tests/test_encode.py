"""Encodings 1-3 (notes -> piano-roll windows -> notes).

Kernels against their plain twins on random notes, exact round trips on the grid, bounded losses off
the grid, and a cross-check of the rendering against pretty_midi's ``get_piano_roll`` on real files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import shared_midi_files
from storage_schemas.encodings import ONSET, SUSTAIN, RollConfig
from tasks.kernels import rolls as E
from tasks.kernels.midi import read_midi
from tasks.kernels.simd import BLOCK

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODINGS = ("enc1", "enc2", "enc3")
RES = 0.05


# -- helpers -----------------------------------------------------------------------------------------


def onset_pixels(images: np.ndarray, starts: np.ndarray, encoding: str) -> int:
    """Number of onset pixels in a piece's windows, counted on the pasted roll (no overlap counted twice)."""
    roll = E.stitch_windows(images, starts)[0]
    return int(np.count_nonzero(roll)) if encoding == "enc1" else int(np.count_nonzero(roll == ONSET))


def sorted_notes(n: E.GridNotes) -> list[tuple]:
    return sorted(zip(n.start_col.tolist(), n.pitch.tolist(), n.stop_col.tolist(), n.velocity.tolist(),
                      n.program.tolist()))


def run_kernel(encoding, pitch, velocity, program, tempo, start, stop, pitch_lo, hop, out, reference=False):
    if encoding == "enc1":
        fn = E.render_enc1_reference if reference else E.render_enc1_kernel
        return fn(pitch, velocity, program, tempo, start, stop, pitch_lo, hop, out)
    if encoding == "enc2":
        fn = E.render_enc2_reference if reference else E.render_enc2_kernel
        return fn(pitch, velocity, program, start, stop, pitch_lo, hop, out)
    fn = E.render_enc3_reference if reference else E.render_enc3_kernel
    return fn(pitch, start, stop, pitch_lo, hop, out)


# -- RollConfig --------------------------------------------------------------------------------------


def test_roll_config_shapes_and_dict_round_trip():
    shapes = {e: RollConfig(e).shape for e in ENCODINGS}
    assert shapes == {"enc1": (4, 88, 200), "enc2": (3, 88, 200), "enc3": (1, 88, 200)}
    cfg = RollConfig("enc1", resolution_s=0.1, columns=64, hop_columns=16, pitch_lo=30, pitch_hi=40, pedal=True,
                     convention="pretty_midi")
    assert cfg.rows == 11 and cfg.channels == 4
    assert RollConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        RollConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="schema_version"):
        RollConfig.from_dict({**cfg.to_dict(), "schema_version": 99})


@pytest.mark.parametrize("kwargs", [
    {"encoding": "enc4"},
    {"encoding": "enc2", "convention": "librosa"},
    {"encoding": "enc2", "hop_columns": 201},
    {"encoding": "enc2", "hop_columns": 0},
    {"encoding": "enc2", "columns": 0, "hop_columns": 0},
    {"encoding": "enc2", "resolution_s": 0.0},
    {"encoding": "enc2", "resolution_s": float("nan")},
    {"encoding": "enc2", "pitch_lo": 60, "pitch_hi": 59},
    {"encoding": "enc2", "pitch_hi": 128},
    {"encoding": "enc2", "pedal": "yes"},
])
def test_roll_config_rejects(kwargs):
    with pytest.raises(ValueError):
        RollConfig(**kwargs)


# -- seconds to columns, windows ---------------------------------------------------------------------


def test_midipix_columns_put_grid_times_on_their_column_and_keep_short_notes():
    cfg = RollConfig("enc2")
    k = np.arange(0, 200_000)
    start, stop = E.note_columns(k * RES, (k + 3) * RES, cfg)
    assert np.array_equal(start, k) and np.array_equal(stop, k + 3)
    # a hair below a boundary is still the previous column; shorter than a column -> one column
    start, stop = E.note_columns([0.0999, 1.0, 2.0, 2.0], [0.1, 1.001, 2.0, 1.5], cfg)
    assert start.tolist() == [1, 20, 40, 40]
    assert stop.tolist() == [2, 21, 41, 41]


def test_pretty_midi_columns_truncate_like_int():
    cfg = RollConfig("enc2", convention="pretty_midi")
    rng = np.random.default_rng(1)
    onset = rng.uniform(0, 500, 2000)
    offset = onset + rng.exponential(0.1, 2000)
    start, stop = E.note_columns(onset, offset, cfg)
    assert start.tolist() == [int(t * 20) for t in onset]
    assert stop.tolist() == [int(t * 20) for t in offset]
    assert (stop <= start).any()  # short notes vanish in this convention


@given(n=st.integers(0, 5000), columns=st.integers(1, 300), data=st.data())
@settings(max_examples=200, deadline=None)
def test_window_starts_cover_the_piece_minimally(n, columns, data):
    hop = data.draw(st.integers(1, columns))
    cfg = RollConfig("enc3", columns=columns, hop_columns=hop)
    starts = E.window_starts(n, cfg)
    assert starts[0] == 0 and np.all(np.diff(starts) == hop)
    assert starts[-1] + columns >= n  # the last window reaches the end
    if len(starts) > 1:
        assert starts[-2] + columns < n  # and is needed


def test_tempo_at_follows_the_tempo_map():
    bpm = E.tempo_at([0.0, 0.5, 1.0, 1.5, 9.0], [0.5, 1.0, 1.0], [100.0, 90.0, 80.0])
    assert bpm.tolist() == [120.0, 100.0, 80.0, 80.0, 80.0]
    assert E.tempo_at([1.0], [], []).tolist() == [120.0]


# -- kernels against their plain twins ---------------------------------------------------------------


@st.composite
def kernel_case(draw):
    """Random notes on a small roll: out-of-range pitches, same-pitch overlaps and repeated start columns,
    zero and negative lengths (the pretty_midi convention makes those), notes past the last window,
    overlapping windows. Rows of at least ``tasks.kernels.simd.BLOCK`` columns with windows side by side (the
    kernels' short-note path: notes up to BLOCK columns, near a row's end, across a window boundary)
    are drawn as often as narrow rows."""
    rows = draw(st.integers(1, 8))
    pitch_lo = draw(st.integers(2, 100))
    cols = draw(st.one_of(st.integers(1, 24), st.integers(BLOCK, BLOCK + 40)))
    hop = draw(st.one_of(st.just(cols), st.integers(1, cols)))
    n_win = draw(st.integers(1, 6))
    n = draw(st.integers(0, 50))
    ints = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=n, max_size=n)  # noqa: E731
    start = np.array(draw(ints(0, n_win * hop + cols)), np.int64)
    length = np.array(draw(st.lists(st.one_of(st.integers(-3, 3 * cols), st.integers(1, BLOCK + 2)),
                                    min_size=n, max_size=n)), np.int64)
    order = np.argsort(start, kind="stable")
    return dict(
        pitch=np.array(draw(ints(pitch_lo - 2, pitch_lo + rows + 1)), np.uint8)[order],
        velocity=np.array(draw(ints(0, 127)), np.uint8)[order],
        program=np.array(draw(ints(0, 127)), np.uint8)[order],
        tempo=np.array(draw(ints(0, 255)), np.uint8)[order],
        start=start[order],
        stop=(start + length)[order],
        pitch_lo=pitch_lo, hop=hop, shape=(n_win, rows, cols),
    )


@pytest.mark.parametrize("encoding", ENCODINGS)
@SETTINGS
@given(case=kernel_case())
def test_render_kernels_match_reference(encoding, case):
    n_win, rows, cols = case["shape"]
    channels = {"enc1": 4, "enc2": 3, "enc3": 1}[encoding]
    args = (case["pitch"], case["velocity"], case["program"], case["tempo"], case["start"], case["stop"],
            case["pitch_lo"], case["hop"])
    fast = np.zeros((n_win, channels, rows, cols), np.uint8)
    slow = np.zeros_like(fast)
    skipped = run_kernel(encoding, *args, fast)
    assert skipped == run_kernel(encoding, *args, slow, reference=True)
    assert np.array_equal(fast, slow)
    in_range = (case["pitch"] >= case["pitch_lo"]) & (case["pitch"] < case["pitch_lo"] + rows)
    assert skipped == int(np.count_nonzero(~in_range))
    if encoding != "enc1":
        assert set(np.unique(fast[:, 0]).tolist()) <= {0, ONSET, SUSTAIN}


@SETTINGS
@given(case=kernel_case())
def test_overlapping_windows_are_slices_of_one_roll(case):
    """With hop < columns, every window equals the same columns of the roll drawn without overlap."""
    n_win, rows, cols = case["shape"]
    hop = case["hop"]
    args = (case["pitch"], case["velocity"], case["program"], case["tempo"], case["start"], case["stop"],
            case["pitch_lo"])
    width = (n_win - 1) * hop + cols
    for encoding, channels in (("enc1", 4), ("enc2", 3), ("enc3", 1)):
        windows = np.zeros((n_win, channels, rows, cols), np.uint8)
        run_kernel(encoding, *args, hop, windows)
        roll = np.zeros((1, channels, rows, width), np.uint8)  # one window as wide as them all
        run_kernel(encoding, *args, width, roll)
        for w in range(n_win):
            assert np.array_equal(windows[w], roll[0, :, :, w * hop : w * hop + cols])


@SETTINGS
@given(case=kernel_case(), seed=st.integers(0, 2**32 - 1))
def test_render_windows_sorts_unsorted_notes_stably(case, seed):
    n_win, rows, cols = case["shape"]
    perm = np.random.default_rng(seed).permutation(len(case["start"]))
    cols_of = {k: case[k][perm] for k in ("pitch", "velocity", "program", "start", "stop")}
    cfg = RollConfig("enc2", columns=cols, hop_columns=case["hop"], pitch_lo=case["pitch_lo"],
                     pitch_hi=case["pitch_lo"] + rows - 1)
    got = np.zeros((n_win,) + cfg.shape, np.uint8)
    E.render_windows(got, cols_of["pitch"], cols_of["velocity"], cols_of["program"], cols_of["start"],
                     cols_of["stop"], cfg)
    o = np.argsort(cols_of["start"], kind="stable")
    want = np.zeros_like(got)
    E.render_enc2_reference(cols_of["pitch"][o], cols_of["velocity"][o], cols_of["program"][o], cols_of["start"][o],
                            cols_of["stop"][o], case["pitch_lo"], case["hop"], want)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("convention", ["midipix", "pretty_midi"])
@SETTINGS
@given(case=kernel_case(), shuffle=st.booleans(), given_length=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_to_windows_matches_reference_from_seconds(encoding, convention, case, shuffle, given_length, seed):
    """``to_windows`` (seconds -> columns, checks and drawing in one pass for enc2/enc3) draws what the
    plain twin draws from :func:`note_columns`, sorted or not, with or without a given length."""
    n_win, rows, cols = case["shape"]
    rng = np.random.default_rng(seed)
    n = len(case["start"])
    # seconds on and off the grid (up to 0.9 column late), lengths from the case (some <= 0)
    onset = (case["start"] + rng.choice([0.0, 0.3, 0.9], n)) * RES
    offset = np.maximum(onset + (case["stop"] - case["start"]) * RES + rng.choice([0.0, 0.5], n) * RES, 0.0)
    notes = {"pitch": case["pitch"], "velocity": case["velocity"], "program": case["program"],
             "tempo": case["tempo"].astype(np.float64), "onset": onset, "offset": offset}
    if shuffle:
        perm = rng.permutation(n)
        notes = {k: v[perm] for k, v in notes.items()}
    cfg = RollConfig(encoding, columns=cols, hop_columns=case["hop"], pitch_lo=case["pitch_lo"],
                     pitch_hi=case["pitch_lo"] + rows - 1, convention=convention)
    length = n_win * case["hop"] if given_length else None
    win = E.to_windows(notes["pitch"], notes["velocity"], notes["program"], notes["onset"], notes["offset"], cfg,
                       tempo_bpm=notes["tempo"], n_columns=length)
    start, stop = E.note_columns(notes["onset"], notes["offset"], cfg)
    width = length if given_length else max(int(stop.max(initial=0)), 0)
    assert win.n_columns == width
    want = np.zeros((E._n_windows(width, cfg),) + cfg.shape, np.uint8)
    o = np.argsort(start, kind="stable")
    tempo = np.clip(np.rint(notes["tempo"]), 0, 255).astype(np.uint8)
    skipped = run_kernel(encoding, notes["pitch"][o], notes["velocity"][o], notes["program"][o], tempo[o], start[o],
                         stop[o], case["pitch_lo"], case["hop"], want, reference=True)
    assert win.n_skipped == skipped
    assert np.array_equal(win.images, want)


@SETTINGS
@given(rows=st.integers(1, 6), cols=st.integers(1, 30), data=st.data())
def test_decode_runs_kernel_matches_reference(rows, cols, data):
    pixels = st.lists(st.sampled_from([0, 0, 0, ONSET, SUSTAIN, SUSTAIN, 7]), min_size=rows * cols,
                      max_size=rows * cols)
    arr = np.array(data.draw(pixels), np.uint8).reshape(rows, cols)
    fast = E.decode_runs_kernel(arr)
    slow = E.decode_runs_reference(arr)
    for a, b in zip(fast, slow):
        assert np.array_equal(a, b)


# -- exact round trips on the grid -------------------------------------------------------------------


@st.composite
def grid_piece(draw, encoding):
    """Notes already on the grid, no two notes of one pitch overlapping (touching is allowed)."""
    pitches = draw(st.lists(st.integers(21, 108), min_size=0, max_size=6, unique=True))
    max_len = 255 if encoding == "enc1" else 400
    notes = []
    for p in pitches:
        col = draw(st.integers(0, 30))
        for _ in range(draw(st.integers(1, 6))):
            length = draw(st.integers(1, max_len))
            vel, prog = (64, 0) if encoding == "enc3" else (draw(st.integers(1, 127)), draw(st.integers(0, 127)))
            notes.append((col, p, col + length, vel, prog))
            col += length + draw(st.sampled_from([0, 0, 1, 3, 40]))
    notes.sort()
    return notes


@pytest.mark.parametrize("encoding", ENCODINGS)
@SETTINGS
@given(data=st.data())
def test_grid_notes_round_trip_exactly(encoding, data):
    notes = data.draw(grid_piece(encoding))
    columns = data.draw(st.sampled_from([7, 16, 200]))
    hop = data.draw(st.sampled_from(sorted({columns, max(1, columns // 2), max(1, columns // 3)})))
    cfg = RollConfig(encoding, columns=columns, hop_columns=hop)
    start, pitch, stop, vel, prog = (np.array([n[k] for n in notes], dtype=np.int64) for k in range(5))
    win = E.to_windows(pitch, vel, prog, start * RES, stop * RES, cfg)
    assert win.n_skipped == 0 and win.images.shape == (len(win.starts),) + cfg.shape

    got = E.from_windows(win.images, cfg)
    assert sorted_notes(got) == notes
    assert got.has_onset.all()
    assert np.allclose(got.onset_s, got.start_col * RES) and np.allclose(got.offset_s, got.stop_col * RES)
    if encoding == "enc1":
        assert (got.tempo_bpm == 120).all()

    again = E.to_windows(got.pitch, got.velocity, got.program, got.onset_s, got.offset_s, cfg,
                         n_columns=win.n_columns)
    assert np.array_equal(again.images, win.images)  # bit for bit

    # window by window: a note belongs to the window holding its onset; enc2/3 cut it at the window's end,
    # and a note running in from the previous window shows without an onset
    decode = {"enc1": E.from_enc1, "enc2": E.from_enc2, "enc3": E.from_enc3}[encoding]
    for ws, image in zip(win.starts.tolist(), win.images):
        part = decode(image, ws, cfg)
        inside = [n for n in notes if ws <= n[0] < ws + columns]
        if encoding != "enc1":
            inside = [(s, p, min(e, ws + columns), v, g) for s, p, e, v, g in inside]
        with_onset = [n for n, o in zip(sorted_notes(part), part.has_onset) if o]  # part is sorted already
        assert with_onset == sorted(inside)
        if encoding != "enc1":
            running = {(p, min(e, ws + columns)) for s, p, e, _, _ in notes if s < ws < e}
            tails = {(int(p), int(e)) for p, e, o, s in zip(part.pitch, part.stop_col, part.has_onset, part.start_col)
                     if not o and s == ws}
            assert tails == running


def test_enc1_clips_lengths_at_255_columns():
    cfg = RollConfig("enc1")
    win = E.to_windows([60], [90], [5], [1.0], [1.0 + 300 * RES], cfg)
    got = E.from_windows(win.images, cfg)
    assert (got.start_col.tolist(), got.stop_col.tolist()) == ([20], [20 + 255])
    enc2 = RollConfig("enc2")
    got2 = E.from_windows(E.to_windows([60], [90], [5], [1.0], [1.0 + 300 * RES], enc2).images, enc2)
    assert got2.stop_col.tolist() == [320]  # enc2 keeps any length


@pytest.mark.parametrize("encoding", ["enc2", "enc3"])
def test_to_windows_zero_fills_windows_lazily_even_in_reused_memory(encoding):
    """With windows side by side the output starts uninitialised and is zeroed a window at a time: every
    window, the ones no note reaches (a gap, the padding after ``n_columns``) included, must come out as
    the plain twin draws it. The heap is dirtied first with blocks of the output's size filled with 0xFF,
    so that memory handed back by the allocator is not zero by luck."""
    cfg = RollConfig(encoding)
    # notes in windows 0, 3 (one crossing into 4) and 6 of 10; window 1, 2, 5, 7..9 stay empty
    start = np.array([5, 30, 610, 790, 1230], np.int64)
    stop = np.array([9, 62, 640, 805, 1233], np.int64)
    pitch = np.array([60, 61, 62, 63, 64], np.uint8)
    velocity = np.array([90, 80, 70, 60, 50], np.uint8)
    program = np.zeros(5, np.uint8)
    n_columns = 2000
    want = np.zeros((10,) + cfg.shape, np.uint8)
    run_kernel(encoding, pitch, velocity, program, None, start, stop, cfg.pitch_lo, cfg.hop_columns, want,
               reference=True)
    nbytes = want.nbytes
    for _ in range(5):
        dirt = [np.full(nbytes, 0xFF, np.uint8) for _ in range(4)]
        del dirt
        win = E.to_windows(pitch, velocity, program, start * RES, stop * RES, cfg, n_columns=n_columns)
        assert np.array_equal(win.images, want)


def test_pedal_draws_to_the_pedal_release():
    cfg = RollConfig("enc2", pedal=True)
    with pytest.raises(ValueError, match="offset_pedal_s"):
        E.to_windows([60], [90], [0], [0.0], [0.5], cfg)
    got = E.from_windows(E.to_windows([60], [90], [0], [0.0], [0.5], cfg, offset_pedal_s=[2.0]).images, cfg)
    assert got.stop_col.tolist() == [40]


# -- losses off the grid -----------------------------------------------------------------------------


@st.composite
def off_grid_piece(draw):
    n = draw(st.integers(1, 60))
    floats = lambda lo, hi: st.lists(st.floats(lo, hi, allow_nan=False), min_size=n, max_size=n)  # noqa: E731
    onset = np.array(draw(floats(0.0, 12.0)))
    duration = np.array(draw(floats(0.0, 1.5)))
    duration[: n // 3] *= 0.03  # many notes shorter than a column
    pitch = np.array(draw(st.lists(st.integers(60, 63), min_size=n, max_size=n)), np.uint8)  # crowded: overlaps
    velocity = np.array(draw(st.lists(st.integers(1, 127), min_size=n, max_size=n)), np.uint8)
    order = np.argsort(onset, kind="stable")
    return pitch[order], velocity[order], onset[order], (onset + duration)[order]


@SETTINGS
@given(piece=off_grid_piece(), columns=st.sampled_from([16, 200]))
def test_off_grid_losses_are_bounded_and_counted(piece, columns):
    pitch, velocity, onset, offset = piece
    cfg = RollConfig("enc2", columns=columns, hop_columns=columns)
    program = np.zeros_like(pitch)
    got = E.from_windows(E.to_windows(pitch, velocity, program, onset, offset, cfg).images, cfg)

    # independent model of the grid (plain Python): midipix columns, every note at least one column
    start = [math.floor(t * 20.0 + 1e-9) for t in onset]  # 20 columns per second
    stop = [max(math.floor(t * 20.0 + 1e-9), s + 1) for t, s in zip(offset, start)]
    key = list(zip(pitch.tolist(), start))
    survivor = {k: i for i, k in enumerate(key)}  # of notes sharing (pitch, start column) the last wins
    collisions = len(key) - len(survivor)
    assert len(got) == len(pitch) - collisions  # lost notes == same-pitch notes sharing an onset column

    decoded = {(int(p), int(s)): (int(e), int(v)) for p, s, e, v in
               zip(got.pitch, got.start_col, got.stop_col, got.velocity)}
    assert set(decoded) == set(survivor)
    for (p, s), i in survivor.items():
        e, v = decoded[(p, s)]
        assert v == velocity[i]
        assert onset[i] - RES < s * RES <= onset[i] + 1e-9  # onset within one column, never later
        overlapped = any(pitch[j] == p and j != i and start[j] < stop[i] and start[i] < stop[j]
                         for j in range(len(pitch)))
        if not overlapped:
            assert e == stop[i]
            assert abs(e * RES - offset[i]) <= RES + 1e-9  # within one column (short notes: one column)
    # the covered pixels are exactly the union of the notes' spans
    width = max(stop) + 1
    want = np.zeros((4, width), bool)
    for p, s, e in zip(pitch.tolist(), start, stop):
        want[p - 60, s:e] = True
    have = np.zeros_like(want)
    for p, s, e in zip(got.pitch.tolist(), got.start_col.tolist(), got.stop_col.tolist()):
        have[p - 60, s:e] = True
    assert np.array_equal(have, want)


@SETTINGS
@given(piece=off_grid_piece())
def test_midipix_convention_keeps_every_note(piece):
    """Notes with distinct (pitch, onset column) all get their onset pixel, however short; the pretty_midi
    convention drops those shorter than a column."""
    pitch, velocity, onset, offset = piece
    cols = np.floor(onset / RES + 1e-9).astype(np.int64)
    _, first = np.unique(np.stack([pitch.astype(np.int64), cols]), axis=1, return_index=True)
    keep = np.sort(first)
    pitch, velocity, onset, offset = pitch[keep], velocity[keep], onset[keep], offset[keep]
    program = np.zeros_like(pitch)
    for encoding in ENCODINGS:
        cfg = RollConfig(encoding)
        win = E.to_windows(pitch, velocity, program, onset, offset, cfg)
        assert onset_pixels(win.images, win.starts, encoding) == len(pitch)
    pm_cfg = RollConfig("enc2", convention="pretty_midi")
    win = E.to_windows(pitch, velocity, program, onset, offset, pm_cfg)
    s, e = E.note_columns(onset, offset, pm_cfg)
    assert onset_pixels(win.images, win.starts, "enc2") <= int(np.count_nonzero(e > s))
    if (e <= s).any():
        assert onset_pixels(win.images, win.starts, "enc2") < len(pitch)


def test_out_of_range_pitches_are_skipped_and_counted():
    cfg = RollConfig("enc2")
    win = E.to_windows([20, 21, 108, 109, 127, 0], [50] * 6, [0] * 6, [0.0] * 6, [1.0] * 6, cfg)
    assert win.n_skipped == 4
    assert E.from_windows(win.images, cfg).pitch.tolist() == [21, 108]
    with pytest.raises(ValueError, match="0..127"):
        E.to_windows([60], [128], [0], [0.0], [1.0], cfg)


# -- velocities where notes overlap ------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(2, 40), seed=st.integers(0, 2**32 - 1))
def test_velocity_never_exceeds_127_where_notes_overlap(n, seed):
    rng = np.random.default_rng(seed)
    onset = np.sort(rng.uniform(0, 2, n))
    offset = onset + rng.uniform(0.05, 3, n)
    pitch = rng.integers(60, 62, n).astype(np.uint8)  # two keys: heavy overlap
    velocity = rng.integers(100, 128, n).astype(np.uint8)
    cfg = RollConfig("enc2")
    win = E.to_windows(pitch, velocity, np.zeros_like(pitch), onset, offset, cfg)
    roll = E.stitch_windows(win.images, win.starts)
    assert roll[1].max() <= 127
    got = E.from_windows(win.images, cfg)
    for p, s, e, v in zip(got.pitch, got.start_col, got.stop_col, got.velocity):
        assert (roll[1, p - 21, s:e] == v).all()  # one note, one velocity


def test_pretty_midi_sums_velocities_where_we_do_not():
    pretty_midi = pytest.importorskip("pretty_midi")
    inst = pretty_midi.Instrument(0)
    for start, end in ((0.0, 2.0), (0.5, 1.5), (1.0, 3.0)):
        inst.notes.append(pretty_midi.Note(velocity=100, pitch=60, start=start, end=end))
    assert inst.get_piano_roll(fs=20).max() > 127  # the summed roll pretty_midi makes
    cfg = RollConfig("enc2", convention="pretty_midi")
    win = E.to_windows([60, 60, 60], [100] * 3, [0] * 3, [0.0, 0.5, 1.0], [2.0, 1.5, 3.0], cfg)
    assert win.images[:, 1].max() == 100
    got = E.from_windows(win.images, cfg)
    assert list(zip(got.start_col.tolist(), got.stop_col.tolist())) == [(0, 10), (10, 20), (20, 60)]


# -- bad images --------------------------------------------------------------------------------------


def test_decoders_reject_wrong_images():
    cfg = RollConfig("enc2")
    with pytest.raises(ValueError):
        E.from_enc2(np.zeros((1, 88, 200), np.uint8), 0, cfg)
    with pytest.raises(ValueError):
        E.from_enc2(np.zeros((3, 88, 200), np.float32), 0, cfg)
    with pytest.raises(ValueError, match="enc3"):
        E.from_enc3(np.zeros((1, 88, 200), np.uint8), 0, cfg)
    with pytest.raises(ValueError):
        E.from_windows(np.zeros((2, 4, 88, 200), np.uint8), cfg)
    empty = E.from_windows(np.zeros((2, 3, 88, 200), np.uint8), cfg)
    assert len(empty) == 0


# -- real files: cross-check against pretty_midi -----------------------------------------------------

FILES = shared_midi_files()
FILE_PARAMS = [pytest.param(p, id=p.name[:40]) for p in FILES] or [
    pytest.param(None, marks=pytest.mark.skip(reason="no ../shared/data/midi in this checkout"))]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("path", FILE_PARAMS)
def test_enc3_matches_pretty_midi_piano_roll(path: Path):
    """enc3 in the pretty_midi convention, binarised, against ``get_piano_roll(fs=20)`` rows 21..108.

    Like pretty_midi's roll we draw no drum notes; unlike it, no pitch bends (cleared on its side) and
    here no pedal (``pedal_threshold=None``). Where pretty_midi pairs re-struck keys differently from
    our reader (it then reports fewer notes, see ../shared/data/midi/README.md), its notes end earlier:
    there we check that everything it draws we draw too, and that our renderer fed pretty_midi's own
    notes reproduces its roll.
    """
    pretty_midi = pytest.importorskip("pretty_midi")
    pm = pretty_midi.PrettyMIDI(str(path))
    for inst in pm.instruments:
        inst.pitch_bends = []
    ref = pm.get_piano_roll(fs=20, pedal_threshold=None)[21:109] > 0  # (88, T)
    cfg = RollConfig("enc3", convention="pretty_midi")

    def binary_roll(pitch, onset, offset) -> np.ndarray:
        win = E.to_windows(pitch, np.full(len(pitch), 64), np.zeros(len(pitch), np.int64), onset, offset, cfg)
        roll = E.stitch_windows(win.images, win.starts)[0] > 0
        n = min(roll.shape[1], ref.shape[1])
        assert not roll[:, n:].any() and not ref[:, n:].any()  # nothing beyond the common length
        return roll[:, :n]

    midi = read_midi(path.read_bytes())
    tonal = midi.channel != 9
    ours = binary_roll(midi.pitch[tonal], midi.onset_s[tonal], midi.offset_s[tonal])
    pm_notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    same_pairing = len(pm_notes) == int(tonal.sum())
    n = ours.shape[1]
    score = iou(ours, ref[:, :n])
    recall = float((ours & ref[:, :n]).sum() / max(ref.sum(), 1))
    print(f"{path.name}: IoU {score:.5f}, recall {recall:.5f}, same pairing {same_pairing}")
    if same_pairing:
        assert score >= 0.99
    else:
        assert recall >= 0.99
        theirs = binary_roll(np.array([x.pitch for x in pm_notes]), np.array([x.start for x in pm_notes]),
                             np.array([x.end for x in pm_notes]))
        renderer = iou(theirs, ref[:, : theirs.shape[1]])
        print(f"  pretty_midi's own notes through our renderer: IoU {renderer:.5f}")
        assert renderer >= 0.99


@pytest.mark.parametrize("path", FILE_PARAMS)
def test_midipix_convention_keeps_every_real_note(path: Path):
    midi = read_midi(path.read_bytes())
    cfg = RollConfig("enc2")
    win = E.to_windows(midi.pitch, midi.velocity, midi.program, midi.onset_s, midi.offset_s, cfg)
    in_range = (midi.pitch >= 21) & (midi.pitch <= 108)
    assert win.n_skipped == int(np.count_nonzero(~in_range))
    start, _ = E.note_columns(midi.onset_s, midi.offset_s, cfg)
    distinct = np.unique(np.stack([midi.pitch[in_range].astype(np.int64), start[in_range]]), axis=1).shape[1]
    assert onset_pixels(win.images, win.starts, "enc2") == distinct  # only same-column re-strikes merge
    merged = int(in_range.sum()) - distinct
    print(f"{path.name}: {merged} of {int(in_range.sum())} notes share pitch and onset column with another")
    if len(np.unique(midi.program)) == 1 and (midi.channel != 9).all():  # one piano: re-strikes that fast are rare
        assert merged <= 0.01 * int(in_range.sum())
    got = E.from_windows(win.images, cfg)
    assert len(got) == distinct and got.velocity.max() <= 127
