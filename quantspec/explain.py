"""A block format explained: its layout, where every bit of a block goes,
and one block decoded field by field down to its floats.

The same facts feed ``quantspec explain`` (plain text, :func:`render_text`)
and the generated format pages ``docs/formats/<format>.md`` (``python -m
codegen``, through ``codegen/docs.py``). Both read the spec module's
``FORMAT`` and docstring, plus a bit map stated here as data (``LAYOUTS``):
which bits of which field hold which bits of which quantity. A bit map is
checked twice: it must cover every bit of every quantity exactly once, and
decoding through it and the stated dequantize formula must give the spec's
``dequantize`` bit for bit (tests/docs).

This module imports only NumPy and the standard library at import time,
because ``python -m codegen`` loads it by file path from a source tree in
which quantspec need not be installed; callers pass the spec module.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType

import numpy as np

try:  # absent when codegen loads this file without the package installed
    from quantspec.errors import GGUFError, QuantspecError, ShapeError
except ImportError:  # pragma: no cover - only in the skip_install codegen environment
    class QuantspecError(Exception):
        pass

    class ShapeError(QuantspecError, ValueError):
        pass

    class GGUFError(QuantspecError, ValueError):
        pass


class HexError(QuantspecError, ValueError):
    """Text given as a block that is not pairs of hexadecimal digits."""


# --------------------------------------------------------------------------- bit maps

@dataclass(frozen=True)
class Seg:
    """Bits ``[bit, bit + width)`` of unit ``k`` of ``field`` hold bits
    ``[at, at + width)`` of ``symbol[index]``.

    The field is read as consecutive little-endian integers of ``unit`` bits
    (8: its bytes); ``k`` runs over all of them, or over ``units`` =
    ``(start, stop)``. ``repeat`` > 1 states ``repeat`` segments at once,
    ``i = 0 .. repeat-1``, the i-th at bit ``bit + stride*i``. ``index`` is
    an integer expression in ``k`` and ``i`` (``//`` and ``%`` allowed).
    """

    field: str
    bit: int
    width: int
    symbol: str
    index: str
    at: int = 0
    unit: int = 8
    units: tuple[int, int] | None = None
    repeat: int = 1
    stride: int = 0


@dataclass(frozen=True)
class Symbol:
    """A quantity a block stores in packed bits (a quant, a sub-block scale)."""

    name: str
    bits: int
    meaning: str
    signed: bool = False


@dataclass(frozen=True)
class Layout:
    """The bit map of a format and its dequantize formula.

    ``value`` is element ``j``'s float as an expression over ``j``, the
    symbols, the fields (fp16/bf16/f32 fields as their float32 values) and
    tables of the spec module, evaluated as C evaluates it: integer
    arithmetic exact (``+ - * // %`` and the bit operators ``& | ^ << >>``),
    an integer meeting a float converted to float32, float literals float32,
    one float32 rounding per operation in Python's (= C's) left-to-right order.

    ``row_meta`` names the per-row metadata that precedes the blocks of a
    row (formats with ``row_meta_size > 0``), as ``(name, ctype)`` pairs in
    byte order, e.g. ``(("d", "f32"),)``, or ``(name, ctype, count)`` for an
    array: the formula reads them like fields.
    """

    symbols: tuple[Symbol, ...] = ()
    segments: tuple[Seg, ...] = ()
    value: str | None = None
    row_meta: tuple[tuple, ...] = ()


def _nibbles(field_name: str, low: str, high: str, symbol: str = "q") -> tuple[Seg, Seg]:
    """A byte array whose low and high nibbles hold bits 0-3 of two elements."""
    return (Seg(field_name, 0, 4, symbol, low), Seg(field_name, 4, 4, symbol, high))


def _ieee(field_name: str, bits: int, exponent: int) -> Layout:
    mantissa = bits - 1 - exponent
    return Layout(
        symbols=(Symbol("sign", 1, "1: negative"),
                 Symbol("exponent", exponent, f"biased by {2 ** (exponent - 1) - 1}; all ones: inf or NaN"),
                 Symbol("mantissa", mantissa, "fraction bits (implicit leading 1 unless the exponent is 0)")),
        segments=(Seg(field_name, bits - 1, 1, "sign", "0", unit=bits),
                  Seg(field_name, mantissa, exponent, "exponent", "0", unit=bits),
                  Seg(field_name, 0, mantissa, "mantissa", "0", unit=bits)),
        value="v")


_Q4 = Symbol("q", 4, "quant of element j")
_Q5 = Symbol("q", 5, "quant of element j")
_Q5_HIGH = Seg("qh", 0, 1, "q", "i", at=4, unit=32, repeat=32, stride=1)
_K_SCALES = (  # get_scale_min_k4: eight 6-bit scales and eight 6-bit mins in 12 bytes
    Seg("scales", 0, 6, "sc", "k", units=(0, 4)),
    Seg("scales", 6, 2, "sc", "k + 4", at=4, units=(0, 4)),
    Seg("scales", 0, 6, "m", "k - 4", units=(4, 8)),
    Seg("scales", 6, 2, "m", "k", at=4, units=(4, 8)),
    Seg("scales", 0, 4, "sc", "k - 4", units=(8, 12)),
    Seg("scales", 4, 4, "m", "k - 4", units=(8, 12)),
)
_K_SYMBOLS = (Symbol("sc", 6, "scale of the 32 elements 32s .. 32s+31"),
              Symbol("m", 6, "min of the 32 elements 32s .. 32s+31"))
_K_QUANTS_2BIT = Seg("qs", 0, 2, "q", "128*(k // 32) + 32*i + k % 32", repeat=4, stride=2)

# ik_llama.cpp's non-linear formats: a grid index per element, a shift bit per sub-block of 16 (in ``extra``)
def _IQ_INDEX(bits: int) -> Symbol:  # noqa: N802 - reads like the constants around it
    return Symbol("q", bits, "grid index of element j (into its sub-block's half of the grid)")


_IQ_SHIFT = Symbol("sh", 1, "shift bit of sub-block s: 1 selects the shifted half of the grid")
_IQ_EXTRA = Seg("extra", 0, 1, "sh", "i", unit=16, repeat=16, stride=1)
_IQK_SC = Symbol("sc", 6, "scale code of sub-block s (scale = sc - 32)")
_IQK_SCALES = (Seg("scales_l", 0, 4, "sc", "2*k"), Seg("scales_l", 4, 4, "sc", "2*k + 1"),
               Seg("scales_h", 0, 2, "sc", "4*k + i", at=4, repeat=4, stride=2))

#: Bit map and dequantize formula of each format, by name. A format without
#: an entry gets pages and explanations of its plain fields only.
LAYOUTS: dict[str, Layout] = {
    "f32": _ieee("v", 32, 8),
    "f16": _ieee("v", 16, 5),
    "bf16": _ieee("v", 16, 8),
    "q4_0": Layout((_Q4,), _nibbles("qs", "k", "k + 16"), "(q[j] - 8) * d"),
    "q4_1": Layout((_Q4,), _nibbles("qs", "k", "k + 16"), "q[j] * d + m"),
    "q5_0": Layout((_Q5,), _nibbles("qs", "k", "k + 16") + (_Q5_HIGH,), "(q[j] - 16) * d"),
    "q5_1": Layout((_Q5,), _nibbles("qs", "k", "k + 16") + (_Q5_HIGH,), "q[j] * d + m"),
    "q8_0": Layout(value="qs[j] * d"),
    "q8_1": Layout(value="qs[j] * d"),
    # K-quants: 256-element super-blocks (ggml-common.h, dequantize_row_*_K @ d99724f2)
    "q2_k": Layout(
        (Symbol("q", 2, "quant of element j"), Symbol("sc", 4, "scale of the 16 elements 16s .. 16s+15"),
         Symbol("m", 4, "min of the 16 elements 16s .. 16s+15")),
        (Seg("scales", 0, 4, "sc", "k"), Seg("scales", 4, 4, "m", "k"), _K_QUANTS_2BIT),
        "d * sc[j // 16] * q[j] - dmin * m[j // 16]"),
    "q3_k": Layout(
        (Symbol("q", 3, "quant of element j (bit 2 from hmask)"),
         Symbol("sc", 6, "scale of the 16 elements 16s .. 16s+15, offset 32")),
        (Seg("hmask", 0, 1, "q", "32*i + k", at=2, repeat=8, stride=1), _K_QUANTS_2BIT,
         Seg("scales", 0, 4, "sc", "k", units=(0, 8)), Seg("scales", 4, 4, "sc", "k + 8", units=(0, 8)),
         Seg("scales", 0, 2, "sc", "k - 8 + 4*i", at=4, units=(8, 12), repeat=4, stride=2)),
        "d * (sc[j // 16] - 32) * (q[j] - 4)"),
    "q4_k": Layout(
        (Symbol("q", 4, "quant of element j"),) + _K_SYMBOLS,
        _K_SCALES + _nibbles("qs", "64*(k // 32) + k % 32", "64*(k // 32) + 32 + k % 32"),
        "d * sc[j // 32] * q[j] - dmin * m[j // 32]"),
    "q5_k": Layout(
        (Symbol("q", 5, "quant of element j"),) + _K_SYMBOLS,
        _K_SCALES + (Seg("qh", 0, 1, "q", "32*i + k", at=4, repeat=8, stride=1),)
        + _nibbles("qs", "64*(k // 32) + k % 32", "64*(k // 32) + 32 + k % 32"),
        "d * sc[j // 32] * q[j] - dmin * m[j // 32]"),
    "q6_k": Layout(
        (Symbol("q", 6, "quant of element j, offset 32"),),
        _nibbles("ql", "128*(k // 64) + k % 64", "128*(k // 64) + k % 64 + 64")
        + (Seg("qh", 0, 2, "q", "128*(k // 32) + 32*i + k % 32", at=4, repeat=4, stride=2),),
        "d * scales[j // 16] * (q[j] - 32)"),
    "q8_k": Layout(value="d * qs[j]"),
    # mainline grid formats (ggml-common.h, dequantize_row_iq3_* @ 353b63b4 = d99724f2)
    "iq2_xxs": Layout(
        (Symbol("g", 8, "codebook index (into IQ2XXS_GRID) of the 8 elements 8g .. 8g+7"),
         Symbol("s", 7, "sign index of the 8 elements 8g .. 8g+7 (into KSIGNS_IQ2XS: bit e = sign of element 8g+e)"),
         Symbol("ls", 4, "scale code of the 32 elements 32b .. 32b+31")),
        (Seg("qs", 0, 8, "g", "4*k + i", unit=64, repeat=4, stride=8),
         Seg("qs", 32, 7, "s", "4*k + i", unit=64, repeat=4, stride=7),
         Seg("qs", 60, 4, "ls", "k", unit=64)),
        "d * (0.5 + ls[j // 32]) * 0.25 * (IQ2XXS_GRID[g[j // 8]] >> 8 * (j % 8) & 255)"
        " * (1 - 2 * (KSIGNS_IQ2XS[s[j // 8]] >> j % 8 & 1))"),
    "iq2_xs": Layout(
        (Symbol("g", 9, "codebook index (into IQ2XS_GRID) of the 8 elements 8g .. 8g+7"),
         Symbol("s", 7, "sign index of the 8 elements 8g .. 8g+7 (into KSIGNS_IQ2XS: bit e = sign of element 8g+e)"),
         Symbol("ls", 4, "scale code of the 16 elements 16b .. 16b+15")),
        (Seg("qs", 0, 9, "g", "k", unit=16), Seg("qs", 9, 7, "s", "k", unit=16),
         Seg("scales", 0, 4, "ls", "2*k"), Seg("scales", 4, 4, "ls", "2*k + 1")),
        "d * (0.5 + ls[j // 16]) * 0.25 * (IQ2XS_GRID[g[j // 8]] >> 8 * (j % 8) & 255)"
        " * (1 - 2 * (KSIGNS_IQ2XS[s[j // 8]] >> j % 8 & 1))"),
    "iq3_xxs": Layout(
        (Symbol("g", 8, "grid index (into IQ3XXS_GRID) of the 4 elements 4g .. 4g+3"),
         Symbol("s", 7, "sign index of the 8 elements 8t .. 8t+7 (into KSIGNS: bit e = sign of element 8t+e)"),
         Symbol("ls", 4, "scale code of the 32 elements 32b .. 32b+31")),
        (Seg("qs", 0, 8, "g", "k"),
         Seg("scales_and_signs", 0, 7, "s", "4*k + i", unit=32, repeat=4, stride=7),
         Seg("scales_and_signs", 28, 4, "ls", "k", unit=32)),
        "d * (0.5 + ls[j // 32]) * 0.5 * (IQ3XXS_GRID[g[j // 4]] >> 8 * (j % 4) & 255)"
        " * (1 - 2 * (KSIGNS[s[j // 8]] >> j % 8 & 1))"),
    "iq3_s": Layout(
        (Symbol("g", 9, "grid index (into IQ3S_GRID) of the 4 elements 4g .. 4g+3"),
         Symbol("sg", 1, "sign of element j (1: negative)"),
         Symbol("ls", 4, "scale code of the 32 elements 32b .. 32b+31")),
        (Seg("qs", 0, 8, "g", "k"), Seg("qh", 0, 1, "g", "8*k + i", at=8, repeat=8, stride=1),
         Seg("signs", 0, 1, "sg", "8*k + i", repeat=8, stride=1),
         Seg("scales", 0, 4, "ls", "2*k"), Seg("scales", 4, 4, "ls", "2*k + 1")),
        "d * (1 + 2 * ls[j // 32]) * (IQ3S_GRID[g[j // 4]] >> 8 * (j % 4) & 255) * (1 - 2 * sg[j])"),
    "iq2_s": Layout(
        (Symbol("g", 10, "codebook index (into IQ2S_GRID) of the 8 elements 8g .. 8g+7"),
         Symbol("sg", 1, "sign of element j (1: negative)"),
         Symbol("ls", 4, "scale code of the 16 elements 16b .. 16b+15")),
        (Seg("qs", 0, 8, "g", "k", units=(0, 32)), Seg("qs", 0, 1, "sg", "8*(k - 32) + i", units=(32, 64), repeat=8,
                                                      stride=1),
         Seg("qh", 0, 2, "g", "4*k + i", at=8, repeat=4, stride=2),
         Seg("scales", 0, 4, "ls", "2*k"), Seg("scales", 4, 4, "ls", "2*k + 1")),
        "d * (0.5 + ls[j // 16]) * 0.25 * (IQ2S_GRID[g[j // 8]] >> 8 * (j % 8) & 255) * (1 - 2 * sg[j])"),
    # mainline formats without grids (ggml-common.h, dequantize_row_* @ d99724f2)
    "iq4_nl": Layout((Symbol("q", 4, "index of element j into KVALUES_IQ4NL"),), _nibbles("qs", "k", "k + 16"),
                     "d * KVALUES_IQ4NL[q[j]]"),
    "iq4_xs": Layout(
        (Symbol("q", 4, "index of element j into KVALUES_IQ4NL"),
         Symbol("ls", 6, "scale of the 32 elements 32b .. 32b+31, offset 32")),
        _nibbles("qs", "32*(k // 16) + k % 16", "32*(k // 16) + 16 + k % 16")
        + (Seg("scales_l", 0, 4, "ls", "2*k"), Seg("scales_l", 4, 4, "ls", "2*k + 1"),
           Seg("scales_h", 0, 2, "ls", "i", at=4, unit=16, repeat=8, stride=2)),
        "d * (ls[j // 32] - 32) * KVALUES_IQ4NL[q[j]]"),
    # IQ1: an 11-bit index into the 2048-point ternary grid per group of 8 (ggml-common.h, dequantize_row_iq1_*)
    "iq1_s": Layout(
        (Symbol("g", 11, "grid index of the 8 elements 8g .. 8g+7"),
         Symbol("ls", 3, "scale code of the 32 elements 32b .. 32b+31 (scale 2*ls + 1)"),
         Symbol("sg", 1, "delta sign of block b (1: -0.125, 0: +0.125)")),
        (Seg("qs", 0, 8, "g", "k"), Seg("qh", 0, 3, "g", "4*k + i", at=8, unit=16, repeat=4, stride=3),
         Seg("qh", 12, 3, "ls", "k", unit=16), Seg("qh", 15, 1, "sg", "k", unit=16)),
        "d * (2 * ls[j // 32] + 1) * (IQ1S_GRID_VALUES[8 * g[j // 8] + j % 8] + (0.125 - 0.25 * sg[j // 32]))"),
    "iq1_m": Layout(
        (Symbol("g", 11, "grid index of the 8 elements 8g .. 8g+7"),
         Symbol("sg", 1, "delta sign of group g (1: -0.125, 0: +0.125)"),
         Symbol("ls", 3, "scale code of the 16 elements 16s .. 16s+15 (scale 2*ls + 1)"),
         Symbol("D", 16, "fp16 bits of the super-block scale")),
        (Seg("qs", 0, 8, "g", "k"), Seg("qh", 0, 3, "g", "2*k", at=8), Seg("qh", 3, 1, "sg", "2*k"),
         Seg("qh", 4, 3, "g", "2*k + 1", at=8), Seg("qh", 7, 1, "sg", "2*k + 1"),
         Seg("scales", 0, 3, "ls", "4*k + i", unit=16, repeat=4, stride=3))
        + tuple(Seg("scales", 12, 4, "D", "0", at=4 * w, unit=16, units=(w, w + 1)) for w in range(4)),
        "FP16_VALUES[D[0]] * (2 * ls[j // 16] + 1) * (IQ1S_GRID_VALUES[8 * g[j // 8] + j % 8] + (0.125 - 0.25 * sg[j // 8]))"),
    "tq1_0": Layout(
        (Symbol("b", 8, "byte k of qs then qh: up to 5 trits in base 3, scaled by 256/243"),),
        (Seg("qs", 0, 8, "b", "k"), Seg("qh", 0, 8, "b", "48 + k")),
        "(b[TRIT_BYTE[j]] * TRIT_POW3[j] % 256 * 3 // 256 - 1) * d"),
    "tq2_0": Layout((Symbol("q", 2, "code of element j"),), (_K_QUANTS_2BIT,), "(q[j] - 1) * d"),
    "mxfp4": Layout((Symbol("q", 4, "E2M1 code of element j"),), _nibbles("qs", "k", "k + 16"),
                    "KVALUES_MXFP4[q[j]] * E8M0_HALF[e]"),
    "nvfp4": Layout((Symbol("q", 4, "E2M1 code of element j"),),
                    _nibbles("qs", "16*(k // 8) + k % 8", "16*(k // 8) + 8 + k % 8"),
                    "KVALUES_MXFP4[q[j]] * UE4M3_HALF[d[j // 16]]"),
    "q1_0": Layout((Symbol("q", 1, "sign bit of element j: 1 for +d, 0 for -d"),),
                   (Seg("qs", 0, 1, "q", "8*k + i", repeat=8, stride=1),), "(2*q[j] - 1) * d"),
    "q2_0": Layout((Symbol("q", 2, "code of element j"),),
                   (Seg("qs", 0, 2, "q", "4*k + i", repeat=4, stride=2),), "(q[j] - 1) * d"),
    # ik_llama.cpp formats (ggml-common.h, dequantize_row_* in iqk_quantize.cpp @ 8337e4cd)
    "q6_0": Layout(
        (Symbol("q", 6, "quant of element j, offset 32"),),
        _nibbles("qs", "k", "k + 16") + (Seg("qh", 0, 2, "q", "k + 8*i", at=4, repeat=2, stride=4),
                                         Seg("qh", 2, 2, "q", "k + 8*i + 16", at=4, repeat=2, stride=4)),
        "(q[j] - 32) * d"),
    "iq1_bn": Layout(
        (Symbol("b", 8, "byte k of ql then extra: up to 5 trits in base 3, scaled by 256/243"),),
        (Seg("ql", 0, 8, "b", "k"), Seg("extra", 0, 8, "b", "12")),
        "d * (((b[TRIT_BYTE[j]] * TRIT_MULT[j] % 256 + (b[TRIT_BYTE[j]] * TRIT_MULT[j] % 256 >> 1)) >> 7) - 1)",
        row_meta=(("d", "f16"),)),
    "iq2_bn": Layout((Symbol("q", 2, "code of element j (value q - 1)"),),
                     (Seg("qs", 0, 2, "q", "k + 16*i", repeat=4, stride=2),), "d * (q[j] - 1)",
                     row_meta=(("d", "f32"),)),
    "iq2_k": Layout(
        (_IQ_INDEX(2), _IQ_SHIFT, Symbol("sc", 4, "scale code of sub-block s (scale = sc - 8)")),
        (_K_QUANTS_2BIT, _IQ_EXTRA, Seg("scales", 0, 4, "sc", "2*k"), Seg("scales", 4, 4, "sc", "2*k + 1")),
        "d * (sc[j // 16] - 8) * IQ2NL_VALUES[4 * sh[j // 16] + q[j]]"),
    "iq3_k": Layout(
        (_IQ_INDEX(3), _IQ_SHIFT, Symbol("m", 4, "scale magnitude code of sub-block s (|scale| = 2m + 1)"),
         Symbol("sg", 1, "sign of sub-block s's scale (1: negative)")),
        (_K_QUANTS_2BIT, Seg("qh", 0, 1, "q", "32*i + k", at=2, repeat=8, stride=1), _IQ_EXTRA,
         Seg("scales_h", 0, 1, "sg", "i", unit=16, repeat=16, stride=1),
         Seg("scales_l", 0, 4, "m", "2*k"), Seg("scales_l", 4, 4, "m", "2*k + 1")),
        "d * ((2 * m[j // 16] + 1) * (1 - 2 * sg[j // 16])) * IQ3NL_VALUES[8 * sh[j // 16] + q[j]]"),
    "iq4_k": Layout(
        (_IQ_INDEX(4), _IQ_SHIFT, _IQK_SC),
        _nibbles("qs", "32*(k // 16) + k % 16", "32*(k // 16) + 16 + k % 16") + (_IQ_EXTRA,) + _IQK_SCALES,
        "d * (sc[j // 16] - 32) * IQ4K_VALUES[16 * sh[j // 16] + q[j]]"),
    "iq5_k": Layout(
        (_IQ_INDEX(5), _IQ_SHIFT, _IQK_SC),
        _nibbles("qs", "64*(k // 32) + k % 32", "64*(k // 32) + 32 + k % 32")
        + (Seg("qh", 0, 1, "q", "32*i + k", at=4, repeat=8, stride=1), _IQ_EXTRA) + _IQK_SCALES,
        "d * (sc[j // 16] - 32) * IQ5NL_VALUES[32 * sh[j // 16] + q[j]]"),
    "iq6_k": Layout(
        (_IQ_INDEX(6), _IQ_SHIFT),
        _nibbles("qs", "64*(k // 32) + k % 32", "64*(k // 32) + 32 + k % 32")
        + (Seg("qh", 0, 2, "q", "128*(k // 32) + 32*i + k % 32", at=4, repeat=4, stride=2), _IQ_EXTRA),
        "d * scales[j // 16] * IQ6NL_VALUES[64 * sh[j // 16] + q[j]]"),
    "iq4_ks": Layout(
        (_IQ_INDEX(4),), _nibbles("qs", "32*(k // 16) + k % 16", "32*(k // 16) + 16 + k % 16"),
        "d * ((scales[j // 32] & 254) - 127) * IQ4K_VALUES[16 * (scales[j // 32] & 1) + q[j]]",
        row_meta=(("d", "f32"),)),
    "iq5_ks": Layout(
        (_IQ_INDEX(5),),
        _nibbles("qs", "64*(k // 32) + k % 32", "64*(k // 32) + 32 + k % 32")
        + (Seg("qh", 0, 1, "q", "32*i + k", at=4, repeat=8, stride=1),),
        "d * ((scales[j // 32] & 254) - 127) * IQ5NL_VALUES[32 * (scales[j // 32] & 1) + q[j]]",
        row_meta=(("d", "f32"),)),
    "iq4_kss": Layout(
        (Symbol("c", 15, "15-bit code of word k: nibbles c ^ (c << 1) of elements 2w, 2w+16, 2w+1, 2w+17 of "
                         "sub-block k // 8 (w = k % 8)"),
         Symbol("s", 1, "bit k % 8 of sub-block k // 8's scale byte (bit 0: shift; bits 1-7: l)")),
        (Seg("qs", 1, 15, "c", "k", unit=16), Seg("qs", 0, 1, "s", "k", unit=16)),
        "d * ((" + " | ".join(f"s[8 * (j // 32) + {t}] << {t}" for t in range(1, 8)) + ") - 127)"
        " * IQ4K_VALUES[16 * s[8 * (j // 32)] + ((c[8 * (j // 32) + j % 16 // 2] ^ (c[8 * (j // 32) + j % 16 // 2]"
        " << 1)) >> 4 * (2 * (j % 2) + j % 32 // 16) & 15)]",
        row_meta=(("d", "f32"),)),
    "iq2_ks": Layout(
        (_IQ_INDEX(2), _IQ_SHIFT, Symbol("sc", 5, "scale code of sub-block s (scale = sc - 16)")),
        (_K_QUANTS_2BIT, Seg("extra", 0, 1, "sh", "i", unit=16, repeat=8, stride=1),
         Seg("extra", 8, 1, "sc", "i", at=4, unit=16, repeat=8, stride=1),
         Seg("scales", 0, 4, "sc", "2*k"), Seg("scales", 4, 4, "sc", "2*k + 1")),
        "d * (sc[j // 32] - 16) * IQ2NL_VALUES[4 * sh[j // 32] + q[j]]",
        row_meta=(("d", "f16"),)),
    "iq3_ks": Layout(
        (_IQ_INDEX(3), _IQ_SHIFT, Symbol("sc", 5, "scale code of sub-block s (scale = sc - 16)")),
        (_K_QUANTS_2BIT, Seg("qh", 0, 1, "q", "32*i + k", at=2, repeat=8, stride=1),
         Seg("extra", 0, 1, "sc", "i", at=4, unit=16, repeat=8, stride=1),
         Seg("extra", 8, 1, "sh", "i", unit=16, repeat=8, stride=1),
         Seg("scales", 0, 4, "sc", "k"), Seg("scales", 4, 4, "sc", "k + 4")),
        "d * (sc[j // 32] - 16) * IQ3NL_VALUES[8 * sh[j // 32] + q[j]]",
        row_meta=(("d", "f16"),)),
    "iq2_kl": Layout(
        (Symbol("p", 5, "grid point of the pair of elements 2p, 2p+1 (into IQ2KL_VALUES)"),
         Symbol("sc", 6, "scale code of sub-block s (scale = sc - 32)")),
        (Seg("qs", 0, 4, "p", "32*(k // 16) + k % 16"), Seg("qs", 4, 4, "p", "32*(k // 16) + 16 + k % 16"),
         Seg("qh", 0, 1, "p", "16*i + k", at=4, repeat=8, stride=1),
         Seg("scales_l", 0, 4, "sc", "k"), Seg("scales_l", 4, 4, "sc", "k + 4"),
         Seg("scales_h", 0, 2, "sc", "i", at=4, unit=16, repeat=8, stride=2)),
        "d * (sc[j // 32] - 32) * GRID_VALUES[2 * p[j // 2] + j % 2]",
        row_meta=(("d", "f16"),)),
    # trellis formats: the formulas read the spec modules' codebooks (the generator's outputs for every seed)
    "iq1_kt": Layout(
        (Symbol("s", 13, "trellis seed of the 8 elements 8s .. 8s+7"),
         Symbol("sc", 4, "scale code of sub-block b (into IQ4K_VALUES)")),
        (Seg("sh", 0, 4, "sc", "k"), Seg("sh", 4, 1, "s", "4*k + i", at=12, repeat=4, stride=1),
         Seg("ql", 0, 8, "s", "k"), Seg("qh", 0, 4, "s", "k", at=8), Seg("qh", 4, 4, "s", "k + 16", at=8)),
        "d * IQ4K_VALUES[sc[j // 32]] * CODEBOOK[8 * s[j // 8] + j % 8]",
        row_meta=(("d", "f32"),)),
    "iq2_kt": Layout(
        (Symbol("s", 16, "trellis seed of the 8 elements 8s .. 8s+7"),
         Symbol("sc", 4, "scale code of sub-block b (into IQ4K_VALUES)")),
        (Seg("scales", 0, 4, "sc", "k"), Seg("scales", 4, 4, "sc", "k + 4"), Seg("ql", 0, 16, "s", "k", unit=16)),
        "d * IQ4K_VALUES[sc[j // 32]] * CODEBOOK[8 * s[j // 8] + j % 8]",
        row_meta=(("d", "f32"),)),
    "iq3_kt": Layout(
        (Symbol("s", 16, "trellis seed of the 8 elements 8s .. 8s+7 (absolute values)"),
         Symbol("sc", 4, "scale of sub-block b"), Symbol("sg", 1, "sign of element j (1: negative)")),
        (Seg("scales", 0, 4, "sc", "k"), Seg("scales", 4, 4, "sc", "k + 4"), Seg("ql", 0, 16, "s", "k", unit=16),
         Seg("qh", 0, 1, "sg", "32*i + k", repeat=8, stride=1)),
        "d * sc[j // 32] * ABS_CODEBOOK[8 * s[j // 8] + j % 8] * (1 - 2 * sg[j])",
        row_meta=(("d", "f32"),)),
    "iq4_kt": Layout(
        (Symbol("s", 15, "trellis seed of the 4 elements 4s .. 4s+3"),
         Symbol("sc", 7, "scale code of sub-block b (scale = sc - 64)"),
         Symbol("cb", 1, "codebook of sub-block b (1: generator offset 4096 + 32768)")),
        (Seg("shb", 0, 1, "cb", "k", unit=32), Seg("shb", 1, 7, "sc", "k", unit=32),
         Seg("shb", 8, 3, "s", "8*k + i", at=12, unit=32, repeat=8, stride=3),
         Seg("ql", 0, 8, "s", "k"), Seg("qh", 0, 4, "s", "k", at=8), Seg("qh", 4, 4, "s", "k + 32", at=8)),
        "d * (sc[j // 32] - 64) * CODEBOOKS[4 * (32768 * cb[j // 32] + s[j // 4]) + j % 4]",
        row_meta=(("d", "f32"),)),
    # Q8_K64 (ik_llama.cpp, activation only): a row header of 4 lane scales and 4 lane sums, then int8 quants
    "q8_k64": Layout(value="d[(j % 16) // 4] * qs[j]", row_meta=(("d", "f32", 4), ("s", "f32", 4))),
    "q1_0_g128": Layout((Symbol("q", 1, "sign bit of element j: 1 for +d, 0 for -d"),),
                        (Seg("qs", 0, 1, "q", "8*k + i", repeat=8, stride=1),), "(2*q[j] - 1) * d"),
}

_CTYPE_BYTES = {"u8": 1, "i8": 1, "u16": 2, "i16": 2, "u32": 4, "f16": 2, "bf16": 2, "f32": 4}
_FLOAT_CTYPES = ("f16", "bf16", "f32")


class LayoutError(ValueError):
    """A bit map in ``LAYOUTS`` that does not fit its format (a bug in the data)."""


@dataclass(frozen=True)
class Source:
    """Where some bits of a symbol element come from."""

    field: str
    unit: int
    k: int
    bit: int
    width: int
    at: int

    def describe(self, fields: dict) -> str:
        return f"{unit_name(self.field, self.unit, self.k, fields)} {_bit_range(self.bit, self.width)}"


@dataclass(frozen=True)
class BitMap:
    """A layout resolved against a format: every segment expanded."""

    layout: Layout
    counts: dict[str, int]                 # symbol -> number of elements
    sources: dict[str, list[list[Source]]]  # symbol -> element -> sources, lowest bit first


def _eval_index(expr: str, k: int, i: int) -> int:
    value = eval(compile(expr, "<index>", "eval"), {"__builtins__": {}}, {"k": k, "i": i})  # data of this module
    return int(value)


def _field_table(fmt) -> dict:
    return {f.name: f for f in fmt.fields}


def resolve_layout(fmt, layout: Layout | None = None) -> BitMap:
    """Expand ``LAYOUTS[fmt.name]`` against ``fmt`` and check it: each segment
    inside its field and unit, no field bit claimed twice, every bit of every
    symbol element stated exactly once."""
    return _resolve(fmt, LAYOUTS.get(fmt.name, Layout()) if layout is None else layout)


@lru_cache(maxsize=None)
def _resolve(fmt, layout: Layout) -> BitMap:
    fields = _field_table(fmt)
    meta_bytes = sum(_CTYPE_BYTES[entry[1]] * (entry[2] if len(entry) > 2 else 1) for entry in layout.row_meta)
    if layout.row_meta and meta_bytes != fmt.row_meta_size:
        raise LayoutError(f"{fmt.name}: the row metadata {layout.row_meta} is {meta_bytes} bytes, "
                          f"the format has {fmt.row_meta_size}")
    symbols = {s.name: s for s in layout.symbols}
    claimed: dict[tuple[str, int], str] = {}
    found: dict[str, dict[int, list[Source]]] = {name: {} for name in symbols}
    unit_of: dict[str, int] = {}
    for seg in layout.segments:
        if seg.field not in fields:
            raise LayoutError(f"{fmt.name}: bit map names field {seg.field!r}, which FORMAT lacks")
        if unit_of.setdefault(seg.field, seg.unit) != seg.unit:
            raise LayoutError(f"{fmt.name}: the segments of field {seg.field} must read it in one unit size")
        if seg.symbol not in symbols:
            raise LayoutError(f"{fmt.name}: bit map names symbol {seg.symbol!r}, which the layout does not declare")
        total_bits = fields[seg.field].nbytes * 8
        if total_bits % seg.unit:
            raise LayoutError(f"{fmt.name}: field {seg.field} ({total_bits} bits) is not a whole number of "
                              f"{seg.unit}-bit units")
        start, stop = seg.units or (0, total_bits // seg.unit)
        if not 0 <= start < stop <= total_bits // seg.unit:
            raise LayoutError(f"{fmt.name}: units {seg.units} of {seg.field} are outside its "
                              f"{total_bits // seg.unit} units")
        for k in range(start, stop):
            for i in range(seg.repeat):
                bit = seg.bit + seg.stride * i
                if bit < 0 or bit + seg.width > seg.unit:
                    raise LayoutError(f"{fmt.name}: {seg} reaches outside its {seg.unit}-bit unit")
                for b in range(bit, bit + seg.width):
                    key = (seg.field, k * seg.unit + b)
                    if key in claimed:
                        raise LayoutError(f"{fmt.name}: bit {key[1]} of {seg.field} is claimed twice")
                    claimed[key] = seg.symbol
                index = _eval_index(seg.index, k, i)
                if index < 0:
                    raise LayoutError(f"{fmt.name}: {seg} gives a negative index at k={k}, i={i}")
                found[seg.symbol].setdefault(index, []).append(
                    Source(seg.field, seg.unit, k, bit, seg.width, seg.at))
    counts, sources = {}, {}
    for name, by_index in found.items():
        count = max(by_index) + 1 if by_index else 0
        per_element = []
        for index in range(count):
            srcs = sorted(by_index.get(index, []), key=lambda s: s.at)
            covered = [b for s in srcs for b in range(s.at, s.at + s.width)]
            if sorted(covered) != list(range(symbols[name].bits)):
                raise LayoutError(f"{fmt.name}: bits {sorted(covered)} of {name}[{index}] are stated, "
                                  f"expected each of 0..{symbols[name].bits - 1} exactly once")
            per_element.append(srcs)
        counts[name], sources[name] = count, per_element
    return BitMap(layout, counts, sources)


def _bit_range(lo: int, width: int) -> str:
    return f"bit {lo}" if width == 1 else f"bits {lo}-{lo + width - 1}"


def unit_name(field_name: str, unit: int, k: int | str, fields: dict) -> str:
    """How unit ``k`` of a field is named: ``qs[3]``, ``qh`` (a single u32),
    ``qs byte 3`` or ``qs 64-bit word 3``."""
    f = fields[field_name]
    elem_bits = _CTYPE_BYTES[f.ctype] * 8
    if unit == elem_bits:
        return field_name if f.count == 1 else f"{field_name}[{k}]"
    if unit == 8:
        return f"{field_name} byte {k}"
    return f"{field_name} {unit}-bit word {k}"


def _pretty_expr(expr: str) -> str:
    """``128*(k // 32) + 32*i`` as written, with single spaces around + and -."""
    return re.sub(r"\s*([+-])\s*", r" \1 ", expr).strip()


@dataclass(frozen=True)
class BitRow:
    """One line of the bit-map table."""

    field: str
    where: str   # "qs[k], k = 0..15"
    bits: str    # "bits 0-3" or "bits 2i..2i+1, i = 0..3"
    holds: str   # "bits 0-3 of q[k + 16]"


def bitmap_rows(fmt, layout: Layout | None = None) -> list[BitRow]:
    layout = LAYOUTS.get(fmt.name, Layout()) if layout is None else layout
    fields = _field_table(fmt)
    rows = []
    for seg in layout.segments:
        total_units = fields[seg.field].nbytes * 8 // seg.unit
        start, stop = seg.units or (0, total_units)
        if stop - start == 1:
            where = unit_name(seg.field, seg.unit, start, fields)
            expr = _with_k(seg.index, start)
        else:
            where = f"{unit_name(seg.field, seg.unit, 'k', fields)}, k = {start}..{stop - 1}"
            expr = seg.index
        if seg.repeat > 1:
            lo = _affine(seg.bit, seg.stride)
            hi = _affine(seg.bit + seg.width - 1, seg.stride)
            bits = (f"bit {lo}" if seg.width == 1 else f"bits {lo}..{hi}") + f", i = 0..{seg.repeat - 1}"
        else:
            bits = _bit_range(seg.bit, seg.width)
        symbol_count = {s.name: s for s in layout.symbols}
        target = seg.symbol if _is_scalar_symbol(layout, seg.symbol) else f"{seg.symbol}[{_pretty_expr(expr)}]"
        whole = symbol_count[seg.symbol].bits == seg.width
        rows.append(BitRow(seg.field, where, bits, target if whole else f"{_bit_range(seg.at, seg.width)} of {target}"))
    return rows


def _with_k(expr: str, k: int) -> str:
    """``expr`` with the unit index ``k`` replaced by a number."""
    class Bind(ast.NodeTransformer):
        def visit_Name(self, node):
            return ast.Constant(k) if node.id == "k" else node
    return ast.unparse(Bind().visit(ast.parse(expr, mode="eval")))


def _affine(base: int, stride: int) -> str:
    term = "i" if stride == 1 else f"{stride}i"
    return term if base == 0 else f"{term}+{base}"


def _is_scalar_symbol(layout: Layout, name: str) -> bool:
    return all(seg.index.strip() == "0" for seg in layout.segments if seg.symbol == name)


# --------------------------------------------------------------------------- the value formula

@dataclass
class _Val:
    """A value of the formula language: an int64 or float32 array (or scalar)."""

    data: np.ndarray
    is_float: bool


def _as_f32(v: _Val) -> np.ndarray:
    if v.is_float:
        return v.data
    if np.any(np.abs(v.data) >= 1 << 24):
        raise LayoutError("an integer in a dequantize formula is too large to convert to float32 exactly")
    return v.data.astype(np.float32)


_INT_OPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.FloorDiv: np.floor_divide,
            ast.Mod: np.mod, ast.BitAnd: np.bitwise_and, ast.BitOr: np.bitwise_or, ast.BitXor: np.bitwise_xor,
            ast.LShift: np.left_shift, ast.RShift: np.right_shift}
_FLOAT_OPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}
_OP_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
            ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>"}
#: Python's (and, for these operators, the formula's) binding strength
_OP_PREC = {ast.BitOr: 1, ast.BitXor: 2, ast.BitAnd: 3, ast.LShift: 4, ast.RShift: 4, ast.Add: 5, ast.Sub: 5,
            ast.Mult: 6, ast.Div: 6, ast.FloorDiv: 6, ast.Mod: 6}


class Formula:
    """A dequantize formula over ``j``, evaluated for all elements at once,
    and rendered with the values of one element substituted."""

    def __init__(self, expr: str):
        self.expr = expr
        self.tree = ast.parse(expr, mode="eval").body

    def evaluate(self, names: dict, j) -> np.ndarray:
        with np.errstate(all="ignore"):
            v = self._eval(self.tree, names, np.asarray(j, dtype=np.int64))
        return _as_f32(v)

    def _eval(self, node, names, j) -> _Val:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            if isinstance(node.value, int):
                return _Val(np.int64(node.value), False)
            return _Val(np.float32(node.value), True)
        if isinstance(node, ast.Name):
            if node.id == "j":
                return _Val(j, False)
            return _lookup(names, node.id)
        if isinstance(node, ast.Subscript):
            base = self._eval(node.value, names, j)
            index = self._eval(node.slice, names, j)
            if index.is_float or base.data.ndim == 0:
                raise LayoutError(f"bad subscript in {self.expr!r}")
            return _Val(base.data[index.data], base.is_float)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = self._eval(node.operand, names, j)
            return _Val(np.negative(v.data), v.is_float)
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, names, j), self._eval(node.right, names, j)
            op = type(node.op)
            if not left.is_float and not right.is_float and op in _INT_OPS:
                return _Val(_INT_OPS[op](left.data, right.data), False)
            if op in _FLOAT_OPS:
                return _Val(_FLOAT_OPS[op](_as_f32(left), _as_f32(right)).astype(np.float32), True)
        raise LayoutError(f"unsupported construct in dequantize formula {self.expr!r}: {ast.dump(node)}")

    def substituted(self, names: dict, j: int) -> str:
        """The formula with every name and subscript replaced by its value at
        element ``j`` (a formula that is one name stays as written)."""
        if isinstance(self.tree, ast.Name):
            return self.expr
        def show(node, parent_prec: int = 0) -> str:
            if isinstance(node, ast.Constant):
                return repr(node.value)
            if isinstance(node, (ast.Name, ast.Subscript)):
                v = self._eval(node, names, np.int64(j))
                return format_value(v.data, v.is_float)
            if isinstance(node, ast.UnaryOp):
                return "-" + show(node.operand, 7)
            if isinstance(node, ast.BinOp):
                prec = _OP_PREC[type(node.op)]
                text = f"{show(node.left, prec)} {_OP_TEXT[type(node.op)]} {show(node.right, prec + 1)}"
                return f"({text})" if prec < parent_prec else text
            raise LayoutError(f"unsupported construct in {self.expr!r}")
        return show(self.tree)

    def subscripts(self) -> list[tuple[str, ast.AST]]:
        """Every ``name[index]`` of the formula, in reading order."""
        found = [(n.value.id, n.slice) for n in ast.walk(self.tree)
                 if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)]
        return sorted(found, key=lambda t: (t[1].lineno, t[1].col_offset))

    def names(self) -> list[str]:
        seen = []
        for n in ast.walk(self.tree):
            if isinstance(n, ast.Name) and n.id != "j" and n.id not in seen:
                seen.append(n.id)
        return seen


def _lookup(names: dict, name: str) -> _Val:
    if name not in names:
        raise LayoutError(f"dequantize formula names {name!r}, which is neither a field, a symbol nor a table")
    value = names[name]
    arr = np.asarray(value)
    is_float = arr.dtype.kind == "f"
    return _Val(arr.astype(np.float32) if is_float else arr.astype(np.int64), is_float)


# --------------------------------------------------------------------------- numbers as text

def format_float(x) -> str:
    """The shortest decimal that reads back as the same float32."""
    x = np.float32(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "-inf" if x < 0 else "inf"
    if x != 0 and not (1e-4 <= abs(x) < 1e7):
        return np.format_float_scientific(x, unique=True, trim="-", exp_digits=2)
    return np.format_float_positional(x, unique=True, trim="0")


def format_value(v, is_float: bool) -> str:
    return format_float(v) if is_float else str(int(v))


def hex_lines(data: bytes, width: int = 16) -> list[str]:
    """``offset: xx xx ...``, ``width`` bytes a line."""
    return [f"{at:04x}: " + " ".join(f"{b:02x}" for b in data[at:at + width]) for at in range(0, len(data), width)]


# --------------------------------------------------------------------------- decoding a block

@dataclass(frozen=True)
class FieldValue:
    """One field of a decoded block: where it is, its bytes and its values."""

    name: str
    ctype: str
    count: int
    offset: int
    raw: bytes
    values: tuple          # ints, or float32 values of fp16/bf16/f32 fields
    bits: tuple            # the stored bit patterns of float fields (ints), else ()

    @property
    def is_float(self) -> bool:
        return self.ctype in _FLOAT_CTYPES


@dataclass(frozen=True)
class Step:
    """One element traced from bytes to float."""

    j: int
    sources: tuple[str, ...]   # "q[17] = 0x15 = 21: qs[1] bits 4-7 -> bits 0-3, qh bit 17 -> bit 4"
    formula: str               # "(21 - 16) * 0.0123"
    value: str


@dataclass(frozen=True)
class Decoded:
    """A block decoded: fields, packed quantities, traced elements, floats."""

    data: bytes                # the row metadata (if any) and the block, as given
    fields: tuple[FieldValue, ...]
    symbols: dict              # symbol -> tuple of ints
    steps: tuple[Step, ...]
    values: np.ndarray         # float32, from the spec's dequantize
    formula_values: np.ndarray | None  # float32, from the bit map and formula (None without a formula)
    row_meta: tuple[FieldValue, ...] = ()  # the row metadata before the block, as LAYOUTS names it

    def formula_agrees(self) -> bool:
        if self.formula_values is None:
            return True
        a, b = self.values.view(np.uint32), self.formula_values.view(np.uint32)
        both_nan = np.isnan(self.values) & np.isnan(self.formula_values)  # NaN payloads are not specified
        return bool(np.all((a == b) | both_nan))


def _field_values(fmt, block: bytes) -> list[FieldValue]:
    rec = np.frombuffer(block, dtype=fmt.dtype, count=1)[0]
    out = []
    for f, (name, offset) in zip(fmt.fields, fmt.offsets().items()):
        raw = block[offset:offset + f.nbytes]
        stored = np.atleast_1d(rec[name])
        if f.ctype == "f16":
            bits = stored.astype(np.uint16)
            vals = bits.view(np.float16).astype(np.float32)
        elif f.ctype == "bf16":
            bits = stored.astype(np.uint16)
            vals = (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
        elif f.ctype == "f32":
            vals = stored.astype(np.float32)
            bits = vals.view(np.uint32)
        else:
            bits, vals = None, stored.astype(np.int64)
        out.append(FieldValue(name, f.ctype, f.count, offset, bytes(raw), tuple(vals.tolist()) if bits is None
                              else tuple(np.float32(v) for v in vals),
                              () if bits is None else tuple(int(b) for b in bits)))
    return out


def _row_meta_values(layout: Layout, meta: bytes) -> list[FieldValue]:
    """The row metadata named by ``layout.row_meta``, read from its bytes."""
    out, at = [], 0
    for name, ctype, *count in layout.row_meta:
        count = count[0] if count else 1
        size = _CTYPE_BYTES[ctype]
        raw = bytes(meta[at:at + size * count])
        if ctype == "f32":
            values = np.frombuffer(raw, dtype="<f4")
        elif ctype == "f16":
            values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            raise LayoutError(f"row metadata {name!r}: unsupported type {ctype}")
        bits = tuple(int.from_bytes(raw[i:i + size], "little") for i in range(0, size * count, size))
        out.append(FieldValue(name, ctype, count, at, raw, tuple(np.float32(v) for v in values), bits))
        at += size * count
    return out


@lru_cache(maxsize=None)
def _gather_plan(fmt, layout: Layout) -> dict[str, tuple[np.ndarray, ...]]:
    """Per symbol, one row per source: element, first byte in the block, unit
    bytes, bit, width, target bit (so that decoding is a few array ops)."""
    bitmap, offsets = _resolve(fmt, layout), fmt.offsets()
    plan = {}
    for name, per_element in bitmap.sources.items():
        rows = [(index, offsets[s.field] + s.k * s.unit // 8, s.unit // 8, s.bit, s.width, s.at)
                for index, srcs in enumerate(per_element) for s in srcs]
        plan[name] = tuple(np.array(col, dtype=np.int64).reshape(-1) for col in zip(*rows)) if rows else None
    return plan


def _symbol_values(block: bytes, fmt, bitmap: BitMap) -> dict[str, np.ndarray]:
    data = np.frombuffer(block, dtype=np.uint8).astype(np.uint64)
    out = {}
    symbols = {s.name: s for s in bitmap.layout.symbols}
    for name, plan in _gather_plan(fmt, bitmap.layout).items():
        values = np.zeros(bitmap.counts[name], dtype=np.int64)
        if plan is not None:
            element, first, nbytes, bit, width, at = plan
            word = np.zeros(element.shape, dtype=np.uint64)
            for b in range(int(nbytes.max())):  # little-endian units of up to 8 bytes
                inside = b < nbytes
                word |= np.where(inside, data[np.where(inside, first + b, 0)], 0).astype(np.uint64) << np.uint64(8 * b)
            part = (word >> bit.astype(np.uint64)) & ((np.uint64(1) << width.astype(np.uint64)) - np.uint64(1))
            np.bitwise_or.at(values, element, part.astype(np.int64) << at)
        sym = symbols[name]
        if sym.signed:
            values = np.where(values >> (sym.bits - 1) & 1, values - (1 << sym.bits), values)
        out[name] = values
    return out


def formula_names(module: ModuleType, fields: list[FieldValue], symbols: dict) -> dict:
    """What a dequantize formula can name: the module's array tables, the fields, the symbols."""
    names = {k: v for k, v in vars(module).items() if isinstance(v, np.ndarray)}
    for fv in fields:
        if fv.is_float:
            vals = np.array(fv.values, dtype=np.float32)
        else:
            vals = np.array(fv.values, dtype=np.int64)
        names[fv.name] = vals[0] if fv.count == 1 else vals
    names.update(symbols)
    return names


def trace_elements(block_size: int) -> list[int]:
    """The elements a worked example traces: first, one past the middle, last."""
    return sorted({0, block_size // 2 + 1 if block_size > 2 else 0, block_size - 1})


def decode(module: ModuleType, data: bytes, trace: list[int] | None = None) -> Decoded:
    """Decode one block (preceded by its row's metadata, if the format has
    any) of ``module``'s format: fields, bit-mapped symbols, the traced
    elements and the floats. The floats are the spec's ``dequantize``; the
    bit map and formula are evaluated beside it (``formula_values``)."""
    fmt = module.FORMAT
    data = bytes(data)
    expected = fmt.row_meta_size + fmt.type_size
    if len(data) != expected:
        meta = f"{fmt.row_meta_size} bytes of row metadata and " if fmt.row_meta_size else ""
        raise ShapeError(f"{fmt.name}: a block is {meta}{fmt.type_size} bytes, got {len(data)}")
    block = data[fmt.row_meta_size:]
    bitmap = resolve_layout(fmt)
    fields = _field_values(fmt, block)
    row_meta = _row_meta_values(bitmap.layout, data[:fmt.row_meta_size])
    symbols = _symbol_values(block, fmt, bitmap)
    with np.errstate(all="ignore"):
        values = np.asarray(module.dequantize(np.frombuffer(data, dtype=np.uint8)[None, :]), dtype=np.float32)[0]
    formula_values, steps = None, []
    if bitmap.layout.value is not None:
        formula = Formula(bitmap.layout.value)
        names = formula_names(module, row_meta + fields, symbols)
        formula_values = np.broadcast_to(formula.evaluate(names, np.arange(fmt.block_size)), (fmt.block_size,))
        scalar_symbols = [name for name, count in bitmap.counts.items() if count == 1]
        field_map, offsets = _field_table(fmt), fmt.offsets()
        symbol_map = {s.name: s for s in bitmap.layout.symbols}
        for j in trace_elements(fmt.block_size) if trace is None else trace:
            lines = []
            used = [(name, int(formula._eval(node, names, np.int64(j)).data)) for name, node in formula.subscripts()
                    if name in bitmap.sources or name in field_map]
            if not any(name in bitmap.sources for name, _ in used):
                used += [(name, 0) for name in scalar_symbols]
            for name, index in used:
                if name in bitmap.sources:
                    line = _describe_symbol(name, index, symbols[name][index], bitmap.sources[name][index],
                                            field_map, symbol_map[name])
                else:
                    line = _describe_element(field_map[name], offsets[name], index, block)
                if line not in lines:
                    lines.append(line)
            steps.append(Step(j, tuple(lines), formula.substituted(names, j), format_float(formula_values[j])))
    return Decoded(data, tuple(fields), {k: tuple(int(x) for x in v) for k, v in symbols.items()},
                   tuple(steps), values, formula_values, tuple(row_meta))


def _describe_element(f, offset: int, index: int, block: bytes) -> str:
    """``qs[17] = -17: byte 19 (0xef)`` for an element of a plain integer field."""
    size = _CTYPE_BYTES[f.ctype]
    at = offset + index * size
    raw = block[at:at + size]
    value = int.from_bytes(raw, "little", signed=f.ctype.startswith("i"))
    where = f"byte {at}" if size == 1 else f"bytes {at}-{at + size - 1}"
    return f"{f.name}[{index}] = {value}: {where} ({raw.hex(' ')})"


def _describe_symbol(name: str, index: int, value: int, sources: list[Source], fields: dict, sym: Symbol) -> str:
    parts = []
    for s in sources:
        where = s.describe(fields)
        parts.append(where if (s.at == 0 and s.width == sym.bits) else f"{where} -> {_bit_range(s.at, s.width)}")
    shown = str(value) if sym.signed and value < 0 else f"{value:#x} = {value}" if value > 9 else str(value)
    return f"{name}[{index}] = {shown}: " + ", ".join(parts)


# --------------------------------------------------------------------------- the worked example

#: The worked example's input: x_j = ((7919*j + 13) mod 1009 - 504) / 97 in float32,
#: spread over about [-5.2, 5.2] without ties or structure, the same on every machine.
EXAMPLE_INPUT = "x[j] = ((7919*j + 13) mod 1009 - 504) / 97, in float32"


def example_input(block_size: int) -> np.ndarray:
    j = np.arange(block_size, dtype=np.int64)
    return ((j * 7919 + 13) % 1009 - 504).astype(np.float32) / np.float32(97)


def example_imatrix(fmt) -> np.ndarray | None:
    """Only formats that require an importance matrix get one (all ones)."""
    return np.ones(fmt.block_size, dtype=np.float32) if fmt.imatrix == "required" else None


@dataclass(frozen=True)
class Example:
    x: np.ndarray
    imatrix: np.ndarray | None
    decoded: Decoded


def worked_example(module: ModuleType) -> Example:
    """Quantize :func:`example_input` with the spec and decode the block."""
    fmt = module.FORMAT
    x = example_input(fmt.block_size)
    im = example_imatrix(fmt)
    with np.errstate(all="ignore"):
        q = np.asarray(module.quantize(x[None, :], im), dtype=np.uint8)[0]
    decoded = decode(module, q.tobytes())
    if not decoded.formula_agrees():
        raise LayoutError(f"{fmt.name}: the bit map and formula in LAYOUTS decode the worked example "
                          f"differently from the spec's dequantize")
    return Example(x, im, decoded)


# --------------------------------------------------------------------------- reading a block

def parse_hex(fmt, text: str) -> bytes:
    """A block given as hex digits, optionally separated by spaces, colons,
    commas or ``0x`` prefixes."""
    cleaned = re.sub(r"0x|[\s:,_-]", "", text.strip(), flags=re.IGNORECASE)
    if not re.fullmatch(r"[0-9a-fA-F]*", cleaned) or len(cleaned) % 2:
        bad = next((c for c in cleaned if c not in "0123456789abcdefABCDEF"), None)
        why = f"character {bad!r}" if bad else f"an odd number of digits ({len(cleaned)})"
        raise HexError(f"{fmt.name}: a block in hex must be pairs of hex digits, got {why}")
    data = bytes.fromhex(cleaned)
    expected = fmt.row_meta_size + fmt.type_size
    if len(data) != expected:
        meta = f"{fmt.row_meta_size} bytes of row metadata and " if fmt.row_meta_size else ""
        raise ShapeError(f"{fmt.name}: a block is {meta}{fmt.type_size} bytes ({2 * expected} hex digits), "
                         f"got {len(data)} bytes")
    return data


def block_from_gguf(fmt, path: str, tensor: str, block: int) -> tuple[bytes, dict]:
    """Block ``block`` (row-major over the whole tensor) of ``tensor`` in the
    GGUF file at ``path``, read with gguf-py's ``GGUFReader``; returns its
    bytes (with its row's metadata first, if the format has any) and where
    it was found."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # gguf is a test extra, not a dependency
        raise GGUFError("reading GGUF files needs the gguf package (pip install gguf)", path=path) from exc
    try:
        reader = GGUFReader(path)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise GGUFError(f"{fmt.name}: cannot read {str(path)!r} as GGUF: {exc}", path=path) from exc
    tensors = {t.name: t for t in reader.tensors}
    if tensor not in tensors:
        names = sorted(tensors)
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} tensors)" if len(names) > 8 else "")
        raise GGUFError(f"{fmt.name}: {str(path)!r} has no tensor {tensor!r}; it has {shown or 'no tensors'}",
                        path=path, tensor=tensor)
    t = tensors[tensor]
    type_id = int(t.tensor_type)
    if fmt.origin != "ggml" or type_id != fmt.type_id:
        type_name = getattr(t.tensor_type, "name", str(type_id))
        raise GGUFError(f"{fmt.name}: tensor {tensor!r} is stored as {type_name} (ggml type {type_id}), "
                        f"not {fmt.name} ({fmt.origin} type {fmt.type_id})", path=path, tensor=tensor)
    ne0 = int(t.shape[0])
    n_elements = int(t.n_elements)
    per_row = ne0 // fmt.block_size
    n_blocks = n_elements // fmt.block_size
    if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < n_blocks:
        raise ShapeError(f"{fmt.name}: tensor {tensor!r} has {n_blocks} blocks (0..{n_blocks - 1}), "
                         f"got block {block!r}")
    raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
    row, within = divmod(block, per_row)
    row_start = row * fmt.row_bytes(ne0)
    start = row_start + fmt.row_meta_size + within * fmt.type_size
    meta = raw[row_start:row_start + fmt.row_meta_size].tobytes()
    data = meta + raw[start:start + fmt.type_size].tobytes()
    where = dict(file=path, tensor=tensor, block=block, n_blocks=n_blocks, row=row, block_in_row=within,
                 shape=tuple(int(s) for s in t.shape), first_element=block * fmt.block_size,
                 byte_offset=int(t.data_offset) + start)
    return data, where


# --------------------------------------------------------------------------- the explanation

def summary(module: ModuleType) -> str:
    """The first paragraph of the spec module's docstring, on one line."""
    doc = (module.__doc__ or "").strip()
    return re.sub(r"``(.+?)``", r"`\1`", " ".join(doc.split("\n\n")[0].split()))


def details(module: ModuleType) -> str:
    """The spec module's docstring after its first paragraph."""
    doc = (module.__doc__ or "").strip()
    parts = doc.split("\n\n", 1)
    return parts[1].strip() if len(parts) > 1 else ""


def facts(module: ModuleType) -> list[tuple[str, str]]:
    """The format's facts as (label, text) pairs, in page order."""
    fmt = module.FORMAT
    bpw = fmt.bits_per_weight
    return [
        ("origin, type id", f"{fmt.origin}, {fmt.type_id}"),
        ("block", f"{fmt.block_size} element{'s' if fmt.block_size > 1 else ''} in {fmt.type_size} bytes"),
        ("bits per weight", f"{bpw:g}"),
        ("row metadata", f"{fmt.row_meta_size} bytes before the blocks of each row" if fmt.row_meta_size
         else "none"),
        ("dot product with", fmt.vec_dot_format or "none (an activation format)"),
        ("importance matrix", {"ignored": "ignored", "accepted": "accepted (changes the quantizer's search)",
                               "required": "required"}.get(fmt.imatrix, fmt.imatrix)),
        ("NaN/inf input", {"reject": "rejected (the format cannot hold them)",
                           "store": "stored"}.get(fmt.nonfinite_input, fmt.nonfinite_input)),
        ("aliases", ", ".join(fmt.aliases) if fmt.aliases else "none"),
        ("upstream", fmt.upstream),
    ]


def render_text(module: ModuleType, decoded: Decoded | None = None, where: dict | None = None,
                example: Example | None = None) -> str:
    """``quantspec explain``: the layout, then a block decoded field by field.
    Without ``decoded`` the worked example is decoded."""
    fmt = module.FORMAT
    head = summary(module)
    out = [head if head.upper().startswith(fmt.name.upper()) else f"{fmt.name.upper()}: {head}", ""]
    width = max(len(label) for label, _ in facts(module))
    out += [f"  {label:<{width}}  {text}" for label, text in facts(module)]
    out += ["", "Fields:"]
    offsets = fmt.offsets()
    for f in fmt.fields:
        decl = f"{f.ctype} {f.name}" + (f"[{f.count}]" if f.count > 1 else "")
        out.append(f"  @{offsets[f.name]:<4} {decl:<18} {f.meaning}")
    rows = bitmap_rows(fmt)
    if rows:
        out += ["", "Bit map:"]
        out += [f"  {r.where}: {r.bits} = {r.holds}" for r in rows]
    layout = LAYOUTS.get(fmt.name, Layout())
    for s in layout.symbols:
        out.append(f"  {s.name}: {s.bits} bit{'s' if s.bits > 1 else ''}{', signed' if s.signed else ''}, {s.meaning}")
    if layout.value:
        out += ["", f"Dequantize: y[j] = {layout.value}   (float32, left to right, no FMA)"]
    out += ["", f"Quantizer, dot product, quirks and decisions: the docstring of reference/{fmt.name}.py, "
                f"also on docs/formats/{fmt.name}.md"]
    if decoded is None:
        example = example or worked_example(module)
        decoded = example.decoded
        out += ["", f"Worked example: the spec quantizes {EXAMPLE_INPUT}:"]
        out += _wrap_values([format_float(v) for v in example.x], "x") + [""]
    elif where:
        first, last = where["first_element"], where["first_element"] + fmt.block_size - 1
        elements = f"element {first}" if first == last else f"elements {first}..{last}"
        out += ["", f"Block {where['block']} of {where['n_blocks']} of tensor {where['tensor']} "
                    f"(ne {list(where['shape'])}, row {where['row']}, {elements}, "
                    f"file offset {where['byte_offset']}):", ""]
    else:
        out += ["", "The given block:", ""]
    out += _decoded_text(fmt, decoded)
    return "\n".join(out) + "\n"


def _wrap_values(values: list[str], name: str, per_line: int = 8) -> list[str]:
    lines = []
    for at in range(0, len(values), per_line):
        chunk = values[at:at + per_line]
        lines.append(f"  {name}[{at}..{at + len(chunk) - 1}]: " + "  ".join(chunk))
    return lines


def _decoded_text(fmt, decoded: Decoded) -> list[str]:
    out = [f"  bytes ({len(decoded.data)}):"]
    out += [f"    {line}" for line in hex_lines(decoded.data)]
    if decoded.row_meta:
        out += ["", "  row metadata (before the blocks of the row):"]
        out += ["    " + field_text(fv) for fv in decoded.row_meta]
    out += ["", "  fields:"]
    for fv in decoded.fields:
        out.append("    " + field_text(fv))
    if decoded.symbols:
        out += ["", "  through the bit map:"]
        for name, vals in decoded.symbols.items():
            if len(vals) == 1:
                out.append(f"    {name} = {vals[0]}")
            else:
                out += [f"  {line}" for line in _wrap_values([str(v) for v in vals], name, per_line=16)]
    if decoded.steps:
        out += ["", "  element by element:"]
        for step in decoded.steps:
            for line in step.sources:
                out.append(f"    {line}")
            out.append(f"    y[{step.j}] = {step.formula} = {step.value}")
    out += ["", "  floats (the spec's dequantize):"]
    out += [f"  {line}" for line in _wrap_values([format_float(v) for v in decoded.values], "y")]
    if not decoded.formula_agrees():
        bad = int(np.argmax(decoded.values.view(np.uint32) != decoded.formula_values.view(np.uint32)))
        out.append(f"  NOTE: the bit map and formula give y[{bad}] = {format_float(decoded.formula_values[bad])};"
                   f" the spec is authoritative")
    return out


def field_text(fv: FieldValue) -> str:
    """``d (f16 @0) = 00 80 -> 0x8000 = -0.0``, arrays shortened."""
    head = f"{fv.name} ({fv.ctype}{'[%d]' % fv.count if fv.count > 1 else ''} @{fv.offset}) ="
    if fv.is_float:
        digits = _CTYPE_BYTES[fv.ctype] * 2
        vals = ", ".join(f"{b:#0{digits + 2}x} = {format_float(v)}" for b, v in zip(fv.bits[:8], fv.values[:8]))
        more = f", ... ({fv.count} values)" if fv.count > 8 else ""
        return f"{head} {' '.join(f'{b:02x}' for b in fv.raw[:16])}{' ...' if len(fv.raw) > 16 else ''}" \
               f" -> {vals}{more}"
    if fv.count == 1:
        digits = _CTYPE_BYTES[fv.ctype] * 2
        return f"{head} {fv.raw.hex(' ')} -> {fv.values[0] & ((1 << (4 * digits)) - 1):#0{digits + 2}x}" \
               f" = {fv.values[0]}"
    if fv.ctype == "u8":  # packed bytes read best in hex
        return f"{head} {fv.raw[:16].hex(' ')}{' ...' if fv.count > 16 else ''}"
    shown = " ".join(str(v) for v in fv.values[:16])
    return f"{head} {shown}{' ...' if fv.count > 16 else ''}"


def spec_module(fmt) -> ModuleType:
    """The spec module of ``fmt``: a format name, an ``(origin, type_id)`` pair or the module itself."""
    if isinstance(fmt, ModuleType):
        return fmt
    from quantspec import registry

    return registry.module(fmt)


def explain(fmt, data: bytes | str | None = None) -> str:
    """The text of ``quantspec explain``: the layout of ``fmt``, then ``data``
    (one block as bytes or hex text, with its row's metadata first if the
    format has any) decoded, or the worked example."""
    module = spec_module(fmt)
    if isinstance(data, str):
        data = parse_hex(module.FORMAT, data)
    return render_text(module, decode(module, data) if data is not None else None)
