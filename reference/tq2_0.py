"""TQ2_0 (ggml type 35): ternary, 256 elements, 2-bit codes, one fp16
scale. 2.0625 bits per weight.

Block (66 bytes)::

    offset 0    qs[64]  uint8   byte 32c + m, bits 2n..2n+1 = code of element
                                128c + m + 32n   (c = 0, 1; m = 0..31; n = 0..3)
    offset 64   d       fp16    scale
    element = (code - 1) * d

Quantize (``quantize_row_tq2_0_ref``; ggml ignores an importance matrix)::

    d = max |x_j|,  code_j = lroundf(x_j / d) + 1   (see _ternary)

Quirk, decided: the codes written are 0, 1 and 2 (-1, 0, +1); code 3 never
is, but it decodes, to ``+2*d``, in ggml's ``dequantize_row_tq2_0`` and its
dot products alike, and so it does in the spec.

Dot product with Q8_K (``ggml_vec_dot_tq2_0_q8_K_generic``), per block::

    sumi = sum_j (code_j - 1) * a.qs[j]              (exact)
    term = (float)sumi * (a.d * fp16(d))

then the canonical 16-lane reduction of the terms.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_tq2_0_ref``,
``dequantize_row_tq2_0``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_tq2_0_q8_K_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits
from ._ternary import IEEE, QK_K, scale_and_trits

FORMAT = BlockFormat(
    name="tq2_0", origin="ggml", type_id=35, block_size=QK_K,
    fields=(Field("qs", "u8", QK_K // 4, "2-bit codes: bits 2n..2n+1 of byte 32c+m = element 128c+m+32n; "
                                         "element = (code - 1) * d"),
            Field("d", "f16", 1, "scale")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_tq2_0_ref, dequantize_row_tq2_0; "
             "src/ggml-cpu/quants.c ggml_vec_dot_tq2_0_q8_K_generic @ d99724f2",
)

_SHIFTS = np.arange(0, 8, 2, dtype=np.uint8)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Codes ``(..., 256)`` (0..3) -> ``qs (..., 64)``."""
    c = (codes.astype(np.uint8) & 3).reshape(codes.shape[:-1] + (2, 4, 32))  # [c, n, m]
    return np.bitwise_or.reduce(c << _SHIFTS[:, None], axis=-2).reshape(codes.shape[:-1] + (64,))


def codes(qs: np.ndarray) -> np.ndarray:
    """``qs (..., 64)`` -> codes ``(..., 256)`` (0..3, uint8) in element order."""
    q = qs.reshape(qs.shape[:-1] + (2, 1, 32))
    return ((q >> _SHIFTS[:, None]) & 3).reshape(qs.shape[:-1] + (QK_K,))


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored (as ggml)."""
    nrows, n = x.shape
    d, t = scale_and_trits(x.reshape(nrows, n // QK_K, QK_K))
    blocks = FORMAT.empty_blocks(nrows, n // QK_K)
    blocks["qs"] = pack_codes(t)
    blocks["d"] = f32_to_f16_bits(d)
    return FORMAT.to_bytes(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    values = codes(b["qs"]).view(np.int8)
    values -= np.int8(1)
    out = values.astype(F32)  # (float)(code - 1)
    with np.errstate(**IEEE):
        out *= f16_bits_to_f32(b["d"])[..., None]
    return out.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    sumi = np.einsum("rbj,rbj->rb", codes(w["qs"]).astype(np.int32) - 1, a["qs"].astype(np.int32))
    with np.errstate(**IEEE):
        return canonical_dot(sumi.astype(F32) * (a["d"] * f16_bits_to_f32(w["d"])))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
