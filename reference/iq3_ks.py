"""IQ3_KS (ik_llama.cpp type 156): 256-element blocks of 8 sub-blocks of 32,
3-bit indices into the two-half ``iq3nl`` grid, a 5-bit signed scale and a
shift bit per sub-block, one fp16 scale per row (3.1875 bits per weight).

Row (``row_meta_size`` = 2)::

    offset 0   d        fp16     row scale
    then n/256 blocks of 102 bytes:
    offset 0    extra      uint16   bit b = bit 4 of sub-block b's scale code;
                                    bit 8+b = shift of sub-block b (grid half, +4)
    offset 2    scales[4]  uint8    bits 0-3 of the scale codes: sub-block b in
                                    nibble b//4 of scales[b%4]
    offset 6    qs[64]     uint8    bits 0-1 of the indices: element 32b+j at
                                    bits 2*(b%4).. of qs[32*(b//4) + j]
    offset 70   qh[32]     uint8    bit 2 of the indices: bit b of qh[j]

    y[32b + j] = (d * (code_b - 16)) * iq3nl_values[8*shift_b + q]

(IQ2_KS puts the shift bits and the scale bits the other way round in
``extra``.)

Quantize (``quantize_row_iq3_ks_impl``, ntry = 5):

1. Weights ``x^2`` (no imatrix) or ``qw*sqrtf(sigma2 + x^2)``,
   ``sigma2 = 2*sum(x^2)/256`` per super-block, ``qw`` the imatrix after
   ``QHelper::row_weights`` (blocks of 32).
2. Per sub-block the shift sweep (``(itry + half[0])/max``, the first
   candidate taken only if its ``sumq2 > 0``) gives a float scale and the
   shift; sub-blocks with largest magnitude below 1e-16 get 0.
3. ``d = -max_scale/16`` over the row (``max_scale`` the signed scale of
   largest magnitude). If it is 0 the row stores ``d = fp16(-0.0)`` and
   nothing else.
4. Codes ``clamp(nearest_int(scale/d), -16, 15)``; every sub-block is
   re-quantized at ``1/(d*code)`` (at 0 if that is 0: the indices then point
   at the value nearest 0).
5. ``d = sum w*q*x / sum w*q*q`` over the row (element order), if the
   denominator is positive; stored as fp16.

Dot product with Q8_K: ``isum = sum_b scale_b * sum_j q8_j * value_j``,
term ``(d * q8.d) * isum``, canonical reduction.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq3_ks_impl``, ``dequantize_row_iq3_ks``,
``vec_dot_iq3_ks_q8_k``; ``ggml/src/ggml-common.h`` ``block_iq3_ks`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._iqk import (IEEE, IQ3NL, QK_K, c_sum, f16_meta, join_rows, meta_f16, nonfinite_row_scales, row_scaled_dequantize,
                   row_scaled_dot, shift_sweep, signed_max, split_rows)
from ._numerics import F32, f32_to_f16_bits, nearest_int
from .iq4_ks import block_weights
from .tables.ik_llama import IQ3NL_VALUES

BLOCK = 32
NSUB = QK_K // BLOCK
NTRY = 5

FORMAT = BlockFormat(
    name="iq3_ks", origin="ik_llama", type_id=156, block_size=QK_K,
    fields=(Field("extra", "u16", 1, "bit b = bit 4 of sub-block b's scale code; bit 8+b = its shift"),
            Field("scales", "u8", 4, "bits 0-3 of the scale codes: sub-block b in nibble b//4 of scales[b%4]"),
            Field("qs", "u8", QK_K // 4, "bits 0-1 of the grid indices: element 32b+j at bits 2(b%4) of "
                                         "qs[32(b//4)+j]"),
            Field("qh", "u8", QK_K // 8, "bit 2 of the grid indices: bit b of qh[j]")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq3_ks_impl, dequantize_row_iq3_ks, "
             "vec_dot_iq3_ks_q8_k; ggml/src/ggml-common.h block_iq3_ks, iq3nl_values @ 8337e4cd",
    row_meta_size=2,
    imatrix="accepted",
)

_B = np.arange(NSUB)


def pack_quants(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3-bit indices ``(..., 8, 32)`` -> ``(qs[64], qh[32])``."""
    idx = idx.astype(np.uint32)
    low = (idx & 3) << (2 * (_B % 4)).astype(np.uint32)[:, None]
    qs = np.stack([low[..., 0:4, :].sum(axis=-2), low[..., 4:8, :].sum(axis=-2)], axis=-2)
    qh = ((idx >> 2) << _B.astype(np.uint32)[:, None]).sum(axis=-2)
    return qs.reshape(idx.shape[:-2] + (QK_K // 4,)).astype(np.uint8), qh.astype(np.uint8)


def unpack_quants(qs: np.ndarray, qh: np.ndarray) -> np.ndarray:
    qs = qs.astype(np.int64).reshape(qs.shape[:-1] + (2, 1, BLOCK))
    low = ((qs >> (2 * np.arange(4))[:, None]) & 3).reshape(qs.shape[:-3] + (NSUB, BLOCK))
    high = (qh.astype(np.int64)[..., None, :] >> _B[:, None]) & 1
    return low | (high << 2)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, NSUB, BLOCK)
    w = block_weights(x, imatrix)
    amax, vmax = signed_max(xb)
    empty = amax < F32(1e-16)
    scales, shifted = shift_sweep(xb, w, np.where(empty, F32(1), vmax), IQ3NL, NTRY, guard_first=True)
    scales = np.where(empty, F32(0), scales).astype(F32)
    shifted &= ~empty
    with np.errstate(**IEEE):
        _, max_scale = signed_max(scales.reshape(nrows, -1))
        d = -max_scale / F32(16)
        keep = d != 0
        inv = np.where(keep, F32(1) / d, F32(0)).astype(F32)
        code = np.clip(nearest_int(inv[:, None, None] * scales), -16, 15)
        dl = d[:, None, None] * code.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0)).astype(F32)
        idx = IQ3NL.nearest(idl[..., None] * xb, shifted[..., None])
        q = (IQ3NL_VALUES.astype(np.int64)[8 * shifted[..., None] + idx] * code[..., None]).astype(F32)
        wq = w * q
        sumqx = c_sum((wq * xb).reshape(nrows, -1))
        sumq2 = c_sum((wq * q).reshape(nrows, -1))
        d_final = np.where(sumq2 > 0, sumqx / sumq2, d).astype(F32)
    k3 = keep[:, None, None]
    ul = np.where(k3, code + 16, 0).astype(np.uint32)
    bit = _B.astype(np.uint32)
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["extra"] = (((ul >> 4) << bit) | (shifted.astype(np.uint32) << (bit + 8))).sum(axis=-1)
    low = ul & 15
    blocks["scales"] = low[..., :4] | (low[..., 4:] << 4)
    blocks["qs"], blocks["qh"] = pack_quants(np.where(k3[..., None], idx, 0))
    return join_rows(FORMAT, f16_meta(f32_to_f16_bits(d_final)), blocks)


def _decoded(blocks: np.ndarray):
    extra = blocks["extra"].astype(np.int64)[..., None]
    s = blocks["scales"].astype(np.int64)
    low = np.concatenate([s & 15, s >> 4], axis=-1)
    code = low | (((extra >> _B) & 1) << 4)
    shift = (extra >> (8 + _B)) & 1
    idx = unpack_quants(blocks["qs"], blocks["qh"])
    return code - 16, 8 * shift[..., None] + idx


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    scale, gidx = _decoded(blocks)
    return row_scaled_dequantize(meta_f16(meta), scale, IQ3NL_VALUES[gidx])


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    scale, gidx = _decoded(blocks)
    return row_scaled_dot(meta_f16(meta), scale, IQ3NL_VALUES[gidx], aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f16")
