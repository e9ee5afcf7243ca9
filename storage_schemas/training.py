"""How to train a model, as stored with every run: :class:`TrainConfig`.

Frozen and versioned; checkpoints and a run's ``history.json`` hold its :meth:`TrainConfig.to_dict`. The one
place the training defaults are stated: ``midipix train`` and the Prefect form of the ``train-model`` flow
validate into this object, and the trainer (:mod:`models.trainer`) reads it. This module imports neither
torch nor prefect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TRAIN_CONFIG_VERSION", "TrainConfig"]

TRAIN_CONFIG_VERSION = 1  # TrainConfig.to_dict's "schema_version"

_OPTIMIZERS = ("adam", "sgd")
_PRECISIONS = ("auto", "fp32", "bf16")
_RECOVERIES = ("sgd", "reload")


@dataclass(frozen=True)
class TrainConfig:
    """How to train, independent of the model. Frozen, versioned; ``to_dict`` / ``from_dict`` round-trip via JSON.

    Parameters
    ----------
    epochs : int
        Number of epochs (numbered 1..epochs).
    batch_size : int
        Images per training step (the size of the batches the caller's data loader yields).
    lr, betas, weight_decay : float, (float, float), float
        Optimizer settings (``betas`` for Adam).
    optimizer : {"adam", "sgd"}
        Optimizer family built by :func:`models.trainer.make_optimizer`.
    momentum : float
        SGD momentum (also used by the spike recovery).
    grad_clip : float or None
        Max global gradient norm applied by :meth:`models.trainer.StepContext.clip`; None = no clipping.
    seed : int
        Seeds torch, numpy and ``random`` at the start of :meth:`models.trainer.Trainer.fit`.
    device : str
        "auto" (CUDA when available, else CPU) or anything ``torch.device`` accepts.
    precision : {"auto", "fp32", "bf16"}
        "auto" = bf16 autocast on CUDA, fp32 elsewhere.
    early_stopping_patience : int or None
        Stop after this many epochs without improvement of the monitored loss; None = off.
    spike_factor : float or None
        A training loss above ``spike_factor`` x the best epoch's mean training loss (or a non-finite
        loss) is a spike; None = off.
    spike_recovery : {"sgd", "reload"}
        On a spike reload the ``best`` checkpoint's weights, then "sgd": continue with SGD + momentum at
        ``lr * spike_lr_scale`` (the paper's recovery); "reload": rebuild the configured optimizer fresh.
    spike_lr_scale : float
        Learning-rate factor for the SGD recovery.
    max_steps_per_epoch : int or None
        Cap on training steps per epoch; None = the whole iterable.
    time_budget_s : float or None
        Stop training once this many seconds of training steps (summed over the run's epochs, a resumed
        run included) are spent: the epoch under way ends after the step that crosses it, is validated and
        checkpointed, and the run is finished (``stop_reason`` "time_budget"). How many steps fit depends
        on the machine, so a budgeted run is reproducible only given its step count. None = off.
    log_every : int
        Log the training metrics every this many steps; 0 = off.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    early_stopping_patience: int | None = None
    spike_factor: float | None = None
    spike_recovery: str = "sgd"
    spike_lr_scale: float = 1.0
    max_steps_per_epoch: int | None = None
    time_budget_s: float | None = None
    log_every: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _check(isinstance(self.epochs, int) and self.epochs >= 0, "epochs must be an int >= 0")
        _check(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size must be an int >= 1")
        _check(self.lr >= 0, "lr must be >= 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas: two values in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay must be >= 0")
        _check(self.optimizer in _OPTIMIZERS, f"optimizer must be one of {_OPTIMIZERS}")
        _check(0 <= self.momentum < 1, "momentum must be in [0, 1)")
        _check(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be None or > 0")
        _check(isinstance(self.seed, int), "seed must be an int")
        _check(isinstance(self.device, str) and bool(self.device), "device must be a non-empty string")
        _check(self.precision in _PRECISIONS, f"precision must be one of {_PRECISIONS}")
        _check(
            self.early_stopping_patience is None
            or (isinstance(self.early_stopping_patience, int) and self.early_stopping_patience >= 1),
            "early_stopping_patience must be None or an int >= 1",
        )
        _check(self.spike_factor is None or self.spike_factor > 1, "spike_factor must be None or > 1")
        _check(self.spike_recovery in _RECOVERIES, f"spike_recovery must be one of {_RECOVERIES}")
        _check(self.spike_lr_scale > 0, "spike_lr_scale must be > 0")
        _check(
            self.max_steps_per_epoch is None
            or (isinstance(self.max_steps_per_epoch, int) and self.max_steps_per_epoch >= 1),
            "max_steps_per_epoch must be None or an int >= 1",
        )
        _check(self.time_budget_s is None or self.time_budget_s > 0, "time_budget_s must be None or > 0")
        _check(isinstance(self.log_every, int) and self.log_every >= 0, "log_every must be an int >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (``betas`` as a list) with its ``schema_version``."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return {"schema_version": TRAIN_CONFIG_VERSION, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys or another schema version are an error, missing keys take
        the defaults."""
        d = dict(d)
        version = d.pop("schema_version", TRAIN_CONFIG_VERSION)
        if version != TRAIN_CONFIG_VERSION:
            raise ValueError(f"unsupported TrainConfig schema_version {version!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known: {', '.join(known)}")
        return cls(**d)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
