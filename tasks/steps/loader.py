"""Getting images to a training loop: pull a dataset version to a local cache, stream it with torch.

The local cache has the store's own layout, so it *is* a local store: everything that reads a dataset
takes a store URI and does not care whether it is ``s3://…`` or the cache folder.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from storage_schemas import shards as SH
from tasks.storage import publish as P
from tasks.storage.shards import iter_batches
from tasks.storage.store import Store


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


META_KEYS = tuple(SH.SHARD_COLUMNS.names)  # piece_id, window_start, transposition, noise_seed


class _Shard:
    """One decoded shard waiting to be cut into batches: its rows stay in Arrow's decompressed record
    batch buffers (``parts``, no concatenation) and are read in ``order`` from ``pos`` on."""

    __slots__ = ("parts", "starts", "meta", "order", "pos", "rows")

    def __init__(self, parts: list[np.ndarray], meta: np.ndarray, order: np.ndarray):
        self.parts = parts  # (n_i, C, H, W) each, read-only views of Arrow buffers
        self.starts = np.cumsum([0] + [a.shape[0] for a in parts])  # first shard row of each part
        self.meta = meta  # (len(META_KEYS), rows) int64
        self.order = order  # shard rows in the order they are served
        self.pos = 0
        self.rows = int(self.starts[-1])


def gather_rows(dst: np.ndarray, parts: list[np.ndarray], starts: np.ndarray, rows: np.ndarray) -> None:
    """``dst[j] = shard_row(rows[j])`` where the shard's rows are split over ``parts`` (record batches).

    Runs of consecutive rows of one part (the unshuffled case) are copied as one slice; a shuffled batch
    is copied row by row (each row is one contiguous block of C·H·W values).
    """
    if len(rows) == 0:
        return
    part = np.searchsorted(starts, rows, side="right") - 1
    local = rows - starts[part]
    cut = np.flatnonzero((part[1:] != part[:-1]) | (local[1:] != local[:-1] + 1)) + 1
    bounds = [0, *cut.tolist(), len(rows)]
    part_l, local_l = part.tolist(), local.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        lo = local_l[a]
        dst[a:b] = parts[part_l[a]][lo:lo + b - a]


def _empty(torch, shape: tuple[int, ...], dtype, shared: bool):
    """An uninitialised tensor; ``shared``: born in shared memory, so that sending it from a DataLoader
    worker passes a file descriptor instead of copying it into a new shared block first."""
    if not shared:
        return torch.empty(shape, dtype=dtype)
    nbytes = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)  # as torch's collate does in workers
    if new_shared is None:  # pragma: no cover - older/newer torch without it: one extra copy
        return torch.empty(shape, dtype=dtype).share_memory_()
    return torch.empty(0, dtype=dtype).set_(new_shared(nbytes), 0, shape)


class ShardDataset(_torch_iterable_base()):
    """A torch ``IterableDataset`` of image batches from a dataset's shards.

    The dataset yields whole batches: read it with :func:`make_loader` (or a ``DataLoader`` with
    ``batch_size=None``; torch's default ``batch_size=1`` would wrap every batch in another dimension).

    Parameters
    ----------
    store_uri
        A store (``s3://…``) or a local cache filled by :func:`pull_dataset`.
    name
        Dataset name, ``<table set>.<encoding>``.
    split
        ``train``, ``validation``, ``test``, or None for all.
    batch_size
        Images per yielded batch.
    shuffle
        Shuffle the order of shards and the rows inside each shard, seeded by ``seed`` and the epoch
        (:meth:`set_epoch`); off, the order is the manifest's.
    version
        A dataset version; default the published one (resolved once, here).
    drop_last
        Drop the last, short batch (of each DataLoader worker).
    prefetch
        Shards read and decoded ahead in a background thread, each held decompressed (about 60 MB for a
        full-size enc2 shard of ~1,150 images). Two gave the fastest models a lower data-wait share than
        one on this 2-core machine (seq2seq 2.2–2.5 % against 2.5–4.3 %) at the same samples/s.

    Each DataLoader worker reads a disjoint subset of the shards (shard ``i`` goes to worker
    ``i mod num_workers`` after the epoch's shuffle), so an epoch yields every image exactly once. Batches
    are ``(images, meta)``: a uint8/float16 tensor ``(B, C, H, W)`` and a dict of int64 tensors
    (``piece_id``, ``window_start``, ``transposition``, ``noise_seed``).

    A batch is gathered row by row straight from the decompressed record batches of the shard into its
    final tensor (no concatenation or shuffled copy of the shard), and inside a DataLoader worker that
    tensor is allocated in shared memory, so the worker → main transfer is a file descriptor. The epoch
    lives in shared memory too: :meth:`set_epoch` reaches persistent workers.
    """

    def __init__(self, store_uri: str, name: str, split: str | None = "train", batch_size: int = 256,
                 shuffle: bool = True, seed: int = 0, version: str | None = None, drop_last: bool = False,
                 prefetch: int = 2):
        import torch

        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.store_uri = store_uri
        self.name = name
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = max(1, prefetch)
        # shared with DataLoader workers (forked or spawned), which read it when an epoch starts
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.manifest = read_dataset_manifest(Store(store_uri), name, version)
        self.shards = [s for s in self.manifest["shards"] if split is None or s["split"] == split]
        self.num_images = sum(s["rows"] for s in self.shards)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def set_epoch(self, epoch: int) -> None:
        """The epoch that seeds the next iteration's shuffle (persistent DataLoader workers see it too)."""
        self.epoch = epoch

    def _my_shards(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list[dict]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(order)
        return [self.shards[i] for i in order[worker::num_workers]]

    def _read(self, store: Store, shard: dict) -> bytes:
        data = store.read_bytes(SH.shard_key(self.name, shard["sha256"]))
        if len(data) != shard["bytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise ValueError(f"shard {shard['sha256']} of {self.name} in {store.uri} does not match its manifest")
        return data

    def _load(self, store: Store, shard: dict, epoch: int) -> _Shard:
        """One shard read, verified and decompressed; its rows stay where Arrow decompressed them."""
        parts, metas = [], []
        for images, meta in iter_batches(self._read(store, shard)):
            parts.append(images)
            metas.append(np.stack([meta[k].astype(np.int64, copy=False) for k in META_KEYS]))
        meta = np.concatenate(metas, axis=1)  # (4, rows), 32 bytes a row
        rows = meta.shape[1]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, int(shard["sha256"][:8], 16)]).permutation(rows)
        else:
            order = np.arange(rows)
        return _Shard(parts, meta, order)

    def __iter__(self) -> Iterator[tuple]:
        import torch
        from concurrent.futures import ThreadPoolExecutor

        info = torch.utils.data.get_worker_info()
        epoch = self.epoch
        shards = self._my_shards(epoch, info.id, info.num_workers) if info is not None else self._my_shards(epoch)
        store = Store(self.store_uri)
        pending: deque[_Shard] = deque()
        available = 0
        # the next shard is read and decoded in a background thread while this one is consumed, so a
        # training step never waits for a whole shard at a shard boundary (zstd and copies release the GIL)
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = deque(pool.submit(self._load, store, s, epoch) for s in shards[:self.prefetch])
            for i in range(len(shards)):
                shard = ahead.popleft().result()
                if i + self.prefetch < len(shards):
                    ahead.append(pool.submit(self._load, store, shards[i + self.prefetch], epoch))
                pending.append(shard)
                available += shard.rows
                while available >= self.batch_size:
                    yield self._batch(torch, pending, self.batch_size, info is not None)
                    available -= self.batch_size
        if available and not self.drop_last:
            yield self._batch(torch, pending, available, info is not None)

    @staticmethod
    def _batch(torch, pending: deque[_Shard], n: int, shared: bool) -> tuple:
        """The next ``n`` rows of the pending shards, gathered into a new ``(images, meta)`` batch."""
        first = pending[0].parts[0]
        images = _empty(torch, (n, *first.shape[1:]), torch.from_numpy(first[:0].copy()).dtype, shared)
        meta = _empty(torch, (len(META_KEYS), n), torch.int64, shared)
        out, out_meta = images.numpy(), meta.numpy()
        done = 0
        while done < n:
            s = pending[0]
            take = min(n - done, s.rows - s.pos)
            rows = s.order[s.pos:s.pos + take]
            gather_rows(out[done:done + take], s.parts, s.starts, rows)
            out_meta[:, done:done + take] = s.meta[:, rows]
            s.pos += take
            done += take
            if s.pos == s.rows:
                pending.popleft()
        return images, {k: meta[i] for i, k in enumerate(META_KEYS)}


def make_loader(dataset: ShardDataset, num_workers: int = 2, pin_memory: bool | None = None,
                persistent_workers: bool = True, prefetch_factor: int = 2, **kwargs):
    """A ``torch.utils.data.DataLoader`` set up for a :class:`ShardDataset` (which yields whole batches).

    Parameters
    ----------
    dataset
        The dataset; its ``batch_size`` is the loader's.
    num_workers
        Worker processes decoding shards (each reads a disjoint subset of the shards); 0 reads in the
        calling process (plus the dataset's background prefetch thread).
    pin_memory
        Copy batches into page-locked memory for fast, asynchronous host → GPU copies; default: when
        CUDA is available.
    persistent_workers
        Keep the workers between epochs (``dataset.set_epoch`` still reaches them).
    prefetch_factor
        Batches each worker prepares ahead.
    kwargs
        Passed to ``DataLoader`` (``timeout``, ``multiprocessing_context``, ``worker_init_fn`` …).

    Returns
    -------
    DataLoader
        With ``batch_size=None``: it yields the dataset's ``(images, meta)`` batches as they are.
    """
    import torch
    from torch.utils.data import DataLoader

    for bad in ("batch_size", "batch_sampler", "sampler", "shuffle", "collate_fn", "drop_last"):
        if bad in kwargs:
            raise TypeError(f"make_loader: {bad} belongs to the ShardDataset (it yields whole batches)")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    workers = {"persistent_workers": persistent_workers, "prefetch_factor": prefetch_factor} if num_workers > 0 else {}
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **workers, **kwargs)
