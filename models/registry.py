"""Every trainable model by name: what it is built from, which encodings it takes, how it is scored.

``REGISTRY[name]`` is a :class:`ModelSpec`. ``spec.build(config)`` returns an ``nn.Module`` (a
``(generator, critic)`` pair for the GAN family); ``spec.default_config(encoding)`` the config for one
encoding; ``spec.loss`` the training loss ``(output, target) -> scalar`` (``None`` for GANs, whose losses are
``models.gan.LOSSES[config.kind]``); ``spec.describe()`` a JSON-friendly summary for ``midipix models``.

Targets passed to ``spec.loss`` are always float images or columns in [0, 1] (pixels / 255); the classes3
loss converts them to classes itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from storage_schemas.encodings import CHANNELS

from .autoencoder import AutoencoderConfig, ConvAutoencoder
from .gan import GanConfig, build_gan
from .losses import class_cross_entropy, mse_loss, paper_custom_loss
from .lstm import LstmConfig, build_lstm, values_to_classes

__all__ = ["ModelSpec", "REGISTRY", "MODEL_NAMES", "get_spec", "count_parameters", "describe_all", "classes3_loss"]

ROLL_ENCODINGS = ("enc1", "enc2", "enc3")
STATE_ENCODINGS = ("enc2", "enc3")  # the ONSET / SUSTAIN state channel the 3-class head needs
HILBERT = ("hilbert",)


def count_parameters(module: nn.Module | tuple[nn.Module, ...]) -> int:
    """Number of parameters of a module (or the sum over a tuple of modules, e.g. a GAN pair)."""
    modules = module if isinstance(module, tuple) else (module,)
    return sum(p.numel() for m in modules for p in m.parameters())


def classes3_loss(logits: torch.Tensor, target_values: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of 3-class logits ``(..., 88, 3)`` against state values in [0, 1] ``(..., 88)``."""
    return class_cross_entropy(logits, values_to_classes(target_values))


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Attributes
    ----------
    name : str
        Registry key (``"wgan-gp"``, ``"lstm-custom"``, ...).
    family : str
        ``"gan"``, ``"autoencoder"``, ``"lstm"`` (next column, teacher forcing) or ``"seq2seq"``.
    build : callable
        ``config -> nn.Module`` (``-> (generator, critic)`` for the GAN family).
    make_config : callable
        ``encoding -> config``; use :meth:`default_config`.
    encodings : tuple of str
        Encodings the model accepts.
    loss : callable or None
        ``(output, target) -> scalar``; ``None`` for GANs.
    loss_name : str
        Printable name of the loss.
    summary : str
        One line for humans.
    """

    name: str
    family: str
    build: Callable[[Any], Any]
    make_config: Callable[[str], Any] = field(repr=False)
    encodings: tuple[str, ...]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    loss_name: str
    summary: str

    def default_config(self, encoding: str) -> Any:
        if encoding not in self.encodings:
            raise ValueError(f"{self.name} accepts encodings {self.encodings}, got {encoding!r}")
        return self.make_config(encoding)

    def parameter_count(self, encoding: str) -> int:
        """Parameters of the default config for ``encoding``, counted without allocating (meta device)."""
        with torch.device("meta"):
            return count_parameters(self.build(self.default_config(encoding)))

    def describe(self) -> dict[str, Any]:
        """name, family, summary, loss, encodings, parameters per encoding, default config per encoding."""
        return {
            "name": self.name,
            "family": self.family,
            "summary": self.summary,
            "loss": self.loss_name,
            "encodings": list(self.encodings),
            "parameters": {enc: self.parameter_count(enc) for enc in self.encodings},
            "defaults": {enc: self.default_config(enc).to_dict() for enc in self.encodings},
        }


def _gan(kind: str, summary: str) -> ModelSpec:
    return ModelSpec(
        name=kind,
        family="gan",
        build=build_gan,
        make_config=lambda enc: GanConfig(kind=kind, channels=CHANNELS[enc]),
        encodings=ROLL_ENCODINGS,
        loss=None,
        loss_name={"gan": "bce", "dcgan": "bce", "wgan-gp": "wasserstein+gp"}[kind],
        summary=summary,
    )


def _seq(name: str, family: str, loss, loss_name: str, summary: str, encodings=ROLL_ENCODINGS, **config) -> ModelSpec:
    arch = "seq2seq" if family == "seq2seq" else "next-column"
    return ModelSpec(
        name=name,
        family=family,
        build=build_lstm,
        make_config=lambda enc: LstmConfig(arch=arch, **config),
        encodings=encodings,
        loss=loss,
        loss_name=loss_name,
        summary=summary,
    )


_SPECS = [
    _gan("gan", "dense generator and discriminator (MLPs, LeakyReLU), BCE"),
    _gan("dcgan", "strided-conv generator and discriminator with BatchNorm, BCE"),
    _gan("wgan-gp", "strided-conv generator and layer-normed critic, Wasserstein loss + gradient penalty"),
    ModelSpec(
        name="autoencoder",
        family="autoencoder",
        build=ConvAutoencoder,
        make_config=lambda enc: AutoencoderConfig(),
        encodings=HILBERT,
        loss=mse_loss,
        loss_name="mse",
        summary="conv autoencoder on 256 x 256 Hilbert images (148,081 parameters)",
    ),
    _seq("lstm", "lstm", mse_loss, "mse", "LSTM(88->128) + Dense(128->88), next column, teacher forcing"),
    _seq("lstm-custom", "lstm", paper_custom_loss, "paper_custom(alpha=1.5, beta=0.8)",
         "the lstm model trained with the paper's custom loss"),
    _seq("lstm-classes3", "lstm", classes3_loss, "cross_entropy(3 classes)",
         "next-column LSTM with a silent/onset/sustained head per key", STATE_ENCODINGS, head="classes3"),
    _seq("seq2seq", "seq2seq", mse_loss, "mse", "encoder-decoder LSTMs, decoder fed its own outputs (horizon 10)"),
    _seq("seq2seq-classes3", "seq2seq", classes3_loss, "cross_entropy(3 classes)",
         "seq2seq with a silent/onset/sustained head per key", STATE_ENCODINGS, head="classes3"),
    _seq("seq2seq-bidir", "seq2seq", mse_loss, "mse",
         "seq2seq with a bidirectional encoder (final states projected to the decoder)", bidirectional=True),
]

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; unknown names fail with the list of known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}") from None


def describe_all() -> list[dict[str, Any]]:
    """:meth:`ModelSpec.describe` of every entry, in registry order."""
    return [spec.describe() for spec in _SPECS]
