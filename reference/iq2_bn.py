"""IQ2_BN (ik_llama.cpp type 135): ternary weights (BitNet b1.58, TriLM),
2 bits per weight in blocks of 64, one float32 scale per row.

Row (``row_meta_size`` = 4)::

    offset 0   d        float32   row scale (the largest |x| of the row)
    then n/64 blocks of 16 bytes:
    offset 0   qs[16]   uint8     element j + 16s = (qs[j] >> 2s) & 3, s = 0..3

    y = d * (q - 1)               (q - 1 in {-1, 0, 1}; 3 would mean 2)

Quantize (``IQ1BNQuantizer::quantize_one_row_2bn``; an importance matrix is
ignored)::

    d      = max_j |x_j| over the row           (stored as float32)
    thresh = 0.5 * d
    q_j    = 1 if |x_j| < thresh, else 0 if x_j < 0, else 2

Dequantize: ik_llama.cpp's CPU ``dequantize_row_iq2_bn`` (its ``to_float``)
takes a pointer to blocks: it neither skips nor applies the row scale, so
called on a row it decodes the 4 scale bytes as quants and returns raw
ternary values (shifted by 4 bytes). The CUDA path
(``dequantize_block_iq2_bn``: ``d*q + (-d)``), the repacked IQ2_BN_R4 and
the dot products apply the row scale; the spec does too. ``cpu_to_float``
models the CPU function exactly (tests/vectors compares it with ik's
output).

Dot product with Q8_K64 (a code of 3 counts as value 2, as in dequantize):
``isum_L`` = the exact sum of (q - 1) * qs over the block's 16 elements in
lane L (``reference/q8_k64.py``: element j is in lane ``(j % 16) // 4``),
the row scale met once per lane, ``e_L = d * a.d[L]``, and each 64-element
block contributes ``((e_0*isum_0 + e_1*isum_1) + e_2*isum_2) + e_3*isum_3``
(``q8_k64.lane_dot``); then the canonical reduction. ik_llama.cpp
(``mul_mat_iq2bn_q8_K64``) sums code*qs per lane over the whole row and
returns ``d * hsum(fmsub(a.d[L], sum_L, a.s[L]))``: the same value up to
rounding.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``IQ1BNQuantizer::quantize_one_row_2bn``, ``dequantize_row_iq2_bn``;
``ggml/src/iqk/iqk_gemm_1bit.cpp`` ``mul_mat_iq2bn_q8_K64``;
``ggml/src/ggml-cuda/convert.cu`` ``dequantize_block_iq2_bn``;
``ggml/src/ggml-common.h`` ``block_iq2_bn`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_k64
from ._format import BlockFormat, Field, Invalid
from ._iqk import IEEE, f32_meta, join_rows, meta_f32, nonfinite_row_scales, split_rows
from ._numerics import F32

QK = 64

FORMAT = BlockFormat(
    name="iq2_bn", origin="ik_llama", type_id=135, block_size=QK,
    fields=(Field("qs", "u8", QK // 4, "2-bit codes q (value q - 1): element j + 16s at bits 2s..2s+1 of byte j"),),
    vec_dot_format="q8_k64",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp IQ1BNQuantizer::quantize_one_row_2bn, "
             "dequantize_row_iq2_bn; ggml/src/ggml-cuda/convert.cu dequantize_block_iq2_bn; "
             "ggml/src/ggml-common.h block_iq2_bn @ 8337e4cd",
    row_meta_size=4,
)


def ternary(x: np.ndarray, row_max: np.ndarray) -> np.ndarray:
    """Codes 0, 1, 2 (= -1, 0, +1): ``|x| < 0.5*max`` -> 1, else 0 or 2 by sign."""
    thresh = (F32(0.5) * row_max)[:, None]
    return np.where(np.abs(x) < thresh, 1, np.where(x < 0, 0, 2)).astype(np.uint8)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    d = np.abs(x).max(axis=1).astype(F32)
    codes = ternary(x, d).reshape(nrows, n // QK, 4, QK // 4)
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["qs"] = codes[:, :, 0] | codes[:, :, 1] << 2 | codes[:, :, 2] << 4 | codes[:, :, 3] << 6
    return join_rows(FORMAT, f32_meta(d), blocks)


def _codes(qs: np.ndarray) -> np.ndarray:
    """2-bit codes of 16-byte blocks ``(..., 16)`` -> ``(..., 64)`` (int32)."""
    qs = qs.astype(np.int32)
    return np.concatenate([(qs >> (2 * s)) & 3 for s in range(4)], axis=-1)


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    t = (_codes(blocks["qs"]) - 1).astype(F32)
    with np.errstate(**IEEE):
        return (meta_f32(meta)[:, None, None] * t).reshape(q.shape[0], -1)


def cpu_to_float(q: np.ndarray) -> np.ndarray:
    """What ik_llama.cpp's CPU ``to_float`` returns for whole rows: the blocks
    are read from the first byte of the row (the 4 row-scale bytes become the
    first quants, the last 4 bytes of the row are never read), each element
    ``0.25^s*(qs & (3 << 2s)) + (-1)``: the raw ternary value, unscaled."""
    nrows, row_bytes = q.shape
    nblocks = (row_bytes - FORMAT.row_meta_size) // FORMAT.type_size
    qs = np.ascontiguousarray(q[:, :nblocks * FORMAT.type_size]).reshape(nrows, nblocks, QK // 4)
    return (_codes(qs) - 1).astype(F32).reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    return q8_k64.lane_dot(meta_f32(meta), _codes(blocks["qs"]) - 1, aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f32")
