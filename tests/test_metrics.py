"""tasks.kernels.metrics: hand-built clips with known scores, mir_eval cross-checks, properties."""

from __future__ import annotations

import math
import warnings

import mir_eval
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_schemas.encodings import ONSET, SUSTAIN
from tasks.kernels import metrics as M


def roll(notes, rows=8, cols=20) -> np.ndarray:
    """A state (rows, cols) with each (row, start, stop) drawn: ONSET at start, SUSTAIN after."""
    s = np.zeros((rows, cols), np.uint8)
    for r, a, b in notes:
        s[r, a:b] = SUSTAIN
        s[r, a] = ONSET
    return s


# -- next-column F1 ----------------------------------------------------------------------------------


def test_counts_of_a_hand_built_pair():
    true = roll([(0, 2, 6), (3, 0, 4)])[None]  # 8 lit pixels, onsets at (0, 2) and (3, 0)
    pred = roll([(0, 2, 4), (1, 5, 7)])[None]  # 4 lit pixels, 2 of them right; onsets (0, 2) right, (1, 5) wrong
    c = M.counts(pred, true)
    assert c == {"frame_tp": 2, "frame_fp": 2, "frame_fn": 6, "onset_tp": 1, "onset_fp": 1, "onset_fn": 1}
    r = M.next_column_f1(pred, true)
    assert r["next_column_frame_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 6))
    assert r["next_column_frame_precision"] == 0.5 and r["next_column_frame_recall"] == 0.25
    assert r["next_column_onset_f1"] == 0.5
    assert r["frame_tp"] == 2  # the counts come along


def test_held_values_other_than_sustain_count_as_lit():
    true = np.array([[[0, ONSET, 7, 200]]], np.uint8)
    pred = np.array([[[0, ONSET, SUSTAIN, SUSTAIN]]], np.uint8)
    assert M.next_column_f1(pred, true)["next_column_frame_f1"] == 1.0


def test_f1_conventions_when_there_is_nothing():
    z = np.zeros((2, 4, 5), np.uint8)
    r = M.next_column_f1(z, z)
    assert r["next_column_frame_f1"] == 1.0 and r["next_column_onset_precision"] == 1.0
    some = z.copy()
    some[0, 1, 2] = ONSET
    assert M.next_column_f1(z, some)["next_column_onset_f1"] == 0.0  # missed everything
    assert M.next_column_f1(some, z)["next_column_onset_f1"] == 0.0  # claimed what was not there
    assert M.prf(0, 0, 0) == (1.0, 1.0, 1.0) and M.prf(0, 3, 0) == (0.0, 0.0, 0.0)


def test_counts_sum_over_batches_to_the_counts_of_the_whole():
    rng = np.random.default_rng(0)
    vals = np.array([0, 0, 0, ONSET, SUSTAIN], np.uint8)
    pred, true = vals[rng.integers(0, 5, (6, 7, 9))], vals[rng.integers(0, 5, (6, 7, 9))]
    a, b = M.counts(pred[:2], true[:2]), M.counts(pred[2:], true[2:])
    summed = {k: a[k] + b[k] for k in a}
    assert summed == M.counts(pred, true)
    assert M.f1_of(summed) == {k: v for k, v in M.next_column_f1(pred, true).items() if k.startswith("next_")}


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one shape"):
        M.counts(np.zeros((1, 2, 3), np.uint8), np.zeros((1, 2, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, rows, T\)"):
        M.counts(np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.uint8))


# -- notes -------------------------------------------------------------------------------------------


def test_clip_notes_of_a_hand_built_clip():
    s = roll([(2, 5, 9), (0, 5, 6), (1, 0, 3)])
    s[4, 0:4] = SUSTAIN  # a note entering the clip already sounding
    s[4, 6:10] = SUSTAIN
    s[4, 6] = ONSET
    s[4, 8] = ONSET  # re-struck inside the run: two notes 6..8 and 8..10
    got = M.clip_notes(s, resolution_s=0.05, pitch_lo=21)
    want = [(22, 0.0, 0.15), (25, 0.0, 0.2), (21, 0.25, 0.3), (23, 0.25, 0.45), (25, 0.3, 0.4), (25, 0.4, 0.5)]
    np.testing.assert_allclose(got, np.array(want, np.float64))
    only = M.clip_notes(s, onsets_only=True)
    assert only.shape[0] == 5 and not np.any((only[:, 0] == 25) & (only[:, 1] == 0.0))


@st.composite
def note_lists(draw, rows=6, cols=30):
    """Notes with no two of one row touching (so each is its own run), as (row, start, stop)."""
    notes = []
    for r in range(rows):
        c = draw(st.integers(0, 4))
        while c < cols - 1 and draw(st.booleans()):
            length = draw(st.integers(1, 6))
            stop = min(c + length, cols)
            notes.append((r, c, stop))
            c = stop + draw(st.integers(0, 3))  # 0: the next note re-strikes right at the end of this one
    return notes


@settings(max_examples=60, deadline=None)
@given(note_lists())
def test_clip_notes_returns_the_rendered_notes(notes):
    got = M.clip_notes(roll(notes, rows=6, cols=30), resolution_s=0.1, pitch_lo=40)
    want = sorted(((r + 40, a * 0.1, b * 0.1) for r, a, b in notes), key=lambda n: (n[1], n[0]))
    np.testing.assert_allclose(got.reshape(-1, 3), np.array(want, np.float64).reshape(-1, 3))


# -- note F1 -----------------------------------------------------------------------------------------


def test_note_f1_two_of_three_right():
    ref = roll([(0, 0, 4), (3, 5, 8), (5, 10, 12)])
    est = roll([(0, 1, 3), (3, 5, 6), (6, 10, 12)])  # first one column late (50 ms: a hit), last on a wrong key
    r = M.note_f1(ref[None], est[None])
    assert (r["note_tp"], r["note_n_ref"], r["note_n_est"]) == (2, 3, 3)
    assert r["note_precision"] == pytest.approx(2 / 3) and r["note_recall"] == pytest.approx(2 / 3)
    assert r["note_f1"] == pytest.approx(2 / 3)
    fewer = roll([(0, 0, 2), (3, 5, 6)])
    r = M.note_f1(ref[None], fewer[None])
    assert (r["note_precision"], r["note_recall"]) == (1.0, pytest.approx(2 / 3))
    assert r["note_f1"] == pytest.approx(0.8)


def test_note_f1_is_micro_averaged_over_clips():
    ref = np.stack([roll([(0, 0, 2)]), roll([(1, 0, 2), (2, 4, 6), (3, 8, 9)])])
    est = np.stack([roll([(0, 0, 2)]), roll([(1, 0, 2), (4, 4, 6), (5, 8, 9)])])
    r = M.note_f1(ref, est)
    assert (r["note_tp"], r["note_n_ref"], r["note_n_est"]) == (2, 4, 4)
    assert r["note_f1"] == 0.5  # the mean of the per-clip F1s would be (1 + 1/3) / 2


@pytest.mark.parametrize("delta_ms,hit", [(49, True), (50, True), (51, False)])
def test_onset_tolerance_edge(delta_ms, hit):
    ref = np.array([[60.0, 1.0, 1.5]])
    est = np.array([[60.0, 1.0 + delta_ms / 1000, 1.4]])
    assert M.note_match_counts(ref, est, onset_tolerance=0.05) == (int(hit), 1, 1)
    # the same through clips at 1 ms columns
    r = M.note_f1(roll([(0, 100, 150)], rows=1, cols=300)[None], roll([(0, 100 + delta_ms, 180)], rows=1, cols=300)[None],
                  onset_tolerance=0.05, resolution_s=0.001)
    assert r["note_tp"] == int(hit)


def test_on_the_default_grid_one_column_off_is_a_hit_two_are_not():
    ref = roll([(0, 5, 8)])[None]
    assert M.note_f1(ref, roll([(0, 6, 8)])[None])["note_tp"] == 1
    assert M.note_f1(ref, roll([(0, 7, 8)])[None])["note_tp"] == 0


def test_note_f1_of_empty_clips_does_not_reach_mir_eval():
    z = np.zeros((3, 8, 20), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = M.note_f1(z, z)
        assert r["note_f1"] == 1.0 and r["note_n_ref"] == 0
        est = z.copy()
        est[1] = roll([(2, 3, 5)])
        r = M.note_f1(z, est)
        assert (r["note_f1"], r["note_precision"], r["note_n_est"]) == (0.0, 0.0, 1)


def test_notes_entering_the_clip_do_not_count_as_onsets():
    ref = roll([(0, 0, 5)])
    ref[0, 0] = SUSTAIN  # the note was struck before the clip
    est = roll([(0, 0, 5)])  # struck at column 0
    r = M.note_f1(ref[None], est[None])
    assert (r["note_tp"], r["note_n_ref"], r["note_n_est"]) == (0, 0, 1)


@settings(max_examples=25, deadline=None)
@given(note_lists(rows=5, cols=24), note_lists(rows=5, cols=24))
def test_note_f1_agrees_with_mir_eval_on_single_clips(ref_notes, est_notes):
    ref, est = roll(ref_notes, 5, 24), roll(est_notes, 5, 24)
    ours = M.note_f1(ref[None], est[None])
    a, b = M.clip_notes(ref, onsets_only=True), M.clip_notes(est, onsets_only=True)
    if a.shape[0] == 0 or b.shape[0] == 0:
        assert ours["note_tp"] == 0
        return
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        a[:, 1:], mir_eval.util.midi_to_hz(a[:, 0]), b[:, 1:], mir_eval.util.midi_to_hz(b[:, 0]),
        onset_tolerance=0.05, offset_ratio=None)
    assert (ours["note_precision"], ours["note_recall"], ours["note_f1"]) == pytest.approx((p, r, f))


# -- features ----------------------------------------------------------------------------------------


def test_features_of_a_hand_built_clip():
    notes = np.array([[60, 0.0, 1.0], [64, 0.5, 1.5], [67, 2.0, 2.5], [72, 2.0, 2.25]])
    f = M.clip_features(notes, duration_s=3.0)
    assert set(f) == set(M.FEATURES)
    np.testing.assert_allclose(f["pitch_class_histogram"], np.eye(12)[[0, 4, 7, 0]].sum(0) / 4)
    assert f["pitch_range"] == 12 and f["note_count"] == 4
    assert f["polyphony"] == pytest.approx((1 + 1 + 0.5 + 0.25) / 2.0)  # note time / time covered (0..1.5, 2..2.5)
    assert f["inter_onset_interval"] == pytest.approx(1.0)  # distinct onsets 0, 0.5, 2.0
    assert f["note_length"] == pytest.approx(2.75 / 4)


def test_features_of_tiny_clips():
    empty = M.clip_features(np.zeros((0, 3)), 5.0)
    assert empty["note_count"] == 0 and empty["polyphony"] == 0 and empty["note_length"] == 0
    assert not empty["pitch_class_histogram"].any()
    one = M.clip_features(np.array([[61, 1.0, 1.2]]), 5.0)
    assert (one["pitch_range"], one["inter_onset_interval"], one["polyphony"]) == (0.0, 0.0, 1.0)
    assert one["pitch_class_histogram"][1] == 1.0


@settings(max_examples=40, deadline=None)
@given(note_lists(rows=6, cols=30))
def test_polyphony_from_notes_equals_lit_keys_per_busy_column(notes):
    s = roll(notes, 6, 30)
    f = M.clip_features(M.clip_notes(s), 1.5)
    assert f["polyphony"] == pytest.approx(M.mean_polyphony(s[None]))


def test_note_density_and_mean_polyphony():
    clips = np.stack([roll([(0, 0, 4), (1, 2, 4)]), roll([])])  # 2 notes in 2 clips of 20 columns (1 s)
    notes = [M.clip_notes(c) for c in clips]
    assert M.note_density(notes, 1.0) == 1.0
    assert M.mean_polyphony(clips) == pytest.approx(6 / 4)  # columns 0..3: 1, 1, 2, 2 lit keys
    assert M.mean_polyphony(np.zeros((2, 3, 4), np.uint8)) == 0.0


# -- distribution distances --------------------------------------------------------------------------


def random_clips(seed, n, density=0.1, rows=12, cols=40):
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        notes = []
        for r in range(rows):
            c = int(rng.integers(0, 5))
            while c < cols:
                if rng.random() < density * 5:
                    stop = min(c + int(rng.integers(1, 8)), cols)
                    notes.append((r, c, stop))
                    c = stop + 1
                else:
                    c += 5
        clips.append(roll(notes, rows, cols))
    return np.stack(clips)


def table(clips):
    return M.feature_table([M.clip_notes(c) for c in clips], clips.shape[2] * 0.05)


def test_a_set_against_itself_is_at_distance_zero():
    feats = table(random_clips(1, 30))
    for d in (M.distribution_distances(feats, feats),
              M.distribution_distances(feats, {k: v.copy() for k, v in feats.items()}, same=True)):
        for f in M.FEATURES:
            assert d[f]["overlap"] == 1.0 and d[f]["kl"] == 0.0, f
            assert d[f]["intra_ref_mean"] == d[f]["intra_gen_mean"] == d[f]["inter_mean"]


@pytest.mark.parametrize("seed", [0, 1])
def test_binned_density_matches_scipy_gaussian_kde(seed):
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.gamma(2.0, 1.5, 3000), rng.normal(12.0, 0.5, 500)])
    kde = gaussian_kde(x)
    h = M._bandwidth(x)
    assert h == pytest.approx(float(np.sqrt(kde.covariance[0, 0])))
    lo, size = x.min() - 4 * h, 1024
    step = (x.max() + 4 * h - lo) / (size - 1)
    grid = lo + step * np.arange(size)
    want = kde(grid)
    want /= want.sum()
    np.testing.assert_allclose(M._density(x, lo, step, size, h), want, atol=1e-3 * want.max())


def test_clearly_different_sets_are_apart():
    sparse, dense = table(random_clips(2, 40, density=0.03)), table(random_clips(3, 40, density=0.4))
    d = M.distribution_distances(dense, sparse)
    for f in ("note_count", "polyphony", "inter_onset_interval"):
        assert d[f]["overlap"] < 0.5 and d[f]["kl"] > 0.5, (f, d[f])
        assert d[f]["inter_mean"] > d[f]["intra_ref_mean"]
    for f in M.FEATURES:
        assert 0.0 <= d[f]["overlap"] <= 1.0 and d[f]["kl"] >= 0.0


def test_similar_sets_overlap_more_than_different_ones():
    ref = table(random_clips(4, 40, density=0.1))
    near = M.distribution_distances(table(random_clips(5, 40, density=0.1)), ref)
    far = M.distribution_distances(table(random_clips(6, 40, density=0.4)), ref)
    assert near["note_count"]["overlap"] > far["note_count"]["overlap"]
    assert near["note_count"]["kl"] < far["note_count"]["kl"]


def test_swapping_the_sets_swaps_intra_means_and_keeps_inter():
    a, b = table(random_clips(7, 15)), table(random_clips(8, 12, density=0.2))
    ab, ba = M.distribution_distances(a, b), M.distribution_distances(b, a)
    for f in M.FEATURES:
        assert ab[f]["inter_mean"] == pytest.approx(ba[f]["inter_mean"])
        assert ab[f]["intra_gen_mean"] == pytest.approx(ba[f]["intra_ref_mean"])


def test_degenerate_and_tiny_sets_do_not_crash():
    empty = table(np.zeros((6, 4, 10), np.uint8))  # every feature constant 0
    d = M.distribution_distances(empty, empty)
    assert all(d[f]["overlap"] == 1.0 and d[f]["kl"] == 0.0 for f in M.FEATURES)
    other = table(np.zeros((4, 4, 10), np.uint8))  # also constant 0 distances, fewer of them
    d = M.distribution_distances(other, empty)
    assert all(d[f]["overlap"] == pytest.approx(1.0) and d[f]["kl"] == pytest.approx(0.0, abs=1e-9)
               for f in M.FEATURES)
    some = table(random_clips(9, 5))
    d = M.distribution_distances(some, empty)  # intra-set all zero, inter-set spread
    assert all(0.0 <= d[f]["overlap"] < 1.0 and math.isfinite(d[f]["kl"]) for f in ("note_count", "polyphony"))
    one = table(random_clips(10, 1))
    d = M.distribution_distances(some, one)  # one reference clip: no intra-set pairs
    assert math.isnan(d["note_count"]["overlap"]) and math.isnan(d["note_count"]["intra_ref_mean"])
    assert math.isfinite(d["note_count"]["inter_mean"])


def test_subsample_is_seeded_and_capped():
    a, b = table(random_clips(11, 30)), table(random_clips(12, 30, density=0.2))
    assert M.distribution_distances(a, b, max_clips=10, seed=3) == M.distribution_distances(a, b, max_clips=10, seed=3)
    capped = M.distribution_distances(a, b, max_clips=10, seed=3)
    full = M.distribution_distances(a, b, max_clips=30)
    assert capped["note_count"]["inter_mean"] != full["note_count"]["inter_mean"]
    with pytest.raises(ValueError, match="same=False"):
        M.distribution_distances(a, table(random_clips(13, 3)), same=True)


def test_list_of_clip_feature_dicts_is_accepted():
    clips = random_clips(14, 6)
    rows = [M.clip_features(M.clip_notes(c), 2.0) for c in clips]
    assert M.distribution_distances(rows, table(clips), same=False) == M.distribution_distances(
        table(clips), table(clips), same=False)


# -- summary -----------------------------------------------------------------------------------------


def test_summarise_returns_plain_floats_and_known_ratios():
    ref = random_clips(15, 12)
    s = M.summarise(ref[::-1], ref, resolution_s=0.05, pitch_lo=21, true_continuations=ref)
    assert all(type(v) is float for v in s.values())
    for f in M.FEATURES:
        assert f"{f}_overlap" in s and f"{f}_kl" in s
    assert s["note_density_ratio"] == pytest.approx(1.0) and s["mean_polyphony_ratio"] == pytest.approx(1.0)
    assert s["note_f1"] < 1.0 and s["n_clips"] == 12.0
    same = M.summarise(ref, M.reference_set(ref), true_continuations=ref)
    assert same["note_f1"] == 1.0
    assert "note_f1" not in M.summarise(ref, ref)
    with pytest.raises(ValueError, match="cut the reference"):
        M.summarise(ref[:, :, :20], ref)
