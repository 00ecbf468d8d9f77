"""Q8_K64 (ik_llama.cpp type 136): the activation format of the ternary
IQ1_BN and IQ2_BN dot products; never stored in files. 8-bit quants in
four *lanes* per row, each lane with one float32 scale: element j belongs
to lane ``L = (j % 16) // 4`` (elements 4L .. 4L+3 of every 16), the
layout of a 128-bit register of int32 sums that ik_llama.cpp's dot
products keep.

Row (``row_meta_size`` = 32)::

    offset 0    d[4]     float32   lane scales
    offset 16   s[4]     float32   s[L] = d[L] * (float)(sum of the row's quants in lane L)
    then n/64 blocks of 64 bytes:
    offset 0    qs[64]   int8      element j = d[(j % 16) // 4] * qs[j]

ik_llama.cpp declares ``block_q8_K64 {float d; int8_t qs[64];}`` (68 bytes
for 64 elements), but that struct only sizes the buffer: its
``quantize_row_q8_K64`` writes the 32-byte header and the n quants, 32 + n
of the n/64*68 bytes a row is given (hence its ``k >= 512``: the header
must fit in the 4 spare bytes per block), and its dot products read exactly
those. The spec states the bytes that are written: a Q8_K64 row here is
32 + n bytes for any n that is a multiple of 64; ik_llama.cpp's row is the
same bytes followed by n/16 - 32 unused ones.

Quantize (``quantize_row_q8_K64_ref``, the branch every x86 build of
ik_llama.cpp compiles, ``__AVX__``)::

    amax_L = max |x_j| over lane L of the row      (maxps from 0)
    d[L]   = amax_L / 127                           (float32)
    id_L   = d[L] > 0 ? 1/d[L] : 0
    qs_j   = cvtps2dq(roundps_nearest(id_L * x_j)), saturated to int8 (packssdw, packsswb)
    s[L]   = d[L] * (float)(sum of qs_j in lane L)  (int32 sum)

The rounding is to nearest, ties to even (as ``nearest_int``). A lane whose
``amax`` is below about 3.7e-37 has a finite ``d[L]`` whose reciprocal
overflows: ``id_L*x`` is +-inf (NaN for x = 0), which ``cvtps2dq`` turns
into INT_MIN and the packs saturate to -128, so every quant of that lane is
-128 (the scalar ``#else`` branch, which no x86 build uses, would store 0).
Input must be finite (NaN or inf is refused before quantizing).

Dequantize: ``d[(j % 16) // 4] * qs[j]`` (ik_llama.cpp has no ``to_float``
for it; this is what the dot products read). Q8_K64 has no dot product of
its own. Validation: the 8 header floats must be finite.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_q8_K64_ref``; ``ggml/src/iqk/iqk_gemm_1bit.cpp`` ``Q8_K64``;
``ggml/src/ggml-common.h`` ``block_q8_K64`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._numerics import F32, canonical_dot, nearest_int

QK = 64
#: The lanes of a row and the consecutive elements of each 16 that a lane takes.
LANES = 4
LANE_WIDTH = 4
#: Element j's lane, for the j of one block (64 is a multiple of 16).
LANE_OF = (np.arange(QK) % 16) // LANE_WIDTH
#: Scales overflowing on decode, the reciprocal of tiny lane scales: IEEE results, no warnings.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

FORMAT = BlockFormat(
    name="q8_k64", origin="ik_llama", type_id=136, block_size=QK,
    fields=(Field("qs", "i8", QK, "quants: element j = d[(j % 16) // 4] * qs[j], d in the row header"),),
    vec_dot_format=None,
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_q8_K64_ref; "
             "ggml/src/iqk/iqk_gemm_1bit.cpp Q8_K64; ggml/src/ggml-common.h block_q8_K64 @ 8337e4cd",
    row_meta_size=8 * 4,
)


def header(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows' lane scales ``d`` and lane sums ``s``, float32 ``(nrows, 4)`` each."""
    h = np.ascontiguousarray(np.asarray(q, dtype=np.uint8)[:, :FORMAT.row_meta_size]).view(F32)
    return h[:, :LANES], h[:, LANES:]


def lanes(qs: np.ndarray) -> np.ndarray:
    """Quants ``(nrows, n)`` -> ``(nrows, n/16, 4 lanes, 4)``: axis 2 is the lane."""
    return qs.reshape(qs.shape[0], -1, LANES, LANE_WIDTH)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; there is no importance matrix for activations."""
    nrows, n = x.shape
    xl = lanes(x)
    with np.errstate(**IEEE):
        amax = np.abs(xl).max(axis=(1, 3)).astype(F32)              # (nrows, 4)
        d = (amax / F32(127)).astype(F32)
        inv = np.where(d > 0, F32(1) / d, F32(0)).astype(F32)
        v = inv[:, None, :, None] * xl
        finite = np.isfinite(v)
        q = np.where(finite, nearest_int(np.where(finite, v, F32(0))), -128)
        q = np.clip(q, -128, 127).astype(np.int32)
        sums = q.sum(axis=(1, 3), dtype=np.int64).astype(np.int32)
        s = (d * sums.astype(F32)).astype(F32)
    out = np.empty((nrows, FORMAT.row_bytes(n)), dtype=np.uint8)
    out[:, :16] = np.ascontiguousarray(d).view(np.uint8)
    out[:, 16:32] = np.ascontiguousarray(s).view(np.uint8)
    out[:, 32:] = q.reshape(nrows, n).astype(np.int8).view(np.uint8)
    return out


def dequantize(q: np.ndarray) -> np.ndarray:
    q = np.ascontiguousarray(q, dtype=np.uint8)
    d, _ = header(q)
    qs = q[:, FORMAT.row_meta_size:].view(np.int8).astype(F32)
    with np.errstate(**IEEE):
        return (d[:, None, :, None] * lanes(qs)).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    raise NotImplementedError("q8_k64 is an activation format; it has no dot product of its own")


def lane_dot(d_row: np.ndarray, values: np.ndarray, aq: np.ndarray) -> np.ndarray:
    """The dot product of weight rows with one Q8_K64 row (IQ1_BN, IQ2_BN):
    ``d_row`` the rows' float32 scales ``(nrows,)``, ``values`` their
    integer values ``(nrows, nblocks, 64)``. Per row, the row scale meets
    each lane scale once, ``e_L = d_row * a.d[L]``; per 64-element block i
    and lane L, ``isum_L`` = the exact sum of value * qs over the block's 16
    elements in lane L; the block's contribution is
    ``((e_0*isum_0 + e_1*isum_1) + e_2*isum_2) + e_3*isum_3`` (each product
    of ``e_L`` and ``(float)isum_L`` rounded once, the sum left to right);
    then the canonical reduction over the blocks. The header's ``s``
    (lane sums) is not read: the integer sums are exact."""
    nrows, nblocks, _ = values.shape
    a = np.ascontiguousarray(aq, dtype=np.uint8)[None, :]
    d, _ = header(a)
    qs = a[:, FORMAT.row_meta_size:].view(np.int8).astype(np.int64).reshape(1, nblocks, QK)
    prod = (values.astype(np.int64) * qs).reshape(nrows, nblocks, QK // 16, LANES, LANE_WIDTH)
    isum = prod.sum(axis=(2, 4)).astype(F32)                                   # (nrows, nblocks, 4)
    with np.errstate(**IEEE):
        e = np.asarray(d_row, dtype=F32)[:, None] * d                          # (nrows, 4)
        t = e[:, None, :] * isum
        contrib = ((t[..., 0] + t[..., 1]) + t[..., 2]) + t[..., 3]
    return canonical_dot(contrib)


def validate(q: np.ndarray) -> list[Invalid]:
    """Rows whose header floats (lane scales, lane sums) are inf or NaN (block index -1: the row header)."""
    d, s = header(q)
    found = []
    for name, values in (("d", d), ("s", s)):
        bits = np.ascontiguousarray(values).view(np.uint32)
        for row, lane in zip(*np.nonzero((bits & 0x7F800000) == 0x7F800000)):
            b = int(bits[row, lane])
            found.append(Invalid(int(row), -1, f"{name}[{lane}]", b, "NaN" if b & 0x7FFFFF else "inf"))
    found.sort(key=lambda v: (v.row, v.field))
    return found
