"""Every trainable model by name: what it is built from, which encodings it takes, how it trains and samples.

``REGISTRY[name]`` is a :class:`ModelSpec`; one subclass per family carries that family's behaviour, so no
caller branches on the family:

- ``spec.config(encoding, shape, overrides)``: the model config sized for a dataset's images
  ``(channels, rows, columns)`` (default: the paper's shape of the encoding), with config fields changed;
- ``spec.networks(config)``: the networks by name (``{"generator", "critic"}`` for GANs, ``{"model"}`` else);
- ``spec.train_module(config, nets)``: the :class:`~models.trainer.TrainModule` that trains them;
- ``spec.sample(config, nets, n, encoding, seeds)``: new images to decode (uint8 rolls, or float Hilbert
  images); ``spec.needs_seeds`` says whether it continues real windows (``seeds``) or starts from noise;
- ``spec.loss`` the supervised loss ``(output, target) -> scalar`` (``None`` for GANs, whose losses are
  ``models.gan.LOSSES[config.kind]``); ``spec.describe()`` a JSON-friendly summary for ``midipix models``.

Targets passed to ``spec.loss`` are always float images or columns in [0, 1] (pixels / 255); the classes3
loss converts them to classes itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn

from storage_schemas.encodings import CHANNEL_NAMES, ONSET, ROLL_ENCODINGS, SUSTAIN, get_encoding

from .autoencoder import AutoencoderConfig, ConvAutoencoder
from .decoding import Sampling
from .gan import GanConfig, build_gan
from .losses import class_cross_entropy, mse_loss, paper_custom_loss
from .lstm import LstmConfig, build_lstm, values_to_classes
from .modules import AdversarialModule, images_of, next_column_pairs, seq2seq_pairs
from .trainer import SupervisedModule, TrainModule

__all__ = ["ModelSpec", "GanSpec", "AutoencoderSpec", "LstmSpec", "Seq2SeqSpec", "REGISTRY", "MODEL_NAMES",
           "get_spec", "count_parameters", "describe_all", "classes3_loss", "default_shape"]

# which models take which encodings follows from what the encodings' images hold
STATE_ENCODINGS = tuple(n for n in ROLL_ENCODINGS if CHANNEL_NAMES[n][0] == "state")  # the 3-class head's input
HILBERT = ("hilbert",)  # the autoencoder learns the piano's sound; hilbert-guitar is its style-transfer input
MIDI_CHANNELS = ("velocity", "program")  # roll channels holding MIDI values, 0..127

Shape = tuple[int, int, int]  # (channels, rows, columns) of one image


def count_parameters(module: nn.Module | tuple[nn.Module, ...]) -> int:
    """Number of parameters of a module (or the sum over a tuple of modules, e.g. a GAN pair)."""
    modules = module if isinstance(module, tuple) else (module,)
    return sum(p.numel() for m in modules for p in m.parameters())


def classes3_loss(logits: torch.Tensor, target_values: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of 3-class logits ``(..., 88, 3)`` against state values in [0, 1] ``(..., 88)``."""
    return class_cross_entropy(logits, values_to_classes(target_values))


def default_shape(encoding: str) -> Shape:
    """The paper's image shape of an encoding (its config's defaults): 88 x 200 rolls, 256 x 256 Hilbert images."""
    return get_encoding(encoding).config().shape


def _to_pixels(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] to uint8 pixels."""
    return (images * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def _nearest_state(values: np.ndarray) -> np.ndarray:
    """Predicted state values in [0, 1] to pixels: the nearest of 0, ONSET, SUSTAIN."""
    levels = np.array([0, ONSET, SUSTAIN], np.float64)
    return levels[np.abs(values[..., None] * 255.0 - levels).argmin(-1)].astype(np.uint8)


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry; the family's behaviour lives in the subclass.

    Attributes
    ----------
    name : str
        Registry key (``"wgan-gp"``, ``"lstm-custom"``, ...).
    encodings : tuple of str
        Encodings the model accepts.
    loss : callable or None
        ``(output, target) -> scalar``; ``None`` for GANs.
    loss_name : str
        Printable name of the loss.
    summary : str
        One line for humans.
    defaults : mapping
        Config fields this entry sets beyond its family's defaults (``head="classes3"``, ...).
    family : str
        ``"gan"``, ``"autoencoder"``, ``"lstm"`` (next column, teacher forcing) or ``"seq2seq"``.
    needs_seeds : bool
        Sampling continues (or reconstructs) real windows instead of starting from noise.
    full_batches : bool
        Training takes full batches only (BatchNorm over a last batch of one sample fails).
    """

    name: str
    encodings: tuple[str, ...]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    loss_name: str
    summary: str
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)

    family: ClassVar[str]
    config_type: ClassVar[type]
    needs_seeds: ClassVar[bool] = False
    full_batches: ClassVar[bool] = False

    # -- configs -------------------------------------------------------------------------------------

    def sized_fields(self, shape: Shape) -> dict[str, Any]:
        """Config fields the dataset's image shape fixes (not overridable)."""
        raise NotImplementedError

    def shape_defaults(self, shape: Shape) -> dict[str, Any]:
        """Config defaults that follow the image shape but may be overridden."""
        return {}

    def check_fits(self, config: Any, shape: Shape) -> None:
        """Raise ``ValueError`` when a config cannot run on images of ``shape``."""

    def config(self, encoding: str, shape: Shape | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
        """The config for images of ``shape`` (default: :func:`default_shape`) with ``overrides`` applied."""
        if encoding not in self.encodings:
            raise ValueError(f"{self.name} accepts encodings {self.encodings}, got {encoding!r}")
        shape = tuple(int(v) for v in (shape or default_shape(encoding)))
        overrides = dict(overrides or {})
        fixed = self.sized_fields(shape)
        clash = sorted(set(overrides) & set(fixed))
        if clash:
            raise ValueError(f"{self.name}: {', '.join(clash)} follow the dataset's images {shape}; "
                             f"leave them out of the overrides")
        config = self.config_type.from_dict({**self.shape_defaults(shape), **self.defaults, **overrides, **fixed})
        self.check_fits(config, shape)
        return config

    def default_config(self, encoding: str) -> Any:
        """The config for the paper's image shape of ``encoding``."""
        return self.config(encoding)

    # -- networks, training, sampling ----------------------------------------------------------------

    def networks(self, config: Any) -> dict[str, nn.Module]:
        """The freshly initialised networks by name (the names their checkpoints use)."""
        raise NotImplementedError

    def train_module(self, config: Any, nets: dict[str, nn.Module]) -> TrainModule:
        """The :class:`~models.trainer.TrainModule` training ``nets``."""
        raise NotImplementedError

    def calibrate(self, config: Any, nets: dict[str, nn.Module], batches: Any) -> dict[str, Any] | None:
        """What decoding this checkpoint's outputs needs, fitted on training ``batches`` (``(images, meta)``
        as the loader yields them): plain JSON values stored with the run and passed back to :meth:`sample`
        as ``calibration``; None when the family needs none."""
        return None

    def sample(self, config: Any, nets: dict[str, nn.Module], n: int, encoding: str,
               seeds: torch.Tensor | None = None, calibration: dict[str, Any] | None = None,
               sampling: Sampling | None = None) -> np.ndarray:
        """``n`` new images to decode, ``(n, C, rows, columns)``; ``seeds``: a batch of real windows when
        :attr:`needs_seeds` (as the loader yields them); ``calibration``: what :meth:`calibrate` returned
        for this checkpoint; ``sampling``: how scores become pixels (default ``Sampling()``)."""
        raise NotImplementedError

    # -- description ---------------------------------------------------------------------------------

    def parameter_count(self, encoding: str) -> int:
        """Parameters of the default config for ``encoding``, counted without allocating (meta device)."""
        with torch.device("meta"):
            return count_parameters(tuple(self.networks(self.default_config(encoding)).values()))

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


@dataclass(frozen=True)
class GanSpec(ModelSpec):
    """GAN, DCGAN, WGAN-GP: a generator sampled from noise and a critic; ``GanConfig.kind`` is the name."""

    family: ClassVar[str] = "gan"
    config_type: ClassVar[type] = GanConfig
    full_batches: ClassVar[bool] = True

    def sized_fields(self, shape: Shape) -> dict[str, Any]:
        channels, height, width = shape
        return {"kind": self.name, "channels": channels, "height": height, "width": width}

    def networks(self, config: GanConfig) -> dict[str, nn.Module]:
        generator, critic = build_gan(config)
        return {"generator": generator, "critic": critic}

    def train_module(self, config: GanConfig, nets: dict[str, nn.Module]) -> TrainModule:
        return AdversarialModule(config, nets["generator"], nets["critic"])

    def sample(self, config, nets, n, encoding, seeds=None, calibration=None, sampling=None) -> np.ndarray:
        images = _to_pixels(nets["generator"].sample(n))  # (n, C, H, W)
        for c, name in enumerate(CHANNEL_NAMES[encoding]):
            if name in MIDI_CHANNELS:  # a generator's pixels span 0..255; a roll's velocity and program 0..127
                images[:, c] = np.minimum(images[:, c], 127)
        return images


@dataclass(frozen=True)
class AutoencoderSpec(ModelSpec):
    """The conv autoencoder on square Hilbert images; sampling reconstructs the seed windows."""

    family: ClassVar[str] = "autoencoder"
    config_type: ClassVar[type] = AutoencoderConfig
    needs_seeds: ClassVar[bool] = True

    def sized_fields(self, shape: Shape) -> dict[str, Any]:
        channels, height, width = shape
        if height != width:
            raise ValueError(f"{self.name} takes square images, the dataset's are {height} x {width}")
        return {"channels": channels, "size": height}

    def networks(self, config: AutoencoderConfig) -> dict[str, nn.Module]:
        return {"model": ConvAutoencoder(config)}

    def train_module(self, config, nets) -> TrainModule:
        return SupervisedModule(nets["model"], self.loss, lambda b: (images_of(b), images_of(b)))

    def sample(self, config, nets, n, encoding, seeds=None, calibration=None, sampling=None) -> np.ndarray:
        return nets["model"](images_of(seeds[:n])).float().cpu().numpy()  # (n, 1, S, S) in [0, 1]


@dataclass(frozen=True)
class _SequenceSpec(ModelSpec):
    """The LSTMs on the columns of one channel; sampling continues the first ``context`` columns of seeds."""

    config_type: ClassVar[type] = LstmConfig
    needs_seeds: ClassVar[bool] = True
    arch: ClassVar[str]

    def sized_fields(self, shape: Shape) -> dict[str, Any]:
        return {"features": shape[1], "arch": self.arch}

    def shape_defaults(self, shape: Shape) -> dict[str, Any]:
        # the paper: 100 context columns and a horizon of 10 in windows of 200; shorter windows, half
        context = max(1, min(100, shape[2] // 2))
        return {"context": context, "horizon": max(1, min(10, shape[2] - context))}

    def check_fits(self, config: LstmConfig, shape: Shape) -> None:
        if config.channel >= shape[0]:
            raise ValueError(f"{self.name}: channel {config.channel} is not among the images' {shape[0]} channels")

    def networks(self, config: LstmConfig) -> dict[str, nn.Module]:
        return {"model": build_lstm(config)}

    def sample(self, config, nets, n, encoding, seeds=None, calibration=None, sampling=None) -> np.ndarray:
        seeds = seeds[:n]
        x = seeds[:, config.channel].float().transpose(1, 2) / 255.0  # (B, T, rows)
        start = x[:, : config.context]
        new = nets["model"].generate(start, x.shape[1] - config.context)  # (B, T - context, rows)
        cols = torch.cat([start, new], dim=1).cpu().numpy()  # (B, T, rows)
        if CHANNEL_NAMES[encoding][0] == "length":  # enc1: channel 0 holds note lengths at onset pixels
            state = np.rint(cols * 255.0).clip(0, 255).astype(np.uint8).transpose(0, 2, 1)
        else:
            state = _nearest_state(cols).transpose(0, 2, 1)  # (B, rows, T)
        images = np.zeros(tuple(seeds.shape), np.uint8)  # (B, C, rows, T)
        images[:, 0] = state
        if images.shape[1] > 1:
            images[:, 1] = np.where(state > 0, 80, 0)  # velocity for enc1/enc2 channels
        return images


@dataclass(frozen=True)
class LstmSpec(_SequenceSpec):
    """Next-column LSTMs trained with teacher forcing."""

    family: ClassVar[str] = "lstm"
    arch: ClassVar[str] = "next-column"

    def check_fits(self, config: LstmConfig, shape: Shape) -> None:
        super().check_fits(config, shape)
        if config.context >= shape[2]:
            raise ValueError(f"{self.name}: context {config.context} leaves nothing to generate in the dataset's "
                             f"windows of {shape[2]} columns; set a smaller context")

    def train_module(self, config, nets) -> TrainModule:
        return SupervisedModule(nets["model"], self.loss, lambda b: next_column_pairs(b, config.channel))


@dataclass(frozen=True)
class Seq2SeqSpec(_SequenceSpec):
    """Encoder-decoder LSTMs: ``context`` columns in, ``horizon`` columns out."""

    family: ClassVar[str] = "seq2seq"
    arch: ClassVar[str] = "seq2seq"

    def check_fits(self, config: LstmConfig, shape: Shape) -> None:
        super().check_fits(config, shape)
        if config.context + config.horizon > shape[2]:
            raise ValueError(f"{self.name}: context {config.context} + horizon {config.horizon} exceed the "
                             f"dataset's windows of {shape[2]} columns; set smaller ones")

    def train_module(self, config, nets) -> TrainModule:
        return SupervisedModule(nets["model"], self.loss,
                                lambda b: seq2seq_pairs(b, config.context, config.horizon, config.channel))


_SPECS: list[ModelSpec] = [
    GanSpec("gan", ROLL_ENCODINGS, None, "bce", "dense generator and discriminator (MLPs, LeakyReLU), BCE"),
    GanSpec("dcgan", ROLL_ENCODINGS, None, "bce", "strided-conv generator and discriminator with BatchNorm, BCE"),
    GanSpec("wgan-gp", ROLL_ENCODINGS, None, "wasserstein+gp",
            "strided-conv generator and layer-normed critic, Wasserstein loss + gradient penalty"),
    AutoencoderSpec("autoencoder", HILBERT, mse_loss, "mse",
                    "conv autoencoder on 256 x 256 Hilbert images (148,081 parameters)"),
    LstmSpec("lstm", ROLL_ENCODINGS, mse_loss, "mse", "LSTM(88->128) + Dense(128->88), next column, teacher forcing"),
    LstmSpec("lstm-custom", ROLL_ENCODINGS, paper_custom_loss, "paper_custom(alpha=1.5, beta=0.8)",
             "the lstm model trained with the paper's custom loss"),
    LstmSpec("lstm-classes3", STATE_ENCODINGS, classes3_loss, "cross_entropy(3 classes)",
             "next-column LSTM with a silent/onset/sustained head per key", {"head": "classes3"}),
    Seq2SeqSpec("seq2seq", ROLL_ENCODINGS, mse_loss, "mse",
                "encoder-decoder LSTMs, decoder fed its own outputs (horizon 10)"),
    Seq2SeqSpec("seq2seq-classes3", STATE_ENCODINGS, classes3_loss, "cross_entropy(3 classes)",
                "seq2seq with a silent/onset/sustained head per key", {"head": "classes3"}),
    Seq2SeqSpec("seq2seq-bidir", ROLL_ENCODINGS, mse_loss, "mse",
                "seq2seq with a bidirectional encoder (final states projected to the decoder)",
                {"bidirectional": True}),
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
