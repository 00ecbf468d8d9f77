"""Q2_0 (ggml type 42): 64 elements, 2-bit codes for -1, 0, +1, +2 times one
fp16 scale. 2.25 bits per weight.

Block (18 bytes)::

    offset 0   d       fp16     scale
    offset 2   qs[16]  uint8    bits 2(j%4)..2(j%4)+1 of byte j/4 = code of element j
    element = (code - 1) * d

Quantize (``quantize_row_q2_0_ref``; ggml ignores an importance matrix)::

    d      = amax = max_j |x_j|     stored as fp16(d)
    id     = d > 0 ? 1/d : 0        (the float32 d)
    code_j = clamp((int)roundf(x_j * id) + 1, 0, 3)

Quirks, decided:

* Code 3 (``+2*d``) is never written: ``|x*id| <= 1`` up to rounding, so
  ``roundf`` gives -1, 0 or 1. It decodes, in ggml and in the spec. The
  format spends a quarter of its code space on a level its quantizer cannot
  reach; the spec keeps ggml's bytes.
* When ``1/d`` overflows (``d`` below 2**-128), ``x*id`` is +-inf or NaN
  (x = 0); converting those to ``int`` is undefined in C, and x86-64 gives
  INT_MIN, so every code clamps to 0 and the block stores -1 everywhere with
  ``d`` = fp16 0 (``trunc_to_int``, as on x86-64, where ggml's files are made).

Dot product with Q8_0: one Q2_0 block meets two Q8_0 blocks
(``ggml_vec_dot_q2_0_q8_0_generic``)::

    s_k  = sum over Q8_0 block k of (code - 1) * a.qs    (exact)
    sumi = d1_0 * s_0 + d1_1 * s_1,   d1_k = fp16(a_k.d)
    term = fp16(d) * sumi

then the canonical 16-lane reduction of the terms.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q2_0_ref``,
``dequantize_row_q2_0``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_q2_0_q8_0_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, round_half_away, sequential_sum, \
    trunc_to_int

QK = 64

#: ``1/d`` overflows on tiny blocks, scales overflow fp16: IEEE results, no warnings.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

FORMAT = BlockFormat(
    name="q2_0", origin="ggml", type_id=42, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("qs", "u8", QK // 4, "2-bit codes: bits 2(j%4)..2(j%4)+1 of byte j/4 are element j; "
                                       "element = (code - 1) * d")),
    vec_dot_format="q8_0",
    upstream="ggml src/ggml-quants.c quantize_row_q2_0_ref, dequantize_row_q2_0; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q2_0_q8_0_generic @ d99724f2",
)

_SHIFTS = np.arange(0, 8, 2, dtype=np.uint8)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored (as ggml)."""
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK, QK)
    d = np.max(np.abs(xb), axis=-1)
    with np.errstate(**IEEE):
        inverse = np.where(d > 0, F32(1) / d, F32(0)).astype(F32)
        code = np.clip(trunc_to_int(round_half_away(xb * inverse[..., None])).astype(np.int64) + 1, 0, 3)
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["qs"] = np.bitwise_or.reduce(code.astype(np.uint8).reshape(nrows, n // QK, QK // 4, 4) << _SHIFTS,
                                        axis=-1)
    return FORMAT.to_bytes(blocks)


def codes(qs: np.ndarray) -> np.ndarray:
    """``qs (..., 16)`` -> codes ``(..., 64)`` (0..3, uint8) in element order."""
    return ((qs[..., None] >> _SHIFTS) & 3).reshape(qs.shape[:-1] + (QK,))


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    values = codes(b["qs"]).view(np.int8)
    values -= np.int8(1)
    out = values.astype(F32)  # ((int)code - 1) converted to float
    with np.errstate(**IEEE):
        out *= f16_bits_to_f32(b["d"])[..., None]  # ((int)code - 1) * d
    return out.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    nrows, nblocks = w.shape
    values = codes(w["qs"]).astype(np.int32).reshape(nrows, nblocks, 2, 32) - 1
    s = np.einsum("rbkj,rbkj->rbk", values, a["qs"].astype(np.int32).reshape(1, nblocks, 2, 32))
    with np.errstate(**IEEE):
        sumi = sequential_sum(f16_bits_to_f32(a["d"]).reshape(1, nblocks, 2) * s.astype(F32))
        return canonical_dot(f16_bits_to_f32(w["d"]) * sumi)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
