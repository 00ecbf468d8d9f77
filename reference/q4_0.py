"""Q4_0 (ggml type 2): 32 elements, one fp16 scale, 4-bit quants with an
implicit offset of 8.

Block (18 bytes)::

    offset 0   d      fp16      scale
    offset 2   qs[16] uint8     low nibble of byte j = element j,
                                high nibble = element j + 16
    element = (q - 8) * d

Quantize without an importance matrix (``quantize_row_q4_0_ref``)::

    max  = the signed element of largest magnitude (first one on ties)
    d    = max / -8                  (so max itself maps to q = 0)
    id   = d != 0 ? 1/d : 0          (float32 d, not the stored fp16)
    q_j  = min(15, trunc(x_j*id + 8.5))   (x_j*id rounded first: no FMA)

An all-zero block stores ``d = -0.0`` (bytes ``00 80``) and quants 8.

With an importance matrix ``qw`` (``quantize_row_q4_0_impl``): per row
``sigma2 = sum(x^2)/n``; weights ``qw_j * sqrt(sigma2 + x_j^2)``; ``d`` and
the quants come from the weighted symmetric search
``make_qx_quants(32, nmax=8, rmse_type=1)`` (see ``_search``). A block
whose magnitudes are all below 1e-15 then stores ``d = +0.0`` and quants 0.

Dot product with Q8_0: ``sumi = sum_j (q_j - 8) * a_j`` (exact), block
contribution ``(sumi * dw) * da``, canonical 16-lane reduction.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q4_0_ref``,
``quantize_row_q4_0_impl``, ``dequantize_row_q4_0``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q4_0_q8_0_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._legacy import pack_nibbles, signed_max_codes, unpack_nibbles
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits
from ._rowstats import imatrix_weights
from ._search import make_qx_quants

QK = 32

FORMAT = BlockFormat(
    name="q4_0", origin="ggml", type_id=2, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("qs", "u8", QK // 2, "4-bit quants q: element j in the low nibble of byte j, "
                                       "element j+16 in the high nibble; value (q - 8) * d")),
    vec_dot_format="q8_0",
    upstream="ggml src/ggml-quants.c quantize_row_q4_0_ref, quantize_row_q4_0_impl, dequantize_row_q4_0; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q4_0_q8_0_generic @ d99724f2",
    imatrix="accepted",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK, QK)
    if imatrix is None:
        d, quants = signed_max_codes(xb, 8)
    else:
        d, quants = make_qx_quants(xb, 8, imatrix_weights(x, imatrix, QK))
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["qs"] = pack_nibbles(quants)
    return FORMAT.to_bytes(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    d = f16_bits_to_f32(b["d"])[..., None]
    return ((unpack_nibbles(b["qs"]) - 8).astype(F32) * d).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    sumi = np.einsum("rbj,rbj->rb", unpack_nibbles(w["qs"]) - 8, a["qs"].astype(np.int32))
    return canonical_dot((sumi.astype(F32) * f16_bits_to_f32(w["d"])) * f16_bits_to_f32(a["d"]))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
