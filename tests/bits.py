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


def assert_same_blocks(fmt: str, ours: np.ndarray, theirs: np.ndarray, what: str = "") -> None:
    """Byte equality of quantized rows; on a difference, the count of
    differing blocks and the first one's bytes on both sides, in hex."""
    from quantspec import registry

    if np.array_equal(ours, theirs):
        return
    size = registry.spec(fmt).type_size
    a, b = np.asarray(ours).reshape(-1, size), np.asarray(theirs).reshape(-1, size)
    bad = (a != b).any(axis=1)
    i = int(np.argmax(bad))
    raise AssertionError(f"{fmt} {what}: {int(bad.sum())} of {bad.size} blocks differ from ggml; first {i}: "
                         f"ours {a[i].tobytes().hex()} ggml {b[i].tobytes().hex()}")


def assert_dot_within_bound(fmt: str, wq: np.ndarray, aq: np.ndarray, ours: np.ndarray, theirs: np.ndarray,
                            bound: float) -> None:
    """``|ours - theirs| <= bound * sum_i |w_i * a_i|`` per row, the float64
    sum of magnitudes of the dequantized weights times the activation: how
    two float32 sums of the same terms in different orders may differ."""
    import quantspec as qs

    act_fmt = qs.format_info(fmt).vec_dot_format
    magnitude = np.abs(qs.dequantize(fmt, wq).astype(np.float64)
                       * qs.dequantize(act_fmt, aq).astype(np.float64)[None, :]).sum(axis=1)
    excess = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)) - bound * magnitude
    if np.any(excess > 0):
        r = int(np.argmax(excess))
        raise AssertionError(f"{fmt} vec_dot row {r}: {float(ours[r])!r} vs {float(theirs[r])!r} differ by more than "
                             f"{bound!r} * {float(magnitude[r])!r}")
