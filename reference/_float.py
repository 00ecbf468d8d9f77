"""What the three float formats share: one element per block, a dot
product whose blocks are single products, and validation of every value."""

from __future__ import annotations

import numpy as np

from ._format import Invalid
from ._numerics import F32, canonical_dot


def elementwise_dot(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Rows ``w`` (nrows, n) times ``a`` (n,): each product ``w[j]*a[j]`` is one
    block's contribution to the canonical 16-lane reduction."""
    with np.errstate(over="ignore", invalid="ignore"):
        return canonical_dot(w.astype(F32) * a.astype(F32)[None, :])


def nonfinite_values(values: np.ndarray, bits: np.ndarray, field: str) -> list[Invalid]:
    """Every NaN or inf element, by (row, index), as ``ggml_validate_row_data``."""
    found = []
    for row, col in zip(*np.nonzero(~np.isfinite(values))):
        v = values[row, col]
        found.append(Invalid(int(row), int(col), field, int(bits[row, col]), "NaN" if np.isnan(v) else "inf"))
    return found
