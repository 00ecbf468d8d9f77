"""The edge-case corpus: named input cases for every format, built from its
layout facts alone.

Each case is a few rows of float32 input (plus an importance matrix where
the format takes one), or, for decode-only cases, a few rows of block bytes.
The cases are generic: they read the block size, the fields and their C
types from the format's ``BlockFormat``, and find the interesting inputs of
a format (rounding boundaries, the largest amplitude whose scale stays
finite) by running its spec, so a format joins the corpus the moment it is
registered.

Row length: ``block_size * max(2, 256 // block_size)`` elements (at least
two blocks per row, 256 elements for the 32-element formats), so every case
has several blocks per row and several rows.

Inputs are deterministic (fixed seeds); the expected outputs are not stored
here: they are whatever the spec computes (``quantspec.verify``), and
``quantspec vectors export`` writes both down.

Importance matrices: a format whose ``imatrix`` is ``"required"`` gets an
all-ones matrix in every case that has none (and says so in the comment);
the ``imatrix_*`` cases exist only for formats that accept one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from quantspec import api, dispatch, registry

F32 = np.float32

#: The fixed vocabulary of case flags: flag -> what the case exercises.
FLAGS: dict[str, str] = {
    "zero_block": "every element of a block is zero",
    "negative_zero": "-0.0 inputs: the sign of a zero can decide the sign of a stored scale or minimum",
    "constant": "every element of a block has the same value",
    "outlier": "one element far larger in magnitude than the rest of its block",
    "alternating_signs": "elements alternate in sign",
    "ramp": "evenly spaced values across a block, so that every code value occurs",
    "tie": "one element per row sits exactly on a rounding boundary of the quantizer at the scale the "
           "spec picks: the smallest float32 for which that element decodes to the next level (found by "
           "bisection on the spec). A different tie-breaking rule, a fused multiply-add or another "
           "operation order decodes it differently",
    "nextafter": "one element per row is one float32 step (nextafter) from a rounding boundary",
    "subnormal": "float32 subnormal inputs, or magnitudes whose fp16 scales are fp16 subnormals or underflow",
    "max_scale": "the largest block magnitude whose stored scale fields stay finite (found by bisection "
                 "on the spec's validate)",
    "scale_overflow": "the smallest block magnitude whose stored scale fields are not finite (an fp16 scale "
                      "overflows to inf, or the overflowing arithmetic gives NaN)",
    "heavy_tail": "Student-t distributed rows (heavy tails: occasional large outliers)",
    "wide_range": "row magnitudes from 1e-20 to 1e20",
    "imatrix_zeros": "an importance matrix with zero weights (some columns, or all)",
    "imatrix_ratios": "an importance matrix whose weights span 16 orders of magnitude",
    "imatrix_required": "the format requires an importance matrix; the case uses all ones",
    "nonfinite": "NaN or infinite inputs (formats that store them) or non-finite scale fields (decode)",
    "decode_only": "block bytes given directly: only dequantization is tested",
    "random_fields": "decode-only: every integer field (quants, packed scales) holds random bytes",
    "nan_like_bytes": "decode-only: integer fields hold 0xFF/0x7C/0x7E bytes, which look like fp16 NaN or "
                      "inf when misread as halves",
    "every_bit_pattern": "decode-only: every 16-bit pattern of a two-byte element",
    "random": "random rows (the seed is in the comment)",
}


@dataclass(frozen=True, eq=False)
class Case:
    """One named input of the corpus.

    ``x``: float32 rows ``(nrows, n)`` to quantize (None for a decode-only
    case); ``imatrix``: float32 ``(n,)`` or None; ``q``: uint8 block rows
    ``(nrows, row_bytes)`` of a decode-only case (None otherwise).
    """

    id: str
    comment: str
    flags: tuple[str, ...]
    x: np.ndarray | None
    imatrix: np.ndarray | None = None
    q: np.ndarray | None = None

    @property
    def decode_only(self) -> bool:
        return self.x is None


def row_length(fmt) -> int:
    """Elements per row of every corpus case of ``fmt``."""
    bs = registry.spec(fmt).block_size
    return bs * max(2, 256 // bs)


# ------------------------------------------------------------------ helpers

def _rng(name: str, salt: int = 0) -> np.random.Generator:
    """A generator seeded by the case name (stable across formats and runs)."""
    return np.random.default_rng([salt] + [ord(c) for c in name])


def _decode(fmt: str, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """The spec's round trip of ``x``."""
    with dispatch.use_isa(dispatch.REFERENCE), np.errstate(all="ignore"):
        return api.dequantize(fmt, api.quantize(fmt, x, imatrix=imatrix))


def _quantize(fmt: str, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    with dispatch.use_isa(dispatch.REFERENCE), np.errstate(all="ignore"):
        return api.quantize(fmt, x, imatrix=imatrix)


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 -> int64 keys in the order of the values (-0.0 and +0.0 both 0)."""
    bits = np.asarray(x, dtype=F32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _from_ordered(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.int64)
    return np.where(k < 0, (-k) | 0x80000000, k).astype(np.uint32).view(F32)


def _row_absmax(x: np.ndarray) -> np.ndarray:
    return np.abs(x).max(axis=1, keepdims=True)


def _lossless(fmt: str, x: np.ndarray, imatrix) -> bool:
    y = _decode(fmt, x, imatrix)
    return bool(np.array_equal(y.view(np.uint32), x.view(np.uint32)))


# -------------------------------------------------------------- boundaries

def _decision_boundaries(fmt, base, cols, targets, imatrix, probes: int = 3):
    """Per row r: adjacent float32 values ``lo < hi`` between ``base[r, cols[r]]``
    and ``targets[r]`` where the spec's decoded value of that element changes
    (the other elements of the row stay as in ``base``). Returns (rows that
    have such a point, lo, hi).

    A (probes+1)-ary search on the float32 order: each step tries ``probes``
    values per row in one spec call (rows are independent in every format, so
    each candidate is a copy of its row) and keeps the first sub-interval
    whose ends decode differently, which keeps ``dec(lo) == dec(start) !=
    dec(hi)`` even where the decoded value is not monotone."""
    nrows = len(cols)
    rows = np.arange(nrows)
    x = base.copy()
    ref = _decode(fmt, x, imatrix)[rows, cols].view(np.uint32).copy()
    x[rows, cols] = targets
    flips = _decode(fmt, x, imatrix)[rows, cols].view(np.uint32) != ref
    lo, hi = _ordered(base[rows, cols]), _ordered(targets)
    replicas = np.repeat(base, probes, axis=0)
    at = np.repeat(cols, probes)
    k = np.arange(1, probes + 1)
    while (flips & (hi - lo > 1)).any():
        width = hi - lo
        cand = lo[:, None] + (width[:, None] * k[None, :]) // (probes + 1)  # (nrows, probes), non-decreasing
        replicas[np.arange(nrows * probes), at] = _from_ordered(cand.reshape(-1))
        y = _decode(fmt, replicas, imatrix)[np.arange(nrows * probes), at].view(np.uint32).reshape(nrows, probes)
        differs = (y != ref[:, None]) & (cand > lo[:, None])
        first = np.where(differs.any(axis=1), np.argmax(differs, axis=1), probes)
        new_lo = np.where(first > 0, np.take_along_axis(cand, np.maximum(first - 1, 0)[:, None], 1)[:, 0], lo)
        new_hi = np.where(first < probes, np.take_along_axis(cand, np.minimum(first, probes - 1)[:, None], 1)[:, 0], hi)
        active = flips & (width > 1)
        lo, hi = np.where(active, new_lo, lo), np.where(active, new_hi, hi)
    keep = rows[flips]
    return keep, _from_ordered(lo[keep]), _from_ordered(hi[keep])


def _tie_cases(fmt: str, n: int, imatrix, suffix: str, note: str) -> list[Case]:
    """``tie``/``tie_below``/``tie_above``: one element per row at (or one
    float32 step either side of) a decision boundary of the spec's quantizer."""
    spec = registry.spec(fmt)
    bs = spec.block_size
    nrows = 16
    base = _rng("tie" + suffix).standard_normal((nrows, n)).astype(F32)
    if _lossless(fmt, base, imatrix):
        return []  # every float32 is its own level: no rounding, no ties
    group = bs if bs > 1 else 32
    cols, targets = [], []
    for r in range(nrows):
        start = (r * group) % n
        g = base[r, start:start + group]
        # a small element of the block, moved up by 0.6 of the block's largest
        # magnitude: it crosses levels without becoming the block's extreme
        j = int(np.argsort(np.abs(g), kind="stable")[r % max(1, group // 2)])
        cols.append(start + j)
        targets.append(g[j] + F32(0.6) * np.abs(g).max())
    cols = np.array(cols)
    rows, lo, hi = _decision_boundaries(fmt, base, cols, np.array(targets, dtype=F32), imatrix)
    if rows.size == 0:
        return []
    x = base[rows].copy()
    cols = cols[rows]
    at = np.arange(rows.size)
    out = []
    for cid, value, flags, what in (
            ("tie", hi, ("tie",), "exactly at the boundary: the smallest float32 that decodes to the upper level"),
            ("tie_below", lo, ("tie", "nextafter"), "one float32 step below the boundary (the largest float32 "
                                                    "that decodes to the lower level)"),
            ("tie_above", np.nextafter(hi, F32(np.inf)), ("tie", "nextafter"),
             "one float32 step above the boundary")):
        xc = x.copy()
        xc[at, cols] = value
        comment = (f"{rows.size} rows of normal data; one element per row (columns "
                   f"{', '.join(str(int(c)) for c in cols[:4])}, ...) {what}, at the scale the spec picks{note}")
        out.append(Case(cid + suffix, comment, flags + (("imatrix_ratios",) if suffix else ()), xc, imatrix))
    return out


def _overflow_cases(fmt: str, n: int, imatrix, note: str) -> list[Case]:
    """``max_scale``/``scale_overflow``: per row, the largest magnitude whose
    stored scales stay finite and the next float32 magnitude, by bisection on
    the spec's ``validate``. Validity is not monotone in the magnitude (past
    some point a format's arithmetic overflows inside and stores zero
    scales), so the first invalid rung of a ladder of powers of two is found
    first, then the boundary below it."""
    nrows = 4
    unit = _rng("max_scale").standard_normal((nrows, n)).astype(F32)
    unit = (unit / _row_absmax(unit)).astype(F32)

    def invalid_rows(x):
        bad = np.zeros(x.shape[0], dtype=bool)
        for v in api.validate(fmt, _quantize(fmt, x, imatrix)):
            bad[v.row] = True
        return bad

    # rungs 1, 16, 256, ... 2^124 and FLT_MAX, all in one call
    powers = np.append(F32(2.0) ** np.arange(0, 128, 4, dtype=F32), np.finfo(F32).max).astype(F32)
    with np.errstate(over="ignore", invalid="ignore"):
        ladder = invalid_rows((unit[:, None, :] * powers[None, :, None]).reshape(-1, n)).reshape(nrows, -1)
    if ladder[:, 0].any() or not ladder.any(axis=1).all():
        return []  # no overflow up to FLT_MAX (f32), or invalid already at magnitude 1
    first = np.argmax(ladder, axis=1)
    lo, hi = _ordered(powers[first - 1]), _ordered(powers[first])
    with np.errstate(over="ignore", invalid="ignore"):
        while (hi - lo > 1).any():
            mid = lo + (hi - lo) // 2
            bad = invalid_rows((unit * _from_ordered(mid)[:, None]).astype(F32))
            lo, hi = np.where(bad, lo, mid), np.where(bad, mid, hi)
    amax_ok, amax_bad = _from_ordered(lo), _from_ordered(hi)
    return [
        Case("max_scale", f"{nrows} rows of normal data scaled to the largest magnitude whose stored scale "
             f"fields stay finite (row maxima {', '.join(f'{float(a):.9g}' for a in amax_ok)}){note}",
             ("max_scale",), (unit * amax_ok[:, None]).astype(F32), imatrix),
        Case("scale_overflow", f"the rows of max_scale one float32 step larger in magnitude (row maxima "
             f"{', '.join(f'{float(a):.9g}' for a in amax_bad)}): a stored scale field is no longer finite{note}",
             ("max_scale", "scale_overflow"), (unit * amax_bad[:, None]).astype(F32), imatrix),
    ]


# -------------------------------------------------------- decode-only cases

_NONFINITE = {"f16": (0x7C00, 0xFC00, 0x7E00), "bf16": (0x7F80, 0xFF80, 0x7FC0),
              "f32": (0x7F800000, 0xFF800000, 0x7FC00000)}


def _byte_masks(spec) -> tuple[np.ndarray, np.ndarray]:
    """Which bytes of a block belong to integer fields, which to float fields."""
    is_int = np.zeros(spec.type_size, dtype=bool)
    offsets = spec.offsets()
    for f in spec.fields:
        if f.ctype not in _NONFINITE:
            is_int[offsets[f.name]:offsets[f.name] + f.nbytes] = True
    return is_int, ~is_int


def _decode_cases(fmt: str, n: int, imatrix, note: str) -> list[Case]:
    spec = registry.spec(fmt)
    meta = spec.row_meta_size
    nrows = 8
    x = _rng("decode").standard_normal((nrows, n)).astype(F32)
    valid = _quantize(fmt, x, imatrix)
    nblocks = n // spec.block_size
    is_int, is_float = _byte_masks(spec)
    out = []
    if is_int.any():
        q = valid.copy()
        body = q[:, meta:].reshape(nrows, nblocks, spec.type_size)
        body[..., is_int] = _rng("random_fields").integers(0, 256, body[..., is_int].shape, dtype=np.uint8)
        q[:, meta:] = body.reshape(nrows, -1)
        out.append(Case("decode_random_fields", "blocks of a real quantization (normal rows) whose integer "
                        "fields (" + ", ".join(f.name for f in spec.fields if f.ctype not in _NONFINITE) +
                        ") were replaced by random bytes; float fields and row metadata kept",
                        ("decode_only", "random_fields"), None, None, q))
        q = valid.copy()
        body = q[:, meta:].reshape(nrows, nblocks, spec.type_size)
        pattern = np.resize(np.array([0xFF, 0x7C, 0x7E, 0xFF, 0x00, 0x7C], dtype=np.uint8), body[..., is_int].shape)
        body[..., is_int] = pattern
        q[:, meta:] = body.reshape(nrows, -1)
        out.append(Case("decode_nan_like_bytes", "integer fields filled with the bytes ff 7c 7e ff 00 7c ... "
                        "(fp16 NaN/inf patterns when misread as halves); float fields from a real quantization",
                        ("decode_only", "nan_like_bytes"), None, None, q))
    if is_float.any() and is_int.any():
        q = valid.copy()
        blocks = q[:, meta:].copy().view(spec.dtype)
        for f in spec.fields:
            if f.ctype in _NONFINITE:
                for b in range(nblocks):
                    if b % 4 < 3:
                        value = _NONFINITE[f.ctype][b % 4]
                        blocks[f.name][:, b] = np.array(value, dtype=np.uint32).view(F32) \
                            if f.ctype == "f32" else value
        q[:, meta:] = blocks.view(np.uint8).reshape(nrows, -1)
        out.append(Case("decode_nonfinite_scales", "every float field of block b set to +inf, -inf, NaN for "
                        "b mod 4 = 0, 1, 2 (block b mod 4 = 3 kept finite); the rest of a real quantization",
                        ("decode_only", "nonfinite"), None, None, q))
    if not is_int.any():  # float formats: every bit pattern of the element
        if spec.type_size == 2 and meta == 0:
            q = np.arange(65536, dtype="<u2").view(np.uint8).reshape(-1, 2 * n)
            out.append(Case("decode_every_bit_pattern", "every 16-bit pattern, in order (NaN payloads "
                            "included)", ("decode_only", "every_bit_pattern", "nonfinite"), None, None, q))
        else:
            q = _rng("random_bits").integers(0, 256, valid.shape, dtype=np.uint8)
            out.append(Case("decode_random_fields", "random bytes (every kind of value: NaN, inf, subnormal)",
                            ("decode_only", "random_fields", "nonfinite"), None, None, q))
    return out


# ------------------------------------------------------------------ corpus

@cache
def cases(fmt) -> tuple[Case, ...]:
    """The named edge cases of ``fmt`` (built on first use, then cached)."""
    name = registry.resolve(fmt)
    spec = registry.spec(name)
    n = row_length(name)
    bs = spec.block_size
    nblocks = n // bs
    required = spec.imatrix == "required"
    ones = np.ones(n, dtype=F32) if required else None
    note = "; all-ones importance matrix (the format requires one)" if required else ""
    req = ("imatrix_required",) if required else ()
    out: list[Case] = []

    def add(cid, comment, flags, x, imatrix=ones):
        out.append(Case(cid, comment + (note if imatrix is ones and required else ""),
                        tuple(flags) + (req if imatrix is ones else ()), np.ascontiguousarray(x, dtype=F32), imatrix))

    def blockwise(values) -> np.ndarray:
        """Rows whose block b is constant ``values[b]`` (cycled)."""
        per_block = np.resize(np.asarray(values, dtype=F32), (1, nblocks))
        return np.repeat(per_block, bs, axis=1)

    normal = _rng("normal").standard_normal((4, n)).astype(F32)

    add("zero_block", "rows of +0.0", ("zero_block",), np.zeros((2, n)))
    add("negative_zero_block", "rows of -0.0", ("zero_block", "negative_zero"), np.full((2, n), -0.0))
    mixed = np.where(_rng("mixed_zero").random((4, n)) < 0.5, F32(-0.0), F32(0.0))
    mixed[1, ::bs] = -0.0  # blocks whose first element is -0.0
    mixed[2, ::bs] = 0.0
    add("mixed_signed_zeros", "all-zero blocks with random signs of zero; row 1 starts every block with -0.0, "
        "row 2 with +0.0", ("zero_block", "negative_zero"), mixed)
    zeros_in_data = normal.copy()
    zeros_in_data[:, ::3] = -0.0
    zeros_in_data[0, :bs] = -0.0
    zeros_in_data[0, bs - 1] = 1.0
    add("negative_zeros_in_data", "normal rows with every third element -0.0; row 0's first block is -0.0 "
        "except its last element (1.0)", ("negative_zero",), zeros_in_data)
    constants = [1.0, -1.0, 0.5, 3.0, -7.25, 1e-3, 100.0, 65504.0, -2.0**-10, 1234.5]
    add("constant_blocks", "every block constant, block b = " + ", ".join(map(str, constants)) + " (cycled)",
        ("constant",), np.vstack([blockwise(constants), -blockwise(constants[::-1])]))
    outlier = (normal * F32(0.01)).astype(F32)
    for r, (pos, value) in enumerate([(0, 100.0), (bs - 1, -100.0), (bs // 2, 1e4), (n - 1, -3.0)]):
        outlier[r, pos::bs] = value
    add("one_outlier", "normal rows x 0.01 with one outlier per block at element 0 (+100), the last element "
        "(-100), the middle (+1e4), the last (-3)", ("outlier",), outlier)
    alt = np.resize(np.array([1.0, -1.0], F32), (4, n)).copy()
    alt[1] *= -2.5
    alt[2] *= np.abs(normal[2])
    alt[3] *= np.abs(normal[3]) * 1e-3
    add("alternating_signs", "+1 -1 +1 ...; -2.5 times that; random magnitudes with alternating signs "
        "(x 1 and x 1e-3)", ("alternating_signs",), alt)
    ramp_block = np.linspace(-1.0, 1.0, bs, dtype=F32) if bs > 1 else np.array([0.75], F32)
    ramp = np.vstack([np.tile(ramp_block, nblocks), np.tile(np.linspace(0.0, 1.0, bs, dtype=F32), nblocks),
                      np.tile(ramp_block * F32(1e-2), nblocks) + F32(5.0)])
    add("ramp", "evenly spaced values in each block: [-1, 1], [0, 1] and 5 + [-0.01, 0.01]", ("ramp",), ramp)
    out.extend(_tie_cases(name, n, ones, "", note))
    tiny = _rng("subnormal").standard_normal((4, n)).astype(F32)
    tiny[0] *= F32(1e-41)
    tiny[1] = np.float32(1e-45) * np.resize(np.array([1, -1, 0, 3], F32), n)
    tiny[2] *= F32(1e-39)
    tiny[3, :bs] = 1e-44
    add("subnormal_inputs", "float32 subnormal inputs: normal x 1e-41, the smallest subnormal with signs, "
        "normal x 1e-39, a constant 1e-44 block", ("subnormal",), tiny)
    small = _rng("subnormal_scales").standard_normal((6, n)).astype(F32)
    small = (small / _row_absmax(small) * (10.0 ** -np.arange(3, 9, dtype=np.float64))[:, None]).astype(F32)
    add("subnormal_scales", "normal rows scaled to maxima 1e-3 ... 1e-8: scales of absmax/levels fall in fp16's "
        "subnormal range (below 2^-14) or underflow to zero", ("subnormal",), small)
    out.extend(_overflow_cases(name, n, ones, note))
    add("normal", "standard normal rows (seed 'normal')", ("random",), normal)
    add("student_t", "Student-t rows, df 3, 4, 5, 3", ("random", "heavy_tail"),
        np.vstack([_rng("student_t", df).standard_t(df, (1, n)) for df in (3, 4, 5, 3)]))
    wide = _rng("wide").standard_normal((6, n)) * 10.0 ** np.array([-20, -8, -1, 3, 12, 20])[:, None]
    add("wide_range", "normal rows scaled by 1e-20, 1e-8, 0.1, 1e3, 1e12, 1e20", ("random", "wide_range"), wide)
    if spec.nonfinite_input == "store":
        nonfinite = normal[:2].copy()
        specials = np.array([np.inf, -np.inf, np.nan, -np.nan], F32)
        nonfinite[0, :4] = specials
        nonfinite[1, 1::7] = np.array([0x7F800001, 0xFFC00001, 0x7FBFFFFF, 0x7FC12345],
                                      dtype=np.uint32).view(F32)[np.arange(len(nonfinite[1, 1::7])) % 4]
        add("nonfinite", "inf, -inf, NaN, -NaN; NaNs with payloads (signalling 0x7f800001, 0xffc00001, "
            "0x7fbfffff, 0x7fc12345)", ("nonfinite",), nonfinite)
    if spec.imatrix != "ignored":
        w = _rng("imatrix_zeros").random(n).astype(F32) * F32(5)
        w[_rng("imatrix_zeros", 1).random(n) < 0.4] = 0
        add("imatrix_zeros", "normal rows; importance matrix with 40% zero weights", ("imatrix_zeros",),
            normal, w)
        add("imatrix_all_zero", "normal rows; an all-zero importance matrix", ("imatrix_zeros",),
            normal, np.zeros(n, F32))
        ratios = (10.0 ** _rng("imatrix_ratios").uniform(-8, 8, n)).astype(F32)
        add("imatrix_ratios", "normal and Student-t rows; importance weights 10^U(-8, 8)", ("imatrix_ratios",),
            np.vstack([normal[:2], _rng("student_t", 3).standard_t(3, (2, n))]), ratios)
        w = np.ones(n, F32)
        w[outlier[0] == 100.0] = 0
        add("imatrix_zero_outlier", "the one_outlier rows; weight 0 on the outlier columns of row 0, 1 elsewhere",
            ("outlier", "imatrix_zeros"), outlier, w)
        out.extend(_tie_cases(name, n, ratios, "_imatrix", "; importance weights 10^U(-8, 8)"))
    out.extend(_decode_cases(name, n, ones, note))
    if required:  # every case that runs on the all-ones matrix says so
        out = [replace(c, flags=c.flags + ("imatrix_required",)) if c.imatrix is ones and
               "imatrix_required" not in c.flags else c for c in out]
    unknown = {f for c in out for f in c.flags} - FLAGS.keys()
    assert not unknown, f"flags outside the vocabulary: {unknown}"
    return tuple(out)


DISTRIBUTIONS = ("normal", "student-t", "laplace", "uniform", "scaled")


def random_cases(fmt, count: int, seed: int = 0) -> tuple[Case, ...]:
    """``count`` random cases of 4 rows each: normal, Student-t (df 3..5),
    Laplace, uniform and scaled-normal (row magnitudes 10^U(-6, 6)) in turn;
    every other case of a format that accepts an importance matrix carries a
    random one (weights 10^U(-3, 3))."""
    name = registry.resolve(fmt)
    spec = registry.spec(name)
    n = row_length(name)
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        dist = DISTRIBUTIONS[i % len(DISTRIBUTIONS)]
        if dist == "normal":
            x = rng.standard_normal((4, n))
        elif dist == "student-t":
            x = rng.standard_t(3 + i % 3, (4, n))
        elif dist == "laplace":
            x = rng.laplace(size=(4, n))
        elif dist == "uniform":
            x = rng.uniform(-1, 1, (4, n))
        else:
            x = rng.standard_normal((4, n)) * 10.0 ** rng.uniform(-6, 6, (4, 1))
        imatrix = None
        if spec.imatrix == "required" or (spec.imatrix == "accepted" and i % 2):
            imatrix = (10.0 ** rng.uniform(-3, 3, n)).astype(F32)
        comment = f"{dist} rows, seed [{seed}, {i}]"
        if imatrix is not None:
            comment += "; random importance weights 10^U(-3, 3)"
        out.append(Case(f"random_{i}", comment, ("random",), x.astype(F32), imatrix))
    return tuple(out)
