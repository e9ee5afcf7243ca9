"""Every trainable model by name: what it is built from, which encodings it takes, how it trains and samples.

``REGISTRY[name]`` is a :class:`ModelSpec`; one subclass per family carries that family's behaviour, so no
caller branches on the family:

- ``spec.config(encoding, shape, overrides, preset)``: the model config sized for a dataset's images
  ``(channels, rows, columns)`` (default: the paper's shape of the encoding), with a named preset of
  ``spec.presets`` (``"paper"``: the paper's settings; none: the improved defaults) and config fields changed;
- ``spec.networks(config)``: the networks by name (``{"generator", "critic"}`` for GANs, ``{"model"}`` else);
- ``spec.train_module(config, nets)``: the :class:`~models.trainer.TrainModule` that trains them;
- ``spec.sample(config, nets, n, encoding, seeds, calibration, sampling)``: new images to decode (uint8 rolls,
  or float Hilbert images); ``spec.needs_seeds`` says whether it continues real windows (``seeds``) or starts
  from noise; ``spec.calibrate(config, nets, batches)`` the decoding thresholds fitted on training windows;
  sequence models also ``spec.teacher_forced(config, nets, images, start, calibration)``;
- ``spec.loss`` the supervised loss ``(output, target) -> scalar`` (``None`` for GANs, whose losses are
  ``models.gan.LOSSES[config.kind]``); ``spec.describe()`` a JSON-friendly summary for ``midipix models``.

Targets passed to ``spec.loss`` are always float images or columns in [0, 1] (pixels / 255); the classes3
loss converts them to classes itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn

from storage_schemas.encodings import CHANNEL_NAMES, ONSET, ROLL_ENCODINGS, get_encoding

from .autoencoder import AutoencoderConfig, ConvAutoencoder
from .decoding import Calibration, Sampling, decode, scores_of
from .gan import GanConfig, build_gan
from .gan_decode import decode_gan_images, fit_key_offsets, fit_key_thresholds
from .losses import (balanced_class_weights, balanced_pos_weight, class_cross_entropy, mse_loss, paper_custom_loss,
                     weighted_class_cross_entropy, weighted_mse)
from .lstm import LstmConfig, build_lstm, values_to_classes
from .modules import AdversarialModule, columns_of, images_of, seq2seq_all_pairs, seq2seq_pairs
from .sequence import SequenceModule, fit_calibration, generate_columns, real_columns, teacher_forced_outputs
from .trainer import SupervisedModule, TrainModule
from .transformer import NextColumnTransformer, TransformerConfig

__all__ = ["ModelSpec", "GanSpec", "AutoencoderSpec", "LstmSpec", "TransformerSpec", "Seq2SeqSpec", "REGISTRY",
           "MODEL_NAMES", "get_spec", "count_parameters", "describe_all", "classes3_loss", "default_shape"]

# which models take which encodings follows from what the encodings' images hold
STATE_ENCODINGS = tuple(n for n in ROLL_ENCODINGS if CHANNEL_NAMES[n][0] == "state")  # the 3-class head's input
HILBERT = ("hilbert",)  # the autoencoder learns the piano's sound; hilbert-guitar is its style-transfer input

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


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides as JSON values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


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
    presets : mapping of str to mapping
        Named sets of config overrides, e.g. ``"paper"``: the settings of the paper this project reproduces
        where the defaults improve on them (``spec.config(encoding, shape, spec.presets["paper"])``).
    family : str
        ``"gan"``, ``"autoencoder"``, ``"lstm"`` (next column, teacher forcing) or ``"seq2seq"``.
    needs_seeds : bool
        Sampling continues (or reconstructs) real windows instead of starting from noise.
    full_batches : bool
        Training takes full batches only (BatchNorm over a last batch of one sample fails).
    presets : mapping
        Named sets of config fields (``{"paper": {...}}``: the paper's settings); no preset is the
        improved default. Fields given as overrides win over the preset's.
    """

    name: str
    encodings: tuple[str, ...]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    loss_name: str
    summary: str
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"paper": {}}, hash=False)

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

    def config(self, encoding: str, shape: Shape | None = None, overrides: Mapping[str, Any] | None = None,
               preset: str | None = None) -> Any:
        """The config for images of ``shape`` (default: :func:`default_shape`) with the fields of ``preset``
        (a name in :attr:`presets`), then ``overrides``, applied."""
        if encoding not in self.encodings:
            raise ValueError(f"{self.name} accepts encodings {self.encodings}, got {encoding!r}")
        if preset is not None and preset not in self.presets:
            raise ValueError(f"{self.name} has no preset {preset!r}; its presets: {', '.join(self.presets) or 'none'}")
        shape = tuple(int(v) for v in (shape or default_shape(encoding)))
        overrides = {**(self.presets[preset] if preset is not None else {}), **dict(overrides or {})}
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
            "presets": {name: _jsonable(values) for name, values in self.presets.items()},
        }


@dataclass(frozen=True)
class GanSpec(ModelSpec):
    """GAN, DCGAN, WGAN-GP: a generator sampled from noise and a critic; ``GanConfig.kind`` is the name.

    Sampling decodes the generator's images as :mod:`models.gan_decode` says (lit pixels by per-key
    thresholds or Bernoulli draws, a state channel of exactly 0 / ONSET / SUSTAIN, MIDI values clipped on
    lit pixels only); :meth:`calibrate` fits the thresholds.
    """

    family: ClassVar[str] = "gan"
    config_type: ClassVar[type] = GanConfig
    full_batches: ClassVar[bool] = True
    calibration_samples: ClassVar[int] = 256  # generated images the thresholds are fitted on
    calibration_windows: ClassVar[int] = 4096  # training windows the target densities are counted on, at most

    def sized_fields(self, shape: Shape) -> dict[str, Any]:
        channels, height, width = shape
        return {"kind": self.name, "channels": channels, "height": height, "width": width}

    def config(self, encoding: str, shape: Shape | None = None, overrides: Mapping[str, Any] | None = None,
               preset: str | None = None) -> Any:
        if overrides and "state_channel" in overrides:
            raise ValueError(f"{self.name}: state_channel follows the encoding; leave it out of the overrides")
        config = super().config(encoding, shape, overrides, preset)
        return dataclasses.replace(config, state_channel=CHANNEL_NAMES[encoding][0])

    def networks(self, config: GanConfig) -> dict[str, nn.Module]:
        generator, critic = build_gan(config)
        return {"generator": generator, "critic": critic}

    def train_module(self, config: GanConfig, nets: dict[str, nn.Module]) -> TrainModule:
        return AdversarialModule(config, nets["generator"], nets["critic"])

    def calibrate(self, config: GanConfig, nets: dict[str, nn.Module], batches: Any) -> dict[str, Any]:
        """Per-key thresholds on the first channel: the lit density per key of :attr:`calibration_samples`
        generated images (seeded noise) matched to that of the training windows in ``batches`` (the first
        batches holding :attr:`calibration_windows`).

        Returns ``{"method": "gan-key-density", "thresholds": [K floats], "sample_offsets": [K] (logit
        offsets of the Bernoulli draws, their expected density at temperature 1 matched likewise),
        "target_density": [K], "generated_density": [K] (what the thresholds give on the samples),
        "samples": n, "windows": m}``.
        """
        lit = None
        windows = columns = 0
        for batch in batches:
            if windows >= self.calibration_windows:
                break
            images = torch.as_tensor(batch[0] if isinstance(batch, (tuple, list)) else batch)  # (B, C, K, T)
            counts = (images[:, 0] != 0).sum(dim=(0, 2)).cpu().numpy().astype(np.int64)  # (K,)
            lit = counts if lit is None else lit + counts
            windows += int(images.shape[0])
            columns += int(images.shape[0] * images.shape[-1])
        if not windows:
            raise ValueError(f"{self.name}: calibration needs training windows; the batches were empty")
        target = lit / columns  # (K,)
        values = self._generate_values(config, nets["generator"], self.calibration_samples)  # (N, K, T)
        thresholds = fit_key_thresholds(values, target)
        achieved = (values > thresholds[None, :, None]).mean(axis=(0, 2))
        offsets = fit_key_offsets(values, target)
        return {"method": "gan-key-density", "thresholds": thresholds.tolist(), "sample_offsets": offsets.tolist(),
                "target_density": target.tolist(),
                "generated_density": achieved.tolist(), "samples": int(values.shape[0]), "windows": windows}

    @staticmethod
    @torch.no_grad()
    def _generate_values(config: GanConfig, generator: nn.Module, n: int, chunk: int = 64) -> np.ndarray:
        """First-channel values of ``n`` images from seeded noise (the global RNG is left alone), ``(n, K, T)``."""
        was_training = generator.training
        generator.eval()
        device = next(generator.parameters()).device
        g = torch.Generator().manual_seed(0)
        out = []
        for i in range(0, n, chunk):
            z = torch.randn(min(chunk, n - i), config.latent_dim, generator=g).to(device)
            out.append(generator(z)[:, 0].float().cpu().numpy())
        generator.train(was_training)
        return np.concatenate(out)

    def sample(self, config, nets, n, encoding, seeds=None, calibration=None, sampling=None) -> np.ndarray:
        generator = nets["generator"]
        was_training = generator.training
        generator.eval()  # as calibrated (BatchNorm's running statistics)
        with torch.no_grad():
            images = generator.sample(n).float().cpu().numpy()  # (n, C, H, W) in [0, 1]
        generator.train(was_training)
        thresholds = offsets = None
        if calibration:
            thresholds = np.asarray(calibration["thresholds"], np.float64)
            offsets = calibration.get("sample_offsets")
        return decode_gan_images(images, CHANNEL_NAMES[encoding], thresholds, sampling, offsets)


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
    """The LSTMs on the columns of one channel; sampling continues the first ``context`` columns of seeds,
    decoding each new column (:mod:`models.decoding`) and feeding it back (:mod:`models.sequence`).

    ``spec.loss`` is the paper's loss of the entry; training uses :meth:`loss_for` (the config's weights)."""

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

    def config(self, encoding: str, shape: Shape | None = None, overrides: Mapping[str, Any] | None = None,
               preset: str | None = None) -> Any:
        config = super().config(encoding, shape, overrides, preset)
        state = CHANNEL_NAMES[encoding][config.channel] == "state"  # calibration and F1 need state pixels
        return dataclasses.replace(config, state=state) if getattr(config, "state", state) != state else config

    def loss_for(self, config: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The training loss of ``config``: the paper's loss of this entry, weighted as the config says
        (``pos_weight`` / ``class_weights``: None balances each batch; 1.0 / (1, 1, 1) is the paper's)."""
        if getattr(config, "head", "regression") == "classes3":
            fixed = getattr(config, "class_weights", None)

            def classes3(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                classes = values_to_classes(target)
                weights = torch.tensor(fixed) if fixed is not None else balanced_class_weights(classes)
                return weighted_class_cross_entropy(logits, classes, weights)

            return classes3
        fixed_w = getattr(config, "pos_weight", None)
        weight = (lambda t: fixed_w) if fixed_w is not None else balanced_pos_weight
        if self.loss is paper_custom_loss:
            return lambda y, t: paper_custom_loss(y, t, alpha=1.5 * weight(t))
        return lambda y, t: weighted_mse(y, t, weight(t))

    def calibrate(self, config, nets, batches) -> dict[str, Any] | None:
        """The :class:`~models.decoding.Calibration` (as a dict) fitted on the teacher-forced scores of columns
        ``context..T-1`` of at most :data:`models.sequence.CALIBRATION_WINDOWS` training windows (1,024 for
        next-column models, 256 for seq2seq); None for a channel without states (enc1 lengths)."""
        if not getattr(config, "state", True):
            return None
        return fit_calibration(config, nets["model"], batches).to_dict()

    @torch.no_grad()
    def teacher_forced(self, config, nets, images: torch.Tensor, start: int,
                       calibration: dict[str, Any] | None = None) -> np.ndarray:
        """The state predicted for each column ``t >= start`` of ``images`` (uint8 ``(B, C, rows, T)``) from the
        real columns before it, decoded with the calibrated thresholds (a key lit after a real silent
        column is an onset): uint8 ``(B, rows, T - start)``. Seq2seq: see
        :func:`models.sequence.teacher_forced_outputs` (the encoder on the ``context`` real columns before
        each ``horizon`` chunk, the decoder fed the real columns). State encodings only."""
        if not getattr(config, "state", True):
            raise ValueError(f"{self.name}: teacher-forced states need a state channel (enc2, enc3), not lengths")
        model = nets["model"]
        was_training = model.training
        model.eval()
        x = real_columns(images, config.channel)  # (B, T, rows)
        lit, onset = scores_of(teacher_forced_outputs(config, model, x, start), config.head)  # (B, T - start, rows)
        model.train(was_training)
        cal = Calibration.from_dict(calibration) if calibration else None
        state = decode(lit, onset, x[:, start - 1:-1] > 0, cal)  # (B, T - start, rows)
        return state.transpose(1, 2).cpu().numpy()

    @torch.no_grad()
    def sample(self, config, nets, n, encoding, seeds=None, calibration=None, sampling=None) -> np.ndarray:
        """Continue the first ``context`` columns of ``seeds``: each new column decoded (``sampling``: the
        calibrated thresholds, or seeded draws; without a calibration every key at 0.5) and fed back. The
        seed columns are kept in every channel; generated notes get the seed's mean note velocity (64 when
        it has none) and program 0. enc1 (lengths) keeps its own path: new columns are the model's values
        rounded to 0..255 and fed back as they are, velocity 80."""
        seeds = seeds[:n]
        model = nets["model"]
        x = columns_of(seeds, config.channel)  # (B, T, rows)
        T = x.shape[1]
        images = seeds.cpu().numpy().copy()  # (B, C, rows, T) uint8: the seed columns as they are
        if not getattr(config, "state", True):  # enc1: channel 0 holds note lengths at onset pixels
            new = model.generate(x[:, : config.context], T - config.context)  # (B, T - context, rows)
            cols = np.rint(new.cpu().numpy() * 255.0).clip(0, 255).astype(np.uint8).transpose(0, 2, 1)
            images[:, config.channel, :, config.context:] = cols
            if images.shape[1] > 1 and config.channel == 0:
                images[:, 1, :, config.context:] = np.where(cols > 0, 80, 0)
            images[:, 2:, :, config.context:] = 0
            return images
        sampling = sampling or Sampling()
        generator = torch.Generator(device=x.device).manual_seed(int(sampling.seed))
        cal = Calibration.from_dict(calibration) if calibration else None
        new = generate_columns(config, model, x[:, : config.context], T - config.context, cal, sampling, generator)
        state = new.transpose(1, 2).cpu().numpy()  # (B, rows, T - context) uint8
        images[:, :, :, config.context:] = 0
        images[:, config.channel, :, config.context:] = state
        names = CHANNEL_NAMES[encoding]
        if "velocity" in names:
            v = names.index("velocity")
            seed_state, seed_vel = images[:, config.channel, :, : config.context], images[:, v, :, : config.context]
            for b in range(images.shape[0]):
                at = (seed_state[b] == ONSET) if (seed_state[b] == ONSET).any() else (seed_state[b] != 0)
                notes = seed_vel[b][at & (seed_vel[b] > 0)]  # the seed's note velocities (at onsets)
                velocity = int(round(float(notes.mean()))) if notes.size else 64
                images[b, v, :, config.context:] = np.where(state[b] > 0, velocity, 0)
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
        def pairs(batch):  # teacher forcing: columns 0..T-2 in, 1..T-1 out; the input is each target's previous
            x = columns_of(batch, config.channel)  # (B, T, rows)
            return x[:, :-1], x[:, 1:], x[:, :-1]

        return SequenceModule(nets["model"], config, self.loss_for(config), pairs)


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
        """Pairs: every ``horizon`` chunk after the context (``targets="all"``, :func:`seq2seq_all_pairs`) or
        the first only (the paper); the decoder fed the real previous columns (``teacher_forcing``) or its own."""
        make = seq2seq_all_pairs if config.targets == "all" else seq2seq_pairs

        def pairs(batch):
            x, y = make(batch, config.context, config.horizon, config.channel)  # (B', context, rows), (B', horizon, rows)
            previous = torch.cat([x[:, -1:], y[:, :-1]], dim=1)
            return ((x, None, y) if config.teacher_forcing else x), y, previous

        return SequenceModule(nets["model"], config, self.loss_for(config), pairs)


# the paper's settings of the sequence models: unweighted losses, checkpoints picked by the validation loss;
# seq2seq trained on the first horizon after the context, its decoder fed its own outputs
_PAPER_REGRESSION = {"paper": {"pos_weight": 1.0, "select": "loss"}}
_PAPER_CLASSES3 = {"paper": {"class_weights": [1.0, 1.0, 1.0], "select": "loss"}}
_PAPER_SEQ2SEQ = {"targets": "first", "teacher_forcing": False}

# Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", Algorithm 1's defaults
WGAN_GP_TRAINING: Mapping[str, Any] = {"n_critic": 5, "lr": 1e-4, "betas": (0.0, 0.9)}
# the paper's settings, as midipix trained every GAN before: one critic step per generator step, Adam
# 1e-3, betas 0.9/0.999 (the paper states these for its autoencoder; its GANs used the same trainer)
PAPER_GAN_TRAINING: Mapping[str, Any] = {"n_critic": 1, "lr": 1e-3, "betas": (0.9, 0.999)}


@dataclass(frozen=True)
class TransformerSpec(LstmSpec):
    """The causal Transformer over columns (:mod:`models.transformer`): the next-column LSTMs' contract,
    trained and sampled the same way."""

    config_type: ClassVar[type] = TransformerConfig

    def sized_fields(self, shape: Shape) -> dict[str, Any]:
        return {"features": shape[1]}

    def check_fits(self, config: TransformerConfig, shape: Shape) -> None:
        super().check_fits(config, shape)
        if config.max_len < shape[2] - 1:
            raise ValueError(f"{self.name}: the dataset's windows of {shape[2]} columns train on {shape[2] - 1} "
                             f"positions; set max_len >= {shape[2] - 1}")

    def networks(self, config: TransformerConfig) -> dict[str, nn.Module]:
        return {"model": NextColumnTransformer(config)}


_SPECS: list[ModelSpec] = [
    GanSpec("gan", ROLL_ENCODINGS, None, "bce", "dense generator and discriminator (MLPs, LeakyReLU), BCE",
            presets={"paper": PAPER_GAN_TRAINING}),
    GanSpec("dcgan", ROLL_ENCODINGS, None, "bce", "strided-conv generator and discriminator with BatchNorm, BCE",
            presets={"paper": PAPER_GAN_TRAINING}),
    GanSpec("wgan-gp", ROLL_ENCODINGS, None, "wasserstein+gp",
            "strided-conv generator and layer-normed critic, Wasserstein loss + gradient penalty "
            "(n_critic 5, Adam 1e-4, betas 0/0.9)", WGAN_GP_TRAINING, presets={"paper": PAPER_GAN_TRAINING}),
    AutoencoderSpec("autoencoder", HILBERT, mse_loss, "mse",
                    "conv autoencoder on 256 x 256 Hilbert images (148,081 parameters)"),
    LstmSpec("lstm", ROLL_ENCODINGS, mse_loss, "mse, lit pixels weighted", "LSTM(88->128) + Dense(128->88), next column, teacher forcing",
             presets=_PAPER_REGRESSION),
    LstmSpec("lstm-custom", ROLL_ENCODINGS, paper_custom_loss, "paper_custom(alpha=1.5 x pos_weight, beta=0.8)",
             "the lstm model trained with the paper's custom loss", presets=_PAPER_REGRESSION),
    LstmSpec("lstm-classes3", STATE_ENCODINGS, classes3_loss, "class-weighted cross_entropy(3 classes)",
             "next-column LSTM with a silent/onset/sustained head per key", {"head": "classes3"},
             presets=_PAPER_CLASSES3),
    TransformerSpec("transformer", ROLL_ENCODINGS, mse_loss, "mse, lit pixels weighted",
                    "causal Transformer over columns (3 pre-norm layers, d_model 128, 4 heads, learned positions), "
                    "next column, teacher forcing", presets=_PAPER_REGRESSION),
    TransformerSpec("transformer-classes3", STATE_ENCODINGS, classes3_loss, "class-weighted cross_entropy(3 classes)",
                    "the causal Transformer with a silent/onset/sustained head per key", {"head": "classes3"},
                    presets=_PAPER_CLASSES3),
    Seq2SeqSpec("seq2seq", ROLL_ENCODINGS, mse_loss, "mse, lit pixels weighted",
                "encoder-decoder LSTMs, horizon 10", presets={"paper": {**_PAPER_REGRESSION["paper"], **_PAPER_SEQ2SEQ}}),
    Seq2SeqSpec("seq2seq-classes3", STATE_ENCODINGS, classes3_loss, "class-weighted cross_entropy(3 classes)",
                "seq2seq with a silent/onset/sustained head per key", {"head": "classes3"},
                presets={"paper": {**_PAPER_CLASSES3["paper"], **_PAPER_SEQ2SEQ}}),
    Seq2SeqSpec("seq2seq-bidir", ROLL_ENCODINGS, mse_loss, "mse, lit pixels weighted",
                "seq2seq with a bidirectional encoder (final states projected to the decoder)",
                {"bidirectional": True}, presets={"paper": {**_PAPER_REGRESSION["paper"], **_PAPER_SEQ2SEQ}}),
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
