"""Shards of images: Arrow IPC bytes in and out, content-defined grouping of pieces into shards.

Pure functions; the dataset build (``tasks.steps.render``) and the loaders (``tasks.steps.loader``) use them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from storage_schemas import shards as SH

_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def encode_shard(images: np.ndarray, piece_id: np.ndarray, window_start: np.ndarray,
                 transposition: np.ndarray, noise_seed: np.ndarray, batch_rows: int = SH.BATCH_ROWS) -> bytes:
    """Arrow IPC file bytes of one shard.

    Parameters
    ----------
    images
        ``(N, C, H, W)`` uint8 (piano rolls) or float16 (audio images).
    piece_id, window_start, transposition, noise_seed
        One value per image (``noise_seed`` −1 when no pitch noise was applied).
    """
    n = images.shape[0]
    schema = SH.shard_schema(pa.from_numpy_dtype(images.dtype), tuple(images.shape[1:]))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema, options=_IPC_OPTIONS) as writer:
        for a in range(0, max(n, 1), batch_rows):
            b = min(a + batch_rows, n)
            cols = [pa.array(np.asarray(piece_id[a:b], np.int64)), pa.array(np.asarray(window_start[a:b], np.int32)),
                    pa.array(np.asarray(transposition[a:b], np.int8)), pa.array(np.asarray(noise_seed[a:b], np.int64)),
                    pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(images[a:b]))]
            writer.write_batch(pa.record_batch(cols, schema=schema))
    return sink.getvalue().to_pybytes()


def read_shard(data: bytes | pa.Buffer) -> pa.Table:
    """The whole shard as a table (its ``image`` column is a FixedShapeTensor)."""
    return pa.ipc.open_file(pa.BufferReader(data)).read_all()


def shard_images(data: bytes | pa.Buffer) -> np.ndarray:
    """All images of a shard as one ``(N, C, H, W)`` array."""
    table = read_shard(data)
    return table.column("image").combine_chunks().to_numpy_ndarray()


def iter_batches(data: bytes | pa.Buffer) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Record batches of a shard as ``(images (n, C, H, W), {column: values})`` without copying images."""
    reader = pa.ipc.open_file(pa.BufferReader(data))
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        images = batch.column("image").to_numpy_ndarray()
        meta = {name: batch.column(name).to_numpy() for name in SH.SHARD_COLUMNS.names}
        yield images, meta


def group_pieces(piece_sha256s: list[str], bits: int = 4) -> list[list[int]]:
    """Content-defined grouping of pieces (in the given order) into shards of about ``2**bits`` pieces.

    A group ends after a piece whose hash has its low ``bits`` bits zero, so whether a boundary falls
    after a piece depends on that piece alone: adding or removing one piece changes only the group it
    belongs to, and every other shard of the dataset stays byte-identical (and is not rendered again).
    Returns lists of indices into ``piece_sha256s``.
    """
    mask = (1 << bits) - 1
    groups: list[list[int]] = [[]]
    for i, h in enumerate(piece_sha256s):
        groups[-1].append(i)
        if int(h[:8], 16) & mask == 0:
            groups.append([])
    return [g for g in groups if g]


def recipe_key(parts: list[str]) -> str:
    """Hash of everything a shard's bytes depend on (config, code version, its pieces and variants)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()
