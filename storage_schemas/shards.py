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
"""

from __future__ import annotations

import pyarrow as pa

SHARDS_SCHEMA_VERSION = 1
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
    ],
    metadata={"midipix.table": "images", "midipix.schema_version": str(SHARDS_SCHEMA_VERSION)},
)


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
