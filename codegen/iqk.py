"""Template context of ik_llama.cpp's IQ2_K .. IQ6_K (codegen/templates/iqk.c.j2).

Every fact comes from the spec: the value grid and its nearest-index table
from ``reference/_iqk.py`` (the ``Grid`` the quantizer uses), the bit planes
of the indices by probing the spec module's ``pack_quants`` with one bit at a
time, the constants (sub-block size, sweep tries, final fudge factors) from
the module. The registry line adds what the spec states in code rather than
data: how the scale bytes are coded and which quantizer variant runs.
"""

from __future__ import annotations

import importlib

import numpy as np

from codegen.model import ROOT, spec_format

QK = 256
SUB = 16


def _module(fmt: str):
    import sys
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"reference.{fmt}")


def index_planes(fmt: str, code_bits: int) -> list[dict]:
    """The bit planes of the grid indices, found by packing every single-bit
    index with the spec's ``pack_quants``: plane = (field, code bits lowbit ..
    lowbit+width-1); in run r (elements 32r .. 32r+31) the elements of half h
    (16 each) lie in consecutive bytes from ``byte[h]`` at bit ``shift[h]``."""
    mod = _module(fmt)
    spec = spec_format(fmt)
    offsets = spec.offsets()
    probes = np.zeros((QK * code_bits, QK), dtype=np.int64)
    for e in range(QK):
        for k in range(code_bits):
            probes[e * code_bits + k, e] = 1 << k
    packed = mod.pack_quants(probes)
    packed = packed if isinstance(packed, tuple) else (packed,)
    names = [f.name for f in spec.fields][-len(packed):]
    where: dict[tuple[int, int], tuple[str, int, int]] = {}
    for name, arr in zip(names, packed):
        for p, k in zip(*np.nonzero(arr)):
            byte = int(k)
            val = int(arr[p, k])
            if val & (val - 1):
                raise ValueError(f"{fmt}: one index bit lands on two bits")
            e, bit = divmod(int(p), code_bits)
            where[(e, bit)] = (name, byte, val.bit_length() - 1)
    if len(where) != QK * code_bits:
        raise ValueError(f"{fmt}: pack_quants drops index bits")
    planes = []
    for name in names:
        bits = sorted({k for (e, k), v in where.items() if v[0] == name})
        lowbit, width = bits[0], len(bits)
        if bits != list(range(lowbit, lowbit + width)):
            raise ValueError(f"{fmt}: field {name} holds non-adjacent index bits")
        runs = []
        for r in range(QK // 32):
            halves = []
            for h in range(2):
                es = range(32 * r + 16 * h, 32 * r + 16 * h + 16)
                locs = [where[(e, lowbit)] for e in es]
                byte0, shift0 = locs[0][1], locs[0][2]
                for i, e in enumerate(es):
                    for k in range(width):
                        if where[(e, lowbit + k)] != (name, byte0 + i, shift0 + k):
                            raise ValueError(f"{fmt}: {name} elements {es[0]}.. are not one byte run")
                halves.append((byte0, shift0))
            (b0, s0), (b1, s1) = halves
            if b1 == b0 + 16 and s1 == s0:
                kind = "wide"   # 32 consecutive bytes at one shift
            elif b1 == b0 and s1 > s0:
                kind = "split"  # 16 bytes: low half at s0, high half at s1
            else:
                raise ValueError(f"{fmt}: run {r} of {name} has no vector form")
            runs.append(dict(run=r, b0=b0, s0=s0, b1=b1, s1=s1, kind=kind))
        nbytes = next(f.count for f in spec.fields if f.name == name)
        planes.append(dict(field=name, offset=offsets[name], lowbit=lowbit, width=width, mask=(1 << width) - 1,
                           nbytes=nbytes, runs=runs))
    return planes


def _c_float(v: float) -> str:
    return repr(float(np.float32(v))) + "f"


def grid_facts(grid) -> dict:
    """The value grid (both halves) and its nearest-index rule (``_iqk.Grid``)."""
    values = [int(v) for v in grid.values]
    size = grid.size
    facts = dict(name=grid.name, values=values, size=size, index=None, limit=grid.limit,
                 from_difference=grid.index_from_difference)
    if grid.index is not None:
        facts["index"] = [int(v) for v in grid.index[:grid.limit]]
    if not all(-127 <= v <= 127 for v in values):
        raise ValueError(f"{grid.name}: the dot product's sign trick needs values in -127..127")
    # vector lookup: one 16-byte table when both halves fit (index + size*shift),
    # else per 128-bit lane the half of its sub-block, in chunks of 16 values
    facts["full_table"] = 2 * size <= 16
    facts["chunks"] = 1 if facts["full_table"] else size // 16
    halves = [(combo & 1, combo >> 1) for combo in range(4)]  # (half of the low lane, of the high lane)
    if facts["full_table"]:
        facts["table16"] = values + [0] * (16 - len(values))
        facts["shiftadd"] = [[size * lo] * 16 + [size * hi] * 16 for lo, hi in halves]
    else:
        facts["lut"] = [[values[size * lo + 16 * c:size * lo + 16 * c + 16] + values[size * hi + 16 * c:size * hi + 16 * c + 16]
                         for lo, hi in halves] for c in range(facts["chunks"])]
    return facts


def iqk_context(fmt: str, spec, extra: dict) -> dict:
    mod = _module(fmt)
    iqk = importlib.import_module("reference._iqk")
    grid = getattr(iqk, extra["grid"])
    if mod.BLOCK != SUB or spec.block_size != QK:
        raise ValueError(f"{fmt}: the template is for 256-blocks of 16-element sub-blocks")
    code_bits = int(np.log2(grid.size))
    ctx = dict(grid=grid_facts(grid), code_bits=code_bits, planes=index_planes(fmt, code_bits), nsub=QK // SUB,
               sub=SUB)
    ctx["ntry"] = getattr(mod, "NTRY", 0)
    ctx["fudge"] = _c_float(mod.FUDGE) if hasattr(mod, "FUDGE") else None
    act = spec_format(spec.vec_dot_format)
    aoffs = act.offsets()
    ctx["kact"] = dict(name=act.name, type_size=act.type_size, off_d=aoffs["d"], off_qs=aoffs["qs"])
    # pshufb masks: the int16 scale of sub-block 2r (low lane) / 2r+1 (high lane) from
    # S = [even sub-blocks | odd sub-blocks]
    ctx["scale_masks"] = [[2 * r + (i % 2) for i in range(16)] * 2 for r in range(8)]
    return ctx
