"""Q4_1 (ggml type 3): 32 elements, fp16 scale and fp16 min, 4-bit quants.

Block (20 bytes)::

    offset 0   d      fp16      scale
    offset 2   m      fp16      minimum
    offset 4   qs[16] uint8     element j in the low nibble of byte j,
                                element j + 16 in the high nibble
    element = q * d + m

Quantize without an importance matrix (``quantize_row_q4_1_ref``)::

    min, max = extremes of the block
    d   = (max - min) / 15
    id  = d != 0 ? 1/d : 0
    q_j = min(15, trunc((x_j - min)*id + 0.5))
    store d and m = min, both rounded to fp16

With an importance matrix (``quantize_row_q4_1_impl``): weights
``qw_j * sqrt(sigma2 + x_j^2)`` with the row's ``sigma2 = sum(x^2)/n``;
``d``, the min and the quants come from the weighted asymmetric search
``make_qkx3_quants(32, nmax=15, rmin=-0.9, rdelta=0.05, nstep=36)``; the
stored ``m`` is the negated min the search returns.

Dot product with Q8_1: ``sumi = sum_j q_j * a_j``, block contribution
``(dw * da) * sumi + m * s`` (s of the Q8_1 block), canonical reduction.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q4_1_ref``,
``quantize_row_q4_1_impl``, ``dequantize_row_q4_1``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q4_1_q8_1_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_1
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._legacy import pack_nibbles, unpack_nibbles
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, first_max, first_min, inverse_or_zero, trunc_to_int, wrap_int8
from ._rowstats import imatrix_weights
from ._search import make_qkx3_quants

QK = 32

FORMAT = BlockFormat(
    name="q4_1", origin="ggml", type_id=3, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("m", "f16", 1, "minimum"),
            Field("qs", "u8", QK // 2, "4-bit quants q: element j in the low nibble of byte j, "
                                       "element j+16 in the high nibble; value q * d + m")),
    vec_dot_format="q8_1",
    upstream="ggml src/ggml-quants.c quantize_row_q4_1_ref, quantize_row_q4_1_impl, dequantize_row_q4_1; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q4_1_q8_1_generic @ d99724f2",
    imatrix="accepted",
)


def min_max_quants(xb: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference min/max quantizer of Q4_1 (levels 15) and Q5_1 (levels 31):
    float32 ``d``, ``min`` and the truncated, unclamped codes (low byte, int32)."""
    vmin = first_min(xb)  # the C loop keeps the first of equal values: the sign of a zero min
    vmax = first_max(xb)
    d = (vmax - vmin) / F32(levels)
    scaled = (xb - vmin[..., None]) * inverse_or_zero(d)[..., None]
    return d, vmin, wrap_int8(trunc_to_int(scaled + F32(0.5)))


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK, QK)
    if imatrix is None:
        d, minimum, quants = min_max_quants(xb, 15)
        quants = np.minimum(15, quants)
    else:
        d, the_min, quants = make_qkx3_quants(xb, 15, imatrix_weights(x, imatrix, QK))
        minimum = -the_min
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["m"] = f32_to_f16_bits(minimum)
    blocks["qs"] = pack_nibbles(quants)
    return FORMAT.to_bytes(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    d = f16_bits_to_f32(b["d"])[..., None]
    m = f16_bits_to_f32(b["m"])[..., None]
    return (unpack_nibbles(b["qs"]).astype(F32) * d + m).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_1.FORMAT.blocks(aq[None, :])
    sumi = np.einsum("rbj,rbj->rb", unpack_nibbles(w["qs"]), a["qs"].astype(np.int32))
    dd = f16_bits_to_f32(w["d"]) * f16_bits_to_f32(a["d"])
    ms = f16_bits_to_f32(w["m"]) * f16_bits_to_f32(a["s"])
    return canonical_dot(dd * sumi.astype(F32) + ms)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d", "m")
