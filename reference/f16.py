"""F16 (ggml type 1): IEEE binary16, little-endian, one element per block.

Quantize rounds each float32 to the nearest binary16, ties to even;
magnitudes that round past 65504 become +-inf, NaN becomes 0x7E00 with its
sign (``ggml_compute_fp32_to_fp16``, the software converter ggml-base
uses). Dequantize widens exactly. The dot product with an F16 activation row
adds the float32 products of the widened values in the canonical 16-lane
order.

Upstream: ggml ``src/ggml.c`` ``ggml_fp32_to_fp16_row``,
``src/ggml-impl.h`` ``ggml_compute_fp32_to_fp16`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._float import elementwise_dot, nonfinite_values
from ._format import BlockFormat, Field, Invalid
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits

FORMAT = BlockFormat(
    name="f16", origin="ggml", type_id=1, block_size=1,
    fields=(Field("v", "f16", 1, "the value, binary16"),),
    vec_dot_format="f16",
    upstream="ggml src/ggml.c ggml_fp32_to_fp16_row, src/ggml-impl.h ggml_compute_fp32_to_fp16 @ d99724f2",
    nonfinite_input="store",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    bits = f32_to_f16_bits(np.asarray(x, dtype=F32))
    return np.ascontiguousarray(bits).view(np.uint8).reshape(bits.shape[0], -1)


def dequantize(q: np.ndarray) -> np.ndarray:
    q = np.ascontiguousarray(q, dtype=np.uint8)
    return f16_bits_to_f32(q.view("<u2")).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    return elementwise_dot(dequantize(wq), dequantize(aq[None, :])[0])


def validate(q: np.ndarray) -> list[Invalid]:
    q = np.ascontiguousarray(q, dtype=np.uint8)
    return nonfinite_values(dequantize(q), q.view("<u2"), "v")
