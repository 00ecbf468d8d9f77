"""Q8_0 (ggml type 8): 32 elements, one fp16 scale, 8-bit signed quants.

Block (34 bytes)::

    offset 0   d      fp16      scale
    offset 2   qs[32] int8      element j = qs[j] * d

Quantize (``quantize_row_q8_0_ref``, also the normative activation quantizer
of the formats that dot with Q8_0)::

    amax = max_j |x_j|
    d    = amax / 127              (float32; stored rounded to fp16)
    id   = d != 0 ? 1/d : 0        (from the float32 d, not the stored one)
    qs_j = roundf(x_j * id)        (ties away from zero)

ggml's CPU activation quantizers (``quantize_row_q8_0`` on AVX2/NEON/WASM)
use ``127/amax`` and ties-to-even or truncation instead; they are a
non-conforming variant and give other bytes on ties (formats-ggml.md §0.3).

Dot product with Q8_0: per block ``sumi = sum_j w_j * a_j`` (exact integer),
contribution ``sumi * (dw * da)``, reduced in the canonical 16-lane order.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q8_0_ref``,
``dequantize_row_q8_0``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_q8_0_q8_0_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, inverse_or_zero, round_half_away, trunc_to_int, wrap_int8

QK = 32

FORMAT = BlockFormat(
    name="q8_0", origin="ggml", type_id=8, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("qs", "i8", QK, "quants: element j = qs[j] * d")),
    vec_dot_format="q8_0",
    upstream="ggml src/ggml-quants.c quantize_row_q8_0_ref, dequantize_row_q8_0; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q8_0_q8_0_generic @ d99724f2",
)


def scale_and_quants(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 ``d`` and the stored int8 quants (as int32) of blocks
    ``x[..., 32]`` (shared with Q8_1). A subnormal ``d`` can make ``id`` inf;
    the non-finite products then store 0 (see ``trunc_to_int``)."""
    amax = np.max(np.abs(x), axis=-1)
    d = amax / F32(127)
    quants = wrap_int8(trunc_to_int(round_half_away(x * inverse_or_zero(d)[..., None])))
    return d.astype(F32), quants


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored (as ggml)."""
    nrows, n = x.shape
    d, quants = scale_and_quants(x.reshape(nrows, n // QK, QK))
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["qs"] = quants
    return FORMAT.to_bytes(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    d = f16_bits_to_f32(b["d"])[..., None]
    return (b["qs"].astype(F32) * d).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), FORMAT.blocks(aq[None, :])
    sumi = np.einsum("rbj,rbj->rb", w["qs"].astype(np.int32), a["qs"].astype(np.int32))
    dd = f16_bits_to_f32(w["d"]) * f16_bits_to_f32(a["d"])
    return canonical_dot(sumi.astype(F32) * dd)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
