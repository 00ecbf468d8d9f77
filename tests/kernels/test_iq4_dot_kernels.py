"""The IQ4_XS, IQ4_KS and IQ4_KSS dot-product kernels against the spec, bit
for bit, on the patterns their SIMD loops pair up: IQ4_XS's super-blocks j
and j+4 of every group of 8 share a vector (one per 128-bit half), so every
6-bit group scale code sits in every lane next to a different one and a
different fp16 scale; IQ4_KS/IQ4_KSS take the grid-half table of sub-blocks
2k and 2k+1 in one load, so every pair of shift bits occurs. Several rows
(rows go in pairs, the last one alone), super-block counts around the
groups of 8 and 16, activations of -128 and 127."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from tests.bits import assert_same_bits
from tests.conftest import kernel_params

QK = 256
NBLOCKS = (8, 9, 16, 17)
NROWS = (1, 2, 3)


def _params(formats):
    return [p for p in kernel_params("vec_dot") if p.values[0] in formats]


def _run(isa: str, fn, *args):
    with qs.use_isa(isa):
        return fn(*args)


def _q8_k(n: int, rng: np.random.Generator) -> np.ndarray:
    """A q8_k row: quantized normals, then a third of the quants set to -128 or 127."""
    a = qs.quantize("q8_k", rng.standard_normal(n).astype(np.float32)).reshape(-1).copy()
    act = registry.spec("q8_k")
    blocks = a.reshape(-1, act.type_size)
    quants = blocks[:, act.offsets()["qs"]:act.offsets()["qs"] + QK]
    extreme = rng.random(quants.shape) < 1 / 3
    quants[extreme] = rng.choice(np.array([0x80, 0x7F], dtype=np.uint8), int(extreme.sum()))
    return a


def _check(fmt: str, isa: str, wq: np.ndarray, aq: np.ndarray, what: str):
    assert_same_bits(_run(isa, qs.vec_dot, fmt, wq, aq), _run("reference", qs.vec_dot, fmt, wq, aq),
                     f"{fmt} on {isa}, {what}")


@pytest.mark.parametrize("fmt,isa", _params(("iq4_xs",)))
def test_iq4_xs_every_group_code_in_every_lane(fmt, isa):
    """In each group of 8 super-blocks, the 64 (super-block, group) scale codes
    are 0..63, rotated per row, with fp16 scales that differ per super-block."""
    spec = registry.spec(fmt)
    off = spec.offsets()
    rng = np.random.default_rng(4)
    for nblocks in NBLOCKS:
        aq = _q8_k(nblocks * QK, rng)
        for nrows in NROWS:
            wq = rng.integers(0, 256, (nrows, nblocks, spec.type_size), dtype=np.uint8)
            for r in range(nrows):
                for i in range(nblocks):
                    codes = (8 * (i % 8) + np.arange(8) + 11 * r) % 64  # ls_g, 0..63
                    wq[r, i, off["scales_l"]:off["scales_l"] + 4] = (codes[0::2] & 15) | ((codes[1::2] & 15) << 4)
                    high = int(sum(int(c >> 4) << (2 * g) for g, c in enumerate(codes)))
                    wq[r, i, off["scales_h"]:off["scales_h"] + 2] = np.frombuffer(high.to_bytes(2, "little"), np.uint8)
                    d = np.float16((1 + i) * (-1) ** (i + r) * 2.0 ** -(i % 5))
                    wq[r, i, off["d"]:off["d"] + 2] = np.frombuffer(d.tobytes(), np.uint8)
            _check(fmt, isa, wq.reshape(nrows, -1), aq, f"{nrows} rows of {nblocks} super-blocks")


@pytest.mark.parametrize("fmt,isa", _params(("iq4_ks", "iq4_kss")))
def test_iq4_ks_every_pair_of_shifts(fmt, isa):
    """Sub-blocks 2k, 2k+1 of super-block i get the shift bits (i + k) % 4, so
    every pair of grid halves occurs in every pair position."""
    spec = registry.spec(fmt)
    rng = np.random.default_rng(6)
    for nblocks in NBLOCKS:
        aq = _q8_k(nblocks * QK, rng)
        for nrows in NROWS:
            body = rng.integers(0, 256, (nrows, nblocks, spec.type_size), dtype=np.uint8)
            for i in range(nblocks):
                for b in range(8):
                    bit = ((i + b // 2) % 4 >> (b % 2)) & 1
                    # IQ4_KS: bit 0 of scales[b]; IQ4_KSS: bit 0 of the first word of sub-block b
                    at = spec.offsets()["scales"] + b if fmt == "iq4_ks" else 16 * b
                    body[:, i, at] = (body[:, i, at] & 0xFE) | bit
            meta = np.frombuffer(np.float32(0.75).tobytes()[:spec.row_meta_size], np.uint8)
            wq = np.concatenate([np.broadcast_to(meta, (nrows, spec.row_meta_size)), body.reshape(nrows, -1)], axis=1)
            _check(fmt, isa, np.ascontiguousarray(wq), aq, f"{nrows} rows of {nblocks} super-blocks")


@pytest.mark.parametrize("fmt,isa", _params(("iq4_ks", "iq4_kss")))
def test_iq4_ks_shifted_sub_blocks_at_the_extremes(fmt, isa):
    """The SIMD dot adds 4 * (activation sum) per shifted sub-block to the
    unshifted sum: every sub-block shifted, with scale +127 or -127, against
    sub-blocks of quants all -128 or all 127 (sums -4096 and 4064)."""
    spec = registry.spec(fmt)
    act = registry.spec("q8_k")
    rng = np.random.default_rng(8)
    for nblocks in (8, 9, 17):
        a = _q8_k(nblocks * QK, rng)
        quants = a.reshape(nblocks, act.type_size)[:, act.offsets()["qs"]:act.offsets()["qs"] + QK]
        for b in range(8):
            quants[:, 32 * b:32 * b + 32] = np.uint8(0x80 if (b // 2) % 2 == 0 else 0x7F)
        for nrows in NROWS:
            body = rng.integers(0, 256, (nrows, nblocks, spec.type_size), dtype=np.uint8)
            for i in range(nblocks):
                for b in range(8):
                    scale_byte = 255 if (i + b) % 2 else 1  # ls = +127 or -127, shift bit set
                    if fmt == "iq4_ks":
                        body[:, i, spec.offsets()["scales"] + b] = scale_byte
                    else:  # IQ4_KSS: bit k of the scale byte is bit 0 of word k of sub-block b
                        for k in range(8):
                            at = 16 * b + 2 * k
                            body[:, i, at] = (body[:, i, at] & 0xFE) | ((scale_byte >> k) & 1)
            meta = np.frombuffer(np.float32(1.5).tobytes()[:spec.row_meta_size], np.uint8)
            wq = np.concatenate([np.broadcast_to(meta, (nrows, spec.row_meta_size)), body.reshape(nrows, -1)], axis=1)
            _check(fmt, isa, np.ascontiguousarray(wq), a, f"{nrows} rows of {nblocks} super-blocks")
