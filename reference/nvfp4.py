"""NVFP4 (ggml type 40): 64 E2M1 elements in 4 sub-blocks of 16, each with
its own unsigned E4M3 (UE4M3) scale. 4.5 bits per weight.

Block (36 bytes)::

    offset 0   d[4]    uint8    UE4M3 scale of sub-block s (elements 16s .. 16s+15)
    offset 4   qs[32]  uint8    sub-block s = bytes 8s .. 8s+7: low nibble of
                                byte 8s + j = code of element 16s + j,
                                high nibble = code of element 16s + 8 + j
    element 16s + i = kvalues_mxfp4[code] * UE4M3_HALF[d[s]]

``UE4M3_HALF[b]`` = ``ggml_ue4m3_to_fp32(b)`` is half the scale (the codes'
values are doubled E2M1); see ``_fp4`` for the conversions both ways.

Quantize (``quantize_row_nvfp4_ref``; ggml ignores an importance matrix),
per sub-block of 16::

    amax   = max |x_j|
    d[s]   = fp32_to_ue4m3(amax / 6)       (6: the largest E2M1 magnitude)
    code_j = best_index_mxfp4(x_j, UE4M3_HALF[d[s]])

Quirks, decided (ggml's bytes kept):

* ``fp32_to_ue4m3`` rounds half up on the top mantissa bits and maps every
  value from 256 up (biased exponent 15) to 0x7E = 448, so ``amax/6`` in
  [256, 448] gets 448 and the scale bytes 0x78..0x7D are never written;
  ``amax/6`` above 448 saturates too, and the elements then clamp at +-12
  half-scales.
* UE4M3 has no sign: decoding ignores bit 7 except that 0x7F (E4M3's NaN)
  decodes to 0 and 0xFF to 240. No scale byte is invalid (ggml validates
  nothing for NVFP4, and neither does the spec).
* Code 8 (-0) is never written (it ties with code 0, the first code wins).

Dot product with Q8_0: one NVFP4 block meets two Q8_0 blocks, sub-blocks
``2k`` and ``2k+1`` the halves of Q8_0 block k
(``ggml_vec_dot_nvfp4_q8_0_generic``)::

    sumi_s = sum_{j<16} kvalues_mxfp4[code] * a.qs     (exact)
    term_s = (fp16(a_k.d) * UE4M3_HALF[d[s]]) * (float)sumi_s
    contribution = ((term_0 + term_1) + term_2) + term_3

ggml adds each ``term_s`` straight into its running sum; the spec adds the
four terms of a block in the same order first, then reduces the block
contributions in the canonical 16-lane order.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_nvfp4_ref``,
``dequantize_row_nvfp4``; ``src/ggml-impl.h`` ``ggml_ue4m3_to_fp32``,
``ggml_fp32_to_ue4m3``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_nvfp4_q8_0_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid
from ._fp4 import KVALUES_MXFP4_F32, UE4M3_HALF, best_index_mxfp4, fp32_to_ue4m3
from ._numerics import F32, canonical_dot, f16_bits_to_f32, sequential_sum
from .tables.ggml import KVALUES_MXFP4

QK, SUB = 64, 16
NSUB = QK // SUB

#: Saturated scales and junk bytes: IEEE results, no warnings.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

FORMAT = BlockFormat(
    name="nvfp4", origin="ggml", type_id=40, block_size=QK,
    fields=(Field("d", "u8", NSUB, "UE4M3 scale of each sub-block of 16 elements"),
            Field("qs", "u8", QK // 2, "4-bit E2M1 codes: element 16s+j in the low nibble of byte 8s+j, element "
                                       "16s+8+j in the high nibble; value kvalues_mxfp4[code] * ue4m3(d[s])/2")),
    vec_dot_format="q8_0",
    upstream="ggml src/ggml-quants.c quantize_row_nvfp4_ref, dequantize_row_nvfp4; src/ggml-impl.h "
             "ggml_ue4m3_to_fp32, ggml_fp32_to_ue4m3; src/ggml-cpu/quants.c ggml_vec_dot_nvfp4_q8_0_generic "
             "@ d99724f2",
)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Codes ``(..., 64)`` -> ``qs (..., 32)``."""
    c = codes.astype(np.uint8).reshape(codes.shape[:-1] + (NSUB, 2, SUB // 2))
    return (c[..., 0, :] | (c[..., 1, :] << 4)).reshape(codes.shape[:-1] + (QK // 2,))


def unpack_codes(qs: np.ndarray) -> np.ndarray:
    """``qs (..., 32)`` -> codes ``(..., 64)`` (uint8) in element order."""
    q = qs.reshape(qs.shape[:-1] + (NSUB, 1, SUB // 2))
    return np.concatenate([q & 15, q >> 4], axis=-2).reshape(qs.shape[:-1] + (QK,))


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored (as ggml)."""
    nrows, n = x.shape
    xs = x.reshape(nrows, n // QK, NSUB, SUB)
    scale = fp32_to_ue4m3(np.max(np.abs(xs), axis=-1) / F32(6))
    with np.errstate(**IEEE):
        codes = best_index_mxfp4(xs, UE4M3_HALF[scale][..., None])
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = scale
    blocks["qs"] = pack_codes(codes.reshape(nrows, n // QK, QK))
    return FORMAT.to_bytes(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    nrows, nblocks = b.shape
    out = np.take(KVALUES_MXFP4_F32, unpack_codes(b["qs"])).reshape(nrows, nblocks, NSUB, SUB)
    with np.errstate(**IEEE):
        out *= UE4M3_HALF[b["d"]][..., None]  # code value * d (commutative: the same bits)
    return out.reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    nrows, nblocks = w.shape
    values = KVALUES_MXFP4.astype(np.int32)[unpack_codes(w["qs"])].reshape(nrows, nblocks, NSUB, SUB)
    sumi = np.einsum("rbsj,rbsj->rbs", values, a["qs"].astype(np.int32).reshape(1, nblocks, NSUB, SUB))
    dy = np.repeat(f16_bits_to_f32(a["d"]).reshape(1, nblocks, 2), 2, axis=-1)  # Q8_0 block s // 2
    with np.errstate(**IEEE):
        terms = (dy * UE4M3_HALF[w["d"]]) * sumi.astype(F32)
        return canonical_dot(sequential_sum(terms))


def validate(q: np.ndarray) -> list[Invalid]:
    """Every block is valid: each byte of ``d`` decodes (``ggml_validate_row_data``
    checks nothing for NVFP4)."""
    FORMAT.blocks(q)
    return []
