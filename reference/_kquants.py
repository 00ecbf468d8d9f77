"""What the K-quants (Q2_K ... Q6_K, Q8_K) share.

* 256-element super-blocks (``QK_K``), each split into 16 sub-blocks of 16
  or 8 sub-blocks of 32 elements with their own small integer scale (and
  min), which an fp16 super-block scale ``d`` (and ``dmin``) multiplies.
* :class:`BitPlane`: how a super-block's codes are spread over bytes. Every
  K-quant packs its codes the same way: the bytes form equal chunks, and
  byte ``i`` of chunk ``c`` holds ``8/width`` codes at bits ``0, width,
  2*width ...``; the code at bit ``s*width`` is element ``c*chunk_elems +
  s*chunk_bytes + i``. The tables ``byte_of`` / ``shift_of`` give, for every
  element, its byte and bit offset (the facts a kernel template renders).
* The 6-bit packing of 8 scales + 8 mins in 12 bytes (Q4_K, Q5_K:
  ``get_scale_min_k4``) and of 16 scales in 12 bytes (Q3_K).
* ``requantize``: after the sub-block scales are quantized, every K-quant
  rounds the elements again against the *decoded* scales.
* ``dot_with_q8_k``: the per-super-block term of every K-quant's dot
  product with Q8_K, and their canonical sum.
* ``quantize_rows``: the rows are cut into super-blocks, which are
  independent in every K-quant (the imatrix is per column, the imatrix
  statistics per super-block), and quantized in batches.

Arithmetic: float32 in C order without fused multiply-adds, as x86-64
``libggml-base`` computes it (formats-ggml.md section 0.1). Builds of ggml
that contract ``a*b + c`` into FMAs (AArch64, or x86 with ``-mfma``) give
other bytes for a few blocks in every K-quant, with and without an imatrix
(measured: 1 to 73 of 4096 super-blocks); those bytes are not the spec's.

Upstream: ggml ``src/ggml-quants.c`` (``get_scale_min_k4``, the
``quantize_row_q*_K_ref`` / ``_impl`` packers) and ``src/ggml-cpu/quants.c``
(``ggml_vec_dot_q*_K_q8_K_generic``) @ d99724f2.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from ._format import BlockFormat
from ._numerics import F32, canonical_dot, f16_bits_to_f32, nearest_int

#: Elements per super-block.
QK_K = 256

#: Overflow, inf - inf and 0 * inf are part of the arithmetic (huge inputs,
#: fp16 scales that overflow, junk bytes on decode): IEEE results, no warnings.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

#: Super-blocks quantized per batch. Super-blocks are independent, so the
#: batch size never changes a bit (a test checks it); batches of this size
#: keep the searches' working arrays near the CPU caches while amortizing
#: NumPy's per-call overhead, several times faster than one pass over a
#: whole tensor.
BATCH_SUPERBLOCKS = 1024


@dataclass(frozen=True)
class BitPlane:
    """``count`` codes of ``width`` bits packed into ``count*width/8`` bytes,
    in ``chunks`` equal chunks: element ``e = c*chunk_elems + s*chunk_bytes
    + i`` is bits ``s*width .. s*width+width-1`` of byte ``c*chunk_bytes + i``.
    """

    count: int
    width: int
    chunks: int

    @property
    def nbytes(self) -> int:
        return self.count * self.width // 8

    @property
    def slots(self) -> int:
        """Codes per byte."""
        return 8 // self.width

    @property
    def chunk_bytes(self) -> int:
        return self.nbytes // self.chunks

    @property
    def chunk_elems(self) -> int:
        return self.chunk_bytes * self.slots

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1

    @cached_property
    def byte_of(self) -> np.ndarray:
        """``byte_of[e]``: the byte holding element e."""
        e = np.arange(self.count)
        return (e // self.chunk_elems) * self.chunk_bytes + e % self.chunk_bytes

    @cached_property
    def shift_of(self) -> np.ndarray:
        """``shift_of[e]``: the bit offset of element e within its byte."""
        e = np.arange(self.count)
        return (e % self.chunk_elems) // self.chunk_bytes * self.width

    @cached_property
    def _shifts(self) -> np.ndarray:
        return (np.arange(self.slots, dtype=np.uint8) * np.uint8(self.width)).reshape(self.slots, 1)

    def pack(self, values: np.ndarray) -> np.ndarray:
        """Codes ``(..., count)`` (their low ``width`` bits) -> bytes ``(..., nbytes)``."""
        lead = values.shape[:-1]
        v = (np.asarray(values).astype(np.uint8) & np.uint8(self.mask))
        v = v.reshape(lead + (self.chunks, self.slots, self.chunk_bytes)) << self._shifts
        return np.bitwise_or.reduce(v, axis=-2).reshape(lead + (self.nbytes,))

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Bytes ``(..., nbytes)`` -> codes ``(..., count)`` (uint8)."""
        lead = packed.shape[:-1]
        p = packed.reshape(lead + (self.chunks, 1, self.chunk_bytes))
        return ((p >> self._shifts) & np.uint8(self.mask)).reshape(lead + (self.count,))


#: Q2_K ``qs`` and Q3_K ``qs`` (low 2 bits): element 128h + 32s + l at bits
#: 2s of byte 32h + l.
TWO_BIT = BitPlane(QK_K, 2, chunks=2)
#: Q4_K ``qs`` and Q5_K ``qs`` (low 4 bits): element 64c + 32s + l at bits
#: 4s of byte 32c + l.
FOUR_BIT = BitPlane(QK_K, 4, chunks=4)
#: Q3_K ``hmask`` and Q5_K ``qh``: element 32k + l is bit k of byte l.
ONE_BIT = BitPlane(QK_K, 1, chunks=1)
#: Q6_K ``ql`` (low 4 bits): element 128h + 64s + i at bits 4s of byte 64h + i.
Q6_LOW = BitPlane(QK_K, 4, chunks=2)
#: Q6_K ``qh`` (high 2 bits): element 128h + 32s + l at bits 2s of byte 32h + l.
Q6_HIGH = BitPlane(QK_K, 2, chunks=2)



@dataclass(frozen=True)
class CodeLayout:
    """Where a K-quant keeps the code of each of a super-block's 256 elements:
    ``planes`` lists ``(field, BitPlane, bit)``: the plane in block field
    ``field`` holds bits ``bit .. bit + width - 1`` of every code. The value
    multiplied by the sub-block scale is ``code - offset``.
    """

    planes: tuple[tuple[str, BitPlane, int], ...]
    offset: int = 0

    @property
    def bits(self) -> int:
        return sum(plane.width for _, plane, _ in self.planes)

    def pack(self, blocks: np.ndarray, codes: np.ndarray) -> None:
        """Store codes ``(..., 256)`` (0 .. 2**bits - 1) into the block fields."""
        codes = np.asarray(codes).astype(np.uint8)
        for field, plane, bit in self.planes:
            blocks[field] = plane.pack(codes >> np.uint8(bit))

    def unpack(self, blocks: np.ndarray) -> np.ndarray:
        """The codes of every element, ``(..., 256)`` uint8 (without the offset)."""
        codes = None
        for field, plane, bit in self.planes:
            part = plane.unpack(blocks[field])
            part = part << np.uint8(bit) if bit else part
            codes = part if codes is None else codes | part
        return codes

    def values(self, blocks: np.ndarray) -> np.ndarray:
        """``code - offset`` of every element: int8 when there is an offset, else uint8."""
        codes = self.unpack(blocks)
        return codes.view(np.int8) - np.int8(self.offset) if self.offset else codes


#: Q3_K ``scales[0..7]``: low 4 bits of sub-block scale j at bits 4*(j//8) of byte j % 8.
Q3_SCALE_LOW = BitPlane(16, 4, chunks=1)
#: Q3_K ``scales[8..11]``: high 2 bits of sub-block scale j at bits 2*(j//4) of byte 8 + j % 4.
Q3_SCALE_HIGH = BitPlane(16, 2, chunks=1)


# ----------------------------------------------------------- 6-bit scales

def pack_scales_q3k(scales6: np.ndarray) -> np.ndarray:
    """Q3_K: 16 6-bit sub-block scales (``(..., 16)``, 0..63, stored with an
    offset of 32) -> 12 bytes."""
    s = np.asarray(scales6).astype(np.uint8)
    return np.concatenate([Q3_SCALE_LOW.pack(s & 15), Q3_SCALE_HIGH.pack(s >> 4)], axis=-1)


def unpack_scales_q3k(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_scales_q3k`: 12 bytes -> 16 values 0..63 (int32)."""
    low = Q3_SCALE_LOW.unpack(packed[..., :8]).astype(np.int32)
    high = Q3_SCALE_HIGH.unpack(packed[..., 8:12]).astype(np.int32)
    return low | (high << 4)


def pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K: 8 scales and 8 mins (``(..., 8)`` each, as the C's
    ``uint8_t`` values) -> 12 bytes, exactly as the C writes them::

        j < 4:  scales[j] = ls[j]; scales[j+4] = lm[j]
        j >= 4: scales[j+4] = (ls[j] & 15) | (lm[j] & 15) << 4
                scales[j-4] |= (ls[j] >> 4) << 6
                scales[j]   |= (lm[j] >> 4) << 6

    For values 0..63 this is the inverse of :func:`unpack_scale_min_k4`;
    larger bytes (which ggml's imatrix path can pass, see q4_k) spill into
    the neighbouring bits as they do in C.
    """
    ls = np.asarray(ls).astype(np.int32) & 0xFF
    lm = np.asarray(lm).astype(np.int32) & 0xFF
    out = np.zeros(ls.shape[:-1] + (12,), dtype=np.int32)
    out[..., 0:4] = ls[..., 0:4]
    out[..., 4:8] = lm[..., 0:4]
    out[..., 8:12] = (ls[..., 4:8] & 0xF) | ((lm[..., 4:8] & 0xF) << 4)
    out[..., 0:4] |= (ls[..., 4:8] >> 4) << 6
    out[..., 4:8] |= (lm[..., 4:8] >> 4) << 6
    return (out & 0xFF).astype(np.uint8)


def unpack_scale_min_k4(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``get_scale_min_k4`` for j = 0..7: 12 bytes -> (scales, mins), 0..63 (int32)::

        j < 4:  sc = q[j] & 63;                        m = q[j+4] & 63
        j >= 4: sc = (q[j+4] & 15) | (q[j-4] >> 6) << 4;  m = (q[j+4] >> 4) | (q[j] >> 6) << 4
    """
    q = packed.astype(np.int32)
    sc = np.concatenate([q[..., 0:4] & 63, (q[..., 8:12] & 15) | ((q[..., 0:4] >> 6) << 4)], axis=-1)
    m = np.concatenate([q[..., 4:8] & 63, (q[..., 8:12] >> 4) | ((q[..., 4:8] >> 6) << 4)], axis=-1)
    return sc, m


# ------------------------------------------------------------ quantizing

def running_max(values: np.ndarray) -> np.ndarray:
    """``float m = 0; for (j...) if (v[j] > m) m = v[j];`` over the last axis
    (NaN values are skipped, the result is >= +0.0)."""
    m = np.zeros(values.shape[:-1], dtype=F32)
    for j in range(values.shape[-1]):
        m = np.where(values[..., j] > m, values[..., j], m)
    return m


def running_absmax(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``if (fabsf(v[j]) > amax) { amax = fabsf(v[j]); max = v[j]; }`` from
    +0.0 over the last axis: the first value of largest magnitude."""
    amax = np.zeros(values.shape[:-1], dtype=F32)
    vmax = np.zeros(values.shape[:-1], dtype=F32)
    for j in range(values.shape[-1]):
        take = np.abs(values[..., j]) > amax
        amax = np.where(take, np.abs(values[..., j]), amax)
        vmax = np.where(take, values[..., j], vmax)
    return amax, vmax


def requantize(x: np.ndarray, d: np.ndarray, dm: np.ndarray | None, lo: int, hi: int,
               codes: np.ndarray) -> np.ndarray:
    """Round every element again with the decoded sub-block scale ``d`` (and
    min ``dm``)::

        if (d != 0) L = clamp(nearest_int((x + dm) / d), lo, hi)   (x / d without a min)

    ``x`` is ``(..., nsub, n)``, ``d``/``dm`` are ``(..., nsub)``; where
    ``d == 0`` the search's ``codes`` stay (C's ``if (!d) continue;``).
    Returns ``nearest_int`` clamped, as int32, without any offset.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        num = x if dm is None else x + dm[..., None]
        fresh = np.clip(nearest_int(num / d[..., None]), lo, hi)
    return np.where((d != 0)[..., None], fresh, codes)


def quantize_rows(fmt: BlockFormat, x: np.ndarray, imatrix: np.ndarray | None,
                  superblocks: Callable[[np.ndarray, np.ndarray | None], np.ndarray]) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes, by ``superblocks(xs, qw)``, which maps
    super-blocks ``xs (S, 256)`` and their imatrix columns ``qw (S, 256)``
    (or None) to structured blocks ``(S,)``."""
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


# ----------------------------------------------------------- dot product

def dot_with_q8_k(d_w: np.ndarray, d_a: np.ndarray, isum: np.ndarray,
                      dmin_w: np.ndarray | None = None, msum: np.ndarray | None = None) -> np.ndarray:
    """A K-quant dot product with Q8_K from its exact integer sums. Each
    super-block's float32 term is::

        d    = fp16(w.d)    * a.d          (float32 product)
        dmin = fp16(w.dmin) * a.d
        term = d * (float)isum  [- dmin * (float)msum]

    ``isum`` (the sub-block scales times the integer dot products of the
    codes with the Q8_K quants) and ``msum`` (the sub-block mins times the
    Q8_K ``bsums``) are exact integers (|isum| < 2**31), each rounded to
    float32 once; the terms of a row are added in the canonical 16-lane
    order (``canonical_dot``).
    """
    d = f16_bits_to_f32(d_w) * d_a
    term = d * isum.astype(np.int32).astype(F32)
    if dmin_w is not None:
        dmin = f16_bits_to_f32(dmin_w) * d_a
        term = term - dmin * msum.astype(np.int32).astype(F32)
    return canonical_dot(term)
