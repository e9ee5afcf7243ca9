"""Getting a dataset to training: ``ShardDataset`` over a store or a local cache, and ``pull_dataset``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from storage_schemas import shards as SH
from tasks.steps import render as R
from tasks.steps import tables as T
from tasks.kernels.augment import AugmentConfig
from tasks.steps.loader import ShardDataset, gather_rows, make_loader, pull_dataset, read_dataset_manifest
from tasks.storage.shards import shard_images
from tasks.storage.sources import fingerprint, generate_corpus, list_files, read_file_bytes
from tasks.storage.store import S3Store, Store

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
AUGMENT = AugmentConfig(transpositions=(2,), noise_fraction=0.1)
KEY = ("piece_id", "window_start", "transposition", "noise_seed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    generate_corpus(folder, n=6, seed=3, minutes=0.3)
    return folder


def publish_images(store_uri: str, folder: Path) -> tuple[str, dict, pa.Table]:
    """Table set ``c`` of ``folder`` and its augmented enc2 dataset, both published; (name, manifest, index)."""
    store = Store(store_uri)
    files, errors = fingerprint(list_files(str(folder)))
    assert errors == []
    version = T.version_id(files, {})
    T.write_table_set(store, "c", version, T.build_tables(files, lambda f: read_file_bytes(f.uri), None,
                                                           T.SplitConfig()), {})
    T.publish(store, "c", version)
    manifest, _ = R.build_image_dataset(store, "c", T.read_manifest(store, "c"), "enc2", augment=AUGMENT)
    name = manifest["name"]
    R.publish_dataset(store, name, manifest["version"])
    return name, manifest, R.read_images_table(store, name, manifest["version"])


def rows(index: pa.Table, split: str | None = None) -> list[tuple]:
    if split is not None:
        index = index.filter(pc.equal(index["split"], split))
    return list(zip(*(index[c].to_pylist() for c in KEY)))


def keys(meta: dict) -> list[tuple]:
    return list(zip(*(meta[c].tolist() for c in KEY)))


def epoch(ds) -> tuple[list[tuple], list]:
    """Image keys in the order an epoch yields them, and the batches."""
    batches = list(ds)
    return [k for _, meta in batches for k in keys(meta)], batches


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def published(store_uri, corpus):
    return (store_uri, *publish_images(store_uri, corpus))


# -- ShardDataset ---------------------------------------------------------------------------------------


def test_an_epoch_yields_every_image_of_the_split_once(published):
    store_uri, name, manifest, index = published
    store = Store(store_uri)
    pixels = {s["sha256"]: shard_images(store.read_bytes(s["key"])) for s in manifest["shards"]}
    image_of = {k: pixels[sha][row] for k, sha, row in zip(rows(index), index["shard"].to_pylist(),
                                                             index["row"].to_pylist())}
    assert len(image_of) == index.num_rows  # the key names one image

    ds = ShardDataset(store_uri, name, split="train", batch_size=5, seed=1)
    want = rows(index, "train")
    assert ds.num_images == len(want) > 10
    got, batches = epoch(ds)
    assert Counter(got) == Counter(want) and len(got) == len(set(got))
    assert [b[0].shape[0] for b in batches] == [5] * (len(want) // 5) + ([len(want) % 5] if len(want) % 5 else [])
    for images, meta in batches:
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == tuple(manifest["shape"]) == (3, 88, 200)
        assert set(meta) == set(KEY)
        assert all(v.dtype == torch.int64 and v.shape == (images.shape[0],) for v in meta.values())
        for img, k in zip(images.numpy(), keys(meta)):  # each image is the one its metadata names
            np.testing.assert_array_equal(img, image_of[k])

    # seeded shuffle: the same seed and epoch repeat the order; another epoch or seed changes it
    assert epoch(ds)[0] == got
    assert epoch(ShardDataset(store_uri, name, split="train", batch_size=7, seed=1))[0] == got
    ds.set_epoch(1)
    other, _ = epoch(ds)
    assert other != got and Counter(other) == Counter(want)
    assert epoch(ShardDataset(store_uri, name, split="train", batch_size=5, seed=2))[0] != got
    # unshuffled: the manifest's order, which is the index's
    assert epoch(ShardDataset(store_uri, name, split="train", batch_size=5, shuffle=False))[0] == want

    dropped, batches = epoch(ShardDataset(store_uri, name, split="train", batch_size=5, seed=1, drop_last=True))
    assert len(dropped) == len(want) // 5 * 5 and all(b[0].shape[0] == 5 for b in batches)
    assert Counter(epoch(ShardDataset(store_uri, name, split=None, batch_size=4))[0]) == Counter(rows(index))
    for split in ("validation", "test"):
        ds = ShardDataset(store_uri, name, split=split, batch_size=4)
        assert Counter(epoch(ds)[0]) == Counter(rows(index, split)) and ds.num_images == len(rows(index, split))


def test_dataloader_workers_share_an_epoch_without_overlap(published):
    store_uri, name, manifest, index = published
    assert len(manifest["shards"]) >= 3
    ds = ShardDataset(store_uri, name, split=None, batch_size=4, seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = [k for _, meta in loader for k in keys(meta)]
    assert sorted(got) == sorted(rows(index)) and len(set(got)) == len(got)
    ds.set_epoch(1)
    assert sorted(k for _, meta in loader for k in keys(meta)) == sorted(rows(index))


def images_by_key(store_uri: str, manifest: dict, index: pa.Table) -> dict[tuple, np.ndarray]:
    """Every image of the dataset, read with plain pyarrow from its shard row, by its metadata key."""
    store = Store(store_uri)
    pixels = {s["sha256"]: shard_images(store.read_bytes(s["key"])) for s in manifest["shards"]}
    return {k: pixels[sha][row] for k, sha, row in zip(rows(index), index["shard"].to_pylist(),
                                                        index["row"].to_pylist())}


def contents(loader) -> tuple[Counter, list[tuple]]:
    """(key, image bytes) of every image a loader yields, as a multiset, and the keys in order."""
    got, order = Counter(), []
    for images, meta in loader:
        for img, k in zip(images.numpy(), keys(meta)):
            got[(k, img.tobytes())] += 1
            order.append(k)
    return got, order


def test_two_workers_yield_exactly_the_images_and_labels_of_one_process(published):
    store_uri, name, manifest, index = published
    image_of = images_by_key(store_uri, manifest, index)
    want = Counter((k, image_of[k].tobytes()) for k in rows(index))
    ds = ShardDataset(store_uri, name, split=None, batch_size=5, seed=2)

    single, _ = contents(make_loader(ds, num_workers=0))
    assert single == want  # every image once, each with its own metadata and pixels

    loader = make_loader(ds, num_workers=2)  # persistent workers
    assert loader.batch_size is None and loader.num_workers == 2 and loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    sizes = []
    for images, meta in loader:
        assert images.dtype == torch.uint8 and tuple(images.shape) == (images.shape[0], *manifest["shape"])
        assert images.is_contiguous() and set(meta) == set(KEY)
        assert all(v.dtype == torch.int64 and tuple(v.shape) == (images.shape[0],) for v in meta.values())
        for img, k in zip(images.numpy(), keys(meta)):  # the pixels of the shard row the manifest names
            np.testing.assert_array_equal(img, image_of[k])
        sizes.append(images.shape[0])
    assert all(0 < n <= 5 for n in sizes) and sum(n < 5 for n in sizes) <= 2  # one short batch per worker
    first, order0 = contents(loader)
    assert first == want

    # set_epoch reaches the persistent workers: the next epoch is epoch 1's order, not epoch 0's again
    ds.set_epoch(1)
    again, order1 = contents(loader)
    assert again == want and order1 != order0
    fresh = ShardDataset(store_uri, name, split=None, batch_size=5, seed=2)
    fresh.set_epoch(1)
    assert contents(torch.utils.data.DataLoader(fresh, batch_size=None, num_workers=2))[1] == order1

    # an epoch cut short (as max_steps_per_epoch does) leaves nothing behind for the next one
    next(iter(loader))
    ds.set_epoch(2)
    fresh.set_epoch(2)
    assert contents(loader) == (want, contents(torch.utils.data.DataLoader(fresh, batch_size=None, num_workers=2))[1])


def test_a_worker_gathers_batches_straight_into_shared_memory(published, monkeypatch):
    store_uri, name, manifest, index = published
    image_of = images_by_key(store_uri, manifest, index)
    ds = ShardDataset(store_uri, name, split="train", batch_size=7, seed=4)
    plain = list(ds)
    assert not plain[0][0].is_shared() and not plain[0][1]["piece_id"].is_shared()

    # inside a DataLoader worker (worker 0 of 1 reads every shard) the batch is born in shared memory, so
    # torch sends its file descriptor instead of copying it into a new shared block
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: types.SimpleNamespace(id=0, num_workers=1))
    shared = list(ds)
    assert len(shared) == len(plain)
    for (images, meta), (images0, meta0) in zip(shared, plain):
        assert images.is_shared() and all(v.is_shared() for v in meta.values())
        assert torch.equal(images, images0) and all(torch.equal(meta[k], meta0[k]) for k in KEY)
        for img, k in zip(images.numpy(), keys(meta)):
            np.testing.assert_array_equal(img, image_of[k])


def test_gather_rows_matches_fancy_indexing():
    rng = np.random.default_rng(0)
    sizes = [4, 1, 6, 3]
    parts = [rng.integers(0, 255, (n, 2, 3, 5), dtype=np.uint8) for n in sizes]
    for p in parts:
        p.setflags(write=False)  # as Arrow's buffers are
    whole = np.concatenate(parts)
    starts = np.cumsum([0, *sizes])
    for rows in (np.arange(14), np.arange(3, 12), rng.permutation(14), rng.permutation(14)[:5], np.array([13, 0]),
                 np.array([], dtype=np.int64), np.array([4, 5, 6, 9, 10, 11, 12])):
        dst = np.zeros((len(rows), 2, 3, 5), np.uint8)
        gather_rows(dst, parts, starts, rows)
        np.testing.assert_array_equal(dst, whole[rows])


def test_a_damaged_shard_is_refused_by_the_dataset_and_its_workers(published):
    store_uri, name, manifest, _ = published
    store = Store(store_uri)
    bad = manifest["shards"][0]
    data = store.read_bytes(bad["key"])
    store.write_bytes(bad["key"], data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other bytes
    ds = ShardDataset(store_uri, name, split=bad["split"], batch_size=4)
    with pytest.raises(ValueError, match="does not match its manifest"):
        list(ds)
    if not store_uri.startswith("s3://"):  # the same through a worker process (local only: torch then
        # waits MP_STATUS_CHECK_INTERVAL = 5 s per worker to join the workers after a worker's exception)
        with pytest.raises(ValueError, match="does not match its manifest"):
            list(make_loader(ds, num_workers=1, persistent_workers=False))


def test_make_loader_keeps_batching_in_the_dataset(published):
    store_uri, name, _, _ = published
    ds = ShardDataset(store_uri, name, split="train", batch_size=4)
    for bad in ({"batch_size": 4}, {"shuffle": True}, {"collate_fn": list}):
        with pytest.raises(TypeError, match="belongs to the ShardDataset"):
            make_loader(ds, **bad)
    loader = make_loader(ds, num_workers=0, pin_memory=False)
    assert loader.batch_size is None and loader.num_workers == 0 and not loader.pin_memory
    assert next(iter(loader))[0].shape[0] == 4


# -- pull_dataset ---------------------------------------------------------------------------------------


def assert_cache_complete(cache: Path, name: str, manifest: dict) -> None:
    local = Store(str(cache))
    assert read_dataset_manifest(local, name) == manifest
    for s in manifest["shards"]:
        assert sha256_file(Path(local.path(s["key"]))) == s["sha256"]
    assert R.read_images_table(local, name, manifest["version"]).num_rows == manifest["images"]
    assert not [p for p in cache.rglob("*.tmp")]  # no temp files left behind


@pytest.mark.s3
def test_pull_copies_verifies_and_repairs_the_cache(s3_env, corpus, tmp_path, monkeypatch):
    name, manifest, index = publish_images(s3_env, corpus)
    cache = tmp_path / "cache"
    assert pull_dataset(s3_env, name, cache) == manifest
    assert_cache_complete(cache, name, manifest)
    remote = Store(s3_env)
    assert Store(str(cache)).read_bytes(SH.images_key(name, manifest["version"])) == remote.read_bytes(
        SH.images_key(name, manifest["version"]))

    reads: list[str] = []
    original = S3Store.read_bytes

    def counting(store, key):
        reads.append(key)
        return original(store, key)

    monkeypatch.setattr(S3Store, "read_bytes", counting)
    pull_dataset(s3_env, name, cache)  # everything is cached: no shard is downloaded again
    assert not [k for k in reads if "/shards/" in k]

    damaged = manifest["shards"][0]
    path = Path(Store(str(cache)).path(damaged["key"]))
    path.write_bytes(path.read_bytes()[: damaged["bytes"] // 2])  # truncated
    reads.clear()
    pull_dataset(s3_env, name, cache)
    assert [k for k in reads if "/shards/" in k] == [damaged["key"]]
    assert_cache_complete(cache, name, manifest)


@pytest.mark.s3
def test_a_shard_that_does_not_match_its_manifest_is_refused(s3_env, corpus, tmp_path):
    name, manifest, _ = publish_images(s3_env, corpus)
    bad = manifest["shards"][-1]
    remote = Store(s3_env)
    data = remote.read_bytes(bad["key"])
    remote.write_bytes(bad["key"], data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other bytes
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256"):
        pull_dataset(s3_env, name, cache)
    local = Store(str(cache))
    assert not Path(local.path(bad["key"])).exists()
    assert not [p for p in cache.rglob("*") if p.is_file() and bad["sha256"] in p.name and p.suffix != ".lock"]
    with pytest.raises(FileNotFoundError):  # the cache does not show the version
        read_dataset_manifest(local, name)


@pytest.mark.s3
@pytest.mark.slow  # two fresh interpreters importing torch
def test_two_processes_pulling_at_once_both_succeed(s3_env, corpus, tmp_path):
    name, manifest, _ = publish_images(s3_env, corpus)
    cache, gate = tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    # each process imports everything, says it is ready, and starts pulling when the test opens the gate
    code = ("import sys, time; from pathlib import Path; from tasks.steps.loader import pull_dataset\n"
            "gate = Path(sys.argv[4]); (gate / sys.argv[5]).touch()\n"
            "while not (gate / 'go').exists(): time.sleep(0.005)\n"
            "pull_dataset(sys.argv[1], sys.argv[2], sys.argv[3])")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the S3 settings are in the environment
    procs = [subprocess.Popen([sys.executable, "-c", code, s3_env, name, str(cache), str(gate), f"ready-{i}"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < 2 and all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (gate / "go").touch()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode()[-3000:]
    assert_cache_complete(cache, name, manifest)


@pytest.mark.s3
def test_a_pulled_dataset_trains_offline(s3_env, corpus, tmp_path, monkeypatch):
    name, manifest, index = publish_images(s3_env, corpus)
    cache = tmp_path / "cache"
    pull_dataset(s3_env, name, cache)

    import fsspec

    from tasks.storage.settings import reload_settings

    for var in ("MIDIPIX_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    reload_settings()
    real = fsspec.filesystem

    def local_only(protocol, **kwargs):
        assert protocol in ("file", "local"), f"offline, yet something asked for {protocol}"
        return real(protocol, **kwargs)

    monkeypatch.setattr(fsspec, "filesystem", local_only)
    ds = ShardDataset(str(cache), name, split=None, batch_size=8)
    assert ds.manifest == manifest
    assert Counter(epoch(ds)[0]) == Counter(rows(index))
    loader = torch.utils.data.DataLoader(ShardDataset(str(cache), name, split="train", batch_size=8),
                                         batch_size=None, num_workers=2)
    assert Counter(k for _, meta in loader for k in keys(meta)) == Counter(rows(index, "train"))
