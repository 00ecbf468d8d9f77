"""The trellis ("KT") formats' generator, stated once: IQ1_KT, IQ2_KT,
IQ3_KT and IQ4_KT store, for every group of G consecutive weights, a seed
``idx`` of L bits; the G values it stands for come from an integer
recurrence, so a decoder needs no table.

The generator (``QuantizerIQKT::set_values``, integer variant, "V2" since
ik#529)::

    x = (idx + offset) mod 2**32          offset = 4096 (IQ4_KT: 4096 or 4096 + 32768)
    repeat G times:
        x = x * 0xCBAC1FED mod 2**32
        s = x & 0x3f3f3f3f                four bytes, each 0..63
        out = (byte0 + byte1 + byte2 + byte3) - 126      an integer in -126 .. 126
        value = out                       (IQ3_KT: |out|)

The sum of four independent uniform 6-bit numbers is roughly Gaussian, which
is the point: the 2**L seeds of a group are 2**L pseudo-random Gaussian
vectors (a codebook), and the quantizer picks the seed whose vector, times
the block scale, is closest to the weights. ``out`` is computed as the
integer sum converted to float32 minus ``126.0f`` (exact), then multiplied by
the (float32) scale.

History: ik#113 introduced a QTIP "3INST" fp16 generator; ik#505/ik#529
replaced it with this integer one (a breaking change: files quantized
before decode differently).

``kt_values`` evaluates the generator for any array of seeds;
``codebook(L, G, offset)`` is the whole table for a format (what
ik_llama.cpp's quantizer keeps in memory).

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``QuantizerIQKT::set_values`` @ 8337e4cd.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._iqk import IEEE, IQ4K, QK_K, c_sum, signed_max
from ._numerics import F32, canonical_dot, f16_bits_to_f32
from .tables.ik_llama import IQ4K_VALUES

#: The multiplier of the recurrence.
KA = np.uint32(0xCBAC1FED)
OFFSET = 4096


def kt_values(idx: np.ndarray, group: int, offset: int = OFFSET, absolute: bool = False) -> np.ndarray:
    """The ``group`` generator outputs of each seed, as float32 ``(..., group)``
    (``out``, or ``|out|`` with ``absolute``)."""
    x = (np.asarray(idx).astype(np.uint64) + np.uint64(offset)).astype(np.uint32)
    out = np.empty(x.shape + (group,), dtype=F32)
    with np.errstate(over="ignore"):
        for k in range(group):
            x = x * KA  # uint32 arithmetic wraps mod 2**32
            s = x & np.uint32(0x3F3F3F3F)
            total = (s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + (s >> 24)
            v = total.astype(F32) - F32(126)
            out[..., k] = np.abs(v) if absolute else v
    return out


@lru_cache(maxsize=None)
def codebook(bits: int, group: int, offset: int = OFFSET, absolute: bool = False) -> np.ndarray:
    """Every seed's values: float32 ``(2**bits, group)`` (read-only)."""
    table = kt_values(np.arange(1 << bits), group, offset, absolute)
    table.setflags(write=False)
    return table


# --------------------------------------------------------------------------- the quantizer's search


def fma(a, b, c) -> np.ndarray:
    """float32 fused multiply-add ``a*b + c`` with one rounding (the AVX2
    ``_mm256_fmadd_ps`` of ik_llama.cpp's KT search): the product is exact
    in float64, the sum is rounded to odd in float64 (53 bits, so the final
    rounding to float32 is the correctly rounded result)."""
    a, b, c = (np.asarray(v, dtype=F32).astype(np.float64) for v in (a, b, c))
    p = a * b                                  # exact
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)            # TwoSum: p + c == s + err exactly
    bits = s.view(np.uint64)
    inexact_even = (err != 0) & ((bits & np.uint64(1)) == 0) & np.isfinite(s)
    toward = np.where((err > 0) == (s > 0), np.uint64(1), np.uint64(-1 & 0xFFFFFFFFFFFFFFFF))
    odd = np.where(inexact_even & (s != 0), bits + toward, bits).view(np.float64)
    with np.errstate(**IEEE):
        return odd.astype(F32)


def hsum8(v: np.ndarray) -> np.ndarray:
    """``hsum_float_8`` over the last axis (8): ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7))."""
    return ((v[..., 0] + v[..., 4]) + (v[..., 2] + v[..., 6])) + ((v[..., 1] + v[..., 5]) + (v[..., 3] + v[..., 7]))


def hsum4(v: np.ndarray) -> np.ndarray:
    """The 4-element horizontal sum of ``hsum_float_4x8``: (v0+v2) + (v1+v3)."""
    return (v[..., 0] + v[..., 2]) + (v[..., 1] + v[..., 3])


@dataclass(frozen=True)
class Search:
    """``QuantizerIQKT``: the codebook of one KT format and the clusters
    that narrow its nearest-seed search (``cluster_points``,
    ``finalize_clusters``, ``find_best_match``, ``find_best_scale``)."""

    values: np.ndarray      # (2**bits, G) codebook
    mid: np.ndarray         # (G,) cluster thresholds (8-value groups)
    members: np.ndarray     # (clusters, M) seeds searched for each cluster, -1 = padding
    group: int
    member_values: np.ndarray  # (G, clusters, M) coordinate k of each member (a speed layout of the same data)

    def cluster_of(self, sx: np.ndarray) -> np.ndarray:
        """The cluster of scaled groups ``sx`` (..., G): a sign pattern
        against ``mid`` (8 values: bit k = ``sx[k] > mid[k]``) or the 4
        values' bins -48/-16/16/48 in base 5."""
        if self.group == 8:
            return ((sx > self.mid).astype(np.int64) << np.arange(8)).sum(axis=-1)
        bins = (sx >= F32(-48)).astype(np.int64) + (sx >= F32(-16)) + (sx >= F32(16)) + (sx >= F32(48))
        return (bins * (5 ** np.arange(4))).sum(axis=-1)

    def best_match(self, d: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``find_best_match``: the seed of every group of ``x`` (..., ngroups,
        G) for the block scale ``d`` (...). ``d == 0`` gives seed 0. With
        ``sx = (1/d)*x``: the group's cluster, then among its seeds the one
        whose values v minimize ``sum w*(v - sx)^2``, the sum in the AVX2
        horizontal-add order, the seeds scanned 8 at a time in 8 lanes (lane
        i keeps the first minimum of the seeds at positions = i mod 8; then
        the lanes are compared in order), which fixes the winner on ties."""
        with np.errstate(**IEEE):
            inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
            sx = inv[..., None, None] * x
        shape = x.shape[:-1]
        flat_sx = sx.reshape(-1, self.group)
        flat_w = np.broadcast_to(w, x.shape).reshape(-1, self.group)
        cluster = self.cluster_of(flat_sx)
        out = np.zeros(flat_sx.shape[0], dtype=np.int64)
        width = self.members.shape[1]
        chunk = max(1, (1 << 20) // width)
        lanes = np.arange(8) if self.group == 8 else np.array([0, 2, 4, 6, 1, 3, 5, 7])
        pad = self.members < 0
        for start in range(0, flat_sx.shape[0], chunk):
            stop = start + chunk
            cl = cluster[start:stop]
            mem = self.members[cl]                                              # (g, M)
            with np.errstate(**IEEE):
                sq = []
                for k in range(self.group):
                    diff = self.member_values[k][cl] - flat_sx[start:stop, k, None]
                    sq.append(flat_w[start:stop, k, None] * (diff * diff))
                if self.group == 8:
                    score = ((sq[0] + sq[4]) + (sq[2] + sq[6])) + ((sq[1] + sq[5]) + (sq[3] + sq[7]))
                else:
                    score = (sq[0] + sq[2]) + (sq[1] + sq[3])
            score[pad[cl]] = np.inf
            score = score.reshape(score.shape[0], -1, 8)[:, :, lanes]          # (g, M/8, lane)
            pos = np.argmin(score, axis=1)                                      # first minimum per lane
            lane_best = np.take_along_axis(score, pos[:, None, :], axis=1)[:, 0, :]
            lane = np.argmin(lane_best, axis=1)                                 # first lane with the minimum
            k = 8 * np.take_along_axis(pos, lane[:, None], axis=1)[:, 0] + lanes[lane]
            out[start:stop] = np.take_along_axis(mem, k[:, None], axis=1)[:, 0]
        out = np.where(np.repeat(np.broadcast_to(d, shape[:-1]).reshape(-1) != 0, shape[-1]), out, 0)
        return np.maximum(out, 0).reshape(shape)

    def best_scale(self, x: np.ndarray, w: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``find_best_scale`` (AVX2) for blocks of 32 ``x``, ``w`` (..., 32)
        and their seeds ``idx`` (..., 32/G): per lane k of 8, ``sumqx =
        fma(q*w, x, sumqx)`` and ``sumq2 = fma(q*w, q, sumq2)`` over the
        elements k, k+8, k+16, k+24; the lanes summed by ``hsum_float_8``.
        Returns ``(sumqx/sumq2, sumqx*sumqx/sumq2)``, or (0, 0) if ``sumq2 <= 0``."""
        q = self.values[idx].reshape(x.shape)
        with np.errstate(**IEEE):
            qw = q * w
            sqx = np.zeros(x.shape[:-1] + (8,), dtype=F32)
            sq2 = np.zeros(x.shape[:-1] + (8,), dtype=F32)
            for l in range(0, x.shape[-1], 8):
                sqx = fma(qw[..., l:l + 8], x[..., l:l + 8], sqx)
                sq2 = fma(qw[..., l:l + 8], q[..., l:l + 8], sq2)
            sumqx, sumq2 = hsum8(sqx), hsum8(sq2)
            ok = sumq2 > 0
            d = np.where(ok, sumqx / sumq2, F32(0)).astype(F32)
            score = np.where(ok, sumqx * sumqx / sumq2, F32(0)).astype(F32)
        return d, score


@lru_cache(maxsize=None)
def search(bits: int, group: int, absolute: bool, clusters: int, neighbours: int, offset: int = OFFSET) -> Search:
    """Build ``QuantizerIQKT(clusters, neighbours, offset)`` (deterministic:
    the configurations ik_llama.cpp uses bin the codebook, no random start)."""
    values = codebook(bits, group, offset, absolute)
    npoint = values.shape[0]
    if group == 8:
        if absolute:  # the median of each coordinate (the points read as int)
            srt = np.sort(values.astype(np.int64), axis=0)
            mid = (F32(0.5) * (srt[npoint // 2] + srt[npoint // 2 - 1]).astype(F32)).astype(F32)
        else:
            mid = (F32(0.5) * (values.min(axis=0) + values.max(axis=0))).astype(F32)
        u = ((values > mid).astype(np.int64) << np.arange(8)).sum(axis=-1)
    else:
        mid = (F32(0.5) * (values.min(axis=0) + values.max(axis=0))).astype(F32)
        bins = (values >= F32(-48)).astype(np.int64) + (values >= F32(-16)) + (values >= F32(16)) + (values >= F32(48))
        u = (bins * (5 ** np.arange(4))).sum(axis=-1)
    centers = np.zeros((clusters, group), dtype=F32)
    by_cluster = np.argsort(u, kind="stable")               # point order kept within a cluster
    bounds = np.searchsorted(u[by_cluster], np.arange(clusters + 1))
    for c in range(clusters):  # sump += v in point order, then / count
        if bounds[c + 1] > bounds[c]:
            centers[c] = c_sum(values[by_cluster[bounds[c]:bounds[c + 1]]].T) / F32(bounds[c + 1] - bounds[c])

    def dist2(pts: np.ndarray, cents: np.ndarray) -> np.ndarray:
        """``for k: d = p[k] - c[k]; dist2 += d*d`` for every (point, center)."""
        out = np.zeros((pts.shape[0], cents.shape[0]), dtype=F32)
        for k in range(group):
            diff = pts[:, None, k] - cents[None, :, k]
            out += diff * diff
        return out

    # each point joins its `neighbours` nearest centers (ties: the lower cluster first)
    joined = np.zeros((npoint, clusters), dtype=bool)
    distances = np.empty((clusters, npoint), dtype=F32)      # kept for the padding below
    for start in range(0, npoint, 4096):
        dd = dist2(values[start:start + 4096], centers)
        distances[:, start:start + 4096] = dd.T
        kth = np.partition(dd, neighbours - 1, axis=1)[:, neighbours - 1:neighbours]
        below, at = dd < kth, dd == kth
        room = neighbours - below.sum(axis=1, keepdims=True)
        joined[start:start + 4096] = below | (at & (np.cumsum(at, axis=1) <= room))
    member_lists = []
    for c in range(clusters):
        pts = np.flatnonzero(joined[:, c])                   # points ascending
        if len(pts) % 8:  # padded to a multiple of 8 with the nearest other points (ties: lower point)
            col = distances[c].copy()
            col[pts] = np.inf
            need = 8 - len(pts) % 8
            limit = np.partition(col, need - 1)[need - 1]
            cand = np.flatnonzero(col <= limit)
            extra = cand[np.lexsort((cand, col[cand]))][:need]
            pts = np.concatenate([pts, extra])
        member_lists.append(pts if len(pts) else np.arange(npoint))  # an empty cluster searches everything
    width = max(len(p) for p in member_lists)
    members = np.full((clusters, width), -1, dtype=np.int64)
    for c, pts in enumerate(member_lists):
        members[c, :len(pts)] = pts
    member_values = np.ascontiguousarray(np.moveaxis(np.where(members[..., None] >= 0,
                                                              values[np.maximum(members, 0)], F32(0)), -1, 0))
    return Search(values, mid, members, group, member_values)


def kt_weights(x: np.ndarray, imatrix: np.ndarray | None, sigma_scale: float = 2.0) -> np.ndarray:
    """``QuantizerIQKT::set_weights`` (rows ``(nrows, n)`` -> same shape)."""
    nrows, n = x.shape
    xs = x.reshape(nrows, n // QK_K, QK_K)
    with np.errstate(**IEEE):
        sumx2 = c_sum(xs * xs)
        tiny = sumx2 < F32(1e-14) * F32(QK_K)
        sigma2 = (F32(sigma_scale) * sumx2) / F32(QK_K)
        if imatrix is None:
            w = F32(0.25) * sigma2[..., None] + xs * xs
        else:
            xb = xs.reshape(nrows, n // QK_K, QK_K // 32, 32)
            qw = np.asarray(imatrix, dtype=F32).reshape(1, n // QK_K, QK_K // 32, 32)
            wb = qw * np.sqrt(sigma2[..., None, None] + xb * xb)
            weak = (c_sum(xb * xb) < F32(1e-14)) | (c_sum(wb * wb) < F32(1e-14)) | (c_sum(wb * np.abs(xb)) < F32(1e-14))
            w = np.where(weak[..., None], F32(1e-4), wb).reshape(xs.shape)
        w = np.where(tiny[..., None], F32(1e-4), w)
    return w.astype(F32).reshape(nrows, n)


def kt_dot(d_row: np.ndarray, scale: np.ndarray, values: np.ndarray, aq: np.ndarray) -> np.ndarray:
    """The KT formats' dot product with Q8_0: per 32-element sub-block b
    ``t_b = ((d * scale_b) * fp16(q8.d_b)) * (float)sumi_b`` with the exact
    ``sumi_b = sum value_j * q8.qs_j``; a super-block's term is ``t_0 + t_1 +
    ... + t_7`` left to right; then the canonical reduction. ``scale``:
    ``(nrows, nsb, 8)`` integer sub-block scales, ``values``: generator
    outputs (signs applied) ``(nrows, nsb, 8, 32)``."""
    from . import q8_0  # the activation format's module (imports nothing of ours)

    a = q8_0.FORMAT.blocks(aq[None, :])[0]
    nrows = scale.shape[0]
    qa = a["qs"].astype(np.int64).reshape(1, scale.shape[1], QK_K // 32, 32)
    sumi = (values.astype(np.int64) * qa).sum(axis=-1)
    da = f16_bits_to_f32(a["d"]).reshape(1, -1, QK_K // 32)
    with np.errstate(**IEEE):
        t = ((d_row[:, None, None] * scale.astype(F32)) * da) * sumi.astype(F32)
        term = t[..., 0]
        for b in range(1, QK_K // 32):
            term = term + t[..., b]
    return canonical_dot(term.reshape(nrows, -1))


def row_scale_search(x, w, q, scales, values_table, ntry=9):
    """The row scale of IQ1_KT and IQ2_KT from the sub-block scales
    ``(rows, nsub)`` and the chosen codebook values ``q`` ``(rows, nsub, 32)``::

        d = max_scale/-127, best = 0
        for itry in -9..9:  id = (itry - 127)/max_scale
            code_b = best_index_iq4nl(id*scale_b);  q = iq4k_values[code_b]*value
            sumqx = sum w*x*q, sumq2 = sum w*q*q over the row
            strictly better sumqx^2/sumq2 -> d = sumqx/sumq2

    Returns ``(d, max_scale)``."""
    nrows = x.shape[0]
    _, max_scale = signed_max(scales)
    with np.errstate(**IEEE):
        d = max_scale / F32(values_table[0])
        best = np.zeros(nrows, dtype=F32)
        for itry in range(-ntry, ntry + 1):
            inv = F32(itry + int(values_table[0])) / max_scale
            ls = IQ4K.nearest(inv[:, None] * scales)
            dl = IQ4K_VALUES.astype(F32)[ls]
            qq = dl[..., None] * q
            sumqx = c_sum((w * x * qq).reshape(nrows, -1))
            sumq2 = c_sum((w * qq * qq).reshape(nrows, -1))
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(better, sumqx / sumq2, d).astype(F32)
            best = np.where(better, d * sumqx, best).astype(F32)
    return d, max_scale
