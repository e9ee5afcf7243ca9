"""Hilbert-curve encoding: 1-D blocks of 4^k audio samples ↔ 2^k × 2^k images.

The paper lays a block of 65,536 samples (order 8) along a Hilbert curve so that samples close in time
stay close in the image; decoding is the exact inverse. This module holds the curve (a numba kernel
and a recursive pure-Python reference twin), the encode/decode kernels and the audio ↔ image helpers.
Nothing here knows about Prefect or storage.

Conventions
-----------
Curve
    Point ``d`` of the order-``k`` curve sits at pixel ``(ys[d], xs[d])`` (row, column). The curve starts
    at the top-left pixel ``(0, 0)`` and ends at the top-right pixel ``(0, 2^k − 1)``; the first
    quadrant visited is the top-left one, then bottom-left, bottom-right, top-right. Consecutive points
    are 4-adjacent (they differ by one in exactly one coordinate).
Encoding
    ``to_hilbert`` / ``from_hilbert`` only move values: any dtype (float32, float16, uint8, ...) goes
    through bit for bit, NaNs included, and the trailing axis of length 4^k becomes two axes of 2^k
    (leading batch axes are kept).
Audio scaling
    ``audio_to_images`` maps audio in [−1, 1] to pixels in [0, 1] by ``(x + 1) / 2`` after clipping
    to [−1, 1]; ``images_to_audio`` maps back with ``2 p − 1``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# -- the curve --------------------------------------------------------------------------------------


def _check_order(order: int) -> int:
    order = int(order)
    if not 0 <= order <= 15:
        raise ValueError(f"Hilbert order must be in 0..15, got {order}")
    return order


def _block_and_hop(order: int, hop: int | None) -> tuple[int, int, int]:
    """Checked ``(order, block, hop)``: a block is the curve's 4**order samples, the hop one block unless given."""
    order = _check_order(order)
    block = 1 << (2 * order)
    hop = block if hop is None else int(hop)
    if hop <= 0:
        raise ValueError(f"hop must be positive, got {hop}")
    return order, block, hop


@numba.njit(cache=True, nogil=True)
def hilbert_map_kernel(order):
    """Pixel of every point of the order-``order`` curve, by bit manipulation.

    Point ``d`` is read two bits at a time from the least significant end; each pair picks a quadrant
    of the current sub-square, and the coordinates found so far are rotated or mirrored into it.

    Returns
    -------
    ys, xs : int64 arrays of length 4**order
    """
    n = 1 << (2 * order)
    ys = np.empty(n, np.int64)
    xs = np.empty(n, np.int64)
    for d in range(n):
        x = 0
        y = 0
        t = d
        s = 1
        for _ in range(order):
            qx = (t >> 1) & 1  # quadrant column: 0 for quadrants 0, 1; 1 for quadrants 2, 3
            qy = (t ^ qx) & 1  # quadrant row: 0 for quadrants 0, 3; 1 for quadrants 1, 2
            if qy == 0:
                if qx == 1:  # quadrant 3: mirror on the anti-diagonal
                    x, y = s - 1 - y, s - 1 - x
                else:  # quadrant 0: mirror on the diagonal
                    x, y = y, x
            x += s * qx
            y += s * qy
            t >>= 2
            s <<= 1
        ys[d] = y
        xs[d] = x
    return ys, xs


def hilbert_map_reference(order: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's recursive construction of the curve (pure Python), the twin of the kernel.

    The order-k curve is four copies of the order-(k−1) curve: the first mirrored on the diagonal in
    the top-left quadrant, two translated copies in the bottom-left and bottom-right quadrants, and the
    last mirrored on the anti-diagonal in the top-right quadrant.
    """
    order = _check_order(order)

    def points(k: int) -> list[tuple[int, int]]:  # (x, y) = (column, row)
        if k == 0:
            return [(0, 0)]
        h = 1 << (k - 1)
        prev = points(k - 1)
        return (
            [(y, x) for x, y in prev]
            + [(x, y + h) for x, y in prev]
            + [(x + h, y + h) for x, y in prev]
            + [(2 * h - 1 - y, h - 1 - x) for x, y in prev]
        )

    pts = points(order)
    xs = np.array([p[0] for p in pts], dtype=np.int64)
    ys = np.array([p[1] for p in pts], dtype=np.int64)
    return ys, xs


@functools.lru_cache(maxsize=None)
def hilbert_index_map(order: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs): the pixel (row, column) of point d = 0 .. 4**order − 1 of the curve (cached, read-only).

    Parameters
    ----------
    order : int
        The curve's order k; the image is 2**k × 2**k (k = 8: 256 × 256).
    """
    ys, xs = hilbert_map_kernel(_check_order(order))
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


@functools.lru_cache(maxsize=None)
def hilbert_flat_index(order: int) -> np.ndarray:
    """Flat pixel index ``ys * side + xs`` of every point d (uint32; cached, read-only)."""
    ys, xs = hilbert_index_map(order)
    flat = (ys * (1 << order) + xs).astype(np.uint32)  # unsigned: no negative-index handling in kernels
    flat.flags.writeable = False
    return flat


@functools.lru_cache(maxsize=None)
def hilbert_inverse_index(order: int) -> np.ndarray:
    """Curve position d of every flat pixel index (the inverse permutation; uint32; cached, read-only)."""
    flat = hilbert_flat_index(order)
    inv = np.empty_like(flat)
    inv[flat] = np.arange(flat.size, dtype=np.uint32)
    inv.flags.writeable = False
    return inv


# -- encode / decode --------------------------------------------------------------------------------


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the CPU to pull ``array[index]`` into cache (``llvm.prefetch``; no effect on results)."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array_struct = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(
            context, builder, array_type, array_struct, [args[1]], wraparound=False, boundscheck=False
        )
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        # read, highest temporal locality, data cache
        builder.call(fn, [builder.bitcast(pointer, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(cache=True, nogil=True)
def _gather_rows(src, index, dst):
    # dst[i, j] = src[i, index[j]]: writes are sequential, reads follow the permutation. Reads that jump
    # around a row defeat the hardware prefetcher, so while gathering row i the loop prefetches row
    # i + 1, one cache line (64 bytes) at a time; without it a batch that is not in cache runs ~2× slower.
    line = max(1, 64 // src.itemsize)
    n = index.size
    rows = src.shape[0]
    for i in range(rows):
        s = src[i]
        o = dst[i]
        ahead = src[i + 1] if i + 1 < rows else s
        for j in range(n):
            if (j & (line - 1)) == 0:  # line is a power of two
                _prefetch(ahead, j)
            o[j] = s[index[j]]


@numba.njit(cache=True, nogil=True)
def hilbert_encode_kernel(samples, inverse_index, out):
    """Lay blocks on the curve: ``out[i, p] = samples[i, inverse_index[p]]`` (flat images).

    ``samples`` and ``out`` are (N, 4**k) arrays of one dtype; ``inverse_index`` maps a flat pixel
    index to its position on the curve (:func:`hilbert_inverse_index`).
    """
    _gather_rows(samples, inverse_index, out)


@numba.njit(cache=True, nogil=True)
def hilbert_decode_kernel(images, flat_index, out):
    """Read blocks off the curve: ``out[i, d] = images[i, flat_index[d]]`` (flat images).

    ``flat_index`` maps a curve position to its flat pixel index (:func:`hilbert_flat_index`).
    """
    _gather_rows(images, flat_index, out)


_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _run(kernel, src: np.ndarray, index: np.ndarray, n: int, out: np.ndarray | None, out_shape) -> np.ndarray:
    src = np.ascontiguousarray(src)
    if out is None:
        out = np.empty(out_shape, dtype=src.dtype)
    elif out.shape != tuple(out_shape) or out.dtype != src.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {src.dtype} array of shape {tuple(out_shape)}")
    elif np.may_share_memory(out, src):
        raise ValueError("out must not overlap the input")
    if src.dtype.kind in "biuf" and src.dtype.itemsize in _UINT_OF_SIZE:
        # the kernels only move bits: view as unsigned integers of the same size (numba has no float16)
        bits = _UINT_OF_SIZE[src.dtype.itemsize]
        kernel(src.view(bits).reshape(-1, n), index, out.view(bits).reshape(-1, n))
    else:  # complex and other dtypes: NumPy's gather
        out.reshape(-1, n)[...] = src.reshape(-1, n)[:, index]
    return out


def to_hilbert(samples: np.ndarray, order: int = 8, *, out: np.ndarray | None = None) -> np.ndarray:
    """Lay 1-D blocks of 4**order samples along the Hilbert curve.

    Parameters
    ----------
    samples : array, shape (..., 4**order)
        One block, or a batch (N, 4**order); any dtype, preserved bit for bit.
    order : int
        Curve order k (8: 65,536 samples → 256 × 256).
    out : array, optional
        Preallocated C-contiguous result of shape (..., 2**order, 2**order) and the same dtype, not
        overlapping ``samples``.

    Returns
    -------
    array, shape (..., 2**order, 2**order)
    """
    order = _check_order(order)
    samples = np.asarray(samples)
    n, side = 1 << (2 * order), 1 << order
    if samples.ndim < 1 or samples.shape[-1] != n:
        raise ValueError(f"expected a trailing axis of {n} samples for order {order}, got {samples.shape}")
    shape = samples.shape[:-1] + (side, side)
    return _run(hilbert_encode_kernel, samples, hilbert_inverse_index(order), n, out, shape)


def from_hilbert(image: np.ndarray, order: int = 8, *, out: np.ndarray | None = None) -> np.ndarray:
    """Read 1-D blocks back off the Hilbert curve; the exact inverse of :func:`to_hilbert`.

    Parameters
    ----------
    image : array, shape (..., 2**order, 2**order)
    order : int
    out : array, optional
        Preallocated C-contiguous result of shape (..., 4**order) and the same dtype, not overlapping
        ``image``.

    Returns
    -------
    array, shape (..., 4**order)
    """
    order = _check_order(order)
    image = np.asarray(image)
    n, side = 1 << (2 * order), 1 << order
    if image.ndim < 2 or image.shape[-2:] != (side, side):
        raise ValueError(f"expected trailing axes ({side}, {side}) for order {order}, got {image.shape}")
    return _run(hilbert_decode_kernel, image, hilbert_flat_index(order), n, out, image.shape[:-2] + (n,))


# -- audio ↔ images ---------------------------------------------------------------------------------


class PixelScale(NamedTuple):
    """How audio became pixels: ``pixel = (clip(x, lo, hi) − lo) / (hi − lo)``."""

    lo: float
    hi: float
    n_clipped: int  # samples outside [lo, hi] before clipping


AUDIO_RANGE = (-1.0, 1.0)


def audio_to_images(
    audio: np.ndarray, order: int = 8, hop: int | None = None, *, dtype=np.float32
) -> tuple[np.ndarray, PixelScale]:
    """Cut a mono signal into blocks of 4**order samples and lay each on the Hilbert curve.

    Parameters
    ----------
    audio : 1-D float array
        Mono signal, nominally in [−1, 1]; values outside are clipped (and counted).
    order : int
        Curve order k; a block is 4**k samples (k = 8: 65,536, ≈ 1.49 s at 44.1 kHz).
    hop : int, optional
        Samples between block starts (default: one block, i.e. no overlap). Blocks continue until the
        signal is covered; the last one is zero-padded (zero audio, pixel 0.5).
    dtype : numpy dtype
        Pixel dtype (float32 by default; float16 halves the size).

    Returns
    -------
    images : array, shape (n_blocks, 2**k, 2**k)
        Pixels ``(x + 1) / 2`` in [0, 1]. An empty signal gives zero blocks.
    scale : PixelScale
        The mapping used (lo = −1, hi = 1) and how many samples were clipped.
    """
    order, block, hop = _block_and_hop(order, hop)
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    lo, hi = AUDIO_RANGE
    n_clipped = int(np.count_nonzero((audio < lo) | (audio > hi)))
    if audio.size == 0:
        side = 1 << order
        return np.zeros((0, side, side), dtype=dtype), PixelScale(lo, hi, 0)
    n_blocks = 1 + -(-max(0, audio.size - block) // hop)  # ceil division
    padded = np.zeros((n_blocks - 1) * hop + block, dtype=np.float32)
    padded[: audio.size] = audio
    np.clip(padded, lo, hi, out=padded)
    padded -= lo
    padded *= 1.0 / (hi - lo)
    if padded.dtype != np.dtype(dtype):
        padded = padded.astype(dtype)
    if hop == block:
        frames = padded.reshape(n_blocks, block)
    else:
        frames = np.lib.stride_tricks.sliding_window_view(padded, block)[::hop]
    return to_hilbert(frames, order), PixelScale(lo, hi, n_clipped)


def images_to_audio(
    images: np.ndarray, order: int = 8, *, hop: int | None = None, length: int | None = None
) -> np.ndarray:
    """Invert :func:`audio_to_images`: read the blocks off the curve, join them, map back to [−1, 1].

    Parameters
    ----------
    images : array, shape (n_blocks, 2**k, 2**k)
        Pixels in [0, 1], any float dtype.
    order : int
    hop : int, optional
        The hop the images were made with (default: one block, plain concatenation). Overlapping
        blocks are averaged where they overlap.
    length : int, optional
        Trim the result to this many samples (the original signal's length).

    Returns
    -------
    float32 array: ``2 p − 1`` for every pixel p along the curve.
    """
    order, block, hop = _block_and_hop(order, hop)
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (n_blocks, side, side), got shape {images.shape}")
    lo, hi = AUDIO_RANGE
    blocks = from_hilbert(images, order).astype(np.float32, copy=False)  # (N, 4**k)
    n_blocks = blocks.shape[0]
    if hop == block:
        audio = blocks.reshape(-1)
    else:
        total = (n_blocks - 1) * hop + block if n_blocks else 0
        acc = np.zeros(total, dtype=np.float64)
        count = np.zeros(total, dtype=np.int64)
        for i in range(n_blocks):
            acc[i * hop : i * hop + block] += blocks[i]
            count[i * hop : i * hop + block] += 1
        mid = (0.0 - lo) / (hi - lo)  # pixel of silence, for gaps when hop > block
        audio = np.where(count > 0, acc / np.maximum(count, 1), mid).astype(np.float32)
    audio = audio * np.float32(hi - lo) + np.float32(lo)
    if length is not None:
        audio = audio[: int(length)]
    return audio
