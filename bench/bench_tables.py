#!/usr/bin/env python
"""Benchmark: MIDI files -> Parquet tables, against a plain mido reader and symusic's bare parse.

Usage::

    .venv/bin/python bench/bench_tables.py [--pieces N] [--minutes M] [--out DIR]

Everything is measured side by side in one run on one corpus (the generated corpus, ``N`` pieces of
about ``M`` minutes; the defaults give about as many notes as full MAESTRO):

A  plain mido reader     ``mido.MidiFile``, ``merged_track``, FIFO note pairing per (channel, pitch),
                         seconds through mido's tempo handling, rows in lists, one Parquet file with
                         pandas. Slow, so it runs on the first ``--subset`` files only; ours runs on the
                         same subset for the ratio.
B  symusic bare parse    ``symusic.Score.from_file(path)`` (ticks) for every file: one thread, and two
                         threads (measured, so that it shows whether symusic releases the GIL).
                         For information, also symusic's parse plus the same columns (seconds through
                         ``Score.to("second")``) encoded with our Parquet settings: see ``symusic_tables``.
ours                     ``fingerprint`` + ``build_tables`` + ``write_table_set`` into a fresh local store,
                         no Prefect, with workers=1 and workers=2.
flow                     ``build_dataset`` in fresh subprocesses (the ephemeral Prefect API starts
                         there): first run and cached rerun in one process, then a cached rerun in a
                         second process; flow-call wall time and whole-process wall time. Then the
                         same against a ``prefect server`` the benchmark starts on 127.0.0.1 (the way
                         scheduled rebuilds run): first run and cached rerun, each in a fresh process.

Files are read once before any timing, so every contender sees a warm page cache. Fast measurements
are repeated (``--repeats``, default 3) and the median is reported. Results are printed as a table and
written as JSON to ``--out`` (default ``bench/out/``, ignored by git), where the corpus is also cached.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.storage.settings import apply_prefect_defaults  # noqa: E402
from benchlib import SEED, corpus_dir, ensure_corpus, timed, wait_quiet  # noqa: E402

apply_prefect_defaults()  # before anything can import prefect

TARGETS = {  # figure -> (comparison, threshold)
    "vs_mido": (">=", 30.0),
    "vs_symusic": (">=", 0.5),
    "flow_first_s": ("<", 20.0),
    "rerun_ratio": ("<", 0.05),
}


# --------------------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------------------

def warm_page_cache(paths: list[Path]) -> int:
    return sum(len(p.read_bytes()) for p in paths)


# --------------------------------------------------------------------------------------------------
# baseline A: a plain mido reader
# --------------------------------------------------------------------------------------------------

def mido_notes_table(paths: list[Path], out_file: Path) -> int:
    """Read every file with mido, pair notes FIFO per (channel, pitch), write one Parquet notes table."""
    import mido
    import pandas as pd

    piece_col, chan_col, pitch_col, vel_col = [], [], [], []
    on_tick_col, off_tick_col, on_s_col, off_s_col = [], [], [], []
    for piece, path in enumerate(paths):
        mid = mido.MidiFile(path)
        tpb = mid.ticks_per_beat
        tempo = 500_000  # mido's default until the first set_tempo
        tick, now = 0, 0.0
        sounding: dict[tuple[int, int], deque] = {}
        for msg in mid.merged_track:  # mido's own merge, as ``for msg in mid`` uses (no re-validation)
            if msg.time:
                tick += msg.time
                now += mido.tick2second(msg.time, tpb, tempo)
            kind = msg.type
            if kind == "note_on" and msg.velocity > 0:
                sounding.setdefault((msg.channel, msg.note), deque()).append((tick, now, msg.velocity))
            elif kind == "note_off" or kind == "note_on":
                queue = sounding.get((msg.channel, msg.note))
                if queue:
                    on_tick, on_s, velocity = queue.popleft()
                    piece_col.append(piece)
                    chan_col.append(msg.channel)
                    pitch_col.append(msg.note)
                    vel_col.append(velocity)
                    on_tick_col.append(on_tick)
                    off_tick_col.append(tick)
                    on_s_col.append(on_s)
                    off_s_col.append(now)
            elif kind == "set_tempo":
                tempo = msg.tempo
    df = pd.DataFrame({"piece": piece_col, "channel": chan_col, "pitch": pitch_col, "velocity": vel_col,
                       "onset_tick": on_tick_col, "offset_tick": off_tick_col,
                       "onset_s": on_s_col, "offset_s": off_s_col})
    df.to_parquet(out_file, index=False)
    return len(df)


# --------------------------------------------------------------------------------------------------
# baseline B: symusic's bare parse
# --------------------------------------------------------------------------------------------------

def symusic_parse(paths: list[Path], threads: int) -> None:
    from symusic import Score

    names = [str(p) for p in paths]
    if threads == 1:
        for name in names:
            Score.from_file(name)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(Score.from_file, names, chunksize=8):
                pass


def symusic_tables(paths: list[Path]) -> dict:
    """Information for the issue's author: symusic's parse *plus* the same tables' columns, in seconds
    through symusic's own tempo-map conversion (``Score.to("second")``), encoded with our Parquet
    settings (``tasks.steps.tables._parquet_bytes``), one thread. No sustain-pedal offsets, splits, hashes or
    store writes: a lower bound for a symusic-based build of these tables."""
    import numpy as np
    import pyarrow as pa
    from symusic import Score

    from tasks.steps.tables import _parquet_bytes

    t0 = time.perf_counter()
    notes: dict[str, list] = {k: [] for k in ("piece_id", "track", "program", "pitch", "velocity", "onset_tick",
                                                "offset_tick", "onset_s", "offset_s")}
    controls: dict[str, list] = {k: [] for k in ("piece_id", "track", "control", "value", "tick", "time_s")}
    for pid, path in enumerate(paths):
        tick = Score.from_file(str(path))
        sec = tick.to("second")
        for k, (tt, ts) in enumerate(zip(tick.tracks, sec.tracks)):
            a, b = tt.notes.numpy(), ts.notes.numpy()
            n = a["time"].shape[0]
            notes["piece_id"].append(np.full(n, pid, np.int64))
            notes["track"].append(np.full(n, k, np.int16))
            notes["program"].append(np.full(n, tt.program, np.int8))
            notes["pitch"].append(a["pitch"])
            notes["velocity"].append(a["velocity"])
            notes["onset_tick"].append(a["time"].astype(np.int64))
            notes["offset_tick"].append((a["time"] + a["duration"]).astype(np.int64))
            notes["onset_s"].append(b["time"].astype(np.float64))
            notes["offset_s"].append((b["time"] + b["duration"]).astype(np.float64))
            c, d = tt.controls.numpy(), ts.controls.numpy()
            m = c["time"].shape[0]
            controls["piece_id"].append(np.full(m, pid, np.int64))
            controls["track"].append(np.full(m, k, np.int16))
            controls["control"].append(c["number"])
            controls["value"].append(c["value"])
            controls["tick"].append(c["time"].astype(np.int64))
            controls["time_s"].append(d["time"].astype(np.float64))
    t1 = time.perf_counter()
    tables = [pa.table({k: np.concatenate(v) for k, v in cols.items()}) for cols in (notes, controls)]
    for table in tables:
        _parquet_bytes(table)
    t2 = time.perf_counter()
    return {"s": t2 - t0, "parse_and_columns_s": t1 - t0, "parquet_s": t2 - t1, "notes": tables[0].num_rows}


def symusic_note_count(paths: list[Path]) -> int:
    from symusic import Score

    return sum(len(t.notes) for p in paths for t in Score.from_file(str(p)).tracks)


# --------------------------------------------------------------------------------------------------
# ours, without Prefect
# --------------------------------------------------------------------------------------------------

def ours_build(source, workers: int) -> dict:
    """fingerprint -> build_tables -> write_table_set into a fresh temporary store; phase times."""
    from tasks.steps import tables as T
    from tasks.storage.sources import fingerprint, read_file_bytes
    from tasks.storage.store import Store

    from tasks.storage.settings import reload_settings

    tmp = tempfile.mkdtemp(prefix="midipix-bench-store-")
    os.environ["MIDIPIX_CACHE_DIR"] = os.path.join(tmp, "cache")  # no fingerprint cache: hash every file
    reload_settings()
    try:
        c0 = time.process_time()
        t0 = time.perf_counter()
        files, errors = fingerprint(source, workers=workers)
        t1 = time.perf_counter()
        split = T.SplitConfig()
        result = T.build_tables(files, lambda f: read_file_bytes(f.uri), None, split, workers=workers)
        t2 = time.perf_counter()
        params = {"split": split.model_dump(mode="json"), "metadata": False}
        version = T.version_id(files, params)
        manifest = T.write_table_set(Store(tmp), "bench", version, result,
                                     {"params": params, "parsed": result.parsed, "reused": 0}, workers=workers)
        t3 = time.perf_counter()
        cpu = time.process_time() - c0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if errors or result.rejected:
        raise RuntimeError(f"unexpected rejects: {errors or result.reject_rows[:3]}")
    return {"total_s": t3 - t0, "cpu_s": cpu, "fingerprint_s": t1 - t0, "build_s": t2 - t1, "write_s": t3 - t2,
            "notes": manifest["rows"]["notes"],
            "parquet_bytes": sum(r["bytes"] for t in manifest["files"] for r in T.table_files(manifest, t))}


def breakdown(paths: list[Path]) -> dict:
    """Where our time goes, one thread, each step alone: file I/O, sha256, parse, assemble, encode, write."""
    import hashlib

    from tasks.kernels.midi import read_midi
    from tasks.steps import tables as T
    from tasks.storage.sources import SourceFile
    from tasks.storage.store import Store

    out = {}
    t = time.perf_counter()
    blobs = {str(p): p.read_bytes() for p in paths}
    out["read_files_s"] = time.perf_counter() - t
    t = time.perf_counter()
    files = [SourceFile(uri=u, relpath=Path(u).name, size=len(b), sha256=hashlib.sha256(b).hexdigest())
             for u, b in blobs.items()]
    out["sha256_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for b in blobs.values():
        read_midi(b)
    out["read_midi_s"] = time.perf_counter() - t
    out["read_midi_kernels_s"] = kernel_split(list(blobs.values()))
    t = time.perf_counter()
    result = T.build_tables(files, lambda f: blobs[f.uri], None, T.SplitConfig(), workers=1)
    out["build_tables_in_memory_s"] = time.perf_counter() - t
    out["assemble_s (build_tables - read_midi)"] = out["build_tables_in_memory_s"] - out["read_midi_s"]
    encoded = []
    t = time.perf_counter()
    for name, by_split in result.tables.items():
        for s, tbl in by_split.items():
            encoded.append((name, s, T._parquet_bytes(tbl)))
    out["parquet_encode_s"] = time.perf_counter() - t
    per_table: dict[str, float] = {}
    for name, by_split in result.tables.items():
        t = time.perf_counter()
        for tbl in by_split.values():
            T._parquet_bytes(tbl)
        per_table[name] = time.perf_counter() - t
    out["parquet_encode_by_table_s"] = per_table
    tmp = tempfile.mkdtemp(prefix="midipix-bench-store-")
    try:
        store = Store(tmp)
        t = time.perf_counter()
        for name, s, data in encoded:
            store.write_bytes(f"x/{name}/{s}.parquet", data)
        out["store_write_s"] = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def kernel_split(blobs: list[bytes]) -> dict:
    """Seconds in each numba kernel of ``read_midi`` over ``blobs`` (the rest is NumPy glue around them)."""
    from tasks.kernels import midi as M

    names = [n for n in dir(M) if n.endswith("_kernel") and callable(getattr(M, n))]
    spent = dict.fromkeys(names, 0.0)
    originals = {n: getattr(M, n) for n in names}

    def timed_kernel(name, fn):
        def call(*a):
            t = time.perf_counter()
            try:
                return fn(*a)
            finally:
                spent[name] += time.perf_counter() - t
        return call

    try:
        for n in names:  # read_midi looks its kernels up as module globals at call time
            setattr(M, n, timed_kernel(n, originals[n]))
        t = time.perf_counter()
        for b in blobs:
            M.read_midi(b)
        total = time.perf_counter() - t
    finally:
        for n in names:
            setattr(M, n, originals[n])
    spent = {k: v for k, v in spent.items() if v > 0}
    spent["numpy_glue"] = total - sum(spent.values())
    return spent


def profile_ours(source, out_dir: Path, top: int = 25) -> str:
    """cProfile of one single-threaded run of ours; returns the top functions by own time."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    ours_build(source, workers=1)
    prof.disable()
    prof.dump_stats(str(out_dir / "ours_w1.prof"))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    text = buf.getvalue()
    (out_dir / "ours_w1_profile.txt").write_text(text)
    return text


# --------------------------------------------------------------------------------------------------
# the Prefect flow, in child processes
# --------------------------------------------------------------------------------------------------

def flow_child(args) -> None:
    """Run in a fresh process: call build_dataset ``--calls`` times, write timings as JSON."""
    t0 = time.perf_counter()
    from prefect import flow

    if args.warmup:
        @flow(name="bench-warmup")
        def noop() -> int:
            return 1

        t = time.perf_counter()
        noop()
        Path(args.child_json).write_text(json.dumps({"import_s": t - t0, "flow_s": time.perf_counter() - t}))
        return

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    import flows.build as fb

    def call_flow(params):
        """The flow's state, however the flow is declared (sync, or async with a sync runner)."""
        runner = getattr(fb, "run_build", None)
        if runner is not None:
            return runner(params, return_state=True)
        state = fb.build_dataset(params, return_state=True)
        return asyncio.run(state) if inspect.isawaitable(state) else state

    import_s = time.perf_counter() - t0
    calls = []
    for _ in range(args.calls):
        kw = {"source": args.source, "store": args.store, "name": "bench", "workers": args.workers}
        if "encodings" in fb.BuildParams.model_fields:
            kw["encodings"] = []  # tables only: this benchmark is about the tables
        params = fb.BuildParams(**kw)
        epoch = time.time()
        t = time.perf_counter()
        state = call_flow(params)
        wall = time.perf_counter() - t
        result = state.result()
        if inspect.isawaitable(result):
            result = asyncio.run(result)
        run_id = state.state_details.flow_run_id
        tasks = {}
        with get_client(sync_client=True) as client:
            for tr in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))):
                tasks[tr.name] = {"state": tr.state_name,
                                  "run_s": tr.total_run_time.total_seconds() if tr.total_run_time else 0.0,
                                  "end_after_call_start_s": tr.end_time.timestamp() - epoch if tr.end_time else None}
        # when the table set was published (the tables are done), counted from the flow call's start
        ends = [v["end_after_call_start_s"] for k, v in tasks.items()
                if k.startswith("publish-tables") and v["end_after_call_start_s"] is not None]
        calls.append({"wall_s": wall, "tables_done_s": max(ends) if ends else None,
                      "params": params.model_dump(mode="json", include={"workers", "encodings"}), "parsed": result["parsed"], "reused": result["reused"],
                      "notes": result["rows"]["notes"], "tasks": tasks})
    Path(args.child_json).write_text(json.dumps({"import_s": import_s, "calls": calls}))


def run_child(extra: list[str], env: dict, log: Path, timeout: float = 280.0) -> tuple[dict, float]:
    fd, child_json = tempfile.mkstemp(prefix="midipix-bench-child-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--flow-child", "--child-json", child_json, *extra]
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=str(ROOT), timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"flow child failed (rc {proc.returncode}); see {log}")
    data = json.loads(Path(child_json).read_text())
    os.unlink(child_json)
    return data, wall


def start_prefect_server(home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """A real ``prefect server`` on 127.0.0.1 with its own database under ``home``; returns (process, API URL)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, api
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError("prefect server did not start in 120 s")


def bench_flow_server(corpus: Path, out: Path, workers: int) -> dict:
    """First run and cached rerun, each in a fresh process, against a long-running ``prefect server``."""
    scratch = Path(tempfile.mkdtemp(prefix="midipix-bench-flow-server-"))
    log = out / "flow_children_server.log"
    log.write_bytes(b"")
    home = scratch / "prefect-home"
    home.mkdir()
    proc, api = start_prefect_server(home, log)
    env = dict(os.environ)
    env.update({"MIDIPIX_CACHE_DIR": str(scratch / "cache"), "PREFECT_API_URL": api,
                "PREFECT_HOME": str(scratch / "client-home")})
    try:
        run_child(["--warmup"], env, log)  # untimed: first client import and connection
        noop, noop_proc = run_child(["--warmup"], env, log)
        common = ["--source", str(corpus), "--store", str(scratch / "store"), "--workers", str(workers)]
        first, first_proc = run_child([*common, "--calls", "1"], env, log)
        second, second_proc = run_child([*common, "--calls", "1"], env, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"noop_flow_process_s": noop_proc, "noop_flow_call_s": noop["flow_s"],
            "process1": {**first, "process_s": first_proc}, "process2": {**second, "process_s": second_proc}}


def bench_flow(corpus: Path, out: Path, workers: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="midipix-bench-flow-"))
    log = out / "flow_children.log"
    log.write_bytes(b"")
    env = dict(os.environ)
    env.update({
        "MIDIPIX_CACHE_DIR": str(scratch / "cache"),
        # a private Prefect home: the bench never touches ~/.prefect, which other runs may be using
        "PREFECT_HOME": str(out / "prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    })
    env.pop("PREFECT_API_URL", None)
    store = str(scratch / "store")
    try:
        # untimed: creates / migrates the private Prefect database and warms the import path
        run_child(["--warmup"], env, log)
        # the floor: a no-op flow in a fresh process (interpreter, imports, ephemeral API, one flow run)
        noop, noop_proc = run_child(["--warmup"], env, log)
        common = ["--source", str(corpus), "--store", store, "--workers", str(workers)]
        first, first_proc = run_child([*common, "--calls", "2"], env, log)
        second, second_proc = run_child([*common, "--calls", "1"], env, log)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"noop_flow_process_s": noop_proc, "noop_flow_call_s": noop["flow_s"], "process1": {**first, "process_s": first_proc},
            "process2": {**second, "process_s": second_proc}}


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------

def verdict(key: str, value: float) -> str:
    op, thr = TARGETS[key]
    ok = value >= thr if op == ">=" else value < thr
    return "PASS" if ok else "FAIL"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pieces", type=int, default=1300)
    ap.add_argument("--minutes", type=float, default=9.4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--subset", type=int, default=60, help="files for the mido baseline (first N by name)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast measurements (median)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the Prefect flow run")
    ap.add_argument("--no-flow", action="store_true", help="skip the Prefect flow measurements")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile one run of ours (workers=1; main thread only: the parse and write pools "
                         "show as lock waits, which the printed breakdown splits up)")
    ap.add_argument("--wait-quiet", type=float, default=120.0, metavar="S",
                    help="before timing, wait up to S seconds for the 1-min load average to drop below 0.5")
    # internal: the Prefect child process
    ap.add_argument("--flow-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flow_child:
        flow_child(args)
        return

    import importlib.metadata as md

    from tasks.kernels.midi import read_midi
    from tasks.storage.sources import list_files

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    folder = corpus_dir(out, args.pieces, args.minutes)
    print(f"corpus: {folder}", flush=True)
    paths = ensure_corpus(folder, args.pieces, args.minutes)
    print(f"  {len(paths)} files", flush=True)
    n_bytes = warm_page_cache(paths)
    load_start = wait_quiet(args.wait_quiet, 0.5) if args.wait_quiet > 0 else os.getloadavg()[0]
    print(f"  load average before timing: {load_start:.2f}", flush=True)
    subset = paths[:args.subset]
    read_midi(paths[0].read_bytes())  # load the numba kernels (cache=True) before any timing

    full_src = list_files(str(folder))
    sub_names = {str(p) for p in subset}
    sub_src = dataclasses.replace(full_src, files=[f for f in full_src.files if f[0] in sub_names])
    assert len(full_src.files) == len(paths) and len(sub_src.files) == len(subset)

    R = args.repeats
    res: dict = {"load_avg_start": load_start, "config": {"pieces": args.pieces, "minutes": args.minutes, "seed": SEED, "subset": len(subset),
                            "repeats": R, "flow_workers": args.workers, "corpus_bytes": n_bytes,
                            "cpus": os.cpu_count(), "python": platform.python_version(),
                            "versions": {p: md.version(p) for p in
                                         ("mido", "symusic", "prefect", "pyarrow", "numba", "pandas", "numpy")}}}

    # --- subset: mido vs ours ---
    print(f"A: mido reader on {len(subset)} files ...", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="midipix-bench-mido-"))
    try:
        mido_notes_table(subset[:1], tmp / "warmup.parquet")  # untimed: first-call costs of mido / pandas
        t = time.perf_counter()
        mido_notes = mido_notes_table(subset, tmp / "notes.parquet")
        mido_s = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"  {mido_notes} notes in {mido_s:.2f} s", flush=True)
    sub = {"mido": {"s": mido_s, "notes": mido_notes, "repeats": 1}}
    for w in (1, 2):
        runs = [ours_build(sub_src, w) for _ in range(R)]
        med = statistics.median(r["total_s"] for r in runs)
        sub[f"ours_w{w}"] = {"s": med, "runs_s": [r["total_s"] for r in runs], "notes": runs[0]["notes"]}
    if sub["ours_w1"]["notes"] != mido_notes:
        print(f"  WARNING: note counts differ (ours {sub['ours_w1']['notes']}, mido {mido_notes})")
    res["subset"] = sub

    # --- full corpus: symusic vs ours ---
    print(f"B: symusic on {len(paths)} files ...", flush=True)
    sym_notes = symusic_note_count(paths)
    full = {}
    for th in (1, 2):
        c0 = time.process_time()
        med, runs = timed(lambda: symusic_parse(paths, th), R)
        full[f"symusic_t{th}"] = {"s": med, "runs_s": runs, "notes": sym_notes,
                                  "cpu_s_per_run": (time.process_time() - c0) / R}
        print(f"  {th} thread(s): {med:.3f} s", flush=True)
    runs = [symusic_tables(paths) for _ in range(R)]
    full["symusic_tables"] = {**sorted(runs, key=lambda r: r["s"])[len(runs) // 2], "runs_s": [r["s"] for r in runs]}
    print(f"  info: parse + the same columns in seconds + Parquet, 1 thread: {full['symusic_tables']['s']:.3f} s",
          flush=True)
    print("ours on the full corpus ...", flush=True)
    for w in (1, 2):
        runs = [ours_build(full_src, w) for _ in range(R)]
        best = sorted(runs, key=lambda r: r["total_s"])[len(runs) // 2]
        full[f"ours_w{w}"] = {"s": best["total_s"], "runs_s": [r["total_s"] for r in runs], "notes": best["notes"],
                              "cpu_s_per_run": statistics.mean(r["cpu_s"] for r in runs),
                              "phases_of_median_run_s": {k: best[k] for k in ("fingerprint_s", "build_s", "write_s")},
                              "parquet_bytes": best["parquet_bytes"]}
        print(f"  workers={w}: {best['total_s']:.3f} s", flush=True)
    if full["ours_w1"]["notes"] != sym_notes:
        print(f"  WARNING: note counts differ (ours {full['ours_w1']['notes']}, symusic {sym_notes})")
    res["full"] = full
    res["breakdown_w1"] = breakdown(paths)
    if args.profile:
        profile_ours(full_src, out)

    # --- Prefect flow ---
    if not args.no_flow:
        print("flow: build_dataset in fresh processes ...", flush=True)
        res["flow"] = bench_flow(folder, out, args.workers)
        print("flow: the same against a running prefect server ...", flush=True)
        res["flow_server"] = bench_flow_server(folder, out, args.workers)

    # --- results ---
    def nps(d):
        return d["notes"] / d["s"]

    rows = []  # (figure, value, baseline, ratio, target, verdict)
    for k in ("mido", "ours_w1", "ours_w2"):
        d = sub[k]
        ratio = nps(d) / nps(sub["mido"])
        rows.append((f"subset {k}", f"{nps(d) / 1e6:.3f} M notes/s", "A mido", f"{ratio:.1f}x",
                     "" if k == "mido" else ">= 30x", "" if k == "mido" else verdict("vs_mido", ratio)))
    for k in ("symusic_t1", "symusic_t2"):
        d = full[k]
        rows.append((f"full {k}", f"{nps(d) / 1e6:.3f} M notes/s", "B1 symusic 1 thr",
                     f"{nps(d) / nps(full['symusic_t1']):.2f}x", "", ""))
    for k in ("ours_w1", "ours_w2"):
        d = full[k]
        for base in ("symusic_t1", "symusic_t2"):
            ratio = nps(d) / nps(full[base])
            rows.append((f"full {k}", f"{nps(d) / 1e6:.3f} M notes/s", f"B {base}", f"{ratio:.2f}x", ">= 0.5x",
                         verdict("vs_symusic", ratio)))
    st = full["symusic_tables"]
    for k in ("ours_w1", "ours_w2"):
        rows.append((f"info: full {k} vs symusic + Parquet", f"{full[k]['s']:.2f} s",
                     f"symusic tables 1 thr {st['s']:.2f} s", f"{st['s'] / full[k]['s']:.2f}x", "(no target)", ""))
    parse_nps = full["ours_w1"]["notes"] / res["breakdown_w1"]["read_midi_s"]
    rows.append(("info: ours read_midi only, 1 thr", f"{parse_nps / 1e6:.3f} M notes/s", "B symusic_t1",
                 f"{parse_nps / nps(full['symusic_t1']):.2f}x", "(no target)", ""))
    if "flow" in res:
        f = res["flow"]
        c1, c2 = f["process1"]["calls"]
        c3 = f["process2"]["calls"][0]
        p1, p2 = f["process1"]["process_s"], f["process2"]["process_s"]
        rows.append(("flow first run (flow call)", f"{c1['wall_s']:.2f} s", "", "", "< 20 s",
                     verdict("flow_first_s", c1["wall_s"])))
        if c1.get("tables_done_s") is not None:
            rows.append(("  tables published after", f"{c1['tables_done_s']:.2f} s", "flow call start", "", "< 20 s",
                         verdict("flow_first_s", c1["tables_done_s"])))
        rows.append(("flow first run (whole process)", f"{p1:.2f} s", "", "", "< 20 s",
                     verdict("flow_first_s", p1)))
        r = c2["wall_s"] / c1["wall_s"]
        rows.append(("rerun, same process (flow call)", f"{c2['wall_s']:.2f} s", "first flow call", f"{r:.1%}",
                     "< 5%", verdict("rerun_ratio", r)))
        r = p2 / p1
        rows.append(("rerun, new process (whole process)", f"{p2:.2f} s", "first process", f"{r:.1%}", "< 5%",
                     verdict("rerun_ratio", r)))
        r = c3["wall_s"] / c1["wall_s"]
        rows.append(("rerun, new process (flow call)", f"{c3['wall_s']:.2f} s", "first flow call", f"{r:.1%}",
                     "< 5%", verdict("rerun_ratio", r)))
    if "flow_server" in res:
        g = res["flow_server"]
        s1, s2 = g["process1"]["calls"][0], g["process2"]["calls"][0]
        q1, q2 = g["process1"]["process_s"], g["process2"]["process_s"]
        rows.append(("server: first run (flow call)", f"{s1['wall_s']:.2f} s", "", "", "< 20 s",
                     verdict("flow_first_s", s1["wall_s"])))
        r = s2["wall_s"] / s1["wall_s"]
        rows.append(("server: rerun, new process (flow call)", f"{s2['wall_s']:.2f} s", "first flow call",
                     f"{r:.1%}", "< 5%", verdict("rerun_ratio", r)))
        r = q2 / q1
        rows.append(("server: rerun, new process (whole process)", f"{q2:.2f} s", f"first process {q1:.2f} s",
                     f"{r:.1%}", "< 5%", verdict("rerun_ratio", r)))
    res["table"] = [dict(zip(("figure", "value", "baseline", "ratio", "target", "verdict"), r)) for r in rows]
    res["load_avg_end"] = os.getloadavg()
    res["bench_wall_s"] = time.perf_counter() - t_start

    notes = full["ours_w1"]["notes"]
    print()
    print(f"corpus: {len(paths)} files, {notes / 1e6:.2f} M notes, {n_bytes / 1e6:.1f} MB; mido subset: "
          f"{len(subset)} files, {mido_notes / 1e6:.3f} M notes; fast figures: median of {R} "
          f"(mido: 1 run); {os.cpu_count()} CPUs, 1-min load avg {load_start:.2f} before timing, "
          f"{res['load_avg_end'][0]:.2f} at the end")
    widths = [max(len(str(r[i])) for r in rows + [("figure", "value", "baseline", "ratio", "target", "")])
              for i in range(6)]
    header = ("figure", "value", "baseline", "ratio", "target", "")
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    for w in (1, 2):
        ph = full[f"ours_w{w}"]["phases_of_median_run_s"]
        print(f"ours w{w} phases (median run): fingerprint {ph['fingerprint_s']:.2f} s, build_tables "
              f"{ph['build_s']:.2f} s, write_table_set {ph['write_s']:.2f} s; CPU "
              f"{full[f'ours_w{w}']['cpu_s_per_run']:.2f} s per run")
    print(f"symusic + Parquet (info): parse and columns {st['parse_and_columns_s']:.2f} s, Parquet "
          f"{st['parquet_s']:.2f} s ({st['notes']} notes)")
    print(f"symusic CPU per run: {full['symusic_t1']['cpu_s_per_run']:.2f} s (1 thread), "
          f"{full['symusic_t2']['cpu_s_per_run']:.2f} s (2 threads)")
    b = res["breakdown_w1"]
    print("one-thread breakdown: " + ", ".join(f"{k} {v:.2f} s" for k, v in b.items() if isinstance(v, float)))
    print("  read_midi kernels: " + ", ".join(f"{k} {v:.2f} s" for k, v in b["read_midi_kernels_s"].items()))
    print("  parquet encode by table: " + ", ".join(f"{k} {v:.2f} s" for k, v in
                                                    b["parquet_encode_by_table_s"].items()))
    if "flow" in res:
        f = res["flow"]
        for label, call in (("first", c1), ("rerun same process", c2), ("rerun new process", c3)):
            tasks = ", ".join(f"{k} {v['run_s']:.2f} s ({v['state']})" for k, v in call["tasks"].items())
            print(f"flow {label}: {call['wall_s']:.2f} s ({call['params']}); tasks: {tasks}")
        print(f"flow processes: imports {f['process1']['import_s']:.2f} s / {f['process2']['import_s']:.2f} s; "
              f"Prefect floor: a no-op flow in a fresh process {f['noop_flow_process_s']:.2f} s "
              f"(flow call {f['noop_flow_call_s']:.2f} s)")
    if "flow_server" in res:
        g = res["flow_server"]
        for label, call in (("first", g["process1"]["calls"][0]), ("rerun new process", g["process2"]["calls"][0])):
            tasks = ", ".join(f"{k} {v['run_s']:.2f} s ({v['state']})" for k, v in call["tasks"].items())
            print(f"server flow {label}: {call['wall_s']:.2f} s; tasks: {tasks}")
        print(f"server flow processes: imports {g['process1']['import_s']:.2f} s / {g['process2']['import_s']:.2f} s; "
              f"a no-op flow in a fresh process {g['noop_flow_process_s']:.2f} s (flow call "
              f"{g['noop_flow_call_s']:.2f} s)")
    dest = out / "bench_tables.json"
    dest.write_text(json.dumps(res, indent=1))
    print(f"written: {dest} (bench wall {res['bench_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
