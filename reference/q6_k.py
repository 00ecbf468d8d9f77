"""Q6_K (ggml type 14): 256-element super-blocks of 16 sub-blocks of 16,
6-bit codes, an int8 scale per sub-block and an fp16 ``d``. 6.5625 bits
per weight.

Block (210 bytes)::

    offset 0    ql[128]     uint8   bits 0-3 of the code: element 128h + 64s
                                    + i at bits 4s of byte 64h + i (Q6_LOW)
    offset 128  qh[64]      uint8   bits 4-5 of the code: element 128h + 32s
                                    + l at bits 2s of byte 32h + l (Q6_HIGH)
    offset 192  scales[16]  int8    sub-block scale s_j
    offset 208  d           fp16    super-block scale
    element = (d * s_j) * (q - 32)

Quantize without an importance matrix (``quantize_row_q6_K_ref``), per
super-block:

1. Every sub-block: ``(scale_j, L) = make_qx_quants(16, nmax=32,
   rmse_type=1)`` with the weights ``x^2``: the weighted least-squares
   symmetric search over 19 trial scales.
2. ``max_scale`` = the scale of largest magnitude (first one). If its
   magnitude is below 1e-15 the whole block is zero bytes. Otherwise
   ``iscale = -128/max_scale``, ``d = 1/iscale``, ``s_j = min(127,
   nearest_int(iscale * scale_j))`` (the largest gets -128).
3. Requantize with the stored values: ``dl = fp16(d) * s_j``; where ``dl !=
   0``, ``q = clamp(nearest_int(x / dl), -32, 31) + 32``; where ``dl == 0``
   the codes of step 1 stay.

Huge inputs: where ``x*x`` overflows float32 (|x| >= about 1.8e19) the
search's sums become inf/NaN and the sub-block's scale NaN, which loses
every comparison and rounds to the code 0: that sub-block decodes to zeros,
and a super-block of such sub-blocks is all zero bytes. ggml does the same;
``validate`` sees nothing wrong.

With an importance matrix ``qw`` (``quantize_row_q6_K_impl``): step 1 uses
the raw imatrix column weights ``qw`` (no ``sigma2`` mixing, unlike the
other K-quants); steps 2 and 3 are unchanged.

Dot product with Q8_K, per super-block (exact integers)::

    isum = sum_j s_j * sum_{16 elements} (q - 32) * a.qs
    term = (fp16(d) * a.d) * (float)isum

(ggml's generic code keeps ``isum`` in 8 int32 lanes and adds ``d * lane``
into 8 float sums; the spec adds the exact integer first.) The terms are
added in the canonical 16-lane order.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q6_K_ref``,
``quantize_row_q6_K_impl``, ``dequantize_row_q6_K``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q6_K_q8_K_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._kquants import (IEEE, Q6_HIGH, Q6_LOW, QK_K, CodeLayout, dot_with_q8_k, quantize_rows, requantize,
                       running_absmax)
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits, nearest_int, wrap_int8
from ._search import GROUP_MAX_EPS, make_qx_quants

FORMAT = BlockFormat(
    name="q6_k", origin="ggml", type_id=14, block_size=QK_K,
    fields=(Field("ql", "u8", 128, "bits 0-3 of the 6-bit code q: element 128h+64s+i at bits 4s of byte 64h+i"),
            Field("qh", "u8", 64, "bits 4-5 of q: element 128h+32s+l at bits 2s of byte 32h+l"),
            Field("scales", "i8", 16, "sub-block scale s_j (elements 16j..16j+15)"),
            Field("d", "f16", 1, "super-block scale; element = d*s_j*(q-32)")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_q6_K_ref, quantize_row_q6_K_impl, dequantize_row_q6_K; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q6_K_q8_K_generic @ d99724f2",
    imatrix="accepted",
)

NSUB, SUB = 16, 16
#: The 6-bit codes: bits 0-3 in ``ql``, bits 4-5 in ``qh``; value = code - 32.
CODES = CodeLayout((("ql", Q6_LOW, 0), ("qh", Q6_HIGH, 4)), offset=32)


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    xb = xs.reshape(-1, NSUB, SUB)
    scales, codes = make_qx_quants(xb, 32, None if qw is None else qw.reshape(xb.shape))
    max_abs, max_scale = running_absmax(scales)
    zero = max_abs < GROUP_MAX_EPS
    iscale = F32(-128) / np.where(zero, F32(1), max_scale)
    s8 = wrap_int8(np.minimum(127, nearest_int(iscale[:, None] * scales)))
    blocks = np.zeros(xs.shape[0], dtype=FORMAT.dtype)
    blocks["d"] = np.where(zero, 0, f32_to_f16_bits(F32(1) / iscale))
    blocks["scales"] = np.where(zero[:, None], 0, s8)
    dl = f16_bits_to_f32(blocks["d"])[:, None] * blocks["scales"].astype(F32)
    codes = requantize(xb, dl, None, -32, 31, codes.astype(np.int32) - 32) + 32
    codes = np.where(zero[:, None, None], 0, codes).reshape(-1, QK_K)  # zero blocks: all bytes 0
    CODES.pack(blocks, codes)
    return blocks


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


def codes(blocks: np.ndarray) -> np.ndarray:
    """The signed codes ``q - 32`` (-32..31) of every element, ``(..., 256)`` int8."""
    return CODES.values(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _dequantize(q)


def _dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    dl = f16_bits_to_f32(b["d"])[..., None] * b["scales"].astype(F32)
    values = codes(b).reshape(b.shape + (NSUB, SUB)).astype(F32)
    values *= dl[..., None]
    return values.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _vec_dot(wq, aq)


def _vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    sub = np.einsum("rbjl,rbjl->rbj", codes(w).astype(np.int32).reshape(w.shape + (NSUB, SUB)),
                    a["qs"].astype(np.int32).reshape(a.shape + (NSUB, SUB)))
    isum = (sub * w["scales"].astype(np.int32)).sum(axis=-1)
    return dot_with_q8_k(w["d"], a["d"], isum)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
