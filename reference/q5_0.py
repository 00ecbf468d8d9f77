"""Q5_0 (ggml type 6): 32 elements, one fp16 scale, 5-bit quants with an
implicit offset of 16.

Block (22 bytes)::

    offset 0   d      fp16      scale
    offset 2   qh[4]  uint32 LE bit j = bit 4 of element j
    offset 6   qs[16] uint8     low nibbles: element j in byte j's low
                                nibble, element j + 16 in its high nibble
    element = ((low | high << 4) - 16) * d

Quantize without an importance matrix (``quantize_row_q5_0_ref``): as Q4_0
with ``d = max / -16`` and ``q_j = min(31, trunc(x_j*id + 16.5))``. An
all-zero block stores ``d = -0.0`` and quants 16 (``00 80 ff ff ff ff 00 ...``).

With an importance matrix (``quantize_row_q5_0_impl``): the weights of Q4_0
and ``make_qx_quants(32, nmax=16, rmse_type=1)``.

Dot product with Q8_0: ``sumi = sum_j (q_j - 16) * a_j``, contribution
``(dw * da) * sumi``, canonical 16-lane reduction.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q5_0_ref``,
``quantize_row_q5_0_impl``, ``dequantize_row_q5_0``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q5_0_q8_0_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._legacy import pack_high_bits, pack_nibbles, signed_max_codes, unpack_high_bits, unpack_nibbles
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits
from ._rowstats import imatrix_weights
from ._search import make_qx_quants

QK = 32

FORMAT = BlockFormat(
    name="q5_0", origin="ggml", type_id=6, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("qh", "u32", 1, "bit j = bit 4 of element j"),
            Field("qs", "u8", QK // 2, "low 4 bits: element j in the low nibble of byte j, "
                                       "element j+16 in the high nibble; value (q - 16) * d")),
    vec_dot_format="q8_0",
    upstream="ggml src/ggml-quants.c quantize_row_q5_0_ref, quantize_row_q5_0_impl, dequantize_row_q5_0; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q5_0_q8_0_generic @ d99724f2",
    imatrix="accepted",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK, QK)
    if imatrix is None:
        d, quants = signed_max_codes(xb, 16)
    else:
        d, quants = make_qx_quants(xb, 16, imatrix_weights(x, imatrix, QK))
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["qh"] = pack_high_bits(quants)
    blocks["qs"] = pack_nibbles(quants)
    return FORMAT.to_bytes(blocks)


def codes(blocks: np.ndarray) -> np.ndarray:
    """The 5-bit codes 0..31 of every element (int32)."""
    return unpack_nibbles(blocks["qs"]) | unpack_high_bits(blocks["qh"])


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    d = f16_bits_to_f32(b["d"])[..., None]
    return ((codes(b) - 16).astype(F32) * d).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    sumi = np.einsum("rbj,rbj->rb", codes(w) - 16, a["qs"].astype(np.int32))
    return canonical_dot((f16_bits_to_f32(w["d"]) * f16_bits_to_f32(a["d"])) * sumi.astype(F32))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
