"""Template context: the spec module's layout facts plus the registry's
per-format facts. Python decides here; templates only format."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def spec_format(fmt: str):
    """The ``FORMAT`` of ``reference/<fmt>.py``, imported from the source tree."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"reference.{fmt}").FORMAT


_VECTOR_OPS = {ast.Mult: "mul", ast.Add: "add", ast.Sub: "sub"}
_C_OPS = {ast.Mult: "*", ast.Add: "+", ast.Sub: "-"}


def float_expr(expr: str, vector: str | None = None) -> str:
    """A float32 expression over named operands, as C (``vector=None``) with
    every operation parenthesized in its evaluation order, or as a nest of
    intrinsics with the prefix ``vector`` (e.g. ``_mm256``): one
    rounding per operation either way, in the same order."""
    def emit(node):
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.BinOp) and type(node.op) in _VECTOR_OPS:
            left, right = emit(node.left), emit(node.right)
            if vector:
                return f"{vector}_{_VECTOR_OPS[type(node.op)]}_ps({left}, {right})"
            return f"({left} {_C_OPS[type(node.op)]} {right})"
        raise ValueError(f"unsupported float expression: {expr!r}")
    return emit(ast.parse(expr, mode="eval").body)


def _fields(spec) -> list[dict]:
    offsets = spec.offsets()
    return [dict(name=f.name, ctype=f.ctype, count=f.count, offset=offsets[f.name]) for f in spec.fields]


# ------------------------------------------------------------------ K-quants

def _kquants():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("reference._kquants")


def _byte_runs(plane) -> list[dict]:
    """Run r of a bit plane (elements 32r .. 32r+31) as its facts: 32
    consecutive bytes from ``byte`` of the field, bits ``shift`` ...
    (every K-quant plane has chunks of 32 or 64 bytes, so every run is one
    contiguous byte range at one bit offset)."""
    runs = []
    for r in range(plane.count // 32):
        e = np.arange(32 * r, 32 * r + 32)
        byte, shift = int(plane.byte_of[e[0]]), int(plane.shift_of[e[0]])
        if not ((plane.byte_of[e] == byte + np.arange(32)).all() and (plane.shift_of[e] == shift).all()):
            raise ValueError(f"plane {plane}: elements {e[0]}..{e[-1]} are not one byte run")
        runs.append(dict(run=r, byte=byte, shift=shift))
    return runs


def kquant_planes(fmt: str, planes) -> list[dict]:
    """The code's bit planes ``(field, reference._kquants plane name, lowest
    code bit held)`` with their byte runs and, for packing, the runs that
    fill each 32-byte group of the field."""
    spec = spec_format(fmt)
    offsets = spec.offsets()
    out = []
    for field, name, lowbit in planes:
        plane = getattr(_kquants(), name)
        runs = _byte_runs(plane)
        groups = [dict(byte=b, runs=[r for r in runs if r["byte"] == b]) for b in range(0, plane.nbytes, 32)]
        out.append(dict(field=field, offset=offsets[field], plane=name, width=plane.width, mask=plane.mask,
                        lowbit=lowbit, nbytes=plane.nbytes, runs=runs, groups=groups))
    return out


def run_period(planes: list[dict]) -> dict:
    """The smallest P (2, 4 or 8) such that in every plane run r + P lies a
    constant number of bytes after run r at a constant extra shift: a loop
    over the 8/P chunks of P runs then walks every plane by a fixed step
    (byte_step, shift_step) from the facts of the first chunk."""
    for period in (2, 4, 8):
        steps = []
        for pl in planes:
            runs = pl["runs"]
            db = {runs[r + period]["byte"] - runs[r]["byte"] for r in range(8 - period)}
            ds = {runs[r + period]["shift"] - runs[r]["shift"] for r in range(8 - period)}
            if len(db) > 1 or len(ds) > 1 or min(ds | {0}) < 0:
                break
            step = dict(byte_step=db.pop() if db else 0, shift_step=ds.pop() if ds else 0)
            if step["shift_step"] and (step["byte_step"] or len({runs[r]["byte"] for r in range(period)}) > 1):
                break  # a shifting plane is one register shifted each chunk
            steps.append(step)
        else:
            return dict(period=period, steps=steps)
    raise ValueError("no run period")


def _nibbles(b: np.ndarray) -> np.ndarray:
    """Q2_K's scale bytes: low nibble = sub-block scale, high nibble = min
    (reference/q2_k.py: ``sc & 0xF``, ``sc >> 4``)."""
    return np.concatenate([b & 15, b >> 4], axis=-1)


def _whole_bytes(b: np.ndarray) -> np.ndarray:
    """Q6_K's scale bytes: one int8 scale per byte (reference/q6_k.py)."""
    return b.copy()


def _scale_min_k4(b: np.ndarray) -> np.ndarray:
    sc, m = _kquants().unpack_scale_min_k4(b)
    return np.concatenate([sc, m], axis=-1)


SCALE_DECODERS = {
    "unpack_scale_min_k4": _scale_min_k4,  # [sc_0..7, m_0..7]
    "unpack_scales_q3k": lambda b: _kquants().unpack_scales_q3k(b),  # [s_0..15] (stored with offset 32)
    "nibbles": _nibbles,  # [sc_0..15, m_0..15]
    "bytes": _whole_bytes,  # [s_0..15] (int8)
}


def scale_fields(decoder: str, nbytes: int) -> list[list[dict]]:
    """The bit fields of every decoded sub-block scale/min, found by running
    the spec's decoder on every single-bit input: value v is the OR of its
    fields, field = bits ``shift .. shift+width-1`` of byte ``byte`` placed
    at bit ``dest`` of v. The decoders select bits and never combine them,
    which the probe checks."""
    probes = np.zeros((8 * nbytes, nbytes), dtype=np.uint8)
    for bit in range(8 * nbytes):
        probes[bit, bit // 8] = 1 << (bit % 8)
    decode = SCALE_DECODERS[decoder]
    if np.any(decode(np.zeros((1, nbytes), dtype=np.uint8)) != 0):
        raise ValueError(f"{decoder}: zero bytes must decode to zero")
    values = decode(probes).astype(np.int64) & 0xFF
    source: dict[tuple[int, int], tuple[int, int]] = {}  # (value, bit) -> (byte, bit)
    for bit, row in enumerate(values):
        hits = [(v, k) for v in np.flatnonzero(row) for k in range(8) if (int(row[v]) >> k) & 1]
        if len(hits) > 1:
            raise ValueError(f"{decoder}: input bit {bit} lands in {hits}")
        if hits:
            source[(int(hits[0][0]), hits[0][1])] = (bit // 8, bit % 8)
    fields = []
    for v in range(values.shape[1]):
        bits = sorted(k for (vv, k) in source if vv == v)
        parts: list[dict] = []
        for k in bits:
            byte, b = source[(v, k)]
            last = parts[-1] if parts else None
            if last and last["byte"] == byte and last["dest"] + last["width"] == k and last["shift"] + last["width"] == b:
                last["width"] += 1
            else:
                parts.append(dict(byte=byte, shift=b, width=1, dest=k))
        for i, part in enumerate(parts):
            part["mask"] = (1 << part["width"]) - 1
            part["top"] = i == len(parts) - 1  # the C packers leave the top field of a value unmasked
        fields.append(parts)
    return fields


def scale_words(fields: list[list[dict]]) -> list[list[dict]]:
    """Four consecutive values at a time as one 32-bit word (SWAR): the
    fields of values 4w .. 4w+3 must match but for consecutive bytes."""
    words = []
    for w in range(0, len(fields), 4):
        group = fields[w:w + 4]
        shape = [[(p["shift"], p["width"], p["dest"]) for p in parts] for parts in group]
        if any(s != shape[0] for s in shape) or any(
                group[k][i]["byte"] != group[0][i]["byte"] + k for k in range(4) for i in range(len(group[0]))):
            raise ValueError(f"scale values {w}..{w + 3} do not share one field layout")
        words.append([dict(byte=p["byte"], shift=p["shift"], dest=p["dest"],
                           mask=int.from_bytes(bytes([p["mask"]] * 4), "little")) for p in group[0]])
    return words


def scale_vector(words: list[list[dict]], nbytes: int) -> dict:
    """The scale words of :func:`scale_words` computed in one vector (16
    values: 128 bits, 32 values: 256 bits, both halves from the same 16
    bytes): the 16 bytes ``raw`` ending at the field's end are loaded once
    (never past the block: every scale field ends 16 or more bytes into its
    block); for each field part, a byte shuffle puts each word's source
    dword in place, then a per-dword right shift, mask and left shift. A
    word without that part gets mask 0."""
    raw_off = min(0, nbytes - 16)  # where raw starts, relative to the field
    nparts = max(len(w) for w in words)
    parts = []
    for p in range(nparts):
        idx, shifts, masks, dests = [], [], [], []
        for k, word in enumerate(words):
            part = word[p] if p < len(word) else None
            base = (part["byte"] - raw_off) if part else None
            idx += [base + i for i in range(4)] if part else [0x80] * 4
            shifts.append(part["shift"] if part else 0)
            masks.append(part["mask"] if part else 0)
            dests.append(part["dest"] if part else 0)
        # 256 bits: both halves hold raw and pshufb works per half, so indices are the same 0..15
        parts.append(dict(idx=idx, shuffle=idx != [i % 16 for i in range(len(idx))],
                          shifts=shifts, masks=[m - (1 << 32) if m >= 1 << 31 else m for m in masks],
                          dests=dests, shift_any=any(shifts), mask_any=any(m != 0xFFFFFFFF for m in masks),
                          dest_any=any(dests), uniform_shift=len(set(shifts)) == 1, uniform_dest=len(set(dests)) == 1))
    return dict(raw_off=raw_off, bits=32 * len(words), parts=parts)


def kquant_context(fmt: str, spec, extra: dict) -> dict:
    """Template facts of a K-quant beyond its registry line."""
    ctx = {}
    names = {f.name for f in spec.fields}
    ctx["has_min"] = "dmin" in names
    ctx["planes"] = kquant_planes(fmt, extra["planes"]) if "planes" in extra else []
    if ctx["planes"]:
        ctx["chunks"] = run_period(ctx["planes"])
    if "scales" in extra:
        nbytes = next(f.count for f in spec.fields if f.name == "scales")
        fields = scale_fields(extra["scales"], nbytes)
        ctx["scale_fields"] = fields
        ctx["scale_words"] = scale_words(fields)
        ctx["scale_vec"] = scale_vector(ctx["scale_words"], nbytes)
        ctx["nvalues"] = len(fields)
        ctx["scales_nbytes"] = nbytes
        ctx["scales_identity"] = all(len(p) == 1 and p[0]["byte"] == v and p[0]["width"] == 8
                                     for v, p in enumerate(fields))
    ctx["nsub"] = nsub = spec.block_size // extra["sub"] if "sub" in extra else 0
    ctx["scales_signed"] = extra.get("scales_signed", False)
    if ctx["planes"]:
        # requantized codes are clamped to the codes the planes hold, less the offset
        ctx["code_bits"] = bits = sum(p["width"] for p in ctx["planes"])
        ctx["code_lo"] = -extra["code_offset"]
        ctx["code_hi"] = (1 << bits) - 1 - extra["code_offset"]
    if spec.vec_dot_format:
        act = spec_format(spec.vec_dot_format)
        aoffs = act.offsets()
        ctx["kact"] = dict(name=act.name, type_size=act.type_size, off_d=aoffs["d"], off_qs=aoffs["qs"],
                           off_bsums=aoffs["bsums"], bsum_elems=spec.block_size // next(
                               f.count for f in act.fields if f.name == "bsums"))
        # the decoded value that multiplies a.bsums[k] (the min of the sub-block holding its elements)
        ctx["min_bytes"] = [nsub + ctx["kact"]["bsum_elems"] * k // extra["sub"] for k in range(16)]
        ctx.update(dot_groups(ctx["code_bits"], extra["sub"]))
    return ctx


def dot_groups(code_bits: int, sub: int) -> dict:
    """How the AVX2 dot product combines the int16 pair sums of its 8 runs
    of 32 codes before multiplying by the sub-block scales.

    ``pmaddubsw`` of a run gives 16 int16 lanes, each the sum of two code *
    activation products, at most ``2 * codemax * 128`` in magnitude. Each
    combining level interleaves two sets of runs (unpacklo/unpackhi) and adds
    the two results, so that an int16 lane holds one run and the sum of twice
    as many of its pair sums; that stays within int16 while ``2**levels``
    times the bound is <= 32767. Then one ``pmaddwd`` by the scales serves
    2**levels runs. Within each
    128-bit half, int16 lane k of a group holds run ``first + k % 2**levels``:
    the sub-block of that run (SUB=32) or of its half (SUB=16: the low half
    of run r is sub-block 2r, the high half 2r+1). The scale vector it is
    multiplied with comes from the int16 scales ``S``: for SUB=32 both halves
    hold the scales of sub-blocks 0..7; for SUB=16 the low half holds the
    even sub-blocks and the high half the odd ones, so that lane k of half h
    of S is the scale of sub-block 2k + h. ``mask`` is the pshufb of S that
    gives a group's scale vector (None: S itself).
    """
    pair = 2 * ((1 << code_bits) - 1) * 128
    levels = 0
    while levels < 3 and (2 << levels) * pair <= 32767:
        levels += 1
    width = 1 << levels
    groups = []
    for first in range(0, 8, width):
        mask = []
        for half in range(2):
            for k in range(8):
                run = first + k % width
                index = run if sub == 32 else (2 * run + half) // 2  # int16 lane of S in this half
                mask += [2 * index, 2 * index + 1]
        identity = mask == [b % 16 for b in range(32)]
        groups.append(dict(runs=list(range(first, first + width)), mask=None if identity else mask))
    return dict(dot_levels=levels, dot_groups=groups)


# ------------------------------------------------------------------ ik_llama.cpp row-scale formats

def _ik_module(name: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"reference.{name}")


def iqks_context(fmt: str, spec, extra: dict) -> dict:
    """Template facts of a format with a row scale and 8 sub-blocks of 32
    (codegen/templates/iqks.c.j2): the row scale's type, the grid (int8,
    padded by 16 zero bytes so that a SIMD kernel may load 16 bytes from the
    start of any half), the Q8_K offsets and the quantizer's nearest-value
    table (reference/_iqk.py Grid)."""
    if spec.block_size != 256 or spec.row_meta_size not in (2, 4):
        raise ValueError(f"{fmt}: iqks.c.j2 needs 256-element blocks and an f16 or f32 row scale")
    tables = _ik_module("tables.ik_llama")
    values = np.asarray(getattr(tables, extra["grid"]))
    ctx = dict(meta="f32" if spec.row_meta_size == 4 else "f16", meta_size=spec.row_meta_size,
               grid_name=extra["grid"])
    if extra["codes"] == "pairs":  # uint16 points: first coordinate in the low byte
        first = (values & 0xFF).astype(np.uint8).view(np.int8)
        second = (values >> 8).astype(np.uint8).view(np.int8)
        ctx["pair_first"] = [int(v) for v in first] + [0] * 16
        ctx["pair_second"] = [int(v) for v in second] + [0] * 16
    else:
        if len(values) != 2 * extra["half"]:
            raise ValueError(f"{fmt}: {extra['grid']} must hold two halves of {extra['half']}")
        ctx["grid"] = [int(v) for v in values.astype(np.int8)] + [0] * 16
    act = spec_format(spec.vec_dot_format)
    aoffs = act.offsets()
    ctx["kact"] = dict(name=act.name, type_size=act.type_size, off_d=aoffs["d"], off_qs=aoffs["qs"])
    if "quantize" in extra:
        qx = dict(extra["quantize"])
        iqk = _ik_module("_iqk")
        grid = getattr(iqk, qx["nearest"])
        partition = qx["kind"] == "iq2_ks"
        if (grid.index is None and not partition) or grid.index_from_difference \
                or not np.array_equal(grid.values, values):
            raise ValueError(f"{fmt}: the quantizer's grid {grid.name} must be the format's, with an index table")
        if grid.index is None:  # best_index_iq2nl: direct comparisons, no table
            qx.update(grid_name=grid.name, limit=None, index=None, index_name=None)
        else:
            qx.update(grid_name=grid.name, limit=grid.limit, index=[int(v) for v in grid.index[:grid.limit]],
                      index_name=f"{grid.name.upper()}_INDEX")
        if partition:  # the breakpoint limits and the final fudge factor, from the spec module
            mod = _ik_module(fmt)
            bp = mod.BREAKPOINTS
            max_i1, min_i3 = int(bp[:, 0].max()) + 1, int(bp[:, 2].min())
            if mod.BLOCK != 32 or not np.array_equal(bp, iqk.partitions(32, max_i1=max_i1, min_i3=min_i3)):
                raise ValueError(f"{fmt}: BREAKPOINTS must be _iqk.partitions(32, max_i1, min_i3)")
            # the fudge factor as a C float literal, written as codegen.iqk writes IQ2_K's
            qx.update(max_i1=max_i1, min_i3=min_i3, fudge=repr(float(np.float32(mod.FUDGE))) + "f")
        ctx["q"] = qx
    return ctx


def context(fmt: str, isa: str, ops: tuple[str, ...], extra: dict) -> dict:
    spec = spec_format(fmt)
    ctx = dict(fmt=fmt, isa=isa, ops=ops, block_size=spec.block_size, type_size=spec.type_size,
               fields=_fields(spec), act=None)
    ctx.update(extra)
    if extra.get("iqgrid_search"):  # the grid IQ quantizers: codegen/iqgrid_quantize.py
        from codegen import iqgrid_quantize
        ctx.update(iqgrid_quantize.context(fmt, spec, extra))
        return ctx
    if extra.get("iq1_search"):  # the IQ1 quantizers: codegen/iq1_quantize.py
        from codegen import iq1_quantize
        ctx.update(iq1_quantize.context(fmt, spec, extra))
        return ctx
    if extra.get("iqk"):
        from codegen.iqk import iqk_context
        ctx.update(iqk_context(fmt, spec, extra))
        return ctx
    if extra.get("kquant"):
        ctx.update(kquant_context(fmt, spec, extra))
        return ctx
    if extra.get("iqgrid"):  # the grid IQ formats: codegen/iqgrid.py
        from codegen.iqgrid import iqgrid_context
        ctx.update(iqgrid_context(fmt, spec, extra))
        return ctx
    if extra.get("family"):  # the small mainline formats: codegen/lowbit.py
        from codegen import lowbit
        ctx.update(getattr(lowbit, f"{extra['family']}_context")(fmt, spec, extra))
        return ctx
    if extra.get("ik_family"):  # ik_llama.cpp's trellis, ternary and binary formats: codegen/iklowbit.py
        from codegen import iklowbit
        ctx.update(getattr(iklowbit, f"{extra['ik_family']}_context")(fmt, spec, extra))
        return ctx
    if extra.get("iqks"):
        ctx.update(iqks_context(fmt, spec, extra))
        return ctx
    names = {f.name for f in spec.fields}
    ctx["has_min"] = "m" in names
    ctx["has_s"] = "s" in names
    if "offset" in extra:
        ctx["offset_shift"] = max(int(extra["offset"]).bit_length() - 1, 0)
        clamp, qmax = extra.get("clamp"), extra.get("qmax")
        ctx["clamp_expr"] = {"min": f"c < {qmax} ? c : {qmax}", "and": f"c & {qmax}", None: "c"}[clamp]
        ctx["dequant_expr"] = ("(float)(q[j] - %d) * d" % extra["offset"] if extra["offset"]
                               else "(float)q[j] * d + m" if ctx["has_min"] else "(float)q[j] * d")
        ctx["imatrix_upstream"] = f"ggml src/ggml-quants.c quantize_row_{fmt}_impl"
    if "vec_dot" in ops and spec.block_size > 1:
        act = spec_format(spec.vec_dot_format)
        offs = act.offsets()
        if extra.get("contrib"):
            ctx["contrib_c"] = float_expr(extra["contrib"])
            ctx["contrib_avx2"] = float_expr(extra["contrib"], "_mm256")
        ctx["act"] = dict(name=act.name, type_size=act.type_size, off_d=offs["d"], off_s=offs.get("s"),
                          off_qs=offs["qs"])
    return ctx
