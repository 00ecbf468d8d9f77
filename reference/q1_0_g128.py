"""Q1_0_G128 (ik_llama.cpp type 41): binary weights ("Bonsai"), 128 elements,
one sign bit each and one fp16 scale. 1.125 bits per weight.

ik_llama.cpp's type 41 is not mainline ggml's type 41 (``q1_0``), although
the two share the block layout, the decoder and the quantizer: type ids are
namespaced by origin, and ``("ik_llama", 41)`` names this module.

Block (18 bytes)::

    offset 0   d       fp16     scale
    offset 2   qs[16]  uint8    bit j % 8 of byte j / 8 = sign bit of element j
    element = bit ? d : -d

Quantize (``quantize_row_q1_0_g128``, also behind ``quantize_q1_0_g128``;
an importance matrix is ignored)::

    d     = (sum_j |x_j|) / 128     (a sequential float sum, then one division)
    bit_j = x_j >= 0                 (-0.0 gives 1)

Dot product with Q8_0 (ik_llama.cpp reads the activations as Q8_0_X4, four
Q8_0 blocks with their four scales first; the int8 values and scales are
Q8_0's): with ``s_k`` = the exact sum over Q8_0 block k (k = 0..3) of
``bit ? a.qs : -a.qs`` (``vec_dot_q1_0_g128_q8_0``)::

    t_k  = (fp16(d) * fp16(a_k.d)) * (float)s_k
    term = ((t_0 + t_1) + t_2) + t_3

then the canonical 16-lane reduction of the terms (ik_llama.cpp adds the
``t_k`` straight into one running sum).

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_q1_0_g128``, ``dequantize_row_q1_0_g128``,
``vec_dot_q1_0_g128_q8_0``; ``ggml/src/ggml-common.h`` ``block_q1_0_g128``
@ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q1_0, q8_0
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._numerics import F32, canonical_dot, f16_bits_to_f32

QK = 128
IEEE = q1_0.IEEE

FORMAT = BlockFormat(
    name="q1_0_g128", origin="ik_llama", type_id=41, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("qs", "u8", QK // 8, "sign bits: bit j%8 of byte j/8 is element j; element = bit ? d : -d")),
    vec_dot_format="q8_0",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_q1_0_g128, dequantize_row_q1_0_g128, "
             "vec_dot_q1_0_g128_q8_0; ggml/src/ggml-common.h block_q1_0_g128 @ 8337e4cd",
)

assert FORMAT.dtype == q1_0.FORMAT.dtype  # the same block as mainline's Q1_0


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored."""
    return q1_0.quantize(x)


def dequantize(q: np.ndarray) -> np.ndarray:
    return q1_0.dequantize(q)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    nrows, nblocks = w.shape
    act = a["qs"].astype(np.int32).reshape(1, nblocks, 4, 32)
    s = np.where(q1_0.signs(w["qs"]).reshape(nrows, nblocks, 4, 32), act, -act).sum(axis=-1)
    with np.errstate(**IEEE):
        dd = f16_bits_to_f32(w["d"])[..., None] * f16_bits_to_f32(a["d"]).reshape(1, nblocks, 4)
        t = dd * s.astype(F32)
        return canonical_dot(((t[..., 0] + t[..., 1]) + t[..., 2]) + t[..., 3])


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
