"""MIDI files → the corpus tables (pure functions; the Prefect tasks in ``tasks.steps.prefect_tasks`` wrap them).

A build takes fingerprinted source files (path and sha256), parses the ones it has not seen before,
reuses the rows of the ones a previous version already holds (same bytes, same reader code), assigns
splits by piece, and writes one immutable table set. Publishing the set (the pointer) is separate, so
a crash anywhere before it leaves the previous version as the visible one.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, field_validator

from storage_schemas import tables as S
from tasks.storage import publish as P
from tasks.storage.sources import SourceFile
from tasks.kernels.midi import MidiError, ParsedMidi, read_midi
from tasks.storage.store import Store

# Parquet encodings measured on a 7.1 M-note table (bench/bench_tables.py): delta for sorted integer
# columns, byte-stream-split for float seconds, dictionaries only for small-alphabet columns, and zstd
# level 1 write 2.2x faster than zstd-3 with dictionaries everywhere, and 12 % smaller.
DELTA = ("piece_id", "onset_tick", "offset_tick", "tick")
FLOATS = ("onset_s", "offset_s", "offset_pedal_s", "time_s")
DICTIONARY = ("track", "channel", "program", "pitch", "velocity", "control", "value", "source", "relpath",
              "composer", "title", "error_kind")
STATISTICS = ("piece_id", "onset_s", "onset_tick", "tick", "time_s")
PART_ROWS = 2_000_000  # rows per Parquet file: big tables are written as several parts in parallel

TABLE_COLUMNS = {name: schema.names for name, schema in S.SCHEMAS.items()}


def code_version() -> str:
    """Hash of the code that decides what the tables contain (reader, builder, schemas)."""
    h = hashlib.sha256()
    for mod in ("tasks/kernels/midi.py", "tasks/steps/tables.py", "storage_schemas/tables.py"):
        h.update((Path(__file__).resolve().parents[2] / mod).read_bytes())
    return h.hexdigest()[:16]


class SplitConfig(BaseModel):
    """How pieces are assigned to train / validation / test.

    ``auto`` takes MAESTRO's published split for every piece the metadata knows and the seeded random
    split for the rest; ``maestro`` demands metadata for every piece; ``random`` ignores metadata.
    See :func:`random_splits` for the seeded split.
    """

    mode: Literal["auto", "maestro", "random"] = "auto"
    seed: int = 0
    ratios: tuple[float, float, float] = Field((0.7, 0.2, 0.1), description="train, validation, test")

    @field_validator("ratios")
    @classmethod
    def _sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must be >= 0 and sum to 1, got {v}")
        return v


@dataclass
class BuildResult:
    """An in-memory table set plus what the build did."""

    tables: dict[str, dict[str | None, pa.Table]]  # table -> split (None: unpartitioned) -> rows
    parsed: int = 0
    reused: int = 0
    rejected: int = 0
    reject_rows: list[dict] = field(default_factory=list)


def _draw(sha256_hex: str, seed: int) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{sha256_hex}".encode()).digest()[:8], "big") / 2.0**64


def random_splits(sha256s: list[str], cfg: SplitConfig) -> dict[str, str]:
    """The seeded split by piece: pieces ranked by a hash of (seed, sha256), cut at the exact ratios.

    ``round(n * train)`` pieces go to train, ``round(n * validation)`` to validation, the rest to
    test, so even a 24-piece corpus gets 17 / 5 / 2. The ranking depends only on each piece's bytes
    and the seed: adding a piece can move at most one existing piece across each boundary.
    """
    ranked = sorted(set(sha256s), key=lambda h: (_draw(h, cfg.seed), h))
    n = len(ranked)
    n_train = round(n * cfg.ratios[0])
    n_val = min(n - n_train, round(n * cfg.ratios[1]))
    return {h: ("train" if i < n_train else "validation" if i < n_train + n_val else "test")
            for i, h in enumerate(ranked)}


def match_metadata(relpaths: Iterable[str], metadata: pd.DataFrame | None) -> dict[str, dict]:
    """Metadata rows by relpath: a file matches when its relpath ends with the row's ``midi_filename``."""
    if metadata is None or metadata.empty:
        return {}
    by_name = {str(r["midi_filename"]).strip("/"): r for r in metadata.to_dict("records")}
    out = {}
    for rel in relpaths:
        parts = rel.split("/")
        for i in range(len(parts)):
            row = by_name.get("/".join(parts[i:]))
            if row is not None:
                out[rel] = row
                break
    return out


def assign_splits(files: list[SourceFile], meta: dict[str, dict], cfg: SplitConfig) -> dict[str, str]:
    """Split of every file by relpath: MAESTRO's where the metadata names it (unless ``random``)."""
    out, rest = {}, []
    for f in files:
        m = meta.get(f.relpath)
        if cfg.mode != "random" and m is not None and m.get("split") in S.SPLITS:
            out[f.relpath] = str(m["split"])
        elif cfg.mode == "maestro":
            raise ValueError(f"split=maestro but no MAESTRO metadata names {f.relpath!r}")
        else:
            rest.append(f)
    by_sha = random_splits([f.sha256 for f in rest], cfg)
    out.update({f.relpath: by_sha[f.sha256] for f in rest})
    return out


# --- per-piece columns ---------------------------------------------------------------------------

def _piece_columns(p: ParsedMidi) -> dict[str, dict[str, np.ndarray]]:
    return {
        "notes": {"track": p.track, "channel": p.channel, "program": p.program, "pitch": p.pitch,
                  "velocity": p.velocity, "onset_tick": p.onset_tick, "offset_tick": p.offset_tick,
                  "onset_s": p.onset_s, "offset_s": p.offset_s, "offset_pedal_s": p.offset_pedal_s},
        "controls": {"track": p.cc_track, "channel": p.cc_channel, "control": p.cc_control, "value": p.cc_value,
                     "tick": p.cc_tick, "time_s": p.cc_s},
        "tempos": {"tick": p.tempo_tick, "time_s": p.tempo_s, "tempo_us": p.tempo_us,
                   "bpm": 60e6 / p.tempo_us.astype(np.float64)},
    }


def _piece_header(p: ParsedMidi) -> dict:
    return {"smf_format": p.smf_format, "n_tracks": p.n_tracks, "ticks_per_beat": p.ticks_per_beat,
            "note_count": p.n_notes, "control_count": int(p.cc_tick.shape[0]),
            "tempo_count": int(p.tempo_tick.shape[0]), "duration_s": p.duration_s}


class PreviousTables:
    """Rows of an earlier table set, addressable by piece, for incremental rebuilds."""

    def __init__(self, tables: dict[str, pa.Table]):
        self.headers: dict[str, dict] = {}
        self.ids: dict[str, int] = {}
        pieces = tables["pieces"].to_pylist()
        for row in pieces:
            self.headers[row["sha256"]] = {k: row[k] for k in ("smf_format", "n_tracks", "ticks_per_beat",
                                                                 "note_count", "control_count", "tempo_count",
                                                                 "duration_s")}
            self.ids[row["sha256"]] = row["piece_id"]
        self.columns: dict[str, dict[str, np.ndarray]] = {}
        self.slices: dict[str, dict[int, tuple[int, int]]] = {}
        for name in ("notes", "controls", "tempos"):
            t = tables[name]
            cols = {c: t.column(c).to_numpy() for c in TABLE_COLUMNS[name] if c != "piece_id"}
            pid = t.column("piece_id").to_numpy()
            self.columns[name] = cols
            bounds = np.flatnonzero(np.diff(pid)) + 1
            starts = np.concatenate(([0], bounds))
            stops = np.concatenate((bounds, [pid.shape[0]]))
            self.slices[name] = {int(pid[a]): (int(a), int(b)) for a, b in zip(starts, stops) if b > a}

    def has(self, sha256: str) -> bool:
        return sha256 in self.headers

    def piece(self, sha256: str) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
        pid = self.ids[sha256]
        out = {}
        for name, cols in self.columns.items():
            a, b = self.slices[name].get(pid, (0, 0))
            out[name] = {c: v[a:b] for c, v in cols.items()}
        return self.headers[sha256], out


def parse_files(files: list[SourceFile], read_bytes: Callable[[SourceFile], bytes], workers: int = 2,
                progress: Callable[[int, int], None] | None = None
                ) -> tuple[dict[str, ParsedMidi], dict[str, tuple[str, str]]]:
    """Parse files in a thread pool (the numba kernels release the GIL).

    Returns ``(parsed by sha256, (error kind, message) by sha256)``.
    """
    parsed: dict[str, ParsedMidi] = {}
    failed: dict[str, tuple[str, str]] = {}

    def one(f: SourceFile):
        try:
            return f, read_midi(read_bytes(f)), None
        except MidiError as e:
            return f, None, (e.kind, e.message)
        except OSError as e:
            return f, None, ("io_error", f"could not read the file: {e}")

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for f, p, err in pool.map(one, files, chunksize=8):
            if p is not None:
                parsed[f.sha256] = p
            else:
                failed[f.sha256] = err
            done += 1
            if progress is not None and (done % 64 == 0 or done == len(files)):
                progress(done, len(files))
    return parsed, failed


def build_tables(files: list[SourceFile], read_bytes: Callable[[SourceFile], bytes],
                 metadata: pd.DataFrame | None, split: SplitConfig, previous: PreviousTables | None = None,
                 workers: int = 2, progress: Callable[[int, int], None] | None = None) -> BuildResult:
    """Build every table of a corpus in memory.

    Files are taken in relpath order. A file whose bytes equal an earlier file's is a ``duplicate``
    reject; a file the reader refuses is a reject with the reader's kind and message; every other
    file becomes one piece. Pieces whose sha256 ``previous`` holds are not parsed again.
    """
    files = sorted(files, key=lambda f: f.relpath)
    rejects: list[dict] = []
    first_of: dict[str, SourceFile] = {}
    unique: list[SourceFile] = []
    for f in files:
        if f.sha256 in first_of:
            rejects.append({"source": f.uri, "relpath": f.relpath, "sha256": f.sha256, "error_kind": "duplicate",
                            "message": f"same bytes as {first_of[f.sha256].relpath}"})
            continue
        first_of[f.sha256] = f
        unique.append(f)

    to_parse = [f for f in unique if previous is None or not previous.has(f.sha256)]
    parsed, failed = parse_files(to_parse, read_bytes, workers=workers, progress=progress)
    meta = match_metadata([f.relpath for f in unique], metadata)
    splits = assign_splits([f for f in unique if f.sha256 not in failed], meta, split)

    pieces_by_split: dict[str, list[dict]] = {s: [] for s in S.SPLITS}
    cols_by_split: dict[str, dict[str, list[dict[str, np.ndarray]]]] = {
        s: {"notes": [], "controls": [], "tempos": []} for s in S.SPLITS}
    ids_by_split: dict[str, dict[str, list[np.ndarray]]] = {
        s: {"notes": [], "controls": [], "tempos": []} for s in S.SPLITS}
    reused = 0
    for f in unique:
        if f.sha256 in failed:
            kind, msg = failed[f.sha256]
            rejects.append({"source": f.uri, "relpath": f.relpath, "sha256": f.sha256, "error_kind": kind,
                            "message": msg})
            continue
        if f.sha256 in parsed:
            p = parsed[f.sha256]
            header, cols = _piece_header(p), _piece_columns(p)
        else:
            header, cols = previous.piece(f.sha256)
            reused += 1
        m = meta.get(f.relpath) or {}
        s = splits[f.relpath]
        pid = S.piece_id_from_sha256(f.sha256)
        year = m.get("year")
        pieces_by_split[s].append({
            "piece_id": pid, "source": f.uri, "relpath": f.relpath, "sha256": f.sha256, "size_bytes": f.size,
            "composer": m.get("canonical_composer"), "title": m.get("canonical_title"),
            "year": None if year is None or pd.isna(year) else int(year),
            "maestro_duration_s": None if m.get("duration") is None else float(m["duration"]), **header,
            "audio_source": f.audio_uri, "audio_sha256": f.audio_sha256, "audio_size_bytes": f.audio_size})
        for name in ("notes", "controls", "tempos"):
            c = cols[name]
            cols_by_split[s][name].append(c)
            n = next(iter(c.values())).shape[0]
            ids_by_split[s][name].append(np.full(n, pid, np.int64))

    tables: dict[str, dict[str | None, pa.Table]] = {name: {} for name in S.SCHEMAS}
    for s in S.SPLITS:
        tables["pieces"][s] = pa.Table.from_pylist(pieces_by_split[s], schema=S.PIECES)
        for name in ("notes", "controls", "tempos"):
            schema = S.SCHEMAS[name]
            parts = cols_by_split[s][name]
            # one chunk per piece, wrapping the reader's arrays without copying them into one block
            arrays = [pa.chunked_array([pa.array(i) for i in ids_by_split[s][name]], type=pa.int64())]
            for fld in list(schema)[1:]:
                dtype = fld.type.to_pandas_dtype()
                arrays.append(pa.chunked_array([pa.array(c[fld.name].astype(dtype, copy=False), type=fld.type)
                                                for c in parts], type=fld.type))
            tables[name][s] = pa.Table.from_arrays(arrays, schema=schema)
    tables["rejects"][None] = pa.Table.from_pylist(rejects, schema=S.REJECTS)
    return BuildResult(tables=tables, parsed=len(parsed), reused=reused, rejected=len(rejects),
                       reject_rows=rejects)


# --- writing, publishing, reading ------------------------------------------------------------------

def version_id(files: list[SourceFile], params: dict) -> str:
    """Deterministic id of a table set: what went in (file hashes, parameters) and the code version.

    A piece's recording enters by where it is read from and its hash: a changed or moved recording
    gives a new version (the MIDI rows are reused; only the audio images are rendered again).
    """
    h = hashlib.sha256()
    h.update(json.dumps({"code": code_version(), "schema": S.TABLES_SCHEMA_VERSION, "params": params},
                        sort_keys=True).encode())
    for f in sorted(files, key=lambda f: f.relpath):
        audio = "" if f.audio_uri is None else f"\0{f.audio_uri}\0{f.audio_sha256}"
        h.update(f"{f.relpath}\0{f.sha256}{audio}\n".encode())
    return f"v{S.TABLES_SCHEMA_VERSION}-{h.hexdigest()[:20]}"


def _parquet_bytes(table: pa.Table) -> bytes:
    names = table.column_names
    encoding = {c: "DELTA_BINARY_PACKED" for c in DELTA if c in names}
    encoding.update({c: "BYTE_STREAM_SPLIT" for c in FLOATS if c in names})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=1 << 20, compression="zstd", compression_level=1,
                   use_dictionary=[c for c in DICTIONARY if c in names], column_encoding=encoding,
                   write_statistics=[c for c in STATISTICS if c in names])
    return sink.getvalue()


def write_table_set(store: Store, name: str, version: str, result: BuildResult, info: dict,
                    workers: int = 2) -> dict:
    """Write every file of a table set, then its manifest (last). Returns the manifest."""
    jobs = []
    for t, by_split in result.tables.items():
        for s, tbl in by_split.items():
            n_parts = max(1, -(-tbl.num_rows // PART_ROWS))
            step = -(-tbl.num_rows // n_parts) if tbl.num_rows else 0
            jobs += [(t, s, p, tbl.slice(p * step, step) if n_parts > 1 else tbl) for p in range(n_parts)]
    jobs.sort(key=lambda j: -j[3].num_rows)  # biggest first: the pool finishes together

    def write(job):
        t, s, part, tbl = job
        data = _parquet_bytes(tbl)
        key = S.table_file_key(name, version, t, s, part)
        store.write_bytes(key, data)
        return t, s, part, {"key": key, "rows": tbl.num_rows, "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # listed in row order: part 2 before part 10
        written = sorted(pool.map(write, jobs), key=lambda r: (r[0], r[1] or "", r[2]))
    files: dict[str, dict] = {}
    for t, s, _, rec in written:
        files.setdefault(t, {}).setdefault(s or "all", []).append(rec)
    manifest = {
        "kind": "midipix.tables", "schema_version": S.TABLES_SCHEMA_VERSION, "name": name, "version": version,
        "code_version": code_version(), **info,
        "rows": {t: sum(r["rows"] for recs in by.values() for r in recs) for t, by in files.items()},
        "files": files,
    }
    store.write_bytes(S.manifest_key(name, version), json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def read_pointer(store: Store, name: str) -> tuple[dict | None, str | None]:
    return P.read_pointer(store, S.pointer_key(name))


def publish(store: Store, name: str, version: str) -> bool:
    """Point ``tables/<name>/CURRENT`` at ``version`` by compare-and-swap. False if it already did."""
    return P.publish(store, S.pointer_key(name), S.manifest_key(name, version), version)


def read_manifest(store: Store, name: str, version: str | None = None, verify: bool = True) -> dict:
    """The manifest of ``version`` (default: the current one), checked against the pointer's hash."""
    try:
        return P.read_manifest(store, S.pointer_key(name), lambda v: S.manifest_key(name, v), version, verify)
    except FileNotFoundError as e:
        if version is None and "nothing published" in str(e):
            raise FileNotFoundError(f"no published table set {name!r} in {store.uri}") from e
        raise


def table_files(manifest: dict, table: str, split: str | None = None) -> list[dict]:
    """The file records (key, rows, bytes, sha256) of one table of a manifest, optionally one split."""
    by_split = manifest["files"][table]
    if split is not None:
        return list(by_split.get(split, []))
    return [rec for recs in by_split.values() for rec in recs]


def load_tables(store: Store, manifest: dict, names: Iterable[str] = S.PARTITIONED) -> dict[str, pa.Table]:
    """Read whole tables of a table set (all splits, with a ``split`` column dropped)."""
    out = {}
    for t in names:
        parts = []
        for recs in manifest["files"][t].values():
            parts += [pq.read_table(io.BytesIO(store.read_bytes(rec["key"]))) for rec in recs]
        out[t] = pa.concat_tables(parts) if parts else S.SCHEMAS[t].empty_table()
    return out


def list_table_sets(store: Store) -> list[str]:
    """Names of the table sets in a store that have a published pointer."""
    return sorted({k.split("/")[1] for k in store.list("tables") if k.endswith("/CURRENT")})
