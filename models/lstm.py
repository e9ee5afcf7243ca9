"""The paper's sequence models on piano-roll columns, and its proposed 3-class head.

A roll image ``(C, rows, T)`` becomes a sequence ``(T, rows)`` of columns (one channel, divided by 255;
88 rows for the piano's keys). Two models:

- :class:`NextColumnLSTM`: LSTM(88 -> 128) + Dense(128 -> 88), predicting column ``t + 1`` from columns
  ``<= t`` (teacher forcing: inputs ``x[:, :-1]``, targets ``x[:, 1:]``); 122,968 PyTorch parameters.
- :class:`Seq2SeqLSTM`: an encoder LSTM over the context whose final ``(h, c)`` starts a decoder LSTM that
  runs ``horizon`` steps, fed the real previous columns (``teacher``, in training) or its own outputs (the
  paper); Dense(128 -> 128) -> ReLU -> Dense(128 -> 88); 251,096 PyTorch parameters.

PyTorch's ``nn.LSTM`` has two bias vectors per gate set (``b_ih`` and ``b_hh``) where Keras has one, so each
128-unit LSTM counts ``4 * 128 = 512`` more parameters than the paper's Keras figures (122,456 and 250,072).

``head="regression"`` outputs sigmoid values in [0, 1], ``(B, T, 88)``. ``head="classes3"`` outputs logits
``(B, T, 88, 3)`` over silent / onset / sustained (the paper's proposal), trained with cross-entropy; when a
classes3 model feeds its own output back, it feeds the argmax decoded to values (0, 125/255, 1).

88 is the paper's key count; every width here follows ``LstmConfig.features`` (the dataset's rows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from storage_schemas.encodings import ONSET, SUSTAIN

from .configs import config_from_dict

__all__ = [
    "LSTM_HEADS",
    "LSTM_ARCHS",
    "SEQ2SEQ_TARGETS",
    "SELECT_BY",
    "LstmConfig",
    "NextColumnLSTM",
    "Seq2SeqLSTM",
    "build_lstm",
    "roll_to_classes",
    "classes_to_roll",
    "values_to_classes",
    "classes_to_values",
]

LSTM_HEADS = ("regression", "classes3")
LSTM_ARCHS = ("next-column", "seq2seq")
N_CLASSES = 3  # silent, onset, sustained
SEQ2SEQ_TARGETS = ("all", "first")
SELECT_BY = ("onset_f1", "loss")


def check_sequence_fields(config: Any) -> None:
    """Check (and normalise) the fields every next-column model config shares with :class:`LstmConfig`:
    ``class_weights``, ``pos_weight``, ``select`` and ``head``; raises ``ValueError``."""
    if config.class_weights is not None:
        object.__setattr__(config, "class_weights", tuple(float(w) for w in config.class_weights))
        if len(config.class_weights) != N_CLASSES or min(config.class_weights) <= 0:
            raise ValueError(f"class_weights must be {N_CLASSES} positive numbers (silent, onset, held)")
    if config.pos_weight is not None and not config.pos_weight > 0:
        raise ValueError(f"pos_weight must be > 0 (or null for the balanced weight), got {config.pos_weight}")
    if config.select not in SELECT_BY:
        raise ValueError(f"select must be one of {SELECT_BY}, got {config.select!r}")
    if config.head not in LSTM_HEADS:
        raise ValueError(f"head must be one of {LSTM_HEADS}, got {config.head!r}")


class SequenceConfig:
    """What every next-column model config (:class:`LstmConfig`, ``TransformerConfig``) shares: the output
    width of its head, and its plain-dict form. Subclasses are frozen dataclasses with ``features`` and
    ``head``; their ``__post_init__`` calls :func:`check_sequence_fields`."""

    @property
    def outputs(self) -> int:
        """Width of the last linear layer: 88 values or 88 x 3 logits."""
        return self.features * (N_CLASSES if self.head == "classes3" else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return config_from_dict(cls, data)


@dataclass(frozen=True)
class LstmConfig(SequenceConfig):
    """Shape of a sequence model.

    Parameters
    ----------
    hidden : int
        LSTM units (128).
    features : int
        Values per column: the dataset's rows (88 keys in the paper).
    head : str
        ``"regression"`` (sigmoid values) or ``"classes3"`` (3-class logits per key).
    bidirectional : bool
        Seq2seq only: a bidirectional encoder. Its final ``h`` (and ``c``) of both directions are
        concatenated and *projected* by a linear layer (2 * hidden -> hidden) to initialise the decoder.
    arch : str
        ``"next-column"`` (:class:`NextColumnLSTM`) or ``"seq2seq"`` (:class:`Seq2SeqLSTM`).
    context : int
        Input columns (100); the seq2seq encoder reads this many, generation seeds with this many.
    horizon : int
        Seq2seq only: columns emitted per call (10 or 100 in the paper).
    channel : int
        Which image channel the model reads (0: enc2/enc3 state, enc1 length).
    state : bool
        The channel holds roll states (0 / ONSET / SUSTAIN: enc2, enc3); set from the encoding by the
        registry. False (enc1 lengths): no calibration, no onset F1, the loss picks the checkpoint.
    pos_weight : float or None
        Regression heads: weight of lit target pixels in the loss (:func:`models.losses.weighted_mse`;
        for lstm-custom it multiplies the paper's ``alpha``). None: ``sqrt(dark / lit)`` of each training
        batch (:func:`models.losses.balanced_pos_weight`); 1.0: the paper's unweighted loss.
    class_weights : (float, float, float) or None
        classes3 heads: cross-entropy weights of silent / onset / held. None: ``1 / sqrt(frequency)`` of
        each class in each training batch (:func:`models.losses.balanced_class_weights`); (1, 1, 1): the
        paper's plain cross-entropy.
    targets : str
        Seq2seq training pairs: ``"all"`` (every ``horizon``-column chunk after the context of a window, the
        last one ending at the window's end) or ``"first"`` (the paper: only the chunk right after it).
    teacher_forcing : bool
        Seq2seq: the decoder is fed the real previous column in training (as generation feeds it the
        decoded one); False: its own outputs (the paper).
    select : str
        Which validation metric picks ``best.ckpt`` and drives early stopping: ``"onset_f1"`` (teacher-forced
        onset F1 of the validation windows, state channels only) or ``"loss"`` (the paper).
    """

    hidden: int = 128
    features: int = 88
    head: str = "regression"
    bidirectional: bool = False
    arch: str = "next-column"
    context: int = 100
    horizon: int = 10
    channel: int = 0
    state: bool = True
    pos_weight: float | None = None
    class_weights: tuple[float, float, float] | None = None
    targets: str = "all"
    teacher_forcing: bool = True
    select: str = "onset_f1"

    def __post_init__(self) -> None:
        check_sequence_fields(self)
        if self.targets not in SEQ2SEQ_TARGETS:
            raise ValueError(f"targets must be one of {SEQ2SEQ_TARGETS}, got {self.targets!r}")
        if self.arch not in LSTM_ARCHS:
            raise ValueError(f"arch must be one of {LSTM_ARCHS}, got {self.arch!r}")
        if self.bidirectional and self.arch != "seq2seq":
            raise ValueError("bidirectional is for the seq2seq encoder only (a next-column model may not see ahead)")
        if min(self.hidden, self.features, self.context, self.horizon) < 1:
            raise ValueError("hidden, features, context and horizon must be >= 1")


# -- conversions -------------------------------------------------------------------------------------


def roll_to_classes(state: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """State-channel pixels to classes: 0 -> 0 (silent), ONSET (125) -> 1, SUSTAIN (255) and any other
    non-zero value -> 2 (sustained). Returns the type it was given (int64)."""
    if isinstance(state, torch.Tensor):
        classes = torch.where(state == 0, 0, torch.where(state == ONSET, 1, 2))
        return classes.long()
    state = np.asarray(state)
    return np.where(state == 0, 0, np.where(state == ONSET, 1, 2)).astype(np.int64)


def classes_to_roll(classes: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Classes back to uint8 state pixels: 0 -> 0, 1 -> ONSET (125), 2 -> SUSTAIN (255)."""
    if isinstance(classes, torch.Tensor):
        lut = torch.tensor([0, ONSET, SUSTAIN], dtype=torch.uint8, device=classes.device)
        return lut[classes.long()]
    return np.array([0, ONSET, SUSTAIN], dtype=np.uint8)[np.asarray(classes)]


def values_to_classes(values: torch.Tensor) -> torch.Tensor:
    """Scaled state values (pixels / 255) to classes, as :func:`roll_to_classes` on the pixels."""
    return roll_to_classes(torch.round(values * 255).to(torch.int64))


def classes_to_values(classes: torch.Tensor) -> torch.Tensor:
    """Classes to scaled values (0, 125/255, 1): what a classes3 model feeds back as its next input."""
    return classes_to_roll(classes).float() / 255.0


# -- models ------------------------------------------------------------------------------------------


class _Head(nn.Module):
    """Maps LSTM outputs to the configured head: values in [0, 1] or 3-class logits."""

    def __init__(self, config: LstmConfig, layers: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.layers = layers

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.layers(h)  # (B, T, 88) or (B, T, 264)
        if self.config.head == "classes3":
            return y.view(*y.shape[:-1], self.config.features, N_CLASSES)  # (B, T, 88, 3) logits
        return torch.sigmoid(y)  # (B, T, 88)

    def feedback(self, y: torch.Tensor) -> torch.Tensor:
        """An output turned into the next input column: values as they are, logits via argmax."""
        if self.config.head == "classes3":
            return classes_to_values(y.argmax(-1))  # (B, T, 88)
        return y


class NextColumnLSTM(nn.Module):
    """LSTM(88 -> 128) + Dense(128 -> 88) [+ sigmoid]: the prediction at step t is column t + 1."""

    def __init__(self, config: LstmConfig = LstmConfig()) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.features, config.hidden, batch_first=True)
        self.head = _Head(config, nn.Linear(config.hidden, config.outputs))

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None, return_state: bool = False
    ):
        """``(B, T, 88) -> (B, T, 88)`` values or ``(B, T, 88, 3)`` logits; with ``return_state`` also the
        final ``(h, c)``, each ``(1, B, hidden)``."""
        h, state = self.lstm(x, state)  # (B, T, hidden)
        y = self.head(h)
        return (y, state) if return_state else y

    @torch.no_grad()
    def generate(self, seed_columns: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Roll forward ``n_steps`` columns after ``seed_columns`` ``(B, T0, 88)`` (or ``(T0, 88)``), feeding
        back its own predictions. Returns only the new columns, ``(B, n_steps, 88)`` values in [0, 1]."""
        was_training = self.training
        self.eval()
        squeeze = seed_columns.dim() == 2
        x = seed_columns[None] if squeeze else seed_columns  # (B, T0, 88)
        y, state = self(x, return_state=True)
        column = self.head.feedback(y[:, -1:])  # (B, 1, 88)
        out = []
        for _ in range(n_steps):
            out.append(column)
            y, state = self(column, state, return_state=True)
            column = self.head.feedback(y)
        self.train(was_training)
        generated = torch.cat(out, dim=1) if out else x[:, :0]  # (B, n_steps, 88)
        return generated[0] if squeeze else generated


class Seq2SeqLSTM(nn.Module):
    """Encoder LSTM over the context; its final state starts a decoder LSTM run on its own outputs.

    ``(B, 100, 88) -> (B, horizon, 88)`` values or ``(B, horizon, 88, 3)`` logits. The decoder's first input
    is the last context column; each later input is its previous output (decoded argmax for classes3).
    """

    def __init__(self, config: LstmConfig = LstmConfig(arch="seq2seq")) -> None:
        super().__init__()
        self.config = config
        H = config.hidden
        self.encoder = nn.LSTM(config.features, H, batch_first=True, bidirectional=config.bidirectional)
        if config.bidirectional:
            self.bridge_h = nn.Linear(2 * H, H)
            self.bridge_c = nn.Linear(2 * H, H)
        self.decoder = nn.LSTM(config.features, H, batch_first=True)
        self.head = _Head(config, nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, config.outputs)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's initial ``(h, c)``, each ``(1, B, hidden)``."""
        _, (h, c) = self.encoder(x)  # (D, B, hidden), D = 2 if bidirectional
        if self.config.bidirectional:
            h = self.bridge_h(torch.cat([h[0], h[1]], dim=-1))[None]  # (1, B, hidden)
            c = self.bridge_c(torch.cat([c[0], c[1]], dim=-1))[None]
        return h, c

    def forward(self, x: torch.Tensor, horizon: int | None = None, teacher: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``teacher`` ``(B, horizon, 88)``: the real columns to predict; given, the decoder reads the last
        context column and then ``teacher[:, :-1]`` in one pass (teacher forcing), else its own outputs."""
        state = self.encode(x)  # context (B, T, 88)
        if teacher is not None:
            inputs = torch.cat([x[:, -1:], teacher[:, :-1]], dim=1)  # (B, horizon, 88)
            h, _ = self.decoder(inputs, state)  # (B, horizon, hidden)
            return self.head(h)
        horizon = self.config.horizon if horizon is None else horizon
        column = x[:, -1:]  # (B, 1, 88) start token
        outputs = []
        for _ in range(horizon):
            h, state = self.decoder(column, state)  # (B, 1, hidden)
            y = self.head(h)  # (B, 1, 88) or (B, 1, 88, 3)
            outputs.append(y)
            column = self.head.feedback(y)
        return torch.cat(outputs, dim=1)  # (B, horizon, 88) or (B, horizon, 88, 3)

    @torch.no_grad()
    def generate(self, seed_columns: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Roll forward ``n_steps`` columns after ``seed_columns`` ``(B, T0, 88)`` (or ``(T0, 88)``): each call
        reads the last ``context`` columns and emits ``horizon`` more. Returns ``(B, n_steps, 88)`` values."""
        was_training = self.training
        self.eval()
        squeeze = seed_columns.dim() == 2
        x = seed_columns[None] if squeeze else seed_columns  # (B, T0, 88)
        new: list[torch.Tensor] = []
        made = 0
        while made < n_steps:
            block = self.head.feedback(self(x[:, -self.config.context :]))  # (B, horizon, 88)
            new.append(block)
            x = torch.cat([x, block], dim=1)
            made += block.shape[1]
        self.train(was_training)
        generated = torch.cat(new, dim=1)[:, :n_steps] if new else x[:, :0]
        return generated[0] if squeeze else generated


def build_lstm(config: LstmConfig) -> NextColumnLSTM | Seq2SeqLSTM:
    """The model ``config.arch`` names."""
    return Seq2SeqLSTM(config) if config.arch == "seq2seq" else NextColumnLSTM(config)
