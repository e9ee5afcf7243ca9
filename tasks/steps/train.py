"""Training and generation over the store: datasets in, checkpoints and samples out (no Prefect here).

A training run is named by what determines it (model, its config, encoding, dataset version, training
config): ``models/<run>/`` in the store holds ``last.ckpt`` / ``best.ckpt`` (each carrying its config
and the dataset version), ``history.json``, ``loss.png`` and, after ``generate``, ``samples/``. Running
the same request again resumes from ``last.ckpt`` instead of starting over.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from storage_schemas import shards as SH
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
    """One model × encoding training run. JSON-friendly; becomes the run's identity."""

    model: str
    encoding: str
    tables_name: str
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    max_steps_per_epoch: int | None = None
    early_stopping_patience: int | None = None
    spike_factor: float | None = None
    dataset_version: str | None = None  # default: the published one when the run starts
    model_overrides: tuple[tuple[str, Any], ...] = ()  # config fields changed from the model's defaults

    @property
    def dataset(self) -> str:
        return SH.dataset_name(self.tables_name, self.encoding)


def model_config_for(request: TrainRequest):
    """The registry's default config for the request's encoding, with its overrides applied."""
    from models.registry import get_spec

    from models.registry import REGISTRY

    config = get_spec(request.model).default_config(request.encoding)
    if not request.model_overrides:
        return config
    fields = config.to_dict()
    known_anywhere = {k for spec in REGISTRY.values() for enc in spec.encodings
                      for k in spec.default_config(enc).to_dict()}
    unknown = [k for k, _ in request.model_overrides if k not in known_anywhere]
    if unknown:
        raise ValueError(f"no model has config fields {unknown}")
    # a grid shares one set of overrides: each model takes the fields it has
    mine = {k: (tuple(v) if isinstance(fields[k], (list, tuple)) else v)
            for k, v in request.model_overrides if k in fields}
    return type(config).from_dict({**fields, **mine})


def run_name(request: TrainRequest, dataset_version: str, model_config: dict) -> str:
    doc = {"request": {**request.__dict__, "model_overrides": dict(request.model_overrides),
                       "dataset_version": dataset_version}, "model_config": model_config}
    digest = hashlib.sha256(_json(doc).encode()).hexdigest()[:12]
    return f"{request.model}-{request.encoding}-{digest}"


def train_config(request: TrainRequest):
    from models.trainer import TrainConfig

    return TrainConfig(epochs=request.epochs, lr=request.lr, seed=request.seed,
                       max_steps_per_epoch=request.max_steps_per_epoch,
                       early_stopping_patience=request.early_stopping_patience,
                       spike_factor=request.spike_factor)


def train_model(store_uri: str, request: TrainRequest, data_uri: str | None = None, callbacks=(),
                num_workers: int | None = None) -> dict:
    """Train one model on one dataset; resumes from the run's last checkpoint when there is one.

    ``data_uri`` is where shards are read from (a local cache filled by ``midipix pull``); default the
    store itself. ``num_workers``: data-loader worker processes (:func:`tasks.steps.loader.make_loader`);
    by default 2 when CUDA is present (batches built beside the GPU) and 0 on CPU, where the in-process
    loader is the fastest and a run is bit-reproducible. Workers take shards round-robin, so the batch
    order differs from the in-process one: the count is recorded in the run's meta.
    """
    from models.modules import make_train_module
    from models.registry import count_parameters, get_spec
    from models.trainer import Callback, Trainer, rebuild_meta, seed_everything
    from tasks.steps.loader import ShardDataset, make_loader, read_dataset_manifest

    store = Store(store_uri)
    spec = get_spec(request.model)
    model_config = model_config_for(request)
    manifest = read_dataset_manifest(Store(data_uri or store_uri), request.dataset, request.dataset_version)
    run = run_name(request, manifest["version"], model_config.to_dict())
    prefix = f"models/{run}"
    train = ShardDataset(data_uri or store_uri, request.dataset, "train", request.batch_size, shuffle=True,
                         seed=request.seed, version=manifest["version"], drop_last=spec.family == "gan")
    val = ShardDataset(data_uri or store_uri, request.dataset, "validation", request.batch_size, shuffle=False,
                       version=manifest["version"])
    if train.num_images == 0:
        raise ValueError(f"{request.dataset} has no training images")
    seed_everything(request.seed)  # before the networks are built: their initial weights follow the seed
    module, nets = make_train_module(spec, model_config)

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
            "model_config": model_config.to_dict(), "loader_workers": num_workers,
            "request": {**request.__dict__, "model_overrides": dict(request.model_overrides)},
            "dataset": {"name": request.dataset, "version": manifest["version"], "config": manifest["config"]},
            "parameters": count_parameters(tuple(nets.values()))}
    trainer = Trainer(module, train_config(request), train_data, val_data,
                      checkpoints, run_meta=meta, callbacks=(_Epochs(), *callbacks))
    t0 = time.perf_counter()
    result = trainer.fit()
    history = [dict(h) for h in result.history]
    store.write_bytes(f"{prefix}/history.json", _json({"meta": meta, "history": history}).encode())
    store.write_bytes(f"{prefix}/loss.png", loss_curve_png(history, title=f"{request.model} on {request.dataset}"))
    return {"run": run, "prefix": prefix, "store": store.uri, "model": request.model, "encoding": request.encoding,
            "dataset_version": manifest["version"], "parameters": meta["parameters"], "epochs": len(history),
            "best_epoch": result.best_epoch, "history": history, "seconds": time.perf_counter() - t0}


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


# -- generation ---------------------------------------------------------------------------------------

def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of mono audio in [-1, 1]."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def style_transfer(store: Store, data_uri: str, piano_name: str, model, n: int):
    """The paper's experiment: guitar-timbre audio through the autoencoder trained on piano.

    Pairs the test windows of ``<tables>.hilbert-guitar`` with the same windows of the piano dataset and
    measures how far the input and the output are from the piano rendering (MSE on the [0, 1] pixels).
    Returns ``(metrics, clips)`` or None when no guitar dataset was built.
    """
    import torch

    from tasks.steps.loader import ShardDataset

    guitar_name = piano_name.rsplit(".", 1)[0] + ".hilbert-guitar"
    try:
        for split in ("test", "validation", None):  # held-out windows first; a tiny corpus may have none
            guitar = ShardDataset(data_uri, guitar_name, split, batch_size=256, shuffle=False)
            piano = ShardDataset(data_uri, piano_name, split, batch_size=256, shuffle=False)
            if guitar.num_images and piano.num_images:
                break
    except FileNotFoundError:
        return None

    def keyed(ds):
        out = {}
        for images, meta in ds:
            for i in range(images.shape[0]):
                key = (int(meta["piece_id"][i]), int(meta["window_start"][i]), int(meta["transposition"][i]))
                out[key] = images[i].float()
        return out

    g, p = keyed(guitar), keyed(piano)
    keys = sorted(set(g) & set(p))
    if not keys:
        return None
    x = torch.stack([g[k] for k in keys])
    target = torch.stack([p[k] for k in keys])
    with torch.no_grad():
        y = model(x)
    metrics = {"windows": len(keys), "split": split or "all", "mse_guitar_vs_piano": float(((x - target) ** 2).mean()),
               "mse_output_vs_piano": float(((y - target) ** 2).mean()),
               "mse_output_vs_guitar": float(((y - x) ** 2).mean())}
    clips = []
    for i in range(min(n, len(keys))):
        clips += [(f"style-{i:02d}-guitar-in.wav", x[i].numpy()), (f"style-{i:02d}-output.wav", y[i].numpy()),
                  (f"style-{i:02d}-piano-reference.wav", target[i].numpy())]
    return metrics, clips


def _values_to_state(values: np.ndarray) -> np.ndarray:
    """Predicted column values in [0, 1] (B, T, 88) → state pixels: nearest of 0, ONSET, SUSTAIN."""
    from storage_schemas.encodings import ONSET, SUSTAIN

    levels = np.array([0, ONSET, SUSTAIN], np.float64)
    idx = np.abs(values[..., None] * 255.0 - levels).argmin(-1)
    return levels[idx].astype(np.uint8)


def load_run(store: Store, prefix: str, which: str = "best"):
    """Rebuild a run's networks from its checkpoint: ``(meta, spec, model_config, nets)``."""
    import torch

    from models.registry import get_spec
    from models.trainer import load_checkpoint

    data = StoreCheckpoints(store, prefix).load(which) or StoreCheckpoints(store, prefix).load("last")
    if data is None:
        raise FileNotFoundError(f"no checkpoint under {prefix} in {store.uri}")
    ck = load_checkpoint(data)
    meta = ck["run_meta"]
    spec = get_spec(meta["model"])
    model_config = type(spec.default_config(meta["encoding"])).from_dict(meta["model_config"])
    built = spec.build(model_config)
    nets = {"generator": built[0], "critic": built[1]} if spec.family == "gan" else {"model": built}
    for name, net in nets.items():
        net.load_state_dict(ck["modules"][name])
        net.eval()
    torch.set_grad_enabled(True)
    return meta, spec, model_config, nets


def generate(store_uri: str, prefix: str, n: int = 4, seed: int = 0, data_uri: str | None = None,
             out_dir: str | None = None) -> list[str]:
    """New music from a trained run, decoded to PNG, MIDI and (audio models) WAV under ``prefix/samples``.

    GANs sample from noise; LSTM and seq2seq continue seeds taken from the test split (the first
    ``context`` columns of test windows, then as many new columns); the autoencoder reconstructs test
    audio. Returns the keys written.
    """
    import torch

    from storage_schemas.encodings import RollConfig
    from tasks.steps.decode import hilbert_to_audio, rolls_to_midi
    from tasks.steps.loader import ShardDataset
    from tasks.steps.preview import roll_png

    store = Store(store_uri)
    meta, spec, cfg, nets = load_run(store, prefix)
    torch.manual_seed(seed)
    dataset = meta["dataset"]
    written: list[str] = []

    def put(name: str, data: bytes) -> None:
        key = f"{prefix}/samples/{name}"
        store.write_bytes(key, data)
        written.append(key)
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / name).write_bytes(data)

    def test_batch():
        ds = ShardDataset(data_uri or store_uri, dataset["name"], "test", batch_size=n, shuffle=False,
                          version=dataset["version"])
        if ds.num_images == 0:
            ds = ShardDataset(data_uri or store_uri, dataset["name"], None, batch_size=n, shuffle=False,
                              version=dataset["version"])
        return next(iter(ds))

    with torch.no_grad():
        if spec.family == "gan":
            images = (nets["generator"].sample(n) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        elif spec.family == "autoencoder":
            batch = test_batch()
            x = batch[0].float()
            images = nets["model"](x).numpy()
            config = dataset["config"]
            for i in range(images.shape[0]):
                for tag, img in (("input", x[i].numpy()), ("output", images[i])):
                    put(f"sample-{i:02d}-{tag}.wav", wav_bytes(hilbert_to_audio(img[None], config),
                                                               config["sample_rate"]))
            report = style_transfer(store, data_uri or store_uri, dataset["name"], nets["model"], n)
            if report is not None:
                metrics, clips = report
                put("style-transfer.json", _json(metrics).encode())
                for name, img in clips:
                    put(name, wav_bytes(hilbert_to_audio(img[None], config), config["sample_rate"]))
            return written
        else:
            batch = test_batch()
            x = batch[0][:, cfg.channel].float().transpose(1, 2) / 255.0  # (B, T, 88)
            seed_cols = x[:, :cfg.context]
            new = nets["model"].generate(seed_cols, x.shape[1] - cfg.context).numpy()  # (B, T - context, 88)
            cols = np.concatenate([seed_cols.numpy(), new], axis=1)  # (B, T, 88)
            if meta["encoding"] == "enc1":  # channel 0 holds note lengths at onset pixels
                state = np.rint(cols * 255.0).clip(0, 255).astype(np.uint8).transpose(0, 2, 1)
            else:
                state = _values_to_state(cols).transpose(0, 2, 1)  # (B, 88, T)
            images = np.zeros((state.shape[0], len(batch[0][0]), 88, state.shape[2]), np.uint8)
            images[:, 0] = state
            if images.shape[1] > 1:
                images[:, 1] = np.where(state > 0, 80, 0)  # velocity for enc1/enc2 channels
    roll_cfg = RollConfig(encoding=meta["encoding"]).to_dict()
    for i in range(images.shape[0]):
        put(f"sample-{i:02d}.png", roll_png(images[i], RollConfig(encoding=meta["encoding"]), title=f"{meta['model']} sample {i}"))
        try:
            midi, _ = rolls_to_midi(images[i], roll_cfg)
            put(f"sample-{i:02d}.mid", midi)
        except ValueError:
            pass  # an empty image has no notes to write
    return written
