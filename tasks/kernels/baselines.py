"""Baselines for continuing piano rolls: what a model has to beat (and the ceiling it can reach).

Pure NumPy. States are the state channel of roll windows, uint8 ``(N, rows, T)`` (0 silent, ``ONSET``
the first column of a note, any other non-zero value held; see :mod:`tasks.kernels.metrics`). Every
baseline predicts columns ``start .. T-1`` and returns ``(N, rows, T - start)`` uint8 with values in
``{0, ONSET, SUSTAIN}`` only, in two modes:

- :func:`teacher_forced`: column ``t`` predicted from the real columns ``< t`` (each column on its own);
- :func:`free_running`: from the seed (the real columns ``< start``) alone, each later column from the
  baseline's own output.

Baselines (:data:`BASELINES`)
-----------------------------
``zero``
    All silent.
``repeat-last-column``
    Teacher-forced: column ``t - 1`` with every lit pixel held (``ONSET`` becomes ``SUSTAIN``), silent
    kept. Free-running: the last seed column held for ever.
``loop-seed``
    The seed looped with period ``start``. Teacher-forced: column ``t`` is the real column
    ``t - start`` (a real column before ``t``: the seed for ``t < 2 start``); free-running: seed column
    ``(t - start) mod start``. For ``T <= 2 start`` (200 columns, seed 100) both take the same columns;
    they differ only in the onsets marked by the validity rule below (teacher-forced mends against the
    real previous column, free-running against its own).
``markov``
    A per-key Markov chain over silent / onset / held, fitted on training states (:func:`fit`, add-one
    smoothing). Teacher-forced: per key the most likely next state given the real previous state
    (argmax). Under sparse rolls silent is by far the likeliest successor of silent, so this almost
    never predicts an onset: it is "hold what sounds, until the chain says stop". Free-running: each
    column sampled from the chain given the previous output column (seeded).
``random-at-density``
    The floor: per key, an onset in each column with the key's training onset density (seeded
    Bernoulli), the note held for the key's mean training note length (rounded, at least one column); a
    new onset re-strikes. It sees nothing of the clip: both modes give the same output.
``real-vs-real``
    The same columns of another real clip: clip ``i`` takes clip ``(i + 1) mod N``. The ceiling for the
    distribution measures; not a predictor (it reads columns ``>= t`` of another clip), so it is left out
    of causality claims. Needs at least 2 clips.

Validity: after a baseline predicts a column, a pixel lit as held right after a silent pixel (the real
previous column in teacher-forced mode, its own previous output or the last seed column in free-running
mode) is made an ``ONSET``: a note that was not sounding starts there. Other non-zero input values are
read as held (``SUSTAIN``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from storage_schemas.encodings import ONSET, SUSTAIN

__all__ = ["BASELINES", "Fitted", "fit", "free_running", "state_classes", "teacher_forced"]

BASELINES = ("zero", "repeat-last-column", "loop-seed", "markov", "random-at-density", "real-vs-real")
SILENT, ON, HELD = 0, 1, 2  # state classes
_VALUE = np.array([0, ONSET, SUSTAIN], np.uint8)  # class -> pixel value
_CHUNK = 256  # clips per chunk when fitting (bounds the temporary arrays)
_CLASS = np.full(256, HELD, np.uint8)  # pixel value -> class
_CLASS[0], _CLASS[ONSET] = SILENT, ON


def state_classes(states) -> np.ndarray:
    """Pixel classes of states: 0 silent, 1 onset (``ONSET``), 2 held (any other non-zero). uint8."""
    s = np.asarray(states)
    if s.dtype != np.uint8:
        s = np.where(s == 0, 0, np.where(s == ONSET, ONSET, SUSTAIN)).astype(np.uint8)
    return _CLASS[s]


# -- fitting -----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Fitted:
    """Statistics of training states the baselines use, per key (row).

    Attributes
    ----------
    transitions : np.ndarray
        ``(rows, 3, 3)`` int64 raw counts of (previous class, next class) over consecutive columns of
        each clip (classes: silent, onset, held); :attr:`transition_probs` adds one to every cell.
    lit_density, onset_density : np.ndarray
        ``(rows,)`` float64: fraction of training pixels lit / equal to ``ONSET``.
    mean_length : np.ndarray
        ``(rows,)`` float64: mean note length in columns (lit pixels / notes, a note being a run or an
        ``ONSET`` inside one; notes cut by window edges count as they appear); keys without notes get
        the mean over all notes, or 1.0 when there are none.
    n_clips, n_columns : int
        Training clips and columns per clip.
    """

    transitions: np.ndarray
    lit_density: np.ndarray
    onset_density: np.ndarray
    mean_length: np.ndarray
    n_clips: int
    n_columns: int

    @property
    def rows(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def transition_probs(self) -> np.ndarray:
        """``(rows, 3, 3)`` P(next class | previous class) per key, add-one smoothed."""
        t = self.transitions.astype(np.float64) + 1.0
        return t / t.sum(axis=2, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists and numbers)."""
        return {"transitions": self.transitions.tolist(), "lit_density": self.lit_density.tolist(),
                "onset_density": self.onset_density.tolist(), "mean_length": self.mean_length.tolist(),
                "n_clips": int(self.n_clips), "n_columns": int(self.n_columns)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fitted:
        """Inverse of :meth:`to_dict`."""
        known = {"transitions", "lit_density", "onset_density", "mean_length", "n_clips", "n_columns"}
        if set(data) != known:
            raise ValueError(f"a Fitted dict needs exactly the keys {sorted(known)}, got {sorted(data)}")
        tr = np.asarray(data["transitions"], np.int64)
        rows = tr.shape[0]
        vecs = {k: np.asarray(data[k], np.float64) for k in ("lit_density", "onset_density", "mean_length")}
        if tr.shape != (rows, 3, 3) or any(v.shape != (rows,) for v in vecs.values()):
            raise ValueError("a Fitted dict needs transitions (rows, 3, 3) and per-key lists of length rows")
        return cls(transitions=tr, **vecs, n_clips=int(data["n_clips"]), n_columns=int(data["n_columns"]))


def fit(train_states) -> Fitted:
    """Fit the baselines' statistics on training states ``(N, rows, T)``.

    Raises
    ------
    ValueError
        On anything but a non-empty batch of clips of at least one column.
    """
    states = np.asarray(train_states)
    if states.ndim != 3 or states.shape[0] == 0 or states.shape[2] == 0:
        raise ValueError(f"fit needs training states (N, rows, T) with N, T >= 1, got shape {states.shape}")
    n, rows, cols = states.shape
    trans = np.zeros(rows * 9, np.int64)
    lit = np.zeros(rows, np.int64)
    onsets = np.zeros(rows, np.int64)
    notes = np.zeros(rows, np.int64)
    row_base = (np.arange(rows, dtype=np.int64) * 9)[None, :, None]
    for a in range(0, n, _CHUNK):
        cls = state_classes(states[a:a + _CHUNK])  # (n', rows, T)
        if cols > 1:
            idx = row_base + cls[:, :, :-1].astype(np.int64) * 3 + cls[:, :, 1:]
            trans += np.bincount(idx.ravel(), minlength=rows * 9)
        on = cls != SILENT
        lit += on.sum(axis=(0, 2))
        onsets += (cls == ON).sum(axis=(0, 2))
        first = on.copy()
        first[:, :, 1:] &= (cls[:, :, :-1] == SILENT) | (cls[:, :, 1:] == ON)  # run starts and re-strikes
        notes += first.sum(axis=(0, 2))
    pixels = float(n * cols)
    overall = lit.sum() / notes.sum() if notes.sum() else 1.0
    mean_length = np.where(notes > 0, lit / np.maximum(notes, 1), overall).astype(np.float64)
    return Fitted(transitions=trans.reshape(rows, 3, 3), lit_density=lit / pixels, onset_density=onsets / pixels,
                  mean_length=mean_length, n_clips=int(n), n_columns=int(cols))


# -- predicting --------------------------------------------------------------------------------------


def _check(name: str, states, start: int, fitted: Fitted | None) -> np.ndarray:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    states = np.asarray(states)
    if states.ndim != 3:
        raise ValueError(f"states must be a batch of clips (N, rows, T), got shape {states.shape}")
    start = int(start)
    if not 1 <= start < states.shape[2]:
        raise ValueError(f"start must lie in 1..T-1 (T = {states.shape[2]}), got {start}")
    if name in ("markov", "random-at-density"):
        if fitted is None:
            raise ValueError(f"baseline {name!r} needs the statistics of fit(train_states)")
        if fitted.rows != states.shape[1]:
            raise ValueError(f"fitted on {fitted.rows} keys but the states have {states.shape[1]} rows")
    if name == "real-vs-real" and states.shape[0] < 2:
        raise ValueError("baseline 'real-vs-real' needs at least 2 clips (clip i takes clip i+1)")
    return states


def _values(cls: np.ndarray) -> np.ndarray:
    return _VALUE[cls]


def _mend(pred: np.ndarray, prev_lit: np.ndarray) -> np.ndarray:
    """Held pixels right after a silent one become onsets. ``pred`` (N, rows, L) values, ``prev_lit``
    (N, rows, L): was the pixel before each one lit. In place; returns ``pred``."""
    pred[(pred == SUSTAIN) & ~prev_lit] = ONSET
    return pred


def _mend_running(pred: np.ndarray, seed_last: np.ndarray) -> np.ndarray:
    """:func:`_mend` of a free-running output against its own previous column (the seed's last first)."""
    prev = np.concatenate([seed_last[:, :, None] != 0, pred[:, :, :-1] != 0], axis=2)
    return _mend(pred, prev)


def _held(states: np.ndarray) -> np.ndarray:
    return np.where(states != 0, SUSTAIN, 0).astype(np.uint8)


def _random_at_density(shape: tuple[int, int, int], fitted: Fitted, seed: int) -> np.ndarray:
    n, rows, length = shape
    rng = np.random.default_rng(seed)
    onset = rng.random(shape) < fitted.onset_density[None, :, None]  # (N, rows, L)
    dur = np.maximum(np.rint(fitted.mean_length), 1).astype(np.int64)  # (rows,)
    cs = np.concatenate([np.zeros((n, rows, 1), np.int64), np.cumsum(onset, axis=2, dtype=np.int64)], axis=2)
    t = np.arange(length)
    back = np.maximum(t[None, :] + 1 - dur[:, None], 0)  # (rows, L): first column whose onset reaches t
    lit = (cs[:, :, 1:] - np.take_along_axis(cs, np.broadcast_to(back, (n, rows, length)), axis=2)) > 0
    return np.where(onset, ONSET, np.where(lit, SUSTAIN, 0)).astype(np.uint8)


def _other_clip(states: np.ndarray, start: int) -> np.ndarray:
    return _values(state_classes(np.roll(states, -1, axis=0)[:, :, start:]))


def teacher_forced(name: str, states, start: int, fitted: Fitted | None = None, seed: int = 0) -> np.ndarray:
    """Predict columns ``start .. T-1``, each from the real columns before it.

    Parameters
    ----------
    name : str
        One of :data:`BASELINES` (see the module docstring for each).
    states : array_like
        ``(N, rows, T)`` real states.
    start : int
        First predicted column, ``1 <= start < T``.
    fitted : Fitted, optional
        :func:`fit` of training states; needed by ``markov`` and ``random-at-density``.
    seed : int
        Of ``random-at-density``.

    Returns
    -------
    np.ndarray
        ``(N, rows, T - start)`` uint8 in ``{0, ONSET, SUSTAIN}``; column ``j`` predicts column
        ``start + j``.
    """
    states = _check(name, states, start, fitted)
    n, rows, cols = states.shape
    if name == "zero":
        return np.zeros((n, rows, cols - start), np.uint8)
    if name == "repeat-last-column":
        return _held(states[:, :, start - 1:cols - 1])
    if name == "random-at-density":
        return _random_at_density((n, rows, cols - start), fitted, seed)
    if name == "real-vs-real":
        return _other_clip(states, start)
    prev_lit = states[:, :, start - 1:cols - 1] != 0  # (N, rows, L): the real column before each target
    if name == "loop-seed":
        return _mend(_values(state_classes(states[:, :, :cols - start])), prev_lit)
    # markov: argmax of the next class given the real previous class, per key
    best = np.argmax(fitted.transition_probs, axis=2).astype(np.uint8)  # (rows, 3)
    prev = state_classes(states[:, :, start - 1:cols - 1])
    pred = best[np.arange(rows)[None, :, None], prev]  # (N, rows, L)
    return _mend(_values(pred), prev_lit)


def free_running(name: str, states, start: int, fitted: Fitted | None = None, seed: int = 0) -> np.ndarray:
    """Continue each clip's seed (columns ``< start``) to ``T`` columns, from the seed alone.

    Parameters
    ----------
    name, states, start, fitted, seed
        As :func:`teacher_forced`; ``seed`` seeds ``markov``'s sampling and ``random-at-density``.
        Only columns ``< start`` of ``states`` are read, except by ``real-vs-real`` (another clip's
        true continuation, by design).

    Returns
    -------
    np.ndarray
        ``(N, rows, T - start)`` uint8 in ``{0, ONSET, SUSTAIN}``.
    """
    states = _check(name, states, start, fitted)
    n, rows, cols = states.shape
    length = cols - start
    if name == "real-vs-real":
        return _other_clip(states, start)
    if name == "random-at-density":
        return _random_at_density((n, rows, length), fitted, seed)
    seed_cols = states[:, :, :start]  # everything below reads only these
    last = seed_cols[:, :, start - 1]  # (N, rows)
    if name == "zero":
        return np.zeros((n, rows, length), np.uint8)
    if name == "repeat-last-column":
        return np.repeat(_held(last)[:, :, None], length, axis=2)
    if name == "loop-seed":
        idx = np.arange(length) % start
        return _mend_running(_values(state_classes(seed_cols[:, :, idx])), last)
    # markov: sample each column from the chain given the previous one (the last seed column first)
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(fitted.transition_probs, axis=2)  # (rows, 3, 3)
    cdf[:, :, -1] = 1.0
    keys = np.arange(rows)[None, :]
    cur = state_classes(last)  # (N, rows)
    out = np.empty((n, rows, length), np.uint8)
    for j in range(length):
        u = rng.random((n, rows))
        nxt = (u[:, :, None] >= cdf[keys, cur]).sum(axis=2).astype(np.uint8)  # (N, rows)
        nxt[(nxt == HELD) & (cur == SILENT)] = ON  # a note that was not sounding starts
        out[:, :, j] = nxt
        cur = nxt
    return _values(out)
