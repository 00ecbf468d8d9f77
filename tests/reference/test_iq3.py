"""IQ3_XXS and IQ3_S spec facts that need no oracle: the bit fields decoded
by hand, the parity fix, the neighbour search's tie and overflow rules, and
the dot products against the decoded floats."""

from __future__ import annotations

import numpy as np

from quantspec.reference import _iq3, iq3_s, iq3_xxs, q8_k
from quantspec.reference._numerics import F32, canonical_dot
from quantspec.reference.tables.ggml_iq3 import IQ3S_GRID, IQ3XXS_GRID

ONE_HALF = np.frombuffer(np.float16(1.0).tobytes(), np.uint16)[0]


def test_iq3_xxs_scale_and_signs_word():
    """Word b: bits 7t..7t+6 = sign index of group t of 8, bits 28..31 = ls_b;
    element = (d*(0.5 + ls)*0.5) * grid byte * sign."""
    b = iq3_xxs.FORMAT.empty_blocks(1, 1)
    b["d"] = ONE_HALF
    b["qs"][0, 0, 8:16] = [5, 6, 7, 8, 9, 10, 11, 12]  # block 1
    sign_index = [0b0000001, 0b1000000, 0b0000011, 0b1111111]
    b["scales_and_signs"][0, 0, 1] = sum(s << (7 * t) for t, s in enumerate(sign_index)) | 9 << 28
    y = iq3_xxs.dequantize(iq3_xxs.FORMAT.to_bytes(b))[0, 32:64]
    grid = IQ3XXS_GRID.view(np.uint8).reshape(-1, 4)[[5, 6, 7, 8, 9, 10, 11, 12]].reshape(-1).astype(F32)
    signs = np.array([_iq3.even_parity_signs()[s] for s in sign_index], np.uint8)
    negative = np.unpackbits(signs[:, None], axis=1, bitorder="little").reshape(-1).astype(bool)
    db = (F32(1) * (F32(0.5) + F32(9))) * F32(0.5)
    assert np.array_equal(y, np.where(negative, -(db * grid), db * grid))
    # 0b0000001 has odd parity: bit 7 completes it, so element 7 of group 0 is negative too
    assert negative[[0, 7]].all() and not negative[1:7].any()


def test_iq3_s_scales_qh_and_signs():
    """Low nibble of scales[c] = ls_2c, high = ls_2c+1; bit k of qh[b] = bit 8
    of the index of group 8b + k; bit e of signs[t] = sign of element 8t + e."""
    b = iq3_s.FORMAT.empty_blocks(1, 1)
    b["d"] = ONE_HALF
    b["scales"][0, 0, 1] = 0x53  # blocks 2 (code 3) and 3 (code 5)
    b["qs"][0, 0, 16] = 7        # group 16 = block 2's first group: index 256 + 7 via qh[2] bit 0
    b["qh"][0, 0, 2] = 0b00000001
    b["qs"][0, 0, 24] = 9        # group 24 = block 3's first group: index 9
    b["signs"][0, 0, 8] = 0b00000101  # elements 64 and 66
    y = iq3_s.dequantize(iq3_s.FORMAT.to_bytes(b))[0]
    grid = IQ3S_GRID.view(np.uint8).reshape(-1, 4).astype(F32)
    assert np.array_equal(y[64:68], F32(7) * grid[256 + 7] * np.array([-1, 1, -1, 1], F32))
    assert np.array_equal(y[96:100], F32(11) * grid[9])
    assert np.array_equal(iq3_s.scale_codes(b)[0, 0], [0, 0, 3, 5, 0, 0, 0, 0])


def test_parity_fix_flips_the_least_weighted_element():
    x = np.array([[1.0, -2.0, 3.0, -0.5, 4.0, -0.25, 5.0, 6.0]], F32)  # 3 negatives: odd
    w = x * x
    xval, bits = iq3_xxs.parity_signs(x, w)
    # the smallest w*x*x is element 5 (-0.25): it keeps its sign in xval and loses its bit
    assert xval.tolist() == [[1.0, 2.0, 3.0, 0.5, 4.0, -0.25, 5.0, 6.0]]
    assert int(bits[0]) == 0b0001010


def test_neighbour_search_ties_and_overflow():
    """The first neighbour in list order wins ties; when every score
    overflows (ggml aborts) the spec takes the first neighbour."""
    t = _iq3.lattice_tables(512)
    u = int(np.flatnonzero(t.map < 0)[0])
    n = int(t.count[u])
    first = t.neighbours[u, 0]
    keys = np.array([u, u])
    xval = np.array([[1, 1, 1, 1], [1e13, 1e13, 1e13, 1e13]], F32)
    zero_weight = np.zeros((1, 4), F32)
    assert _iq3.best_neighbour(t, keys[:1], xval[:1], zero_weight, np.array([1], F32))[0] == first  # all tie at 0
    with np.errstate(over="ignore", invalid="ignore"):
        huge = _iq3.best_neighbour(t, keys[1:], xval[1:], np.full((1, 4), 1e13, F32), np.array([1], F32))
    assert huge[0] == first and n > 1


def test_vec_dot_is_the_canonical_sum_of_decoded_terms():
    """Each super-block term is exactly (fp16(d)*a.d) * (integer dot of the
    decoded integers) (x 0.25 for IQ3_XXS); the row is their canonical sum."""
    rng = np.random.default_rng(1)
    aq = q8_k.quantize(rng.standard_normal((1, 1024)).astype(F32))
    a = q8_k.FORMAT.blocks(aq)[0]
    for m, factor in ((iq3_xxs, F32(0.25)), (iq3_s, F32(1))):
        wq = rng.integers(0, 256, (3, 4 * m.FORMAT.type_size), dtype=np.uint8)
        wq.reshape(-1, m.FORMAT.type_size)[:, :2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
        w = m.FORMAT.blocks(wq)
        d = np.frombuffer(w["d"].tobytes(), np.float16).astype(F32).reshape(w.shape)
        if m is iq3_xxs:
            scale = F32(0.5) + m.scale_codes(w).astype(F32)  # decoded values are d*(0.5+ls)*0.5*grid
            ints = m.dequantize(wq).reshape(3, 4, 8, 32) / (d[..., None, None] * scale[..., None] * F32(0.5))
            mult = 2 * m.scale_codes(w) + 1
        else:
            mult = 1 + 2 * m.scale_codes(w)
            ints = m.dequantize(wq).reshape(3, 4, 8, 32) / (d[..., None, None] * mult[..., None].astype(F32))
        ints = np.rint(ints).astype(np.int64)
        bsum = (np.einsum("rbsj,bsj->rbs", ints, a["qs"].reshape(4, 8, 32).astype(np.int64)) * mult).sum(-1)
        terms = ((d * a["d"]) * bsum.astype(F32)) * factor
        assert np.array_equal(m.vec_dot(wq, aq[0]).view(np.uint32), canonical_dot(terms).view(np.uint32))
