"""IQ4_KS (ik_llama.cpp type 144): 256-element blocks of 8 sub-blocks of 32,
4-bit indices into the two-half ``iq4k`` grid, a 7-bit odd scale and a shift
bit per sub-block, one float32 scale per row (4.25 bits per weight).

Row (``row_meta_size`` = 4)::

    offset 0   d        float32   row scale
    then n/256 blocks of 136 bytes:
    offset 0   scales[8]  uint8   sub-block b: bit 0 = shift, bits 1-7 = l,
                                  scale = (scales[b] & 254) - 127 (odd, -127..127)
    offset 8   qs[128]    uint8   sub-block b owns qs[16b .. 16b+15]: low nibble
                                  of byte j = element j, high nibble = element j+16

    y[32b + j] = (d * ((scales[b] & 254) - 127)) * iq4k_values[16*(scales[b] & 1) + q]

Quantize (``quantize_row_iq4_k_impl_bs128``, ntry = 7):

1. Weights: ``x^2`` without an importance matrix; with one,
   ``qw[j]*sqrtf(sigma2 + x[j]^2)``, ``sigma2 = 2*sum(x^2)/256`` per
   super-block, ``qw`` the imatrix after ``QHelper::row_weights`` (blocks
   of 32).
2. Per sub-block, the shift sweep (``_iqk.shift_sweep``: candidate scales
   ``(itry + half[0])/max`` for itry = -7..7 on both halves of the grid, both
   signs) gives a float scale and the shift bit. A sub-block whose largest
   magnitude is below 1e-16 gets scale 0 (and no shift).
3. Row scale ``d = max|scale| / 127``; a row of all-zero sub-blocks stores
   ``d = 0`` and zero bytes.
4. Per sub-block ``l = clamp(nearest_int(0.5*(scale/d + 127)), 0, 127)``,
   stored as ``2l | shift``, the integer scale ``2l - 127``; the elements are
   re-quantized to the nearest value of the chosen half at ``1/(d*(2l-127))``.
5. ``d = sum w*q*x / sum w*q*q`` over the whole row (q = grid value times
   the integer scale; the sums add the pair (j, j+16) first, then
   accumulate, in block order), if the denominator is positive.

Dot product with Q8_K: per super-block ``isum = sum_b scale_b * sum_j
q8[32b+j] * value_j`` (exact), term ``(d * q8.d) * isum``, canonical 16-lane
reduction. ik_llama.cpp's Q8_K block carries an extra float (``sum``) that
this dot product does not read; quantspec's ``q8_k`` is mainline's layout.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq4_k_impl_bs128``, ``dequantize_row_iq4_ks``,
``vec_dot_iq4_ks_q8_k``; ``ggml/src/ggml-common.h`` ``block_iq4_ks`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._iqk import (IEEE, IQ4K, QK_K, c_sum, f32_meta, helper_weights, imatrix_element_weights, join_rows, meta_f32,
                   nonfinite_row_scales, row_scaled_dequantize, row_scaled_dot, running_max, shift_sweep, signed_max,
                   split_rows, superblock_sigma2)
from ._legacy import pack_nibbles, unpack_nibbles
from ._numerics import F32, nearest_int
from .tables.ik_llama import IQ4K_VALUES

BLOCK = 32
NTRY = 7

FORMAT = BlockFormat(
    name="iq4_ks", origin="ik_llama", type_id=144, block_size=QK_K,
    fields=(Field("scales", "u8", QK_K // BLOCK, "sub-block b: bit 0 = shift (grid half), "
                                                 "scale = (scales[b] & 254) - 127"),
            Field("qs", "u8", QK_K // 2, "4-bit grid indices: sub-block b owns bytes 16b..16b+15, "
                                         "low nibble = element j, high nibble = element j+16")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq4_k_impl_bs128, dequantize_row_iq4_ks, "
             "vec_dot_iq4_ks_q8_k; ggml/src/ggml-common.h block_iq4_ks, iq4k_values @ 8337e4cd",
    row_meta_size=4,
    imatrix="accepted",
)


def block_weights(x: np.ndarray, imatrix: np.ndarray | None, sigma_factor: float = 2.0) -> np.ndarray:
    """Element weights ``(nrows, nsb, 8, 32)`` of the _KS quantizers: ``x^2``
    without an imatrix, ``qw*sqrtf(sigma2 + x^2)`` with one."""
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK_K, QK_K // BLOCK, BLOCK)
    qw = helper_weights(x, imatrix, BLOCK)
    with np.errstate(**IEEE):
        if qw is None:
            return xb * xb
        sigma2 = superblock_sigma2(x.reshape(nrows, n // QK_K, QK_K), sigma_factor)
        return imatrix_element_weights(qw.reshape(xb.shape), xb, sigma2[..., None])


def row_scale_codes(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 3-4: row scale ``d = max|scale|/127`` per row and the 7-bit codes
    ``l = clamp(nearest_int(0.5*(scale/d + 127)), 0, 127)`` (``scales``:
    ``(nrows, nsb, 8)``)."""
    with np.errstate(**IEEE):
        d = running_max(np.abs(scales).reshape(scales.shape[0], -1)) / F32(127)
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
        l = nearest_int(F32(0.5) * (inv[:, None, None] * scales + F32(127)))
    return d.astype(F32), np.clip(l, 0, 127)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, QK_K // BLOCK, BLOCK)
    w = block_weights(x, imatrix)
    amax, vmax = signed_max(xb)
    empty = amax < F32(1e-16)
    scales, shifted = shift_sweep(xb, w, np.where(empty, F32(1), vmax), IQ4K, NTRY)
    scales = np.where(empty, F32(0), scales).astype(F32)
    shifted &= ~empty
    d, l = row_scale_codes(scales)
    with np.errstate(**IEEE):
        ls = (2 * l - 127)
        dl = d[:, None, None] * ls.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0)).astype(F32)
        idx = IQ4K.nearest(idl[..., None] * xb, shifted[..., None])
        q = (IQ4K_VALUES.astype(np.int64)[16 * shifted[..., None] + idx] * ls[..., None]).astype(F32)
        wq = w * q
        tqx, tq2 = wq * xb, wq * q
        pair_qx = tqx[..., :16] + tqx[..., 16:]  # w1*q1*x1 + w2*q2*x2, then added to the running sum
        pair_q2 = tq2[..., :16] + tq2[..., 16:]
        sumqx = c_sum(pair_qx.reshape(nrows, -1))
        sumq2 = c_sum(pair_q2.reshape(nrows, -1))
        d_final = np.where(sumq2 > 0, sumqx / sumq2, d).astype(F32)
    zero_row = d == 0
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["scales"] = np.where(zero_row[:, None, None], 0, (l << 1) | shifted)
    blocks["qs"] = np.where(zero_row[:, None, None, None], 0, pack_nibbles(idx.reshape(-1, BLOCK)).reshape(
        nrows, nsb, QK_K // BLOCK, BLOCK // 2)).reshape(nrows, nsb, -1)
    return join_rows(FORMAT, f32_meta(np.where(zero_row, F32(0), d_final)), blocks)


def _codes(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = blocks["scales"].astype(np.int64)
    idx = unpack_nibbles(blocks["qs"].reshape(-1, BLOCK // 2)).reshape(blocks.shape + (QK_K // BLOCK, BLOCK))
    return (s & 254) - 127, s & 1, idx.astype(np.int64)


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    scale, shift, idx = _codes(blocks)
    return row_scaled_dequantize(meta_f32(meta), scale, IQ4K_VALUES[16 * shift[..., None] + idx])


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    scale, shift, idx = _codes(blocks)
    return row_scaled_dot(meta_f32(meta), scale, IQ4K_VALUES[16 * shift[..., None] + idx], aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f32")
