"""IQ5_KS (ik_llama.cpp type 152): 256-element blocks of 8 sub-blocks of 32,
5-bit indices into the two-half ``iq5nl`` grid, a 7-bit odd scale and a shift
bit per sub-block, one float32 scale per row (5.25 bits per weight).

Row (``row_meta_size`` = 4)::

    offset 0   d        float32   row scale
    then n/256 blocks of 168 bytes:
    offset 0    scales[8]  uint8  sub-block b: bit 0 = shift, bits 1-7 = l,
                                  scale = (scales[b] & 254) - 127 (odd, -127..127)
    offset 8    qs[128]    uint8  bits 0-3 of the indices: sub-block b = 2p + h
                                  in nibble h of qs[32p + j], j = 0..31
    offset 136  qh[32]     uint8  bit 4 of the indices: bit b of qh[j]

    y[32b + j] = (d * ((scales[b] & 254) - 127)) * iq5nl_values[32*(scales[b] & 1) + q]

Quantize (``quantize_row_iq5_ks_impl``, ntry = 5): as IQ4_KS (see
``iq4_ks``) on the ``iq5nl`` grid: weights ``x^2`` or ``qw*sqrtf(sigma2 +
x^2)`` (``sigma2 = 2*sum(x^2)/256``), the shift sweep per sub-block, row
scale ``d = max|scale|/127``, 7-bit codes ``clamp(nearest_int(0.5*(scale/d
+ 127)), 0, 127)``, re-quantization at ``1/(d*(2l - 127))``, and ``d = sum
w*q*x / sum w*q*q`` over the row (element order), if positive.

Dot product with Q8_K: per super-block ``isum = sum_b scale_b * sum_j
q8[32b+j] * value_j`` (exact), term ``(d * q8.d) * isum``, canonical reduction.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq5_ks_impl``, ``dequantize_row_iq5_ks``,
``vec_dot_iq5_ks_q8_k``; ``ggml/src/ggml-common.h`` ``block_iq5_ks`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._iqk import (IEEE, IQ5NL, QK_K, c_sum, f32_meta, join_rows, meta_f32, nonfinite_row_scales, row_scaled_dequantize,
                   row_scaled_dot, shift_sweep, signed_max, split_rows)
from ._numerics import F32
from .iq4_ks import block_weights, row_scale_codes
from .tables.ik_llama import IQ5NL_VALUES

BLOCK = 32
NTRY = 5

FORMAT = BlockFormat(
    name="iq5_ks", origin="ik_llama", type_id=152, block_size=QK_K,
    fields=(Field("scales", "u8", QK_K // BLOCK, "sub-block b: bit 0 = shift (grid half), "
                                                 "scale = (scales[b] & 254) - 127"),
            Field("qs", "u8", QK_K // 2, "bits 0-3 of the grid indices: sub-block 2p+h in nibble h of qs[32p+j]"),
            Field("qh", "u8", QK_K // 8, "bit 4 of the grid indices: bit b of qh[j] for sub-block b")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq5_ks_impl, dequantize_row_iq5_ks, "
             "vec_dot_iq5_ks_q8_k; ggml/src/ggml-common.h block_iq5_ks, iq5nl_values @ 8337e4cd",
    row_meta_size=4,
    imatrix="accepted",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, QK_K // BLOCK, BLOCK)
    w = block_weights(x, imatrix)
    amax, vmax = signed_max(xb)
    empty = amax < F32(1e-16)
    scales, shifted = shift_sweep(xb, w, np.where(empty, F32(1), vmax), IQ5NL, NTRY)
    scales = np.where(empty, F32(0), scales).astype(F32)
    shifted &= ~empty
    d, l = row_scale_codes(scales)
    with np.errstate(**IEEE):
        ls = (2 * l - 127)
        dl = d[:, None, None] * ls.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0)).astype(F32)
        idx = IQ5NL.nearest(idl[..., None] * xb, shifted[..., None])
        q = (IQ5NL_VALUES.astype(np.int64)[32 * shifted[..., None] + idx] * ls[..., None]).astype(F32)
        wq = w * q
        sumqx = c_sum((wq * xb).reshape(nrows, -1))
        sumq2 = c_sum((wq * q).reshape(nrows, -1))
        d_final = np.where(sumq2 > 0, sumqx / sumq2, d).astype(F32)
    zero_row = d == 0
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["scales"] = np.where(zero_row[:, None, None], 0, (l << 1) | shifted)
    blocks["qs"], blocks["qh"] = pack_quants(np.where(zero_row[:, None, None, None], 0, idx))
    return join_rows(FORMAT, f32_meta(np.where(zero_row, F32(0), d_final)), blocks)


def pack_quants(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """5-bit indices ``(..., 8, 32)`` -> ``(qs[128], qh[32])``."""
    idx = idx.astype(np.uint8)
    low = idx & 15
    qs = (low[..., 0::2, :] | (low[..., 1::2, :] << 4)).reshape(idx.shape[:-2] + (QK_K // 2,))
    qh = ((idx >> 4).astype(np.uint32) << np.arange(8, dtype=np.uint32)[:, None]).sum(axis=-2)
    return qs, qh.astype(np.uint8)


def _codes(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = blocks["scales"].astype(np.int64)
    qs = blocks["qs"].astype(np.int64).reshape(blocks.shape + (4, 1, BLOCK))
    low = ((qs >> (4 * np.arange(2))[:, None]) & 15).reshape(blocks.shape + (8, BLOCK))
    high = (blocks["qh"].astype(np.int64)[..., None, :] >> np.arange(8)[:, None]) & 1
    return (s & 254) - 127, s & 1, low | (high << 4)


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    scale, shift, idx = _codes(blocks)
    return row_scaled_dequantize(meta_f32(meta), scale, IQ5NL_VALUES[32 * shift[..., None] + idx])


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    scale, shift, idx = _codes(blocks)
    return row_scaled_dot(meta_f32(meta), scale, IQ5NL_VALUES[32 * shift[..., None] + idx], aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f32")
