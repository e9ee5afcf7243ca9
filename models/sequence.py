"""The sequence models (next-column LSTMs, seq2seq) around their networks: teacher-forced scores, free-running
generation that feeds each decoded column back, calibration, and the training module whose ``best``
checkpoint is picked by the validation onset F1.

Columns are ``(B, T, K)`` float tensors of one channel's pixels / 255 (``K`` keys, 88 in the paper), the way
the models are trained; decoded columns are uint8 state pixels (:func:`models.decoding.decode`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .decoding import Calibration, Sampling, decode, f1, onset_f1_counts, scores_of
from .modules import images_of
from .trainer import SupervisedModule

__all__ = ["CALIBRATION_WINDOWS", "VAL_PIXELS", "real_columns", "teacher_forced_scores", "generate_columns",
           "fit_calibration", "SequenceModule"]

# training windows a calibration reads at most: a next-column model scores a window in one pass, a seq2seq
# model needs an encoder pass per chunk of it
CALIBRATION_WINDOWS = {"next-column": 1024, "seq2seq": 256}
VAL_PIXELS = 10_000_000  # validation pixels kept for the onset F1 (about 570 windows of 88 x 199)


def real_columns(images: torch.Tensor, channel: int) -> torch.Tensor:
    """One channel of a batch of rolls ``(B, C, rows, T)`` as columns ``(B, T, rows)`` in [0, 1]."""
    return images_of(images)[:, channel].transpose(1, 2)


def _pad_left(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` ``(B, t, K)`` with silent columns before it up to ``n`` columns."""
    return F.pad(x, (0, 0, n - x.shape[1], 0)) if x.shape[1] < n else x


def teacher_forced_outputs(config: Any, model: torch.nn.Module, x: torch.Tensor, start: int) -> torch.Tensor:
    """The model's outputs for each column ``t >= start`` of ``x`` ``(B, T, K)`` from the real columns before
    it: ``(B, T - start, K)`` values or ``(B, T - start, K, 3)`` logits.

    Next-column models: one pass over ``x[:, :-1]``. Seq2seq: the window after ``start`` is cut into chunks
    of ``horizon`` columns (of 1 column for a model trained on its own outputs, ``teacher_forcing=False``);
    for each chunk the encoder reads the ``context`` real columns before it (silence-padded on the left when
    the window has fewer) and the decoder, fed the real columns (the last context column, then the chunk's
    own), predicts the chunk: as in training, and as generation does with decoded columns.
    """
    T = x.shape[1]
    if not 1 <= start < T:
        raise ValueError(f"start must be in 1..{T - 1}, got {start}")
    if getattr(config, "arch", "next-column") != "seq2seq":
        return model(x[:, :-1])[:, start - 1:]
    chunk = config.horizon if config.teacher_forcing else 1
    starts = list(range(start, T, chunk))
    outs: list[torch.Tensor | None] = [None] * len(starts)
    full = [i for i, s in enumerate(starts) if s + chunk <= T]
    if full:  # every full-size chunk of every window in one batch
        ctx = torch.cat([_pad_left(x[:, max(0, starts[i] - config.context):starts[i]], config.context)
                         for i in full])  # (n * B, context, K)
        teach = torch.cat([x[:, starts[i]:starts[i] + chunk] for i in full])  # (n * B, chunk, K)
        for i, y in zip(full, model(ctx, teacher=teach).split(x.shape[0])):
            outs[i] = y
    for i, s in enumerate(starts):
        if outs[i] is None:  # the short last chunk
            ctx = _pad_left(x[:, max(0, s - config.context):s], config.context)
            outs[i] = model(ctx, teacher=x[:, s:])
    return torch.cat(outs, dim=1)  # (B, T - start, K[, 3])


def teacher_forced_scores(config: Any, model: torch.nn.Module, x: torch.Tensor, start: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lit, onset)`` scores ``(B, T - start, K)`` of :func:`teacher_forced_outputs`."""
    return scores_of(teacher_forced_outputs(config, model, x, start), config.head)


@torch.no_grad()
def generate_columns(config: Any, model: torch.nn.Module, seed: torch.Tensor, n_steps: int,
                     calibration: Calibration | None, sampling: Sampling | None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_steps`` decoded columns (uint8 ``(B, n_steps, K)``) after the seed columns ``seed`` ``(B, T0, K)``.

    Each new column is decoded (:func:`models.decoding.decode`, the previous column's lit keys from the
    seed or the decoded column before) and fed back as pixels / 255, as in training. A next-column model
    carries its LSTM state along; a seq2seq model encodes the last ``context`` columns (seed and decoded)
    and decodes ``horizon`` columns per call, its decoder fed the last context column and then its own
    decoded columns.
    """
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    prev = seed[:, -1] > 0  # (B, K)

    def step(y: torch.Tensor) -> torch.Tensor:
        nonlocal prev
        lit, onset = scores_of(y, config.head)  # (B, K)
        column = decode(lit, onset, prev, calibration, sampling, generator)  # (B, K) uint8
        prev = column > 0
        out.append(column)
        return column[:, None].float() / 255.0  # (B, 1, K)

    if getattr(config, "arch", "next-column") != "seq2seq":
        y, state = model(seed, return_state=True)
        y = y[:, -1]
        while len(out) < n_steps:
            column = step(y)
            if len(out) < n_steps:  # the last column is not fed back: nothing follows it
                y, state = model(column, state, return_state=True)
                y = y[:, -1]
    else:
        x = seed
        while len(out) < n_steps:
            state = model.encode(_pad_left(x[:, -config.context:], config.context))
            column = x[:, -1:]
            new = []
            for _ in range(min(config.horizon, n_steps - len(out))):
                h, state = model.decoder(column, state)  # (B, 1, hidden)
                column = step(model.head(h)[:, 0])
                new.append(column)
            x = torch.cat([x, *new], dim=1)
    model.train(was_training)
    return torch.stack(out, dim=1) if out else seed[:, :0].to(torch.uint8)


@torch.no_grad()
def fit_calibration(config: Any, model: torch.nn.Module, batches: Any, max_windows: int | None = None
                    ) -> Calibration:
    """A :class:`~models.decoding.Calibration` from the teacher-forced scores of columns ``context..T-1``
    of at most ``max_windows`` windows of ``batches`` (default :data:`CALIBRATION_WINDOWS` of the arch)."""
    cap = max_windows or CALIBRATION_WINDOWS.get(getattr(config, "arch", "next-column"), 256)
    was_training = model.training
    model.eval()
    lits, onsets, states, prevs = [], [], [], []
    seen = 0
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        images = images[: cap - seen]
        x = real_columns(images, config.channel)  # (B, T, K)
        start = min(config.context, x.shape[1] - 1)
        lit, onset = teacher_forced_scores(config, model, x, start)
        pixels = images[:, config.channel].transpose(1, 2).cpu().numpy()  # (B, T, K) uint8
        lits.append(lit.cpu().numpy().reshape(-1, x.shape[2]))
        onsets.append(onset.cpu().numpy().reshape(-1, x.shape[2]))
        states.append(pixels[:, start:].reshape(-1, x.shape[2]))
        prevs.append(pixels[:, start - 1:-1].reshape(-1, x.shape[2]))
        seen += images.shape[0]
        if seen >= cap:
            break
    model.train(was_training)
    if not seen:
        raise ValueError("no training windows to calibrate on")
    return Calibration.fit(np.concatenate(lits), np.concatenate(onsets), np.concatenate(states),
                           np.concatenate(prevs), windows=seen)


class SequenceModule(SupervisedModule):
    """A sequence model's training: its loss on ``pairs(batch)``, and (state channels, ``select="onset_f1"``)
    the checkpoint picked by the teacher-forced onset F1 of the validation windows.

    ``pairs(batch) -> (inputs, target, previous)``: the model's inputs, the target columns and the real
    column before each target column. Each ``val_step`` keeps the scores of the predicted target columns
    (at most :data:`VAL_PIXELS`); ``val_epoch_end`` fits thresholds on those same scores by density
    matching (:meth:`Calibration.fit`), decodes them (a key lit after a real silent column is an onset) and
    returns ``onset_f1`` and ``frame_f1`` from counts summed over the pass, and ``neg_onset_f1`` (lower is
    better), the :attr:`monitor`.
    """

    def __init__(self, model: torch.nn.Module, config: Any, loss_fn: Callable, pairs: Callable) -> None:
        super().__init__(model, loss_fn, lambda b: pairs(b)[:2])
        self.config = config
        self.pairs = pairs
        self._val: list[tuple[np.ndarray, ...]] = []
        self._val_pixels = 0

    @property
    def selects_by_f1(self) -> bool:
        return getattr(self.config, "select", "loss") == "onset_f1" and getattr(self.config, "state", True)

    @property
    def monitor(self) -> str:
        return "neg_onset_f1" if self.selects_by_f1 else "loss"

    def _predict(self, inputs: Any) -> torch.Tensor:
        with self.ctx.autocast():
            pred = self.model(*inputs) if isinstance(inputs, (tuple, list)) else self.model(inputs)
        return pred.float()

    def val_step(self, batch: Any) -> dict[str, float]:
        inputs, target, previous = self.pairs(batch)
        pred = self._predict(inputs).detach()
        loss = float(self.loss_fn(pred, target))
        if self.selects_by_f1 and self._val_pixels < VAL_PIXELS:
            K = target.shape[-1]
            lit, onset = scores_of(pred, self.config.head)
            to_pixels = lambda v: torch.round(v * 255).to(torch.uint8).cpu().numpy().reshape(-1, K)  # noqa: E731
            self._val.append((lit.half().cpu().numpy().reshape(-1, K), onset.half().cpu().numpy().reshape(-1, K),
                              to_pixels(target), to_pixels(previous)))
            self._val_pixels += target.numel()
        return {"loss": loss}

    def val_epoch_end(self) -> dict[str, float]:
        if not self._val:
            return {}
        lit, onset, state, prev = (np.concatenate(a) for a in zip(*self._val))
        self._val, self._val_pixels = [], 0
        calibration = Calibration.fit(lit, onset, state, prev)
        pred = decode(torch.from_numpy(lit.astype(np.float32)), torch.from_numpy(onset.astype(np.float32)),
                      torch.from_numpy(prev != 0), calibration).numpy()
        c = onset_f1_counts(pred, state)
        onset_f1 = f1(c["onset_tp"], c["onset_fp"], c["onset_fn"])
        return {"onset_f1": onset_f1, "frame_f1": f1(c["frame_tp"], c["frame_fp"], c["frame_fn"]),
                "neg_onset_f1": -onset_f1}
