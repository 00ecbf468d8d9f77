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
the codebook, to a list of nearby codebook points (:class:`Lattice`).

Arithmetic: float32 in C order without fused multiply-adds, as x86-64
``libggml-base`` computes it; the searches run with every block (and every
off-codebook group) in flight and loop over the trial scales and over the 8
elements of a group. A build of ggml that contracts ``a*b + c`` into FMAs
can pick other trial scales or neighbours and so write other bytes.

Upstream: ggml ``src/ggml-quants.c`` ``iq2xs_init_impl``,
``iq2_find_best_neighbour``, ``dequantize_row_iq2_xxs/xs/s`` as vendored by
llama-cpp-python 0.3.36 (llama.cpp @ 0c1e5709; identical in ggml @ d99724f2).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from ._numerics import F32, nearest_int, sequential_sum
from ._search import make_qp_quants
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


# ------------------------------------------------------------------ the lattice

#: Distance shells of neighbours kept per off-codebook key (``nwant`` of ``iq2xs_init_impl``).
NEIGHBOUR_SHELLS = {"iq2_xxs": 2, "iq2_xs": 2, "iq2_s": 1}

#: Levels of the lattice (``kMaxQ``): 0, 1, 2 for the odd integers 1, 3, 5.
LEVELS = 3

_FLT_MAX = F32(np.finfo(np.float32).max)
_ODD = np.array([1, 3, 5], dtype=F32)  # the lattice values 2l + 1


@dataclass(frozen=True)
class Lattice:
    """The quantizer's tables of one codebook (``iq2xs_init_impl``).

    * ``levels[k]``: codebook point k as 8 levels 0..2 (int8);
    * ``term_of[j][k]``: ``3*j + level`` of element j of codebook point k
      (int64, element-major): where its term sits among a group's 24;
    * ``index[u]``: for every 16-bit key ``u = sum_j l_j << 2j``, the codebook
      index of the point with those levels, or -1 when it is off the codebook;
    * ``row[u]``: for an off-codebook key with every ``l_j <= 2``, its row of
      neighbour lists: the codebook indices to try instead are
      ``flat[starts[row] : starts[row + 1]]``, in ggml's order.

    The neighbours of a key are the codebook points nearest to it in the
    odd-integer lattice: the squared distance ``sum_j ((2*l_j + 1) - (2*g_j
    + 1))**2`` (an integer) to every point ``g``, the points sorted by
    (distance, codebook index), and kept while their distance is one of the
    ``NEIGHBOUR_SHELLS`` smallest distinct distances (2 for IQ2_XXS and
    IQ2_XS, 1 for IQ2_S). The search takes the first of equal weighted
    errors, so this order is part of the format's bytes; ggml sorts with
    ``qsort`` on the pair (distance, index), a total order, so its lists are
    deterministic too. Keys with a level 3 (never produced: levels are
    clamped to 0..2) have no list.
    """

    levels: np.ndarray
    term_of: np.ndarray
    index: np.ndarray
    row: np.ndarray
    starts: np.ndarray
    flat: np.ndarray


@cache
def lattice(fmt: str) -> Lattice:
    keys = lattice_keys(fmt)
    shift = 2 * np.arange(8)
    levels = ((keys[:, None].astype(np.int32) >> shift) & 3).astype(np.int8)
    index = np.full(1 << 16, -1, dtype=np.int32)
    index[keys] = np.arange(keys.size, dtype=np.int32)
    # every key of levels 0..2 (3**8 of them) that is off the codebook
    all_levels = (np.arange(LEVELS ** 8)[:, None] // LEVELS ** np.arange(8)) % LEVELS
    all_keys = (all_levels << shift).sum(axis=1)
    off = index[all_keys] < 0
    a, g = (2 * all_levels[off] + 1).astype(np.float64), (2 * levels + 1).astype(np.float64)
    # squared distances, exact small integers (BLAS on float64 is exact here)
    dist = ((a * a).sum(axis=1)[:, None] + (g * g).sum(axis=1)[None, :] - 2 * (a @ g.T)).astype(np.int32)
    limit = dist.min(axis=1)                             # the nearest shell, then each further one
    for _ in range(NEIGHBOUR_SHELLS[fmt] - 1):
        limit = np.where(dist > limit[:, None], dist, np.iinfo(np.int32).max).min(axis=1)
    key_row, point = np.nonzero(dist <= limit[:, None])
    order = np.lexsort((point, dist[key_row, point], key_row))   # by key, distance, then codebook index
    row = np.full(1 << 16, -1, dtype=np.int32)
    row[all_keys[off]] = np.arange(int(off.sum()), dtype=np.int32)
    starts = np.concatenate(([0], np.cumsum(np.bincount(key_row, minlength=int(off.sum()))))).astype(np.int64)
    flat = point[order].astype(np.int32)
    term_of = np.ascontiguousarray(levels.T.astype(np.int64) + 3 * np.arange(8)[:, None])
    for arr in (levels, term_of, index, row, starts, flat):
        arr.flags.writeable = False
    return Lattice(levels, term_of, index, row, starts, flat)


def neighbour_list(lat: Lattice, key: int) -> list[int]:
    """The neighbours of an off-codebook key, in order (empty for others)."""
    r = int(lat.row[key])
    return [] if r < 0 else lat.flat[lat.starts[r]:lat.starts[r + 1]].tolist()


def round_levels(inverse_scale: np.ndarray, xval: np.ndarray) -> np.ndarray:
    """``MAX(0, MIN(2, nearest_int(0.5f*(id*xval - 1))))``: the level of each
    magnitude for the inverse scale ``id`` (broadcast against ``xval``)."""
    return np.clip(nearest_int(F32(0.5) * (inverse_scale * xval - F32(1))), 0, LEVELS - 1)


def group_keys(levels: np.ndarray) -> np.ndarray:
    """Levels ``(..., 8)`` -> the 16-bit keys of their groups ``(...,)``."""
    return (levels.astype(np.int32) << (2 * np.arange(8, dtype=np.int32))).sum(axis=-1)


def best_neighbour(lat: Lattice, keys: np.ndarray, xval: np.ndarray, waux: np.ndarray,
                   scale: np.ndarray) -> np.ndarray:
    """``iq2_find_best_neighbour`` for off-codebook groups ``(M,)`` at once:
    the codebook index of the neighbour of ``keys`` with the smallest

        d2 = sum_j (waux_j * diff_j) * diff_j,  diff_j = scale * (2*g_j + 1) - xval_j

    (float32, ``j`` = 0..7 in order from +0.0), the first in list order on
    ties; ``xval``, ``waux`` are ``(M, 8)``, ``scale`` ``(M,)``. All
    (group, neighbour) pairs are scored at once.

    ggml keeps a neighbour when ``d2 < best`` starting from ``FLT_MAX`` and
    aborts (``GGML_ASSERT``) when none qualifies, which happens only when
    every ``d2`` overflows or is NaN. The spec takes the first neighbour of
    the list there, so that every finite input has a result.
    """
    rows = lat.row[keys]
    first = lat.starts[rows]
    counts = lat.starts[rows + 1] - first
    seg = np.concatenate(([0], np.cumsum(counts)[:-1]))        # each group's first pair
    total = int(counts.sum())
    cand = lat.flat[np.repeat(first - seg, counts) + np.arange(total)]
    # the three possible terms of every (group, element), one per level l:
    # (waux * diff) * diff, diff = scale * (2l + 1) - xval; each pair adds its 8 in order
    diff = scale[:, None, None] * _ODD - xval[:, :, None]      # (M, 8, 3)
    term = ((waux[:, :, None] * diff) * diff).reshape(-1)
    at = np.repeat(np.arange(0, 24 * keys.size, 24), counts)
    d2 = np.zeros(total, dtype=F32)
    for j in range(8):
        d2 += term[at + lat.term_of[j][cand]]
    d2 = np.where(d2 < _FLT_MAX, d2, F32(np.inf))               # NaN and overflow never qualify
    least = np.minimum.reduceat(d2, seg)
    position = np.where(d2 == np.repeat(least, counts), np.arange(total), total)
    return cand[np.minimum.reduceat(position, seg)]


def snap_to_codebook(lat: Lattice, levels: np.ndarray, xval: np.ndarray, waux: np.ndarray,
                     scale: np.ndarray, active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Groups ``(B, g, 8)`` of levels -> ``(codebook index (B, g), on the
    codebook as rounded (B, g))``; the levels of off-codebook groups are
    replaced in place by their best neighbour's for the block scales
    ``scale (B,)``. ``active (B, g)``: the groups to look at (others keep
    index -1)."""
    keys = group_keys(levels)
    index = lat.index[keys]
    on_grid = index >= 0
    off = ~on_grid if active is None else (~on_grid & active)
    if off.any():
        b, g = np.nonzero(off)
        found = best_neighbour(lat, keys[b, g], xval[b, g], waux[b, g], scale[b])
        index[b, g] = found
        levels[b, g] = lat.levels[found]
    return index, on_grid


def weighted_sums(weight: np.ndarray, xval: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sumqx = sum w*xval*q``, ``sumq2 = sum w*q*q`` with ``q = 2*l + 1``
    over the last axis, C order: ``(w*xval)*q``, ``(w*q)*q``, sequential."""
    q = (2 * levels.astype(np.int32) + 1).astype(F32)
    return sequential_sum((weight * xval) * q), sequential_sum((weight * q) * q)


def c_max(values: np.ndarray) -> np.ndarray:
    """``max = v[0]; for (i...) max = MAX(max, v[i]);`` over the last axis,
    with ggml's ``MAX(a, b) = a > b ? a : b`` (a NaN ``v[i]`` is taken)."""
    out = values[..., 0].copy()
    for i in range(1, values.shape[-1]):
        out = np.where(out > values[..., i], out, values[..., i])
    return out


def magnitudes_and_signs(x: np.ndarray, weight: np.ndarray, parity: bool) -> tuple[np.ndarray, np.ndarray]:
    """Groups ``(..., 8)`` -> ``(xval, sign byte)``. ``xval = x`` where ``x >=
    0`` (so -0.0 stays -0.0), else ``-x``; bit j of the sign byte is set for a
    negative element j. With ``parity`` (IQ2_XXS, IQ2_XS) an odd count of
    negatives is made even: the element with the least ``weight*x*x`` (the
    first of equals; C's ``<`` from element 0) is flipped back, ``xval =
    -xval`` there, and its bit toggles; the stored byte is its low 7 bits."""
    negative = ~(x >= 0)
    xval = np.where(negative, -x, x)
    bits = (negative.astype(np.uint8) << np.arange(8, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)
    if not parity:
        return xval, bits
    odd = negative.sum(axis=-1) % 2 == 1
    cost = (weight * x) * x
    imin = np.zeros(x.shape[:-1], dtype=np.intp)
    least = cost[..., 0].copy()
    for i in range(1, 8):
        take = cost[..., i] < least
        np.copyto(least, cost[..., i], where=take)
        np.copyto(imin, i, where=take)
    flip = odd[..., None] & (np.arange(8) == imin[..., None])
    xval = np.where(flip, -xval, xval)
    bits = bits ^ np.where(odd, np.uint8(1) << imin.astype(np.uint8), 0).astype(np.uint8)
    return xval, bits & np.uint8(127)


def weights_of(xs: np.ndarray, qw: np.ndarray | None, sigma2: np.ndarray) -> np.ndarray:
    """``qw * sqrtf(sigma2 + x*x)``, or without an importance matrix (IQ2_S
    only) ``0.25f*sigma2 + x*x``; ``xs (S, 256)``, ``sigma2 (S,)``."""
    s2 = sigma2[:, None]
    if qw is None:
        return F32(0.25) * s2 + xs * xs
    return qw * np.sqrt(s2 + xs * xs)


# ------------------------------------------------------------------ the block searches

def search_xxs(lat: Lattice, xval: np.ndarray, weight: np.ndarray, waux: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQ2_XXS's search of blocks of 32 ``(B, 32)`` -> ``(scale (B,),
    codebook indices (B, 4), flip (B,): the scale came out negative)``.
    Blocks with scale 0 (``max < GROUP_MAX_EPS`` or ``3*scale <= 0``) get
    index -1 (nothing stored)."""
    nb = xval.shape[0]
    xg, wg = xval.reshape(nb, 4, 8), waux.reshape(nb, 4, 8)
    vmax = c_max(xval)
    zero = vmax < GROUP_MAX_EPS
    scale, _ = make_qp_quants(xval, LEVELS + 1, weight)
    eff_max = scale * F32(LEVELS)
    zero |= eff_max <= 0
    scale = np.where(zero, F32(0), scale).astype(F32)
    levels = np.zeros((nb, 4, 8), dtype=np.int32)    # only read where a trial was accepted or refined
    best = np.zeros(nb, dtype=F32)
    live = ~zero
    for step in range(-6, 7):
        inverse = (F32(2 * LEVELS - 1) + F32(step) * F32(0.1)) / eff_max
        trial = round_levels(inverse[:, None, None], xg)
        snap_to_codebook(lat, trial, xg, wg, F32(1) / inverse, live[:, None].repeat(4, axis=1))
        sumqx, sumq2 = weighted_sums(weight, xval, trial.reshape(nb, 32))
        better = live & (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        new_scale = sumqx / sumq2
        np.copyto(scale, new_scale, where=better)
        np.copyto(best, new_scale * sumqx, where=better)
        np.copyto(levels, trial, where=better[:, None, None])
    refine = live & (scale > 0)
    inverse = F32(1) / np.where(refine, scale, F32(1))
    again = round_levels(inverse[:, None, None], xg)
    snap_to_codebook(lat, again, xg, wg, scale, refine[:, None].repeat(4, axis=1))
    np.copyto(levels, again, where=refine[:, None, None])
    sumqx, sumq2 = weighted_sums(weight, xval, levels.reshape(nb, 32))
    np.copyto(scale, sumqx / sumq2, where=refine & (sumq2 > 0))
    return _final(lat, scale, levels, xg, wg, live)


def search_xs(lat: Lattice, xval: np.ndarray, weight: np.ndarray, waux: np.ndarray, eps: np.float32
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQ2_XS's and IQ2_S's search of blocks of 16 ``(B, 16)`` -> ``(scale,
    codebook indices (B, 2), flip)``; blocks with ``max < eps`` get scale 0
    and index -1."""
    nb = xval.shape[0]
    xg, wg = xval.reshape(nb, 2, 8), waux.reshape(nb, 2, 8)
    vmax = c_max(xval)
    live = ~(vmax < eps)
    best = np.zeros(nb, dtype=F32)
    scale = np.where(live, vmax / F32(2 * LEVELS - 1), F32(0)).astype(F32)
    levels = np.zeros((nb, 2, 8), dtype=np.int32)
    on_grid = np.ones((nb, 2), dtype=bool)
    everything = live[:, None].repeat(2, axis=1)
    for step in range(-9, 10):
        inverse = (F32(2 * LEVELS - 1) + F32(step) * F32(0.1)) / vmax
        trial = round_levels(inverse[:, None, None], xg)
        _, trial_on_grid = snap_to_codebook(lat, trial, xg, wg, F32(1) / inverse, everything)
        sumqx, sumq2 = weighted_sums(weight, xval, trial.reshape(nb, 16))
        better = live & (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        new_scale = sumqx / sumq2
        np.copyto(scale, new_scale, where=better)
        np.copyto(best, new_scale * sumqx, where=better)
        np.copyto(levels, trial, where=better[:, None, None])
        np.copyto(on_grid, trial_on_grid, where=better[:, None])
    redo = live[:, None] & ~on_grid & (scale > 0)[:, None]           # groups rounded again
    refine = redo.any(axis=1)
    inverse = F32(1) / np.where(refine, scale, F32(1))
    again = round_levels(inverse[:, None, None], xg)
    snap_to_codebook(lat, again, xg, wg, scale, redo)
    np.copyto(levels, again, where=redo[:, :, None])
    sumqx, sumq2 = weighted_sums(weight, xval, levels.reshape(nb, 16))
    np.copyto(scale, sumqx / sumq2, where=refine & (sumq2 > 0))
    return _final(lat, scale, levels, xg, wg, live)


def _final(lat: Lattice, scale: np.ndarray, levels: np.ndarray, xg: np.ndarray, wg: np.ndarray,
           live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored codebook indices of the final levels (a negative scale
    flips: ``scale = -scale`` and every sign bit toggles). Final levels off
    the codebook (ggml: "Oops ... not on grid", an abort; only after NaN
    arithmetic) take their first neighbour."""
    flip = live & (scale < 0)
    scale = np.where(flip, -scale, scale).astype(F32)
    keys = group_keys(levels)
    index = lat.index[keys]
    lost = live[:, None] & (index < 0)
    if lost.any():
        rows = lat.row[keys[lost]]
        index[lost] = np.where(rows >= 0, lat.flat[lat.starts[np.maximum(rows, 0)]], 0)
    return scale, np.where(live[:, None], index, -1), flip


def super_scale_codes(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block scales ``(S, nb)`` -> ``(max_scale, d = max_scale/31, codes
    clamp(nearest_int(0.5f*((1/d)*scale - 1)), 0, 15))``; ``max_scale`` is
    ggml's ``MAX`` chain from 0."""
    max_scale = np.zeros(scales.shape[0], dtype=F32)
    for b in range(scales.shape[1]):
        max_scale = np.where(max_scale > scales[:, b], max_scale, scales[:, b])
    d = max_scale / F32(31)
    inverse = F32(1) / d
    codes = np.clip(nearest_int(F32(0.5) * (inverse[:, None] * scales - F32(1))), 0, 15)
    return max_scale, d, codes
