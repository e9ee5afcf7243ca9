"""A small causal Transformer over piano-roll columns: the modern reference beside the paper's LSTMs.

Each column of a roll is one position: ``(B, T, 88)`` columns (one channel, pixels / 255) are projected to
``d_model``, a learned position embedding is added, and ``layers`` pre-norm encoder layers (masked
multi-head self-attention + a GELU MLP of ``4 * d_model``, ``nn.TransformerEncoderLayer``) run under a causal
mask, so the output at position ``t`` sees columns ``<= t`` only; a final LayerNorm and the LSTMs' head
(:class:`models.lstm._Head`: sigmoid values or 3-class logits per key) predict column ``t + 1``.

It keeps the contract of :class:`models.lstm.NextColumnLSTM`, so the same trainer, the same windows (teacher
forcing: inputs ``x[:, :-1]``, targets ``x[:, 1:]``), the same losses and the same generation code apply:

- ``forward(x, state=None, return_state=False)``: outputs at every position of ``x``; ``state`` is the
  columns fed before (``(B, S, 88)``), so generation may call it one column at a time. Each call recomputes
  attention over ``state`` + ``x``, keeping the last ``max_len`` columns: while the sequence fits in
  ``max_len`` this equals one forward pass over it; past that the oldest columns are dropped (a sliding
  window) and the positions restart at the window's first column;
- ``head`` (a ``_Head``) with ``head.feedback``; ``generate(seed_columns, n_steps)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .lstm import NextColumnLSTM, SequenceConfig, _Head, check_sequence_fields

__all__ = ["TransformerConfig", "NextColumnTransformer"]


@dataclass(frozen=True)
class TransformerConfig(SequenceConfig):
    """Shape of the next-column Transformer.

    Parameters
    ----------
    d_model : int
        Width of every position's vector (128).
    layers : int
        Encoder layers (3).
    heads : int
        Attention heads per layer; must divide ``d_model`` (4).
    dropout : float
        Dropout in attention and MLP (0.1; off in eval mode).
    max_len : int
        Longest sequence attended over, and the number of learned positions (256). Training windows of
        ``T`` columns need ``max_len >= T - 1``.
    features : int
        Values per column: the dataset's rows (88 keys).
    head : str
        ``"regression"`` (sigmoid values) or ``"classes3"`` (3-class logits per key).
    context : int
        Seed columns when generating (100).
    horizon : int
        Kept for the sequence specs' shared sizing; a next-column model emits one column per step.
    channel : int
        Which image channel the model reads (0: enc2/enc3 state, enc1 length).
    state, pos_weight, class_weights, select
        As :class:`models.lstm.LstmConfig`'s (the sequence models' training and decoding read them): whether the
        channel holds states (set from the encoding), the lit-pixel weight of the regression loss and the class
        weights of the 3-class loss (None: balanced per batch), what picks ``best.ckpt``.
    """

    d_model: int = 128
    layers: int = 3
    heads: int = 4
    dropout: float = 0.1
    max_len: int = 256
    features: int = 88
    head: str = "regression"
    context: int = 100
    horizon: int = 10
    channel: int = 0
    state: bool = True
    pos_weight: float | None = None
    class_weights: tuple[float, float, float] | None = None
    select: str = "onset_f1"

    def __post_init__(self) -> None:
        check_sequence_fields(self)
        if min(self.d_model, self.layers, self.heads, self.max_len, self.features, self.context, self.horizon) < 1:
            raise ValueError("d_model, layers, heads, max_len, features, context and horizon must be >= 1")
        if self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class NextColumnTransformer(nn.Module):
    """Linear(88 -> d) + positions -> causal pre-norm encoder layers -> LayerNorm -> head: column t + 1."""

    def __init__(self, config: TransformerConfig = TransformerConfig()) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed = nn.Linear(config.features, d)
        self.position = nn.Embedding(config.max_len, d)
        layer = nn.TransformerEncoderLayer(d, config.heads, dim_feedforward=4 * d, dropout=config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.head = _Head(config, nn.Linear(d, config.outputs))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None, return_state: bool = False):
        """``(B, T, 88) -> (B, T, 88)`` values or ``(B, T, 88, 3)`` logits, position ``t`` predicting column
        ``t + 1``; ``state``: the columns fed before ``x``, ``(B, S, 88)``; with ``return_state`` also the new
        state (the last ``max_len`` columns of ``state`` + ``x``)."""
        n_new = x.shape[1]
        if n_new > self.config.max_len:
            raise ValueError(f"{n_new} columns exceed max_len {self.config.max_len}; feed fewer at once or set a "
                             f"larger max_len")
        seq = x if state is None else torch.cat([state.to(x.dtype), x], dim=1)  # (B, S + T, 88)
        seq = seq[:, -self.config.max_len:]  # (B, L, 88), L <= max_len
        length = seq.shape[1]
        h = self.embed(seq) + self.position.weight[:length]  # (B, L, d)
        mask = torch.ones(length, length, dtype=torch.bool, device=h.device).triu(1)  # (L, L), True: hidden
        h = self.encoder(h, mask=mask, is_causal=True)  # (B, L, d)
        y = self.head(h[:, length - n_new:])  # (B, T, 88) or (B, T, 88, 3)
        return (y, seq) if return_state else y

    # the LSTM's roll-forward calls only forward(..., state, return_state) and head.feedback: the same applies
    generate = NextColumnLSTM.generate
