"""The IQ2 search machinery (reference/_iq2.py) against element-by-element
transcriptions of ggml's C: iq2_find_best_neighbour (ties, overflow), the
sign-parity fix of IQ2_XXS/IQ2_XS, and independence of the batch size."""

from __future__ import annotations

import numpy as np
import pytest

from quantspec.reference import _iq2, _kquants, iq2_s, iq2_xs, iq2_xxs

F = np.float32
FLT_MAX = np.finfo(np.float32).max


def _c_best_neighbour(lat, key, xval, waux, scale):
    """``iq2_find_best_neighbour`` for one group (float32 steps as in C);
    None where ggml's GGML_ASSERT(grid_index >= 0) fires."""
    best_d2, best = FLT_MAX, None
    for g in _iq2.neighbour_list(lat, key):
        d2 = F(0)
        for j in range(8):
            diff = F(scale * F(2 * int(lat.levels[g, j]) + 1)) - xval[j]
            d2 = F(d2 + F(F(waux[j] * diff) * diff))
        if d2 < best_d2:
            best_d2, best = d2, g
    return best


@pytest.mark.parametrize("fmt", ["iq2_xxs", "iq2_xs", "iq2_s"])
def test_best_neighbour_is_iq2_find_best_neighbour(fmt):
    lat = _iq2.lattice(fmt)
    rng = np.random.default_rng(0)
    off_keys = np.flatnonzero(lat.row >= 0)
    keys = rng.choice(off_keys, 60)
    xval = np.abs(rng.standard_normal((60, 8))).astype(F)
    waux = rng.random((60, 8)).astype(F)
    waux[:10] = 0              # every d2 is 0: the first neighbour (strict <)
    waux[10:20, ::2] = 0
    scale = (rng.random(60) * 0.6).astype(F)
    xval[20:25] *= F(1e20)     # d2 overflows to inf: ggml aborts, the spec takes the first neighbour
    waux[20:25] = F(1e10)
    with np.errstate(over="ignore", invalid="ignore"):
        ours = _iq2.best_neighbour(lat, keys, xval, waux, scale)
        for m in range(60):
            expected = _c_best_neighbour(lat, int(keys[m]), xval[m], waux[m], scale[m])
            if expected is None:
                assert 20 <= m < 25
                expected = _iq2.neighbour_list(lat, int(keys[m]))[0]
            assert ours[m] == expected, (fmt, m)
    assert (ours[:10] == [_iq2.neighbour_list(lat, int(k))[0] for k in keys[:10]]).all()


def _c_signs(x, weight):
    """The IQ2_XXS/IQ2_XS sign loop for one group of 8."""
    xval, s, nflip = [], 0, 0
    for i in range(8):
        if x[i] >= 0:
            xval.append(x[i])
        else:
            xval.append(-x[i])
            nflip += 1
            s |= 1 << i
    if nflip % 2:
        imin, least = 0, F(F(weight[0] * x[0]) * x[0])
        for i in range(1, 8):
            ax = F(F(weight[i] * x[i]) * x[i])
            if ax < least:
                least, imin = ax, i
        xval[imin] = -xval[imin]
        s ^= 1 << imin
    return np.array(xval, dtype=F), s & 127


def test_parity_signs_are_the_c_loop():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 8)).astype(F)
    x[:20] = np.round(x[:20])          # equal costs: the first least wins
    x[20:30] = -0.0
    weight = rng.random((200, 8)).astype(F)
    weight[30:40] = 0
    xval, bits = _iq2.magnitudes_and_signs(x, weight, parity=True)
    for m in range(200):
        expected_xval, expected_bits = _c_signs(x[m], weight[m])
        assert np.array_equal(xval[m].view(np.uint32), expected_xval.view(np.uint32)), m
        assert bits[m] == expected_bits, m


@pytest.mark.parametrize("module", [iq2_xxs, iq2_xs, iq2_s])
def test_batch_size_changes_no_bit(module, monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.standard_t(3, (3, 1792)).astype(F)
    w = (10.0 ** rng.uniform(-3, 3, 1792)).astype(F)
    whole = module.quantize(x, w)
    monkeypatch.setattr(_kquants, "BATCH_SUPERBLOCKS", 4)
    assert np.array_equal(module.quantize(x, w), whole)
