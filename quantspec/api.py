"""The public operations: argument checks, then the chosen implementation.

Every check happens here, before any implementation runs, so the spec
modules and the kernels only ever see C-contiguous, aligned arrays of the
right dtype and shape.
"""

from __future__ import annotations

import sys

import numpy as np

from quantspec import dispatch, registry
from quantspec.errors import (
    DtypeError,
    ImatrixError,
    NonFiniteInputError,
    OutArrayError,
    ShapeError,
    SizeOverflowError,
    UnsupportedOperationError,
    describe,
)
from quantspec.reference import Invalid

_MAX_BYTES = sys.maxsize  # sizes are Python ints, checked against the address space
_UINT8, _FLOAT32 = np.dtype(np.uint8), np.dtype(np.float32)


def _checked_array(fmt: str, what: str, arr, dtype: np.dtype) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    if arr.dtype is not dtype and arr.dtype != dtype:
        raise DtypeError(f"{fmt}: {what} must be {np.dtype(dtype).name}, got {describe(arr)}")
    if arr.ndim not in (1, 2):
        raise ShapeError(f"{fmt}: {what} must be 1-D (one row) or 2-D (rows), got {describe(arr)}")
    return arr


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """Strided views and misaligned buffers are copied, never misread (after
    the size checks, so that an impossible size is reported, not allocated)."""
    flags = arr.flags
    if not (flags.c_contiguous and flags.aligned):
        arr = np.ascontiguousarray(arr)
    return arr


def _check_size(fmt: str, *factors: int) -> None:
    total = 1
    for f in factors:
        total *= int(f)
    if total > _MAX_BYTES:
        raise SizeOverflowError(f"{fmt}: {' x '.join(map(str, factors))} bytes does not fit in memory")


def _check_out(fmt: str, out, shape: tuple[int, ...], dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise OutArrayError(f"{fmt}: out must be a numpy array of dtype {np.dtype(dtype).name} "
                            f"and shape {shape}, got {describe(out)}")
    if out.dtype != dtype or out.shape != shape:
        raise OutArrayError(f"{fmt}: out must have dtype {np.dtype(dtype).name} and shape {shape}, "
                            f"got {describe(out)}")
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise OutArrayError(f"{fmt}: out must be C-contiguous, aligned and writeable")
    return out


def _check_threads(threads) -> int:
    if threads is None:
        return 1
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _check_imatrix(fmt: str, imatrix, n_per_row: int) -> np.ndarray | None:
    spec = registry.spec(fmt)
    if imatrix is None:
        if spec.imatrix == "required":
            raise ImatrixError(f"{fmt}: an importance matrix of {n_per_row} float32 weights is required")
        return None
    im = np.asarray(imatrix)
    if im.dtype != np.float32:
        raise DtypeError(f"{fmt}: imatrix must be float32, got {describe(im)}")
    if im.shape != (n_per_row,):
        raise ImatrixError(f"{fmt}: imatrix must have shape ({n_per_row},) (one weight per column), "
                           f"got {describe(im)}")
    if not np.isfinite(im).all():
        raise ImatrixError(f"{fmt}: imatrix weights must be finite; column {int(np.argmin(np.isfinite(im)))} is not")
    if (im < 0).any():
        raise ImatrixError(f"{fmt}: imatrix weights must be >= 0; column {int(np.argmax(im < 0))} is "
                           f"{float(im[np.argmax(im < 0)])!r}")
    return np.ascontiguousarray(im)


def _raise_nonfinite(fmt: str, x2: np.ndarray, block: int) -> None:
    spec = registry.spec(fmt)
    n_per_row = x2.shape[1]
    per_row = n_per_row // spec.block_size
    row, blk = divmod(int(block), per_row)
    cols = slice(blk * spec.block_size, (blk + 1) * spec.block_size)
    bad = np.flatnonzero(~np.isfinite(x2[row, cols]))
    col = blk * spec.block_size + (int(bad[0]) if bad.size else 0)
    raise NonFiniteInputError(
        f"{fmt}: input must be finite (the format cannot store NaN or inf); "
        f"row {row} column {col} (block {blk}) is {float(x2[row, col])!r}")


def _raise_bad_block(name: str, x2: np.ndarray, im, block: int) -> None:
    """A kernel reported ``block``: non-finite input, or a finite block the
    spec refuses (IQ1_S/IQ1_M searches ending in a NaN scale), whose error is
    then the spec's (``quantize_refusal``). Non-finite input anywhere comes
    first, as on the reference path."""
    spec = registry.spec(name)
    block_size = spec.block_size
    finite = np.isfinite(x2).reshape(-1, block_size).all(axis=1)
    if not finite.all():
        if spec.nonfinite_input == "reject":
            _raise_nonfinite(name, x2, int(np.argmin(finite)))
        return
    refusal = getattr(registry.module(name), "quantize_refusal", None)
    error = refusal(x2, im, block) if refusal else None
    raise error or NonFiniteInputError(f"{name}: the quantizer refused block {block} of finite input")


def quantize(fmt, x, imatrix=None, threads=None, out=None) -> np.ndarray:
    """Quantize float32 rows: ``x`` of shape ``(n,)`` or ``(nrows, n)`` -> uint8
    ``(row_bytes,)`` or ``(nrows, row_bytes)``, bytes exactly as ggml writes
    them (``ggml_quantize_chunk``). ``imatrix``: ``n`` float32 column weights."""
    name = registry.resolve(fmt)
    spec = registry.spec(name)
    threads = _check_threads(threads)
    x = _checked_array(name, "x", x, _FLOAT32)
    one_row = x.ndim == 1
    x2 = x.reshape(1, -1) if one_row else x
    nrows, n = x2.shape
    if n == 0 or n % spec.block_size:
        raise ShapeError(f"{name}: rows must hold a positive multiple of {spec.block_size} elements "
                         f"(its block size), got {n}")
    row_bytes = spec.row_bytes(n)
    _check_size(name, nrows, row_bytes)
    x2 = _contiguous(x2)
    im = _check_imatrix(name, imatrix, n)
    shape = (row_bytes,) if one_row else (nrows, row_bytes)
    impl = dispatch.implementation(name, "quantize")
    dest = _check_out(name, out, shape, np.uint8) if (out is not None or impl.isa != "reference") else None
    if impl.isa == "reference":
        if spec.nonfinite_input == "reject" and not np.isfinite(x2).all():
            bad_block = int(np.argmax(~np.isfinite(x2).reshape(-1, spec.block_size).all(axis=1)))
            _raise_nonfinite(name, x2, bad_block)
        result = impl.quantize(x2, im)
        if out is None:
            return result.reshape(shape)
        dest.reshape(nrows, row_bytes)[...] = result
    else:
        bad_block = impl.quantize(x2, dest.reshape(nrows, row_bytes), im, threads)
        if bad_block >= 0:
            _raise_bad_block(name, x2, im, bad_block)
    return dest


def _byte_rows(name: str, q, spec=None) -> tuple[np.ndarray, bool, int]:
    if spec is None:
        spec = registry.spec(name)
    q = _checked_array(name, "q", q, _UINT8)
    one_row = q.ndim == 1
    q2 = q.reshape(1, -1) if one_row else q
    row_bytes = q2.shape[1]
    body = row_bytes - spec.row_meta_size
    if row_bytes == 0 or body <= 0 or body % spec.type_size:
        raise ShapeError(
            f"{name}: a row must be {spec.row_meta_size} + k*{spec.type_size} bytes "
            f"(k blocks of {spec.block_size} elements, k >= 1), got {row_bytes} bytes")
    n = body // spec.type_size * spec.block_size
    if q2.shape[0] * n > _MAX_BYTES // 4:
        _check_size(name, q2.shape[0], n, 4)  # the float32 rows it decodes to
    return _contiguous(q2), one_row, n


def _row_layout(spec) -> tuple[int, int, int]:
    """(row_meta_size, type_size, block_size): what ``_plain_rows_elements`` reads, as plain ints."""
    return spec.row_meta_size, spec.type_size, spec.block_size


def _plain_rows_elements(q, ndim: int, layout: tuple[int, int, int]) -> int | None:
    """Elements per row of ``q`` when it is the plain case that ``_byte_rows``
    accepts as it is (a C-contiguous uint8 ndarray of ``ndim`` dimensions,
    at least one row, holding whole rows of the ``_row_layout``); None
    otherwise. uint8 data is always aligned."""
    if type(q) is not np.ndarray or q.dtype is not _UINT8 or q.ndim != ndim or not q.flags.c_contiguous:
        return None
    shape = q.shape
    meta, type_size, block_size = layout
    body = shape[-1] - meta
    if body <= 0 or body % type_size or not shape[0]:
        return None
    return body // type_size * block_size


def dequantize(fmt, q, threads=None, out=None) -> np.ndarray:
    """Dequantize byte rows: uint8 ``(row_bytes,)`` or ``(nrows, row_bytes)`` ->
    float32 ``(n,)`` or ``(nrows, n)``."""
    name = registry.resolve(fmt)
    threads = _check_threads(threads)
    q2, one_row, n = _byte_rows(name, q)
    nrows = q2.shape[0]
    shape = (n,) if one_row else (nrows, n)
    impl = dispatch.implementation(name, "dequantize")
    if impl.isa == "reference" and out is None:
        return impl.dequantize(q2).reshape(shape)  # the spec allocates its result: no second copy
    dest = _check_out(name, out, shape, np.float32)
    if impl.isa == "reference":
        dest.reshape(nrows, n)[...] = impl.dequantize(q2)
    else:
        impl.dequantize(q2, dest.reshape(nrows, n), threads)
    return dest


_VEC_DOT_FORMATS: dict[str, tuple] = {}


def _vec_dot_formats(name: str) -> tuple:
    """The weight format's spec, its activation format and that one's spec,
    looked up once per format (vec_dot is called once per mat-vec)."""
    spec = registry.spec(name)
    if spec.vec_dot_format is None:
        raise UnsupportedOperationError(
            f"{name}: has no dot product here (an activation format, or one whose activation format "
            f"quantspec does not define)")
    act_spec = registry.spec(spec.vec_dot_format)
    facts = _VEC_DOT_FORMATS[name] = (spec, spec.vec_dot_format, act_spec, _row_layout(spec), _row_layout(act_spec))
    return facts


def vec_dot(fmt, wq, aq, threads=None) -> np.ndarray:
    """Weight rows in ``fmt`` times one activation row in the format's
    ``vec_dot_format``: float32 ``(nrows,)`` (a mat-vec), in the canonical
    16-lane order."""
    name = registry.resolve(fmt)
    spec, act, act_spec, layout, act_layout = _VEC_DOT_FORMATS.get(name) or _vec_dot_formats(name)
    if threads is None or (type(threads) is int and threads == 1):
        # the common call (a mat-vec inside a model): a kernel checks it in C; anything else, checked below
        impl = dispatch.implementation(name, "vec_dot")
        if impl.isa != "reference":
            result = impl.ext.vec_dot_plain(name, wq, aq, layout, act_layout)
            if result is not None:
                return result
        else:
            n = _plain_rows_elements(wq, 2, layout)
            a = aq[0] if type(aq) is np.ndarray and aq.ndim == 2 and aq.shape[0] == 1 else aq  # one row, as (1, k)
            if n is not None and _plain_rows_elements(a, 1, act_layout) == n:
                return impl.vec_dot(wq, a).astype(np.float32, copy=False)
    threads = _check_threads(threads)
    w2, _, n = _byte_rows(name, wq, spec)
    a2, _, n_a = _byte_rows(act, aq, act_spec)
    if a2.shape[0] != 1:
        raise ShapeError(f"{name}: the activation must be one {act} row, got {a2.shape[0]} rows")
    if n_a != n:
        raise ShapeError(f"{name}: the activation row must hold {n} elements like the weight rows "
                         f"({registry.spec(act).row_bytes(n)} bytes of {act}), got {n_a} elements")
    impl = dispatch.implementation(name, "vec_dot")
    if impl.isa == "reference":
        result = impl.vec_dot(w2, a2[0])
    else:
        result = impl.vec_dot(w2, a2[0], threads, n)
    return result.astype(np.float32, copy=False)


def validate(fmt, q) -> list[Invalid]:
    """Every block whose scale fields are not finite (as ggml_validate_row_data),
    with its row, block index and bits; an empty list means valid."""
    name = registry.resolve(fmt)
    q2, _, _ = _byte_rows(name, q)
    return registry.module(name).validate(q2)
