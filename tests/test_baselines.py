"""tasks.kernels.baselines: shapes, causality, known tables, seeded reproducibility."""

from __future__ import annotations

import json

import numpy as np
import pytest

from storage_schemas.encodings import ONSET, SUSTAIN
from tasks.kernels import baselines as B
from tasks.kernels import metrics as M

CAUSAL = [b for b in B.BASELINES if b != "real-vs-real"]


def random_states(seed=0, n=4, rows=5, cols=16):
    """Valid states: runs with an ONSET first, SUSTAIN after."""
    rng = np.random.default_rng(seed)
    s = np.zeros((n, rows, cols), np.uint8)
    lit = rng.random((n, rows, cols)) < 0.4
    s[lit] = SUSTAIN
    before = np.zeros_like(lit)
    before[:, :, 1:] = lit[:, :, :-1]
    s[lit & (~before | (rng.random(lit.shape) < 0.2))] = ONSET
    return s


@pytest.fixture(scope="module")
def fitted():
    return B.fit(random_states(1, n=20))


@pytest.mark.parametrize("mode", [B.teacher_forced, B.free_running])
@pytest.mark.parametrize("name", B.BASELINES)
def test_shapes_and_values(name, mode, fitted):
    states = random_states(2)
    out = mode(name, states, 6, fitted)
    assert out.shape == (4, 5, 10) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, ONSET, SUSTAIN}


@pytest.mark.parametrize("name", CAUSAL)
def test_teacher_forced_column_t_sees_only_columns_before_t(name, fitted):
    states = random_states(3)
    start = 5
    pred = B.teacher_forced(name, states, start, fitted, seed=7)
    rng = np.random.default_rng(4)
    for t in range(start, states.shape[2]):
        changed = states.copy()
        changed[:, :, t:] = random_states(int(rng.integers(1 << 30)))[:, :, t:]
        assert np.array_equal(B.teacher_forced(name, changed, start, fitted, seed=7)[:, :, t - start],
                              pred[:, :, t - start]), t


@pytest.mark.parametrize("name", CAUSAL)
def test_free_running_never_reads_columns_from_start_on(name, fitted):
    states = random_states(5)
    start = 6
    changed = states.copy()
    changed[:, :, start:] = random_states(6)[:, :, start:]
    assert np.array_equal(B.free_running(name, states, start, fitted, seed=3),
                          B.free_running(name, changed, start, fitted, seed=3))


@pytest.mark.parametrize("name", CAUSAL)
def test_free_running_output_never_holds_a_note_that_was_not_struck(name, fitted):
    states = random_states(8)
    start = 6
    out = B.free_running(name, states, start, fitted, seed=1)
    prev = np.concatenate([states[:, :, start - 1:start], out[:, :, :-1]], axis=2)
    assert not np.any((out == SUSTAIN) & (prev == 0))


def test_repeat_last_column_on_a_held_note_misses_only_its_end():
    s = np.zeros((1, 3, 20), np.uint8)
    s[0, 1, 0] = ONSET
    s[0, 1, 1:15] = SUSTAIN  # one note, columns 0..14
    pred = B.teacher_forced("repeat-last-column", s, 5, None)
    c = M.counts(pred, s[:, :, 5:])
    assert (c["frame_tp"], c["frame_fp"], c["frame_fn"]) == (10, 1, 0)  # lit one column past the release
    assert set(np.unique(pred)) == {0, SUSTAIN}
    whole = s.copy()
    whole[0, 1, 15:] = SUSTAIN  # held to the end: nothing missed
    assert M.next_column_f1(B.teacher_forced("repeat-last-column", whole, 5, None), whole[:, :, 5:])[
        "next_column_frame_f1"] == 1.0
    free = B.free_running("repeat-last-column", s, 5, None)
    assert np.all(free[0, 1] == SUSTAIN) and not free[0, [0, 2]].any()


def test_markov_table_of_a_known_sequence():
    s = np.zeros((1, 2, 8), np.uint8)
    s[0, 0] = [0, ONSET, SUSTAIN, SUSTAIN, 0, 0, ONSET, 0]
    f = B.fit(s)
    # silent->onset 2, onset->held 1, held->held 1, held->silent 1, silent->silent 1, onset->silent 1
    np.testing.assert_array_equal(f.transitions[0], [[1, 2, 0], [1, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(f.transitions[1], [[7, 0, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(f.transition_probs[0], [[2 / 6, 3 / 6, 1 / 6], [2 / 5, 1 / 5, 2 / 5], [2 / 5, 1 / 5, 2 / 5]])
    np.testing.assert_allclose(f.transition_probs[1][0], [8 / 10, 1 / 10, 1 / 10])
    assert f.lit_density[0] == 4 / 8 and f.onset_density[0] == 2 / 8 and f.lit_density[1] == 0
    assert f.mean_length[0] == 2.0 and f.mean_length[1] == 2.0  # key 1 has no notes: the overall mean
    assert (f.n_clips, f.n_columns) == (1, 8)


def test_mean_length_counts_restrikes_and_runs_cut_by_the_edge():
    s = np.zeros((1, 1, 10), np.uint8)
    s[0, 0] = [SUSTAIN, SUSTAIN, 0, ONSET, SUSTAIN, ONSET, SUSTAIN, SUSTAIN, 0, 0]
    assert B.fit(s).mean_length[0] == 7 / 3


def test_markov_teacher_forced_holds_what_sounds(fitted):
    s = np.zeros((1, 2, 12), np.uint8)
    s[0, 0, 0] = ONSET
    s[0, 0, 1:] = SUSTAIN
    f = B.fit(np.repeat(s, 4, axis=0))  # held is always followed by held, silent by silent
    pred = B.teacher_forced("markov", s, 4, f)
    assert np.all(pred[0, 0] == SUSTAIN) and not pred[0, 1].any()


def test_fitted_round_trips_through_json(fitted):
    back = B.Fitted.from_dict(json.loads(json.dumps(fitted.to_dict())))
    for k in ("transitions", "lit_density", "onset_density", "mean_length"):
        np.testing.assert_array_equal(getattr(back, k), getattr(fitted, k))
    assert back.transitions.dtype == np.int64 and back.n_clips == fitted.n_clips
    with pytest.raises(ValueError, match="keys"):
        B.Fitted.from_dict({"transitions": []})


@pytest.mark.parametrize("name", ["markov", "random-at-density"])
def test_seeded_reproducibility(name, fitted):
    s = random_states(9)
    a = B.free_running(name, s, 6, fitted, seed=11)
    assert np.array_equal(a, B.free_running(name, s, 6, fitted, seed=11))
    big = random_states(10, n=30, cols=40)
    assert not np.array_equal(B.free_running(name, big, 6, fitted, seed=1), B.free_running(name, big, 6, fitted, seed=2))


def test_random_at_density_matches_the_training_onset_density():
    train = random_states(12, n=40, rows=3, cols=60)
    f = B.fit(train)
    out = B.teacher_forced("random-at-density", np.zeros((400, 3, 61), np.uint8), 1, f, seed=0)
    got = (out == ONSET).mean(axis=(0, 2))
    np.testing.assert_allclose(got, f.onset_density, rtol=0.1)
    # every onset is followed by its key's mean length of held columns unless struck again
    dur = np.maximum(np.rint(f.mean_length), 1).astype(int)
    n, k, c = np.argwhere(out == ONSET)[0]
    run = out[n, k, c:c + dur[k]]
    assert run[0] == ONSET and np.all(run[1:] != 0)


def test_loop_seed_repeats_the_seed():
    s = np.zeros((1, 2, 10), np.uint8)
    s[0, 0, :3] = [ONSET, SUSTAIN, 0]  # seed columns 0..2
    s[0, 1, :3] = [0, ONSET, SUSTAIN]
    free = B.free_running("loop-seed", s, 3, None)
    np.testing.assert_array_equal(free[0, 0], [ONSET, SUSTAIN, 0] * 2 + [ONSET])
    # key 1 was lit in the last seed column, so its looped onset stays an onset (struck again)
    np.testing.assert_array_equal(free[0, 1], [0, ONSET, SUSTAIN] * 2 + [0])
    tf = B.teacher_forced("loop-seed", s, 3, None)  # column t is the real column t - 3 ...
    np.testing.assert_array_equal(tf[0, 0, :3], [ONSET, ONSET, 0])  # ... struck again after the real silent column 3
    s[0, :, 3:6] = s[0, :, :3]  # the clip plays its seed once more: nothing to mend
    np.testing.assert_array_equal(B.teacher_forced("loop-seed", s, 3, None)[0, :, :3], s[0, :, :3])


def test_loop_seed_marks_a_held_pixel_after_silence_as_an_onset():
    s = np.zeros((1, 1, 6), np.uint8)
    s[0, 0, :3] = [SUSTAIN, SUSTAIN, 0]  # the seed begins inside a note
    np.testing.assert_array_equal(B.free_running("loop-seed", s, 3, None)[0, 0], [ONSET, SUSTAIN, 0])


def test_real_vs_real_takes_the_next_clip():
    s = random_states(13, n=3)
    out = B.teacher_forced("real-vs-real", s, 4, None)
    for i in range(3):
        np.testing.assert_array_equal(out[i], s[(i + 1) % 3, :, 4:])
    np.testing.assert_array_equal(B.free_running("real-vs-real", s, 4, None), out)
    with pytest.raises(ValueError, match="at least 2 clips"):
        B.free_running("real-vs-real", s[:1], 4, None)


def test_zero_is_silent_and_errors_say_what_to_do(fitted):
    s = random_states(14)
    assert not B.teacher_forced("zero", s, 3).any() and not B.free_running("zero", s, 3).any()
    with pytest.raises(ValueError, match="unknown baseline"):
        B.teacher_forced("mean", s, 3)
    with pytest.raises(ValueError, match="start must lie"):
        B.free_running("zero", s, 16)
    with pytest.raises(ValueError, match="fit"):
        B.free_running("markov", s, 3)
    with pytest.raises(ValueError, match="keys"):
        B.free_running("markov", s[:, :3], 3, fitted)
    with pytest.raises(ValueError, match="N, T >= 1"):
        B.fit(np.zeros((0, 5, 4), np.uint8))
