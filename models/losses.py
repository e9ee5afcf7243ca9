"""Losses for the sequence models and the autoencoder, each one small function reading like its equation.

The adversarial losses live next to the GAN networks in :mod:`models.gan`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["paper_custom_loss", "mse_loss", "class_cross_entropy", "balanced_pos_weight", "weighted_mse",
           "balanced_class_weights", "weighted_class_cross_entropy"]


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


def balanced_pos_weight(t: torch.Tensor) -> torch.Tensor:
    """``sqrt((1 - d) / d)`` for the density ``d`` of lit pixels (``t > 0``) in a target batch: a lit pixel
    weighs as much as sqrt(dark / lit) dark ones (6.7 at MAESTRO's 2.2 %); 1 for a batch without any."""
    d = (t > 0).float().mean()
    return torch.where(d > 0, torch.sqrt((1 - d) / d.clamp_min(1e-8)), torch.ones_like(d)).detach()


def weighted_mse(y: torch.Tensor, t: torch.Tensor, pos_weight: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``sum(w (y - t)^2) / sum(w)`` with ``w = pos_weight`` on lit targets (``t > 0``), 1 elsewhere;
    ``pos_weight = 1`` is :func:`mse_loss`."""
    w = torch.where(t > 0, torch.as_tensor(pos_weight, dtype=y.dtype, device=y.device), torch.ones_like(y))
    return (w * (y - t) ** 2).sum() / w.sum()


def balanced_class_weights(classes: torch.Tensor, k: int = 3) -> torch.Tensor:
    """``(k,)`` weights ``1 / sqrt(frequency)`` of each class in a target batch, scaled so that the batch's
    mean weight per pixel is 1; a class absent from the batch gets the largest present weight."""
    counts = torch.bincount(classes.reshape(-1).long(), minlength=k).float()
    freq = counts / counts.sum().clamp_min(1)
    w = torch.where(freq > 0, freq.clamp_min(1e-8).rsqrt(), torch.zeros_like(freq))
    w = torch.where(freq > 0, w, w.max())
    return (w / (w * freq).sum().clamp_min(1e-8)).detach()


def weighted_class_cross_entropy(logits: torch.Tensor, classes: torch.Tensor,
                                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Class-weighted cross-entropy ``sum(w[c] CE) / sum(w[c])`` over the last axis of ``logits`` ``(..., K)``;
    ``weights`` None is :func:`class_cross_entropy`."""
    if weights is None:
        return class_cross_entropy(logits, classes)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), classes.reshape(-1).long(),
                           weight=weights.to(logits))
