"""Measuring generated piano rolls: next-column F1, note-level F1, and distribution distances.

Everything here is pure (NumPy, SciPy, mir_eval): no torch, Prefect or storage. The evaluator feeds it
the state channel of roll windows and turns the returned plain floats into report rows.

Clips
-----
A clip is the state channel of a roll window, a uint8 array ``(rows, T)``: row 0 is MIDI pitch
``pitch_lo`` (21), a column lasts ``resolution_s`` seconds (0.05). ``0`` is silent, ``ONSET`` (125) the
first column of a note, any other non-zero value a held note. A run of lit pixels in a row is one note,
and an ``ONSET`` pixel inside a run starts a new one (:func:`tasks.kernels.rolls.decode_runs_kernel`).
A batch of clips is ``(N, rows, T)``.

Conventions
-----------
Precision, recall and F1 of counts ``tp, fp, fn`` (:func:`prf`): ``F1 = 2 tp / (2 tp + fp + fn)``,
``P = tp / (tp + fp)``, ``R = tp / (tp + fn)``. A ratio whose denominator is 0 is 1.0 when there was
nothing at all (``tp + fp + fn == 0``: nothing to find and nothing claimed) and 0.0 otherwise.
Micro-averaging sums the counts first (over keys x columns x clips, or over notes of all clips), then
takes the ratios; :func:`counts` and :func:`f1_of` let a caller sum counts over batches.

Note F1 (:func:`note_f1`) counts only notes that begin with an ``ONSET`` pixel: a run that enters a clip
already sounding (from before its first column) is not an onset in that clip, in the reference or in the
estimate. Notes match when their pitches are equal (mir_eval's 50-cent tolerance, so one semitone never
matches) and their onsets lie within ``onset_tolerance`` seconds (inclusive, as mir_eval); offsets are
ignored. On the 0.05 s grid with the default tolerance of 0.05 s, an onset one column early or late is
still a hit, two columns off is a miss.

Distribution distances (:func:`distribution_distances`) follow Yang & Lerch 2018, "On the evaluation of
generative models in music" (Neural Computing and Applications): per clip features (:data:`FEATURES`),
per feature the pairwise distances within each set (intra-set) and between the sets (inter-set), a
Gaussian kernel density of each, and the overlap area and the KL divergence between the intra-set
density of the reference and the inter-set density. Identical distance samples give overlap 1.0 and KL
0.0 exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from storage_schemas.encodings import ONSET
from tasks.kernels.rolls import decode_runs_kernel

__all__ = [
    "FEATURES",
    "ReferenceSet",
    "clip_features",
    "clip_notes",
    "counts",
    "distribution_distances",
    "f1_of",
    "feature_table",
    "mean_polyphony",
    "next_column_f1",
    "note_density",
    "note_f1",
    "note_match_counts",
    "prf",
    "reference_set",
    "summarise",
]

FEATURES = (
    "pitch_class_histogram",
    "pitch_range",
    "note_count",
    "polyphony",
    "inter_onset_interval",
    "note_length",
)
MAX_CLIPS = 200  # clips per set for the pairwise distances (a seeded subsample beyond it)
KDE_GRID = 512  # points of the shared grid the densities are integrated on, at least ...
KDE_GRID_MAX = 8192  # ... and at most (between them: a step of a quarter of the narrower bandwidth)
KL_FLOOR = 1e-10  # added to the inter-set density (then renormalised) so KL stays finite


# -- validation --------------------------------------------------------------------------------------


def _states(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a batch of clips (N, rows, T), got shape {arr.shape}")
    return arr


def _same_shape(pred: np.ndarray, true: np.ndarray) -> None:
    if pred.shape != true.shape:
        raise ValueError(f"pred and true must have one shape, got {pred.shape} and {true.shape}")


# -- counts and F1 -----------------------------------------------------------------------------------


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of counts (see the module docstring for the 0/0 convention).

    Returns
    -------
    (precision, recall, f1) : tuple of float
    """
    empty = 1.0 if tp + fp + fn == 0 else 0.0
    p = tp / (tp + fp) if tp + fp else empty
    r = tp / (tp + fn) if tp + fn else empty
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return float(p), float(r), float(f)


def counts(pred, true) -> dict:
    """Pixel counts of a predicted against a true batch of states, for summing over batches.

    Parameters
    ----------
    pred, true : array_like
        ``(N, rows, T)`` states of one shape.

    Returns
    -------
    dict
        ``frame_tp, frame_fp, frame_fn`` (lit = non-zero) and ``onset_tp, onset_fp, onset_fn``
        (``== ONSET``), plain ints.
    """
    pred, true = _states(pred, "pred"), _states(true, "true")
    _same_shape(pred, true)
    out = {}
    for kind, p, t in (("frame", pred != 0, true != 0), ("onset", pred == ONSET, true == ONSET)):
        tp = int(np.count_nonzero(p & t))
        out[f"{kind}_tp"] = tp
        out[f"{kind}_fp"] = int(np.count_nonzero(p)) - tp
        out[f"{kind}_fn"] = int(np.count_nonzero(t)) - tp
    return out


def f1_of(c: Mapping[str, int]) -> dict:
    """F1, precision and recall of :func:`counts` (or of counts summed over batches).

    Returns
    -------
    dict
        ``next_column_frame_f1``, ``next_column_frame_precision``, ``next_column_frame_recall`` and the
        same three for ``onset``, plain floats.
    """
    out = {}
    for kind in ("frame", "onset"):
        p, r, f = prf(c[f"{kind}_tp"], c[f"{kind}_fp"], c[f"{kind}_fn"])
        out[f"next_column_{kind}_f1"] = f
        out[f"next_column_{kind}_precision"] = p
        out[f"next_column_{kind}_recall"] = r
    return out


def next_column_f1(pred, true) -> dict:
    """Frame and onset F1 of predicted columns, micro-averaged over keys x columns x clips.

    Parameters
    ----------
    pred, true : array_like
        ``(N, rows, T)`` uint8 states: the predicted columns and the true ones.

    Returns
    -------
    dict
        :func:`f1_of` of :func:`counts` (``next_column_frame_f1``, ``next_column_onset_f1``, their
        precision and recall) plus the counts themselves.
    """
    c = counts(pred, true)
    return {**f1_of(c), **c}


# -- notes -------------------------------------------------------------------------------------------


def _runs(state) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    state = np.asarray(state)
    if state.ndim != 2:
        raise ValueError(f"a clip must be a state (rows, T), got shape {state.shape}")
    if state.dtype != np.uint8:
        state = state.astype(np.uint8)
    return decode_runs_kernel(np.ascontiguousarray(state))


def clip_notes(state, resolution_s: float = 0.05, pitch_lo: int = 21, *, onsets_only: bool = False) -> np.ndarray:
    """The notes of one clip, ordered by onset (then pitch).

    Parameters
    ----------
    state : array_like
        ``(rows, T)`` state of one clip.
    resolution_s : float
        Seconds per column.
    pitch_lo : int
        MIDI pitch of row 0.
    onsets_only : bool
        Keep only notes that begin with an ``ONSET`` pixel (drop runs entering the clip already sounding).

    Returns
    -------
    np.ndarray
        ``(K, 3)`` float64: MIDI pitch, onset and offset in seconds from the clip's first column.
    """
    row, start, stop, has_onset = _runs(state)
    if onsets_only:
        row, start, stop = row[has_onset], start[has_onset], stop[has_onset]
    order = np.lexsort((row, start))
    notes = np.empty((row.shape[0], 3), np.float64)
    notes[:, 0] = row[order] + pitch_lo
    notes[:, 1] = start[order] * resolution_s
    notes[:, 2] = stop[order] * resolution_s
    return notes


def _batch_notes(states, resolution_s: float, pitch_lo: int, onsets_only: bool = False) -> list[np.ndarray]:
    states = _states(states, "clips")
    return [clip_notes(s, resolution_s, pitch_lo, onsets_only=onsets_only) for s in states]


def note_match_counts(ref_notes, est_notes, onset_tolerance: float = 0.05) -> tuple[int, int, int]:
    """Onset-only note matches of one clip, with mir_eval's matching.

    Parameters
    ----------
    ref_notes, est_notes : array_like
        ``(K, 3)`` notes (MIDI pitch, onset_s, offset_s), as :func:`clip_notes` gives.
    onset_tolerance : float
        Seconds; onsets this close or closer match (pitches must be equal).

    Returns
    -------
    (matched, n_ref, n_est) : tuple of int
    """
    import mir_eval

    ref = np.asarray(ref_notes, np.float64).reshape(-1, 3)
    est = np.asarray(est_notes, np.float64).reshape(-1, 3)
    n_ref, n_est = ref.shape[0], est.shape[0]
    if n_ref == 0 or n_est == 0:  # mir_eval warns on empty input; nothing can match anyway
        return 0, n_ref, n_est
    matching = mir_eval.transcription.match_notes(
        ref[:, 1:3], mir_eval.util.midi_to_hz(ref[:, 0]), est[:, 1:3], mir_eval.util.midi_to_hz(est[:, 0]),
        onset_tolerance=onset_tolerance, offset_ratio=None)
    return len(matching), n_ref, n_est


def note_f1(ref_clips, est_clips, onset_tolerance: float = 0.05, resolution_s: float = 0.05,
            pitch_lo: int = 21) -> dict:
    """Note-level onset F1 of estimated clips against reference clips, micro-averaged over clips.

    Matching is mir_eval's (``mir_eval.transcription.match_notes`` with ``offset_ratio=None``: equal
    pitch, onsets within ``onset_tolerance``, offsets ignored), clip ``i`` of one against clip ``i`` of
    the other; matches and note counts are summed over clips before the ratios are taken. Only notes
    beginning with an ``ONSET`` pixel count (see the module docstring).

    Parameters
    ----------
    ref_clips, est_clips : array_like
        ``(N, rows, T)`` states of one shape.
    onset_tolerance : float
        Seconds (inclusive).
    resolution_s, pitch_lo : float, int
        Seconds per column, MIDI pitch of row 0.

    Returns
    -------
    dict
        ``note_f1``, ``note_precision``, ``note_recall`` (floats) and ``note_tp``, ``note_n_ref``,
        ``note_n_est`` (ints).
    """
    ref_clips, est_clips = _states(ref_clips, "ref_clips"), _states(est_clips, "est_clips")
    if ref_clips.shape != est_clips.shape:
        raise ValueError(f"ref_clips and est_clips must have one shape, got {ref_clips.shape} and {est_clips.shape}")
    tp = n_ref = n_est = 0
    for r, e in zip(ref_clips, est_clips):
        m, a, b = note_match_counts(clip_notes(r, resolution_s, pitch_lo, onsets_only=True),
                                    clip_notes(e, resolution_s, pitch_lo, onsets_only=True), onset_tolerance)
        tp, n_ref, n_est = tp + m, n_ref + a, n_est + b
    return _note_scores(tp, n_ref, n_est)


def _note_scores(tp: int, n_ref: int, n_est: int) -> dict:
    p, r, f = prf(tp, n_est - tp, n_ref - tp)
    return {"note_f1": f, "note_precision": p, "note_recall": r, "note_tp": int(tp), "note_n_ref": int(n_ref),
            "note_n_est": int(n_est)}


# -- features (Yang & Lerch 2018) --------------------------------------------------------------------


def clip_features(notes, duration_s: float) -> dict:
    """The six per-clip features of :data:`FEATURES`.

    Parameters
    ----------
    notes : array_like
        ``(K, 3)`` notes of one clip (MIDI pitch, onset_s, offset_s), every run a note (notes entering
        the clip already sounding included).
    duration_s : float
        Length of the clip in seconds (kept for the signature's sake: every feature here is defined by
        the notes; :func:`note_density` divides by it).

    Returns
    -------
    dict
        ``pitch_class_histogram``: (12,) float64, note counts per pitch class (C = 0) over the notes,
        summing to 1 (all zeros for an empty clip). ``pitch_range``: highest minus lowest pitch (0 with
        fewer than 2 notes). ``note_count``. ``polyphony``: mean number of sounding notes over the time in
        which at least one sounds (total note time / time covered by the union of the notes; on the
        column grid this is the mean of lit keys over columns with a lit key), 0 for an empty clip.
        ``inter_onset_interval``: mean seconds between successive distinct onset times (0 with fewer
        than 2). ``note_length``: mean seconds (0 for an empty clip).
    """
    del duration_s
    notes = np.asarray(notes, np.float64).reshape(-1, 3)
    k = notes.shape[0]
    pitch, onset, offset = notes[:, 0], notes[:, 1], notes[:, 2]
    hist = np.bincount(pitch.astype(np.int64) % 12, minlength=12).astype(np.float64)
    if k:
        hist /= k
    lengths = offset - onset
    uniq = np.unique(onset)
    return {
        "pitch_class_histogram": hist,
        "pitch_range": float(pitch.max() - pitch.min()) if k >= 2 else 0.0,
        "note_count": float(k),
        "polyphony": float(lengths.sum() / _union_length(onset, offset)) if k else 0.0,
        "inter_onset_interval": float(np.diff(uniq).mean()) if uniq.shape[0] >= 2 else 0.0,
        "note_length": float(lengths.mean()) if k else 0.0,
    }


def _union_length(onset: np.ndarray, offset: np.ndarray) -> float:
    """Length of the union of intervals ``[onset, offset)``."""
    order = np.argsort(onset, kind="stable")
    a, b = onset[order], offset[order]
    reach = np.maximum.accumulate(b)
    gap = np.maximum(a[1:] - reach[:-1], 0.0)  # uncovered stretch before each next interval
    return float(reach[-1] - a[0] - gap.sum())


def feature_table(clips_notes: Sequence, duration_s: float) -> dict[str, np.ndarray]:
    """:func:`clip_features` of many clips, stacked: ``(N, 12)`` for the histogram, ``(N,)`` otherwise."""
    rows = [clip_features(n, duration_s) for n in clips_notes]
    out = {}
    for f in FEATURES:
        if rows:
            out[f] = np.stack([np.asarray(r[f], np.float64) for r in rows])
        else:
            out[f] = np.zeros((0, 12) if f == "pitch_class_histogram" else (0,), np.float64)
    return out


def _as_table(feats) -> dict[str, np.ndarray]:
    if isinstance(feats, Mapping):
        missing = [f for f in FEATURES if f not in feats]
        if missing:
            raise ValueError(f"features lack {missing}; make them with feature_table or clip_features")
        return {f: np.asarray(feats[f], np.float64) for f in FEATURES}
    feats = list(feats)
    return {f: np.stack([np.asarray(r[f], np.float64) for r in feats]) if feats else
            np.zeros((0, 12) if f == "pitch_class_histogram" else (0,)) for f in FEATURES}


def note_density(clips_notes: Sequence, duration_s: float) -> float:
    """Notes per second over all clips: total notes / (clips x ``duration_s``); 0.0 for no clips."""
    clips_notes = list(clips_notes)
    if not clips_notes or duration_s <= 0:
        return 0.0
    return float(sum(np.asarray(n).reshape(-1, 3).shape[0] for n in clips_notes) / (len(clips_notes) * duration_s))


def mean_polyphony(states) -> float:
    """Mean number of lit keys over the columns (of all clips) in which at least one key is lit; 0.0
    when none is."""
    states = _states(states, "states")
    lit = np.count_nonzero(states, axis=1)  # (N, T)
    busy = np.count_nonzero(lit)
    return float(lit.sum() / busy) if busy else 0.0


# -- distances between sets --------------------------------------------------------------------------


def _subsample(n: int, max_clips: int, rng: np.random.Generator) -> np.ndarray:
    if n <= max_clips:
        return np.arange(n)
    return np.sort(rng.choice(n, max_clips, replace=False))


def _pairwise(a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """Distances within ``a`` (pairs i < j) or between ``a`` and ``b`` (all pairs): Euclidean between
    rows of 2-d arrays, absolute difference between scalars."""
    from scipy.spatial.distance import cdist, pdist

    a2 = a.reshape(a.shape[0], -1)
    if b is None:
        return pdist(a2) if a2.shape[0] >= 2 else np.zeros(0)
    b2 = b.reshape(b.shape[0], -1)
    if a2.shape[0] == 0 or b2.shape[0] == 0:
        return np.zeros(0)
    return cdist(a2, b2).ravel()


def _bandwidth(x: np.ndarray) -> float | None:
    """Scott's-rule bandwidth, as ``scipy.stats.gaussian_kde`` picks it in one dimension (``n ** -0.2`` times
    the standard deviation with ``ddof=1``), or None where it cannot work (fewer than 2 values, or one
    value repeated)."""
    if x.shape[0] < 2 or np.ptp(x) == 0:
        return None
    return float(x.shape[0] ** -0.2 * np.std(x, ddof=1))


def _density(x: np.ndarray, lo: float, step: float, size: int, h: float) -> np.ndarray:
    """A Gaussian KDE of ``x`` with bandwidth ``h`` on the grid ``lo + step * arange(size)``, normalised to
    sum 1 there.

    Binned: each value is split between its two neighbouring grid points (linear binning), then the
    counts are convolved with the Gaussian sampled on the grid. With the grid step at most a quarter of
    the bandwidth this is within about 1e-3 of ``scipy.stats.gaussian_kde(x)(grid)`` (a test checks it)
    at a cost independent of ``len(x)`` beyond the binning; a bandwidth narrower than the step is
    resolved to the grid.
    """
    from scipy.signal import fftconvolve

    pos = (x - lo) / step
    i = np.clip(np.floor(pos).astype(np.int64), 0, size - 2)
    frac = np.clip(pos - i, 0.0, 1.0)
    w = np.bincount(i, 1.0 - frac, size) + np.bincount(i + 1, frac, size)
    half = int(np.ceil(6.0 * h / step))
    ker = np.exp(-0.5 * (np.arange(-half, half + 1) * step / h) ** 2)
    p = np.maximum(fftconvolve(w, ker, mode="same") if half > 8 else np.convolve(w, ker, mode="same"), 0.0)
    total = p.sum()
    return p / total if total > 0 else np.full(size, 1.0 / size)


def _overlap_kl(p_sample: np.ndarray, q_sample: np.ndarray) -> tuple[float, float]:
    """Overlap area and KL(p || q) of the Gaussian KDEs of two samples of distances, on a shared grid."""
    if p_sample.shape[0] == 0 or q_sample.shape[0] == 0:
        return float("nan"), float("nan")
    if np.array_equal(p_sample, q_sample):
        return 1.0, 0.0
    lo = min(p_sample.min(), q_sample.min())
    hi = max(p_sample.max(), q_sample.max())
    h_fallback = 1e-2 * max(hi - lo, abs(hi), abs(lo), 1e-9)  # for a sample of one repeated value
    hp, hq = (_bandwidth(x) or h_fallback for x in (p_sample, q_sample))
    pad = 4.0 * max(hp, hq)
    span = hi - lo + 2 * pad
    size = int(np.clip(np.ceil(span / (min(hp, hq) / 4.0)) + 1, KDE_GRID, KDE_GRID_MAX))
    step = span / (size - 1)
    p = _density(p_sample, lo - pad, step, size, hp)
    q = _density(q_sample, lo - pad, step, size, hq)
    overlap = float(np.minimum(p, q).sum())
    q = (q + KL_FLOOR) / (1.0 + KL_FLOOR * size)
    nz = p > 0
    kl = float(np.sum(p[nz] * np.log(p[nz] / q[nz])))
    return min(max(overlap, 0.0), 1.0), max(kl, 0.0)


def distribution_distances(gen_feats, ref_feats, *, same: bool | None = None, max_clips: int = MAX_CLIPS,
                           seed: int = 0) -> dict:
    """Yang & Lerch's distances between a generated and a reference set of clips, per feature.

    Per feature: the pairwise distances within the reference set (intra-set, pairs i < j), within the
    generated set, and between the sets (inter-set, every pair); Euclidean between pitch-class
    histograms, absolute difference between scalars. A Gaussian KDE of the reference's intra-set
    distances and one of the inter-set distances (``scipy.stats.gaussian_kde``'s Gaussian kernel and
    Scott's-rule bandwidth, computed binned for speed; a sample of one repeated value gets a single
    narrow Gaussian, 1 % of the distances' scale wide) are evaluated on a shared grid spanning both
    samples plus four bandwidths (:data:`KDE_GRID` to :data:`KDE_GRID_MAX` points, a step of a
    quarter of the narrower bandwidth where that fits), and normalised there. Then
    ``overlap`` = sum of their minimum (1: identical densities, 0: disjoint) and ``kl`` =
    KL(intra_ref || inter) (0: identical), with the inter-set density floored at :data:`KL_FLOOR` per
    point so it stays finite. Identical distance samples give exactly 1 and 0.

    Only a seeded subsample of at most ``max_clips`` clips of each set takes part (200 by default:
    19,900 intra-set and 40,000 inter-set distances per feature), so the cost does not grow with the
    sets.

    Parameters
    ----------
    gen_feats, ref_feats
        :func:`feature_table` output (a dict of arrays) or a list of :func:`clip_features` dicts.
    same : bool, optional
        The two are one set (``gen_feats is ref_feats`` by default): the inter-set distances then leave
        out each clip against itself, which makes them the intra-set distances counted twice (the same
        density), so overlap is 1 and KL 0.
    max_clips : int
        Clips per set at most.
    seed : int
        Seed of the subsample.

    Returns
    -------
    dict
        ``{feature: {"overlap", "kl", "intra_ref_mean", "intra_gen_mean", "inter_mean"}}``, plain
        floats; NaN where a set has fewer than 2 clips (no intra-set pairs) or is empty.
    """
    if same is None:
        same = gen_feats is ref_feats
    gen, ref = _as_table(gen_feats), _as_table(ref_feats)
    n_gen, n_ref = gen[FEATURES[0]].shape[0], ref[FEATURES[0]].shape[0]
    if same and n_gen != n_ref:
        raise ValueError(f"same=True needs one set, got {n_gen} and {n_ref} clips; pass same=False")
    if max_clips < 2:
        raise ValueError(f"max_clips must be at least 2, got {max_clips}")
    rng = np.random.default_rng(seed)
    i_ref = _subsample(n_ref, max_clips, rng)
    i_gen = i_ref if same else _subsample(n_gen, max_clips, rng)
    out = {}
    for f in FEATURES:
        r, g = ref[f][i_ref], gen[f][i_gen]
        intra_ref = _pairwise(r, None)
        intra_gen = intra_ref if same else _pairwise(g, None)
        inter = intra_ref if same else _pairwise(g, r)
        overlap, kl = _overlap_kl(intra_ref, inter)
        if intra_ref.shape[0] == 0:
            overlap, kl = float("nan"), float("nan")
        out[f] = {"overlap": overlap, "kl": kl, "intra_ref_mean": _mean(intra_ref),
                  "intra_gen_mean": _mean(intra_gen), "inter_mean": _mean(inter)}
    return out


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.shape[0] else float("nan")


# -- one model's summary -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReferenceSet:
    """What :func:`summarise` needs of the reference clips, computed once for many models."""

    features: dict  # feature_table of the reference clips
    note_density: float
    mean_polyphony: float
    n_clips: int
    columns: int


def reference_set(ref_states, resolution_s: float = 0.05, pitch_lo: int = 21) -> ReferenceSet:
    """Features, note density and mean polyphony of the reference clips ``(N, rows, T)``."""
    ref_states = _states(ref_states, "ref_states")
    duration = ref_states.shape[2] * resolution_s
    notes = _batch_notes(ref_states, resolution_s, pitch_lo)
    return ReferenceSet(features=feature_table(notes, duration), note_density=note_density(notes, duration),
                        mean_polyphony=mean_polyphony(ref_states), n_clips=int(ref_states.shape[0]),
                        columns=int(ref_states.shape[2]))


def summarise(gen_states, ref_states, resolution_s: float = 0.05, pitch_lo: int = 21, true_continuations=None,
              *, onset_tolerance: float = 0.05, max_clips: int = MAX_CLIPS, seed: int = 0) -> dict:
    """All free-running measures of one model's generated clips, as a flat dict of plain floats.

    Parameters
    ----------
    gen_states : array_like
        ``(N, rows, T)`` generated clips (the continuations only, not the seeds).
    ref_states : array_like or ReferenceSet
        The reference clips ``(M, rows, T)`` (e.g. the test windows' true continuations: the same
        length as the generated clips, since ``note_count`` depends on it), or their
        :func:`reference_set`.
    resolution_s, pitch_lo : float, int
        Seconds per column, MIDI pitch of row 0.
    true_continuations : array_like, optional
        ``(N, rows, T)``: clip ``i``'s true continuation; when given, note F1 against it is added.
    onset_tolerance : float
        Of the note F1, seconds.
    max_clips, seed
        Of :func:`distribution_distances`.

    Returns
    -------
    dict
        ``n_clips``; ``note_f1``, ``note_precision``, ``note_recall``, ``note_tp``, ``note_n_ref``,
        ``note_n_est`` (when ``true_continuations`` is given); ``{feature}_{overlap|kl|intra_ref_mean|
        intra_gen_mean|inter_mean}`` for each of :data:`FEATURES`; ``note_density`` and
        ``mean_polyphony`` of the generated clips, ``ref_note_density``, ``ref_mean_polyphony`` and the
        ratios ``note_density_ratio``, ``mean_polyphony_ratio`` (generated / reference; NaN when the
        reference's is 0).
    """
    gen_states = _states(gen_states, "gen_states")
    ref = ref_states if isinstance(ref_states, ReferenceSet) else reference_set(ref_states, resolution_s, pitch_lo)
    if ref.columns != gen_states.shape[2]:
        raise ValueError(f"reference clips have {ref.columns} columns, generated ones {gen_states.shape[2]}: "
                         "cut the reference to the generated clips' length (note_count depends on it)")
    duration = gen_states.shape[2] * resolution_s
    notes = _batch_notes(gen_states, resolution_s, pitch_lo)
    out: dict = {"n_clips": float(gen_states.shape[0])}
    if true_continuations is not None:
        out.update({k: float(v) for k, v in note_f1(true_continuations, gen_states, onset_tolerance, resolution_s,
                                                    pitch_lo).items()})
    dist = distribution_distances(feature_table(notes, duration), ref.features, same=False, max_clips=max_clips,
                                  seed=seed)
    for f, d in dist.items():
        for k, v in d.items():
            out[f"{f}_{k}"] = float(v)
    nd, mp = note_density(notes, duration), mean_polyphony(gen_states)
    out.update({"note_density": nd, "mean_polyphony": mp, "ref_note_density": ref.note_density,
                "ref_mean_polyphony": ref.mean_polyphony,
                "note_density_ratio": nd / ref.note_density if ref.note_density else float("nan"),
                "mean_polyphony_ratio": mp / ref.mean_polyphony if ref.mean_polyphony else float("nan")})
    return out
