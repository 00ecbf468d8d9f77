"""Q3_K (ggml type 11): 256-element super-blocks of 16 sub-blocks of 16,
3-bit codes, a 6-bit signed scale per sub-block and an fp16 ``d``.
3.4375 bits per weight.

Block (110 bytes)::

    offset 0    hmask[32]   uint8   bit 2 of the code: element 32k + l is
                                    bit k of byte l (ONE_BIT)
    offset 32   qs[64]      uint8   bits 0-1 of the code: element 128h + 32s
                                    + l at bits 2s of byte 32h + l (TWO_BIT)
    offset 96   scales[12]  uint8   16 6-bit sub-block scales s_j (offset 32):
                                    low 4 bits of s_j at bits 4*(j//8) of
                                    byte j%8, high 2 bits at bits 2*(j//4)
                                    of byte 8 + j%4
    offset 108  d           fp16    super-block scale
    element = (d * (s_j - 32)) * (q - 4),  q = (qs bits) | hmask bit << 2

(``dequantize_row_q3_K`` writes ``q - 4`` as ``low - (hbit ? 0 : 4)``.)

Quantize without an importance matrix (``quantize_row_q3_K_ref``), per
super-block:

1. Every sub-block: ``(scale_j, L) = make_q3_quants(16, nmax=4)``, the
   symmetric ``x^2``-weighted search with coordinate descent.
2. ``max_scale`` = the scale of largest magnitude (first one). If it is not
   zero: ``iscale = -32/max_scale``, ``s_j = clamp((int8)nearest_int(iscale
   * scale_j), -32, 31) + 32``, ``d = 1/iscale``; else ``s_j = 0``, ``d = 0``.
3. Requantize with the stored values: ``dl = fp16(d) * (s_j - 32)``; where
   ``dl != 0``, ``q = clamp(nearest_int(x / dl), -4, 3) + 4``; where ``dl ==
   0`` the codes of step 1 stay.

Huge inputs: where ``x*x`` overflows float32 (|x| >= about 1.8e19) the
``x^2``-weighted search gives the sub-block a NaN scale, which loses every
comparison and packs as ``s_j = 32`` (value 0): the sub-block decodes to
zeros, and a super-block of such sub-blocks stores ``d = 0``. ggml does
the same.

With an importance matrix ``qw`` (``quantize_row_q3_K_impl``), per
super-block: ``sigma2 = 2*sum(x^2)/256``, weights ``w = qw * sqrt(sigma2 +
x^2)``, ``sw_j`` = the sum of sub-block j's weights; step 1 with
``make_qx_quants(16, nmax=4, w)`` (weighted symmetric search over 18 trial
scales); the 16 scales are quantized with ``make_qx_quants(16, nmax=32,
weights sw)``, which gives ``d`` and ``s_j`` (0..63) directly; then step 3.

Dot product with Q8_K, per super-block (exact integers)::

    isum = sum_j (s_j - 32) * sum_{16 elements} (q - 4) * a.qs
    term = (fp16(d) * a.d) * (float)isum

(ggml's generic code keeps ``isum`` in 8 int32 lanes and adds ``d *
lane`` into 8 float sums; the spec adds the exact integer first.) The
terms are added in the canonical 16-lane order.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q3_K_ref``,
``quantize_row_q3_K_impl``, ``dequantize_row_q3_K``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q3_K_q8_K_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._kquants import (IEEE, ONE_BIT, QK_K, TWO_BIT, CodeLayout, dot_with_q8_k, pack_scales_q3k,
                       quantize_rows, requantize, running_absmax, unpack_scales_q3k)
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits, nearest_int, sequential_sum, wrap_int8
from ._search import make_q3_quants, make_qx_quants

FORMAT = BlockFormat(
    name="q3_k", origin="ggml", type_id=11, block_size=QK_K,
    fields=(Field("hmask", "u8", 32, "bit 2 of the 3-bit code q: element 32k+l is bit k of byte l"),
            Field("qs", "u8", 64, "bits 0-1 of q: element 128h+32s+l at bits 2s of byte 32h+l"),
            Field("scales", "u8", 12, "16 6-bit scales s_j: low 4 bits at bits 4*(j//8) of byte j%8, "
                                      "high 2 bits at bits 2*(j//4) of byte 8+j%4"),
            Field("d", "f16", 1, "super-block scale; element = d*(s_j-32)*(q-4)")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_q3_K_ref, quantize_row_q3_K_impl, dequantize_row_q3_K; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q3_K_q8_K_generic @ d99724f2",
    imatrix="accepted",
)

NSUB, SUB = 16, 16
#: The 3-bit codes: bits 0-1 in ``qs``, bit 2 in ``hmask``; value = code - 4.
CODES = CodeLayout((("qs", TWO_BIT, 0), ("hmask", ONE_BIT, 2)), offset=4)


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    xb = xs.reshape(-1, NSUB, SUB)
    if qw is None:
        scales, codes = make_q3_quants(xb, 4)
        _, max_scale = running_absmax(scales)
        nonzero = max_scale != 0
        iscale = F32(-32) / np.where(nonzero, max_scale, F32(1))
        s6 = np.clip(wrap_int8(nearest_int(iscale[:, None] * scales)), -32, 31) + 32
        s6 = np.where(nonzero[:, None], s6, 0)
        d = np.where(nonzero, F32(1) / iscale, F32(0))
    else:
        sigma2 = F32(2) * sequential_sum(xs * xs) / F32(QK_K)
        weights = qw.reshape(xb.shape) * np.sqrt(sigma2[:, None, None] + xb * xb)
        scales, codes = make_qx_quants(xb, 4, weights)
        d, s6 = make_qx_quants(scales, 32, sequential_sum(weights))
    blocks = np.zeros(xs.shape[0], dtype=FORMAT.dtype)
    blocks["scales"] = pack_scales_q3k(s6)
    blocks["d"] = f32_to_f16_bits(d)
    sub_scale = unpack_scales_q3k(blocks["scales"]) - 32
    dl = f16_bits_to_f32(blocks["d"])[:, None] * sub_scale.astype(F32)
    codes = requantize(xb, dl, None, -4, 3, codes.astype(np.int32) - 4) + 4
    codes = codes.reshape(-1, QK_K)
    CODES.pack(blocks, codes)
    return blocks


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


def codes(blocks: np.ndarray) -> np.ndarray:
    """The signed codes ``q - 4`` (-4..3) of every element, ``(..., 256)`` int8."""
    return CODES.values(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _dequantize(q)


def _dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    dl = f16_bits_to_f32(b["d"])[..., None] * (unpack_scales_q3k(b["scales"]) - 32).astype(F32)
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
    isum = (sub * (unpack_scales_q3k(w["scales"]) - 32)).sum(axis=-1)
    return dot_with_q8_k(w["d"], a["d"], isum)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
