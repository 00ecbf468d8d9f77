"""MXFP4 (ggml type 39): OCP microscaling FP4, 32 E2M1 elements with one
shared power-of-two scale (E8M0). 4.25 bits per weight.

Block (17 bytes)::

    offset 0   e       uint8    E8M0 exponent: the scale is 2**(e - 127)
    offset 1   qs[16]  uint8    low nibble of byte j = code of element j,
                                high nibble = code of element j + 16
    element = kvalues_mxfp4[code] * 2**(e - 128)

``kvalues_mxfp4`` holds twice the E2M1 values (0, 1, 2, 3, 4, 6, 8, 12 and
their negatives, code 8 = "-0" = 0) and ``E8M0_HALF[e]`` = 2**(e - 128) is
half the scale (``GGML_E8M0_TO_FP32_HALF``); see ``_fp4``.

Quantize (``quantize_row_mxfp4_ref``; ggml ignores an importance matrix)::

    amax   = max_j |x_j|
    e      = amax > 0 ? (uint8_t)(floorf(log2f(amax)) - 2 + 127) : 0
    code_j = best_index_mxfp4(x_j, E8M0_HALF[e])

``floorf(log2f(amax)) - 2`` puts ``amax`` in [4, 8) times the scale's
half, i.e. the largest element lands on the top levels 8 and 12 (E2M1 4 and
6); elements beyond 12 half-scales saturate to +-12.

Quirks, decided:

* ``log2f`` is libm's, and not every libm rounds it the same way just below
  a power of two. The spec defines it as the correctly rounded float32 log2
  (``_fp4.floor_log2f``, computed from the bits without libm), which is
  what glibc's ``log2f`` returns on every positive float32 (checked
  exhaustively). For the top floats of a binade (up to 44 of them) that
  rounds up to the next integer: ``amax`` = 2**127 * (1 - 2**-24), of
  exponent 126, gets ``e = 252`` as if it were 2**127. An implementation
  with ``frexp`` (the exact exponent) or another libm's ``log2f`` differs
  from ggml's files there.
* ``amax < 2**-125`` makes the float negative before the ``uint8_t``
  conversion (undefined in C); the spec keeps the low byte of the truncated
  int, as x86-64 does: ``amax`` in [2**-126, 2**-125) gives ``e = 0xFF``,
  which ggml's validation rejects; below that e wraps to 0xFE, 0xFD, ...
  All such blocks decode to zeros (their codes are 0 at those huge scales).
* Code 8 (-0) is never written: it ties with code 0 and the first code wins.

Dot product with Q8_0 (``ggml_vec_dot_mxfp4_q8_0_generic``), per block::

    sumi = sum_j kvalues_mxfp4[code_j] * a.qs[j]          (exact)
    term = (fp16(a.d) * E8M0_HALF[e]) * (float)sumi

then the canonical 16-lane reduction of the terms.

Validation (``ggml_validate_row_data``): ``e = 0xFF`` (NaN in OCP MX) is
invalid; every other byte decodes.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_mxfp4_ref``,
``best_index_mxfp4``, ``dequantize_row_mxfp4``; ``src/ggml-impl.h``
``ggml_e8m0_to_fp32_half``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_mxfp4_q8_0_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid
from ._fp4 import E8M0_HALF, KVALUES_MXFP4_F32, best_index_mxfp4, mxfp4_exponent
from ._legacy import pack_nibbles, unpack_nibbles
from ._numerics import F32, canonical_dot, f16_bits_to_f32
from .tables.ggml import KVALUES_MXFP4

QK = 32

#: Huge scales times large codes overflow on junk bytes: IEEE results, no warnings.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

FORMAT = BlockFormat(
    name="mxfp4", origin="ggml", type_id=39, block_size=QK,
    fields=(Field("e", "u8", 1, "E8M0 shared exponent: scale 2**(e-127); 0xFF is invalid"),
            Field("qs", "u8", QK // 2, "4-bit E2M1 codes: element j in the low nibble of byte j, element j+16 in "
                                       "the high nibble; value kvalues_mxfp4[code] * 2**(e-128)")),
    vec_dot_format="q8_0",
    upstream="ggml src/ggml-quants.c quantize_row_mxfp4_ref, dequantize_row_mxfp4; src/ggml-impl.h "
             "ggml_e8m0_to_fp32_half; src/ggml-cpu/quants.c ggml_vec_dot_mxfp4_q8_0_generic @ d99724f2",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored (as ggml)."""
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK, QK)
    e = mxfp4_exponent(np.max(np.abs(xb), axis=-1))
    with np.errstate(**IEEE):
        codes = best_index_mxfp4(xb, E8M0_HALF[e][..., None])
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["e"] = e
    blocks["qs"] = pack_nibbles(codes)
    return FORMAT.to_bytes(blocks)


def _value_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per byte value: the code value of its low nibble and of its high nibble (float32)."""
    byte = np.arange(256)
    return KVALUES_MXFP4_F32[byte & 15], KVALUES_MXFP4_F32[byte >> 4]


_LOW_VALUE, _HIGH_VALUE = _value_tables()


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    nrows, nblocks = b.shape
    out = np.empty((nrows, nblocks, QK), dtype=F32)
    np.take(_LOW_VALUE, b["qs"], out=out[..., :QK // 2])
    np.take(_HIGH_VALUE, b["qs"], out=out[..., QK // 2:])
    with np.errstate(**IEEE):
        out *= E8M0_HALF[b["e"]][..., None]  # code value * d (commutative: the same bits)
    return out.reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    values = KVALUES_MXFP4.astype(np.int32)[unpack_nibbles(w["qs"])]
    sumi = np.einsum("rbj,rbj->rb", values, a["qs"].astype(np.int32))
    with np.errstate(**IEEE):
        return canonical_dot((f16_bits_to_f32(a["d"]) * E8M0_HALF[w["e"]]) * sumi.astype(F32))


def validate(q: np.ndarray) -> list[Invalid]:
    """``e = 0xFF`` is invalid (``ggml_validate_row_data``)."""
    e = FORMAT.blocks(q)["e"]
    return [Invalid(int(r), int(b), "e", 0xFF, "E8M0 0xFF is NaN") for r, b in zip(*np.nonzero(e == 0xFF))]
