"""What the ternary formats TQ1_0 and TQ2_0 share: 256-element blocks whose
elements are -1, 0 or +1 times an fp16 scale, the block's largest magnitude.

Quantize (``quantize_row_tq1_0_ref``, ``quantize_row_tq2_0_ref``)::

    d    = amax = max_j |x_j|        stored as fp16(d)
    id   = d != 0 ? 1/d : 0          (the float32 d)
    t_j  = lroundf(x_j * id) + 1     in {0, 1, 2}: -1, 0, +1

``lroundf`` rounds half away from zero. ``|x*id| <= 1`` up to rounding, so
``t`` is 0, 1 or 2. When ``1/d`` overflows (``d`` below 2**-128) ``x*id`` is
+-inf or NaN (for x = 0); ``lroundf`` of those is unspecified in C, and
glibc on x86-64 returns ``LONG_MIN``, whose ``+ 1`` truncated to ``int`` is
1: such a block stores only zero trits (and ``d`` rounds to fp16 0). The
spec follows x86-64 glibc, where ggml's files are made.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_tq1_0_ref``,
``quantize_row_tq2_0_ref`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._numerics import F32, round_half_away

QK_K = 256

#: ``x*id`` is +-inf or NaN when ``1/d`` overflows: IEEE results, no warnings.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}


def scale_and_trits(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks ``xs (..., 256)`` -> float32 ``d`` and the trits ``t`` (0, 1, 2; int32)."""
    d = np.max(np.abs(xs), axis=-1)
    with np.errstate(**IEEE):
        inverse = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
        v = xs * inverse[..., None]
        # lroundf: finite |v| < 2**63 rounds half away; otherwise LONG_MIN, and LONG_MIN + 1 as int is 1
        representable = np.abs(v) < F32(2.0**63)
        trits = np.where(representable, round_half_away(np.where(representable, v, F32(0))).astype(np.int32) + 1, 1)
    return d.astype(F32), trits.astype(np.int32)
