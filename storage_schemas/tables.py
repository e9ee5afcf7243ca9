"""Arrow schemas of the corpus tables and the key layout of a table set in the store.

A table set is immutable and lives under ``tables/<name>/<version>/``; it becomes visible only when the
pointer ``tables/<name>/CURRENT`` names it, and the pointer is written after everything else::

    tables/<name>/CURRENT                                   {"version": ..., "manifest_sha256": ...}
    tables/<name>/<version>/_manifest.json                  files, sizes, sha256, row counts, params
    tables/<name>/<version>/<table>/split=<split>/part-00000.parquet  pieces, notes, controls, tempos
    tables/<name>/<version>/rejects/part-00000.parquet

Plain pyarrow or pandas read a table without midipix code: ``pd.read_parquet(".../<version>/notes")``
(the ``split`` column comes back from the hive-style folder names).
"""

from __future__ import annotations

import pyarrow as pa

# 2: pieces gained audio_source, audio_sha256, audio_size_bytes (nullable; readers of version 1 table sets
#    treat the columns as absent, i.e. no recording)
TABLES_SCHEMA_VERSION = 2
AUDIO_COLUMNS = ("audio_source", "audio_sha256", "audio_size_bytes")
SPLITS = ("train", "validation", "test")
PARTITIONED = ("pieces", "notes", "controls", "tempos")

PIECES = pa.schema(
    [
        pa.field("piece_id", pa.int64(), nullable=False),  # first 8 bytes of sha256, signed big-endian
        pa.field("source", pa.string(), nullable=False),  # URI or path the file was read from
        pa.field("relpath", pa.string(), nullable=False),  # path inside the source, '/'-separated
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("composer", pa.string()),  # MAESTRO canonical_composer, when known
        pa.field("title", pa.string()),  # MAESTRO canonical_title
        pa.field("year", pa.int16()),
        pa.field("maestro_duration_s", pa.float64()),  # the duration MAESTRO's metadata states
        pa.field("smf_format", pa.int8(), nullable=False),
        pa.field("n_tracks", pa.int16(), nullable=False),
        pa.field("ticks_per_beat", pa.int32(), nullable=False),
        pa.field("note_count", pa.int32(), nullable=False),
        pa.field("control_count", pa.int32(), nullable=False),
        pa.field("tempo_count", pa.int32(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),  # end of the last track, through the tempo map
        pa.field("audio_source", pa.string()),  # the piece's recording (same stem beside the MIDI), if any
        pa.field("audio_sha256", pa.string()),  # null with audio_source set: unreadable when listed
        pa.field("audio_size_bytes", pa.int64()),
    ],
    metadata={"midipix.table": "pieces", "midipix.schema_version": str(TABLES_SCHEMA_VERSION)},
)

NOTES = pa.schema(
    [
        pa.field("piece_id", pa.int64(), nullable=False),
        pa.field("track", pa.int16(), nullable=False),
        pa.field("channel", pa.uint8(), nullable=False),
        pa.field("program", pa.uint8(), nullable=False),
        pa.field("pitch", pa.uint8(), nullable=False),
        pa.field("velocity", pa.uint8(), nullable=False),
        pa.field("onset_tick", pa.int64(), nullable=False),
        pa.field("offset_tick", pa.int64(), nullable=False),
        pa.field("onset_s", pa.float64(), nullable=False),
        pa.field("offset_s", pa.float64(), nullable=False),
        pa.field("offset_pedal_s", pa.float64(), nullable=False),  # held by the sustain pedal
    ],
    metadata={"midipix.table": "notes", "midipix.schema_version": str(TABLES_SCHEMA_VERSION)},
)

CONTROLS = pa.schema(
    [
        pa.field("piece_id", pa.int64(), nullable=False),
        pa.field("track", pa.int16(), nullable=False),
        pa.field("channel", pa.uint8(), nullable=False),
        pa.field("control", pa.uint8(), nullable=False),  # 64 sustain, 66 sostenuto, 67 soft, ...
        pa.field("value", pa.uint8(), nullable=False),
        pa.field("tick", pa.int64(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),
    ],
    metadata={"midipix.table": "controls", "midipix.schema_version": str(TABLES_SCHEMA_VERSION)},
)

TEMPOS = pa.schema(
    [
        pa.field("piece_id", pa.int64(), nullable=False),
        pa.field("tick", pa.int64(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),
        pa.field("tempo_us", pa.int32(), nullable=False),  # microseconds per beat
        pa.field("bpm", pa.float64(), nullable=False),
    ],
    metadata={"midipix.table": "tempos", "midipix.schema_version": str(TABLES_SCHEMA_VERSION)},
)

REJECTS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("relpath", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("error_kind", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ],
    metadata={"midipix.table": "rejects", "midipix.schema_version": str(TABLES_SCHEMA_VERSION)},
)

SCHEMAS: dict[str, pa.Schema] = {
    "pieces": PIECES,
    "notes": NOTES,
    "controls": CONTROLS,
    "tempos": TEMPOS,
    "rejects": REJECTS,
}


def pointer_key(name: str) -> str:
    """Key of the pointer naming the current version of ``name``."""
    return f"tables/{name}/CURRENT"


def version_root(name: str, version: str) -> str:
    return f"tables/{name}/{version}"


def manifest_key(name: str, version: str) -> str:
    return f"tables/{name}/{version}/_manifest.json"


def table_file_key(name: str, version: str, table: str, split: str | None, part: int = 0) -> str:
    """Key of one Parquet file; ``split`` is None for the unpartitioned ``rejects`` table."""
    if split is None:
        return f"tables/{name}/{version}/{table}/part-{part:05d}.parquet"
    # zero-padded: readers that list a folder in name order (pandas, pyarrow) get the rows in order
    return f"tables/{name}/{version}/{table}/split={split}/part-{part:05d}.parquet"


def piece_id_from_sha256(sha256_hex: str) -> int:
    """Stable 64-bit piece id: the first 8 bytes of the file's sha256, as a signed integer."""
    return int.from_bytes(bytes.fromhex(sha256_hex[:16]), "big", signed=True)
