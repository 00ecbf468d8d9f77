"""Edge cases of the grid IQ kernels (codegen/templates/iqgrid.c.j2) on every
ISA this CPU has, bit for bit against the spec: special fp16 super-block
scales (IQ1_M's spread over four nibbles), every grid index and sign
pattern, the activation's -128 against negative weights, dot products over
super-block counts around the 8- and 16-wide steps, several rows."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from tests.bits import assert_same_bits
from tests.conftest import kernel_params

GRID_FORMATS = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s")

#: fp16 bit patterns of the super-block scale: zeros, subnormals, normal extremes, inf, NaN (quiet and signalling)
F16_EDGES = (0x0000, 0x8000, 0x0001, 0x03FF, 0x8001, 0x0400, 0x3C00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00,
             0x7C01, 0xFE00, 0x7FFF)


def _params(op: str):
    return [p for p in kernel_params(op) if p.values[0] in GRID_FORMATS]


def _run(isa: str, fn, *args):
    with qs.use_isa(isa):
        return fn(*args)


def _set_super_scale(fmt: str, blocks: np.ndarray, bits: np.ndarray) -> None:
    """Write the fp16 super-block scale ``bits`` into every block (rows of
    type_size bytes): the ``d`` field, or IQ1_M's four high nibbles of the
    scale words (nibble k = bits 4k .. 4k+3 in bits 12..15 of word k)."""
    spec = registry.spec(fmt)
    if fmt == "iq1_m":
        off = spec.offsets()["scales"]
        for k in range(4):
            word = blocks[:, off + 2 * k].astype(np.uint16) | blocks[:, off + 2 * k + 1].astype(np.uint16) << 8
            word = (word & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
            blocks[:, off + 2 * k] = word & 0xFF
            blocks[:, off + 2 * k + 1] = word >> 8
    else:
        off = spec.offsets()["d"]
        blocks[:, off] = bits & 0xFF
        blocks[:, off + 1] = bits >> 8


def _random_blocks(fmt: str, nblocks: int, seed: int) -> np.ndarray:
    spec = registry.spec(fmt)
    return np.random.default_rng(seed).integers(0, 256, (nblocks, spec.type_size), dtype=np.uint8)


def _activation(n: int, seed: int, fill: int | None = None) -> np.ndarray:
    """A Q8_K row of arbitrary bytes (d, quants, bsums), or with every quant ``fill``."""
    act = registry.spec("q8_k")
    a = np.random.default_rng(seed).integers(0, 256, act.row_bytes(n), dtype=np.uint8).reshape(-1, act.type_size)
    a[:, :4] = np.frombuffer(np.float32(0.5).tobytes(), np.uint8)  # a finite d: the weights' scale decides
    if fill is not None:
        off = act.offsets()["qs"]
        a[:, off:off + 256] = np.uint8(fill & 0xFF)
    return a.reshape(-1)


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_dequantize_special_super_scales(fmt, isa):
    """NaN, inf, subnormal, signed zero and extreme fp16 scales, each on 3 blocks."""
    blocks = _random_blocks(fmt, 3 * len(F16_EDGES), seed=1)
    _set_super_scale(fmt, blocks, np.repeat(np.array(F16_EDGES, dtype=np.uint16), 3))
    q = blocks.reshape(1, -1)
    assert_same_bits(_run(isa, qs.dequantize, fmt, q), _run("reference", qs.dequantize, fmt, q), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
def test_vec_dot_special_super_scales(fmt, isa):
    blocks = _random_blocks(fmt, 2 * len(F16_EDGES), seed=2)
    _set_super_scale(fmt, blocks, np.repeat(np.array(F16_EDGES, dtype=np.uint16), 2))
    # one super-block per row: every special scale in its own dot product
    q = blocks.reshape(-1, registry.spec(fmt).type_size)
    a = _activation(256, seed=3)
    assert_same_bits(_run(isa, qs.vec_dot, fmt, q, a), _run("reference", qs.vec_dot, fmt, q, a), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_every_grid_index_and_sign_pattern(fmt, isa):
    """4096 super-blocks of arbitrary bytes: at least 131072 groups over at
    most 2048 grid indices (64 draws per index on average, so every index,
    every 7-bit sign index and every sign byte occurs), every scale code."""
    blocks = _random_blocks(fmt, 4096, seed=4)
    _set_super_scale(fmt, blocks, np.full(blocks.shape[0], 0x3C00, dtype=np.uint16))  # d = 1: exact values
    q = blocks.reshape(16, -1)
    assert_same_bits(_run(isa, qs.dequantize, fmt, q), _run("reference", qs.dequantize, fmt, q), f"{fmt} on {isa}")
    a = _activation(q.shape[1] // registry.spec(fmt).type_size * 256, seed=5)
    assert_same_bits(_run(isa, qs.vec_dot, fmt, q, a), _run("reference", qs.vec_dot, fmt, q, a),
                     f"{fmt} vec_dot on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
@pytest.mark.parametrize("fill", [-128, 127, -1])
def test_vec_dot_extreme_activation_quants(fmt, isa, fill):
    """Every activation quant -128 (whose negation does not fit int8), 127 or
    -1, against weights whose sign bits are all set or arbitrary."""
    blocks = _random_blocks(fmt, 24, seed=6)
    _set_super_scale(fmt, blocks, np.full(blocks.shape[0], 0x3C00, dtype=np.uint16))
    spec = registry.spec(fmt)
    offs = spec.offsets()
    if "signs" in offs:  # IQ3_S: explicit sign bytes
        blocks[:12, offs["signs"]:offs["signs"] + 32] = 0xFF
    elif fmt == "iq2_s":  # the sign bytes are qs[32..63]
        blocks[:12, offs["qs"] + 32:offs["qs"] + 64] = 0xFF
    q = blocks.reshape(3, -1)
    a = _activation(8 * 256, seed=7, fill=fill)
    assert_same_bits(_run(isa, qs.vec_dot, fmt, q, a), _run("reference", qs.vec_dot, fmt, q, a), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
@pytest.mark.parametrize("nsuper", [1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 33, 40])
def test_vec_dot_tails_and_rows(fmt, isa, nsuper):
    """Super-block counts around the 8- and 16-wide steps (the tails go one
    super-block at a time into lane ib % 16), 1, 2, 3 and 5 rows."""
    spec = registry.spec(fmt)
    for nrows in (1, 2, 3, 5):
        blocks = _random_blocks(fmt, nrows * nsuper, seed=100 * nsuper + nrows)
        # finite scales of mixed magnitude, so that the lanes' order shows in the bits
        scales = np.random.default_rng(nsuper).integers(0x2000, 0x5000, blocks.shape[0]).astype(np.uint16)
        _set_super_scale(fmt, blocks, scales)
        q = blocks.reshape(nrows, nsuper * spec.type_size)
        a = _activation(nsuper * 256, seed=nsuper)
        assert_same_bits(_run(isa, qs.vec_dot, fmt, q, a), _run("reference", qs.vec_dot, fmt, q, a),
                         f"{fmt} on {isa}, {nrows} rows of {nsuper} super-blocks")


@pytest.mark.parametrize("fmt,isa", [p for p in _params("dequantize") if p.values[1] != "scalar"])
def test_huge_output_takes_the_streaming_path(fmt, isa):
    """Outputs of 64 MiB and more are written with non-temporal stores: same bits as the scalar kernel."""
    spec = registry.spec(fmt)
    nsuper = (64 << 20) // (4 * 256) + 3
    blocks = _random_blocks(fmt, nsuper, seed=8)
    _set_super_scale(fmt, blocks, np.full(nsuper, 0x3C00, dtype=np.uint16))
    q = blocks.reshape(1, -1)
    assert_same_bits(_run(isa, qs.dequantize, fmt, q), _run("scalar", qs.dequantize, fmt, q),
                     f"{fmt} on {isa}, streaming stores")
    assert spec.type_size * nsuper == q.size
