"""IQ5_K (ik_llama.cpp type 140): 256-element super-blocks of 16 sub-blocks
of 16, 5-bit indices into the two-half ``iq5nl`` grid, a 6-bit signed scale
and a shift bit per sub-block, an fp16 super-block scale (5.5 bits per weight).

Block (176 bytes)::

    offset 0    d            fp16     super-block scale
    offset 2    extra        uint16   bit b = shift of sub-block b (grid half)
    offset 4    scales_h[4]  uint8    bits 4-5 of sub-block b's scale code at
                                      bits 2b..2b+1 (the 4 bytes as one uint32)
    offset 8    scales_l[8]  uint8    bits 0-3: byte i = sub-blocks 2i (low
                                      nibble), 2i+1 (high nibble)
    offset 16   qs[128]      uint8    bits 0-3 of the indices
    offset 144  qh[32]       uint8    bit 4 of the indices

    element e = 64*c + 16*s + j (c = 0..3, sub-block 4c+s, j = 0..15):
        bits 0-3  nibble s//2 of qs[32c + 16*(s%2) + j]
        bit 4     bit 2c + s//2 of qh[16*(s%2) + j]
    y[e] = (d * (code_b - 32)) * iq5nl_values[32*shift_b + q]

Quantize (``quantize_row_iq5_k_impl``, ntry = 5), per super-block
(``_iqk.quantize_superblocks``):

1. ``sigma2 = 2*sum(x^2)/256``; weights ``0.25*sigma2 + x^2`` (no imatrix)
   or ``qw*sqrtf(sigma2 + x^2)`` (``qw``: the imatrix after
   ``QHelper::row_weights``, blocks of 16).
2. Per sub-block the shift sweep, then one refit of the winning scale on the
   winning half; sub-blocks with largest magnitude below 1e-16 get scale 0.
3. A super-block whose scales are all 0 is left all zero (``d = 0``, every
   code and index 0). Otherwise ``d = -max_scale/32``, codes
   ``clamp(nearest_int(scale/d), -32, 31)`` stored plus 32, elements
   re-quantized at ``1/(d*code)`` (a code 0 sub-block keeps index 0), and
   ``d = sum w*q*x / sum w*q*q`` over the super-block, stored as fp16.

Dot product with Q8_K (``vec_dot_iq5_k_q8_k``): ``isum = sum_b scale_b *
sum_j q8_j * value_j`` (exact), term ``(d * q8.d) * isum``, canonical reduction.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq5_k_impl``, ``dequantize_row_iq5_k``, ``vec_dot_iq5_k_q8_k``;
``ggml/src/ggml-common.h`` ``block_iq5_k``, ``iq5nl_values`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iqk import IEEE, IQ5NL, QK_K, dot_terms, quantize_superblocks, sigma2_scaled, superblock_weights
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits
from .iq4_k import pack_scales, scale_codes, shifts
from .tables.ik_llama import IQ5NL_VALUES

BLOCK = 16
NSUB = QK_K // BLOCK
NTRY = 5

FORMAT = BlockFormat(
    name="iq5_k", origin="ik_llama", type_id=140, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("extra", "u16", 1, "bit b = shift (grid half) of sub-block b"),
            Field("scales_h", "u8", 4, "bits 4-5 of sub-block b's scale code at bits 2b..2b+1 (as a uint32)"),
            Field("scales_l", "u8", 8, "bits 0-3 of the scale codes: byte i = sub-blocks 2i (low), 2i+1 (high)"),
            Field("qs", "u8", QK_K // 2, "bits 0-3 of the grid indices"),
            Field("qh", "u8", QK_K // 8, "bit 4 of the grid indices")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq5_k_impl, dequantize_row_iq5_k, "
             "vec_dot_iq5_k_q8_k; ggml/src/ggml-common.h block_iq5_k, iq5nl_values @ 8337e4cd",
    imatrix="accepted",
)

# where the bits of element e = 64c + 16s + j live
_E = np.arange(QK_K)
_C, _S, _J = _E // 64, (_E % 64) // 16, _E % 16
QS_BYTE = 32 * _C + 16 * (_S % 2) + _J
QS_SHIFT = 4 * (_S // 2)
QH_BYTE = 16 * (_S % 2) + _J
QH_BIT = 2 * _C + _S // 2


def pack_quants(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """5-bit indices in element order ``(..., 256)`` -> ``(qs[128], qh[32])``."""
    idx = idx.astype(np.int64)
    qs = np.zeros(idx.shape[:-1] + (QK_K // 2,), dtype=np.int64)
    qh = np.zeros(idx.shape[:-1] + (QK_K // 8,), dtype=np.int64)
    for e in range(QK_K):  # each (byte, bit) is written by exactly one element
        qs[..., QS_BYTE[e]] |= (idx[..., e] & 15) << QS_SHIFT[e]
        qh[..., QH_BYTE[e]] |= (idx[..., e] >> 4) << QH_BIT[e]
    return qs.astype(np.uint8), qh.astype(np.uint8)


def unpack_quants(qs: np.ndarray, qh: np.ndarray) -> np.ndarray:
    low = (qs.astype(np.int64)[..., QS_BYTE] >> QS_SHIFT) & 15
    high = (qh.astype(np.int64)[..., QH_BYTE] >> QH_BIT) & 1
    return low | (high << 4)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, NSUB, BLOCK)
    sigma2 = sigma2_scaled(x.reshape(nrows, nsb, QK_K))
    w = superblock_weights(x, imatrix, BLOCK, sigma2, quarter_sigma=True)
    sb = quantize_superblocks(xb, w, IQ5NL, NTRY, refit=True, divisor=32, code_range=(-32, 31), skip_empty=True)
    keep = ~sb.skipped
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["d"] = np.where(keep, f32_to_f16_bits(sb.d), 0)
    blocks["extra"] = (sb.shifted.astype(np.uint32) << np.arange(NSUB, dtype=np.uint32)).sum(axis=-1)
    blocks["scales_h"], blocks["scales_l"] = pack_scales(np.where(keep[..., None], sb.code + 32, 0))
    blocks["qs"], blocks["qh"] = pack_quants(sb.idx.reshape(nrows, nsb, QK_K))
    return FORMAT.to_bytes(blocks)


def _decoded(blocks: np.ndarray):
    scale = scale_codes(blocks) - 32
    shift = shifts(blocks)
    idx = unpack_quants(blocks["qs"], blocks["qh"]).reshape(blocks.shape + (NSUB, BLOCK))
    return scale, 32 * shift[..., None] + idx


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    scale, gidx = _decoded(b)
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(b["d"])[..., None] * scale.astype(F32)
        return (dl[..., None] * IQ5NL_VALUES.astype(F32)[gidx]).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(wq)
    a = q8_k.FORMAT.blocks(aq[None, :])[0]
    scale, gidx = _decoded(b)
    qa = a["qs"].astype(np.int64).reshape(-1, NSUB, BLOCK)
    isum = (scale * (IQ5NL_VALUES.astype(np.int64)[gidx] * qa[None]).sum(axis=-1)).sum(axis=-1)
    return dot_terms(f16_bits_to_f32(b["d"]), a["d"], isum)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
