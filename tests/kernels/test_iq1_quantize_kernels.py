"""The IQ1_S and IQ1_M quantize kernels (codegen/templates/iq1_quantize.c.j2)
beyond the Hypothesis properties: edge rows byte-equal to the spec on every
ISA (ties in |x| and in x, signed zeros, zero blocks, a single outlier,
magnitudes where the float32 sums overflow without a NaN scale, an imatrix
with zeros), the NaN-scale case refused with the spec's error, non-finite
input reported first, and a few rows against the ggml oracle."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import quantspec as qs
from quantspec.errors import NonFiniteInputError
from tests.bits import assert_same_blocks
from tests.conftest import kernel_params

IQ1 = ("iq1_s", "iq1_m")
QK = 256
F = np.float32


def _params():
    return [p for p in kernel_params("quantize") if p.values[0] in IQ1]


def _quantize(isa: str, fmt: str, x: np.ndarray, imatrix=None) -> np.ndarray:
    with qs.use_isa(isa), np.errstate(all="ignore"):
        return qs.quantize(fmt, x, imatrix=imatrix)


def _edge_rows() -> dict[str, np.ndarray]:
    """Named rows of one super-block each."""
    rng = np.random.default_rng(11)
    normal = rng.standard_normal(QK).astype(F)
    rows = {
        "zeros": np.where(rng.random(QK) < 0.5, 0.0, -0.0).astype(F),
        "subnormal": (rng.standard_normal(QK) * 1e-40).astype(F),
        "below the IQ1_S zero threshold": (rng.standard_normal(QK) * 1e-13).astype(F),
        "between the thresholds": (rng.standard_normal(QK) * 1e-9).astype(F),
        "weights underflow": (rng.standard_normal(QK) * 1e-20).astype(F),
        "large": normal * F(1e10),
        "sums overflow": normal * F(1e15),
        "constant": np.full(QK, 1.0, dtype=F),
        "negative constant": np.full(QK, -2.5, dtype=F),
        "ties in |x|": (rng.choice([-1.0, 1.0], QK) * rng.integers(1, 3, QK)).astype(F),
        "ties with signed zeros": (rng.integers(-2, 3, QK) * 0.5).astype(F),
        "two runs": np.tile(np.repeat(F([1.0, -1.0]), 8), QK // 16),
        "outlier": (rng.standard_normal(QK) * 0.01).astype(F),
        "heavy tails": rng.standard_t(2, QK).astype(F),
    }
    rows["ties with signed zeros"][rows["ties with signed zeros"] == 0] = -0.0
    rows["ties with signed zeros"][::7] = 0.0
    rows["outlier"][37] = 1e4
    rows["sums overflow"][5] = 1.0
    inside = normal.copy()
    inside[32:64] = -0.0
    inside[128:144] = 0.0
    rows["zero blocks inside"] = inside
    return rows


def _imatrices() -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(3)
    zeros = (rng.random(QK) * 4).astype(F)
    zeros[rng.random(QK) < 0.3] = 0
    zeros[:32] = 0  # a whole IQ1_S block
    zeros[64:80] = 0  # a whole IQ1_M block
    zeros[100:108] = -0.0
    return {"none": None, "ones": np.ones(QK, F), "zeros": zeros,
            "ratios": (10.0 ** rng.uniform(-8, 8, QK)).astype(F)}


ROWS = _edge_rows()
IMATRICES = _imatrices()


@functools.cache
def _spec_edge_rows(fmt: str, im_name: str) -> np.ndarray:
    """The spec's bytes for the edge rows (once, for every ISA)."""
    return _quantize("reference", fmt, np.stack(list(ROWS.values())), IMATRICES[im_name])


def _applies(fmt: str, im_name: str) -> bool:
    return not (fmt == "iq1_s" and im_name == "none")


@pytest.mark.parametrize("im_name", list(IMATRICES))
@pytest.mark.parametrize("fmt,isa", _params())
def test_edge_rows_equal_the_spec(fmt, isa, im_name):
    if not _applies(fmt, im_name):
        pytest.skip("IQ1_S requires an importance matrix")
    x = np.stack(list(ROWS.values()))
    im = IMATRICES[im_name]
    ours, spec = _quantize(isa, fmt, x, im), _spec_edge_rows(fmt, im_name)
    for name, a, b in zip(ROWS, ours, spec):
        assert a.tobytes() == b.tobytes(), f"{fmt} on {isa}, imatrix {im_name}: row {name!r}"


@pytest.mark.parametrize("fmt,isa", _params())
def test_zero_superblocks_are_zero_bytes(fmt, isa):
    x = np.zeros((2, QK), F)
    x[1] = -0.0
    q = _quantize(isa, fmt, x, np.ones(QK, F))
    assert not q.any()


@pytest.mark.parametrize("fmt,isa", _params())
def test_several_rows_and_superblocks(fmt, isa):
    """The imatrix follows the column (3 super-blocks per row)."""
    rng = np.random.default_rng(5)
    x = rng.standard_t(4, (3, 3 * QK)).astype(F)
    im = (rng.random(3 * QK) * 3).astype(F)
    im[rng.random(3 * QK) < 0.2] = 0
    assert _quantize(isa, fmt, x, im).tobytes() == _quantize("reference", fmt, x, im).tobytes()


@pytest.mark.parametrize("fmt,isa", _params())
def test_nan_scale_raises_the_spec_error(fmt, isa):
    """A block of 1e19: x*x overflows, the weights are inf, the search's scale
    inf/inf = NaN (ggml aborts); the kernel reports it and quantspec raises
    the spec's error naming the row and the block's elements."""
    x = np.ones((3, 512), F)
    x[2, 256:288] = 1e19
    with pytest.raises(NonFiniteInputError, match=f"{fmt}: row 2, elements 256\\.\\."):
        _quantize(isa, fmt, x, np.ones(512, F))


@pytest.mark.parametrize("fmt,isa", _params())
def test_nonfinite_input_comes_before_a_nan_scale(fmt, isa):
    x = np.ones((2, QK), F)
    x[0, :32] = 1e19
    x[1, 3] = np.nan
    with pytest.raises(NonFiniteInputError, match="must be finite.*row 1 column 3"):
        _quantize(isa, fmt, x, np.ones(QK, F))


# ------------------------------------------------------------------ the oracle

@pytest.fixture(scope="module")
def ggml():
    from quantspec.oracle import GgmlUnavailable, ggml as load

    try:
        return load()
    except (GgmlUnavailable, OSError) as exc:
        pytest.skip(f"libggml from llama-cpp-python is not available: {exc}")


@pytest.mark.oracle
@pytest.mark.parametrize("fmt,isa", _params())
def test_kernels_match_ggml(ggml, fmt, isa):
    rng = np.random.default_rng(9)
    x = np.vstack([rng.standard_normal((2, 512)), np.stack(list(ROWS.values())[:8]).reshape(4, 512)]).astype(F)
    x[2, 7] = x[2, 9]  # a tie in a normal block
    for im_name in ("ratios", "zeros") + (("none",) if fmt == "iq1_m" else ()):
        im = None if IMATRICES[im_name] is None else np.tile(IMATRICES[im_name], 2)
        assert_same_blocks(fmt, _quantize(isa, fmt, x, im), ggml.quantize(fmt, x, im), f"on {isa}, imatrix {im_name}")
