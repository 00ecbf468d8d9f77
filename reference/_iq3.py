"""What IQ3_XXS and IQ3_S share: the sign table, the lattice tables of the
quantizers (computed here, as ggml's ``iq3xs_init_impl`` computes them at
run time), and the scale search of a block of 32, with every block in flight.

Read from ggml ``src/ggml-quants.c`` (``iq3xs_init_impl``,
``iq3_find_best_neighbour``, ``quantize_row_iq3_xxs_impl``,
``quantize_row_iq3_s_impl``) and ``src/ggml-common.h`` (``ksigns_iq2xs``)
as vendored in llama-cpp-python 0.3.36 (ggml sync 353b63b4; identical at
ggml d99724f2).

The quantizers' lattice
-----------------------
Both formats quantize groups of 4 magnitudes to 3-bit levels ``l`` (0..7)
standing for the odd integers ``2*l + 1`` (1, 3, ..., 15); a group's key is
``u = l_0 | l_1 << 3 | l_2 << 6 | l_3 << 9`` (0..4095). Only some keys are
grid points (``KGRID_256``: 256 of them for IQ3_XXS, ``KGRID_512``: 512
for IQ3_S). ``LatticeTables`` holds, for one grid:

* ``map[u]``: the grid index of key ``u``, or -1 when ``u`` is off the grid;
* ``neighbours[u]``: for an off-grid ``u``, the grid indices to try
  instead, padded with -1 (``count[u]`` of them are real).

The neighbour lists are ggml's: the squared Euclidean distance in the odd
integer lattice, ``sum_i ((2*l_i + 1) - (2*g_i + 1))^2`` (an integer), from
``u`` to every grid point ``g``; the points sorted by (distance, grid
index); kept: every point whose distance is one of the ``nwant`` smallest
distinct distances (IQ3_XXS: 2 shells, IQ3_S: 3 shells), in that order.
The order decides ties in the search (the first of equal weighted errors
wins), so it is part of the format's bytes. ggml sorts with ``qsort`` on
the pair (distance, index), a total order, so its lists are deterministic
too; the tests compare these tables with the ones ggml's quantizer must be
using through the quantized bytes.

The sign table
--------------
``ksigns_iq2xs[s]`` for a 7-bit ``s`` is ``s`` with bit 7 set when ``s``
has an odd number of set bits: the 8 sign bits of a group of 8 always have
even parity, so 7 of them are stored. ``KSIGNS`` is the table IQ2_XXS and
IQ2_XS share (``tables.ggml_iq2.KSIGNS_IQ2XS``, carried from the header);
``even_parity_signs`` states the rule, and the tests check that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from ._format import BlockFormat
from ._kquants import IEEE
from ._numerics import F32, nearest_int, sequential_sum
from .tables.ggml_iq2 import KSIGNS_IQ2XS
from .tables.ggml_iq3 import KGRID_256, KGRID_512

#: ``kmask_iq2xs``: bit j of a sign byte is the sign of element j of its group of 8.
KMASK = (np.uint8(1) << np.arange(8, dtype=np.uint8)).astype(np.uint8)


def even_parity_signs() -> np.ndarray:
    """``ksigns_iq2xs``: 7 sign bits completed to even parity (uint8 x 128)."""
    s = np.arange(128, dtype=np.uint8)
    odd = np.unpackbits(s[:, None], axis=1).sum(axis=1) & 1
    return (s | (odd.astype(np.uint8) << 7)).astype(np.uint8)


KSIGNS = KSIGNS_IQ2XS


def signed_grid_table(grid: np.ndarray) -> np.ndarray:
    """Decoding table of a grid: row ``16*g + m`` holds the 4 magnitudes of
    grid point ``g`` (its little-endian bytes) as float32, element ``i``
    negated where bit ``i`` of the sign nibble ``m`` is set."""
    magnitudes = grid.view(np.uint8).reshape(-1, 4).astype(F32)
    negative = (np.arange(16)[:, None] >> np.arange(4)) & 1            # (16, 4)
    table = np.where(negative[None], -magnitudes[:, None, :], magnitudes[:, None, :])
    table = np.ascontiguousarray(table.reshape(-1, 4), dtype=F32)
    table.flags.writeable = False
    return table

#: Number of distance shells kept per off-grid key, by grid size.
NWANT = {256: 2, 512: 3}

KMAP_SIZE = 4096  # 4 levels of 3 bits
LEVELS = 8        # kMaxQ


@dataclass(frozen=True)
class LatticeTables:
    """The quantizer's tables of one grid (see the module docstring)."""

    levels: np.ndarray      # (G, 4) int8: the 3-bit level of each coordinate of grid point g
    map: np.ndarray         # (4096,) int32: grid index of key u, or -1
    neighbours: np.ndarray  # (4096, N) int32: neighbour grid indices of off-grid u, -1 padded
    count: np.ndarray       # (4096,) int32: number of real entries in neighbours[u]
    odd: np.ndarray         # (4096, 4, N) float32: coordinate i (2*l_i + 1) of each neighbour, 0 for padding


def key_levels(keys: np.ndarray) -> np.ndarray:
    """Keys ``u`` (any shape) -> their 4 levels ``(..., 4)``: ``(u >> 3i) & 7``."""
    return (np.asarray(keys)[..., None] >> (3 * np.arange(4))) & 7


@cache
def lattice_tables(grid_size: int) -> LatticeTables:
    """``iq3xs_init_impl(grid_size)``: the map and neighbour lists of the
    256-point (IQ3_XXS) or 512-point (IQ3_S) grid, computed once per process."""
    kgrid = {256: KGRID_256, 512: KGRID_512}[grid_size]
    levels = key_levels(kgrid.astype(np.int32)).astype(np.int8)
    kmap = np.full(KMAP_SIZE, -1, dtype=np.int32)
    kmap[kgrid.astype(np.int64)] = np.arange(grid_size, dtype=np.int32)

    off = np.flatnonzero(kmap < 0)
    odd_keys = 2 * key_levels(off) + 1                     # (M, 4)
    odd_grid = 2 * levels.astype(np.int32) + 1             # (G, 4)
    dist2 = ((odd_keys[:, None, :] - odd_grid[None, :, :]) ** 2).sum(axis=-1)  # (M, G), exact integers
    # sort by (distance, grid index): a stable sort of the index-ordered distances
    order = np.argsort(dist2, axis=1, kind="stable")
    sorted_d2 = np.take_along_axis(dist2, order, axis=1)
    # the nwant smallest distinct distances: a point is kept while fewer than
    # nwant distinct values precede-or-equal it
    new_shell = np.concatenate([np.ones((off.size, 1), bool), sorted_d2[:, 1:] > sorted_d2[:, :-1]], axis=1)
    shell = np.cumsum(new_shell, axis=1)                    # 1-based shell number of each sorted point
    keep = shell <= NWANT[grid_size]
    count = keep.sum(axis=1)
    width = int(count.max())
    neighbours = np.full((KMAP_SIZE, width), -1, dtype=np.int32)
    neighbours[off] = np.where(keep[:, :width], order[:, :width], -1)
    counts = np.zeros(KMAP_SIZE, dtype=np.int32)
    counts[off] = count
    odd = (2 * levels[np.maximum(neighbours, 0)].astype(np.int32) + 1).astype(F32)   # (4096, N, 4)
    odd = np.ascontiguousarray(np.where((neighbours >= 0)[..., None], odd, F32(0)).transpose(0, 2, 1))
    for arr in (levels, kmap, neighbours, counts, odd):
        arr.flags.writeable = False
    return LatticeTables(levels, kmap, neighbours, counts, odd)


_FLT_MAX = F32(np.finfo(np.float32).max)


def best_neighbour(tables: LatticeTables, keys: np.ndarray, xval: np.ndarray, waux: np.ndarray,
                   scale: np.ndarray) -> np.ndarray:
    """``iq3_find_best_neighbour`` for off-grid groups ``(M,)`` at once:
    the grid index of the neighbour of ``keys`` with the smallest

        d2 = sum_i (waux_i * diff_i) * diff_i,  diff_i = scale * (2*g_i + 1) - xval_i

    (float32, ``i`` = 0..3 in order from +0.0), the first in list order on
    ties; ``xval``, ``waux`` are ``(M, 4)``, ``scale`` ``(M,)``.

    ggml keeps a neighbour when ``d2 < best`` starting from ``FLT_MAX`` and
    aborts (``GGML_ASSERT``) when none qualifies, which happens only when
    every ``d2`` overflows or is NaN (``|x|`` beyond about 1e12). The spec
    takes the first neighbour of the list there, so that every finite input
    has a result.
    """
    q = tables.odd[keys]                                    # (M, 4, N)
    scale = scale[:, None]
    d2 = np.zeros((q.shape[0], q.shape[2]), dtype=F32)
    diff = np.empty_like(d2)
    term = np.empty_like(d2)
    for i in range(4):
        np.multiply(scale, q[:, i], out=diff)
        np.subtract(diff, xval[:, i, None], out=diff)
        np.multiply(waux[:, i, None], diff, out=term)
        np.multiply(term, diff, out=term)
        np.add(d2, term, out=d2)
    # the first strict minimum below FLT_MAX = argmin over the scores with
    # NaN, padding and values >= FLT_MAX made +inf
    d2[~(d2 < _FLT_MAX) | (np.arange(d2.shape[1]) >= tables.count[keys][:, None])] = np.inf
    return tables.neighbours[keys, np.argmin(d2, axis=1)]


def round_levels(inverse_scale: np.ndarray, xval: np.ndarray) -> np.ndarray:
    """``MAX(0, MIN(7, nearest_int(0.5f*(id*xval - 1))))``: the level of each
    magnitude for the inverse scale ``id`` (broadcast against ``xval``)."""
    return np.clip(nearest_int(F32(0.5) * (inverse_scale * xval - F32(1))), 0, LEVELS - 1)


def group_keys(levels: np.ndarray) -> np.ndarray:
    """Levels ``(..., 4k)`` -> keys of their groups of 4 ``(..., k)``."""
    g = levels.reshape(levels.shape[:-1] + (-1, 4)).astype(np.int32)
    return g[..., 0] | g[..., 1] << 3 | g[..., 2] << 6 | g[..., 3] << 9


# ------------------------------------------------------------------ quantize

#: Super-blocks quantized per batch (independent: the batch never changes a bit).
BATCH_SUPERBLOCKS = 256
QK_K = 256


def quantize_rows(fmt: BlockFormat, x: np.ndarray, imatrix: np.ndarray | None, superblocks) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes, by ``superblocks(xs (S, 256), qw (S, 256) or None)``
    returning structured blocks ``(S,)``."""
    nrows, n = x.shape
    per_row = n // QK_K
    xs = x.reshape(nrows * per_row, QK_K)
    qw = None if imatrix is None else np.asarray(imatrix, dtype=F32).reshape(per_row, QK_K)
    blocks = np.empty(nrows * per_row, dtype=fmt.dtype)
    with np.errstate(**IEEE):
        for start in range(0, xs.shape[0], BATCH_SUPERBLOCKS):
            stop = min(start + BATCH_SUPERBLOCKS, xs.shape[0])
            w = None if qw is None else qw[np.arange(start, stop) % per_row]
            blocks[start:stop] = superblocks(xs[start:stop], w)
    return fmt.to_bytes(blocks.reshape(nrows, per_row))


def block_weights(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Weights of super-blocks ``xs (S, 256)``: ``x^2``, or with importance
    weights ``qw``: ``qw * sqrtf(sigma2 + x^2)``, ``sigma2 = 2*sum(x^2)/256``
    (the sum in element order)."""
    if qw is None:
        return xs * xs
    sigma2 = F32(2) * sequential_sum(xs * xs) / F32(QK_K)
    return qw * np.sqrt(sigma2[:, None] + xs * xs)


def c_max(values: np.ndarray) -> np.ndarray:
    """``max = v[0]; for (i...) max = MAX(max, v[i]);`` over the last axis
    (``MAX(a, b) = a > b ? a : b``)."""
    out = values[..., 0].copy()
    for i in range(1, values.shape[-1]):
        out = np.where(out > values[..., i], out, values[..., i])
    return out


def _weighted_sums(xval: np.ndarray, weight: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sumqx += w*xval*q; sumq2 += w*q*q`` with ``q = 2*L + 1``, in element order."""
    q = (2 * levels + 1).astype(F32)
    return sequential_sum((weight * xval) * q), sequential_sum((weight * q) * q)


def _snap_off_grid(tables: LatticeTables, levels: np.ndarray, on_grid: np.ndarray, xval: np.ndarray,
                   waux: np.ndarray, scale: np.ndarray) -> None:
    """Replace, in place, the levels of every group with ``on_grid`` False by
    those of its best neighbour for ``scale`` (per block)."""
    rows, groups = np.nonzero(~on_grid)
    if rows.size == 0:
        return
    keys = group_keys(levels)[rows, groups]
    cols = 4 * groups[:, None] + np.arange(4)
    best = best_neighbour(tables, keys, xval[rows[:, None], cols], waux[rows[:, None], cols], scale[rows])
    levels[rows[:, None], cols] = tables.levels[best]


def block_search(tables: LatticeTables, xval: np.ndarray, weight: np.ndarray, waux: np.ndarray,
                 vmax: np.ndarray, trials: range, start_on_grid: bool, refine_all: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The scale search of blocks of 32 magnitudes ``xval (B, 32)``, as in
    ``quantize_row_iq3_xxs_impl`` / ``quantize_row_iq3_s_impl``. Returns the
    scale ``(B,)`` and the levels ``L (B, 32)`` (0..7; every group of 4 a
    grid point).

    1. ``scale = max/15``, ``best = 0``, ``L = 0``; every group counts as
       on the grid (IQ3_XXS, ``start_on_grid``) or off it (IQ3_S).
    2. For each trial ``is`` (IQ3_XXS: -15..15, IQ3_S: -9..9):
       ``id = (15 + is*0.2f)/max``, ``L' = clamp(nearest_int(0.5f*(id*xval
       - 1)), 0, 7)``; a group whose levels are not a grid point takes its
       best neighbour (``best_neighbour`` with ``this_scale = 1/id``);
       ``sumqx = sum w*xval*q``, ``sumq2 = sum w*q*q`` (``q = 2*L' + 1``);
       if ``sumq2 > 0`` and ``sumqx^2 > best*sumq2``: ``scale =
       sumqx/sumq2``, ``best = scale*sumqx``, ``L = L'`` and the groups'
       on-grid flags are those of this trial.
    3. If some group of the accepted trial was off the grid and ``scale >
       0``: with ``id = 1/scale`` the groups still flagged off the grid
       (IQ3_XXS) or all groups (IQ3_S, ``refine_all``) are rounded again
       and, if off the grid, replaced by their best neighbour for
       ``scale``; then ``scale = sumqx/sumq2`` of the new ``L`` if ``sumq2
       > 0``.
    """
    nblocks = xval.shape[0]
    scale = (vmax / F32(2 * LEVELS - 1)).astype(F32)
    best = np.zeros(nblocks, dtype=F32)
    levels = np.zeros(xval.shape, dtype=np.int32)
    on_grid = np.full((nblocks, xval.shape[1] // 4), start_on_grid)
    for step in trials:
        inverse = (F32(2 * LEVELS - 1) + F32(step) * F32(0.2)) / vmax
        this_scale = F32(1) / inverse
        trial = round_levels(inverse[:, None], xval)
        trial_on_grid = tables.map[group_keys(trial)] >= 0
        _snap_off_grid(tables, trial, trial_on_grid, xval, waux, this_scale)
        sumqx, sumq2 = _weighted_sums(xval, weight, trial)
        accept = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        scale = np.where(accept, sumqx / sumq2, scale)
        best = np.where(accept, scale * sumqx, best)
        levels = np.where(accept[:, None], trial, levels)
        on_grid = np.where(accept[:, None], trial_on_grid, on_grid)
    refine = (~on_grid).any(axis=1) & (scale > 0)
    if refine.any():
        redo = (np.ones_like(on_grid) if refine_all else ~on_grid) & refine[:, None]
        rounded = round_levels((F32(1) / scale)[:, None], xval)
        redo_elements = np.repeat(redo, 4, axis=1)
        levels = np.where(redo_elements, rounded, levels)
        _snap_off_grid(tables, levels, ~redo | (tables.map[group_keys(levels)] >= 0), xval, waux, scale)
        sumqx, sumq2 = _weighted_sums(xval, weight, levels)
        scale = np.where(refine & (sumq2 > 0), sumqx / sumq2, scale)
    return scale.astype(F32), levels
