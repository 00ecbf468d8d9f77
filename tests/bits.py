"""Bit-pattern comparison of float results.

Bits must be equal everywhere, with one exception: where both results are
NaN, the payload and sign may differ. IEEE 754 leaves the payload of an
operation on two NaN operands to the implementation (x86 keeps the first
operand's, and compilers may swap the operands of a commutative add), so
the spec does not define NaN payloads of dequantized NaN or inf scales.
"""

from __future__ import annotations

import numpy as np


def assert_same_bits(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    actual = np.asarray(actual, dtype=np.float32)
    expected = np.asarray(expected, dtype=np.float32)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    differ = actual.view(np.uint32) != expected.view(np.uint32)
    differ &= ~(np.isnan(actual) & np.isnan(expected))
    if differ.any():
        idx = tuple(int(i) for i in np.argwhere(differ)[0])
        raise AssertionError(
            f"{what}: {int(differ.sum())} values differ; first at {idx}: "
            f"0x{int(actual.view(np.uint32)[idx]):08x} ({actual[idx]!r}) != "
            f"0x{int(expected.view(np.uint32)[idx]):08x} ({expected[idx]!r})")
