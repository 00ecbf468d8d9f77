"""Edge cases of the small mainline formats' kernels (codebook.c.j2: IQ4_NL,
IQ4_XS, MXFP4, NVFP4; ternary.c.j2: TQ1_0, TQ2_0, Q1_0, Q2_0) on every ISA
this CPU has, against the spec: every scale byte (fp16 NaN/inf/subnormal,
every E8M0 and UE4M3 byte), every code, dot-product tails and row pairs,
activations holding -128, and the IQ4 quantizers on edge blocks with and
without an importance matrix."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.errors import NonFiniteInputError
from quantspec.reference.tables.ggml import KVALUES_IQ4NL
from tests.bits import assert_same_bits
from tests.conftest import kernel_params

CODEBOOK = ("iq4_nl", "iq4_xs", "mxfp4", "nvfp4")
TERNARY = ("tq1_0", "tq2_0", "q1_0", "q2_0")
MAINLINE = CODEBOOK + TERNARY


def _params(op: str, formats=MAINLINE):
    return [p for p in kernel_params(op) if p.values[0] in formats]


def _run(isa: str, fn, *args, **kwargs):
    with qs.use_isa(isa):
        return fn(*args, **kwargs)


def _scale_fields(fmt: str) -> list[tuple[int, int]]:
    """(offset, size) of the scale fields a block decodes its scales from."""
    spec = registry.spec(fmt)
    offs = spec.offsets()
    return [(offs[f.name] + k * (2 if f.ctype == "f16" else 1), 2 if f.ctype == "f16" else 1)
            for f in spec.fields if f.name in ("d", "e") for k in range(f.count)]


def _blocks_with_scale_patterns(fmt: str, rng: np.random.Generator) -> np.ndarray:
    """One row of blocks whose scale fields walk through every pattern that
    matters: every byte for 8-bit scales; for fp16 the zeros, subnormals,
    largest finite, infinities and NaNs of both signs, plus random ones."""
    spec = registry.spec(fmt)
    fields = _scale_fields(fmt)
    if fields[0][1] == 1:
        patterns = np.arange(256)
    else:
        patterns = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF,
                             0x7C00, 0xFC00, 0x7C01, 0x7E00, 0xFE00, 0x7FFF, 0x1234, 0xC321])
    nblocks = -(-len(patterns) // len(fields)) + 3
    q = rng.integers(0, 256, (nblocks, spec.type_size), dtype=np.uint8)
    flat = np.resize(patterns, nblocks * len(fields))
    for b in range(nblocks):
        for k, (off, size) in enumerate(fields):
            v = int(flat[b * len(fields) + k])
            q[b, off:off + size] = list(v.to_bytes(size, "little"))
    return q.reshape(1, -1)


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_dequantize_every_scale_pattern(fmt, isa):
    q = _blocks_with_scale_patterns(fmt, np.random.default_rng(11))
    assert_same_bits(_run(isa, qs.dequantize, fmt, q), _run("reference", qs.dequantize, fmt, q), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
def test_vec_dot_every_scale_pattern(fmt, isa):
    rng = np.random.default_rng(12)
    wq = _blocks_with_scale_patterns(fmt, rng)
    spec = registry.spec(fmt)
    n = wq.shape[1] // spec.type_size * spec.block_size
    act = registry.spec(spec.vec_dot_format)
    aq = qs.quantize(act.name, rng.standard_normal(n).astype(np.float32))
    assert_same_bits(_run(isa, qs.vec_dot, fmt, wq, aq), _run("reference", qs.vec_dot, fmt, wq, aq),
                     f"{fmt} on {isa}")


def _every_code_blocks(fmt: str) -> np.ndarray:
    """Blocks whose code bytes hold every byte value (so every code, in every
    position of a byte), with a scale of 1 (or a plain scale byte)."""
    spec = registry.spec(fmt)
    offs = spec.offsets()
    qs_len = next(f.count for f in spec.fields if f.name == "qs")
    extra = [f for f in spec.fields if f.name in ("qh",)]
    nblocks = 256 // qs_len + 2
    q = np.zeros((nblocks, spec.type_size), dtype=np.uint8)
    values = np.arange(nblocks * qs_len) % 256
    q[:, offs["qs"]:offs["qs"] + qs_len] = values.reshape(nblocks, qs_len)
    for f in extra:
        q[:, offs[f.name]:offs[f.name] + f.count] = (np.arange(nblocks * f.count) * 37 % 256).reshape(nblocks, -1)
    for off, size in _scale_fields(fmt):
        q[:, off:off + size] = [0x00, 0x3C] if size == 2 else 0x7E if fmt == "nvfp4" else 130
    if fmt == "iq4_xs":
        q[:, offs["scales_h"]:offs["scales_h"] + 2] = [0xE4, 0x1B]  # every 2-bit high part
        q[:, offs["scales_l"]:offs["scales_l"] + 4] = [0x10, 0x32, 0xF4, 0x7E]
    return q.reshape(1, -1)


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_dequantize_every_code(fmt, isa):
    q = _every_code_blocks(fmt)
    assert_same_bits(_run(isa, qs.dequantize, fmt, q), _run("reference", qs.dequantize, fmt, q), f"{fmt} on {isa}")


def _activation(fmt: str, n: int, rng: np.random.Generator, extreme: bool) -> np.ndarray:
    """An activation row; ``extreme``: arbitrary bytes with many quants -128 and 127."""
    act = registry.spec(registry.spec(fmt).vec_dot_format)
    if not extreme:
        return qs.quantize(act.name, rng.standard_normal(n).astype(np.float32))
    blocks = act.row_bytes(n) // act.type_size
    a = np.frombuffer(qs.quantize(act.name, rng.standard_normal(n).astype(np.float32)).tobytes(),
                      dtype=np.uint8).reshape(blocks, act.type_size).copy()
    off = act.offsets()["qs"]
    quants = a[:, off:off + act.block_size]
    quants[...] = rng.choice(np.array([0x80, 0x7F, 0x81, 0x00, 0xFF], dtype=np.uint8), quants.shape)
    return a.reshape(-1)


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
@pytest.mark.parametrize("extreme", [False, True], ids=["quantized", "min128"])
def test_vec_dot_tails_and_row_pairs(fmt, isa, extreme):
    """Block counts around the 8- and 16-block steps of the SIMD loops, odd
    and even row counts (rows go in pairs), every code, activations of -128."""
    spec = registry.spec(fmt)
    rng = np.random.default_rng(13)
    for nblocks in (1, 5, 8, 9, 15, 16, 17, 23, 24, 31, 33, 47):
        for nrows in (1, 2, 3):
            wq = rng.integers(0, 256, (nrows, nblocks * spec.type_size), dtype=np.uint8)
            for off, size in _scale_fields(fmt):  # finite, moderate scales
                cols = np.arange(nblocks) * spec.type_size + off
                if size == 2:  # fp16 of either sign, exponent below 30
                    wq[:, cols + 1] = rng.integers(0, 0x78, (nrows, nblocks)) | rng.choice([0, 0x80], (nrows, nblocks))
                else:
                    wq[:, cols] = rng.integers(110, 140, (nrows, nblocks)) if fmt == "mxfp4" else \
                        rng.integers(0, 0x78, (nrows, nblocks))
            aq = _activation(fmt, nblocks * spec.block_size, rng, extreme)
            assert_same_bits(_run(isa, qs.vec_dot, fmt, wq, aq), _run("reference", qs.vec_dot, fmt, wq, aq),
                             f"{fmt} on {isa}, {nblocks} blocks x {nrows} rows")


# ------------------------------------------------------------ IQ4 quantizers

def _edge_rows(rng: np.random.Generator) -> np.ndarray:
    """Two rows of 1024 made of 32-element blocks of every edge kind."""
    levels = KVALUES_IQ4NL.astype(np.float32)
    mids = (levels[:-1] + levels[1:]) / 2
    kinds = [
        np.zeros(32), -np.zeros(32), np.full(32, 1e-16), np.full(32, 3.0), np.full(32, -2.5),
        rng.standard_normal(32), rng.standard_normal(32) * 1e-30, rng.standard_normal(32) * 1e30,
        rng.standard_normal(32) * 1e-40,  # subnormal
        np.concatenate([[127.0], rng.choice(mids, 31)]),  # ties at the level midpoints for the first scale
        np.concatenate([[-127.0], np.nextafter(rng.choice(mids, 31).astype(np.float32), np.float32(np.inf))]),
        rng.integers(-8, 8, 32), np.concatenate([[1e6], rng.standard_normal(31) * 0.01]),
        rng.standard_t(2, 32), np.concatenate([np.zeros(16), rng.standard_normal(16)]),
    ]
    x = np.concatenate([np.asarray(k, dtype=np.float32) for k in kinds])  # 15 blocks of 32
    return np.resize(x, 2048).reshape(2, 1024).astype(np.float32)


def _imatrices(n: int, rng: np.random.Generator) -> list:
    zeros = np.zeros(n, dtype=np.float32)
    stretch = rng.random(n).astype(np.float32)
    stretch[: n // 3] = 0.0
    return [None, rng.random(n).astype(np.float32) * 4, zeros, stretch, np.full(n, 1e-30, dtype=np.float32)]


@pytest.mark.parametrize("fmt,isa", _params("quantize", ("iq4_nl", "iq4_xs")))
def test_iq4_quantize_edge_blocks(fmt, isa):
    rng = np.random.default_rng(14)
    x = _edge_rows(rng)
    for imatrix in _imatrices(x.shape[1], rng):
        expected = _run("reference", qs.quantize, fmt, x, imatrix=imatrix)
        actual = _run(isa, qs.quantize, fmt, x, imatrix=imatrix)
        assert np.array_equal(actual, expected), (
            f"{fmt} on {isa}, imatrix {'none' if imatrix is None else imatrix[:3]}: first differing byte "
            f"{np.argwhere(actual != expected)[0]}")


@pytest.mark.parametrize("fmt,isa", _params("quantize", ("iq4_nl", "iq4_xs")))
def test_iq4_quantize_reports_the_first_nonfinite_block(fmt, isa):
    spec = registry.spec(fmt)
    x = np.random.default_rng(15).standard_normal((3, 4 * spec.block_size)).astype(np.float32)
    x[1, spec.block_size + 5] = np.inf
    x[2, 0] = np.nan
    with qs.use_isa(isa), pytest.raises(NonFiniteInputError, match="row 1 column %d" % (spec.block_size + 5)):
        qs.quantize(fmt, x)
