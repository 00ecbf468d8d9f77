"""Q8_1 (ggml type 9): the activation format of Q4_1 and Q5_1; never stored
in files. 32 elements, fp16 scale, fp16 ``s``, 8-bit signed quants.

Block (36 bytes; gguf-py's table says 40, the historical float layout)::

    offset 0   d      fp16      scale
    offset 2   s      fp16      d * sum_j qs[j]   (the term a min multiplies)
    offset 4   qs[32] int8      element j = qs[j] * d

Quantize (``quantize_row_q8_1_ref``): ``d``, ``id`` and ``qs`` exactly as
Q8_0; ``s = fp16((float)sum * d)`` with the integer sum of the 32 quants and
the float32 ``d``. As with Q8_0, ggml's ISA-specific activation quantizers
are a non-conforming variant.

Dequantize (ggml has none; defined here for completeness): ``qs[j] * d``.
Q8_1 has no dot product of its own.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q8_1_ref`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits

QK = 32

FORMAT = BlockFormat(
    name="q8_1", origin="ggml", type_id=9, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("s", "f16", 1, "d * sum of the quants"),
            Field("qs", "i8", QK, "quants: element j = qs[j] * d")),
    vec_dot_format=None,
    upstream="ggml src/ggml-quants.c quantize_row_q8_1_ref @ d99724f2",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    d, quants = q8_0.scale_and_quants(x.reshape(nrows, n // QK, QK))
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["s"] = f32_to_f16_bits(quants.sum(axis=-1).astype(F32) * d)
    blocks["qs"] = quants
    return FORMAT.to_bytes(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    d = f16_bits_to_f32(b["d"])[..., None]
    return (b["qs"].astype(F32) * d).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    raise NotImplementedError("q8_1 is an activation format; it has no dot product of its own")


def validate(q: np.ndarray) -> list[Invalid]:
    """``d`` and ``s`` must be finite (ggml's validator has no Q8_1 case)."""
    return nonfinite_f16(FORMAT.blocks(q), "d", "s")
