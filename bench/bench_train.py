#!/usr/bin/env python
"""Benchmark: training throughput of every registry model on this CPU, and the share spent waiting for data.

Usage::

    .venv/bin/python bench/bench_train.py [--source generated:64:2] [--steps 30] [--models a,b] [--out DIR]

1. A dataset of the generated corpus is built once with ``flows.build.run_build`` (encodings enc2 and
   hilbert at order 8; enc2 windows overlap, ``--hop`` columns apart, so that one epoch holds enough
   batches) into a local source store under ``--out`` (default ``bench/out/``, ignored by git). The build
   runs in a child process (its ephemeral Prefect server never shares the CPU with a timing) and is
   skipped when a marker says the same build is already there.
2. ``pull_dataset`` copies both datasets into a local cache folder (timed, for information).
3. The loader alone: ``ShardDataset`` over the cache's train split, read in the main thread as
   ``train_model`` reads it (no DataLoader), at each batch size used below: images/s over a whole epoch
   (median of ``--repeats``), and the time of the first ``--steps`` batches, i.e. the data wait a training
   run of that many steps cannot avoid.
4. Every model in ``models.registry.MODEL_NAMES`` (the autoencoder on hilbert, every other on enc2) is
   trained with ``tasks.steps.train.train_model`` with its default config for one epoch of at most ``--steps``
   steps, reading from the cache, into a fresh temporary store (so nothing resumes). Samples/s and the
   data-wait share are the trainer's own figures (``TrainResult.history``: time blocked in ``iter`` /
   ``next`` of the training data over the training loop's time); steps/s = steps / loop time. Target:
   data-wait share < 5 % for every model.

Results are printed as a table and written as JSON to ``<out>/bench_train.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.storage.settings import apply_prefect_defaults  # noqa: E402

apply_prefect_defaults()  # before anything can import prefect

from benchlib import wait_quiet  # noqa: E402

TABLES_NAME = "trainbench"
TARGET_WAIT_SHARE = 0.05
ENCODINGS = ("enc2", "hilbert")
HILBERT_ORDER = 8


# --------------------------------------------------------------------------------------------------
# the dataset: built once (child process), pulled to a local cache
# --------------------------------------------------------------------------------------------------

def build_params(source: str, hop: int, store: Path) -> dict:
    return {"source": source, "store": str(store), "name": TABLES_NAME, "encodings": list(ENCODINGS),
            "roll": {"hop_columns": hop}, "hilbert": {"order": HILBERT_ORDER}, "workers": 2, "previews": 0}


def child_env(out: Path) -> dict:
    env = dict(os.environ)
    env.update({
        # the generated corpus and Prefect's task results stay under bench/out
        "MIDIPIX_CACHE_DIR": str(out / "train-cache-dir"),
        # a private Prefect home: never ~/.prefect, which other runs may be using
        "PREFECT_HOME": str(out / "prefect-home-train"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    })
    env.pop("PREFECT_API_URL", None)
    return env


def build_child(params_json: str, result_json: str) -> None:
    from flows.build import BuildParams, run_build

    t = time.perf_counter()
    result = run_build(BuildParams(**json.loads(params_json)))
    Path(result_json).write_text(json.dumps({"seconds": time.perf_counter() - t,
                                             "datasets": [{k: d.get(k) for k in ("name", "version")}
                                                          for d in result["datasets"]]}, default=str))


def ensure_dataset(out: Path, source: str, hop: int) -> tuple[Path, dict]:
    """The source store with both datasets published; (store folder, build info). Built once."""
    store = out / "stores" / "train-src"
    marker = out / "stores" / "train-src.json"
    params = build_params(source, hop, store)
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("params") == params and all(_published(store, e) for e in ENCODINGS):
            return store, {**info, "reused": True}
    print(f"  building {source} ({', '.join(ENCODINGS)}) into {store} (child process) ...", flush=True)
    marker.unlink(missing_ok=True)
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    fd, result_json = tempfile.mkstemp(prefix="midipix-bench-train-build-", suffix=".json")
    os.close(fd)
    log = out / "bench_train_build.log"
    t = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--build-child", json.dumps(params),
                               "--child-json", result_json], env=child_env(out), cwd=str(ROOT), stdout=fh,
                              stderr=subprocess.STDOUT, timeout=900)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"dataset build failed (rc {proc.returncode}); see {log}")
    child = json.loads(Path(result_json).read_text())
    os.unlink(result_json)
    info = {"params": params, "build_flow_s": child["seconds"], "build_process_s": wall,
            "datasets": child["datasets"]}
    marker.write_text(json.dumps(info, indent=1))
    print(f"  built in {wall:.1f} s (flow call {child['seconds']:.1f} s)", flush=True)
    return store, {**info, "reused": False}


def _published(store: Path, encoding: str) -> bool:
    from tasks.steps.loader import read_dataset_manifest
    from tasks.storage.store import Store

    try:
        read_dataset_manifest(Store(str(store)), f"{TABLES_NAME}.{encoding}")
        return True
    except Exception:  # noqa: BLE001 - anything missing or damaged means "build again"
        return False


def pull(store: Path, cache: Path) -> dict:
    from tasks.steps.loader import pull_dataset

    out = {}
    for enc in ENCODINGS:
        name = f"{TABLES_NAME}.{enc}"
        t = time.perf_counter()
        m = pull_dataset(str(store), name, cache)
        splits: dict = {}
        for s in m["shards"]:
            d = splits.setdefault(s["split"], {"shards": 0, "images": 0, "bytes": 0})
            d["shards"] += 1
            d["images"] += s["rows"]
            d["bytes"] += s["bytes"]
        out[enc] = {"name": name, "version": m["version"], "pull_s": time.perf_counter() - t, "splits": splits}
    return out


# --------------------------------------------------------------------------------------------------
# the loader alone
# --------------------------------------------------------------------------------------------------

def loader_epoch(cache: Path, name: str, batch_size: int, epoch: int, first_n: int) -> dict:
    """One epoch of the train split in the main thread: wall, images, and the time of the first ``first_n`` batches."""
    from tasks.steps.loader import ShardDataset

    t0 = time.perf_counter()
    ds = ShardDataset(str(cache), name, "train", batch_size, shuffle=True, seed=0)
    ds.set_epoch(epoch)
    n = batches = 0
    first_batch = first_n_s = None
    gaps = []  # wall time of each batch (the first includes the dataset's creation)
    t_prev = t0
    for images, _meta in ds:
        now = time.perf_counter()
        gaps.append(now - t_prev)
        t_prev = now
        n += images.shape[0]
        batches += 1
        if batches == 1:
            first_batch = time.perf_counter() - t0
        if batches == first_n:
            first_n_s = time.perf_counter() - t0
    wall = time.perf_counter() - t0
    if n != ds.num_images:
        raise RuntimeError(f"{name}: an epoch gave {n} images, expected {ds.num_images}")
    return {"wall_s": wall, "images": n, "batches": batches, "images_per_s": n / wall,
            "first_batch_s": first_batch, "first_n_batches_s": first_n_s if first_n_s is not None else wall,
            "shards": len(ds.shards), "batch_ms": [round(g * 1e3, 3) for g in gaps],
            "median_batch_ms": statistics.median(gaps) * 1e3, "max_batch_ms": max(gaps) * 1e3,
            "slow_batches": sum(g > 1e-3 for g in gaps), "slow_batches_ms": sum(g for g in gaps if g > 1e-3) * 1e3}


def bench_loader(cache: Path, encoding: str, batch_size: int, repeats: int, first_n: int) -> dict:
    name = f"{TABLES_NAME}.{encoding}"
    runs = [loader_epoch(cache, name, batch_size, e, first_n) for e in range(repeats)]
    med = sorted(runs, key=lambda r: r["images_per_s"])[len(runs) // 2]
    return {"encoding": encoding, "batch_size": batch_size, "images_per_s": statistics.median(r["images_per_s"] for r in runs),
            "first_batch_s": statistics.median(r["first_batch_s"] for r in runs),
            "first_n_batches": first_n, "first_n_batches_s": statistics.median(r["first_n_batches_s"] for r in runs),
            "median_batch_ms": statistics.median(r["median_batch_ms"] for r in runs),
            "max_batch_ms": statistics.median(r["max_batch_ms"] for r in runs),
            "median_run": med, "runs": runs}


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------

def model_plan(args) -> list[tuple[str, str, int]]:
    """(model, encoding, batch size) for every registry model (or the ``--models`` subset)."""
    from models.registry import MODEL_NAMES, get_spec

    names = MODEL_NAMES if not args.models else tuple(m.strip() for m in args.models.split(",") if m.strip())
    plan = []
    for m in names:
        spec = get_spec(m)
        if spec.family == "autoencoder":
            plan.append((m, "hilbert", args.batch_ae))
        elif spec.family == "gan":
            plan.append((m, "enc2", args.batch_gan))
        else:
            plan.append((m, "enc2", args.batch_seq))
    return plan


def train_one(cache: Path, model: str, encoding: str, batch_size: int, steps: int, epochs: int) -> dict:
    from storage_schemas.training import TrainConfig
    from tasks.steps.train import TrainRequest, train_model

    store = tempfile.mkdtemp(prefix="midipix-bench-train-store-")  # fresh: nothing to resume from
    try:
        req = TrainRequest(model=model, encoding=encoding, tables_name=TABLES_NAME,
                           train=TrainConfig(epochs=epochs, batch_size=batch_size, max_steps_per_epoch=steps, seed=0))
        t = time.perf_counter()
        r = train_model(store, req, data_uri=str(cache))
        wall = time.perf_counter() - t
    finally:
        shutil.rmtree(store, ignore_errors=True)
    hist = r["history"]
    samples = sum(h["samples"] for h in hist)
    n_steps = sum(h["steps"] for h in hist)
    loop_s = sum(h["samples"] / h["samples_per_s"] for h in hist if h["samples_per_s"] > 0)
    wait_s = sum(h["data_wait_share"] * h["samples"] / h["samples_per_s"] for h in hist if h["samples_per_s"] > 0)
    return {"model": model, "encoding": encoding, "batch_size": batch_size, "parameters": r["parameters"],
            "epochs": len(hist), "steps": n_steps, "samples": samples, "loop_s": loop_s, "data_wait_s": wait_s,
            "samples_per_s": samples / loop_s, "steps_per_s": n_steps / loop_s,
            "data_wait_share": wait_s / loop_s, "train_model_s": wall,
            "epoch_s_incl_validation": sum(h["seconds"] for h in hist),
            "train_loss": hist[-1]["train"].get("loss"), "val_loss": (hist[-1]["val"] or {}).get("loss"),
            "history": hist}


def warm_up(cache: Path) -> None:
    """Untimed: the first torch ops of a process (kernel selection, allocator, lazy imports).

    Two training steps of one model per kind of network (LSTM, conv GAN, conv autoencoder) on a real
    batch, outside ``train_model`` (whose validation pass over a whole split would only cost time here).
    """
    from models.registry import get_spec
    from models.trainer import TrainConfig
    from tasks.steps.loader import ShardDataset

    for model, enc, bs in (("lstm", "enc2", 8), ("dcgan", "enc2", 8), ("autoencoder", "hilbert", 4)):
        spec = get_spec(model)
        config = spec.default_config(enc)
        module = spec.train_module(config, spec.networks(config))
        opts = module.optimizers(TrainConfig())
        batch = next(iter(ShardDataset(str(cache), f"{TABLES_NAME}.{enc}", "train", bs, shuffle=False)))
        for step in range(2):
            module.train_step(batch, opts, step)


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default="generated:64:2", help="build source (generated[:N[:MINUTES]])")
    ap.add_argument("--hop", type=int, default=50, help="enc2 window hop in columns (200 = no overlap)")
    ap.add_argument("--steps", type=int, default=30, help="max_steps_per_epoch of every training run")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-seq", type=int, default=64, help="batch size of the LSTM and seq2seq models")
    ap.add_argument("--batch-gan", type=int, default=16, help="batch size of the GANs")
    ap.add_argument("--batch-ae", type=int, default=16, help="batch size of the autoencoder")
    ap.add_argument("--models", default="", help="comma-separated subset of the registry (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="loader-alone epochs (median)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--wait-quiet", type=float, default=120.0, metavar="S",
                    help="before timing, wait up to S seconds for the 1-min load average to drop below 0.5")
    # internal: the build child process
    ap.add_argument("--build-child", help=argparse.SUPPRESS)
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_child:
        build_child(args.build_child, args.child_json)
        return

    import torch

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"dataset: {args.source}, encodings {', '.join(ENCODINGS)} (enc2 hop {args.hop}, hilbert order "
          f"{HILBERT_ORDER})", flush=True)
    store, build = ensure_dataset(out, args.source, args.hop)
    if build["reused"]:
        print(f"  reused {store}", flush=True)
    cache = out / "stores" / "train-cache"
    pulled = pull(store, cache)
    for enc, p in pulled.items():
        sp = ", ".join(f"{k} {v['images']} img / {v['shards']} shards / {v['bytes'] / 1e6:.0f} MB"
                       for k, v in sorted(p["splits"].items()))
        print(f"  pulled {p['name']} {p['version']} in {p['pull_s']:.2f} s: {sp}", flush=True)

    plan = model_plan(args)
    warm_up(cache)
    load_start = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else os.getloadavg()[0]
    print(f"  load average before timing: {load_start:.2f}; torch threads {torch.get_num_threads()}", flush=True)

    res: dict = {"load_avg_start": load_start, "config": {
        "source": args.source, "enc2_hop_columns": args.hop, "hilbert_order": HILBERT_ORDER, "steps": args.steps,
        "epochs": args.epochs, "batch_sizes": {"lstm/seq2seq": args.batch_seq, "gan": args.batch_gan,
                                               "autoencoder": args.batch_ae},
        "repeats": args.repeats, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
        "versions": {p: md.version(p) for p in ("torch", "numpy", "pyarrow", "prefect")}},
        "build": build, "pull": pulled}

    # --- the loader alone, at every batch size used below ---
    print("loader alone (ShardDataset over the cache, main thread, train split):", flush=True)
    loader = {}
    for enc, bs in sorted({(e, b) for _, e, b in plan}):
        r = bench_loader(cache, enc, bs, args.repeats, args.steps)
        loader[f"{enc}/bs{bs}"] = r
        m = r["median_run"]
        print(f"  {enc} bs {bs}: {r['images_per_s']:,.0f} images/s; first batch {r['first_batch_s'] * 1e3:.0f} ms, "
              f"first {args.steps} batches {r['first_n_batches_s'] * 1e3:.0f} ms; per batch median "
              f"{r['median_batch_ms']:.2f} ms, max {r['max_batch_ms']:.1f} ms; {m['slow_batches']} of {m['batches']} "
              f"batches over 1 ms ({m['shards']} shards) hold {m['slow_batches_ms'] / (m['wall_s'] * 1e3):.0%} "
              f"of the epoch", flush=True)
    res["loader"] = loader

    # --- every model ---
    print(f"training: {len(plan)} models, {args.epochs} epoch(s) of <= {args.steps} steps each", flush=True)
    runs = []
    for model, enc, bs in plan:
        r = train_one(cache, model, enc, bs, args.steps, args.epochs)
        runs.append(r)
        print(f"  {model:<17} {enc:<8} bs {bs:<3} {r['parameters']:>10,} params  {r['steps']} steps  "
              f"{r['samples_per_s']:8.1f} samples/s  {r['steps_per_s']:6.2f} steps/s  "
              f"data wait {r['data_wait_share']:.1%}  (train_model {r['train_model_s']:.1f} s)", flush=True)
    res["models"] = runs

    # --- results ---
    rows = []  # (figure, value, baseline, ratio, target, verdict)
    for r in runs:
        key = f"{r['encoding']}/bs{r['batch_size']}"
        lo = loader[key]
        expected = lo["first_n_batches_s"] * min(r["steps"], lo["median_run"]["batches"]) / max(
            min(args.steps, lo["median_run"]["batches"]), 1)
        r["loader_alone_expected_wait_share"] = expected / r["loop_s"]
        rows.append((f"{r['model']} ({r['encoding']}, bs {r['batch_size']}, {r['parameters']:,} p)",
                     f"{r['samples_per_s']:,.1f} samples/s, {r['steps_per_s']:.2f} steps/s",
                     f"loader {lo['images_per_s']:,.0f} img/s",
                     f"{lo['images_per_s'] / r['samples_per_s']:,.0f}x",
                     f"wait {r['data_wait_share']:.1%} < 5%",
                     "PASS" if r["data_wait_share"] < TARGET_WAIT_SHARE else "FAIL"))
    for key, lo in loader.items():
        rows.append((f"info: loader alone {key}", f"{lo['images_per_s']:,.0f} images/s",
                     f"first batch {lo['first_batch_s'] * 1e3:.0f} ms", "", "(no target)", ""))
    res["table"] = [dict(zip(("figure", "value", "baseline", "ratio", "target", "verdict"), r)) for r in rows]
    res["all_pass"] = all(r["data_wait_share"] < TARGET_WAIT_SHARE for r in runs)
    res["load_avg_end"] = os.getloadavg()
    res["bench_wall_s"] = time.perf_counter() - t_start

    print()
    print(f"{len(runs)} models, {args.epochs} epoch(s) x <= {args.steps} steps, data read from the local cache "
          f"{cache}; {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), 1-min "
          f"load avg {load_start:.2f} before timing, {res['load_avg_end'][0]:.2f} at the end")
    header = ("figure", "value", "baseline", "ratio", "target", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print("ratio = loader-alone images/s over the model's samples/s (how much faster the data comes than it is used)")
    failing = [r for r in runs if r["data_wait_share"] >= TARGET_WAIT_SHARE]
    for r in failing:
        lo = loader[f"{r['encoding']}/bs{r['batch_size']}"]
        print(f"  {r['model']}: waited {r['data_wait_s']:.3f} s of a {r['loop_s']:.2f} s loop; the loader alone "
              f"needs {lo['first_batch_s'] * 1e3:.0f} ms for its first batch (first shard read, sha256, decode) and "
              f"{lo['first_n_batches_s'] * 1e3:.0f} ms for the first {args.steps} batches "
              f"(= {r['loader_alone_expected_wait_share']:.1%} of this loop); per batch median "
              f"{lo['median_batch_ms']:.2f} ms, max {lo['max_batch_ms']:.1f} ms: the cost sits at shard boundaries "
              f"(read + sha256 + decode + shuffle of a whole shard, in the training thread, no prefetch), against "
              f"{1e3 / r['steps_per_s']:.0f} ms per step")
    print(f"overall: {'PASS' if res['all_pass'] else 'FAIL'} (data-wait share < 5 % for every model)")
    dest = out / "bench_train.json"
    dest.write_text(json.dumps(res, indent=1, default=str))
    print(f"written: {dest} (bench wall {res['bench_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
