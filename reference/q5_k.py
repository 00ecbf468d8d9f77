"""Q5_K (ggml type 13): Q4_K with a fifth bit per code. 256-element
super-blocks of 8 sub-blocks of 32, 5-bit codes, 6-bit scales and mins,
fp16 ``d`` and ``dmin``. 5.5 bits per weight.

Block (176 bytes)::

    offset 0    d           fp16    scale of the sub-block scales
    offset 2    dmin        fp16    scale of the sub-block mins
    offset 4    scales[12]  uint8   8 6-bit scales sc_j and 8 6-bit mins m_j,
                                    packed as Q4_K (get_scale_min_k4)
    offset 16   qh[32]      uint8   bit 4 of the code: element 32k + l is bit
                                    k of byte l (ONE_BIT)
    offset 48   qs[128]     uint8   bits 0-3 of the code: element 64c + 32s + l
                                    at bits 4s of byte 32c + l (FOUR_BIT)
    element = (d * sc_j) * q - (dmin * m_j)      (sub-block j = element // 32)

Quantize: as Q4_K with ``nmax = 31``; without an importance matrix
(``quantize_row_q5_K_ref``) the sub-block search is ``make_qkx2_quants(32,
31, weights av_x + |x|, rmin=-0.5, rdelta=0.1, nstep=15)``; with one
(``quantize_row_q5_K_impl``) it is ``make_qkx3_quants(32, 31, w, -0.9,
0.05, 36)`` and the ``make_qp_quants`` codes of the scales and mins are
clamped to 63 before packing. Requantized codes are clamped to [0, 31].

Dot product with Q8_K: as Q4_K (``isum`` over the 5-bit codes, ``msum`` over
the mins and ``bsums``), canonical 16-lane order.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q5_K_ref``,
``quantize_row_q5_K_impl``, ``dequantize_row_q5_K``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q5_K_q8_K_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._kquants import IEEE, FOUR_BIT, ONE_BIT, QK_K, CodeLayout, quantize_rows
from ._numerics import F32, f32_to_f16_bits
from .q4_k import NSUB, SUB, dot_terms, requantized_codes, scales_and_mins, sub_block_scales

FORMAT = BlockFormat(
    name="q5_k", origin="ggml", type_id=13, block_size=QK_K,
    fields=(Field("d", "f16", 1, "scale of the sub-block scales"),
            Field("dmin", "f16", 1, "scale of the sub-block mins"),
            Field("scales", "u8", 12, "8 6-bit scales sc_j and 8 6-bit mins m_j (get_scale_min_k4)"),
            Field("qh", "u8", 32, "bit 4 of the 5-bit code q: element 32k+l is bit k of byte l"),
            Field("qs", "u8", 128, "bits 0-3 of q: element 64c+32s+l at bits 4s of byte 32c+l; "
                                   "element = d*sc_j*q - dmin*m_j, j = element//32")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_q5_K_ref, quantize_row_q5_K_impl, dequantize_row_q5_K; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q5_K_q8_K_generic @ d99724f2",
    imatrix="accepted",
)


#: The 5-bit codes: bits 0-3 in ``qs``, bit 4 in ``qh``.
CODES = CodeLayout((("qs", FOUR_BIT, 0), ("qh", ONE_BIT, 4)))


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    packed, d, dmin, codes = sub_block_scales(xs, qw, 31, (-0.5, 0.1, 15), clamp_imatrix_codes=True)
    blocks = np.zeros(xs.shape[0], dtype=FORMAT.dtype)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["dmin"] = f32_to_f16_bits(dmin)
    blocks["scales"] = packed
    codes = requantized_codes(blocks, xs, codes, 31)
    CODES.pack(blocks, codes)
    return blocks


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


def codes(blocks: np.ndarray) -> np.ndarray:
    """The 5-bit codes 0..31 of every element, ``(..., 256)`` uint8."""
    return CODES.values(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _dequantize(q)


def _dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    dl, ml = scales_and_mins(b)
    values = codes(b).reshape(b.shape + (NSUB, SUB)).astype(F32)
    values *= dl[..., None]  # (d * sc) * q - (dmin * m), in place
    values -= ml[..., None]
    return values.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _vec_dot(wq, aq)


def _vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    return dot_terms(w, a, codes(w).astype(np.int32))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d", "dmin")
