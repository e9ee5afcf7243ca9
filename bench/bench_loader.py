#!/usr/bin/env python
"""Benchmark: the training data loader (``tasks.steps.loader.ShardDataset``), from a local cache and from S3.

Usage::

    .venv/bin/python bench/bench_loader.py [--pieces N] [--minutes M] [--epochs E] [--no-s3]

On the generated corpus (defaults: 1,300 pieces of 9.4 min, as many notes as full MAESTRO; corpus and
tables materialised once under ``--out``, default ``bench/out/``, ignored by git):

1. the enc2 dataset is built into a local source store (``build_image_dataset``, workers=2; kept between
   runs and rebuilt only when its version changes);
2. ``pull_dataset`` copies it into a fresh local cache folder (timed, for information);
3. ``ShardDataset(cache, "bench.enc2", split="train", batch_size=256, shuffle=True)`` is read through
   ``make_loader(ds, num_workers=0 / 2)`` (a ``DataLoader`` with ``batch_size=None``, persistent workers,
   ``pin_memory`` only with CUDA) for ``--epochs`` whole epochs each, a new loader per epoch; images/s =
   images of the epoch / wall time of the epoch (worker start-up included), median over epochs. The loop
   only takes each batch (nothing is computed on it);
4. a moto S3 server is started on 127.0.0.1 in a child process, the tables are copied into a bucket, the
   enc2 dataset is built straight into it (timed, for information), and step 3 is repeated with the
   ``s3://`` URI (shards streamed from S3, no local cache).

Reference rows (no target): the shard decode alone (``iter_batches`` over every train shard, one
thread), decode + the old concatenate-and-shuffle of whole shards, decode + gathering shuffled rows into
fresh batches (what the dataset does now), ``ShardDataset.__iter__`` without a DataLoader, and the
DataLoader's worker → main transfer alone. Results are printed as a table and written as
JSON to ``<out>/bench_loader.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B

ROOT = B.ROOT
from tasks.storage.settings import apply_prefect_defaults

apply_prefect_defaults()

TARGET_IPS = 10_000.0
ENCODING = "enc2"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench-key", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def ensure_dataset(store_dir: Path, tables_dir: Path, tables_manifest: dict, encoding: str) -> tuple[dict, float]:
    """The dataset built and published in ``store_dir`` (tables copied in first); (manifest, build s or 0)."""
    from tasks.steps import render as R
    from tasks.steps.loader import read_dataset_manifest
    from tasks.storage.store import Store

    store = Store(str(store_dir))
    name = f"{B.TABLES_NAME}.{encoding}"
    version = R.dataset_version(tables_manifest["version"], R.image_config(encoding),
                                R.AugmentConfig())
    try:
        m = read_dataset_manifest(store, name)
        if m["version"] == version:
            return m, 0.0
    except (FileNotFoundError, ValueError):
        pass
    B.fresh_dir(store_dir)
    shutil.copytree(tables_dir / "tables", store_dir / "tables")
    t = time.perf_counter()
    m, _ = R.build_image_dataset(store, B.TABLES_NAME, tables_manifest, encoding, workers=2)
    R.publish_dataset(store, name, m["version"])
    return m, time.perf_counter() - t


def epoch(uri: str, name: str, workers: int, seed_epoch: int, batch_size: int) -> dict:
    """One epoch through a DataLoader: wall, time to the first batch, images."""
    from tasks.steps.loader import ShardDataset, make_loader

    t0 = time.perf_counter()
    ds = ShardDataset(uri, name, split="train", batch_size=batch_size, shuffle=True, seed=0)
    ds.set_epoch(seed_epoch)
    loader = make_loader(ds, num_workers=workers)
    n = 0
    first = None
    for images, meta in loader:
        if first is None:
            first = time.perf_counter() - t0
        n += images.shape[0]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "first_batch_s": first, "images": n, "expected": ds.num_images,
            "images_per_s": n / wall}


def bench_source(label: str, uri: str, name: str, epochs: int, batch_size: int) -> dict:
    out = {}
    for workers in (0, 2):
        runs = []
        for e in range(epochs):
            r = epoch(uri, name, workers, e, batch_size)
            if r["images"] != r["expected"]:
                raise RuntimeError(f"{label} w{workers}: an epoch gave {r['images']} images, expected {r['expected']}")
            runs.append(r)
            print(f"  {label} num_workers={workers} epoch {e}: {r['images']} images in {r['wall_s']:.2f} s "
                  f"({r['images_per_s']:,.0f}/s; first batch after {r['first_batch_s']:.2f} s)", flush=True)
        med = sorted(runs, key=lambda r: r["images_per_s"])[len(runs) // 2]
        out[f"w{workers}"] = {"images_per_s": statistics.median(r["images_per_s"] for r in runs), "median_run": med,
                              "runs": runs}
    return out


def reference_paths(uri: str, name: str, batch_size: int) -> dict:
    """Decode alone and the dataset without a DataLoader (one epoch each, main thread)."""
    import numpy as np

    from storage_schemas import shards as SH
    from tasks.steps.loader import ShardDataset
    from tasks.steps.loader import gather_rows
    from tasks.storage.shards import iter_batches
    from tasks.storage.store import Store

    ds = ShardDataset(uri, name, split="train", batch_size=batch_size, shuffle=True, seed=0)
    store = Store(uri)
    out = {}
    blobs = [store.read_bytes(SH.shard_key(name, s["sha256"])) for s in ds.shards]
    t = time.perf_counter()
    n = 0
    for data in blobs:
        for images, _ in iter_batches(data):
            n += images.shape[0]
    out["decode_only"] = {"s": time.perf_counter() - t, "images": n}
    t = time.perf_counter()
    n = 0
    for data in blobs:
        batches = list(iter_batches(data))
        images = np.concatenate([b[0] for b in batches])
        images = images[np.random.default_rng(0).permutation(images.shape[0])]
        n += images.shape[0]
    out["decode_concat_shuffle"] = {"s": time.perf_counter() - t, "images": n}
    t = time.perf_counter()
    n = 0
    for data in blobs:  # the dataset's way: rows gathered from the decompressed record batches
        parts = [b[0] for b in iter_batches(data)]
        starts = np.cumsum([0] + [p.shape[0] for p in parts])
        perm = np.random.default_rng(0).permutation(int(starts[-1]))
        for a in range(0, len(perm), batch_size):
            rows = perm[a:a + batch_size]
            gather_rows(np.empty((len(rows), *parts[0].shape[1:]), parts[0].dtype), parts, starts, rows)
            n += len(rows)
    out["decode_gather_shuffled"] = {"s": time.perf_counter() - t, "images": n}
    t = time.perf_counter()
    n = sum(b[0].shape[0] for b in ds)
    out["dataset_iter_no_dataloader"] = {"s": time.perf_counter() - t, "images": n}
    out["compressed_bytes"] = sum(len(b) for b in blobs)
    out["raw_bytes"] = sum(s["raw_bytes"] for s in ds.shards)
    return out


def ipc_floor(batches: int, shape: tuple, workers: int = 2) -> dict:
    """What the DataLoader's worker -> main transfer alone costs: workers yield ready-made uint8 batches of
    ``shape`` (no decoding), allocated as ordinary tensors (torch copies each into shared memory to send it)
    or born in shared memory as the dataset allocates them (sent as a file descriptor)."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    from tasks.steps.loader import _empty

    class Const(IterableDataset):
        def __init__(self, shared):
            self.shared = shared

        def __iter__(self):
            info = get_worker_info()
            for _ in range(batches // (info.num_workers if info else 1)):
                t = _empty(torch, shape, torch.uint8, shared=self.shared and info is not None)
                t.numpy().fill(1)
                yield t

    out = {}
    for label, shared, w in (("w0", False, 0), (f"w{workers}_plain", False, workers),
                             (f"w{workers}_born_shared", True, workers)):
        t = time.perf_counter()
        n = sum(x.shape[0] for x in DataLoader(Const(shared), batch_size=None, num_workers=w))
        out[label] = {"s": time.perf_counter() - t, "images": n}
    return out


def profile_worker_path(uri: str, name: str, batch_size: int, out_dir: Path) -> str:
    """cProfile of one epoch of ``ShardDataset.__iter__`` in the main thread (what each worker runs)."""
    import cProfile
    import io
    import pstats

    from tasks.steps.loader import ShardDataset

    ds = ShardDataset(uri, name, split="train", batch_size=batch_size, shuffle=True, seed=0)
    prof = cProfile.Profile()
    prof.enable()
    for _ in ds:
        pass
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    text = buf.getvalue()
    (out_dir / "bench_loader_profile.txt").write_text(text)
    return text


# -- moto --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MOTO_CHILD = """
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on 127.0.0.1 in a child process (its own GIL, as a real server would be)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", MOTO_CHILD, str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError("moto server did not start")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    return proc, url


def point_settings_at(endpoint: str) -> None:
    import s3fs

    from tasks.storage.settings import reload_settings

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    os.environ.update({"MIDIPIX_S3_ENDPOINT_URL": endpoint, **S3_ENV})
    reload_settings()
    s3fs.S3FileSystem.clear_instance_cache()


def copy_tables(src_dir: Path, dst_uri: str) -> int:
    from tasks.storage.store import Store

    src, dst = Store(str(src_dir)), Store(dst_uri)
    keys = src.list("tables")
    for k in keys:
        dst.write_bytes(k, src.read_bytes(k))
    return len(keys)


# -- driver ------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pieces", type=int, default=1300)
    ap.add_argument("--minutes", type=float, default=9.4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per configuration (median)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile one epoch of ShardDataset.__iter__ (local)")
    ap.add_argument("--wait-quiet", type=float, default=120.0, metavar="S",
                    help="before timing, wait up to S seconds for the 1-min load average to drop below 0.5")
    args = ap.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MIDIPIX_CACHE_DIR", str(out / "cache"))
    t_start = time.perf_counter()
    folder = B.corpus_dir(out, args.pieces, args.minutes)
    print(f"corpus: {folder}", flush=True)
    paths = B.ensure_corpus(folder, args.pieces, args.minutes)
    tables_dir = out / "stores" / "tables"
    tables = B.ensure_tables(tables_dir, paths)
    name = f"{B.TABLES_NAME}.{ENCODING}"
    src_dir = out / "stores" / "loader-src"
    manifest, build_s = ensure_dataset(src_dir, tables_dir, tables, ENCODING)
    train = [s for s in manifest["shards"] if s["split"] == "train"]
    n_train = sum(s["rows"] for s in train)
    print(f"  {name}: {manifest['images']} images, {n_train} in train ({len(train)} shards, "
          f"{sum(s['bytes'] for s in train) / 1e6:.0f} MB compressed); "
          f"{f'built in {build_s:.1f} s' if build_s else 'reused'}", flush=True)

    load_start = B.wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else os.getloadavg()[0]
    print(f"  load average before timing: {load_start:.2f}", flush=True)
    res: dict = {"load_avg_start": load_start, "config": {
        "pieces": args.pieces, "minutes": args.minutes, "epochs": args.epochs, "batch_size": args.batch_size,
        "train_images": n_train, "train_shards": len(train), "cpus": os.cpu_count(), "python": platform.python_version(),
        "versions": {p: md.version(p) for p in ("torch", "numpy", "pyarrow", "s3fs", "moto")}}}

    from tasks.steps.loader import pull_dataset

    cache = B.fresh_dir(out / "stores" / "loader-cache")
    t = time.perf_counter()
    pull_dataset(str(src_dir), name, cache)
    res["pull_local_s"] = time.perf_counter() - t
    print(f"pull_dataset into a fresh cache: {res['pull_local_s']:.2f} s", flush=True)
    res["reference"] = reference_paths(str(cache), name, args.batch_size)
    if args.profile:
        print(profile_worker_path(str(cache), name, args.batch_size, out))
    res["local"] = bench_source("local cache", str(cache), name, args.epochs, args.batch_size)
    res["ipc_floor"] = ipc_floor(n_train // args.batch_size, (args.batch_size, *manifest["shape"]))

    if not args.no_s3:
        import boto3

        proc, endpoint = start_moto()
        try:
            point_settings_at(endpoint)
            bucket = "midipix-bench"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
            uri = f"s3://{bucket}/store"
            t = time.perf_counter()
            n_keys = copy_tables(tables_dir, uri)
            res["s3_copy_tables_s"] = time.perf_counter() - t
            from tasks.steps import render as R
            from tasks.storage.store import Store

            print(f"S3 (moto at {endpoint}): {n_keys} table files copied in {res['s3_copy_tables_s']:.2f} s; "
                  f"building {name} into it ...", flush=True)
            t = time.perf_counter()
            m, _ = R.build_image_dataset(Store(uri), B.TABLES_NAME, tables, ENCODING, workers=2)
            R.publish_dataset(Store(uri), name, m["version"])
            res["s3_build_s"] = time.perf_counter() - t
            print(f"  built in {res['s3_build_s']:.2f} s", flush=True)
            res["s3"] = bench_source("S3", uri, name, args.epochs, args.batch_size)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    rows = []
    ref = res["reference"]
    for key, label in (("decode_only", "info: shard decode only (iter_batches), 1 thr"),
                       ("decode_concat_shuffle", "info: decode + concatenate + shuffle (old), 1 thr"),
                       ("decode_gather_shuffled", "info: decode + gather shuffled rows, 1 thr"),
                       ("dataset_iter_no_dataloader", "info: ShardDataset iter, no DataLoader")):
        r = ref[key]
        rows.append((label, f"{r['images'] / r['s']:,.0f} img/s", "", "", "", ""))
    for key, r in res["ipc_floor"].items():
        rows.append((f"info: DataLoader transfer only, {key}", f"{r['images'] / r['s']:,.0f} img/s",
                     "ready-made batches", "", "", ""))
    for src in ("local", "s3"):
        if src not in res:
            continue
        for w in ("w0", "w2"):
            ips = res[src][w]["images_per_s"]
            mr = res[src][w]["median_run"]
            rows.append((f"{'local cache' if src == 'local' else 'S3 (moto)'} num_workers={w[1:]}",
                         f"{ips:,.0f} img/s", f"{mr['images']} img in {mr['wall_s']:.2f} s",
                         f"{ips / TARGET_IPS:.2f}x", ">= 10,000/s", B.verdict(">=", TARGET_IPS, ips)))
    res["table"] = B.table_json(rows)
    res["load_avg_end"] = os.getloadavg()
    res["bench_wall_s"] = time.perf_counter() - t_start
    print()
    print(f"{name}: {n_train} train images of {manifest['shape']} uint8 ({ref['raw_bytes'] / 1e9:.2f} GB raw, "
          f"{ref['compressed_bytes'] / 1e6:.0f} MB in {len(train)} zstd shards); batch {args.batch_size}; median of "
          f"{args.epochs} epochs; {os.cpu_count()} CPUs; 1-min load avg {load_start:.2f} before timing, "
          f"{res['load_avg_end'][0]:.2f} at the end")
    B.print_table(rows)
    print(f"pull_dataset {res['pull_local_s']:.2f} s"
          + (f"; S3: tables copied {res['s3_copy_tables_s']:.2f} s, enc2 built into S3 {res['s3_build_s']:.2f} s"
             if "s3" in res else ""))
    dest = out / "bench_loader.json"
    dest.write_text(json.dumps(res, indent=1, default=str))
    print(f"written: {dest} (bench wall {res['bench_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
