"""IQ2_K (ik_llama.cpp type 137): 256-element super-blocks of 16 sub-blocks
of 16, 2-bit indices into the two-half ``iq2nl`` grid, a 4-bit signed scale
and a shift bit per sub-block, an fp16 super-block scale (2.375 bits per weight).

Block (76 bytes)::

    offset 0    d          fp16     super-block scale
    offset 2    extra      uint16   bit b = shift of sub-block b (grid half, +5)
    offset 4    scales[8]  uint8    scale codes: byte i = sub-blocks 2i (low
                                    nibble), 2i+1 (high nibble); scale = code - 8
    offset 12   qs[64]     uint8    element e = 32*g + 16*h + j (g = 0..7,
                                    sub-block 2g+h): bits 2*(g%4)..+1 of
                                    qs[32*(g//4) + 16*h + j] (Q2_K's arrangement)

    y[16b + j] = (d * (code_b - 8)) * iq2nl_values[4*shift_b + q]

Quantize (``quantize_row_iq2_k_impl``), per super-block:

1. ``sigma2 = 1.5*sum(x^2)/256``; weights ``0.25*sigma2 + x^2`` (no imatrix)
   or ``qw*sqrtf(sigma2 + x^2)`` (``qw``: the imatrix after
   ``QHelper::row_weights``, blocks of 16); ``sw_b`` = the sum of sub-block
   b's weights.
2. Per sub-block, the exhaustive search over every way to cut the sorted
   elements into 4 runs mapped to the 4 grid values (``_iqk.partition_search``,
   all ``0 <= i1 <= i2 <= i3 < 16``, both halves, both orders) gives a float
   scale and the shift. Sub-blocks with largest magnitude below 1e-16 get 0.
3. A super-block whose scales are all 0 is left all zero. Otherwise ``d =
   make_qx_quants(16 scales, nmax = 8, weights sw)`` (the ``iqk_quantize.cpp``
   variant); if 0, the super-block is left all zero too.
4. Codes ``clamp(nearest_int(scale/d), -8, 7)``; each sub-block with
   ``d*code != 0`` is re-quantized to the nearest value (``best_index_iq2nl``)
   at ``1/(d*code)``, the others keep index 0.
5. ``d = 1.030 * (sum w*q*x / sum w*q*q)`` (or ``1.030*d`` if the denominator
   is 0), stored as fp16.

Dot product with Q8_K: ``isum = sum_b scale_b * sum_j q8_j * value_j``,
term ``(d * q8.d) * isum``, canonical reduction (ik_llama.cpp has no scalar
``vec_dot_iq2_k_q8_k``; this is its SIMD kernels' arithmetic in exact integers).

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq2_k_impl``, ``make_qx_quants``, ``best_index_iq2nl``,
``dequantize_row_iq2_k``; ``ggml/src/ggml-common.h`` ``block_iq2_k``,
``iq2nl_values`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iqk import (IEEE, IQ2NL, QK_K, c_sum, dot_terms, make_qx_quants_iqk, partition_search, partitions,
                   running_max, sequential_sum, superblock_weights)
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits, nearest_int
from .iq4_k import shifts
from .tables.ik_llama import IQ2NL_VALUES

BLOCK = 16
NSUB = QK_K // BLOCK
BREAKPOINTS = partitions(BLOCK)

FORMAT = BlockFormat(
    name="iq2_k", origin="ik_llama", type_id=137, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("extra", "u16", 1, "bit b = shift (grid half, +5) of sub-block b"),
            Field("scales", "u8", NSUB // 2, "4-bit scale codes: byte i = sub-blocks 2i (low), 2i+1 (high); "
                                             "scale = code - 8"),
            Field("qs", "u8", QK_K // 4, "2-bit grid indices, Q2_K's arrangement")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq2_k_impl, make_qx_quants, "
             "dequantize_row_iq2_k; ggml/src/ggml-common.h block_iq2_k, iq2nl_values @ 8337e4cd",
    imatrix="accepted",
)

_E = np.arange(QK_K)
_G, _H, _J = _E // 32, (_E % 32) // 16, _E % 16
QS_BYTE = 32 * (_G // 4) + 16 * _H + _J
QS_SHIFT = 2 * (_G % 4)
FUDGE = F32(1.030)


def pack_quants(idx: np.ndarray) -> np.ndarray:
    """2-bit indices in element order ``(..., 256)`` -> ``qs[64]``."""
    idx = idx.astype(np.int64)
    qs = np.zeros(idx.shape[:-1] + (QK_K // 4,), dtype=np.int64)
    for e in range(QK_K):
        qs[..., QS_BYTE[e]] |= idx[..., e] << QS_SHIFT[e]
    return qs.astype(np.uint8)


def unpack_quants(qs: np.ndarray) -> np.ndarray:
    return (qs.astype(np.int64)[..., QS_BYTE] >> QS_SHIFT) & 3


def sub_block_search(x: np.ndarray, w: np.ndarray, breakpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2: the float scale and shift of every sub-block (0 and no shift
    where the largest magnitude is below 1e-16)."""
    empty = np.abs(x).max(axis=-1) < F32(1e-16)
    scales, shifted = partition_search(x, w, IQ2NL, breakpoints)
    return np.where(empty, F32(0), scales).astype(F32), shifted & ~empty


def requantize(xb: np.ndarray, w: np.ndarray, d: np.ndarray, ls: np.ndarray, shifted: np.ndarray):
    """Sub-blocks with ``dl = d*ls != 0`` re-quantized at ``1/dl`` (others
    keep index 0); the terms ``w*q*x`` and ``w*q*q`` (q = value*ls; 0 where
    skipped) in element order."""
    with np.errstate(**IEEE):
        dl = d[..., None] * ls.astype(F32)
        used = dl != 0
        idl = np.where(used, F32(1) / dl, F32(0)).astype(F32)
        idx = np.where(used[..., None], IQ2NL.nearest(idl[..., None] * xb, shifted[..., None]), 0)
        q = (IQ2NL_VALUES.astype(np.int64)[4 * shifted[..., None] + idx] * ls[..., None]).astype(F32)
        wq = w * q
        return idx, np.where(used[..., None], wq * xb, F32(0)), np.where(used[..., None], wq * q, F32(0))


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, NSUB, BLOCK)
    with np.errstate(**IEEE):
        sigma2 = (F32(1.5) * sequential_sum(x.reshape(nrows, nsb, QK_K) * x.reshape(nrows, nsb, QK_K))) / F32(QK_K)
    w = superblock_weights(x, imatrix, BLOCK, sigma2, quarter_sigma=True)
    sw = c_sum(w)
    scales, shifted = sub_block_search(xb, w, BREAKPOINTS)
    d, _ = make_qx_quants_iqk(scales, 8, sw)
    keep = (running_max(np.abs(scales)) != 0) & (d != 0)
    with np.errstate(**IEEE):
        inv = np.where(keep, F32(1) / d, F32(0)).astype(F32)
        ls = np.clip(nearest_int(inv[..., None] * scales), -8, 7)
        idx, tqx, tq2 = requantize(xb, w, d, ls, shifted)
        sumqx = c_sum(tqx.reshape(nrows, nsb, -1))
        sumq2 = c_sum(tq2.reshape(nrows, nsb, -1))
        d_final = FUDGE * np.where(sumq2 > 0, sumqx / sumq2, d)
    k3 = keep[..., None]
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["d"] = np.where(keep, f32_to_f16_bits(d_final), 0)
    blocks["extra"] = np.where(keep, (shifted.astype(np.uint32) << np.arange(NSUB, dtype=np.uint32)).sum(axis=-1), 0)
    codes = np.where(k3, ls + 8, 0).astype(np.uint8)
    blocks["scales"] = codes[..., 0::2] | (codes[..., 1::2] << 4)
    blocks["qs"] = pack_quants(np.where(k3[..., None], idx, 0).reshape(nrows, nsb, QK_K))
    return FORMAT.to_bytes(blocks)


def _decoded(blocks: np.ndarray):
    s = blocks["scales"].astype(np.int64)
    scale = np.stack([s & 15, s >> 4], axis=-1).reshape(blocks.shape + (NSUB,)) - 8
    idx = unpack_quants(blocks["qs"]).reshape(blocks.shape + (NSUB, BLOCK))
    return scale, 4 * shifts(blocks)[..., None] + idx


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    scale, gidx = _decoded(b)
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(b["d"])[..., None] * scale.astype(F32)
        return (dl[..., None] * IQ2NL_VALUES.astype(F32)[gidx]).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(wq)
    a = q8_k.FORMAT.blocks(aq[None, :])[0]
    scale, gidx = _decoded(b)
    qa = a["qs"].astype(np.int64).reshape(-1, NSUB, BLOCK)
    isum = (scale * (IQ2NL_VALUES.astype(np.int64)[gidx] * qa[None]).sum(axis=-1)).sum(axis=-1)
    return dot_terms(f16_bits_to_f32(b["d"]), a["d"], isum)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
