"""Q6_0 (ik_llama.cpp type 133): 32 elements, one fp16 scale, 6-bit quants
with an implicit offset of 32 (6.5 bits per weight).

Block (26 bytes)::

    offset 0    d       fp16    scale
    offset 2    qh[8]   uint8   bits 4-5 of the quants: byte j%8 holds, at bits
                                4*(j/8) .. 4*(j/8)+1, bits 4-5 of element j and,
                                at bits 4*(j/8)+2 .. +3, bits 4-5 of element j+16
    offset 10   qs[16]  uint8   bits 0-3: low nibble of byte j = element j,
                                high nibble = element j+16
    element = (q - 32) * d      (the integer times d, as the C writes it)

Quantize (``quantize_q6_0`` -> ``quantize_row_q6_0_impl``, with and without
an importance matrix; ``ggml_quantize_chunk`` never calls the ``_ref``
rounding quantizer for Q6_0)::

    weights   w_j = x_j^2                          (no imatrix)
              w_j = qw_j * sqrtf(sigma2 + x_j^2)   (sigma2 = sum(x^2)/n over the row)
    d, q    = ik_llama.cpp's make_qx_quants(32, nmax=32, rmse_type=1, w)
              (_iqk.make_qx_quants_ik: the mainline search plus positive
              inverse scales and a coordinate descent)

A block whose magnitudes are all below 1e-15 stores ``d = 0`` and quants 0.

Dot product with Q8_0 (the activation format of a build without IQK GEMM;
ik_llama.cpp's AVX2 build dots with Q8_2_X4, the same int8 quants grouped in
fours with bf16 scales): ``sumi = sum_j (q_j - 32) * a_j`` (exact),
contribution ``(dw * da) * sumi``, canonical 16-lane reduction.

Upstream: ik_llama.cpp ``ggml/src/ggml-quants.c`` ``quantize_row_q6_0_impl``,
``make_qx_quants``, ``dequantize_row_q6_0``; ``ggml/src/ggml-common.h``
``block_q6_0`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iqk import IEEE, make_qx_quants_ik
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, sequential_sum

QK = 32

FORMAT = BlockFormat(
    name="q6_0", origin="ik_llama", type_id=133, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("qh", "u8", QK // 4, "bits 4-5 of the quants: byte j%8, bits 4*(j/8).. (element j) and "
                                       "4*(j/8)+2.. (element j+16), j = 0..15"),
            Field("qs", "u8", QK // 2, "bits 0-3: low nibble of byte j = element j, high nibble = element j+16")),
    vec_dot_format="q8_0",
    upstream="ik_llama.cpp ggml/src/ggml-quants.c quantize_row_q6_0_impl, make_qx_quants, dequantize_row_q6_0; "
             "ggml/src/ggml-common.h block_q6_0 @ 8337e4cd",
    imatrix="accepted",
)

_J = np.arange(16)


def pack(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """6-bit codes ``(..., 32)`` -> ``(qh, qs)``."""
    c = codes.astype(np.uint8)
    qs = (c[..., :16] & 0x0F) | ((c[..., 16:] & 0x0F) << 4)
    h = (c[..., :16] >> 4) | ((c[..., 16:] >> 4) << 2)      # 4 bits per j
    shifted = h << (4 * (_J // 8)).astype(np.uint8)
    qh = shifted[..., :8] | shifted[..., 8:]
    return qh.astype(np.uint8), qs.astype(np.uint8)


def codes(blocks: np.ndarray) -> np.ndarray:
    """The 6-bit codes ``(..., 32)`` (int32) of structured blocks."""
    qs = blocks["qs"].astype(np.int32)
    h = blocks["qh"].astype(np.int32)[..., _J % 8] >> (4 * (_J // 8))
    low = (qs & 0x0F) | ((h << 4) & 0x30)
    high = (qs >> 4) | ((h << 2) & 0x30)
    return np.concatenate([low, high], axis=-1)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK, QK)
    with np.errstate(**IEEE):
        if imatrix is None:
            w = xb * xb
        else:
            sigma2 = sequential_sum(x * x, axis=1) / F32(n)
            w = (np.asarray(imatrix, dtype=F32)[None, :] * np.sqrt(sigma2[:, None] + x * x)).reshape(xb.shape)
    d, q = make_qx_quants_ik(xb, 32, w)
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["qh"], blocks["qs"] = pack(q)
    return FORMAT.to_bytes(blocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    d = f16_bits_to_f32(b["d"])[..., None]
    with np.errstate(**IEEE):
        return ((codes(b) - 32).astype(F32) * d).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    sumi = np.einsum("rbj,rbj->rb", codes(w) - 32, a["qs"].astype(np.int32))
    with np.errstate(**IEEE):
        return canonical_dot((f16_bits_to_f32(w["d"]) * f16_bits_to_f32(a["d"])) * sumi.astype(F32))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
