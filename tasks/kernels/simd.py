"""Byte-span fills for the rendering kernels, as 32-byte vector stores.

Piano-roll notes are short runs of equal bytes (at 0.05 s per column, 80 % of the notes of the
MAESTRO-sized generated bench corpus are 3 to 13 columns long). Written byte by byte, each run is a loop
whose trip count the branch predictor cannot guess, or a ``memset`` call; here a run of up to ``BLOCK``
bytes is two lane compares, two selects and one unaligned 32-byte store, with no branch on its length:
:func:`store_block` writes the block's other bytes as zeros, :func:`blend_block` reads the block first
and keeps them.

The functions take the array's base address (``arr.ctypes.data``) and flat indices instead of the array:
a numba function that receives an array increments and decrements its reference count around every call
that is not inlined away, which costs more than the fill. The caller keeps the array alive and the
indices in bounds (nothing here checks them).

:func:`fill_run` never reads or writes outside the row it is given (the 32-byte block is slid back from
the row's end when the run is near it), so two threads may fill different rows of one array at once.
Numba only: nothing here knows about notes.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["BLOCK", "blend_block", "store_block", "fill_run"]

BLOCK = 32  # bytes in one vector block; AVX2 does it in one register, narrower targets in two or more


def _block_codegen(keep: bool):
    """LLVM for :func:`blend_block` (``keep``: the lanes outside the run keep their bytes, read first)
    and :func:`store_block` (they are written as zeros, nothing is read)."""

    def codegen(context, builder, signature, args):
        base_v, blk, lo_v, n_v, first_v, rest_v = args
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        vec = ir.VectorType(i8, BLOCK)
        zeros = ir.Constant(ir.VectorType(i32, BLOCK), [0] * BLOCK)
        undef = ir.Constant(vec, ir.Undefined)

        def word(value):  # an integer argument as i64 (addresses and indices are 64-bit here)
            return value if value.type.width == 64 else builder.zext(value, i64)

        def byte(value):  # an integer argument as its low byte
            return value if value.type.width == 8 else builder.trunc(value, i8)

        def splat(value):
            one = builder.insert_element(undef, value, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, undef, zeros)

        ptr = builder.inttoptr(builder.add(word(base_v), word(blk)), vec.as_pointer())
        old = builder.load(ptr, align=1) if keep else ir.Constant(vec, [0] * BLOCK)
        lanes = ir.Constant(vec, list(range(BLOCK)))
        rel = builder.sub(lanes, splat(byte(lo_v)))  # lane - lo, wrapping below lo
        inside = builder.icmp_unsigned("<", rel, splat(byte(n_v)))
        at_lo = builder.icmp_unsigned("==", rel, ir.Constant(vec, [0] * BLOCK))
        value = builder.select(inside, splat(byte(rest_v)), old)
        value = builder.select(at_lo, splat(byte(first_v)), value)
        builder.store(value, ptr, align=1)
        return context.get_dummy_value()

    return codegen


def _block_signature(args):
    if len(args) != 6 or not all(isinstance(t, types.Integer) for t in args):
        return None
    return types.void(*args)


@intrinsic
def blend_block(typingctx, base, block, lo, n, first, rest):
    """At address ``base + block``, over ``BLOCK`` bytes: byte ``lo`` = ``first``, bytes ``lo+1 ..
    lo+n-1`` = ``rest``, the others rewritten unchanged (``0 <= lo``, ``1 <= n``, ``lo + n <= BLOCK``)."""
    sig = _block_signature((base, block, lo, n, first, rest))
    return None if sig is None else (sig, _block_codegen(True))


@intrinsic
def store_block(typingctx, base, block, lo, n, first, rest):
    """As :func:`blend_block`, but the bytes outside the run are written as zeros (nothing is read):
    for a block whose other bytes are known to be zero."""
    sig = _block_signature((base, block, lo, n, first, rest))
    return None if sig is None else (sig, _block_codegen(False))


@numba.njit(cache=True, nogil=True)
def fill_run(base, row0, row_len, a, b, first, rest):
    """Bytes ``a`` = ``first`` and ``a+1 .. b-1`` = ``rest`` of the array at address ``base``, for flat
    indices ``row0 <= a < b <= row0 + row_len`` (all ``np.uint64``).

    Reads and writes only bytes ``row0 .. row0 + row_len - 1``. Runs of up to ``BLOCK`` bytes in rows of
    at least ``BLOCK`` bytes take the vector path, longer ones a byte loop.
    """
    n = b - a
    width = np.uint64(BLOCK)
    if n <= width and row_len >= width:
        end = row0 + row_len
        block = a if a + width <= end else end - width
        blend_block(base, block, a - block, n, np.uint8(first), np.uint8(rest))
        return
    ptr = numba.carray(_as_pointer(base), (b,))
    ptr[a] = first
    for k in range(a + np.uint64(1), b):
        ptr[k] = rest


@intrinsic
def _as_pointer(typingctx, addr):
    """A ``uint8*`` from an integer address."""
    if not isinstance(addr, types.Integer):
        return None
    sig = types.CPointer(types.uint8)(addr)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return sig, codegen
