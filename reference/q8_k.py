"""Q8_K (ggml type 15): the activation format of every K-quant's dot
product; never stored in files. 256 elements, a float32 scale, 8-bit quants
and the sums of each 16 quants.

Block (292 bytes)::

    offset 0     d          float32   scale
    offset 4     qs[256]    int8      element j = qs[j] * d
    offset 260   bsums[16]  int16     bsums[k] = sum of qs[16k .. 16k+15]

Quantize (``quantize_row_q8_K_ref``, the normative activation quantizer;
ggml's x86 CPU ``quantize_row_q8_K`` calls it too)::

    max  = the signed element of largest magnitude (first one on ties)
    if max == 0: d = 0, qs = 0, bsums = 0
    iscale = -127 / max             (float32)
    qs_j   = min(127, nearest_int(iscale * x_j))   (ties to even, stored as int8)
    bsums  = integer sums of the stored quants, 16 at a time
    d      = 1 / iscale             (float32, not rounded to fp16)

``iscale`` is negative: the element of largest magnitude becomes -127
times ``d`` with a negative ``d``. A ``max`` so small that ``-127/max``
overflows gives ``iscale = -inf`` and quants 0 (``nearest_int`` of an
infinity or NaN, stored as int8), with ``d = -0.0``.

All-zero super-blocks: ggml writes ``d = 0`` and zero quants but leaves
``bsums`` as they were in the destination buffer (the C ``continue``s
before computing them). The spec writes ``bsums = 0``, the sums of the zero
quants, so that every Q8_K block satisfies ``bsums[k] = sum(qs[16k..])``; the
dot products never see the difference (``d = 0`` multiplies them).

Dequantize (``dequantize_row_q8_K``): ``d * qs[j]``. Q8_K has no dot
product of its own.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q8_K_ref``,
``dequantize_row_q8_K`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid, nonfinite_f32
from ._kquants import QK_K
from ._numerics import F32, nearest_int, signed_absmax, wrap_int8

FORMAT = BlockFormat(
    name="q8_k", origin="ggml", type_id=15, block_size=QK_K,
    fields=(Field("d", "f32", 1, "scale (float32)"),
            Field("qs", "i8", QK_K, "quants: element j = qs[j] * d"),
            Field("bsums", "i16", QK_K // 16, "bsums[k] = sum of qs[16k .. 16k+15]")),
    vec_dot_format=None,
    upstream="ggml src/ggml-quants.c quantize_row_q8_K_ref, dequantize_row_q8_K @ d99724f2",
)


def scale_and_quants(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Super-blocks ``(..., 256)`` -> float32 ``d`` and the stored int8 quants (int32)."""
    amax, vmax = signed_absmax(xs)
    zero = amax == 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        iscale = F32(-127) / np.where(zero, F32(1), vmax)
        quants = wrap_int8(np.minimum(127, nearest_int(iscale[..., None] * xs)))
        d = F32(1) / iscale
    d = np.where(zero, F32(0), d).astype(F32)
    quants = np.where(zero[..., None], 0, quants)
    return d, quants


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored (as ggml)."""
    nrows, n = x.shape
    d, quants = scale_and_quants(x.reshape(nrows, n // QK_K, QK_K))
    blocks = FORMAT.empty_blocks(nrows, n // QK_K)
    blocks["d"] = d
    blocks["qs"] = quants
    blocks["bsums"] = quants.reshape(nrows, n // QK_K, QK_K // 16, 16).sum(axis=-1)
    return FORMAT.to_bytes(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    return (b["d"][..., None] * b["qs"].astype(F32)).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    raise NotImplementedError("q8_k is an activation format; it has no dot product of its own")


def validate(q: np.ndarray) -> list[Invalid]:
    """``d`` must be finite (``ggml_validate_row_data``: Q8_K's float d)."""
    return nonfinite_f32(FORMAT.blocks(q), "d")
