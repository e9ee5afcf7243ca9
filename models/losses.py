"""Losses for the sequence models and the autoencoder, each one small function reading like its equation.

The adversarial losses live next to the GAN networks in :mod:`models.gan`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["paper_custom_loss", "mse_loss", "class_cross_entropy"]


def paper_custom_loss(y: torch.Tensor, t: torch.Tensor, alpha: float = 1.5, beta: float = 0.8) -> torch.Tensor:
    """The paper's custom LSTM loss in its limit form.

    ``mean(alpha * (y - 1)^2 * [t > 0] + beta * y^2 * [t = 0])``: a lit target pixel pulls the prediction
    towards 1 (missed notes cost ``alpha``), a dark one towards 0 (spurious notes cost ``beta``). The paper
    writes ``[t > 0]`` as ``lim_{x->inf} t^(1/x)``, which is 1 for any ``t > 0`` and 0 for ``t = 0``.

    Parameters
    ----------
    y : Tensor
        Predictions in [0, 1], any shape.
    t : Tensor
        Targets in [0, 1], the shape of ``y``.
    alpha, beta : float
        Weights of missed and spurious notes.
    """
    on = (t > 0).to(y.dtype)
    return (alpha * (y - 1) ** 2 * on + beta * y**2 * (1 - on)).mean()


def mse_loss(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``mean((y - t)^2)``."""
    return ((y - t) ** 2).mean()


def class_cross_entropy(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Categorical cross-entropy over the last axis.

    Parameters
    ----------
    logits : Tensor
        ``(..., K)`` unnormalised scores (``K = 3``: silent / onset / sustained).
    classes : Tensor
        ``(...)`` integer class indices in ``0..K-1``.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), classes.reshape(-1).long())
