"""Getting images to a training loop: pull a dataset version to a local cache, stream it with torch.

The local cache has the store's own layout, so it *is* a local store: everything that reads a dataset
takes a store URI and does not care whether it is ``s3://…`` or the cache folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from storage_schemas import shards as SH
from tasks import publish as P
from tasks.shards import iter_batches
from tasks.store import Store


def read_dataset_manifest(store: Store, name: str, version: str | None = None) -> dict:
    """The manifest of a dataset version (default: the published one), verified against its pointer."""
    return P.read_manifest(store, SH.pointer_key(name), lambda v: SH.manifest_key(name, v), version)


def pull_dataset(store_uri: str, name: str, dest: str | Path, version: str | None = None) -> dict:
    """Copy a dataset version from a store into a local cache folder; returns its manifest.

    Shards are verified by sha256 and written under their hash via temp file + rename; a file lock per
    shard keeps two processes pulling at once from downloading it twice. A shard already in the cache
    is checked against its hash and fetched again if it is damaged. The manifest, the image table and
    finally the pointer are copied last, so a reader of the cache sees the version only when every shard
    is there.
    """
    from filelock import FileLock

    src = Store(store_uri)
    local = Store(str(dest))
    manifest = read_dataset_manifest(src, name, version)
    version = manifest["version"]
    lock_dir = Path(local.path(f"datasets/{name}/shards"))
    lock_dir.mkdir(parents=True, exist_ok=True)
    for shard in manifest["shards"]:
        key = SH.shard_key(name, shard["sha256"])
        with FileLock(str(lock_dir / f".{shard['sha256']}.lock")):
            if local.exists(key) and hashlib.sha256(local.read_bytes(key)).hexdigest() == shard["sha256"]:
                continue
            data = src.read_bytes(key)
            got = hashlib.sha256(data).hexdigest()
            if got != shard["sha256"]:
                raise ValueError(f"shard {key} in {src.uri} has sha256 {got}, the manifest says {shard['sha256']}")
            local.write_bytes(key, data)
    images = src.read_bytes(SH.images_key(name, version))
    want = manifest.get("images_table", {}).get("sha256")
    if want is not None and hashlib.sha256(images).hexdigest() != want:
        raise ValueError(f"{SH.images_key(name, version)} in {src.uri} does not match its manifest's sha256")
    local.write_bytes(SH.images_key(name, version), images)
    local.write_bytes(SH.manifest_key(name, version), json.dumps(manifest, indent=1, sort_keys=True).encode())
    P.publish(local, SH.pointer_key(name), SH.manifest_key(name, version), version)
    return manifest


def _torch_iterable_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class ShardDataset(_torch_iterable_base()):
    """A torch ``IterableDataset`` of image batches from a dataset's shards.

    Parameters
    ----------
    store_uri
        A store (``s3://…``) or a local cache filled by :func:`pull_dataset`.
    name
        Dataset name, ``<table set>.<encoding>``.
    split
        ``train``, ``validation``, ``test``, or None for all.
    batch_size
        Images per yielded batch; use ``DataLoader(ds, batch_size=None)``.
    shuffle
        Shuffle the order of shards and the rows inside each shard, seeded by ``seed`` and the epoch
        (:meth:`set_epoch`); off, the order is the manifest's.
    version
        A dataset version; default the published one (resolved once, here).
    prefetch
        Shards read and decoded ahead in a background thread.

    Each DataLoader worker reads a disjoint subset of the shards (shard ``i`` goes to worker
    ``i mod num_workers`` after the epoch's shuffle), so an epoch yields every image exactly once. Batches
    are ``(images, meta)``: a uint8/float16 tensor ``(B, C, H, W)`` and a dict of int64 tensors
    (``piece_id``, ``window_start``, ``transposition``, ``noise_seed``).
    """

    def __init__(self, store_uri: str, name: str, split: str | None = "train", batch_size: int = 256,
                 shuffle: bool = True, seed: int = 0, version: str | None = None, drop_last: bool = False,
                 prefetch: int = 1):
        super().__init__()
        self.store_uri = store_uri
        self.name = name
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = max(1, prefetch)
        self.epoch = 0
        self.manifest = read_dataset_manifest(Store(store_uri), name, version)
        self.shards = [s for s in self.manifest["shards"] if split is None or s["split"] == split]
        self.num_images = sum(s["rows"] for s in self.shards)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_shards(self) -> list[dict]:
        from torch.utils.data import get_worker_info

        order = list(range(len(self.shards)))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        info = get_worker_info()
        if info is not None:
            order = order[info.id::info.num_workers]
        return [self.shards[i] for i in order]

    def _read(self, store: Store, shard: dict) -> bytes:
        data = store.read_bytes(SH.shard_key(self.name, shard["sha256"]))
        if len(data) != shard["bytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise ValueError(f"shard {shard['sha256']} of {self.name} in {store.uri} does not match its manifest")
        return data

    def _load(self, store: Store, shard: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One shard decoded (and shuffled) into ``(images, meta)``."""
        batches = list(iter_batches(self._read(store, shard)))
        images = np.concatenate([b[0] for b in batches]) if len(batches) > 1 else batches[0][0]
        meta = {k: np.concatenate([b[1][k] for b in batches]) for k in batches[0][1]}
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch, int(shard["sha256"][:8], 16)]).permutation(
                images.shape[0])
            images = images[perm]
            meta = {k: v[perm] for k, v in meta.items()}
        return images, meta

    def __iter__(self) -> Iterator[tuple]:
        import torch
        from concurrent.futures import ThreadPoolExecutor

        store = Store(self.store_uri)
        pending_img: list[np.ndarray] = []
        pending_meta: list[dict] = []
        pending = 0
        shards = self._my_shards()
        # the next shard is read and decoded in a background thread while this one is consumed, so a
        # training step never waits for a whole shard at a shard boundary (zstd and copies release the GIL)
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = [pool.submit(self._load, store, s) for s in shards[:self.prefetch]]
            for i in range(len(shards)):
                images, meta = ahead.pop(0).result()
                if i + self.prefetch < len(shards):
                    ahead.append(pool.submit(self._load, store, shards[i + self.prefetch]))
                pending_img.append(images)
                pending_meta.append(meta)
                pending += images.shape[0]
                while pending >= self.batch_size:
                    yield self._emit(torch, pending_img, pending_meta, self.batch_size)
                    pending -= self.batch_size
        if pending and not self.drop_last:
            yield self._emit(torch, pending_img, pending_meta, pending)

    @staticmethod
    def _emit(torch, imgs: list[np.ndarray], metas: list[dict], n: int) -> tuple:
        """Take the first ``n`` rows of the pending arrays (in place) as tensors."""
        out_img, out_meta, need = [], [], n
        while need:
            a, m = imgs[0], metas[0]
            take = min(need, a.shape[0])
            out_img.append(a[:take])
            out_meta.append({k: v[:take] for k, v in m.items()})
            if take == a.shape[0]:
                imgs.pop(0)
                metas.pop(0)
            else:
                imgs[0] = a[take:]
                metas[0] = {k: v[take:] for k, v in m.items()}
            need -= take
        images = out_img[0] if len(out_img) == 1 else np.concatenate(out_img)
        if not images.flags.writeable:  # a view of Arrow's buffers: torch wants memory it may write
            images = images.copy()
        meta = {k: torch.from_numpy(np.concatenate([m[k] for m in out_meta]).astype(np.int64)) for k in out_meta[0]}
        return torch.from_numpy(np.ascontiguousarray(images)), meta
