"""The paper's convolutional autoencoder on Hilbert images (1, 256, 256), 148,081 parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from .configs import config_from_dict

__all__ = ["AutoencoderConfig", "ConvAutoencoder"]


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of the autoencoder.

    Parameters
    ----------
    channels : int
        Image channels (1: one audio channel).
    size : int
        Image side (256: 65,536 samples on a Hilbert curve of order 8).
    encoder : tuple of int
        Output channels of the encoder convolutions, each followed by a 2x max-pool except the last.
    kernel : int
        Kernel side of the hidden convolutions (4, 'same' padding).
    out_kernel : int
        Kernel side of the output convolution (3).
    """

    channels: int = 1
    size: int = 256
    encoder: tuple[int, ...] = (16, 32, 64, 64)
    kernel: int = 4
    out_kernel: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", tuple(int(v) for v in self.encoder))
        if len(self.encoder) < 2:
            raise ValueError("encoder needs at least two convolutions")
        if self.size % 2 ** (len(self.encoder) - 1):
            raise ValueError(f"size must be divisible by {2 ** (len(self.encoder) - 1)}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return config_from_dict(cls, data)


class ConvAutoencoder(nn.Module):
    """Conv(1->16) pool Conv(16->32) pool Conv(32->64) pool Conv(64->64) | up Conv(64->32) up Conv(32->16) up
    Conv(16->1, 3x3) -> sigmoid; 4x4 kernels, 'same' padding, ReLU between.

    With the defaults: ``(B, 1, 256, 256) -> (B, 64, 32, 32) -> (B, 1, 256, 256)``.
    """

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.config = config
        k = config.kernel
        enc: list[nn.Module] = []
        cin = config.channels
        for i, cout in enumerate(config.encoder):
            if i > 0:
                enc.append(nn.MaxPool2d(2))
            enc += [nn.Conv2d(cin, cout, k, padding="same"), nn.ReLU()]
            cin = cout
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        for cout in reversed(config.encoder[:-2]):  # 64 -> 32 -> 16 for the defaults
            dec += [nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, k, padding="same"), nn.ReLU()]
            cin = cout
        dec.append(nn.Upsample(scale_factor=2))
        self.decoder = nn.Sequential(*dec)
        self.out = nn.Conv2d(cin, config.channels, config.out_kernel, padding="same")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, 1, 256, 256) -> (B, 64, 32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)  # (B, 64, 32, 32)
        x = self.decoder(z)  # (B, 16, 256, 256)
        return torch.sigmoid(self.out(x))  # (B, 1, 256, 256)
