"""IQ1_BN (ik_llama.cpp type 134): ternary weights (BitNet b1.58, TriLM) at
1.625 bits per weight: 5 trits per byte in base 3, blocks of 64, one fp16
scale per row.

Row (``row_meta_size`` = 2)::

    offset 0   d        fp16     row scale (the largest |x| of the row)
    then n/64 blocks of 13 bytes, 4 groups of 16 elements:
    offset 0   ql[12]   uint8    byte 3g+k holds the 5 trits of elements
                                 16g + 5k + i, i = 0..4 (g = 0..3, k = 0..2)
    offset 12  extra    uint8    the 4 trits of elements 16g + 15, g = 0..3

A byte holding trits t_0..t_4 (each 0, 1, 2 = -1, 0, +1) stores
``ceil(256 * sum_i 3^i t_i / 243)``; trit i comes back as::

    v = (byte * 3^(4-i)) mod 256       (k_mult = 81, 27, 9, 3, 1)
    t = (v + (v >> 1)) >> 7            (integer: 3v/256 without the multiply)

The ``extra`` byte stores the trits of the 4 groups (``sum_g 3^g t_g``, only
4 of its 5 slots), and trit g is read with ``k_mult[g]``. The fixed-point
trick works because multiplying by 3^(4-i) mod 256 moves trit i into the top
of the byte: ``256*idx/243`` is ``idx`` in units of 1/243 of the byte range.

    y = d * (t - 1)

Quantize (``IQ1BNQuantizer::quantize_one_row_1bn``; an importance matrix is
ignored)::

    max    = max_j |x_j| over the row;  d = fp16(max)
    thresh = 0.5 * max                  (the float32 max, not the fp16 d)
    t_j    = 1 if |x_j| < thresh, else 0 if x_j < 0, else 2

Dequantize: ik_llama.cpp's CPU ``dequantize_row_iq1_bn`` (its
``to_float``) takes a pointer to blocks: it neither skips nor applies the
row scale, so called on a row it decodes the 2 scale bytes as part of the
first block and returns raw trits. The CUDA path (``dequantize_block_iq1_bn``:
``d*(t - 1)``) and the dot products apply the row scale; the spec does too.
``cpu_to_float`` models the CPU function exactly.

Dot product with Q8_K64 (the fp16 row scale ``d`` as float32):
``isum_L`` = the exact sum of (t - 1) * qs over the block's 16 elements in
lane L (``reference/q8_k64.py``: element j is in lane ``(j % 16) // 4``),
the row scale met once per lane, ``e_L = d * a.d[L]``, and each 64-element
block contributes ``((e_0*isum_0 + e_1*isum_1) + e_2*isum_2) + e_3*isum_3``
(``q8_k64.lane_dot``); then the canonical reduction. ik_llama.cpp
(``mul_mat_iq1bn_q8_K64``) sums code*qs per lane over the whole row and
returns ``d * hsum(fmsub(a.d[L], sum_L, a.s[L]))``: the same value up to
rounding.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``IQ1BNQuantizer::quantize_one_row_1bn``, ``dequantize_row_iq1_bn``;
``ggml/src/iqk/iqk_gemm_1bit.cpp`` ``mul_mat_iq1bn_q8_K64``;
``ggml/src/ggml-cuda/convert.cu`` ``dequantize_block_iq1_bn``;
``ggml/src/ggml-common.h`` ``block_iq1_bn`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_k64
from ._format import BlockFormat, Field, Invalid
from ._iqk import IEEE, f16_meta, join_rows, meta_f16, nonfinite_row_scales, split_rows
from ._numerics import F32, f32_to_f16_bits

QK = 64

FORMAT = BlockFormat(
    name="iq1_bn", origin="ik_llama", type_id=134, block_size=QK,
    fields=(Field("ql", "u8", 12, "byte 3g+k: 5 trits (base 3, scaled by 256/243) of elements 16g+5k+i, i = 0..4"),
            Field("extra", "u8", 1, "the trits of elements 16g+15, g = 0..3")),
    vec_dot_format="q8_k64",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp IQ1BNQuantizer::quantize_one_row_1bn, "
             "dequantize_row_iq1_bn; ggml/src/ggml-cuda/convert.cu dequantize_block_iq1_bn; "
             "ggml/src/ggml-common.h block_iq1_bn @ 8337e4cd",
    row_meta_size=2,
)

#: ``k_mult``: multiplying by 3^(4-i) (mod 256) brings trit i to the top of the byte.
K_MULT = np.array([81, 27, 9, 3, 1], dtype=np.int64)
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.int64)

_E = np.arange(QK)
#: For element j of a block: the byte (``ql[0..11]``, 12 = ``extra``) holding its trit and the multiplier that reads it.
TRIT_BYTE = np.where(_E % 16 < 15, 3 * (_E // 16) + (_E % 16) // 5, 12)
TRIT_MULT = np.where(_E % 16 < 15, K_MULT[(_E % 16) % 5], K_MULT[np.minimum(_E // 16, 4)])


def pack_trits(t: np.ndarray) -> np.ndarray:
    """Trits ``(..., m)`` (m <= 5, each 0..2) -> ``ceil(256 * sum 3^i t_i / 243)``."""
    idx = (t.astype(np.int64) * _POW3[:t.shape[-1]]).sum(axis=-1)
    return ((256 * idx + 242) // 243).astype(np.uint8)


def unpack_trit(byte: np.ndarray, mult) -> np.ndarray:
    """The trit (0..2) that ``byte * mult`` brings to the top: ``(v + (v >> 1)) >> 7``."""
    v = (np.asarray(byte).astype(np.int64) * mult) & 255
    return (v + (v >> 1)) >> 7


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    vmax = np.abs(x).max(axis=1).astype(F32)
    thresh = (F32(0.5) * vmax)[:, None]
    t = np.where(np.abs(x) < thresh, 1, np.where(x < 0, 0, 2)).reshape(nrows, n // QK, 4, 16)
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["ql"] = pack_trits(t[..., :15].reshape(nrows, n // QK, 4, 3, 5)).reshape(nrows, n // QK, 12)
    blocks["extra"] = pack_trits(t[..., 15])
    return join_rows(FORMAT, f16_meta(f32_to_f16_bits(vmax)), blocks)


def _trits(ql: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """Blocks' trits (0..2) in element order ``(..., 64)``."""
    body = unpack_trit(ql.reshape(ql.shape[:-1] + (4, 3, 1)), K_MULT).reshape(ql.shape[:-1] + (4, 15))
    last = unpack_trit(extra[..., None], K_MULT[:4])
    return np.concatenate([body, last[..., None]], axis=-1).reshape(ql.shape[:-1] + (QK,))


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    t = (_trits(blocks["ql"], blocks["extra"]) - 1).astype(F32)
    with np.errstate(**IEEE):
        return (meta_f16(meta)[:, None, None] * t).reshape(q.shape[0], -1)


def cpu_to_float(q: np.ndarray) -> np.ndarray:
    """What ik_llama.cpp's CPU ``to_float`` returns for whole rows: blocks
    read from the first byte of the row (the fp16 scale's 2 bytes become
    ``ql[0..1]`` of block 0), raw trits ``t - 1``, unscaled."""
    nrows, row_bytes = q.shape
    nblocks = (row_bytes - FORMAT.row_meta_size) // FORMAT.type_size
    raw = np.ascontiguousarray(q[:, :nblocks * FORMAT.type_size]).reshape(nrows, nblocks, FORMAT.type_size)
    return (_trits(raw[..., :12], raw[..., 12]) - 1).astype(F32).reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    return q8_k64.lane_dot(meta_f16(meta), _trits(blocks["ql"], blocks["extra"]) - 1, aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f16")
