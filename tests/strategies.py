"""Hypothesis strategies biased to the edges of block quantizers: zero and
constant blocks, one outlier, huge and tiny magnitudes, subnormals, signed
zeros, exact rounding ties (after the scale a quantizer will choose) and
their float neighbours, and lengths of one block, many blocks, many rows."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

F32_MAX = float(np.finfo(np.float32).max)
SUBNORMAL = float(np.finfo(np.float32).smallest_subnormal)

special_values = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, SUBNORMAL, -SUBNORMAL,
                                  1e-30, -1e-30, 65504.0, 65520.0, -65520.0, 1e30, -1e30, F32_MAX / 4,
                                  127.0, -127.0, 8.5, -8.0])


def _block_kind(draw, block: int, rng: np.random.Generator) -> np.ndarray:
    kind = draw(st.sampled_from(["normal", "zero", "constant", "outlier", "ties", "tiny", "huge",
                                 "special", "student_t", "grid"]))
    if kind == "zero":
        return np.where(rng.random(block) < 0.5, np.float32(0.0), np.float32(-0.0)).astype(np.float32)
    if kind == "constant":
        return np.full(block, draw(special_values), dtype=np.float32)
    if kind == "outlier":
        x = rng.standard_normal(block).astype(np.float32) * np.float32(0.01)
        x[rng.integers(block)] = draw(st.sampled_from([100.0, -100.0, 1e6, -3.0]))
        return x
    if kind == "ties":
        # values k/2 * scale hit .5 ties once divided by a scale made from the block max
        levels = draw(st.sampled_from([8, 15, 16, 31, 127]))
        k = rng.integers(-2 * levels, 2 * levels + 1, block).astype(np.float32)
        x = (k / np.float32(2 * levels)).astype(np.float32)
        x[0] = np.float32(1.0) if draw(st.booleans()) else np.float32(-1.0)
        nudge = draw(st.sampled_from([0, 1, -1]))
        if nudge:
            x = np.nextafter(x, np.float32(nudge * np.inf)).astype(np.float32)
        return x
    if kind == "tiny":
        return (rng.standard_normal(block) * 1e-40).astype(np.float32)  # subnormals
    if kind == "huge":
        return (rng.standard_normal(block) * 1e37).astype(np.float32)
    if kind == "special":
        return np.array([draw(special_values) for _ in range(block)], dtype=np.float32)
    if kind == "student_t":
        return rng.standard_t(3, block).astype(np.float32)
    if kind == "grid":
        return rng.integers(-8, 8, block).astype(np.float32)
    return (rng.standard_normal(block) * draw(st.sampled_from([1.0, 1e-3, 300.0]))).astype(np.float32)


@st.composite
def rows(draw, block_size: int, max_blocks: int = 40, max_rows: int = 4, block_counts=None):
    """A float32 array (nrows, n) with n a multiple of ``block_size``; each
    block of 32 (or of the format's block) is drawn from an edge kind.
    ``block_counts``: the blocks per row to choose from (default: 1, 2, the
    canonical dot's tails 15-17, and ``max_blocks``)."""
    nrows = draw(st.integers(1, max_rows))
    nblocks = draw(st.sampled_from(block_counts or [1, 2, 15, 16, 17, max_blocks]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    unit = max(block_size, 32)
    n = nblocks * block_size
    n = -(-n // unit) * unit if block_size < unit else n
    out = np.empty((nrows, n), dtype=np.float32)
    for r in range(nrows):
        for b in range(0, n, unit):
            out[r, b:b + unit] = _block_kind(draw, unit, rng)[: n - b]
    return out


@st.composite
def byte_rows(draw, type_size: int, max_blocks: int = 40, max_rows: int = 4, row_meta_size: int = 0):
    """Arbitrary row bytes (``row_meta_size`` bytes of row metadata, then the
    blocks): every bit pattern a decoder may be handed."""
    nrows = draw(st.integers(1, max_rows))
    nblocks = draw(st.sampled_from([1, 2, 15, 16, 17, max_blocks]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (nrows, row_meta_size + nblocks * type_size), dtype=np.uint8)


@st.composite
def imatrices(draw, n: int):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "zeros", "ratios", "ones"]))
    if kind == "ones":
        return np.ones(n, dtype=np.float32)
    w = rng.random(n).astype(np.float32)
    if kind == "zeros":
        w[rng.random(n) < 0.3] = 0
    if kind == "ratios":
        w = (10.0 ** rng.uniform(-6, 6, n)).astype(np.float32)
    return w
