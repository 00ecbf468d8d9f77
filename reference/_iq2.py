"""Machinery shared by the 2-bit grid formats IQ2_XXS, IQ2_XS and IQ2_S.

Decoding: a group of 8 elements stores an index into a codebook of 8-byte
points (``reference/tables/ggml_iq2.py``) and 8 sign bits; element ``j`` of
the group is ``db * grid[index][j] * (sign bit j ? -1 : 1)``. Multiplying by
an exact +-1 commutes with round-to-nearest-even, so ``(db * g) * s`` and
``db * (g * s)`` have the same bits (NaN payloads aside), and the decoders
here gather the signed points ``g * s`` from one table and multiply once.

Searching (the quantizers): ggml searches the odd-integer lattice
``2l + 1``, ``l`` in 0..2, of 8 dimensions; ``kgrid_2bit_*`` lists the
codebook points as 2-bit level indices (``l_j`` at bits ``2j``), and
``iq2xs_init_impl`` builds from them a map from every one of the ``4**8``
lattice keys ``u = sum l_j << 2j`` to the codebook index, or, for keys off
the codebook, to a list of nearby codebook points (:func:`neighbours`).

Upstream: ggml ``src/ggml-quants.c`` ``iq2xs_init_impl``,
``iq2_find_best_neighbour``, ``dequantize_row_iq2_xxs/xs/s`` as vendored by
llama-cpp-python 0.3.36 (llama.cpp @ 0c1e5709; identical in ggml @ d99724f2).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ._numerics import F32
from .tables.ggml_iq2 import IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS

QK_K = 256

#: The codebook bytes 8, 25, 43 are lattice levels 0, 1, 2 (odd integers 1, 3, 5).
GRID_LEVELS = (8, 25, 43)

#: ggml's ``GROUP_MAX_EPS`` (IQ2_XXS, IQ2_XS) and ``GROUP_MAX_EPS_IQ2_S``.
GROUP_MAX_EPS = F32(1e-15)
GROUP_MAX_EPS_IQ2_S = F32(1e-8)

_CODEBOOKS = {"iq2_xxs": IQ2XXS_GRID, "iq2_xs": IQ2XS_GRID, "iq2_s": IQ2S_GRID}


def grid_bytes(grid: np.ndarray) -> np.ndarray:
    """Codebook ``(N,)`` u64 -> its points as bytes ``(N, 8)`` (byte j = element j)."""
    return np.ascontiguousarray(grid).astype("<u8").view(np.uint8).reshape(-1, 8)


def sign_factors(sign_bits: np.ndarray) -> np.ndarray:
    """8 sign bits per entry -> ``(..., 8)`` int8 factors ``+1`` (bit clear) / ``-1`` (bit set)."""
    bits = (np.asarray(sign_bits, dtype=np.uint8)[..., None] >> np.arange(8, dtype=np.uint8)) & 1
    return (1 - 2 * bits.astype(np.int8)).astype(np.int8)


@cache
def signed_points(fmt: str, parity_signs: bool) -> np.ndarray:
    """Every (codebook point, sign pattern) pair as 8 signed int8 values.

    ``parity_signs``: the 128 sign patterns of ``KSIGNS_IQ2XS`` (7 stored
    bits, the eighth makes the count of negatives even), row ``index +
    N * sign7`` -- for IQ2_XS that is the stored u16 ``index | sign7 << 9``
    itself. Otherwise the 256 explicit sign bytes, row ``index + N * signs``.
    """
    points = grid_bytes(_CODEBOOKS[fmt]).astype(np.int16)
    signs = sign_factors(KSIGNS_IQ2XS if parity_signs else np.arange(256, dtype=np.uint8)).astype(np.int16)
    table = (signs[:, None, :] * points[None, :, :]).astype(np.int8).reshape(-1, 8)
    table.flags.writeable = False
    return table


@cache
def signed_points_f32(fmt: str, parity_signs: bool) -> np.ndarray:
    """:func:`signed_points` as float32 (exact)."""
    table = signed_points(fmt, parity_signs).astype(F32)
    table.flags.writeable = False
    return table


@cache
def lattice_keys(fmt: str) -> np.ndarray:
    """``kgrid_2bit_256/512/1024`` of ``iq2xs_init_impl``: codebook point k as
    2-bit level indices, ``sum_j level(byte j) << 2j`` (u16), level(8, 25,
    43) = 0, 1, 2."""
    levels = np.zeros(256, dtype=np.uint16)
    levels[list(GRID_LEVELS)] = np.arange(len(GRID_LEVELS), dtype=np.uint16)
    keys = (levels[grid_bytes(_CODEBOOKS[fmt])] << (2 * np.arange(8, dtype=np.uint16))).sum(axis=1, dtype=np.uint16)
    keys.flags.writeable = False
    return keys


def block_scale(d: np.ndarray, ls: np.ndarray) -> np.ndarray:
    """``db = d * (0.5f + ls) * 0.25f``, the scale of a 16/32-element block
    from the fp16 ``d`` (as float32) and its 4-bit code ``ls``: two
    roundings, in this order (the 0.25 is exact unless the product is
    subnormal)."""
    return (d * (F32(0.5) + ls.astype(F32))) * F32(0.25)


def quantize_rows(spec, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    raise NotImplementedError(f"{spec.name}: the quantizer is not written yet")
