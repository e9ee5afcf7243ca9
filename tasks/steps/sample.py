"""New music from a trained run: samples decoded to PNG, MIDI and WAV next to its checkpoint (no Prefect here).

A run is rebuilt from its checkpoint alone (:func:`load_run`): the model config, and the encoding config of
the dataset it was trained on (``run_meta["dataset"]["config"]``), which sizes and decodes every sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from storage_schemas.encodings import config_from_dict
from tasks.kernels.wav import wav_bytes
from tasks.steps.train import StoreCheckpoints
from tasks.storage.files import atomic_write
from tasks.storage.store import LocalStore, Store

CHECKPOINTS = ("best", "last")


def resolve_run(store: Store, text: str) -> tuple[str, str]:
    """``(prefix, checkpoint)`` of a run named as ``<run>``, ``models/<run>``, the run's folder or URL in the
    store, or one of its checkpoints (``…/best.ckpt``, ``…/last.ckpt``, which also picks that checkpoint)."""
    which = "best"
    key = text.strip().rstrip("/")
    for name in CHECKPOINTS:
        if key.endswith(f"/{name}.ckpt") or key == f"{name}.ckpt":
            which, key = name, key[: -len(f"{name}.ckpt")].rstrip("/")
    if key.startswith(store.uri + "/"):
        key = key[len(store.uri) + 1 :]
    elif isinstance(store, LocalStore) and (Path(key).is_absolute() or Path(key).exists()):
        path, root = Path(key).resolve(), Path(store.uri).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"{text} is not inside the store {store.uri}; pass the store with --store")
        key = path.relative_to(root).as_posix()
    prefix = key if key.startswith("models/") else f"models/{key}"
    if prefix.count("/") != 1 or prefix == "models/":
        raise ValueError(f"{text} names no run: give <run>, models/<run>, its folder or one of its checkpoints")
    return prefix, which


def load_run(store: Store, prefix: str, which: str = "best"):
    """Rebuild a run's networks from its checkpoint (``which``, else ``last``): ``(meta, spec, model_config,
    nets)``, the networks in eval mode."""
    from models.registry import get_spec
    from models.trainer import load_checkpoint

    checkpoints = StoreCheckpoints(store, prefix)
    data = checkpoints.load(which) or checkpoints.load("last")
    if data is None:
        raise FileNotFoundError(f"no checkpoint under {prefix} in {store.uri}")
    ck = load_checkpoint(data)
    meta = ck["run_meta"]
    spec = get_spec(meta["model"])
    model_config = spec.config_type.from_dict(meta["model_config"])
    nets = spec.networks(model_config)
    for name, net in nets.items():
        net.load_state_dict(ck["modules"][name])
        net.eval()
    return meta, spec, model_config, nets


def load_calibration(store: Store, prefix: str, which: str = "best") -> dict | None:
    """The stored calibration of the checkpoint :func:`load_run` loads for ``which`` (``which`` when that
    checkpoint exists, else ``last``): ``calibration-<which>.json``'s dict, or None (a run trained before
    calibrations were stored, or a model without one: its spec falls back to its default thresholds)."""
    checkpoints = StoreCheckpoints(store, prefix)
    if not store.exists(checkpoints.key(which)):
        which = "last"
    key = f"{prefix}/calibration-{which}.json"
    return json.loads(store.read_bytes(key)) if store.exists(key) else None


def choose_seed_rows(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """The rows (of a dataset's images table) of ``n`` seed windows: one window each of ``n`` distinct test
    pieces chosen with ``seed``; where the test split has fewer, pieces of the other splits; windows repeat
    only when the dataset has fewer than ``n``. Originals (no transposition, no noise) when there are any."""
    if not rows:
        raise ValueError("the dataset holds no images to seed with")
    rows = [r for r in rows if r["transposition"] == 0 and r["noise_seed"] == -1] or rows
    rng = np.random.default_rng(seed)
    by_piece: dict[int, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["piece_id"], r["window_start"])):
        by_piece.setdefault(r["piece_id"], []).append(r)
    test = [p for p in by_piece if by_piece[p][0]["split"] == "test"]
    others = [p for p in by_piece if by_piece[p][0]["split"] != "test"]
    pieces = [int(p) for p in rng.permutation(test)[:n]] if test else []
    if len(pieces) < n and others:
        pieces += [int(p) for p in rng.permutation(others)[: n - len(pieces)]]
    chosen = [by_piece[p][int(rng.integers(len(by_piece[p])))] for p in pieces]
    everything = [r for p in by_piece for r in by_piece[p]]
    while len(chosen) < n:  # fewer pieces than samples: other windows, then repeats
        left = [r for r in everything if r not in chosen] or everything
        chosen.append(left[int(rng.integers(len(left)))])
    return chosen


def seed_windows(data_uri: str, name: str, version: str, n: int, seed: int = 0):
    """``n`` seed windows (uint8 tensor ``(n, C, rows, T)``) from ``n`` distinct test pieces, one window each,
    chosen with ``seed``; where the test split has fewer pieces, the rest from other pieces of any split
    (and windows repeat only when the whole dataset holds fewer than ``n``). Originals (no transposition,
    no pitch noise) are preferred; the images are as stored (velocities kept)."""
    import torch

    from storage_schemas import shards as SH
    from tasks.steps.render import read_images_table
    from tasks.storage.shards import shard_images

    store = Store(data_uri)
    chosen = choose_seed_rows(read_images_table(store, name, version).to_pylist(), n, seed)
    shards: dict[str, np.ndarray] = {}
    images = []
    for r in chosen:
        if r["shard"] not in shards:
            shards[r["shard"]] = shard_images(store.read_bytes(SH.shard_key(name, r["shard"])))
        images.append(shards[r["shard"]][r["row"]])
    return torch.from_numpy(np.stack(images))


def style_transfer(data_uri: str, piano_name: str, model, n: int):
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


def generate(store_uri: str, prefix: str, n: int = 4, seed: int = 0, data_uri: str | None = None,
             out_dir: str | None = None, which: str = "best", sampling=None) -> list[str]:
    """New music from a trained run, decoded under ``prefix/samples``; returns the keys written.

    GANs sample from noise; LSTM and seq2seq continue seed windows of ``n`` distinct test pieces chosen
    with ``seed`` (:func:`seed_windows`; their first ``context`` columns, then as many new columns), decoded
    with the checkpoint's stored calibration (:func:`load_calibration`) as ``sampling`` says
    (:class:`models.decoding.Sampling`; default: draws at temperature 1); the autoencoder reconstructs
    test audio. Rolls
    become ``sample-NN.png`` and ``sample-NN.mid`` (a sample without notes is a valid MIDI file without
    notes), Hilbert images ``sample-NN-input.wav`` / ``-output.wav`` and, when a
    ``hilbert-guitar`` dataset exists, the style-transfer clips and ``style-transfer.json``. Every sample is
    decoded with the encoding config of the run's dataset; a decoding error is raised, never skipped.
    """
    import torch

    from tasks.steps.decode import hilbert_to_audio, rolls_to_midi
    from tasks.steps.loader import ShardDataset
    from tasks.steps.preview import roll_png

    store = Store(store_uri)
    meta, spec, model_config, nets = load_run(store, prefix, which)
    dataset = meta["dataset"]
    config = config_from_dict(dataset["config"])
    written: list[str] = []

    def put(name: str, data: bytes) -> None:
        key = f"{prefix}/samples/{name}"
        store.write_bytes(key, data)
        written.append(key)
        if out_dir:
            atomic_write(Path(out_dir) / name, data)

    calibration = load_calibration(store, prefix, which)
    seeds = None
    if spec.needs_seeds and config.kind != "audio":  # windows of n distinct pieces, test ones first
        seeds = seed_windows(data_uri or store_uri, dataset["name"], dataset["version"], n, seed)
    elif spec.needs_seeds:  # n test windows; a tiny corpus may have fewer, then any, repeated if need be
        for split in ("test", None):
            ds = ShardDataset(data_uri or store_uri, dataset["name"], split, batch_size=n, shuffle=False,
                              version=dataset["version"])
            if ds.num_images >= n or (split is None and ds.num_images):
                seeds = next(iter(ds))[0]
                seeds = seeds[torch.arange(n) % seeds.shape[0]]
                break
        else:
            raise ValueError(f"{dataset['name']} holds no images to seed {meta['model']} with")
    torch.manual_seed(seed)
    with torch.no_grad():
        images = spec.sample(model_config, nets, n, meta["encoding"], seeds, calibration=calibration,
                             sampling=sampling)
    if config.kind == "audio":
        def wav(img: np.ndarray) -> bytes:
            return wav_bytes(hilbert_to_audio(img[None], config), config.sample_rate)

        for i in range(images.shape[0]):
            put(f"sample-{i:02d}-input.wav", wav(seeds[i].float().numpy()))
            put(f"sample-{i:02d}-output.wav", wav(images[i]))
        report = style_transfer(data_uri or store_uri, dataset["name"], nets["model"], n)
        if report is not None:
            metrics, clips = report
            put("style-transfer.json", json.dumps(metrics, sort_keys=True).encode())
            for name, img in clips:
                put(name, wav(img))
        return written
    for i in range(images.shape[0]):
        put(f"sample-{i:02d}.png", roll_png(images[i], config, title=f"{meta['model']} sample {i}"))
        midi, _ = rolls_to_midi(images[i], config)
        put(f"sample-{i:02d}.mid", midi)
    return written
