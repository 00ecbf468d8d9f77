"""The two routes of the signed grid formats' vector dot product give the
spec's bits.

An activation (q8_K) without the quant -128 takes the plain route (the
weights' signs applied to the activation); one -128 anywhere sends the whole
call to the offset route (signed grid values plus an offset). Both must give
the spec's bits on every shape: one super-block, 8-wide tails, odd row counts.
"""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from tests.bits import assert_same_bits
from tests.conftest import kernel_params

SIGNED_GRID = ("iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s")
PARAMS = [p for p in kernel_params("vec_dot") if p.values[0] in SIGNED_GRID]
Q8K_QS = 4  # q8_K: float32 d, then 256 int8 quants, then 16 int16 sums


def _weights(fmt: str, nrows: int, nblocks: int, rng) -> np.ndarray:
    """Arbitrary bytes with a finite fp16 super-block scale d (the first field)."""
    spec = registry.spec(fmt)
    w = rng.integers(0, 256, (nrows, nblocks, spec.type_size), dtype=np.uint8)
    w[..., :2] = np.frombuffer(rng.uniform(-2, 2, nrows * nblocks).astype(np.float16).tobytes(),
                               np.uint8).reshape(nrows, nblocks, 2)
    return w.reshape(nrows, -1)


def _activation(nblocks: int, rng) -> np.ndarray:
    a = qs.quantize("q8_k", rng.standard_normal(256 * nblocks).astype(np.float32))
    assert (a.reshape(nblocks, -1)[:, Q8K_QS:Q8K_QS + 256].view(np.int8) != -128).all()
    return a


def _same_as_spec(fmt, isa, w, a):
    with qs.use_isa("reference"):
        expected = qs.vec_dot(fmt, w, a)
    with qs.use_isa(isa):
        actual = qs.vec_dot(fmt, w, a)
    assert_same_bits(actual, expected, f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", PARAMS)
@pytest.mark.parametrize("nblocks", [1, 8, 9, 17])
@pytest.mark.parametrize("nrows", [1, 3])
def test_both_routes_equal_the_spec(fmt, isa, nblocks, nrows):
    rng = np.random.default_rng([nblocks, nrows])
    w, a = _weights(fmt, nrows, nblocks, rng), _activation(nblocks, rng)
    _same_as_spec(fmt, isa, w, a)  # plain route
    a = a.copy().reshape(nblocks, -1)
    a[rng.integers(nblocks), Q8K_QS + rng.integers(256)] = 0x80  # one -128: the offset route
    _same_as_spec(fmt, isa, w, a.reshape(-1))


@pytest.mark.parametrize("fmt,isa", PARAMS)
@pytest.mark.parametrize("quant", [-127, 127, -128])
def test_extreme_products(fmt, isa, quant):
    """Every weight byte 0xFF (largest scale codes, all sign bits set) against
    constant extreme quants: the int16 pair sums at their bounds."""
    nblocks = 3
    w = np.full((2, nblocks * registry.spec(fmt).type_size), 0xFF, np.uint8)
    w.reshape(2, nblocks, -1)[..., :2] = np.frombuffer(np.float16(1.0).tobytes(), np.uint8)
    a = _activation(nblocks, np.random.default_rng(0)).reshape(nblocks, -1)
    a[:, Q8K_QS:Q8K_QS + 256] = np.uint8(quant & 0xFF)
    _same_as_spec(fmt, isa, w, a.reshape(-1))
