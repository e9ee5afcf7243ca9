"""The vector byte fills of ``tasks.kernels.simd`` against plain NumPy slicing."""

from __future__ import annotations

import numba
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.kernels.simd import BLOCK, blend_block, fill_run, store_block

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@numba.njit(cache=True)
def _blend(arr, block, lo, n, first, rest):
    blend_block(np.uint64(arr.ctypes.data), np.uint64(block), np.uint64(lo), np.uint64(n), np.uint8(first),
                np.uint8(rest))


@numba.njit(cache=True)
def _store(arr, block, lo, n, first, rest):
    store_block(np.uint64(arr.ctypes.data), np.uint64(block), np.uint64(lo), np.uint64(n), np.uint8(first),
                np.uint8(rest))


@numba.njit(cache=True)
def _fill(arr, row0, row_len, a, b, first, rest):
    fill_run(np.uint64(arr.ctypes.data), np.uint64(row0), np.uint64(row_len), np.uint64(a), np.uint64(b),
             np.uint8(first), np.uint8(rest))


@st.composite
def block_case(draw):
    size = draw(st.integers(BLOCK, 3 * BLOCK))
    block = draw(st.integers(0, size - BLOCK))
    lo = draw(st.integers(0, BLOCK - 1))
    n = draw(st.integers(1, BLOCK - lo))
    seed = draw(st.integers(0, 2**32 - 1))
    first, rest = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    return size, block, lo, n, seed, first, rest


@SETTINGS
@given(case=block_case())
def test_blend_block_writes_the_run_and_keeps_every_other_byte(case):
    size, block, lo, n, seed, first, rest = case
    arr = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    want = arr.copy()
    want[block + lo] = first
    want[block + lo + 1 : block + lo + n] = rest
    _blend(arr, block, lo, n, first, rest)
    assert np.array_equal(arr, want)


@SETTINGS
@given(case=block_case())
def test_store_block_writes_the_run_and_zeros_the_rest_of_its_block_only(case):
    size, block, lo, n, seed, first, rest = case
    arr = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    want = arr.copy()
    want[block : block + BLOCK] = 0
    want[block + lo] = first
    want[block + lo + 1 : block + lo + n] = rest
    _store(arr, block, lo, n, first, rest)
    assert np.array_equal(arr, want)


@SETTINGS
@given(row_len=st.integers(1, 3 * BLOCK), pad=st.integers(0, 5), data=st.data())
def test_fill_run_touches_only_its_run_inside_its_row(row_len, pad, data):
    """Everything outside ``a .. b-1`` is left as it was, the bytes of the row around the run included
    (the vector path reads and rewrites them; the caller may rely on nothing else being written)."""
    a = data.draw(st.integers(0, row_len - 1))
    b = data.draw(st.integers(a + 1, row_len))
    first, rest = data.draw(st.integers(0, 255)), data.draw(st.integers(0, 255))
    seed = data.draw(st.integers(0, 2**32 - 1))
    arr = np.random.default_rng(seed).integers(0, 256, pad + row_len + pad, dtype=np.uint8)
    want = arr.copy()
    want[pad + a] = first
    want[pad + a + 1 : pad + b] = rest
    _fill(arr, pad, row_len, pad + a, pad + b, first, rest)
    assert np.array_equal(arr, want)


def test_fill_run_reads_nothing_past_the_end_of_its_row():
    """A short run at the very end of an array (the last row of the last window) reads nothing past it:
    the block slides back to end at the row's end. The array here ends a page whose next page is
    protected, so a read past the end is a segmentation fault, not a wrong byte."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    base = libc.mmap(None, 2 * page, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert base not in (None, ctypes.c_void_p(-1).value)
    try:
        assert libc.mprotect(base + page, page, 0) == 0  # PROT_NONE
        arr = np.ctypeslib.as_array((ctypes.c_uint8 * page).from_address(base))
        arr[:] = 7
        _fill(arr, page - 40, 40, page - 3, page, 125, 255)
        _fill(arr, page - 40, 40, page - 40, page - 30, 1, 2)
        assert arr[page - 3 :].tolist() == [125, 255, 255]
        assert arr[page - 40 : page - 30].tolist() == [1] + [2] * 9
        assert np.all(arr[: page - 40] == 7) and np.all(arr[page - 30 : page - 3] == 7)
    finally:
        libc.munmap(base, 2 * page)
