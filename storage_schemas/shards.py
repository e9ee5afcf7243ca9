"""Image datasets: the shard format, the per-image manifest and the key layout in the store.

One dataset holds the images of one encoding of one table set (``<tables name>.<encoding>``)::

    datasets/<name>/CURRENT                            {"version", "manifest_sha256"}   ← written last
    datasets/<name>/<version>/_manifest.json           config, shards (key, split, rows, bytes, sha256)
    datasets/<name>/<version>/images.parquet           one row per image (see IMAGES)
    datasets/<name>/shards/<sha256>.arrow              content-addressed shards, shared by versions

A shard is an Arrow IPC file (zstd-compressed buffers, record batches of ``BATCH_ROWS`` rows) whose
``image`` column is a FixedShapeTensor — uint8 for piano rolls, float16 for Hilbert audio images — next
to the columns that say where each image comes from. pyarrow, pandas and duckdb read it without midipix
code; no pickles anywhere. Shards are written with put-if-absent under their own hash, so a version can
only name complete shards, and versions share unchanged shards.

Audio (Hilbert) datasets say where each piece's sound came from: the ``audio`` column of ``images.parquet``
is ``"recorded"`` (the piece's own sound file) or ``"synth"`` (the built-in synthesizer), null for piano
rolls. A piece whose recording cannot be used has no images; it is listed under ``"rejects"`` in the
manifest (and in its shard's record), one entry of :data:`REJECT_FIELDS` per piece. A group of pieces
that were all left out has no shard (every shard holds rows); the manifest keeps its record under
``"empty_groups"`` (split, recipe, pieces, rejects) so that a later build reuses it.
"""

from __future__ import annotations

import pyarrow as pa

# 2: images.parquet gained the ``audio`` column; manifests and audio shard records gained ``rejects``
SHARDS_SCHEMA_VERSION = 2
BATCH_ROWS = 256

# columns stored next to the image in every shard row
SHARD_COLUMNS = pa.schema(
    [
        pa.field("piece_id", pa.int64(), nullable=False),
        pa.field("window_start", pa.int32(), nullable=False),  # first column (rolls) / sample block (audio)
        pa.field("transposition", pa.int8(), nullable=False),
        pa.field("noise_seed", pa.int64(), nullable=False),  # -1: no pitch noise
    ]
)

IMAGES = pa.schema(
    [
        pa.field("piece_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("encoding", pa.string(), nullable=False),
        pa.field("window_start", pa.int32(), nullable=False),
        pa.field("window_start_s", pa.float64(), nullable=False),
        pa.field("transposition", pa.int8(), nullable=False),
        pa.field("noise_seed", pa.int64(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # the shard's sha256
        pa.field("row", pa.int32(), nullable=False),
        pa.field("audio", pa.string()),  # "recorded" | "synth" for audio images; null for piano rolls
    ],
    metadata={"midipix.table": "images", "midipix.schema_version": str(SHARDS_SCHEMA_VERSION)},
)


# one entry of a manifest's "rejects": a piece left out of an audio dataset, and why
REJECT_FIELDS = ("piece_id", "relpath", "audio_source", "audio_sha256", "error_kind", "message")


def shard_schema(dtype: pa.DataType, shape: tuple[int, ...]) -> pa.Schema:
    """Schema of a shard holding images of ``shape`` (channels, height, width) and ``dtype``."""
    return pa.schema(list(SHARD_COLUMNS) + [pa.field("image", pa.fixed_shape_tensor(dtype, shape), nullable=False)],
                     metadata={"midipix.table": "shard", "midipix.schema_version": str(SHARDS_SCHEMA_VERSION)})


def dataset_name(tables_name: str, encoding: str) -> str:
    return f"{tables_name}.{encoding}"


def pointer_key(name: str) -> str:
    return f"datasets/{name}/CURRENT"


def manifest_key(name: str, version: str) -> str:
    return f"datasets/{name}/{version}/_manifest.json"


def images_key(name: str, version: str) -> str:
    return f"datasets/{name}/{version}/images.parquet"


def shard_key(name: str, sha256_hex: str) -> str:
    return f"datasets/{name}/shards/{sha256_hex}.arrow"
