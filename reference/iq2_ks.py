"""IQ2_KS (ik_llama.cpp type 145): 256-element blocks of 8 sub-blocks of 32,
2-bit indices into the two-half ``iq2nl`` grid, a 5-bit signed scale and a
shift bit per sub-block, one fp16 scale per row (2.1875 bits per weight).

Row (``row_meta_size`` = 2)::

    offset 0   d        fp16     row scale
    then n/256 blocks of 70 bytes:
    offset 0    extra      uint16   bit b = shift of sub-block b (grid half, +5);
                                    bit 8+b = bit 4 of sub-block b's scale code
    offset 2    scales[4]  uint8    bits 0-3 of the scale codes: byte i = sub-blocks
                                    2i (low nibble), 2i+1 (high nibble)
    offset 6    qs[64]     uint8    element 32b+j at bits 2*(b%4).. of qs[32*(b//4) + j]

    y[32b + j] = (d * (code_b - 16)) * iq2nl_values[4*shift_b + q]

(IQ3_KS puts the shift bits and the scale bits the other way round in
``extra``.)

Quantize (``quantize_row_iq2_ks_impl``: what ``ggml_quantize_chunk``
runs, and ``llama-quantize --slow-iq2ks``; ``llama-quantize`` by default
calls a different, AVX2-only search, ``quantize_row_iq2_ks_fast_impl``,
which this spec does not define):

1. ``sigma2 = 1.5*sum(x^2)/256`` per super-block; weights
   ``0.25*sigma2 + x^2`` (no imatrix) or ``qw*sqrtf(sigma2 + x^2)`` (``qw``:
   the imatrix after ``QHelper::row_weights``, blocks of 32); ``sw_b`` the
   sum of sub-block b's weights.
2. Per sub-block the exhaustive 4-run search of IQ2_K
   (``_iqk.partition_search``) over the breakpoints ``i1 < 24``,
   ``i1 <= i2``, ``max(i2, 8) <= i3 < 32`` gives a float scale and the shift;
   sub-blocks with largest magnitude below 1e-16 get 0.
3. ``d, codes = make_qx_quants(all scales of the row, nmax = 16, weights
   sw)`` (``iqk_quantize.cpp``'s variant); if ``d`` is 0 the row stores
   ``d = 0`` and only the shift bits.
4. Each sub-block with ``d*(code - 16) != 0`` is re-quantized to the nearest
   value (``best_index_iq2nl``) at ``1/(d*(code - 16))``; the others keep
   index 0.
5. ``d = 1.030 * (sum w*q*x / sum w*q*q)`` over the row (or ``1.030*d`` if
   the denominator is 0), stored as fp16.

Dot product with Q8_K: ``isum = sum_b scale_b * sum_j q8_j * value_j``,
term ``(d * q8.d) * isum``, canonical reduction.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq2_ks_impl``, ``make_qx_quants``, ``dequantize_row_iq2_ks``,
``vec_dot_iq2_ks_q8_k``; ``ggml/src/ggml-common.h`` ``block_iq2_ks`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._iqk import (IEEE, IQ2NL, QK_K, c_sum, f16_meta, join_rows, make_qx_quants_iqk, meta_f16, nonfinite_row_scales,
                   partition_search, partitions, row_scaled_dequantize, row_scaled_dot, sequential_sum, split_rows,
                   superblock_weights)
from ._numerics import F32, f32_to_f16_bits
from .tables.ik_llama import IQ2NL_VALUES

BLOCK = 32
NSUB = QK_K // BLOCK
BREAKPOINTS = partitions(BLOCK, max_i1=3 * BLOCK // 4, min_i3=BLOCK // 4)
FUDGE = F32(1.030)

FORMAT = BlockFormat(
    name="iq2_ks", origin="ik_llama", type_id=145, block_size=QK_K,
    fields=(Field("extra", "u16", 1, "bit b = shift (grid half, +5) of sub-block b; bit 8+b = bit 4 of its "
                                     "scale code"),
            Field("scales", "u8", 4, "bits 0-3 of the scale codes: byte i = sub-blocks 2i (low), 2i+1 (high)"),
            Field("qs", "u8", QK_K // 4, "2-bit grid indices: element 32b+j at bits 2(b%4) of qs[32(b//4)+j]")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq2_ks_impl, make_qx_quants, "
             "dequantize_row_iq2_ks, vec_dot_iq2_ks_q8_k; ggml/src/ggml-common.h block_iq2_ks, "
             "iq2nl_values @ 8337e4cd",
    row_meta_size=2,
    imatrix="accepted",
)

_B = np.arange(NSUB)


def pack_quants(idx: np.ndarray) -> np.ndarray:
    """2-bit indices ``(..., 8, 32)`` -> ``qs[64]``."""
    low = idx.astype(np.uint32) << (2 * (_B % 4)).astype(np.uint32)[:, None]
    qs = np.stack([low[..., 0:4, :].sum(axis=-2), low[..., 4:8, :].sum(axis=-2)], axis=-2)
    return qs.reshape(idx.shape[:-2] + (QK_K // 4,)).astype(np.uint8)


def unpack_quants(qs: np.ndarray) -> np.ndarray:
    qs = qs.astype(np.int64).reshape(qs.shape[:-1] + (2, 1, BLOCK))
    return ((qs >> (2 * np.arange(4))[:, None]) & 3).reshape(qs.shape[:-3] + (NSUB, BLOCK))


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, NSUB, BLOCK)
    xs = x.reshape(nrows, nsb, QK_K)
    with np.errstate(**IEEE):
        sigma2 = (F32(1.5) * sequential_sum(xs * xs)) / F32(QK_K)
    w = superblock_weights(x, imatrix, BLOCK, sigma2, quarter_sigma=True)
    sw = c_sum(w)
    empty = np.abs(xb).max(axis=-1) < F32(1e-16)
    scales, shifted = partition_search(xb, w, IQ2NL, BREAKPOINTS)
    scales = np.where(empty, F32(0), scales).astype(F32)
    shifted &= ~empty
    d, codes = make_qx_quants_iqk(scales.reshape(nrows, -1), 16, sw.reshape(nrows, -1))
    codes = codes.reshape(nrows, nsb, NSUB)
    keep = d != 0
    with np.errstate(**IEEE):
        ls = codes - 16
        dl = d[:, None, None] * ls.astype(F32)
        used = dl != 0
        idl = np.where(used, F32(1) / dl, F32(0)).astype(F32)
        idx = np.where(used[..., None], IQ2NL.nearest(idl[..., None] * xb, shifted[..., None]), 0)
        q = (IQ2NL_VALUES.astype(np.int64)[4 * shifted[..., None] + idx] * ls[..., None]).astype(F32)
        wq = w * q
        sumqx = c_sum(np.where(used[..., None], wq * xb, F32(0)).reshape(nrows, -1))
        sumq2 = c_sum(np.where(used[..., None], wq * q, F32(0)).reshape(nrows, -1))
        d_final = FUDGE * np.where(sumq2 > 0, sumqx / sumq2, d)
    k3 = keep[:, None, None]
    ul = np.where(k3, codes, 0).astype(np.uint32)
    bit = _B.astype(np.uint32)
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["extra"] = ((shifted.astype(np.uint32) << bit) | ((ul >> 4) << (bit + 8))).sum(axis=-1)
    low = ul & 15
    blocks["scales"] = low[..., 0::2] | (low[..., 1::2] << 4)
    blocks["qs"] = pack_quants(np.where(k3[..., None], idx, 0))
    return join_rows(FORMAT, f16_meta(np.where(keep, f32_to_f16_bits(d_final), 0)), blocks)


def _decoded(blocks: np.ndarray):
    extra = blocks["extra"].astype(np.int64)[..., None]
    s = blocks["scales"].astype(np.int64)
    low = np.stack([s & 15, s >> 4], axis=-1).reshape(blocks.shape + (NSUB,))
    code = low | (((extra >> (8 + _B)) & 1) << 4)
    shift = (extra >> _B) & 1
    return code - 16, 4 * shift[..., None] + unpack_quants(blocks["qs"])


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    scale, gidx = _decoded(blocks)
    return row_scaled_dequantize(meta_f16(meta), scale, IQ2NL_VALUES[gidx])


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    scale, gidx = _decoded(blocks)
    return row_scaled_dot(meta_f16(meta), scale, IQ2NL_VALUES[gidx], aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f16")
