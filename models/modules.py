"""How each model family trains on image batches: :class:`~models.trainer.TrainModule` adapters.

A batch is what ``tasks.steps.loader.ShardDataset`` yields: ``(images, meta)`` with uint8 rolls
``(B, C, rows, columns)`` (88 x 200 in the paper) or float16 Hilbert images ``(B, 1, 256, 256)``. Which
family uses which adapter is said by its spec (:mod:`models.registry`). Everything here is torch only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.gan import GanConfig, critic_objective, generator_objective
from models.trainer import StepContext, TrainConfig, make_optimizer


def images_of(batch: Any) -> torch.Tensor:
    """Float images in [0, 1] from a loader batch (uint8 rolls are divided by 255)."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


def columns_of(batch: Any, channel: int = 0) -> torch.Tensor:
    """One channel of a batch of rolls as column sequences ``(B, T, 88)`` in [0, 1]."""
    return images_of(batch)[:, channel].transpose(1, 2)  # (B, 88, T) -> (B, T, 88)


class AdversarialModule:
    """The one adversarial trainer: GAN, DCGAN and WGAN-GP differ only in their losses (``config.kind``).

    Each step updates the critic ``n_critic`` times on the same real batch, then the generator once.
    The monitored "loss" is the generator's objective (GANs have no held-out loss that means much;
    early stopping is best left off for them).
    """

    def __init__(self, config: GanConfig, generator: nn.Module, critic: nn.Module, n_critic: int = 1):
        self.config = config
        self.generator = generator
        self.critic = critic
        self.n_critic = n_critic
        self.ctx = StepContext()

    def setup(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self.critic}

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {"generator": make_optimizer(self.generator.parameters(), cfg),
                "critic": make_optimizer(self.critic.parameters(), cfg)}

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, device=self.ctx.device)

    def train_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, float]:
        real = images_of(batch)  # (B, C, H, W)
        n = real.shape[0]
        d_opt, g_opt = optimizers["critic"], optimizers["generator"]
        for _ in range(self.n_critic):
            d_opt.zero_grad(set_to_none=True)
            with torch.no_grad(), self.ctx.autocast():
                fake = self.generator(self._noise(n))
            d_loss = critic_objective(self.config, self.critic, real, fake.float())
            d_loss.backward()
            self.ctx.clip(self.critic)
            d_opt.step()
        g_opt.zero_grad(set_to_none=True)
        with self.ctx.autocast():
            fake = self.generator(self._noise(n))
        g_loss = generator_objective(self.config, self.critic, fake.float())
        g_loss.backward()
        self.ctx.clip(self.generator)
        g_opt.step()
        return {"loss": float(g_loss.detach()), "critic_loss": float(d_loss.detach())}

    def val_step(self, batch: Any) -> dict[str, float]:
        real = images_of(batch)
        fake = self.generator(self._noise(real.shape[0]))
        return {"loss": float(generator_objective(self.config, self.critic, fake)),
                "critic_real": float(self.critic(real).mean()), "critic_fake": float(self.critic(fake).mean())}


def next_column_pairs(batch: Any, channel: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: inputs are columns ``0..T-2``, targets columns ``1..T-1``."""
    x = columns_of(batch, channel)  # (B, T, 88)
    return x[:, :-1], x[:, 1:]


def seq2seq_pairs(batch: Any, context: int, horizon: int, channel: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``context`` input columns and the ``horizon`` columns after them."""
    x = columns_of(batch, channel)  # (B, T, 88)
    if x.shape[1] < context + horizon:
        raise ValueError(f"windows of {x.shape[1]} columns cannot hold {context} + {horizon}")
    return x[:, :context], x[:, context:context + horizon]


def chunk_starts(T: int, context: int, horizon: int) -> list[int]:
    """First columns of the ``horizon``-column chunks covering columns ``context..T-1``: every ``horizon``
    columns from ``context``, the last one moved back to end at ``T`` (it may overlap the one before)."""
    if T < context + horizon:
        raise ValueError(f"windows of {T} columns cannot hold {context} + {horizon}")
    starts = list(range(context, T - horizon + 1, horizon))
    if starts[-1] + horizon < T:
        starts.append(T - horizon)
    return starts


def seq2seq_all_pairs(batch: Any, context: int, horizon: int, channel: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every target column of a window: one pair per chunk of :func:`chunk_starts`, ``(B * chunks,
    context, 88)`` inputs (the ``context`` columns before the chunk) and ``(B * chunks, horizon, 88)`` targets,
    window by window."""
    x = columns_of(batch, channel)  # (B, T, 88)
    starts = chunk_starts(x.shape[1], context, horizon)
    inputs = torch.stack([x[:, s - context:s] for s in starts], dim=1)  # (B, chunks, context, 88)
    targets = torch.stack([x[:, s:s + horizon] for s in starts], dim=1)  # (B, chunks, horizon, 88)
    return inputs.flatten(0, 1), targets.flatten(0, 1)
