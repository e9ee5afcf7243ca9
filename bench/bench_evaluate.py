#!/usr/bin/env python
"""Benchmark: the evaluation kit (``tasks.kernels.metrics`` and ``tasks.kernels.baselines``) on 1,000 clips.

Usage::

    .venv/bin/python bench/bench_evaluate.py [--clips 1000] [--train-clips 1000] [--repeats 1] [--profile]

Clips are enc3 windows (88 x 200, 0.05 s columns) of the built-in generated corpus
(``tasks.kernels.corpus.generate_piece``, the pieces ``generate_corpus`` writes as MIDI, rendered here
straight from their notes by ``tasks.kernels.rolls.to_windows``; nothing is written but the JSON): the
first ``--clips`` non-empty windows of pieces 0, 1, 2, ... are the test set, the windows of the pieces
after them (up to ``--train-clips``) the training set the Markov and density baselines are fitted on.

Timed, as ``midipix evaluate`` will run it for the baselines (100 seed columns, 100 predicted):

fit          ``baselines.fit`` on the training windows;
reference    ``metrics.reference_set`` of the test windows' true continuations (columns 100..199): the
             reference set of the distribution measures;
per baseline teacher-forced prediction of columns 100..199 + ``next_column_f1`` against the truth;
             free-running continuation + ``summarise`` (note F1 against the true continuation with mir_eval,
             the six distribution distances against the reference, note density, mean polyphony).

Target: all of it under 30 s for 1,000 clips on 2 cores. The median of ``--repeats`` runs is reported,
with the time of each part; results are printed as a table and written as JSON to
``<out>/bench_evaluate.json`` (``--out``, default ``bench/out/``, ignored by git).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B

ROOT = B.ROOT

import numpy as np

TARGET_S = 30.0
START = 100


def corpus_windows(n_test: int, n_train: int, minutes: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Test and training state channels (N, 88, 200) of the generated corpus, and the pieces used."""
    from storage_schemas.encodings import RollConfig
    from tasks.kernels.corpus import generate_piece
    from tasks.kernels.rolls import to_windows

    cfg = RollConfig("enc3")
    test, train = [], []
    have_test = have_train = 0
    index = 0
    while have_train < n_train or have_test < n_test:
        piece = generate_piece(B.SEED, index, minutes)
        notes = piece.notes
        w = to_windows(notes["pitch"], notes["velocity"], np.zeros(notes.shape[0], np.uint8),
                       piece.ticks_to_seconds(notes["onset_tick"]), piece.ticks_to_seconds(notes["offset_tick"]), cfg)
        states = w.images[:, 0]
        states = states[states.reshape(states.shape[0], -1).any(axis=1)]
        if have_test < n_test:
            test.append(states[: n_test - have_test])
            have_test += test[-1].shape[0]
        else:
            train.append(states[: n_train - have_train])
            have_train += train[-1].shape[0]
        index += 1
    return np.concatenate(test), np.concatenate(train), index


def evaluate(test: np.ndarray, train: np.ndarray) -> tuple[dict, dict]:
    """One full evaluation of every baseline; (seconds per part, results)."""
    from tasks.kernels import baselines as BL
    from tasks.kernels import metrics as M

    t_all = time.perf_counter()
    parts: dict = defaultdict(float)
    results: dict = {}
    t = time.perf_counter()
    fitted = BL.fit(train)
    parts["fit"] = time.perf_counter() - t
    truth = test[:, :, START:]
    t = time.perf_counter()
    ref = M.reference_set(truth)
    parts["reference"] = time.perf_counter() - t
    for name in BL.BASELINES:
        t = time.perf_counter()
        tf = BL.teacher_forced(name, test, START, fitted, seed=0)
        parts[f"{name}: teacher-forced"] = time.perf_counter() - t
        t = time.perf_counter()
        r = M.next_column_f1(tf, truth)
        parts[f"{name}: next_column_f1"] = time.perf_counter() - t
        t = time.perf_counter()
        fr = BL.free_running(name, test, START, fitted, seed=0)
        parts[f"{name}: free-running"] = time.perf_counter() - t
        t = time.perf_counter()
        s = M.summarise(fr, ref, true_continuations=truth)
        parts[f"{name}: summarise"] = time.perf_counter() - t
        results[name] = {**{k: v for k, v in r.items() if k.startswith("next_")}, **s}
    parts["total"] = time.perf_counter() - t_all
    return dict(parts), results


def profile_summarise(test: np.ndarray, train: np.ndarray) -> None:
    """Where one summarise call spends its time (cProfile, top 15 by cumulative time)."""
    import cProfile
    import pstats

    from tasks.kernels import baselines as BL
    from tasks.kernels import metrics as M

    fitted = BL.fit(train)
    truth = test[:, :, START:]
    ref = M.reference_set(truth)
    fr = BL.free_running("markov", test, START, fitted)
    prof = cProfile.Profile()
    prof.enable()
    M.summarise(fr, ref, true_continuations=truth)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--train-clips", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=1.0, help="nominal minutes per generated piece")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--profile", action="store_true", help="also print a profile of one summarise call")
    ap.add_argument("--wait-quiet", type=float, default=60.0, metavar="S",
                    help="before timing, wait up to S seconds for the 1-min load average to drop below 0.5")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    test, train, pieces = corpus_windows(args.clips, args.train_clips, args.minutes)
    print(f"corpus: {pieces} generated pieces of ~{args.minutes:g} min -> {test.shape[0]} test and {train.shape[0]} "
          f"train windows {test.shape[1:]}; lit {np.count_nonzero(test) / test.size:.2%} of test pixels "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    evaluate(test[:8], train[:8])  # warm-up: numba compilation, imports
    load_start = B.wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else os.getloadavg()[0]
    print(f"load average before timing: {load_start:.2f}", flush=True)
    runs = []
    for i in range(args.repeats):
        parts, results = evaluate(test, train)
        runs.append(parts)
        print(f"  run {i + 1}: {parts['total']:.2f} s", flush=True)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = median["total"]

    rows = [("evaluate every baseline, 1,000 clips" if test.shape[0] == 1000 else f"evaluate every baseline, "
             f"{test.shape[0]} clips", f"{total:.2f} s", "", f"{test.shape[0] / total:,.0f} clips/s",
             f"< {TARGET_S:g} s", B.verdict("<", TARGET_S, total))]
    for k, v in median.items():
        if k != "total":
            rows.append((f"  {k}", f"{v:.3f} s", "", f"{v / total:.0%}", "", ""))
    res = {"config": {"clips": int(test.shape[0]), "train_clips": int(train.shape[0]), "pieces": pieces,
                      "minutes": args.minutes, "start": START, "repeats": args.repeats, "cpus": os.cpu_count(),
                      "python": platform.python_version(),
                      "versions": {p: md.version(p) for p in ("numpy", "scipy", "numba", "mir_eval")}},
           "load_avg_start": load_start, "parts_s": median, "runs_s": runs, "results": results,
           "table": B.table_json(rows), "load_avg_end": os.getloadavg()}
    print()
    print(f"{test.shape[0]} test clips 88 x 200 (seed 100 columns, 100 predicted), {train.shape[0]} train clips; "
          f"{os.cpu_count()} CPUs; median of {args.repeats}; 1-min load avg {load_start:.2f} before timing, "
          f"{res['load_avg_end'][0]:.2f} at the end")
    B.print_table(rows)
    print()
    keys = ("next_column_frame_f1", "next_column_onset_f1", "note_f1", "note_density_ratio", "mean_polyphony_ratio",
            "note_count_overlap", "pitch_class_histogram_overlap")
    print("baseline".ljust(20) + "".join(k.replace("next_column_", "nc_")[:22].rjust(24) for k in keys))
    for name, r in results.items():
        print(name.ljust(20) + "".join(f"{r[k]:24.3f}" for k in keys))
    dest = out / "bench_evaluate.json"
    dest.write_text(json.dumps(res, indent=1, default=str))
    print(f"written: {dest}")
    if args.profile:
        profile_summarise(test, train)


if __name__ == "__main__":
    main()
