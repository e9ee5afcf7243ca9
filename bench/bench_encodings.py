#!/usr/bin/env python
"""Benchmark: notes table -> piano-roll images (enc1/2/3), image datasets, Hilbert audio images.

Usage::

    .venv/bin/python bench/bench_encodings.py [--pieces N] [--minutes M] [--sections compare,full,incremental,hilbert]

Everything is measured side by side in one run on the generated corpus (the defaults give about as many
notes as full MAESTRO: 1,300 pieces of 9.4 min, ~7.1 M notes, ~72,000 windows per encoding); the corpus
and its tables are materialised once under ``--out`` (default ``bench/out/``, ignored by git).

compare      enc2 from one piece's rows of the notes table, one thread, on ``--subset`` pieces spread over
             the corpus, against
             A ``pretty_midi.PrettyMIDI(...).get_piano_roll(fs=20)`` (the PrettyMIDI is built from the same
               rows beforehand; only ``get_piano_roll`` is timed): a (128, T) float64 roll of summed
               velocities, one channel, no onsets, not windowed;
             B ``symusic`` ``ScoreTick.pianoroll(modes=["onset", "frame"], pitch_range=(21, 109),
               encode_velocity=True)`` on a score built beforehand at tpq 10 and 120 bpm (one tick = 0.05 s)
               whose notes are already on our column grid (integer ticks): a (2, 1, 88, T) uint8 array,
               onset and frame channels holding the velocity, not windowed.
             ours ``tasks.kernels.rolls.to_windows`` (enc2): float seconds -> columns, same-pitch overlap
               resolution, all 200-column windows of the piece as (W, 3, 88, 200) uint8: state
               (ONSET/SUSTAIN), velocity and program channels.
             info: ours from the integer grid symusic gets (``note_columns`` done beforehand, untimed), drawn
               by ``render_windows`` into a fresh ``np.zeros`` array per piece.
             A frame/onset check compares the masks on a few pieces (ours stitched back together).
full         the whole corpus: bare rendering (``to_windows`` over all pieces, 2 threads, outputs dropped)
             per encoding, then ``build_image_dataset`` (load tables, render, shard, zstd Arrow IPC, write to a
             fresh local store) per encoding with workers=2, with a breakdown of where its time goes, and a
             micro-breakdown of one enc2 shard (render, concatenate, tensor array, IPC codecs, sha256, write).
incremental  one more piece of the generated corpus is added (new tables version), and each encoding is
             rebuilt with the full build as the previous version: wall time, rendered vs reused shards.
hilbert      ``to_hilbert`` / ``from_hilbert`` (order 8, a batch of ``--hilbert-batch`` blocks, float16 and
             float32, preallocated ``out``) against a recursive pure-Python construction of the paper's
             curve that places samples one at a time (timed on a few blocks, scaled to the batch) and
             against ``np.copyto`` of the same bytes.

Fast measurements are repeated (``--repeats``, default 3; Hilbert 7) and the median reported; the compare
section runs ``--compare-repeats`` (default 7) interleaved rounds, ours and symusic back to back in each and
taking turns to go first, and also prints their ratio's range over the rounds. The dataset builds run once
each (they are the slow part). Results are printed as a table and written as JSON to
``<out>/bench_encodings.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B

ROOT = B.ROOT
from tasks.storage.settings import apply_prefect_defaults

apply_prefect_defaults()

import numpy as np

ENCODINGS = ("enc1", "enc2", "enc3")
TARGETS = {
    "vs_pretty_midi": (">=", 50.0),
    "vs_symusic": (">=", 1.0),
    "full_render_s": ("<", 20.0),
    "full_build_s": ("<", 20.0),
    "incremental_shards": ("<", 1.5),  # rendered shards after adding one piece: exactly 1
    "hilbert_vs_recursive": (">=", 100.0),
    "hilbert_vs_copy": (">=", 0.3),
}


def verdict(key: str, value: float) -> str:
    return B.verdict(*TARGETS[key], value)


def piece_cols(cols: dict, p: dict) -> dict:
    return {k: v[p["a"]:p["b"]] for k, v in cols.items()}


# --------------------------------------------------------------------------------------------------
# compare: enc2 vs pretty_midi and symusic on the same notes
# --------------------------------------------------------------------------------------------------

def make_pretty_midi(nc: dict):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(int(v), int(p), float(s), float(e))
                  for p, v, s, e in zip(nc["pitch"], nc["velocity"], nc["onset_s"], nc["offset_s"])]
    pm.instruments.append(inst)
    return pm


def make_symusic(nc: dict):
    """A tick score at tpq 10 and 120 bpm (1 tick = 0.05 s), notes on our midipix column grid."""
    import symusic
    from symusic.core import NoteTickList

    from storage_schemas.encodings import RollConfig
    from tasks.kernels.rolls import note_columns

    start, stop = note_columns(nc["onset_s"], nc["offset_s"], RollConfig("enc2"))
    score = symusic.Score(10)
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track(name="piano", program=0, ttype="tick")
    track.notes = NoteTickList.from_numpy(start.astype(np.int32), (stop - start).astype(np.int32),
                                          nc["pitch"].astype(np.int8), nc["velocity"].astype(np.int8))
    score.tracks.append(track)
    return score


def symusic_roll(score):
    return score.pianoroll(modes=["onset", "frame"], pitch_range=(21, 109), encode_velocity=True)


def check_masks(nc: dict) -> dict:
    """Do ours and the baselines light the same pixels? (frame and onset masks, pitch rows 21..108)."""
    from storage_schemas.encodings import ONSET, RollConfig
    from tasks.kernels.rolls import stitch_windows, to_windows

    res = {}
    # symusic vs ours (midipix convention): frame = any pixel of a note, onset = the ONSET pixels
    w = to_windows(nc["pitch"], nc["velocity"], nc["program"], nc["onset_s"], nc["offset_s"], RollConfig("enc2"))
    ours = stitch_windows(w.images, w.starts)  # (3, 88, width)
    sym = symusic_roll(make_symusic(nc))[:, 0]  # (2, 88, T)
    t = min(ours.shape[2], sym.shape[2])
    res["symusic_frame_equal"] = bool(np.array_equal(ours[0, :, :t] != 0, sym[1, :, :t] != 0)
                                      and not ours[0, :, t:].any() and not sym[1, :, t:].any())
    res["symusic_onset_equal"] = bool(np.array_equal(ours[0, :, :t] == ONSET, sym[0, :, :t] != 0))
    # pretty_midi vs ours in the pretty_midi convention: the union of the notes' pixels
    cfg = RollConfig("enc2", convention="pretty_midi")
    w = to_windows(nc["pitch"], nc["velocity"], nc["program"], nc["onset_s"], nc["offset_s"], cfg)
    ours = stitch_windows(w.images, w.starts)
    pm = make_pretty_midi(nc).get_piano_roll(fs=20)[21:109]
    t = min(ours.shape[2], pm.shape[1])
    res["pretty_midi_frame_equal"] = bool(np.array_equal(ours[0, :, :t] != 0, pm[:, :t] != 0)
                                          and not ours[0, :, t:].any() and not pm[:, t:].any())
    return res


def bench_compare(pieces: list[dict], cols: dict, subset: int, repeats: int) -> dict:
    from storage_schemas.encodings import RollConfig
    from tasks.kernels import rolls as E
    from tasks.kernels.rolls import to_windows

    idx = np.linspace(0, len(pieces) - 1, min(subset, len(pieces))).round().astype(int)
    chosen = [piece_cols(cols, pieces[i]) for i in idx]
    notes = sum(len(c["pitch"]) for c in chosen)
    print(f"compare: enc2 on {len(chosen)} pieces ({notes} notes) vs pretty_midi and symusic ...", flush=True)
    cfg = RollConfig("enc2")
    pms = [make_pretty_midi(c) for c in chosen]
    scores = [make_symusic(c) for c in chosen]

    def ours():
        for c in chosen:
            to_windows(c["pitch"], c["velocity"], c["program"], c["onset_s"], c["offset_s"], cfg,
                       offset_pedal_s=c["offset_pedal_s"])

    grid = [E.note_columns(c["onset_s"], c["offset_s"], cfg) for c in chosen]  # what symusic's ticks hold

    def ours_grid():  # the same integer grid symusic gets, into a fresh zeroed array per piece
        for c, (start, stop) in zip(chosen, grid):
            out = np.zeros((E._n_windows(int(stop.max()) if len(stop) else 0, cfg),) + cfg.shape, np.uint8)
            E.render_windows(out, c["pitch"], c["velocity"], c["program"], start, stop, cfg)

    def pretty():
        for pm in pms:
            pm.get_piano_roll(fs=20)

    def sym():
        for s in scores:
            symusic_roll(s)

    def sym3():
        for s in scores:
            s.pianoroll(modes=["onset", "frame", "offset"], pitch_range=(21, 109), encode_velocity=True)

    ours(), ours_grid(), sym(), pretty()  # untimed warm-up (numba kernels loaded, first-call costs)
    out = {"pieces": len(chosen), "notes": notes}
    # interleaved rounds so that a change in machine load hits all contenders alike; ours and symusic,
    # the close pair, run back to back in each round, first one then the other first
    times = defaultdict(list)
    pair = [("ours_enc2", ours), ("symusic", sym)]
    rest = [("ours_enc2_grid", ours_grid), ("symusic_3modes", sym3), ("pretty_midi", pretty)]
    for k in range(repeats):
        for name, fn in (pair if k % 2 == 0 else pair[::-1]) + rest:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        out[name] = {"s": statistics.median(ts), "runs_s": ts}
    pairs = [b / a for a, b in zip(times["ours_enc2"], times["symusic"])]
    out["symusic_over_ours_by_round"] = {"min": min(pairs), "median": statistics.median(pairs), "max": max(pairs)}
    # what the outputs hold (bytes written per piece, on average over the subset)
    out["ours_bytes_per_piece"] = float(np.mean([
        to_windows(c["pitch"], c["velocity"], c["program"], c["onset_s"], c["offset_s"], cfg).images.nbytes
        for c in chosen]))
    out["symusic_bytes_per_piece"] = float(np.mean([symusic_roll(s).nbytes for s in scores]))
    out["pretty_midi_bytes_per_piece"] = float(np.mean([pm.get_piano_roll(fs=20).nbytes for pm in pms[:10]]))
    checks = [check_masks(c) for c in chosen[:5]]
    out["mask_checks"] = {k: all(c[k] for c in checks) for k in checks[0]}
    # where ours spends: the Python wrapper vs the one numba kernel, and its allocation
    out["ours_split"] = ours_split(chosen, cfg)
    return out


def ours_split(chosen: list[dict], cfg) -> dict:
    """Seconds over the subset: to_windows, the numba kernel alone, an empty piece (fixed costs)."""
    from tasks.kernels import rolls as E

    def kernel():
        for c in chosen:
            E._render_piece_kernel(c["onset_s"], c["offset_s"], c["pitch"], c["velocity"], c["program"], E._NO_TEMPO,
                                   cfg.resolution_s, False, E._style(cfg), cfg.channels, cfg.pitch_lo, cfg.rows,
                                   cfg.columns, cfg.hop_columns, -1)

    def alloc():  # the zero-filled output alone, in NumPy
        for c in chosen:
            n_cols = int(np.floor(c["offset_s"].max() * 20 + 1e-9)) if len(c["offset_s"]) else 0
            np.zeros((E._n_windows(n_cols, cfg),) + cfg.shape, np.uint8)

    empty = {k: v[:0] for k, v in chosen[0].items()}

    def fixed():
        for _ in chosen:
            E.to_windows(empty["pitch"], empty["velocity"], empty["program"], empty["onset_s"], empty["offset_s"], cfg)

    kernel(), alloc(), fixed()
    return {name: B.timed(fn, 5)[0] for name, fn in
            (("kernel_s", kernel), ("numpy_zeros_s", alloc),
             ("to_windows_empty_piece_s", fixed))}


# --------------------------------------------------------------------------------------------------
# full: the whole corpus
# --------------------------------------------------------------------------------------------------

def render_all(pieces: list[dict], cols: dict, encoding: str, threads: int) -> int:
    from storage_schemas.encodings import RollConfig
    from tasks.kernels.rolls import to_windows

    cfg = RollConfig(encoding)

    def one(p):
        c = piece_cols(cols, p)
        return to_windows(c["pitch"], c["velocity"], c["program"], c["onset_s"], c["offset_s"], cfg,
                          offset_pedal_s=c["offset_pedal_s"]).images.shape[0]

    if threads == 1:
        return sum(map(one, pieces))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(one, pieces))


def render_kept(groups: list[list[dict]], cols: dict, encoding: str, threads: int) -> int:
    """to_windows as the build calls it: one job per shard, the shard's outputs kept until its end and then
    concatenated (as ``build_image_dataset`` does before encoding the shard); nothing else."""
    from storage_schemas.encodings import RollConfig
    from tasks.kernels.rolls import to_windows

    cfg = RollConfig(encoding)

    def one(group):
        imgs = []
        for p in group:
            c = piece_cols(cols, p)
            imgs.append(to_windows(c["pitch"], c["velocity"], c["program"], c["onset_s"], c["offset_s"], cfg,
                                   offset_pedal_s=c["offset_pedal_s"]).images)
        return np.concatenate(imgs).shape[0]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(one, groups))


class Probe:
    """Seconds spent in named calls, summed over threads (wraps functions; restores them on exit)."""

    def __init__(self):
        self.spent = defaultdict(float)
        self.calls = defaultdict(int)
        self.lock = threading.Lock()
        self._undo = []

    def wrap(self, name, fn):
        def call(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t
                with self.lock:
                    self.spent[name] += dt
                    self.calls[name] += 1
        return call

    def patch(self, obj, attr, name):
        orig = getattr(obj, attr)
        setattr(obj, attr, self.wrap(name, orig))
        self._undo.append((obj, attr, orig))

    def restore(self):
        for obj, attr, orig in reversed(self._undo):
            setattr(obj, attr, orig)
        self._undo.clear()


def timed_store(uri: str, probe: Probe):
    from tasks.storage.store import LocalStore

    class TimedStore(LocalStore):
        def put_if_absent(self, key, data):
            return probe.wrap("store.put_if_absent (shards, fsync)", super().put_if_absent)(key, data)

        def write_bytes(self, key, data):
            return probe.wrap("store.write_bytes (images table, manifest)", super().write_bytes)(key, data)

        def read_bytes(self, key):
            return probe.wrap("store.read_bytes", super().read_bytes)(key)

    return TimedStore(uri)


def build_dataset(store_dir: Path, tables_manifest: dict, encoding: str, previous=None, previous_images=None,
                  workers: int = 2) -> dict:
    """One ``build_image_dataset`` + publish, instrumented; wall, CPU and the breakdown."""
    from tasks.kernels import rolls as E
    from tasks.steps import render as R

    probe = Probe()
    store = timed_store(str(store_dir), probe)
    probe.patch(R, "_load_notes", "load notes table")
    probe.patch(R, "_load_pieces", "load pieces table")
    probe.patch(R, "render_piece", "render_piece (augment + to_windows)")
    probe.patch(E, "to_windows", "  to_windows")
    probe.patch(R, "encode_shard", "encode_shard (Arrow IPC, zstd)")
    probe.patch(R.pq, "write_table", "images.parquet encode")
    c0 = time.process_time()
    t0 = time.perf_counter()
    try:
        manifest, stats = R.build_image_dataset(store, B.TABLES_NAME, tables_manifest, encoding, previous=previous,
                                                previous_images=previous_images, workers=workers)
        R.publish_dataset(store, manifest["name"], manifest["version"])
    finally:
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        probe.restore()
    return {"wall_s": wall, "cpu_s": cpu, "images": manifest["images"], "shards": len(manifest["shards"]),
            "bytes": manifest["bytes"], "raw_bytes": manifest["raw_bytes"], "version": manifest["version"],
            "rendered_shards": stats.rendered_shards, "reused_shards": stats.reused_shards,
            "rendered_pieces": stats.rendered_pieces,
            "thread_s": dict(probe.spent), "calls": dict(probe.calls), "manifest": manifest}


def shard_micro(store_dir: Path, pieces: list[dict], cols: dict, manifest: dict, repeats: int) -> dict:
    """Each step of one enc2 shard (the largest train shard), alone, one thread."""
    import pyarrow as pa

    from storage_schemas import shards as SH
    from storage_schemas.encodings import RollConfig
    from tasks.kernels.rolls import to_windows
    from tasks.storage.shards import encode_shard, group_pieces
    from tasks.storage.store import Store

    by_sha = {}
    store = Store(str(store_dir))
    from tasks.steps import render as R
    for row in R._load_pieces(store, manifest):
        by_sha[row["sha256"]] = row
    train = sorted((r for r in by_sha.values() if r["split"] == "train"), key=lambda r: r["sha256"])
    groups = group_pieces([r["sha256"] for r in train])
    slices = {p["piece_id"]: p for p in pieces}
    cfg = RollConfig("enc2")
    members = [slices[train[i]["piece_id"]] for i in max(groups, key=len)]
    out = {"pieces": len(members)}

    def render():
        res = []
        for p in members:
            c = piece_cols(cols, p)
            res.append(to_windows(c["pitch"], c["velocity"], c["program"], c["onset_s"], c["offset_s"], cfg,
                                  offset_pedal_s=c["offset_pedal_s"]).images)
        return res

    parts = render()
    images = np.concatenate(parts)
    n = images.shape[0]
    meta = (np.zeros(n, np.int64), np.zeros(n, np.int32), np.zeros(n, np.int8), np.full(n, -1, np.int64))
    out["images"] = n
    out["raw_bytes"] = int(images.nbytes)

    def ipc(codec):
        opts = pa.ipc.IpcWriteOptions(compression=codec)
        schema = SH.shard_schema(pa.uint8(), images.shape[1:])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, schema, options=opts) as wr:
            for a in range(0, n, SH.BATCH_ROWS):
                b = min(a + SH.BATCH_ROWS, n)
                arrs = [pa.array(m[a:b]) for m in meta] + [pa.FixedShapeTensorArray.from_numpy_ndarray(images[a:b])]
                wr.write_batch(pa.record_batch(arrs, schema=schema))
        return sink.getvalue()

    data = encode_shard(images, *meta)
    out["zstd_bytes"] = len(data)
    tmp = B.fresh_dir(store_dir.parent / "micro-store")
    local = Store(str(tmp))
    counter = iter(range(10**6))
    steps = {
        "render (to_windows x pieces)": render,
        "np.concatenate": lambda: np.concatenate(parts),
        "FixedShapeTensorArray.from_numpy_ndarray": lambda: [pa.FixedShapeTensorArray.from_numpy_ndarray(
            images[a:a + SH.BATCH_ROWS]) for a in range(0, n, SH.BATCH_ROWS)],
        "encode_shard (as built: zstd)": lambda: encode_shard(images, *meta),
        "IPC, no compression": lambda: ipc(None),
        "IPC, lz4": lambda: ipc("lz4"),
        "IPC, zstd level 1": lambda: ipc(pa.Codec("zstd", compression_level=1)),
        "IPC, zstd level -1": lambda: ipc(pa.Codec("zstd", compression_level=-1)),
        "sha256 of the shard bytes": lambda: hashlib.sha256(data).hexdigest(),
        "put_if_absent (fsync, local)": lambda: local.put_if_absent(f"x/{next(counter)}.arrow", data),
        "plain file write, no fsync": lambda: Path(tmp / f"plain-{next(counter)}").write_bytes(data),
        "decode: iter_batches + concatenate": lambda: decode(data),
    }
    for name, fn in steps.items():
        out[name] = B.timed(fn, repeats)[0]
    for codec, fn in (("lz4", lambda: ipc("lz4")), ("zstd_level_-1", lambda: ipc(pa.Codec("zstd", compression_level=-1)))):
        out[f"{codec}_bytes"] = len(fn())
    B.fresh_dir(tmp)
    return out


def decode(data):
    from tasks.storage.shards import iter_batches

    batches = list(iter_batches(data))
    return np.concatenate([b[0] for b in batches])


# --------------------------------------------------------------------------------------------------
# hilbert
# --------------------------------------------------------------------------------------------------

def recursive_place(block, order: int, image=None, decode_into=None):
    """The paper's recursive quadrant construction, one sample at a time (pure Python).

    The order-k curve is four order-(k-1) curves: the first mirrored on the diagonal in the top-left
    quadrant, then translated copies in the bottom-left and bottom-right quadrants, the last mirrored on
    the anti-diagonal in the top-right quadrant. ``place(k, T)`` walks the order-k curve with ``T`` the
    affine map (a, b, c, d, e, f): local (x, y) -> global (a x + b y + e, c x + d y + f). Encoding writes
    ``image[Y, X] = block[pos]``; decoding (``decode_into`` given) reads ``decode_into[pos] = image[Y, X]``.
    """
    pos = [0]

    def place(k, a, b, c, d, e, f):
        if k == 0:
            if decode_into is None:
                image[f, e] = block[pos[0]]
            else:
                decode_into[pos[0]] = image[f, e]
            pos[0] += 1
            return
        h = 1 << (k - 1)
        # quadrant 0: (x, y) -> (y, x)
        place(k - 1, b, a, d, c, e, f)
        # quadrant 1: (x, y) -> (x, y + h)
        place(k - 1, a, b, c, d, e + b * h, f + d * h)
        # quadrant 2: (x, y) -> (x + h, y + h)
        place(k - 1, a, b, c, d, e + a * h + b * h, f + c * h + d * h)
        # quadrant 3: (x, y) -> (2h - 1 - y, h - 1 - x)
        place(k - 1, -b, -a, -d, -c, e + a * (2 * h - 1) + b * (h - 1), f + c * (2 * h - 1) + d * (h - 1))

    place(order, 1, 0, 0, 1, 0, 0)
    return image if decode_into is None else decode_into


def bench_hilbert(batch: int, order: int, repeats: int, rec_blocks: int) -> dict:
    from tasks.kernels.hilbert import from_hilbert, hilbert_inverse_index, to_hilbert

    n, side = 1 << (2 * order), 1 << order
    rng = np.random.default_rng(0)
    out = {"batch": batch, "order": order}
    for dtype in (np.float16, np.float32):
        name = np.dtype(dtype).name
        print(f"hilbert {name}: batch {batch} x {n} ...", flush=True)
        samples = rng.random((batch, n), dtype=np.float32).astype(dtype)
        images = np.empty((batch, side, side), dtype)
        back = np.empty((batch, n), dtype)
        copy_dst = np.empty_like(samples)
        to_hilbert(samples, order, out=images)  # warm-up: kernels and index maps
        from_hilbert(images, order, out=back)
        assert np.array_equal(back.view(np.uint8), samples.view(np.uint8))
        # the recursive construction: correct, and its time per block
        rec_img = np.empty((side, side), dtype)
        t = time.perf_counter()
        for i in range(rec_blocks):
            recursive_place(samples[i], order, image=rec_img)
        rec_enc = (time.perf_counter() - t) / rec_blocks
        assert np.array_equal(rec_img, images[rec_blocks - 1]), "recursive construction disagrees with to_hilbert"
        rec_back = np.empty(n, dtype)
        t = time.perf_counter()
        for i in range(rec_blocks):
            recursive_place(None, order, image=images[i], decode_into=rec_back)
        rec_dec = (time.perf_counter() - t) / rec_blocks
        assert np.array_equal(rec_back, samples[rec_blocks - 1])
        inv = hilbert_inverse_index(order)
        fns = {
            "to_hilbert": lambda s=samples, i=images: to_hilbert(s, order, out=i),
            "from_hilbert": lambda i=images, b=back: from_hilbert(i, order, out=b),
            "to_hilbert_alloc": lambda s=samples: to_hilbert(s, order),
            "numpy_take": lambda s=samples, d=copy_dst, ix=inv: np.take(s, ix, axis=1, out=d),
            "np.copyto": lambda s=samples, d=copy_dst: np.copyto(d, s),
        }
        times = defaultdict(list)
        for _ in range(repeats):  # interleaved rounds: a change in machine load hits every contender alike
            for label, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t)
        figs = {label: statistics.median(ts) for label, ts in times.items()}
        figs["runs_s"] = dict(times)
        figs["recursive_encode_per_block_s"] = rec_enc
        figs["recursive_decode_per_block_s"] = rec_dec
        figs["bytes"] = int(samples.nbytes)
        out[name] = figs
    return out


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pieces", type=int, default=1300)
    ap.add_argument("--minutes", type=float, default=9.4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--sections", default="compare,full,incremental,hilbert")
    ap.add_argument("--subset", type=int, default=100, help="pieces for the pretty_midi / symusic comparison")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compare-repeats", type=int, default=7, help="interleaved rounds of the compare section")
    ap.add_argument("--hilbert-batch", type=int, default=256)
    ap.add_argument("--hilbert-recursive-blocks", type=int, default=2)
    ap.add_argument("--wait-quiet", type=float, default=120.0, metavar="S",
                    help="before timing, wait up to S seconds for the 1-min load average to drop below 0.5")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if "incremental" in sections:
        sections.add("full")

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MIDIPIX_CACHE_DIR", str(out / "cache"))
    t_start = time.perf_counter()
    folder = B.corpus_dir(out, args.pieces, args.minutes)
    print(f"corpus: {folder}", flush=True)
    paths = B.ensure_corpus(folder, args.pieces, args.minutes)
    tables_dir = out / "stores" / "tables"
    manifest = B.ensure_tables(tables_dir, paths)
    pieces, cols = B.load_piece_notes(tables_dir, manifest)
    n_notes = int(cols["pitch"].shape[0])
    print(f"  {len(pieces)} pieces, {n_notes / 1e6:.2f} M notes", flush=True)
    render_all(pieces[:2], cols, "enc1", 1), render_all(pieces[:2], cols, "enc2", 1), render_all(pieces[:2], cols, "enc3", 1)
    load_start = B.wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else os.getloadavg()[0]
    print(f"  load average before timing: {load_start:.2f}", flush=True)
    R_ = args.repeats
    res: dict = {"load_avg_start": load_start, "config": {
        "pieces": args.pieces, "minutes": args.minutes, "notes": n_notes, "repeats": R_,
        "compare_repeats": args.compare_repeats, "subset": args.subset,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "versions": {p: md.version(p) for p in ("numpy", "numba", "pyarrow", "pretty_midi", "symusic")}}}
    rows = []

    if "compare" in sections:
        R_c = args.compare_repeats
        c = bench_compare(pieces, cols, args.subset, R_c)
        res["compare"] = c
        base = c["ours_enc2"]["s"]
        rows.append(("enc2 ours, 1 thr", f"{c['notes'] / base / 1e6:.1f} M notes/s", "", "", "", ""))
        rows.append(("  info: output bytes / time, ours vs symusic",
                     f"{c['pieces'] * c['ours_bytes_per_piece'] / base / 1e9:.1f} GB/s",
                     f"{c['pieces'] * c['symusic_bytes_per_piece'] / c['symusic']['s'] / 1e9:.1f} GB/s", "", "", ""))
        r = c["pretty_midi"]["s"] / base
        rows.append(("enc2 vs pretty_midi get_piano_roll", f"{c['pretty_midi']['s'] * 1e3:.0f} ms / {base * 1e3:.1f} ms",
                     "A pretty_midi", f"{r:.1f}x", ">= 50x", verdict("vs_pretty_midi", r)))
        r = c["symusic"]["s"] / base
        rows.append(("enc2 vs symusic pianoroll(onset,frame)", f"{c['symusic']['s'] * 1e3:.1f} ms / {base * 1e3:.1f} ms",
                     "B symusic", f"{r:.2f}x", ">= 1x", verdict("vs_symusic", r)))
        q = c["symusic_over_ours_by_round"]
        rows.append(("  info: same, round by round", f"{c['ours_enc2']['s'] * 1e3:.1f} ms (median of {R_c})",
                     "B symusic", f"{q['min']:.2f}-{q['max']:.2f}x", "", ""))
        r = c["symusic"]["s"] / c["ours_enc2_grid"]["s"]
        rows.append(("  info: from grid columns vs symusic", f"{c['symusic']['s'] * 1e3:.1f} ms / "
                     f"{c['ours_enc2_grid']['s'] * 1e3:.1f} ms", "B symusic", f"{r:.2f}x", "", ""))
        r = c["symusic_3modes"]["s"] / base
        rows.append(("  info: vs symusic (onset,frame,offset)", f"{c['symusic_3modes']['s'] * 1e3:.1f} ms",
                     "B symusic 3 modes", f"{r:.2f}x", "", ""))

    if "full" in sections:
        full = {"bare": {}, "build": {}}
        print("full: bare rendering, to_windows over all pieces ...", flush=True)
        for enc in ENCODINGS:
            for th in (2, 1):
                if th == 1 and enc != "enc2":
                    continue
                med, runs = B.timed(lambda e=enc, t=th: render_all(pieces, cols, e, t), R_)
                full["bare"][f"{enc}_t{th}"] = {"s": med, "runs_s": runs}
                print(f"  {enc} {th} thread(s): {med:.2f} s", flush=True)
        groups = B.shard_groups(pieces)
        for enc in ENCODINGS:
            med, runs = B.timed(lambda e=enc: render_kept(groups, cols, e, 2), R_)
            full["bare"][f"{enc}_kept_t2"] = {"s": med, "runs_s": runs}
            print(f"  {enc} outputs kept per shard + concatenate, 2 threads: {med:.2f} s", flush=True)
        print("full: build_image_dataset per encoding (fresh local store) ...", flush=True)
        img_dir = B.fresh_dir(out / "stores" / "images-full")
        # the dataset reads its tables from the store it writes to: copy the tables in first (untimed)
        import shutil
        shutil.copytree(tables_dir / "tables", img_dir / "tables")
        for enc in ENCODINGS:
            b = build_dataset(img_dir, manifest, enc)
            full["build"][enc] = b
            print(f"  {enc}: {b['wall_s']:.2f} s, {b['images']} images in {b['shards']} shards, "
                  f"{b['bytes'] / 1e6:.0f} MB (raw {b['raw_bytes'] / 1e6:.0f} MB)", flush=True)
        print("full: one enc2 shard, step by step ...", flush=True)
        full["shard_micro"] = shard_micro(img_dir, pieces, cols, manifest, R_)
        res["full"] = full
        windows = full["build"]["enc2"]["images"]
        bare_total = sum(full["bare"][f"{e}_t2"]["s"] for e in ENCODINGS)
        for enc in ENCODINGS:
            s = full["bare"][f"{enc}_t2"]["s"]
            rows.append((f"full {enc} to_windows, 2 thr", f"{s:.2f} s", "", f"{windows / s:,.0f} win/s", "", ""))
        s1 = full["bare"]["enc2_t1"]["s"]
        rows.append(("  info: enc2 to_windows, 1 thr", f"{s1:.2f} s", "enc2 2 thr",
                     f"{s1 / full['bare']['enc2_t2']['s']:.2f}x speed-up", "", ""))
        rows.append(("full enc1+2+3 bare rendering, 2 thr", f"{bare_total:.2f} s", "", "", "< 20 s",
                     verdict("full_render_s", bare_total)))
        kept_total = sum(full["bare"][f"{e}_kept_t2"]["s"] for e in ENCODINGS)
        rows.append(("  info: same, outputs kept per shard + concat", f"{kept_total:.2f} s", "bare rendering",
                     f"{kept_total / bare_total:.1f}x slower", "", ""))
        build_total = sum(full["build"][e]["wall_s"] for e in ENCODINGS)
        for enc in ENCODINGS:
            b = full["build"][enc]
            rows.append((f"full {enc} build_image_dataset", f"{b['wall_s']:.2f} s", "",
                         f"CPU {b['cpu_s'] / b['wall_s']:.2f} cores", "", ""))
        rows.append(("full enc1+2+3 build_image_dataset", f"{build_total:.2f} s", "", "", "< 20 s",
                     verdict("full_build_s", build_total)))

    if "incremental" in sections:
        print("incremental: one more piece ...", flush=True)
        extra = B.extra_piece(out, args.pieces, args.minutes)
        manifest2 = B.ensure_tables(tables_dir, paths + [extra], publish=False)
        import shutil

        from tasks.steps import render as R
        from tasks.storage.store import Store
        img_dir = out / "stores" / "images-full"
        shutil.copytree(tables_dir / "tables", img_dir / "tables", dirs_exist_ok=True)
        old_split = {r["sha256"]: r["split"] for r in R._load_pieces(Store(str(tables_dir)), manifest)}
        new_split = {r["sha256"]: r["split"] for r in R._load_pieces(Store(str(tables_dir)), manifest2)}
        moved = sum(1 for h, s in old_split.items() if new_split.get(h) != s)
        added = [h for h in new_split if h not in old_split]
        inc = {"moved_pieces": moved, "new_piece_split": new_split[added[0]] if added else None}
        for enc in ENCODINGS:
            prev = res["full"]["build"][enc]["manifest"]
            t = time.perf_counter()
            prev_images = R.read_images_table(Store(str(img_dir)), prev["name"], prev["version"])
            read_prev = time.perf_counter() - t
            b = build_dataset(img_dir, manifest2, enc, previous=prev, previous_images=prev_images)
            b["read_previous_images_s"] = read_prev
            b.pop("manifest")
            inc[enc] = b
            print(f"  {enc}: {b['wall_s']:.2f} s, rendered {b['rendered_shards']} shards "
                  f"({b['rendered_pieces']} pieces), reused {b['reused_shards']}", flush=True)
        res["incremental"] = inc
        for enc in ENCODINGS:
            b = inc[enc]
            full_s = res["full"]["build"][enc]["wall_s"]
            rows.append((f"incremental {enc}: +1 piece", f"{b['wall_s']:.2f} s", f"full build {full_s:.1f} s",
                         f"{b['wall_s'] / full_s:.0%}", "", ""))
            rows.append(("  rendered / reused shards", f"{b['rendered_shards']} / {b['reused_shards']}",
                         "", f"{b['rendered_pieces']} pieces", "1 shard", verdict("incremental_shards",
                                                                                   b["rendered_shards"])))
        for enc in ENCODINGS:
            res["full"]["build"][enc].pop("manifest", None)
    elif "full" in sections:
        for enc in ENCODINGS:
            res["full"]["build"][enc].pop("manifest", None)

    if "hilbert" in sections:
        h = bench_hilbert(args.hilbert_batch, 8, max(R_, 15), args.hilbert_recursive_blocks)
        res["hilbert"] = h
        for dt in ("float16", "float32"):
            f = h[dt]
            for op, rec in (("to_hilbert", "recursive_encode_per_block_s"), ("from_hilbert", "recursive_decode_per_block_s")):
                s = f[op]
                gbs = f["bytes"] / s / 1e9
                r = f[rec] * h["batch"] / s
                rows.append((f"hilbert {op} {dt} x{h['batch']}", f"{s * 1e3:.2f} ms ({gbs:.1f} GB/s)",
                             "recursive Python", f"{r:,.0f}x", ">= 100x", verdict("hilbert_vs_recursive", r)))
                r = f["np.copyto"] / s
                rows.append(("", "", f"np.copyto {f['np.copyto'] * 1e3:.2f} ms", f"{r:.2f}x", ">= 0.3x",
                             verdict("hilbert_vs_copy", r)))
            rows.append((f"  info: np.take gather {dt}", f"{f['numpy_take'] * 1e3:.2f} ms", "np.copyto",
                         f"{f['np.copyto'] / f['numpy_take']:.2f}x", "", ""))

    res["table"] = B.table_json(rows)
    res["load_avg_end"] = os.getloadavg()
    res["bench_wall_s"] = time.perf_counter() - t_start

    print()
    print(f"corpus: {len(pieces)} pieces, {n_notes / 1e6:.2f} M notes; {os.cpu_count()} CPUs; median of {R_} "
          f"(builds: 1 run); 1-min load avg {load_start:.2f} before timing, {res['load_avg_end'][0]:.2f} at the end")
    B.print_table(rows)
    if "compare" in res:
        c = res["compare"]
        sp = c["ours_split"]
        print(f"compare: {c['pieces']} pieces, {c['notes']} notes. Output per piece: ours {c['ours_bytes_per_piece'] / 1e6:.2f} MB "
              f"(W x 3 x 88 x 200 uint8), symusic {c['symusic_bytes_per_piece'] / 1e6:.2f} MB (2 x 88 x T uint8), "
              f"pretty_midi {c['pretty_midi_bytes_per_piece'] / 1e6:.2f} MB (128 x T float64). Masks equal: {c['mask_checks']}")
        print(f"  ours split: to_windows {c['ours_enc2']['s'] * 1e3:.1f} ms = numba kernel {sp['kernel_s'] * 1e3:.1f} ms "
              f"(seconds to columns and drawing in one pass; a NumPy np.zeros of the same output alone "
              f"{sp['numpy_zeros_s'] * 1e3:.1f} ms) + wrapper; fixed cost per call (empty piece) "
              f"{sp['to_windows_empty_piece_s'] / c['pieces'] * 1e6:.1f} us")
    if "full" in res:
        for enc, b in res["full"]["build"].items():
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(b["thread_s"].items(), key=lambda kv: -kv[1]))
            print(f"build {enc}: wall {b['wall_s']:.2f} s, CPU {b['cpu_s']:.2f} s; thread-seconds: {parts}")
        m = res["full"]["shard_micro"]
        steps = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in m.items() if isinstance(v, float))
        print(f"one enc2 shard ({m['pieces']} pieces, {m['images']} images, raw {m['raw_bytes'] / 1e6:.0f} MB, zstd "
              f"{m['zstd_bytes'] / 1e6:.1f} MB, lz4 {m['lz4_bytes'] / 1e6:.1f} MB, zstd-1 "
              f"{m['zstd_level_-1_bytes'] / 1e6:.1f} MB): {steps}")
    if "incremental" in res:
        inc = res["incremental"]
        print(f"incremental: new piece in split {inc['new_piece_split']}; {inc['moved_pieces']} existing pieces changed split")
        for enc in ENCODINGS:
            b = inc[enc]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(b["thread_s"].items(), key=lambda kv: -kv[1]))
            print(f"  {enc}: wall {b['wall_s']:.2f} s (+ read previous images table {b['read_previous_images_s']:.2f} s); "
                  f"thread-seconds: {parts}")
    dest = out / "bench_encodings.json"
    dest.write_text(json.dumps(res, indent=1, default=str))
    print(f"written: {dest} (bench wall {res['bench_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
