"""Q5_1 (ggml type 7): 32 elements, fp16 scale and fp16 min, 5-bit quants.

Block (24 bytes)::

    offset 0   d      fp16      scale
    offset 2   m      fp16      minimum
    offset 4   qh[4]  uint32 LE bit j = bit 4 of element j
    offset 8   qs[16] uint8     low nibbles, as Q4_1
    element = (low | high << 4) * d + m

Quantize without an importance matrix (``quantize_row_q5_1_ref``): as Q4_1
with ``d = (max - min)/31`` and ``q_j = trunc((x_j - min)*id + 0.5)``; C has
no clamp here and keeps only the low 5 bits of the byte (``& 0x0F`` and
``& 0x10``), so the spec keeps ``q & 31``.

With an importance matrix (``quantize_row_q5_1_impl``): as Q4_1 with
``make_qkx3_quants(32, nmax=31, ...)``.

Dot product with Q8_1: as Q4_1, ``(dw * da) * sumi + m * s``.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q5_1_ref``,
``quantize_row_q5_1_impl``, ``dequantize_row_q5_1``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q5_1_q8_1_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_1
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._legacy import pack_high_bits, pack_nibbles, unpack_high_bits, unpack_nibbles
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits
from ._rowstats import imatrix_weights
from ._search import make_qkx3_quants
from .q4_1 import min_max_quants

QK = 32

FORMAT = BlockFormat(
    name="q5_1", origin="ggml", type_id=7, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("m", "f16", 1, "minimum"),
            Field("qh", "u32", 1, "bit j = bit 4 of element j"),
            Field("qs", "u8", QK // 2, "low 4 bits: element j in the low nibble of byte j, "
                                       "element j+16 in the high nibble; value q * d + m")),
    vec_dot_format="q8_1",
    upstream="ggml src/ggml-quants.c quantize_row_q5_1_ref, quantize_row_q5_1_impl, dequantize_row_q5_1; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q5_1_q8_1_generic @ d99724f2",
    imatrix="accepted",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK, QK)
    if imatrix is None:
        d, minimum, quants = min_max_quants(xb, 31)
        quants = quants & 31
    else:
        d, the_min, quants = make_qkx3_quants(xb, 31, imatrix_weights(x, imatrix, QK))
        minimum = -the_min
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["m"] = f32_to_f16_bits(minimum)
    blocks["qh"] = pack_high_bits(quants)
    blocks["qs"] = pack_nibbles(quants)
    return FORMAT.to_bytes(blocks)


def codes(blocks: np.ndarray) -> np.ndarray:
    return unpack_nibbles(blocks["qs"]) | unpack_high_bits(blocks["qh"])


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    d = f16_bits_to_f32(b["d"])[..., None]
    m = f16_bits_to_f32(b["m"])[..., None]
    return (codes(b).astype(F32) * d + m).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_1.FORMAT.blocks(aq[None, :])
    sumi = np.einsum("rbj,rbj->rb", codes(w), a["qs"].astype(np.int32))
    dd = f16_bits_to_f32(w["d"]) * f16_bits_to_f32(a["d"])
    ms = f16_bits_to_f32(w["m"]) * f16_bits_to_f32(a["s"])
    return canonical_dot(dd * sumi.astype(F32) + ms)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d", "m")
