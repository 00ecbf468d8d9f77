"""Row-wide statistics of the legacy imatrix quantizers."""

from __future__ import annotations

import numpy as np

from ._numerics import F32, sequential_sum


def imatrix_weights(x: np.ndarray, imatrix: np.ndarray, block: int) -> np.ndarray:
    """``weight[j] = qw[j] * sqrtf(sigma2 + x[j]*x[j])`` with the row's
    ``sigma2 = (sum over the row of x*x) / n_per_row`` (one sequential float
    sum per row), as ``quantize_row_q4_0_impl`` and its three siblings.

    ``x`` is ``(nrows, n)``; the result is ``(nrows, n/block, block)``.
    """
    nrows, n = x.shape
    sigma2 = sequential_sum(x * x, axis=1) / F32(n)
    w = np.asarray(imatrix, dtype=F32)[None, :] * np.sqrt(sigma2[:, None] + x * x)
    return w.reshape(nrows, n // block, block)
