"""IQ4_K (ik_llama.cpp type 139): 256-element super-blocks of 16 sub-blocks
of 16, 4-bit indices into the two-half ``iq4k`` grid, a 6-bit signed scale
and a shift bit per sub-block, an fp16 super-block scale (4.5 bits per weight).

Block (144 bytes)::

    offset 0    d            fp16     super-block scale
    offset 2    extra        uint16   bit b = shift of sub-block b (grid half)
    offset 4    scales_h[4]  uint8    bits 4-5 of the scale of sub-block b at
                                      bits 2b..2b+1 (the 4 bytes as one uint32)
    offset 8    scales_l[8]  uint8    bits 0-3: low nibble of byte i = sub-block
                                      2i, high nibble = sub-block 2i+1
    offset 16   qs[128]      uint8    32-element group g = elements 32g..32g+31
                                      (sub-blocks 2g, 2g+1) in qs[16g..16g+15]:
                                      low nibble of byte j = element j, high
                                      nibble = element j+16

    scale_b = (6-bit code) - 32                          (-32 .. 31)
    y[16b + j] = (d * scale_b) * iq4k_values[16*shift_b + q]

Quantize (``quantize_row_iq4_k_impl_bs16``, ntry = 7), per super-block:

1. Weights ``x^2`` (no imatrix) or ``qw*sqrtf(sigma2 + x^2)`` with
   ``sigma2 = 2*sum(x^2)/256`` and ``qw`` the imatrix after
   ``QHelper::row_weights`` (blocks of 16).
2. Per sub-block, the shift sweep (``_iqk.shift_sweep``) gives a float scale
   and the shift bit; a sub-block whose largest magnitude is below 1e-16 gets
   scale 0 and no shift.
3. ``d = -max_scale/32``, ``max_scale`` the signed scale of largest
   magnitude (the first one on ties). Each sub-block's code is
   ``clamp(nearest_int(scale/d), -32, 31)``, and its elements are re-quantized
   to the nearest value of its half at ``1/(d*code)`` (0 if that is 0).
4. ``d = sum w*q*x / sum w*q*q`` over the super-block (``q`` = grid value
   times code, element order), if the denominator is positive; stored as fp16.
   An all-zero super-block stores ``d = -0.0`` and codes 32 (scale 0).

Dot product with Q8_K (``vec_dot_iq4_k_q8_k``): ``isum = sum_b scale_b *
sum_j q8_j * value_j`` (exact), term ``(d * q8.d) * isum``, canonical
reduction. ik_llama.cpp's Q8_K block has an extra float this does not read.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq4_k_impl_bs16``, ``dequantize_row_iq4_k``,
``vec_dot_iq4_k_q8_k``; ``ggml/src/ggml-common.h`` ``block_iq4_k`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iqk import IEEE, IQ4K, QK_K, dot_terms, quantize_superblocks, superblock_sigma2, superblock_weights
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits
from .tables.ik_llama import IQ4K_VALUES

BLOCK = 16
NSUB = QK_K // BLOCK
NTRY = 7

FORMAT = BlockFormat(
    name="iq4_k", origin="ik_llama", type_id=139, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("extra", "u16", 1, "bit b = shift (grid half) of sub-block b"),
            Field("scales_h", "u8", 4, "bits 4-5 of sub-block b's scale code at bits 2b..2b+1 (as a uint32)"),
            Field("scales_l", "u8", 8, "bits 0-3 of the scale codes: byte i = sub-blocks 2i (low), 2i+1 (high)"),
            Field("qs", "u8", QK_K // 2, "4-bit grid indices: qs[16g + j] = element 32g+j (low nibble), "
                                         "32g+j+16 (high nibble)")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq4_k_impl_bs16, dequantize_row_iq4_k, "
             "vec_dot_iq4_k_q8_k; ggml/src/ggml-common.h block_iq4_k, iq4k_values @ 8337e4cd",
    imatrix="accepted",
)


def pack_scales(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """6-bit codes ``(..., 16)`` -> ``(scales_h[4], scales_l[8])``."""
    c = codes.astype(np.uint32)
    low = (c & 15).astype(np.uint8)
    scales_l = low[..., 0::2] | (low[..., 1::2] << 4)
    h32 = ((c >> 4) << (2 * np.arange(NSUB, dtype=np.uint32))).sum(axis=-1, dtype=np.uint32)
    scales_h = np.stack([(h32 >> (8 * i)) & 255 for i in range(4)], axis=-1).astype(np.uint8)
    return scales_h, scales_l


def scale_codes(blocks: np.ndarray) -> np.ndarray:
    """The 6-bit scale codes ``(..., 16)`` (int64) of structured blocks."""
    sl = blocks["scales_l"].astype(np.int64)
    low = np.stack([sl & 15, sl >> 4], axis=-1).reshape(sl.shape[:-1] + (NSUB,))
    h32 = (blocks["scales_h"].astype(np.int64) << (8 * np.arange(4))).sum(axis=-1)
    high = (h32[..., None] >> (2 * np.arange(NSUB))) & 3
    return low | (high << 4)


def shifts(blocks: np.ndarray) -> np.ndarray:
    return (blocks["extra"].astype(np.int64)[..., None] >> np.arange(NSUB)) & 1


def pack_quants(idx: np.ndarray) -> np.ndarray:
    """4-bit indices in element order ``(..., 256)`` -> ``qs[128]``."""
    g = idx.reshape(idx.shape[:-1] + (QK_K // 32, 32)).astype(np.uint8)
    return (g[..., :16] | (g[..., 16:] << 4)).reshape(idx.shape[:-1] + (QK_K // 2,))


def unpack_quants(qs: np.ndarray) -> np.ndarray:
    g = qs.reshape(qs.shape[:-1] + (QK_K // 32, 16)).astype(np.int64)
    return np.concatenate([g & 15, g >> 4], axis=-1).reshape(qs.shape[:-1] + (QK_K,))


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, NSUB, BLOCK)
    sigma2 = superblock_sigma2(x.reshape(nrows, nsb, QK_K), 2.0)
    w = superblock_weights(x, imatrix, BLOCK, sigma2, quarter_sigma=False)
    sb = quantize_superblocks(xb, w, IQ4K, NTRY, refit=False, divisor=32, code_range=(-32, 31), skip_empty=False)
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["d"] = f32_to_f16_bits(sb.d)
    blocks["extra"] = (sb.shifted.astype(np.uint32) << np.arange(NSUB, dtype=np.uint32)).sum(axis=-1)
    blocks["scales_h"], blocks["scales_l"] = pack_scales(sb.code + 32)
    blocks["qs"] = pack_quants(sb.idx.reshape(nrows, nsb, QK_K))
    return FORMAT.to_bytes(blocks)


def _decoded(blocks: np.ndarray):
    scale = scale_codes(blocks) - 32
    shift = shifts(blocks)
    idx = unpack_quants(blocks["qs"]).reshape(blocks.shape + (NSUB, BLOCK))
    return scale, 16 * shift[..., None] + idx


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    scale, gidx = _decoded(b)
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(b["d"])[..., None] * scale.astype(F32)
        return (dl[..., None] * IQ4K_VALUES.astype(F32)[gidx]).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(wq)
    a = q8_k.FORMAT.blocks(aq[None, :])[0]
    scale, gidx = _decoded(b)
    qa = a["qs"].astype(np.int64).reshape(-1, NSUB, BLOCK)
    isum = (scale * (IQ4K_VALUES.astype(np.int64)[gidx] * qa[None]).sum(axis=-1)).sum(axis=-1)
    return dot_terms(f16_bits_to_f32(b["d"]), a["d"], isum)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
