"""One generic trainer for every model family.

Nothing in this file has anything to do with LSTMs, autoencoders or GANs. The model-specific part is a
:class:`TrainModule`: it names its networks and optimizers and performs one training step (its own
``zero_grad`` / ``backward`` / ``step``, so adversarial updates fit). The trainer owns everything else:
seeding, the device and precision, the epoch loop, validation, early stopping, loss-spike recovery,
checkpoints (with their config and the caller's ``run_meta``) and exact resume.

Checkpoints are ``torch.save`` of plain values only (tensors, numbers, strings, lists, dicts) so they load
with ``torch.load(weights_only=True)``; nothing in a checkpoint is ever unpickled as an arbitrary object.

Imports torch, numpy, the standard library and :class:`~storage_schemas.training.TrainConfig` only.
"""

from __future__ import annotations

import collections.abc

import contextlib
import dataclasses
import io
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from storage_schemas.training import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "Callback",
    "CheckpointError",
    "CheckpointMeta",
    "CheckpointStore",
    "MemoryCheckpoints",
    "StepContext",
    "StopTraining",
    "SupervisedModule",
    "TrainConfig",
    "TrainModule",
    "TrainResult",
    "Trainer",
    "load_checkpoint",
    "make_optimizer",
    "rebuild_meta",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "midipix.trainer.checkpoint"
CHECKPOINT_VERSION = 1



# -- configuration (TrainConfig: storage_schemas.training, stored in every checkpoint) -------------------


def resolve_device(cfg: TrainConfig) -> torch.device:
    """``cfg.device`` as a ``torch.device``; "auto" is CUDA when available, else CPU."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """"fp32" or "bf16"; "auto" is bf16 on a CUDA device that supports it, fp32 elsewhere."""
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names: Adam(lr, betas, weight_decay) or SGD(lr, momentum, weight_decay).

    Modules should build their optimizers with this so that the spike recovery (which calls
    ``module.optimizers(cfg)`` with ``optimizer="sgd"``) takes effect.
    """
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy's global RNG and ``random``. Call it before building a model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- the model-specific part -------------------------------------------------------------------------


@dataclass(frozen=True)
class StepContext:
    """What the trainer lends a module's steps: the device, an autocast context and gradient clipping.

    Handed to ``module.setup(ctx)`` (when the module defines it) before training starts.
    """

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    grad_clip: float | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when the precision is "bf16", else a no-op context."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def clip(self, params: Iterable[nn.Parameter] | nn.Module) -> float | None:
        """Clip the gradients' global norm to ``grad_clip``; returns the norm before clipping (or None)."""
        if self.grad_clip is None:
            return None
        if isinstance(params, nn.Module):
            params = params.parameters()
        return float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))


@runtime_checkable
class TrainModule(Protocol):
    """The model-specific part of training.

    Required: ``modules``, ``optimizers``, ``train_step``, ``val_step``. Optional: ``setup(ctx)`` (receives
    the :class:`StepContext`) and ``on_epoch_end(epoch, metrics)``. State outside ``modules()`` and
    ``optimizers()`` is not checkpointed.
    """

    def modules(self) -> dict[str, nn.Module]:
        """The networks by name (checkpointed, moved to the device, switched train/eval)."""
        ...

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Fresh optimizers by name, built from ``cfg`` (use :func:`make_optimizer`)."""
        ...

    def train_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, float]:
        """One update (zero_grad / backward / step inside); returns metrics, "loss" feeds spike detection."""
        ...

    def val_step(self, batch: Any) -> dict[str, float]:
        """Metrics of one validation batch (run under ``torch.no_grad``), averaged over the validation set
        weighted by batch size. The monitored metric is "loss" unless the module names another (below)."""
        ...

    # Optional, looked up with getattr:
    # - ``monitor``: the name of the validation metric that picks ``best`` and drives early stopping
    #   (lower is better; default "loss"). A score where higher is better is returned negated.
    # - ``val_epoch_end() -> dict``: metrics of the whole validation pass (not batch means, e.g. an F1 from
    #   counts summed over batches, or a score of samples), merged into the epoch's validation metrics;
    #   called after the last ``val_step`` of each pass, so a module resets what it gathered there.


class SupervisedModule:
    """The one-network case: ``loss_fn(model(inputs), target)`` with ``(inputs, target) = input_fn(batch)``.

    Parameters
    ----------
    model : nn.Module
        The network; checkpointed under the name "model".
    loss_fn : callable
        ``loss_fn(prediction, target) -> scalar tensor``; evaluated in float32.
    input_fn : callable, optional
        ``batch -> (inputs, target)``; a tuple/list ``inputs`` is unpacked into ``model(*inputs)``.
        Default: the batch is already ``(inputs, target)``. An autoencoder passes ``lambda b: (b, b)``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, Any], torch.Tensor],
        input_fn: Callable[[Any], tuple[Any, Any]] | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.input_fn = input_fn if input_fn is not None else _pair
        self.ctx = StepContext()

    def setup(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {"model": make_optimizer(self.model.parameters(), cfg)}

    def loss(self, batch: Any) -> torch.Tensor:
        inputs, target = self.input_fn(batch)
        with self.ctx.autocast():
            pred = self.model(*inputs) if isinstance(inputs, (tuple, list)) else self.model(inputs)
        pred = pred.float() if torch.is_tensor(pred) else pred
        return self.loss_fn(pred, target)

    def train_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, float]:
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        self.ctx.clip(self.model)
        opt.step()
        return {"loss": float(loss.detach())}

    def val_step(self, batch: Any) -> dict[str, float]:
        return {"loss": float(self.loss(batch))}


def _pair(batch: Any) -> tuple[Any, Any]:
    inputs, target = batch
    return inputs, target


# -- checkpoint storage ------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely (foreign objects, wrong format, mismatched names)."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live: named blobs of bytes."""

    def save(self, name: str, data: bytes) -> None: ...

    def load(self, name: str) -> bytes | None: ...


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"bad checkpoint name {name!r}")
    return name


class MemoryCheckpoints:
    """Checkpoints in a dict (tests, throw-away runs)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def save(self, name: str, data: bytes) -> None:
        self.blobs[_check_name(name)] = bytes(data)

    def load(self, name: str) -> bytes | None:
        return self.blobs.get(_check_name(name))


def load_checkpoint(data: bytes) -> dict[str, Any]:
    """Decode checkpoint bytes with ``torch.load(weights_only=True)`` onto the CPU.

    Returns the checkpoint dict: ``modules`` / ``optimizers`` (state_dicts by name), ``epoch`` (last
    completed, 1-based), ``global_step``, ``best_metric``, ``best_epoch``, ``history``, ``rng``, ``config``
    (``TrainConfig.to_dict()``), ``run_meta`` and trainer bookkeeping.

    Raises
    ------
    CheckpointError
        When the bytes hold anything but plain values (a foreign pickled object) or are not a checkpoint.
    """
    try:
        ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # the safe unpickler refuses foreign globals with an UnpicklingError
        raise CheckpointError(f"refusing checkpoint: {e}") from e
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("not a midipix trainer checkpoint")
    if ck.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint format version {ck['format_version']} is newer than this code")
    return ck


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself: enough to rebuild the model without the code's defaults."""

    config: TrainConfig
    run_meta: dict[str, Any]
    epoch: int
    global_step: int
    best_epoch: int | None
    best_metric: float | None


def rebuild_meta(data: bytes) -> CheckpointMeta:
    """The :class:`TrainConfig`, ``run_meta`` and progress stored in checkpoint bytes."""
    ck = load_checkpoint(data)
    return CheckpointMeta(
        config=TrainConfig.from_dict(ck["config"]),
        run_meta=ck["run_meta"],
        epoch=ck["epoch"],
        global_step=ck["global_step"],
        best_epoch=ck["best_epoch"],
        best_metric=ck["best_metric"],
    )


# -- callbacks and results ---------------------------------------------------------------------------


class StopTraining(Exception):
    """Raised by a callback to end training cleanly after the current epoch (its checkpoint is kept)."""


class Callback:
    """No-op base; override what you need. Any other exception raised here propagates out of ``fit``."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, name: str) -> None:
        pass


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    ``history`` has one dict per epoch: ``epoch``, ``train`` and ``val`` metric means, ``seconds``,
    ``samples``, ``steps``, ``samples_per_s``, ``data_wait_share`` (time blocked in ``iter``/``next`` of the
    training data over the training loop's time), ``optimizer`` and ``spikes`` (events of that epoch).
    """

    history: list[dict[str, Any]]
    best_epoch: int | None
    best_metric: float | None
    stopped_early: bool
    stop_reason: str | None  # "early_stopping" | "callback" | "time_budget" | None
    recovered_from_spike: int
    resumed_from_epoch: int  # 0 for a fresh run
    global_step: int


# -- the trainer -------------------------------------------------------------------------------------


class Trainer:
    """Train a :class:`TrainModule` on iterables of batches, with checkpoints, resume and callbacks.

    Parameters
    ----------
    module : TrainModule
        The model-specific part.
    cfg : TrainConfig
    train_data, val_data : iterable of batches
        Re-iterable (a DataLoader or a list); batches may be tensors or nested tuples/lists/dicts of them.
    checkpoints : CheckpointStore
        ``last`` is written after every epoch, ``best`` whenever the monitored metric improves (the
        validation metric the module names as ``monitor``, default "loss"; the training "loss" without
        validation data).
    run_meta : dict
        Plain JSON-like values stored in every checkpoint (model name, model config, dataset version...).
    callbacks : sequence
        Objects with optional ``on_epoch_end(trainer, epoch, metrics)`` and ``on_checkpoint(name)``.

    Notes
    -----
    Seed before building the model (:func:`seed_everything`); ``fit`` seeds again, and on CPU two runs with
    the same seed — or a killed run resumed — end with bit-identical parameters.
    """

    def __init__(
        self,
        module: TrainModule,
        cfg: TrainConfig,
        train_data: Iterable[Any],
        val_data: Iterable[Any] | None = None,
        checkpoints: CheckpointStore | None = None,
        run_meta: Mapping[str, Any] | None = None,
        callbacks: Sequence[Any] = (),
    ) -> None:
        for name in ("modules", "optimizers", "train_step", "val_step"):
            if not callable(getattr(module, name, None)):
                raise TypeError(f"module lacks {name}()")
        if cfg.epochs > 1 and isinstance(train_data, collections.abc.Iterator):  # iter() would start workers
            raise TypeError("train_data is a one-shot iterator; pass a re-iterable (list, DataLoader)")
        self.module = module
        self.cfg = cfg
        self.train_data = train_data
        self.val_data = val_data
        self.checkpoints = checkpoints if checkpoints is not None else MemoryCheckpoints()
        self.run_meta = _plain(dict(run_meta or {}), "run_meta")
        self.callbacks = tuple(callbacks)
        self.device = resolve_device(cfg)
        self.precision = resolve_precision(cfg, self.device)
        self.ctx = StepContext(self.device, self.precision, cfg.grad_clip)
        self.nets = dict(module.modules())
        for net in self.nets.values():
            net.to(self.device)
        if callable(getattr(module, "setup", None)):
            module.setup(self.ctx)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.epoch = 0  # last completed epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.best_train_loss: float | None = None  # the best epoch's mean training loss (spike reference)
        self.epochs_without_improvement = 0
        self.recovered_from_spike = 0
        self.stop_reason: str | None = None
        self.optimizer_overrides: dict[str, Any] = {}  # set by the SGD spike recovery
        self.resumed_from_epoch = 0

    # -- public ------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train (resuming from ``last`` when present) and return the :class:`TrainResult`."""
        det_before = torch.are_deterministic_algorithms_enabled()
        warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            seed_everything(self.cfg.seed)
            self.optimizers = dict(self.module.optimizers(self._optimizer_cfg()))
            last = self.checkpoints.load("last")
            if last is not None:
                self._restore(load_checkpoint(last))
            while self.epoch < self.cfg.epochs and self.stop_reason is None:
                self._run_epoch(self.epoch + 1)
        finally:
            torch.use_deterministic_algorithms(det_before, warn_only=warn_before)
        return self.result()

    def result(self) -> TrainResult:
        return TrainResult(
            history=list(self.history),
            best_epoch=self.best_epoch,
            best_metric=self.best_metric,
            stopped_early=self.stop_reason is not None,
            stop_reason=self.stop_reason,
            recovered_from_spike=self.recovered_from_spike,
            resumed_from_epoch=self.resumed_from_epoch,
            global_step=self.global_step,
        )

    # -- one epoch ---------------------------------------------------------------------------------

    def _run_epoch(self, epoch: int) -> None:
        t_epoch = time.perf_counter()
        train, loop_s, wait_s, samples, steps, spikes = self._train_epoch(epoch)
        val = self._validate() if self.val_data is not None else {}
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train": train,
            "val": val,
            "seconds": time.perf_counter() - t_epoch,
            "train_seconds": loop_s,
            "samples": samples,
            "steps": steps,
            "samples_per_s": samples / loop_s if loop_s > 0 else 0.0,
            "data_wait_share": wait_s / loop_s if loop_s > 0 else 0.0,
            "optimizer": self._optimizer_cfg().optimizer,
            "spikes": spikes,
        }
        self.epoch = epoch
        self.history.append(entry)

        key = getattr(self.module, "monitor", "loss") if self.val_data is not None else "loss"
        monitored = (val if self.val_data is not None else train).get(key)
        improved = monitored is not None and math.isfinite(monitored) and (
            self.best_metric is None or monitored < self.best_metric
        )
        if improved:
            self.best_metric, self.best_epoch = float(monitored), epoch
            self.best_train_loss = train.get("loss")
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        patience = self.cfg.early_stopping_patience
        if patience is not None and self.epochs_without_improvement >= patience:
            self.stop_reason = "early_stopping"
        log.info(
            "epoch %d/%d train %s val %s (%.1f s, %.0f samples/s, data wait %.0f%%)",
            epoch, self.cfg.epochs, _fmt(train), _fmt(val), entry["seconds"], entry["samples_per_s"],
            100 * entry["data_wait_share"],
        )

        hook = getattr(self.module, "on_epoch_end", None)
        if callable(hook):
            hook(epoch, entry)
        data = self._checkpoint_bytes()
        self._save("last", data)
        if improved:
            self._save("best", data)
        try:
            for cb in self.callbacks:
                fn = getattr(cb, "on_epoch_end", None)
                if callable(fn):
                    fn(self, epoch, entry)
        except StopTraining:
            log.info("a callback stopped training after epoch %d", epoch)
            self.stop_reason = "callback"
            self._save("last", self._checkpoint_bytes())

    def _train_epoch(self, epoch: int):
        for net in self.nets.values():
            net.train()
        cap = self.cfg.max_steps_per_epoch
        sums: dict[str, float] = {}
        weight = 0
        samples = steps = 0
        spikes: list[dict[str, Any]] = []
        wait = 0.0
        budget = self.cfg.time_budget_s
        spent = sum(h.get("train_seconds", 0.0) for h in self.history)  # earlier epochs, a resumed run's too
        t_loop = time.perf_counter()
        t0 = time.perf_counter()
        iterator: Iterator[Any] = iter(self.train_data)
        wait += time.perf_counter() - t0
        while cap is None or steps < cap:
            t0 = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                wait += time.perf_counter() - t0
                break
            wait += time.perf_counter() - t0
            n = _batch_size(batch)
            batch = _to_device(batch, self.device)
            metrics = {k: float(v) for k, v in self.module.train_step(batch, self.optimizers, self.global_step).items()}
            self.global_step += 1
            steps += 1
            samples += n
            loss = metrics.get("loss")
            if loss is not None and self._is_spike(loss):
                spikes.append(self._recover(epoch, loss))
                continue  # the spiking step's metrics stay out of the epoch means
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v * n
            weight += n
            if self.cfg.log_every and self.global_step % self.cfg.log_every == 0:
                log.info("epoch %d step %d %s", epoch, self.global_step, _fmt(metrics))
            if budget is not None and spent + time.perf_counter() - t_loop >= budget:
                log.info("time budget of %.0f s spent at step %d: this epoch is the last", budget, self.global_step)
                self.stop_reason = "time_budget"
                break
        loop_s = time.perf_counter() - t_loop
        if steps == 0:
            raise ValueError("train_data yielded no batches")
        means = {k: v / weight for k, v in sums.items()} if weight else {}
        return means, loop_s, wait, samples, steps, spikes

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        for net in self.nets.values():
            net.eval()
        sums: dict[str, float] = {}
        weight = 0
        try:
            for batch in self.val_data:
                n = _batch_size(batch)
                metrics = self.module.val_step(_to_device(batch, self.device))
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
                weight += n
            out = {k: v / weight for k, v in sums.items()} if weight else {}
            end = getattr(self.module, "val_epoch_end", None)
            if callable(end) and weight:
                with torch.no_grad():
                    out.update({k: float(v) for k, v in end().items()})
        finally:
            for net in self.nets.values():
                net.train()
        return out

    # -- loss spikes -------------------------------------------------------------------------------

    def _is_spike(self, loss: float) -> bool:
        ref = self.best_train_loss
        if self.cfg.spike_factor is None or ref is None or not (ref > 0):
            return False
        return not math.isfinite(loss) or loss > self.cfg.spike_factor * ref

    def _recover(self, epoch: int, loss: float) -> dict[str, Any]:
        """Reload the ``best`` weights and rebuild the optimizers (SGD + momentum for "sgd")."""
        threshold = self.cfg.spike_factor * self.best_train_loss
        data = self.checkpoints.load("best")
        if data is None:
            raise RuntimeError("loss spike but no 'best' checkpoint to recover from")
        self._load_modules(load_checkpoint(data)["modules"])
        if self.cfg.spike_recovery == "sgd":
            self.optimizer_overrides = {"optimizer": "sgd", "lr": self.cfg.lr * self.cfg.spike_lr_scale}
        self.optimizers = dict(self.module.optimizers(self._optimizer_cfg()))
        self.recovered_from_spike += 1
        log.warning(
            "loss spike at epoch %d step %d: %.4g > %.4g; reloaded best (epoch %s), optimizer now %s lr %.3g",
            epoch, self.global_step, loss, threshold, self.best_epoch, self._optimizer_cfg().optimizer,
            self._optimizer_cfg().lr,
        )
        return {"step": self.global_step, "loss": loss, "threshold": threshold, "reloaded_epoch": self.best_epoch}

    def _optimizer_cfg(self) -> TrainConfig:
        return dataclasses.replace(self.cfg, **self.optimizer_overrides) if self.optimizer_overrides else self.cfg

    # -- checkpoints -------------------------------------------------------------------------------

    def _save(self, name: str, data: bytes) -> None:
        self.checkpoints.save(name, data)
        for cb in self.callbacks:
            fn = getattr(cb, "on_checkpoint", None)
            if callable(fn):
                fn(name)

    def _checkpoint_bytes(self) -> bytes:
        state = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_train_loss": self.best_train_loss,
            "epochs_without_improvement": self.epochs_without_improvement,
            "recovered_from_spike": self.recovered_from_spike,
            "stop_reason": self.stop_reason,
            "optimizer_overrides": dict(self.optimizer_overrides),
            "history": self.history,
            "modules": {k: net.state_dict() for k, net in self.nets.items()},
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "rng": _get_rng_state(),
            "config": self.cfg.to_dict(),
            "run_meta": self.run_meta,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()

    def _load_modules(self, states: Mapping[str, Any]) -> None:
        if set(states) != set(self.nets):
            raise CheckpointError(f"checkpoint modules {sorted(states)} != {sorted(self.nets)}")
        for k, net in self.nets.items():
            net.load_state_dict(states[k])

    def _restore(self, ck: dict[str, Any]) -> None:
        if ck["config"] != self.cfg.to_dict():
            changed = sorted(k for k, v in self.cfg.to_dict().items() if ck["config"].get(k) != v)
            log.warning("resuming with a changed TrainConfig: %s", changed)
        self._load_modules(ck["modules"])
        self.optimizer_overrides = dict(ck["optimizer_overrides"])
        self.optimizers = dict(self.module.optimizers(self._optimizer_cfg()))
        if set(ck["optimizers"]) != set(self.optimizers):
            raise CheckpointError(f"checkpoint optimizers {sorted(ck['optimizers'])} != {sorted(self.optimizers)}")
        for k, opt in self.optimizers.items():
            opt.load_state_dict(ck["optimizers"][k])
        self.epoch = self.resumed_from_epoch = ck["epoch"]
        self.global_step = ck["global_step"]
        self.best_metric, self.best_epoch = ck["best_metric"], ck["best_epoch"]
        self.best_train_loss = ck["best_train_loss"]
        self.epochs_without_improvement = ck["epochs_without_improvement"]
        self.recovered_from_spike = ck["recovered_from_spike"]
        self.stop_reason = ck["stop_reason"]
        self.history = list(ck["history"])
        _set_rng_state(ck["rng"])
        # `last` is written before `best`: a kill between the two leaves a stale `best`, repaired here
        # (when the last epoch was the best one, `best` has exactly the bytes of `last`).
        if self.best_epoch is not None and self.best_epoch == self.epoch:
            best = self.checkpoints.load("best")
            if best is None or load_checkpoint(best)["epoch"] != self.epoch:
                self._save("best", self._checkpoint_bytes_from(ck))
        log.info("resumed from epoch %d (step %d)", self.epoch, self.global_step)

    def _checkpoint_bytes_from(self, ck: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        torch.save(ck, buf)
        return buf.getvalue()


# -- helpers -----------------------------------------------------------------------------------------


def _get_rng_state() -> dict[str, Any]:
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "python": [py_version, list(py_state), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any, where: str) -> Any:
    """Check ``value`` holds only what ``weights_only`` loading accepts and JSON can say; return it."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise TypeError(f"{where}: {type(value).__name__} is not a plain value (str/int/float/bool/None/list/dict)")


def _to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple):
        return tuple(_to_device(b, device) for b in batch)
    if isinstance(batch, list):
        return [_to_device(b, device) for b in batch]
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _batch_size(batch: Any) -> int:
    if torch.is_tensor(batch) or isinstance(batch, np.ndarray):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return 1


def _fmt(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "-"
