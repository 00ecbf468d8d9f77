"""BF16 (ggml type 30): the upper 16 bits of a binary32, one element per block.

Quantize rounds to nearest even on the dropped 16 bits
(``(bits + 0x7fff + ((bits >> 16) & 1)) >> 16``); NaN keeps its upper half
with the quiet bit set (``| 64``). Subnormals are kept (the reference
converter does not flush; ggml's AVX512-BF16 row converter does, but
``ggml_quantize_chunk`` uses the reference one). Dequantize is exact.

Upstream: ggml ``src/ggml.c`` ``ggml_fp32_to_bf16_row_ref``,
``src/ggml-impl.h`` ``ggml_compute_fp32_to_bf16`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._float import elementwise_dot, nonfinite_values
from ._format import BlockFormat, Field, Invalid
from ._numerics import F32, bf16_bits_to_f32, f32_to_bf16_bits

FORMAT = BlockFormat(
    name="bf16", origin="ggml", type_id=30, block_size=1,
    fields=(Field("v", "bf16", 1, "the value, bfloat16"),),
    vec_dot_format="bf16",
    upstream="ggml src/ggml.c ggml_fp32_to_bf16_row_ref, src/ggml-impl.h ggml_compute_fp32_to_bf16 @ d99724f2",
    nonfinite_input="store",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    bits = f32_to_bf16_bits(np.asarray(x, dtype=F32))
    return np.ascontiguousarray(bits).view(np.uint8).reshape(bits.shape[0], -1)


def dequantize(q: np.ndarray) -> np.ndarray:
    q = np.ascontiguousarray(q, dtype=np.uint8)
    return bf16_bits_to_f32(q.view("<u2")).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    return elementwise_dot(dequantize(wq), dequantize(aq[None, :])[0])


def validate(q: np.ndarray) -> list[Invalid]:
    q = np.ascontiguousarray(q, dtype=np.uint8)
    return nonfinite_values(dequantize(q), q.view("<u2"), "v")
