"""F32 (ggml type 0): IEEE binary32, little-endian, one element per block.

Quantize is a copy (``ggml_quantize_chunk`` memcpy); every float, NaN and
inf included, is stored as is. The dot product with an F32 activation row
adds the float32 products ``w[j]*a[j]`` in the canonical 16-lane order
(``ggml_vec_dot_f32`` accumulates in its own order per ISA).

Upstream: ggml ``src/ggml.c`` ``ggml_quantize_chunk``,
``src/ggml-cpu/vec.cpp`` ``ggml_vec_dot_f32`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._float import elementwise_dot, nonfinite_values
from ._format import BlockFormat, Field, Invalid
from ._numerics import F32

FORMAT = BlockFormat(
    name="f32", origin="ggml", type_id=0, block_size=1,
    fields=(Field("v", "f32", 1, "the value"),),
    vec_dot_format="f32",
    upstream="ggml src/ggml.c ggml_quantize_chunk (memcpy) @ d99724f2",
    nonfinite_input="store",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows of float32 -> their bytes (the importance matrix is ignored)."""
    x = np.ascontiguousarray(x, dtype=F32)
    return x.view(np.uint8).reshape(x.shape[0], -1).copy()


def dequantize(q: np.ndarray) -> np.ndarray:
    q = np.ascontiguousarray(q, dtype=np.uint8)
    return q.view("<f4").astype(F32).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    return elementwise_dot(dequantize(wq), dequantize(aq[None, :])[0])


def validate(q: np.ndarray) -> list[Invalid]:
    """Non-finite values are invalid in a weight tensor (``ggml_validate_row_data``)."""
    v = dequantize(q)
    return nonfinite_values(v, v.view(np.uint32), "v")
