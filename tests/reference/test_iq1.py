"""IQ1_S and IQ1_M spec pieces without ggml: the neighbour choice against a
transcription of ``iq1_find_best_neighbour2``'s loop, its defined fallback,
the candidate scan, the bit fields of both blocks by hand."""

from __future__ import annotations

import numpy as np

from quantspec.reference import _iq1, iq1_m, iq1_s

F = np.float32
FLT_MAX = np.finfo(F).max


def _c_best_neighbour(u, xg, wg, scale, negative):
    """The C loop over the neighbour list, element by element in float32."""
    row, table = _iq1.neighbour_lists()
    xx = _iq1.X_M if negative else _iq1.X_P
    best, index = FLT_MAX, -1
    for g in table[row[u]]:
        if g < 0:
            break
        d2 = F(0)
        for i in range(8):
            diff = F(scale) * xx[_iq1.GRID_LEVELS[g, i]] - xg[i]
            d2 = F(d2 + F(wg[i] * diff) * diff)
        if d2 < best:
            best, index = d2, g
    return index


def test_best_neighbour_is_the_c_loop():
    rng = np.random.default_rng(0)
    row, _ = _iq1.neighbour_lists()
    off = np.nonzero(row >= 0)[0]
    u = rng.choice(off, 300)
    xg = rng.standard_normal((300, 8)).astype(F)
    wg = (rng.random((300, 8)) * (rng.random((300, 8)) > 0.3)).astype(F)  # zero weights: equal scores
    wg[:20] = 0  # every neighbour scores 0: the first one wins
    scale = (rng.random(300) + 0.1).astype(F)
    negative = rng.random(300) < 0.5
    ours = _iq1.best_neighbour(u, xg, wg, scale, negative)
    expected = [_c_best_neighbour(*args) for args in zip(u, xg, wg, scale, negative)]
    assert ours.tolist() == expected


def test_best_neighbour_fallback_is_defined():
    """Every neighbour's score overflows: the whole grid is scanned with the
    element's own x (upstream reads out of bounds there), and where nothing
    is finite either, the first neighbour is taken."""
    row, table = _iq1.neighbour_lists()
    u = np.array([np.nonzero(row >= 0)[0][5]] * 2)
    xg = np.full((2, 8), 1e30, F)
    wg = np.ones((2, 8), F)
    xg[1, 0] = np.inf  # no finite score anywhere
    with np.errstate(over="ignore", invalid="ignore"):
        out = _iq1.best_neighbour(u, xg, wg, np.array([1e30, 1e30], F), np.array([False, False]))
    assert out[1] == table[row[u[1]], 0]
    assert out[0] >= 0


def test_scan_best_keeps_the_first_of_equal_scores():
    sumqx = np.array([[1], [2], [2], [-2]], F)
    sumq2 = np.array([[1], [1], [1], [1]], F)
    best, scale = _iq1.scan_best(sumqx, sumq2)
    assert best.tolist() == [1] and scale.tolist() == [2.0]
    best, _ = _iq1.scan_best(np.zeros((3, 1), F), np.zeros((3, 1), F))
    assert best.tolist() == [-1]  # sumq2 > 0 never holds: the block is treated as zero


def test_iq1_s_fields_by_hand():
    block = np.zeros((1, 50), np.uint8)
    block[0, :2] = np.array([0x3C00], "<u2").view(np.uint8)  # d = 1
    block[0, 2] = 0x34  # group 0 low bits
    qh = (5 << 0) | (3 << 12) | (1 << 15)  # group 0 high bits 5, ls 3, delta -
    block[0, 34:36] = np.array([qh], "<u2").view(np.uint8)
    b = iq1_s.FORMAT.blocks(block)
    assert iq1_s.group_indices(b)[0, 0, 0] == 0x534
    y = iq1_s.dequantize(block)[0]
    expected = F(7) * (_iq1.GRID_VALUES[0x534].astype(F) - F(0.125))
    assert np.array_equal(y[:8], expected)
    assert np.array_equal(y[8:32], np.tile(F(7) * (_iq1.GRID_VALUES[0].astype(F) - F(0.125)), 3))


def test_iq1_m_fields_by_hand():
    block = np.zeros((1, 56), np.uint8)
    block[0, 3] = 0x21  # group 3 low bits
    block[0, 33] = 0xE0  # qh byte 1, high nibble: group 3 high bits 6, delta sign 1
    words = np.zeros(4, "<u2")
    words[0] = 5 << 3  # ls of block 1 (elements 16..31) = 5
    d = np.array([0x3800], "<u2")[0]  # D = 0.5
    for k in range(4):
        words[k] |= ((int(d) >> (4 * k)) & 15) << 12
    block[0, 48:] = words.view(np.uint8)
    b = iq1_m.FORMAT.blocks(block)
    assert iq1_m.group_indices(b)[0, 0, 3] == 0x621
    assert iq1_m.delta_signs(b)[0, 0].tolist() == [0, 0, 0, 1] + [0] * 28
    assert iq1_m.scale_codes(b)[0, 0, :2].tolist() == [0, 5]
    y = iq1_m.dequantize(block)[0]
    assert np.array_equal(y[24:32], F(0.5) * F(11) * (_iq1.GRID_VALUES[0x621].astype(F) - F(0.125)))
    assert np.array_equal(y[:8], F(0.5) * (_iq1.GRID_VALUES[0].astype(F) + F(0.125)))
    assert not iq1_m.validate(block)
    for k in range(4):  # D = 0x7C00: inf
        words[k] = (words[k] & 0x0FFF) | ((0x7C00 >> (4 * k)) & 15) << 12
    block[0, 48:] = words.view(np.uint8)
    assert [v.field for v in iq1_m.validate(block)] == ["scales"]
