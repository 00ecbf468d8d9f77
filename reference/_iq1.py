"""What IQ1_S and IQ1_M share: the grid as the decoders and the quantizers
see it, the neighbour lists of the points off the grid, and the exhaustive
three-level search, as array operations over all blocks at once.

The grid (``tables.ggml_iq1``) has 2048 points of 8 coordinates ``l_j`` in
{0, 1, 2}. The decoders read them as the int8 values ``l_j - 1`` of
``iq1s_grid``; a group of 8 decodes to ``dl * (grid_j + delta)`` with
``delta = +-0.125`` (``IQ1S_DELTA``, ``IQ1M_DELTA``).

Neighbour lists (``iq2xs_init_impl`` for IQ1_S/IQ1_M, ``nwant = 3``): the
quantizer assigns each element a level ``L_j`` in {0, 1, 2}; a group of 8
is the lattice point ``u = sum L_j << 2j``. Where ``u`` is not a grid point,
the candidates are its neighbours: every grid point whose squared distance
``sum (2 l_g + 1 - (2 L + 1))^2`` (integers) is one of the three smallest
distinct distances from ``u``, listed by (distance, grid index) ascending,
a total order, so the list is the same whatever sort upstream uses.
Upstream computes lists for all 43692 ``u`` up to ``0xAAAA`` (including
coordinates 3, which IQ1 never produces); :func:`neighbour_lists` computes
those of the 3^8 - 2048 = 4513 lattice points IQ1 can reach, once, cached.

The search (``quantize_row_iq1_s_impl``, ``quantize_row_iq1_m_impl``) sorts
a block's values ascending and tries every split ``0 <= i1 <= i2 <= n`` of
the sorted order into levels 0 | 1 | 2, with shifted level values ``x_p =
{-1+delta, delta, 1+delta}`` or ``x_m = {-1-delta, -delta, 1-delta}``; see
the format modules for the arithmetic and :func:`scan_best` for the choice.

Sort ties: upstream sorts ``(value, index)`` pairs with C ``qsort`` and a
comparator on the value alone. The C standard leaves the order of equal
values open; glibc's ``qsort`` (through 2.36 and again from 2.39) is a merge
sort for arrays this small (32 pairs of 8 bytes fit its stack buffer), which
keeps equal values in index order. The spec defines the order as stable:
ascending value, ties (including -0.0 and +0.0) in index order, which is
what ggml does on glibc. The order matters twice: the prefix sums add the
sorted terms in that order, and a split that falls inside a run of equal
values gives the earlier indices the lower level.

Upstream: ggml ``src/ggml-quants.c`` ``iq2xs_init_impl``,
``iq1_find_best_neighbour2``, ``quantize_row_iq1_s_impl``,
``quantize_row_iq1_m_impl`` (llama.cpp @ 0c1e57098, vendored in
llama-cpp-python 0.3.36).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ._numerics import F32
from .tables.ggml_iq1 import IQ1S_GRID, KGRID_1BIT_2048

NGRID = 2048
DELTA = F32(0.125)  # IQ1S_DELTA = IQ1M_DELTA

#: The level values of the search for each sign of delta (``x_p``, ``x_m``), float32.
X_P = np.array([F32(-1) + DELTA, DELTA, F32(1) + DELTA], dtype=F32)
X_M = np.array([F32(-1) - DELTA, -DELTA, F32(1) - DELTA], dtype=F32)

#: ``l_j`` of every grid point, ``(2048, 8)`` int8 in {0, 1, 2}.
GRID_LEVELS = ((KGRID_1BIT_2048[:, None].astype(np.int32) >> (2 * np.arange(8))) & 3).astype(np.int8)

#: ``iq1s_grid`` as int8 values ``(2048, 8)`` in {-1, 0, 1}.
GRID_VALUES = np.ascontiguousarray(IQ1S_GRID.astype("<u8")).view(np.int8).reshape(NGRID, 8)

#: ``grid + delta`` as the decoders compute it (int8 to float, plus +-0.125):
#: ``[0]`` for delta = +0.125, ``[1]`` for -0.125, ``(2, 2048, 8)`` float32.
GRID_PLUS_DELTA = np.stack([GRID_VALUES.astype(F32) + DELTA, GRID_VALUES.astype(F32) - DELTA])

#: Lattice index ``sum L_j << 2j`` -> grid index, or -1 off the grid (upstream's ``kmap`` size).
KMAP_SIZE = 43692
GRID_INDEX = np.full(KMAP_SIZE, -1, dtype=np.int32)
GRID_INDEX[KGRID_1BIT_2048] = np.arange(NGRID, dtype=np.int32)

#: How many distinct distances the neighbour lists keep (upstream's ``nwant``).
NEIGHBOUR_SHELLS = 3

for _table in (X_P, X_M, GRID_LEVELS, GRID_VALUES, GRID_PLUS_DELTA, GRID_INDEX):
    _table.flags.writeable = False
del _table


@cache
def neighbour_lists() -> tuple[np.ndarray, np.ndarray]:
    """The neighbour lists of the lattice points off the grid.

    Returns ``(row, neighbours)``: ``row[u]`` (``KMAP_SIZE`` int32) is the
    row of lattice point ``u`` in ``neighbours``, or -1 for grid points and
    for points with a coordinate 3; ``neighbours`` (``(4513, width)``
    int32) lists grid indices by (distance, index) ascending, padded with
    -1. Distance: ``sum_j (2 l_g,j + 1 - (2 L_j + 1))^2`` over the 8
    coordinates; kept: the grid points at the three smallest distinct
    distances."""
    digits = np.stack(np.meshgrid(*[np.arange(3)] * 8, indexing="ij"), axis=-1).reshape(-1, 8)[:, ::-1]
    lattice = (digits << (2 * np.arange(8))).sum(axis=1)
    off = GRID_INDEX[lattice] < 0
    points, lattice = digits[off], lattice[off]
    order = np.argsort(lattice)
    points, lattice = points[order], lattice[order]
    # sum_j (2 l_g + 1 - (2 L + 1))^2 = 4 * (|l_g|^2 + |L|^2 - 2 l_g.L): small integers, exact in float64
    grid = GRID_LEVELS.astype(np.float64)
    lat = points.astype(np.float64)
    dist = 4 * ((grid * grid).sum(axis=1)[None, :] + (lat * lat).sum(axis=1)[:, None] - 2 * lat @ grid.T)
    dist = np.rint(dist).astype(np.int32)
    present = np.zeros((len(points), int(dist.max()) + 1), dtype=bool)
    present[np.arange(len(points))[:, None], dist] = True
    shell_limit = np.argmax(np.cumsum(present, axis=1) >= NEIGHBOUR_SHELLS, axis=1)  # the third distance
    rows, cols = np.nonzero(dist <= shell_limit[:, None])
    order = np.lexsort((cols, dist[rows, cols], rows))  # by row, then (distance, grid index)
    rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=len(points))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    neighbours = np.full((len(points), int(counts.max())), -1, dtype=np.int32)
    neighbours[rows, np.arange(len(rows)) - starts[rows]] = cols
    row = np.full(KMAP_SIZE, -1, dtype=np.int32)
    row[lattice] = np.arange(len(lattice), dtype=np.int32)
    row.flags.writeable = False
    neighbours.flags.writeable = False
    return row, neighbours


def lattice_index(levels: np.ndarray) -> np.ndarray:
    """``u = sum_j L_j << 2j`` of groups of 8 levels ``(..., 8)``."""
    return (levels.astype(np.int32) << (2 * np.arange(8, dtype=np.int32))).sum(axis=-1)


def weighted_sq_error(group: np.ndarray, cands: np.ndarray, xg: np.ndarray, wg: np.ndarray, scale: np.ndarray,
                      negative: np.ndarray) -> np.ndarray:
    """``d2 = 0; for (i < 8) { diff = scale*q - x[i]; d2 += w[i]*diff*diff; }``
    with ``q = xx[l_i]`` (``iq1_find_best_neighbour2``'s score), for (group,
    candidate grid point) pairs ``group``, ``cands`` ``(P,)`` of groups
    ``xg``, ``wg`` ``(G, 8)`` with block scale ``scale (G,)`` and delta
    signs ``negative (G,)``. ``xx[l] = (l - 1) +- 0.125`` exactly, which is
    ``GRID_PLUS_DELTA``."""
    sign = negative.astype(np.intp)[group]
    s = scale[group]
    d2 = np.zeros(cands.shape, dtype=F32)
    for i in range(8):
        diff = s * _GRID_PLUS_DELTA_BY_ELEMENT[sign, i, cands] - xg[group, i]
        d2 += wg[group, i] * diff * diff
    return d2


#: ``GRID_PLUS_DELTA`` as ``(2, 8, 2048)``: element i of every grid point together.
_GRID_PLUS_DELTA_BY_ELEMENT = np.ascontiguousarray(GRID_PLUS_DELTA.transpose(0, 2, 1))


def _first_least(group: np.ndarray, d2: np.ndarray, ngroups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group (``group`` ascending, every group present): the position of
    its first pair of least ``d2`` among those below ``FLT_MAX``, and whether
    there is one."""
    d2 = np.where(d2 < np.finfo(F32).max, d2, F32(np.inf))  # NaN and overflow never win
    starts = np.searchsorted(group, np.arange(ngroups))
    least = np.minimum.reduceat(d2, starts)
    position = np.arange(len(d2))
    first = np.minimum.reduceat(np.where(d2 == least[group], position, len(d2)), starts)
    return np.minimum(first, len(d2) - 1), np.isfinite(least)


def best_neighbour(u: np.ndarray, xg: np.ndarray, wg: np.ndarray, scale: np.ndarray,
                   negative: np.ndarray) -> np.ndarray:
    """``iq1_find_best_neighbour2`` for off-grid groups: lattice points ``u
    (G,)``, their values and weights ``(G, 8)``, the block scale ``(G,)`` and
    the delta sign of the group (True: level values ``x_m``); returns grid
    indices ``(G,)``.

    Upstream keeps the first neighbour with ``d2 < best`` (``best`` starting
    at ``FLT_MAX``): the first neighbour of least ``d2``, among those below
    ``FLT_MAX``. Where no neighbour qualifies (``d2`` overflows to inf or is
    NaN for all of them), upstream's fallback loop over the whole grid reads
    ``xval[i]`` with ``i`` the grid index (an out-of-bounds read) and then
    asserts; the spec scans the whole grid with the element's own ``x`` as
    intended, and if nothing qualifies there either, takes the nearest
    neighbour (the first in the list). With finite input this needs sums
    that overflow, which the format modules refuse before (a NaN scale)."""
    row, table = neighbour_lists()
    rows = row[u]
    counts = (table[rows] >= 0).sum(axis=1)
    group = np.repeat(np.arange(len(u)), counts)
    within = np.arange(len(group)) - np.repeat(np.cumsum(counts) - counts, counts)
    cands = table[rows[group], within]
    first, found = _first_least(group, weighted_sq_error(group, cands, xg, wg, scale, negative), len(u))
    out = cands[first]
    out[~found] = table[rows[~found], 0]
    if not found.all():
        lost = np.nonzero(~found)[0]
        group = np.repeat(np.arange(len(lost)), NGRID)
        cands = np.tile(np.arange(NGRID), len(lost))
        first, ok = _first_least(group, weighted_sq_error(group, cands, xg[lost], wg[lost], scale[lost],
                                                          negative[lost]), len(lost))
        out[lost[ok]] = cands[first[ok]]
    return out


def scan_best(sumqx: np.ndarray, sumq2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidate loop: ``best_score = -FLT_MAX``; for each candidate in
    order, ``if (sumq2 > 0 && sumqx*sumqx > best_score*sumq2) { scale =
    sumqx/sumq2; best_score = scale*sumqx; best = c; }``.

    ``sumqx``, ``sumq2``: ``(C, B)`` for C candidates of B blocks. Returns
    ``(best, scale)``: the index of the chosen candidate (-1 if none) and
    its scale (the ``max`` start value is never read when none is chosen)."""
    nblocks = sumqx.shape[1]
    best_score = np.full(nblocks, -np.finfo(F32).max, dtype=F32)
    scale = np.zeros(nblocks, dtype=F32)
    best = np.full(nblocks, -1, dtype=np.int32)
    for c in range(sumqx.shape[0]):
        qx, q2 = sumqx[c], sumq2[c]
        better = (q2 > 0) & (qx * qx > best_score * q2)
        if better.any():
            new_scale = qx / q2
            np.copyto(scale, new_scale, where=better)
            np.copyto(best_score, new_scale * qx, where=better)
            best[better] = c
    return best, scale


def stable_order(xb: np.ndarray) -> np.ndarray:
    """The sorted order of each block ``(B, n)``: ascending value, ties in
    index order (see the module docstring)."""
    return np.argsort(xb, axis=1, kind="stable")


def prefix_sums(terms: np.ndarray) -> np.ndarray:
    """``s[0] = 0; s[j+1] = s[j] + terms[j]`` over the last axis, ``(B, n+1)``."""
    padded = np.concatenate([np.zeros(terms.shape[:-1] + (1,), dtype=F32), terms.astype(F32)], axis=-1)
    return np.add.accumulate(padded, axis=-1, dtype=F32)


def splits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(i1, i2)`` with ``0 <= i1 <= i2 <= n``, in the C loops' order."""
    i1, i2 = np.triu_indices(n + 1)
    return i1, i2


def levels_of_split(order: np.ndarray, i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
    """``L[order[j]] = 0 (j < i1), 1 (i1 <= j < i2), 2 (j >= i2)`` for blocks ``(B, n)``."""
    n = order.shape[1]
    j = np.arange(n)
    sorted_levels = (j >= i1[:, None]).astype(np.int8) + (j >= i2[:, None])
    levels = np.empty_like(sorted_levels)
    np.put_along_axis(levels, order, sorted_levels, axis=1)
    return levels


# ------------------------------------------------------------------ overflowing searches

class Overflow(Exception):
    """A block whose search ends in a NaN scale (raised to ``quantize``)."""

    def __init__(self, block: int):
        self.block = block


def check_scales(scale: np.ndarray, searched: np.ndarray) -> None:
    """ggml asserts ``scale >= 0`` for every searched block; a NaN scale
    (``inf/inf``: the weights overflow, |x| about 1e19 and more) aborts it.
    The spec refuses the same input with an error instead."""
    bad = searched & np.isnan(scale)
    if bad.any():
        raise Overflow(int(np.argmax(bad)))


def overflow_error(fmt: str, x: np.ndarray, start: int, block: int, per_row: int, block_size: int):
    """The error naming the row and elements of the overflowing block
    (``block`` counts blocks of ``block_size`` from super-block ``start``)."""
    from quantspec.errors import NonFiniteInputError
    nblock = 256 // block_size
    superblock = start + block // nblock
    row, col = divmod(superblock, per_row)
    first = col * 256 + (block % nblock) * block_size
    return NonFiniteInputError(
        f"{fmt}: row {row}, elements {first}..{first + block_size - 1}: the quantizer's float32 sums overflow "
        f"(largest |x| in its super-block {float(np.max(np.abs(x[row, col * 256:(col + 1) * 256]))):.3g}); "
        "ggml aborts on this input (GGML_ASSERT scale >= 0), the spec refuses it")


def refusal(fmt: str, superblocks, x: np.ndarray, imatrix: np.ndarray | None, superblock: int, block_size: int):
    """The error ``quantize(x, imatrix)`` raises when super-block ``superblock``
    (row-major over ``x (rows, n)``) is the first it refuses, from that
    super-block alone (``superblocks``: the format's ``_superblocks``); None
    if the spec quantizes it. Kernels report only the super-block."""
    per_row = x.shape[1] // 256
    row, col = divmod(int(superblock), per_row)
    cols = slice(col * 256, (col + 1) * 256)
    xs = np.asarray(x[row, cols], dtype=F32).reshape(1, 256)
    qw = None if imatrix is None else np.asarray(imatrix[cols], dtype=F32).reshape(1, 256)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        try:
            superblocks(xs, qw)
        except Overflow as exc:
            return overflow_error(fmt, x, int(superblock), exc.block, per_row, block_size)
    return None
