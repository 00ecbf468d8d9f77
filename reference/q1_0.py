"""Q1_0 (ggml type 41): binary, 128 elements, one sign bit each and one fp16
scale. 1.125 bits per weight.

Block (18 bytes)::

    offset 0   d       fp16     scale
    offset 2   qs[16]  uint8    bit j % 8 of byte j / 8 = sign bit of element j
    element = bit ? d : -d

Quantize (``quantize_row_q1_0_ref``; ggml ignores an importance matrix)::

    d     = (sum_j |x_j|) / 128     (a sequential float sum, then one division)
    bit_j = x_j >= 0                 (-0.0 gives 1)

An all-zero block stores ``d = 0`` and every bit 1 (``00 00 ff ... ff``).

Dot product with Q8_0: one Q1_0 block meets four Q8_0 blocks
(``ggml_vec_dot_q1_0_q8_0_generic``)::

    s_k  = sum over Q8_0 block k of (bit ? a.qs : -a.qs)     (exact)
    sumi = ((d1_0 * s_0 + d1_1 * s_1) + d1_2 * s_2) + d1_3 * s_3,  d1_k = fp16(a_k.d)
    term = fp16(d) * sumi

(each ``d1_k * s_k`` a float32 product of ``s_k`` converted to float), then
the canonical 16-lane reduction of the terms.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q1_0_ref``,
``dequantize_row_q1_0``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_q1_0_q8_0_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, sequential_sum

QK = 128

#: Overflowing scales and junk bytes on decode: IEEE results, no warnings.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

FORMAT = BlockFormat(
    name="q1_0", origin="ggml", type_id=41, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("qs", "u8", QK // 8, "sign bits: bit j%8 of byte j/8 is element j; element = bit ? d : -d")),
    vec_dot_format="q8_0",
    upstream="ggml src/ggml-quants.c quantize_row_q1_0_ref, dequantize_row_q1_0; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q1_0_q8_0_generic @ d99724f2",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored (as ggml)."""
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK, QK)
    with np.errstate(**IEEE):
        d = sequential_sum(np.abs(xb)) / F32(QK)
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["qs"] = np.packbits(xb >= 0, axis=-1, bitorder="little")
    return FORMAT.to_bytes(blocks)


def signs(qs: np.ndarray) -> np.ndarray:
    """``qs (..., 16)`` -> the 128 bits (bool) in element order."""
    return np.unpackbits(qs, axis=-1, bitorder="little").astype(bool)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    d = f16_bits_to_f32(b["d"])[..., None]
    return np.where(signs(b["qs"]), d, -d).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    nrows, nblocks = w.shape
    act = a["qs"].astype(np.int32).reshape(1, nblocks, 4, 32)
    s = np.where(signs(w["qs"]).reshape(nrows, nblocks, 4, 32), act, -act).sum(axis=-1)
    with np.errstate(**IEEE):
        sumi = sequential_sum(f16_bits_to_f32(a["d"]).reshape(1, nblocks, 4) * s.astype(F32))
        return canonical_dot(f16_bits_to_f32(w["d"]) * sumi)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
