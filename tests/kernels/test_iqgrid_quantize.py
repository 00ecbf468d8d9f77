"""The grid IQ quantizers (codegen/templates/iqgrid_quantize.c.j2) beyond the
Hypothesis properties: edge rows compared with the spec byte for byte on every
ISA, with and without an importance matrix (zero stretches included): zero and
signed-zero blocks (IQ3_S packs the blocks after a zero block), values whose
weights underflow, magnitudes up to where every neighbour distance overflows
(ggml aborts there; the spec takes the first neighbour), constants, outliers,
exact lattice ties, odd sign parities, several rows; and the first
non-finite super-block reported as the spec reports it."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.errors import NonFiniteInputError
from tests.conftest import kernel_params

IQGRID = ("iq3_s", "iq3_xxs")
QK = 256


def _params(formats=IQGRID):
    return [p for p in kernel_params("quantize") if p.values[0] in formats]


def _quantize(isa: str, fmt: str, x: np.ndarray, imatrix=None) -> np.ndarray:
    with qs.use_isa(isa), np.errstate(all="ignore"):
        return qs.quantize(fmt, x, imatrix=imatrix)


def _edge_rows() -> dict[str, np.ndarray]:
    """Named rows of one super-block each."""
    rng = np.random.default_rng(7)
    normal = rng.standard_normal(QK).astype(np.float32)
    rows = {
        "zeros": np.where(rng.random(QK) < 0.5, 0.0, -0.0).astype(np.float32),
        "subnormal": (rng.standard_normal(QK) * 1e-40).astype(np.float32),
        "weights underflow": (rng.standard_normal(QK) * 1e-20).astype(np.float32),
        "near the zero-block threshold": (rng.standard_normal(QK) * 1e-8).astype(np.float32),
        "large": normal * np.float32(1e10),
        "distances overflow": normal * np.float32(1e14),
        "squares overflow": normal * np.float32(1e25),
        "constant": np.full(QK, 1.0, dtype=np.float32),
        "negative constant": np.full(QK, -2.5, dtype=np.float32),
        "outlier": (rng.standard_normal(QK) * 0.01).astype(np.float32),
        "lattice ties": (rng.integers(0, 8, QK) * 2 + 1).astype(np.float32) * np.float32(0.5),
        "small integers": rng.integers(-8, 8, QK).astype(np.float32),
        "odd sign parity": np.abs(normal) * np.where(np.arange(QK) % 8 == 3, -1, 1).astype(np.float32),
        "heavy tails": rng.standard_t(2, QK).astype(np.float32),
    }
    rows["outlier"][37] = 1e4
    zero_inside = normal.copy()
    zero_inside[32:64] = -0.0
    zero_inside[128:160] = 0.0
    rows["zero blocks inside"] = zero_inside
    first_zero = normal.copy()
    first_zero[:32] = 0.0
    first_zero[224:] = np.where(np.arange(32) % 2, 0.0, -0.0)
    rows["first and last block zero"] = first_zero
    one = np.zeros(QK, dtype=np.float32)
    one[200] = -3.0
    rows["one value"] = one
    return rows


EDGE = _edge_rows()


def _imatrices() -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(11)
    stretches = rng.random(2 * QK).astype(np.float32)
    stretches[:40] = 0
    stretches[300:420] = 0
    return {"none": None, "zero stretches": stretches, "all zero": np.zeros(2 * QK, dtype=np.float32),
            "spread": (10.0 ** rng.uniform(-6, 6, 2 * QK)).astype(np.float32),
            # -0 weights make -0 neighbour-distance terms, which the vector search sums without the leading 0 +
            "signed zeros": np.where(rng.random(2 * QK) < 0.4, np.float32(-0.0), rng.random(2 * QK)).astype(np.float32)}


IMATRICES = _imatrices()


@pytest.mark.parametrize("fmt,isa", _params())
@pytest.mark.parametrize("imatrix", list(IMATRICES))
def test_edge_rows_match_spec(fmt, isa, imatrix):
    """Every edge row (paired into rows of 2 super-blocks so the importance
    matrix's second half is used too) gives the spec's bytes."""
    names = list(EDGE)
    x = np.stack([np.concatenate([EDGE[a], EDGE[b]]) for a, b in zip(names, names[1:] + names[:1])])
    im = IMATRICES[imatrix]
    expected = _quantize("reference", fmt, x, im)
    got = _quantize(isa, fmt, x, im)
    spec = registry.spec(fmt)
    for r, name in enumerate(names):
        a, b = got[r].reshape(-1, spec.type_size), expected[r].reshape(-1, spec.type_size)
        for s in range(2):
            assert a[s].tobytes() == b[s].tobytes(), (
                f"{fmt} on {isa}, imatrix {imatrix}: row {name!r} super-block {s}: "
                f"{a[s].tobytes().hex()} != {b[s].tobytes().hex()}")


@pytest.mark.parametrize("fmt,isa", _params())
def test_several_rows_and_row_lengths(fmt, isa):
    """Rows of 1 to 3 super-blocks, several rows, the imatrix indexed per column."""
    rng = np.random.default_rng(3)
    for nsuper, nrows in ((1, 3), (3, 2)):
        x = (rng.standard_normal((nrows, nsuper * QK)) * rng.uniform(0.01, 100, (nrows, 1))).astype(np.float32)
        im = rng.random(nsuper * QK).astype(np.float32)
        for imatrix in (None, im):
            np.testing.assert_array_equal(_quantize(isa, fmt, x, imatrix), _quantize("reference", fmt, x, imatrix),
                                          err_msg=f"{fmt} on {isa}, {nrows} rows of {nsuper} super-blocks")


@pytest.mark.parametrize("fmt,isa", _params())
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_refused_like_the_spec(fmt, isa, bad):
    x = np.ones((2, 2 * QK), dtype=np.float32)
    x[1, QK + 5] = bad
    for impl in ("reference", isa):
        with pytest.raises(NonFiniteInputError, match=fmt) as info:
            _quantize(impl, fmt, x)
        assert "row 1 column 261 (block 1)" in str(info.value)
