"""GAN, DCGAN and WGAN-GP: one set of networks, the losses as the only variation.

``kind="gan"`` pairs the dense :class:`DenseGenerator` / :class:`DenseDiscriminator` (multilayer perceptrons
with LeakyReLU, after the classic "GAN" reference design); ``"dcgan"`` and ``"wgan-gp"`` pair the
convolutional :class:`ConvGenerator` / :class:`ConvCritic`. The DCGAN critic uses BatchNorm; the WGAN-GP
critic uses a per-sample layer norm instead, because the gradient penalty is a per-sample quantity and
BatchNorm would mix the samples of a batch.

Images are ``(B, C, H, W)`` floats in [0, 1] (the uint8 rolls divided by 255; 88 x 200 in the paper);
generators end in a sigmoid. Discriminators and critics return one unbounded score per sample, ``(B,)``: a logit for the BCE
losses, a Wasserstein score for WGAN-GP.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .configs import config_from_dict
from .gan_decode import STATE_KINDS

__all__ = [
    "GAN_KINDS",
    "STATE_CHANNELS",
    "GanConfig",
    "DenseGenerator",
    "DenseDiscriminator",
    "ConvGenerator",
    "ConvCritic",
    "build_gan",
    "bce_discriminator_loss",
    "bce_generator_loss",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
    "gradient_penalty",
    "LOSSES",
    "critic_objective",
    "generator_objective",
]

GAN_KINDS = ("gan", "dcgan", "wgan-gp")
STATE_CHANNELS = STATE_KINDS  # what a roll's first channel holds: CHANNEL_NAMES[encoding][0]


@dataclass(frozen=True)
class GanConfig:
    """Shape and width of a GAN.

    Parameters
    ----------
    kind : str
        ``"gan"`` (dense nets, BCE), ``"dcgan"`` (conv nets with BatchNorm, BCE) or ``"wgan-gp"`` (conv nets,
        layer-normed critic, Wasserstein loss + gradient penalty).
    channels, height, width : int
        Image shape ``(channels, height, width)``; 4, 3 or 1 channels for enc1, enc2, enc3.
    latent_dim : int
        Length of the noise vector ``z``.
    dense_generator : tuple of int
        Hidden widths of the dense generator.
    dense_discriminator : tuple of int
        Hidden widths of the dense discriminator.
    conv_channels : tuple of int
        Channels of the conv nets from the coarsest to the finest scale. The generator starts from a seed of
        ``conv_channels[0]`` maps of ``ceil(height / 2^k)`` x ``ceil(width / 2^k)`` (k = ``len(conv_channels)``;
        11 x 25 for 88 x 200 and three stages), doubles the size at each stage and crops the result to
        ``height`` x ``width``; the critic pads its input to that size and mirrors the generator.
    leaky_slope : float
        Negative slope of the LeakyReLUs.
    gp_weight : float
        Weight of the gradient penalty (WGAN-GP only).
    n_critic : int
        Critic updates per generator update: the critic steps on every training batch, the generator after
        every ``n_critic``-th (each critic update sees its own real batch, as in Gulrajani et al. 2017). 1 for
        gan/dcgan; the registry's ``wgan-gp`` entry sets 5.
    lr : float or None
        Adam (or SGD) learning rate of both GAN optimizers; None takes the run's ``TrainConfig.lr``. The
        registry's ``wgan-gp`` entry sets 1e-4 (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs").
    betas : (float, float) or None
        Adam betas of both GAN optimizers; None takes ``TrainConfig.betas``. ``wgan-gp``: (0.0, 0.9).
    state_channel : str
        What the first channel holds, from the encoding (the registry sets it): ``"state"`` (enc2, enc3:
        0 / ONSET / SUSTAIN) or ``"length"`` (enc1: note lengths at onset pixels). Read by the sample
        distance that picks checkpoints (:class:`models.modules.AdversarialModule`).
    """

    kind: str
    channels: int
    height: int = 88
    width: int = 200
    latent_dim: int = 100
    dense_generator: tuple[int, ...] = (128, 256, 512, 1024)
    dense_discriminator: tuple[int, ...] = (512, 256)
    conv_channels: tuple[int, ...] = (256, 128, 64)
    leaky_slope: float = 0.2
    gp_weight: float = 10.0
    n_critic: int = 1
    lr: float | None = None
    betas: tuple[float, float] | None = None
    state_channel: str = "state"

    def __post_init__(self) -> None:
        if self.kind not in GAN_KINDS:
            raise ValueError(f"kind must be one of {GAN_KINDS}, got {self.kind!r}")
        if self.state_channel not in STATE_CHANNELS:
            raise ValueError(f"state_channel must be one of {STATE_CHANNELS}, got {self.state_channel!r}")
        if isinstance(self.n_critic, bool) or not isinstance(self.n_critic, int) or self.n_critic < 1:
            raise ValueError(f"n_critic must be an int >= 1, got {self.n_critic!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number or None, got {self.lr!r}")
        if self.betas is not None:
            betas = tuple(float(b) for b in self.betas)
            if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
                raise ValueError(f"betas must be two numbers in [0, 1) or None, got {self.betas!r}")
            object.__setattr__(self, "betas", betas)
        for name in ("dense_generator", "dense_discriminator", "conv_channels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if min(self.channels, self.height, self.width, self.latent_dim) < 1:
            raise ValueError("channels, height, width and latent_dim must be >= 1")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise ValueError("conv_channels needs at least one stage, each >= 1 channel")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def seed_shape(self) -> tuple[int, int]:
        """Spatial size of the conv generator's seed, e.g. ``(11, 25)`` for 88 x 200 and three stages."""
        factor = 2 ** len(self.conv_channels)
        return (math.ceil(self.height / factor), math.ceil(self.width / factor))

    @property
    def conv_shape(self) -> tuple[int, int]:
        """The size the conv nets work at: the seed doubled per stage, ``>= (height, width)``; (88, 200) for
        88 x 200 and three stages, (64, 64) for 61 x 64."""
        factor = 2 ** len(self.conv_channels)
        h, w = self.seed_shape
        return (h * factor, w * factor)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return config_from_dict(cls, data)


class _Generator(nn.Module):
    """What every generator shares: ``z -> image`` and :meth:`sample`."""

    config: GanConfig

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from fresh noise, ``(n, C, H, W)`` in [0, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self(z)


class DenseGenerator(_Generator):
    """MLP generator: ``z -> Linear -> [BatchNorm] -> LeakyReLU -> ... -> Linear -> sigmoid -> image``.

    No BatchNorm after the first layer (as in the classic design), BatchNorm after the others.
    """

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.latent_dim
        for i, hidden in enumerate(config.dense_generator):
            layers.append(nn.Linear(width, hidden))
            if i > 0:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.LeakyReLU(config.leaky_slope))
            width = hidden
        layers.append(nn.Linear(width, config.channels * config.height * config.width))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(z)  # (B, C*H*W)
        return torch.sigmoid(x).view(z.shape[0], *self.config.image_shape)  # (B, C, H, W)


class DenseDiscriminator(nn.Module):
    """MLP discriminator: ``image -> flatten -> (Linear -> LeakyReLU)* -> Linear -> logit (B,)``."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Flatten()]
        width = config.channels * config.height * config.width
        for hidden in config.dense_discriminator:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(config.leaky_slope)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # (B, C, H, W) -> (B,)


class ConvGenerator(_Generator):
    """DCGAN-style generator built for the roll shape directly (no squaring of the image).

    ``z -> Linear -> (B, c0, 11, 25) -> [ConvTranspose 4x4 stride 2 -> BatchNorm -> ReLU] x 3 -> (B, c, 88, 200)
    -> Conv 3x3 -> sigmoid -> (B, C, 88, 200)``. Other sizes are generated at :attr:`GanConfig.conv_shape`
    and cropped (rows and columns at the end).
    """

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        chans = config.conv_channels
        h, w = config.seed_shape
        self.project = nn.Linear(config.latent_dim, chans[0] * h * w)
        self.seed = nn.Sequential(nn.BatchNorm2d(chans[0]), nn.ReLU())
        stages: list[nn.Module] = []
        widths = list(chans) + [chans[-1] // 2 or 1]
        for cin, cout in zip(widths[:-1], widths[1:]):
            # kernel 4, stride 2, padding 1: exactly doubles height and width
            stages += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.upsample = nn.Sequential(*stages)
        self.to_image = nn.Conv2d(widths[-1], config.channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = self.config.seed_shape
        x = self.project(z).view(z.shape[0], -1, h, w)  # (B, c0, 11, 25)
        x = self.upsample(self.seed(x))  # (B, c0/2^k, 88, 200)
        x = x[:, :, : self.config.height, : self.config.width]  # a no-op when the strides fit the image
        return torch.sigmoid(self.to_image(x))  # (B, C, 88, 200)


class ConvCritic(nn.Module):
    """DCGAN-style discriminator / WGAN critic: strided convs down to the seed size, then one linear score.

    ``(B, C, 88, 200) -> [Conv 4x4 stride 2 -> norm -> LeakyReLU] x 3 -> (B, c0, 11, 25) -> Linear -> (B,)``.
    ``norm`` is BatchNorm for ``kind="dcgan"`` (none on the first stage, as in DCGAN) and, for ``"wgan-gp"``,
    a per-sample layer norm over (channels, rows, columns) (``GroupNorm`` with one group) so that each
    sample's score, and hence its gradient penalty, depends on that sample alone. Images the strides do not
    fit are zero-padded (rows and columns at the end) to :attr:`GanConfig.conv_shape` first.
    """

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.channels] + list(reversed(config.conv_channels))
        stages: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            stages.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1))  # halves height and width
            if i > 0:
                stages.append(nn.BatchNorm2d(cout) if config.kind == "dcgan" else nn.GroupNorm(1, cout))
            stages.append(nn.LeakyReLU(config.leaky_slope))
        self.features = nn.Sequential(*stages)
        h, w = config.seed_shape
        self.score = nn.Linear(widths[-1] * h * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.config.conv_shape
        x = F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]))  # (B, C, 88, 200)
        f = self.features(x)  # (B, c0, 11, 25)
        return self.score(f.flatten(1)).squeeze(-1)  # (B,)


def build_gan(config: GanConfig) -> tuple[_Generator, nn.Module]:
    """``(generator, discriminator_or_critic)`` for ``config.kind``."""
    if config.kind == "gan":
        return DenseGenerator(config), DenseDiscriminator(config)
    return ConvGenerator(config), ConvCritic(config)


# -- losses ------------------------------------------------------------------------------------------


def bce_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-(log D(x) + log(1 - D(G(z)))) / 2`` with ``D = sigmoid(logit)``."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return (real + fake) / 2


def bce_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``-log D(G(z))``."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def wasserstein_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``E[f(G(z))] - E[f(x)]`` (the critic maximises the score gap)."""
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-E[f(G(z))]``."""
    return -fake_scores.mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = 10.0,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """``weight * E[(||grad_x f(x_hat)||_2 - 1)^2]`` at ``x_hat = eps * real + (1 - eps) * fake``.

    Parameters
    ----------
    critic : callable
        ``(B, C, H, W) -> (B,)``; must treat samples independently (no BatchNorm).
    real, fake : Tensor
        ``(B, C, H, W)``.
    weight : float
        lambda, 10 in the WGAN-GP paper.
    eps : Tensor, optional
        ``(B,)`` interpolation weights; drawn from U(0, 1) when omitted.
    """
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    eps = eps.view(-1, *([1] * (real.dim() - 1)))  # (B, 1, 1, 1)
    x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)  # (B,)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)  # (B, C, H, W)
    norms = grad.flatten(1).norm(2, dim=1)  # (B,)
    return weight * ((norms - 1) ** 2).mean()


#: kind -> (discriminator/critic loss, generator loss, whether to add the gradient penalty)
LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor], bool]] = {
    "gan": (bce_discriminator_loss, bce_generator_loss, False),
    "dcgan": (bce_discriminator_loss, bce_generator_loss, False),
    "wgan-gp": (wasserstein_critic_loss, wasserstein_generator_loss, True),
}


def critic_objective(config: GanConfig, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator/critic loss of ``config.kind`` on one batch, penalty included where it applies."""
    d_loss, _, use_gp = LOSSES[config.kind]
    loss = d_loss(critic(real), critic(fake.detach()))
    if use_gp:
        loss = loss + gradient_penalty(critic, real, fake, weight=config.gp_weight)
    return loss


def generator_objective(config: GanConfig, critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """The generator loss of ``config.kind`` on generated images ``fake``."""
    _, g_loss, _ = LOSSES[config.kind]
    return g_loss(critic(fake))
