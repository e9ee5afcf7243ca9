"""How each model family trains on image batches: :class:`~models.trainer.TrainModule` adapters.

A batch is what ``tasks.steps.loader.ShardDataset`` yields: ``(images, meta)`` with uint8 rolls
``(B, C, rows, columns)`` (88 x 200 in the paper) or float16 Hilbert images ``(B, 1, 256, 256)``. Which
family uses which adapter is said by its spec (:mod:`models.registry`). Everything here is torch only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from models import gan_decode
from models.gan import GanConfig, critic_objective, generator_objective
from models.gan_decode import RollStats, roll_stats, sample_distance
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

    Every training step updates the critic once on its batch; after every ``config.n_critic``-th critic
    update the generator is updated once (Gulrajani et al. 2017, Algorithm 1: each critic iteration sees
    its own real batch). The optimizers are Adam (or what ``TrainConfig.optimizer`` names) with
    ``config.lr`` / ``config.betas`` where set, else the ``TrainConfig``'s. A step's metrics: ``critic_loss``
    and ``loss``, the generator objective of the latest generator update (computed without an update
    before the first one).

    Checkpoints are chosen by ``monitor = "sample_distance"``: each validation pass gathers the statistics
    of the real validation windows (:func:`models.gan_decode.roll_stats`), then :meth:`val_epoch_end`
    generates ``val_samples`` images from a fixed, seeded noise batch, decodes them with one threshold
    fitted so that their lit-pixel density equals the validation windows' (the per-key shape and the note
    structure are left to the generator) and returns :func:`models.gan_decode.sample_distance` (lower is
    better) with the note density and polyphony of both sides.
    """

    monitor = "sample_distance"

    def __init__(self, config: GanConfig, generator: nn.Module, critic: nn.Module, val_samples: int = 64,
                 val_seed: int = 0):
        self.config = config
        self.generator = generator
        self.critic = critic
        self.n_critic = config.n_critic
        self.val_samples = val_samples
        self.val_seed = val_seed
        self.ctx = StepContext()
        self._g_loss: float | None = None
        self._fixed_noise: torch.Tensor | None = None
        self._reset_val()

    def setup(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self.critic}

    def optimizer_config(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with the GAN's own ``lr`` / ``betas`` where its config sets them."""
        changes = {k: v for k, v in (("lr", self.config.lr), ("betas", self.config.betas)) if v is not None}
        return dataclasses.replace(cfg, **changes) if changes else cfg

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        cfg = self.optimizer_config(cfg)
        return {"generator": make_optimizer(self.generator.parameters(), cfg),
                "critic": make_optimizer(self.critic.parameters(), cfg)}

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, device=self.ctx.device)

    def train_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, float]:
        real = images_of(batch)  # (B, C, H, W)
        n = real.shape[0]
        d_opt, g_opt = optimizers["critic"], optimizers["generator"]
        d_opt.zero_grad(set_to_none=True)
        with torch.no_grad(), self.ctx.autocast():
            fake = self.generator(self._noise(n))
        d_loss = critic_objective(self.config, self.critic, real, fake.float())
        d_loss.backward()
        self.ctx.clip(self.critic)
        d_opt.step()
        if (step + 1) % self.n_critic == 0:  # `step` counts from 0 over the whole run (resume-safe)
            g_opt.zero_grad(set_to_none=True)
            with self.ctx.autocast():
                fake = self.generator(self._noise(n))
            g_loss = generator_objective(self.config, self.critic, fake.float())
            g_loss.backward()
            self.ctx.clip(self.generator)
            g_opt.step()
            self._g_loss = float(g_loss.detach())
        elif self._g_loss is None:
            with torch.no_grad():
                self._g_loss = float(generator_objective(self.config, self.critic, fake.float()))
        return {"loss": self._g_loss, "critic_loss": float(d_loss.detach())}

    # -- validation: losses per batch, a distance of samples per pass -------------------------------

    def _reset_val(self) -> None:
        self._real_stats: RollStats | None = None
        self._real_lit = 0
        self._real_pixels = 0

    def val_step(self, batch: Any) -> dict[str, float]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        real = images_of(batch)
        fake = self.generator(self._noise(real.shape[0]))
        if images.dtype == torch.uint8:  # rolls: gather what the sample distance compares against
            state = images[:, 0].cpu().numpy()  # (B, K, T)
            stats = roll_stats(state, self.config.state_channel)
            self._real_stats = stats if self._real_stats is None else self._real_stats + stats
            self._real_lit += int((state != 0).sum())
            self._real_pixels += state.size
        return {"loss": float(generator_objective(self.config, self.critic, fake)),
                "critic_real": float(self.critic(real).mean()), "critic_fake": float(self.critic(fake).mean())}

    def fixed_noise(self) -> torch.Tensor:
        """The seeded noise batch every validation pass generates from, ``(val_samples, latent_dim)``."""
        if self._fixed_noise is None:
            g = torch.Generator().manual_seed(self.val_seed)
            self._fixed_noise = torch.randn(self.val_samples, self.config.latent_dim, generator=g)
        return self._fixed_noise.to(self.ctx.device)

    def val_epoch_end(self) -> dict[str, float]:
        real, lit, pixels = self._real_stats, self._real_lit, self._real_pixels
        self._reset_val()
        if real is None:
            return {}
        with torch.no_grad():
            values = self.generator(self.fixed_noise())[:, 0].float().cpu().numpy()  # (S, K, T)
        flat = values.reshape(-1)
        threshold = gan_decode.threshold_for_count(flat, round(lit / pixels * flat.size))
        state = gan_decode.decode_state(values, values > threshold, self.config.state_channel)
        fake = roll_stats(state, self.config.state_channel)
        return {"sample_distance": sample_distance(fake, real), "sample_note_density": fake.note_density,
                "sample_polyphony": fake.polyphony, "val_note_density": real.note_density,
                "val_polyphony": real.polyphony}


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
