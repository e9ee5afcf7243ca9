"""Shared helpers of the image benchmarks (``bench_encodings.py``, ``bench_loader.py``).

The corpus is the generated one that ``bench_tables.py`` materialises (same folder, same marker), so the
benchmarks share it; its tables are built once into a local store under ``bench/out/`` and reused.
Nothing here is timed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED = 0
TABLES_NAME = "bench"


# -- corpus and tables -------------------------------------------------------------------------------

def corpus_dir(out: Path, pieces: int, minutes: float) -> Path:
    return out / "corpus" / f"generated-{pieces}-{minutes:g}min-s{SEED}"


def ensure_corpus(folder: Path, pieces: int, minutes: float) -> list[Path]:
    """The corpus's files, generated once; a marker beside the folder says a complete copy is there."""
    marker = folder.with_name(folder.name + ".json")
    if marker.exists() and folder.is_dir():
        info = json.loads(marker.read_text())
        paths = sorted(folder.glob("*.mid"))
        if (info.get("pieces") == pieces and info.get("minutes") == minutes and len(paths) == pieces
                and sum(p.stat().st_size for p in paths) == info.get("bytes")):
            return paths
    from tasks.storage.sources import generate_corpus

    print(f"  generating {pieces} pieces of {minutes:g} min into {folder} ...", flush=True)
    t0 = time.perf_counter()
    paths = generate_corpus(folder, n=pieces, seed=SEED, minutes=minutes)
    print(f"  generated in {time.perf_counter() - t0:.1f} s", flush=True)
    for p in sorted(set(folder.glob("*.mid")) - set(paths)):  # left by an interrupted larger run
        p.unlink()
    marker.write_text(json.dumps({"pieces": pieces, "minutes": minutes, "seed": SEED,
                                  "bytes": sum(p.stat().st_size for p in paths)}))
    return paths


def extra_piece(out: Path, index: int, minutes: float) -> Path:
    """Piece ``index`` of the same generated corpus (the one after the last), in a folder of its own."""
    from tasks.kernels.corpus import generate_piece, to_smf_bytes
    from tasks.storage.files import atomic_write

    folder = out / "corpus" / f"extra-s{SEED}-{index:05d}-{minutes:g}min"
    piece = generate_piece(SEED, index, minutes)
    path = folder / f"{piece.name}.mid"
    data = to_smf_bytes(piece)
    if not path.exists() or path.read_bytes() != data:
        atomic_write(path, data)
    return path


def source_files(paths: list[Path]):
    from tasks.storage.sources import SourceFile

    files = []
    for p in paths:
        data = p.read_bytes()
        files.append(SourceFile(uri=str(p), relpath=p.name, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    return files


def ensure_tables(store_dir: Path, paths: list[Path], publish: bool = True) -> dict:
    """Tables of ``paths`` in the local store ``store_dir`` (name ``bench``), built once; the manifest."""
    from tasks.steps import tables as T
    from tasks.storage.sources import read_file_bytes
    from tasks.storage.store import Store

    store = Store(str(store_dir))
    files = source_files(paths)
    split = T.SplitConfig()
    params = {"split": split.model_dump(mode="json"), "metadata": False}
    version = T.version_id(files, params)
    try:
        manifest = T.read_manifest(store, TABLES_NAME, version)
    except FileNotFoundError:
        t = time.perf_counter()
        result = T.build_tables(files, lambda f: read_file_bytes(f.uri), None, split, workers=2)
        manifest = T.write_table_set(store, TABLES_NAME, version, result,
                                     {"params": params, "parsed": result.parsed, "reused": 0}, workers=2)
        print(f"  tables {version} built in {time.perf_counter() - t:.1f} s "
              f"({manifest['rows']['notes']} notes)", flush=True)
    if publish:
        T.publish(store, TABLES_NAME, version)
    return manifest


def load_piece_notes(store_dir: Path, manifest: dict) -> tuple[list[dict], dict[str, object]]:
    """Every piece's note columns (the rows ``build_image_dataset`` renders), in piece_id order.

    Returns ``(pieces, columns)``: ``pieces[i]`` = {piece_id, split, sha256, a, b}, rows a..b of ``columns``.
    """
    from tasks.steps import render as R
    from tasks.storage.store import Store

    store = Store(str(store_dir))
    notes, slices, _ = R._load_notes(store, manifest)
    cols = {c: notes.column(c).to_numpy() for c in R.NOTE_COLUMNS[1:]}
    rows = {p["piece_id"]: p for p in R._load_pieces(store, manifest)}
    pieces = [{"piece_id": pid, "split": rows[pid]["split"], "sha256": rows[pid]["sha256"], "a": a, "b": b}
              for pid, (a, b) in sorted(slices.items())]
    return pieces, cols


# -- measuring ---------------------------------------------------------------------------------------

def wait_quiet(max_wait: float, threshold: float = 0.5) -> float:
    """Wait (up to ``max_wait`` s) until the 1-minute load average drops below ``threshold``; return it."""
    deadline = time.monotonic() + max_wait
    load = os.getloadavg()[0]
    while load >= threshold and time.monotonic() < deadline:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """Median and all wall times of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def verdict(op: str, thr: float, value: float) -> str:
    ok = value >= thr if op == ">=" else value < thr
    return "PASS" if ok else "FAIL"


def print_table(rows: list[tuple]) -> None:
    header = ("figure", "value", "baseline", "ratio", "target", "")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(6)]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def table_json(rows: list[tuple]) -> list[dict]:
    return [dict(zip(("figure", "value", "baseline", "ratio", "target", "verdict"), r)) for r in rows]


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def shard_groups(pieces: list[dict]) -> list[list[dict]]:
    """The pieces of each shard, as ``build_image_dataset`` groups them (per split, in sha256 order)."""
    from storage_schemas import tables as S
    from tasks.storage.shards import group_pieces

    groups = []
    for split in S.SPLITS:
        mine = sorted((p for p in pieces if p["split"] == split), key=lambda p: p["sha256"])
        groups += [[mine[i] for i in g] for g in group_pieces([p["sha256"] for p in mine])]
    return groups
