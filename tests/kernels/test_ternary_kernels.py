"""The TQ1_0 and TQ2_0 dot products (ternary.c.j2, one Q8_K block per weight
block) at the bounds of their int16 arithmetic, on every ISA this CPU has,
against the spec: every code at its largest value (TQ2_0's unused code 3
included) or its smallest, the ternary -1/+1 patterns, times activations all
-128 or all 127, over block counts that reach each SIMD step (8-block
reductions, 16-block row steps, the scalar tail) and odd row counts (rows go
in pairs). The SIMD kernels add four blocks' int16 pair sums before widening;
these inputs make those sums as large as they can be."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from tests.bits import assert_same_bits
from tests.conftest import kernel_params

FORMATS = ("tq1_0", "tq2_0")
BLOCK_COUNTS = (1, 8, 9, 16, 24, 33)


def _run(isa: str, fn, *args, **kwargs):
    with qs.use_isa(isa):
        return fn(*args, **kwargs)


def _code_bytes(fmt: str, pattern: str, nbytes: int) -> np.ndarray:
    """Code bytes: ``max`` every code at its largest (TQ1_0 trit 2, TQ2_0
    code 3), ``min`` every code 0 (-1), ``pm1`` the codes of -1 and +1 in turn."""
    if pattern == "max":
        return np.full(nbytes, 0xFF, np.uint8)
    if pattern == "min":
        return np.zeros(nbytes, np.uint8)
    if fmt == "tq2_0":  # codes 0, 2, 0, 2 along a byte's four fields
        return np.full(nbytes, 0b10001000, np.uint8)
    return None


def _weights(fmt: str, pattern: str, nrows: int, nblocks: int, rng: np.random.Generator) -> np.ndarray:
    spec = registry.spec(fmt)
    if pattern == "pm1" and fmt == "tq1_0":  # quantized from +-1: every trit 0 or 2
        x = rng.choice(np.array([-1.0, 1.0], np.float32), (nrows, nblocks * spec.block_size))
        return qs.quantize(fmt, x)
    q = np.zeros((nrows, nblocks, spec.type_size), np.uint8)
    offs = spec.offsets()
    for f in spec.fields:
        if f.name in ("qs", "qh"):
            q[:, :, offs[f.name]:offs[f.name] + f.count] = _code_bytes(fmt, pattern, f.count)
    d = rng.choice(np.array([0x3C00, 0xBC00, 0x7BFF, 0x0001], np.uint16), (nrows, nblocks))  # 1, -1, max, subnormal
    q[:, :, offs["d"]] = d & 0xFF
    q[:, :, offs["d"] + 1] = d >> 8
    return q.reshape(nrows, -1)


def _activation(n: int, quant: int, rng: np.random.Generator) -> np.ndarray:
    act = registry.spec("q8_k")
    blocks = n // act.block_size
    a = np.frombuffer(qs.quantize("q8_k", rng.standard_normal(n).astype(np.float32)).tobytes(),
                      dtype=np.uint8).reshape(blocks, act.type_size).copy()
    off = act.offsets()["qs"]
    a[:, off:off + act.block_size] = np.uint8(quant & 0xFF)
    return a.reshape(-1)


@pytest.mark.parametrize("fmt,isa", [p for p in kernel_params("vec_dot") if p.values[0] in FORMATS])
@pytest.mark.parametrize("pattern", ["max", "min", "pm1"])
def test_vec_dot_int16_bounds(fmt, isa, pattern):
    spec = registry.spec(fmt)
    rng = np.random.default_rng(29)
    for nblocks in BLOCK_COUNTS:
        for nrows in (1, 3):
            wq = _weights(fmt, pattern, nrows, nblocks, rng)
            for quant in (-128, 127):
                aq = _activation(nblocks * spec.block_size, quant, rng)
                assert_same_bits(_run(isa, qs.vec_dot, fmt, wq, aq), _run("reference", qs.vec_dot, fmt, wq, aq),
                                 f"{fmt} on {isa}, {pattern} codes, quants {quant}, {nblocks} blocks x {nrows} rows")


def test_max_bytes_are_the_largest_codes():
    """The ``max`` pattern is what it claims: 0xFF decodes to the top code everywhere."""
    for fmt, top in (("tq1_0", 1.0), ("tq2_0", 2.0)):
        w = _weights(fmt, "max", 1, 1, np.random.default_rng(0))
        spec = registry.spec(fmt)
        w[0, spec.offsets()["d"]:spec.offsets()["d"] + 2] = [0x00, 0x3C]
        assert (qs.dequantize(fmt, w) == np.float32(top)).all()
