"""IQ3_K (ik_llama.cpp type 138): 256-element super-blocks of 16 sub-blocks
of 16, 3-bit indices into the two-half ``iq3nl`` grid, an odd 5-bit signed
scale (4 bits + sign) and a shift bit per sub-block, an fp16 super-block
scale (3.4375 bits per weight).

Block (110 bytes)::

    offset 0    d            fp16     super-block scale
    offset 2    extra        uint16   bit b = shift of sub-block b (grid half, +4)
    offset 4    scales_h     uint16   bit b = sign of sub-block b's scale
    offset 6    scales_l[8]  uint8    magnitude codes m: byte i = sub-blocks 2i
                                      (low nibble), 2i+1 (high nibble)
    offset 14   qs[64]       uint8    bits 0-1 of the indices, as IQ2_K: element
                                      e = 32g + 16h + j at bits 2*(g%4).. of
                                      qs[32*(g//4) + 16h + j]
    offset 78   qh[32]       uint8    bit 2 of the indices: bit g of qh[16h + j]

    scale_b = (2*m_b + 1) * (sign_b ? -1 : 1)           (odd, -31 .. 31)
    y[16b + j] = (d * scale_b) * iq3nl_values[8*shift_b + q]

Quantize (``quantize_row_iq3_k_impl``), per super-block:

1. ``sigma2 = 1.5*sum(x^2)/256``; weights ``0.25*sigma2 + x^2`` or
   ``qw*sqrtf(sigma2 + x^2)`` (``qw`` after ``QHelper::row_weights``, 16).
2. Per sub-block the shift sweep with ntry = 3 and step 2 (candidate inverse
   scales ``(2*itry + half[0])/max``; the first candidate is taken only if
   its ``sumq2 > 0``); a sub-block whose scale comes out 0 (or whose largest
   magnitude is below 1e-16) gets scale 0 and no shift; otherwise the scale
   is refitted once on the winning half. (ik_llama.cpp then runs a
   coordinate descent whose result is never used; the spec omits it.)
3. A super-block whose scales are all 0 is left all zero. Otherwise ``d =
   max|scale|/31``; ``m = clamp(nearest_int(0.5*(|scale|/d - 1)), 0, 15)``,
   the sign from the scale; each sub-block re-quantized at
   ``1/(d*scale_b)``.
4. ``d = 1.01 * (sum w*q*x / sum w*q*q)`` (or ``1.01*d``), stored as fp16.

Dot product with Q8_K: ``isum = sum_b scale_b * sum_j q8_j * value_j``,
term ``(d * q8.d) * isum``, canonical reduction (ik_llama.cpp's scalar
``vec_dot_iq3_k_q8_k`` aborts; this is its SIMD kernels' integer arithmetic).

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq3_k_impl``, ``best_index_iq3nl``, ``dequantize_row_iq3_k``;
``ggml/src/ggml-common.h`` ``block_iq3_k``, ``iq3nl_values`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iqk import IEEE, IQ3NL, QK_K, c_sum, dot_terms, sequential_sum, shift_sweep, signed_max, superblock_weights
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits, nearest_int
from .iq2_k import QS_BYTE, QS_SHIFT
from .iq4_k import shifts
from .tables.ik_llama import IQ3NL_VALUES

BLOCK = 16
NSUB = QK_K // BLOCK
NTRY = 3

FORMAT = BlockFormat(
    name="iq3_k", origin="ik_llama", type_id=138, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("extra", "u16", 1, "bit b = shift (grid half, +4) of sub-block b"),
            Field("scales_h", "u16", 1, "bit b = sign of sub-block b's scale"),
            Field("scales_l", "u8", NSUB // 2, "scale magnitude codes m (scale = 2m+1): byte i = sub-blocks 2i "
                                               "(low), 2i+1 (high)"),
            Field("qs", "u8", QK_K // 4, "bits 0-1 of the grid indices, Q2_K's arrangement"),
            Field("qh", "u8", QK_K // 8, "bit 2 of the grid indices: element 32g+16h+j at bit g of qh[16h+j]")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq3_k_impl, dequantize_row_iq3_k; "
             "ggml/src/ggml-common.h block_iq3_k, iq3nl_values @ 8337e4cd",
    imatrix="accepted",
)

_E = np.arange(QK_K)
QH_BYTE = _E % 32
QH_BIT = _E // 32
FUDGE = F32(1.01)


def pack_quants(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = idx.astype(np.int64)
    qs = np.zeros(idx.shape[:-1] + (QK_K // 4,), dtype=np.int64)
    qh = np.zeros(idx.shape[:-1] + (QK_K // 8,), dtype=np.int64)
    for e in range(QK_K):
        qs[..., QS_BYTE[e]] |= (idx[..., e] & 3) << QS_SHIFT[e]
        qh[..., QH_BYTE[e]] |= (idx[..., e] >> 2) << QH_BIT[e]
    return qs.astype(np.uint8), qh.astype(np.uint8)


def unpack_quants(qs: np.ndarray, qh: np.ndarray) -> np.ndarray:
    low = (qs.astype(np.int64)[..., QS_BYTE] >> QS_SHIFT) & 3
    high = (qh.astype(np.int64)[..., QH_BYTE] >> QH_BIT) & 1
    return low | (high << 2)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, NSUB, BLOCK)
    xs = x.reshape(nrows, nsb, QK_K)
    with np.errstate(**IEEE):
        sigma2 = (F32(1.5) * sequential_sum(xs * xs)) / F32(QK_K)
    w = superblock_weights(x, imatrix, BLOCK, sigma2, quarter_sigma=True)
    amax, vmax = signed_max(xb)
    empty = amax < F32(1e-16)
    scales, shifted = shift_sweep(xb, w, np.where(empty, F32(1), vmax), IQ3NL, NTRY, step=2.0, refit=True,
                                  guard_first=True)
    empty |= scales == 0
    scales = np.where(empty, F32(0), scales).astype(F32)
    shifted &= ~empty
    with np.errstate(**IEEE):
        max_abs = np.zeros(scales.shape[:-1], dtype=F32)
        for b in range(NSUB):  # MAX(m, v) = m > v ? m : v: a NaN scale is taken
            v = np.abs(scales[..., b])
            max_abs = np.where(max_abs > v, max_abs, v)
        d = max_abs / F32(31)
        keep = d != 0
        inv = np.where(keep, F32(1) / d, F32(0)).astype(F32)
        m = np.clip(nearest_int(F32(0.5) * (inv[..., None] * np.abs(scales) - F32(1))), 0, 15)
        negative = scales < 0
        ls = (2 * m + 1) * np.where(negative, -1, 1)
        dl = d[..., None] * ls.astype(F32)
        used = dl != 0
        idl = np.where(used, F32(1) / dl, F32(0)).astype(F32)
        idx = np.where(used[..., None], IQ3NL.nearest(idl[..., None] * xb, shifted[..., None]), 0)
        q = (IQ3NL_VALUES.astype(np.int64)[8 * shifted[..., None] + idx] * ls[..., None]).astype(F32)
        wq = w * q
        sumqx = c_sum(np.where(used[..., None], wq * xb, F32(0)).reshape(nrows, nsb, -1))
        sumq2 = c_sum(np.where(used[..., None], wq * q, F32(0)).reshape(nrows, nsb, -1))
        d_final = FUDGE * np.where(sumq2 > 0, sumqx / sumq2, d)
    k3 = keep[..., None]
    blocks = FORMAT.empty_blocks(nrows, nsb)
    bit = np.arange(NSUB, dtype=np.uint32)
    blocks["d"] = np.where(keep, f32_to_f16_bits(d_final), 0)
    blocks["extra"] = np.where(keep, (shifted.astype(np.uint32) << bit).sum(axis=-1), 0)
    blocks["scales_h"] = np.where(keep, ((negative & k3).astype(np.uint32) << bit).sum(axis=-1), 0)
    codes = np.where(k3, m, 0).astype(np.uint8)
    blocks["scales_l"] = codes[..., 0::2] | (codes[..., 1::2] << 4)
    blocks["qs"], blocks["qh"] = pack_quants(np.where(k3[..., None], idx, 0).reshape(nrows, nsb, QK_K))
    return FORMAT.to_bytes(blocks)


def _decoded(blocks: np.ndarray):
    s = blocks["scales_l"].astype(np.int64)
    m = np.stack([s & 15, s >> 4], axis=-1).reshape(blocks.shape + (NSUB,))
    sign = (blocks["scales_h"].astype(np.int64)[..., None] >> np.arange(NSUB)) & 1
    scale = (2 * m + 1) * (1 - 2 * sign)
    idx = unpack_quants(blocks["qs"], blocks["qh"]).reshape(blocks.shape + (NSUB, BLOCK))
    return scale, 8 * shifts(blocks)[..., None] + idx


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    scale, gidx = _decoded(b)
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(b["d"])[..., None] * scale.astype(F32)
        return (dl[..., None] * IQ3NL_VALUES.astype(F32)[gidx]).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(wq)
    a = q8_k.FORMAT.blocks(aq[None, :])[0]
    scale, gidx = _decoded(b)
    qa = a["qs"].astype(np.int64).reshape(-1, NSUB, BLOCK)
    isum = (scale * (IQ3NL_VALUES.astype(np.int64)[gidx] * qa[None]).sum(axis=-1)).sum(axis=-1)
    return dot_terms(f16_bits_to_f32(b["d"]), a["d"], isum)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
