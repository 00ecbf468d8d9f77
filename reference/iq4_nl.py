"""IQ4_NL (ggml type 20): 32 elements, one fp16 scale, 4-bit indices into
16 non-linear levels ``kvalues_iq4nl`` (-127 ... 113).

Block (18 bytes)::

    offset 0   d      fp16      scale
    offset 2   qs[16] uint8     low nibble of byte j = index of element j,
                                high nibble = index of element j + 16
    element = d * kvalues_iq4nl[index]

Quantize (ggml's file path, ``quantize_iq4_nl`` = ``quantize_row_iq4_nl_impl``
with one 32-element super-block and ``ntry = 7``; see ``_iq4``)::

    weights  w_j = x_j^2, or with an importance matrix qw:
             w_j = qw_j * sqrt(sigma2 + x_j^2), sigma2 = sum(x^2) * (2/32)
    scale    the weighted search over 16 trial scales (_iq4.block_scales);
             0 for a block with all |x| < 1e-15
    d        = fp16(scale)
    id       = scale != 0 ? 1/scale : 0      (the float32 scale, not d)
    index_j  = best_index_int8(id * x_j)

An all-zero (or all-tiny) block is ``00 00`` then 16 bytes ``88``: scale
+0.0 and index 8 (level 1, the nearest to 0) everywhere.

Quirk, decided: ggml has a second IQ4_NL quantizer, ``quantize_row_iq4_nl_ref``
(the CPU backend's ``from_float``), which calls the same routine with
``ntry = -1``: no trial scales, ``d = max/-127`` instead of ``-max/-127``,
and no recomputation of the indices from the final scale. Its bytes differ
from the file path's on most blocks, and for an all-zero block it packs
whatever indices its caller's stack buffer held (uninitialized for the first
block, the previous block's after it). The spec is the file path
(``ggml_quantize_chunk``, which is what GGUF files hold) and defines the
zero block as above; the reference quantizer is a non-conforming variant.

Dot product with Q8_0 (``ggml_vec_dot_iq4_nl_q8_0_generic``)::

    sumi = sum_j kvalues_iq4nl[index_j] * a.qs[j]     (exact)
    term = (fp16(a.d) * fp16(d)) * (float)sumi

then the canonical 16-lane reduction of the terms.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_iq4_nl``,
``quantize_row_iq4_nl_impl``, ``quantize_row_iq4_nl_ref``,
``dequantize_row_iq4_nl``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_iq4_nl_q8_0_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_0
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iq4 import IEEE, KVALUES_IQ4NL_F32, best_index_int8, block_scales, imatrix_weights
from ._legacy import pack_nibbles, unpack_nibbles
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits
from .tables.ggml import KVALUES_IQ4NL

QK = 32

FORMAT = BlockFormat(
    name="iq4_nl", origin="ggml", type_id=20, block_size=QK,
    fields=(Field("d", "f16", 1, "scale"),
            Field("qs", "u8", QK // 2, "4-bit indices into kvalues_iq4nl: element j in the low nibble of byte j, "
                                       "element j+16 in the high nibble; value d * kvalues_iq4nl[index]")),
    vec_dot_format="q8_0",
    upstream="ggml src/ggml-quants.c quantize_iq4_nl, quantize_row_iq4_nl_impl, dequantize_row_iq4_nl; "
             "src/ggml-cpu/quants.c ggml_vec_dot_iq4_nl_q8_0_generic @ d99724f2",
    imatrix="accepted",
)

def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    xb = x.reshape(-1, QK)
    qw = None if imatrix is None else np.broadcast_to(np.asarray(imatrix, dtype=F32), x.shape).reshape(-1, QK)
    with np.errstate(**IEEE):
        scale = block_scales(xb, imatrix_weights(xb, qw))
        inverse = np.where(scale != 0, F32(1) / scale, F32(0))
        indices = best_index_int8(inverse[:, None] * xb)
    blocks = FORMAT.empty_blocks(nrows, n // QK)
    blocks["d"] = f32_to_f16_bits(scale).reshape(nrows, -1)
    blocks["qs"] = pack_nibbles(indices).reshape(nrows, -1, QK // 2)
    return FORMAT.to_bytes(blocks)


def _level_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per byte value: the level of its low nibble and of its high nibble (float32)."""
    byte = np.arange(256)
    return KVALUES_IQ4NL_F32[byte & 15], KVALUES_IQ4NL_F32[byte >> 4]


_LOW_LEVEL, _HIGH_LEVEL = _level_tables()


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    nrows, nblocks = b.shape
    out = np.empty((nrows, nblocks, QK), dtype=F32)
    qs = b["qs"]
    np.take(_LOW_LEVEL, qs, out=out[..., :QK // 2])
    np.take(_HIGH_LEVEL, qs, out=out[..., QK // 2:])
    with np.errstate(**IEEE):
        out *= f16_bits_to_f32(b["d"])[..., None]  # d * level (commutative: the same bits)
    return out.reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_0.FORMAT.blocks(aq[None, :])
    levels = KVALUES_IQ4NL.astype(np.int32)[unpack_nibbles(w["qs"])]
    sumi = np.einsum("rbj,rbj->rb", levels, a["qs"].astype(np.int32))
    with np.errstate(**IEEE):
        return canonical_dot((f16_bits_to_f32(a["d"]) * f16_bits_to_f32(w["d"])) * sumi.astype(F32))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
