"""Training over the store: a dataset in, checkpoints out (no Prefect here; sampling is :mod:`tasks.steps.sample`).

A training run is named by what determines it (model, its config, encoding, dataset version, training
config, preset): ``models/<run>/`` in the store holds ``last.ckpt`` / ``best.ckpt`` (each carrying its config,
the dataset version and the dataset's encoding config), ``calibration-best.json`` / ``calibration-last.json``
(the decoding thresholds of each checkpoint, for models that need them), ``history.json``, ``loss.png``
and, after sampling, ``samples/``. Running the same request again resumes from ``last.ckpt`` instead of starting over.
The networks are sized by the dataset's images (:func:`image_config`), never by the encoding's defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage_schemas import shards as SH
from storage_schemas.encodings import ImageConfig, config_from_dict
from storage_schemas.training import TrainConfig
from tasks.storage.store import Store


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class StoreCheckpoints:
    """Checkpoints in a store under ``prefix`` (written whole: temp + rename locally, one PUT on S3)."""

    def __init__(self, store: Store, prefix: str):
        self.store = store
        self.prefix = prefix.rstrip("/")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}.ckpt"

    def save(self, name: str, data: bytes) -> None:
        self.store.write_bytes(self.key(name), data)

    def load(self, name: str) -> bytes | None:
        key = self.key(name)
        return self.store.read_bytes(key) if self.store.exists(key) else None


@dataclass(frozen=True)
class TrainRequest:
    """One model × encoding training run: what to train, on which data, how. Becomes the run's identity.

    Parameters
    ----------
    model, encoding, tables_name : str
        A registry name, an encoding it accepts, the table set whose ``<tables_name>.<encoding>`` dataset to use.
    train : TrainConfig
        How to train (epochs, batch size, optimizer, seed, ...); its defaults are the only ones.
    dataset_version : str or None
        A dataset version; None: the published one when the run starts.
    model_overrides : tuple of (field, value)
        Model config fields changed from the defaults; a field no model of the request has is ignored, so a
        grid can share one set (a field no model has at all is an error).
    preset : str or None
        A named preset of the model's config (``"paper"``: the paper's settings; None: the improved
        defaults); ``model_overrides`` win over it. Part of the run's identity only when set.
    """

    model: str
    encoding: str
    tables_name: str
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset_version: str | None = None
    model_overrides: tuple[tuple[str, Any], ...] = ()
    preset: str | None = None

    @property
    def dataset(self) -> str:
        return SH.dataset_name(self.tables_name, self.encoding)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: the training config as :meth:`TrainConfig.to_dict`, overrides as a dict."""
        return {"model": self.model, "encoding": self.encoding, "tables_name": self.tables_name,
                "train": self.train.to_dict(), "dataset_version": self.dataset_version,
                "model_overrides": dict(self.model_overrides)} | ({"preset": self.preset} if self.preset else {})


def image_config(manifest: dict) -> ImageConfig:
    """The config a dataset's images were rendered under (the one place training and sampling read it)."""
    return config_from_dict(manifest["config"])


def model_config_for(request: TrainRequest, shape: tuple[int, int, int]):
    """The model's config sized for images of ``shape``, with the request's overrides that the model has."""
    from models.registry import REGISTRY, get_spec

    spec = get_spec(request.model)
    known_anywhere = {f.name for s in REGISTRY.values() for f in dataclasses.fields(s.config_type)}
    unknown = sorted(k for k, _ in request.model_overrides if k not in known_anywhere)
    if unknown:
        raise ValueError(f"no model has config fields {unknown}")
    mine = {f.name for f in dataclasses.fields(spec.config_type)}
    return spec.config(request.encoding, shape, {k: v for k, v in request.model_overrides if k in mine},
                       preset=request.preset)


def run_name(request: TrainRequest, dataset_version: str, model_config: dict) -> str:
    doc = {"request": {**request.to_dict(), "dataset_version": dataset_version}, "model_config": model_config}
    digest = hashlib.sha256(_json(doc).encode()).hexdigest()[:12]
    return f"{request.model}-{request.encoding}-{digest}"


def train_model(store_uri: str, request: TrainRequest, data_uri: str | None = None, callbacks=(),
                num_workers: int | None = None) -> dict:
    """Train one model on one dataset; resumes from the run's last checkpoint when there is one.

    ``data_uri`` is where shards are read from (a local cache filled by ``midipix pull``); default the
    store itself. ``num_workers``: data-loader worker processes (:func:`tasks.steps.loader.make_loader`);
    by default 2 when CUDA is present (batches built beside the GPU) and 0 on CPU, where the in-process
    loader is the fastest and a run is bit-reproducible. Workers take shards round-robin, so the batch
    order differs from the in-process one: the count is recorded in the run's meta.
    """
    from models.registry import count_parameters, get_spec
    from models.trainer import Callback, Trainer, rebuild_meta, seed_everything
    from tasks.steps.loader import ShardDataset, make_loader, read_dataset_manifest

    store = Store(store_uri)
    spec = get_spec(request.model)
    cfg = request.train
    manifest = read_dataset_manifest(Store(data_uri or store_uri), request.dataset, request.dataset_version)
    config = image_config(manifest)
    model_config = model_config_for(request, config.shape)
    run = run_name(request, manifest["version"], model_config.to_dict())
    prefix = f"models/{run}"
    train = ShardDataset(data_uri or store_uri, request.dataset, "train", cfg.batch_size, shuffle=True,
                         seed=cfg.seed, version=manifest["version"], drop_last=spec.full_batches)
    val = ShardDataset(data_uri or store_uri, request.dataset, "validation", cfg.batch_size, shuffle=False,
                       version=manifest["version"])
    if train.num_images == 0:
        raise ValueError(f"{request.dataset} has no training images")
    seed_everything(cfg.seed)  # before the networks are built: their initial weights follow the seed
    nets = spec.networks(model_config)
    module = spec.train_module(model_config, nets)

    class _Epochs(Callback):  # the shard shuffle follows the trainer's epoch (1-based)
        def on_epoch_end(self, trainer, epoch, metrics):
            train.set_epoch(epoch + 1)

    checkpoints = StoreCheckpoints(store, prefix)
    last = checkpoints.load("last")
    train.set_epoch(rebuild_meta(last).epoch + 1 if last is not None else 1)  # a resumed run shuffles on

    if num_workers is None:
        import torch

        num_workers = 2 if torch.cuda.is_available() else 0
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    train_data = make_loader(train, num_workers) if num_workers else train
    val_data = None
    if val.num_images:
        val_data = make_loader(val, num_workers) if num_workers else val

    meta = {"run": run, "model": request.model, "family": spec.family, "encoding": request.encoding,
            "model_config": model_config.to_dict(), "loader_workers": num_workers, "request": request.to_dict(),
            "dataset": {"name": request.dataset, "version": manifest["version"], "config": config.to_dict()},
            "parameters": count_parameters(tuple(nets.values()))}
    trainer = Trainer(module, cfg, train_data, val_data, checkpoints, run_meta=meta,
                      callbacks=(_Epochs(), *callbacks))
    t0 = time.perf_counter()
    result = trainer.fit()
    calibrations = calibrate_checkpoints(store, prefix, spec, model_config, data_uri or store_uri, request.dataset,
                                         manifest["version"], cfg.batch_size)
    history = [dict(h) for h in result.history]
    store.write_bytes(f"{prefix}/history.json", _json({"meta": meta, "history": history}).encode())
    store.write_bytes(f"{prefix}/loss.png", loss_curve_png(history, title=f"{request.model} on {request.dataset}"))
    return {"run": run, "prefix": prefix, "store": store.uri, "model": request.model, "encoding": request.encoding,
            "dataset_version": manifest["version"], "parameters": meta["parameters"], "epochs": len(history),
            "best_epoch": result.best_epoch, "history": history, "calibrations": calibrations,
            "seconds": time.perf_counter() - t0}


def calibrate_checkpoints(store: Store, prefix: str, spec, model_config, data_uri: str, dataset: str, version: str,
                          batch_size: int) -> list[str]:
    """Fit the decoding calibration of the run's ``best`` and ``last`` checkpoints on training windows
    (``spec.calibrate``: in manifest order, capped by the spec) and write ``calibration-<which>.json`` next
    to them (whole or not at all); returns the keys written (none for models without a calibration)."""
    from models.trainer import load_checkpoint
    from tasks.steps.loader import ShardDataset

    checkpoints = StoreCheckpoints(store, prefix)
    written = []
    for which in ("best", "last"):
        data = checkpoints.load(which)
        if data is None:
            continue
        nets = spec.networks(model_config)
        modules = load_checkpoint(data)["modules"]
        for name, net in nets.items():
            net.load_state_dict(modules[name])
            net.eval()
        batches = ShardDataset(data_uri, dataset, "train", batch_size, shuffle=False, version=version)
        calibration = spec.calibrate(model_config, nets, batches)
        if calibration is not None:
            key = f"{prefix}/calibration-{which}.json"
            store.write_bytes(key, json.dumps(calibration, sort_keys=True).encode())
            written.append(key)
    return written


def loss_curve_png(history: list[dict], title: str) -> bytes:
    """Train / validation loss per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for key, label in (("train", "train"), ("val", "validation")):
        ys = [(h.get(key) or {}).get("loss") for h in history]
        if any(y is not None for y in ys):
            ax.plot(epochs, [np.nan if y is None else y for y in ys], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
