"""IQ6_K (ik_llama.cpp type 141): 256-element super-blocks of 16 sub-blocks
of 16, 6-bit indices into the two-half ``iq6nl`` grid, an int8 scale and a
shift bit per sub-block, an fp16 super-block scale (6.625 bits per weight).

Block (212 bytes)::

    offset 0    d           fp16     super-block scale
    offset 2    extra       uint16   bit b = shift of sub-block b (+1 on the grid)
    offset 4    scales[16]  int8     sub-block scales
    offset 20   qs[128]     uint8    bits 0-3 of the indices
    offset 148  qh[64]      uint8    bits 4-5 of the indices

    element e = 64*c + 16*s + j (c = 0..3, sub-block 4c+s, j = 0..15):
        bits 0-3  nibble s//2 of qs[32c + 16*(s%2) + j]
        bits 4-5  bits 4*(c%2) + 2*(s//2) .. +1 of qh[32*(c//2) + 16*(s%2) + j]
    y[e] = (d * scales[b]) * iq6nl_values[64*shift_b + q]

The second half of ``iq6nl_values`` is the first plus 1, so the value is
also ``iq6nl_values[q] + shift_b``.

The table is the spec. ik_llama.cpp's quantizer, its CUDA dequantizer
(``dl*(iq6nl_values[q] + shift)``) and its SIMD dot products use it; its CPU
``dequantize_row_iq6_k`` (the ``to_float`` of ``type_traits``) instead
evaluates the cubic the table was rounded from::

    y = dl * (-127 + q*(6.2568 + q*(-0.11218 + q*0.0011972)) + shift)

which is off the table by up to 0.49 grid steps (and whose bits depend on
FMA contraction). ``cpu_to_float`` evaluates it as a build without
contraction does; tests/vectors shows where it departs from the table.

Quantize (``quantize_row_iq6_k_impl``, ntry = 5), per super-block
(``_iqk.quantize_superblocks``): weights as IQ5_K (``0.25*sigma2 + x^2`` or
``qw*sqrtf(sigma2 + x^2)``, ``sigma2 = 2*sum(x^2)/256``), the shift sweep on
float copies of the grid (the same values), one refit, ``d =
-max_scale/127``, int8 scales ``clamp(nearest_int(scale/d), -127, 127)``,
re-quantization, ``d = sum w*q*x / sum w*q*q``, fp16. An all-zero
super-block is left all zero.

Dot product with Q8_K: ``isum = sum_b scales[b] * sum_j q8_j * value_j``
(exact, table values), term ``(d * q8.d) * isum``, canonical reduction.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq6_k_impl``, ``best_index_iq6nl``, ``dequantize_row_iq6_k``;
``ggml/src/ggml-cuda/convert.cu`` ``dequantize_block_iq6_k``;
``ggml/src/ggml-common.h`` ``block_iq6_k``, ``iq6nl_values`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iqk import IEEE, IQ6NL, QK_K, dot_terms, quantize_superblocks, sigma2_scaled, superblock_weights
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits
from .iq4_k import shifts
from .tables.ik_llama import IQ6NL_VALUES

BLOCK = 16
NSUB = QK_K // BLOCK
NTRY = 5

FORMAT = BlockFormat(
    name="iq6_k", origin="ik_llama", type_id=141, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("extra", "u16", 1, "bit b = shift (grid half, +1) of sub-block b"),
            Field("scales", "i8", NSUB, "sub-block scales"),
            Field("qs", "u8", QK_K // 2, "bits 0-3 of the grid indices"),
            Field("qh", "u8", QK_K // 4, "bits 4-5 of the grid indices")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq6_k_impl, dequantize_row_iq6_k; "
             "ggml/src/ggml-cuda/convert.cu dequantize_block_iq6_k; ggml/src/ggml-common.h block_iq6_k, "
             "iq6nl_values @ 8337e4cd",
    imatrix="accepted",
)

_E = np.arange(QK_K)
_C, _S, _J = _E // 64, (_E % 64) // 16, _E % 16
QS_BYTE = 32 * _C + 16 * (_S % 2) + _J
QS_SHIFT = 4 * (_S // 2)
QH_BYTE = 32 * (_C // 2) + 16 * (_S % 2) + _J
QH_SHIFT = 4 * (_C % 2) + 2 * (_S // 2)

#: The cubic of ``dequantize_row_iq6_k`` (``A_IQ6K`` .. ``D_IQ6K``).
POLY_A, POLY_B, POLY_C, POLY_D = F32(-127.0), F32(6.2568), F32(0.11218), F32(0.0011972)


def pack_quants(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """6-bit indices in element order ``(..., 256)`` -> ``(qs[128], qh[64])``."""
    idx = idx.astype(np.int64)
    qs = np.zeros(idx.shape[:-1] + (QK_K // 2,), dtype=np.int64)
    qh = np.zeros(idx.shape[:-1] + (QK_K // 4,), dtype=np.int64)
    for e in range(QK_K):
        qs[..., QS_BYTE[e]] |= (idx[..., e] & 15) << QS_SHIFT[e]
        qh[..., QH_BYTE[e]] |= (idx[..., e] >> 4) << QH_SHIFT[e]
    return qs.astype(np.uint8), qh.astype(np.uint8)


def unpack_quants(qs: np.ndarray, qh: np.ndarray) -> np.ndarray:
    low = (qs.astype(np.int64)[..., QS_BYTE] >> QS_SHIFT) & 15
    high = (qh.astype(np.int64)[..., QH_BYTE] >> QH_SHIFT) & 3
    return low | (high << 4)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, NSUB, BLOCK)
    sigma2 = sigma2_scaled(x.reshape(nrows, nsb, QK_K))
    w = superblock_weights(x, imatrix, BLOCK, sigma2, quarter_sigma=True)
    sb = quantize_superblocks(xb, w, IQ6NL, NTRY, refit=True, divisor=127, code_range=(-127, 127),
                              skip_empty=True)
    keep = ~sb.skipped
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["d"] = np.where(keep, f32_to_f16_bits(sb.d), 0)
    blocks["extra"] = (sb.shifted.astype(np.uint32) << np.arange(NSUB, dtype=np.uint32)).sum(axis=-1)
    blocks["scales"] = np.where(keep[..., None], sb.code, 0)
    blocks["qs"], blocks["qh"] = pack_quants(sb.idx.reshape(nrows, nsb, QK_K))
    return FORMAT.to_bytes(blocks)


def _decoded(blocks: np.ndarray):
    idx = unpack_quants(blocks["qs"], blocks["qh"]).reshape(blocks.shape + (NSUB, BLOCK))
    return blocks["scales"].astype(np.int64), shifts(blocks), idx


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    scale, shift, idx = _decoded(b)
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(b["d"])[..., None] * scale.astype(F32)
        return (dl[..., None] * IQ6NL_VALUES.astype(F32)[64 * shift[..., None] + idx]).reshape(q.shape[0], -1)


def cpu_to_float(q: np.ndarray) -> np.ndarray:
    """ik_llama.cpp's CPU ``dequantize_row_iq6_k``: the cubic instead of the
    table, evaluated without contraction (``-ffp-contract=off``)::

        dl * (A + q*(B + q*(-C + q*D)) + m),   m = shift ? 1.0 : 0.0
    """
    b = FORMAT.blocks(q)
    scale, shift, idx = _decoded(b)
    qf = idx.astype(F32)
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(b["d"])[..., None] * scale.astype(F32)
        poly = POLY_A + qf * (POLY_B + qf * (-POLY_C + qf * POLY_D)) + shift[..., None].astype(F32)
        return (dl[..., None] * poly).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(wq)
    a = q8_k.FORMAT.blocks(aq[None, :])[0]
    scale, shift, idx = _decoded(b)
    qa = a["qs"].astype(np.int64).reshape(-1, NSUB, BLOCK)
    values = IQ6NL_VALUES.astype(np.int64)[64 * shift[..., None] + idx]
    isum = (scale * (values * qa[None]).sum(axis=-1)).sum(axis=-1)
    return dot_terms(f16_bits_to_f32(b["d"]), a["d"], isum)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
