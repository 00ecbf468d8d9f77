"""The IQ2_K .. IQ6_K kernels beyond the Hypothesis properties: ik_llama.cpp's
own bytes (tests/vectors/ik_llama, cases and edge rows) reproduced by every
ISA's quantizer, fp16 super-block scales that are NaN, inf, subnormal or
signed zero, every grid index in every position under every shift bit and
scale code, the first non-finite super-block, and dot-product tails (rows
and super-block counts that are not a multiple of the 16 lanes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.errors import NonFiniteInputError
from quantspec.reference import _iqk
from tests.bits import assert_same_bits
from tests.conftest import kernel_params

IQK = ("iq2_k", "iq3_k", "iq4_k", "iq5_k", "iq6_k")
GRIDS = dict(iq2_k=_iqk.IQ2NL, iq3_k=_iqk.IQ3NL, iq4_k=_iqk.IQ4K, iq5_k=_iqk.IQ5NL, iq6_k=_iqk.IQ6NL)
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "ik_llama"


def _params(op: str, formats=IQK):
    return [p for p in kernel_params(op) if p.values[0] in formats]


def _with(isa: str, fn, *args, **kwargs):
    with qs.use_isa(isa), np.errstate(all="ignore"):
        return fn(*args, **kwargs)


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
def test_quantize_reproduces_ik_llama_bytes(fmt, isa):
    """The kernels write ik_llama.cpp's bytes: every stored case (random rows,
    with and without an imatrix) and every edge row (zeros, zero sub-blocks,
    1e-20, 1e15, a constant, an outlier, ties, signed zeros, a ramp, heavy tails)."""
    for path in sorted(VECTORS.glob(f"{fmt}_case*.npz")):
        with np.load(path) as case:
            imatrix = case["imatrix"] if "imatrix" in case.files else None
            got = _with(isa, qs.quantize, fmt, case["x"], imatrix=imatrix)
            np.testing.assert_array_equal(got, case["q"], err_msg=f"{path.name} on {isa}")
    with np.load(VECTORS / "edge" / f"{fmt}.npz") as edge:
        for key, imatrix, ok in (("q", None, "ok"), ("q_imatrix", edge["imatrix"], "ok_imatrix")):
            for r in np.flatnonzero(edge[ok]):
                got = _with(isa, qs.quantize, fmt, edge["x"][r:r + 1], imatrix=imatrix)
                np.testing.assert_array_equal(got[0], edge[key][r], err_msg=f"{fmt} {key} row {edge['rows'][r]!r}")


def _blocks_with_scales(fmt: str, d_bits: np.ndarray, rng) -> np.ndarray:
    """One super-block per fp16 scale pattern, the rest of each block random."""
    spec = registry.spec(fmt)
    q = rng.integers(0, 256, (d_bits.size, spec.type_size), dtype=np.uint8)
    q[:, 0:2] = d_bits.astype("<u2").view(np.uint8).reshape(-1, 2)
    return q.reshape(1, -1)


FP16_EDGES = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                       0x7E00, 0xFE00, 0x7C01, 0x7FFF, 0x3C00, 0x1234, 0x0200], dtype=np.uint16)


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_dequantize_fp16_scale_edges(fmt, isa):
    """d = +-0, subnormal, largest, inf, NaN (quiet and signalling payloads)."""
    q = _blocks_with_scales(fmt, FP16_EDGES, np.random.default_rng(1))
    assert_same_bits(_with(isa, qs.dequantize, fmt, q), _with("reference", qs.dequantize, fmt, q), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
def test_vec_dot_fp16_scale_edges(fmt, isa):
    rng = np.random.default_rng(2)
    q = _blocks_with_scales(fmt, FP16_EDGES, rng)
    a = qs.quantize("q8_k", rng.standard_normal(256 * FP16_EDGES.size).astype(np.float32))
    assert_same_bits(_with(isa, qs.vec_dot, fmt, q, a), _with("reference", qs.vec_dot, fmt, q, a),
                     f"{fmt} on {isa}")


def _every_index_block(fmt: str, rng) -> np.ndarray:
    """Super-blocks whose elements run through every grid index (each index in
    each position across the set), every extra (shift) pattern of note, every
    scale byte; d = 1.0."""
    module = registry.module(fmt)
    spec = registry.spec(fmt)
    size = GRIDS[fmt].size
    nblocks = 2 * size
    idx = (np.arange(256)[None, :] + np.arange(nblocks)[:, None]) % size
    packed = module.pack_quants(idx)
    packed = packed if isinstance(packed, tuple) else (packed,)
    blocks = spec.empty_blocks(1, nblocks)[0]
    blocks["d"] = 0x3C00
    extras = np.array([0x0000, 0xFFFF, 0x5555, 0xAAAA, 0x00FF, 0xFF00, 0x0F0F, 0x8001], dtype=np.uint16)
    blocks["extra"] = extras[np.arange(nblocks) % extras.size]
    names = [f.name for f in spec.fields][-len(packed):]
    for name, arr in zip(names, packed):
        blocks[name] = arr
    for f in spec.fields:
        if f.name.startswith("scales"):
            blocks[f.name] = rng.integers(0, 256, blocks[f.name].shape).astype(blocks[f.name].dtype)
    return spec.to_bytes(blocks[None, :])


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_every_index_shift_and_scale(fmt, isa):
    rng = np.random.default_rng(3)
    q = _every_index_block(fmt, rng)
    assert_same_bits(_with(isa, qs.dequantize, fmt, q), _with("reference", qs.dequantize, fmt, q), f"{fmt} on {isa}")
    a = qs.quantize("q8_k", rng.standard_normal(q.size // registry.spec(fmt).type_size * 256).astype(np.float32))
    assert_same_bits(_with(isa, qs.vec_dot, fmt, q, a), _with("reference", qs.vec_dot, fmt, q, a), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
def test_vec_dot_rows_and_superblock_tails(fmt, isa):
    """1 .. 33 super-blocks (the 16-lane steps of 8 and their scalar tail),
    several rows, arbitrary bytes in both operands (-128 quants included)."""
    spec = registry.spec(fmt)
    rng = np.random.default_rng(5)
    for nb in (1, 7, 8, 9, 15, 16, 17, 23, 33):
        a = rng.integers(0, 256, 292 * nb, dtype=np.uint8)
        for nrows in (1, 2, 3, 5):
            w = rng.integers(0, 256, (nrows, spec.type_size * nb), dtype=np.uint8)
            assert_same_bits(_with(isa, qs.vec_dot, fmt, w, a), _with("reference", qs.vec_dot, fmt, w, a),
                             f"{fmt} on {isa}, {nrows} rows of {nb} super-blocks")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
def test_vec_dot_extreme_products(fmt, isa):
    """The largest |value * quant| sums: quants all -128 or 127 against the
    grid's extreme values at the largest scales (pmaddubsw must not saturate)."""
    spec = registry.spec(fmt)
    rng = np.random.default_rng(6)
    w = _every_index_block(fmt, rng).reshape(-1, spec.type_size)
    blocks = spec.blocks(w.reshape(1, -1))[0]
    for f in spec.fields:
        if f.name.startswith("scales"):
            blocks[f.name] = np.iinfo(blocks[f.name].dtype).max if f.ctype != "i8" else -128
    w = spec.to_bytes(blocks[None, :])
    nb = w.size // spec.type_size
    act = registry.spec("q8_k")
    for fill in (-128, 127):
        ab = act.empty_blocks(1, nb)[0]
        ab["d"] = 1.0
        ab["qs"] = fill
        ab["bsums"] = 16 * fill
        a = act.to_bytes(ab[None, :])[0]
        assert_same_bits(_with(isa, qs.vec_dot, fmt, w, a), _with("reference", qs.vec_dot, fmt, w, a),
                         f"{fmt} on {isa}, quants {fill}")


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
def test_quantize_edge_inputs_on_every_isa(fmt, isa):
    """Tiny, huge and subnormal magnitudes, one outlier, signed zeros, ties,
    empty sub-blocks between full ones, with and without an imatrix (with
    zero stretches), several rows."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 256 * 3)).astype(np.float32)
    x[0] *= np.float32(1e-30)
    x[1] *= np.float32(1e30)
    x[2, ::7] = np.float32(1e-41)  # subnormals
    x[2, 16:48] = 0
    x[2, 48:64] = -0.0
    x[3] = np.round(x[3] * 4) / 4  # ties
    x[4, 100] = 1e6  # an outlier
    x[5] = np.float32(3.0)
    imatrix = rng.random(x.shape[1]).astype(np.float32)
    imatrix[:40] = 0
    imatrix[300:310] = 1e-30
    for im in (None, imatrix):
        got = _with(isa, qs.quantize, fmt, x, imatrix=im)
        expected = _with("reference", qs.quantize, fmt, x, imatrix=im)
        np.testing.assert_array_equal(got, expected, err_msg=f"{fmt} on {isa}, imatrix={im is not None}")


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
def test_first_nonfinite_superblock(fmt, isa):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 256 * 3)).astype(np.float32)
    x[2, 10] = np.inf
    x[1, 256 + 7] = np.nan
    with qs.use_isa(isa), pytest.raises(NonFiniteInputError, match=r"row 1 column 263 \(block 1\)"):
        qs.quantize(fmt, x)


# --------------------------------------------------------------------------- Q6_0

@pytest.mark.parametrize("fmt,isa", _params("quantize", ("q6_0",)))
def test_q6_0_quantize_reproduces_ik_llama_bytes(fmt, isa):
    for path in sorted(VECTORS.glob("q6_0_case*.npz")):
        with np.load(path) as case:
            imatrix = case["imatrix"] if "imatrix" in case.files else None
            np.testing.assert_array_equal(_with(isa, qs.quantize, fmt, case["x"], imatrix=imatrix), case["q"],
                                          err_msg=f"{path.name} on {isa}")
    with np.load(VECTORS / "edge" / "q6_0.npz") as edge:
        for key, imatrix, ok in (("q", None, "ok"), ("q_imatrix", edge["imatrix"], "ok_imatrix")):
            rows = np.flatnonzero(edge[ok])
            for r in rows:
                got = _with(isa, qs.quantize, fmt, edge["x"][r:r + 1], imatrix=imatrix)
                np.testing.assert_array_equal(got[0], edge[key][r], err_msg=f"q6_0 {key} row {edge['rows'][r]!r}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot", ("q6_0",)))
def test_q6_0_dequantize_and_vec_dot_tails(fmt, isa):
    """Every code, fp16 scale edges in both operands, 1 .. 33 blocks, several rows."""
    rng = np.random.default_rng(8)
    for nb in (1, 7, 8, 9, 15, 16, 17, 33):
        w = rng.integers(0, 256, (3, 26 * nb), dtype=np.uint8)
        a = rng.integers(0, 256, 34 * nb, dtype=np.uint8)
        w[0, 0:2] = np.frombuffer(FP16_EDGES[nb % FP16_EDGES.size].tobytes(), dtype=np.uint8)
        a[0:2] = np.frombuffer(FP16_EDGES[(nb + 3) % FP16_EDGES.size].tobytes(), dtype=np.uint8)
        assert_same_bits(_with(isa, qs.dequantize, fmt, w), _with("reference", qs.dequantize, fmt, w), f"{fmt} {isa}")
        assert_same_bits(_with(isa, qs.vec_dot, fmt, w, a), _with("reference", qs.vec_dot, fmt, w, a),
                         f"{fmt} on {isa}, {nb} blocks")
