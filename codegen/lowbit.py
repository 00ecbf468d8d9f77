"""Template facts of the small mainline formats: the codebook formats
(IQ4_NL, IQ4_XS, MXFP4, NVFP4: 4-bit indices into a 16-entry int8 table,
one float scale per group of elements) and the ternary / 1-2-bit formats
(TQ1_0, TQ2_0, Q1_0, Q2_0: small unsigned codes c, value ``mul*c - 1``).

Every fact is read from the spec modules (tables, element maps, group
sizes) and checked against their decoders here, at codegen time, so a
template never restates a layout it was not given."""

from __future__ import annotations

import importlib
import sys

import numpy as np

from codegen.model import ROOT, spec_format


def _ref(name: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"reference.{name}")


def _f32_hex(values: np.ndarray) -> list[str]:
    """float32 values as C bit patterns (exact, NaN-safe)."""
    return ["0x%08xu" % int(v) for v in np.asarray(values, dtype=np.float32).view(np.uint32)]


def _activation(spec) -> dict:
    act = spec_format(spec.vec_dot_format)
    offs = act.offsets()
    d_type = next(f.ctype for f in act.fields if f.name == "d")
    return dict(name=act.name, block_size=act.block_size, type_size=act.type_size, off_d=offs["d"],
                off_qs=offs["qs"], d_f32=d_type == "f32")


# --------------------------------------------------------------- codebook

#: per scale kind: the spec's decoder of the group scale (probed below)
CODEBOOK_SCALES = ("fp16", "iq4_xs", "e8m0_half", "ue4m3_half")


def _check_codebook_layout(fmt: str, group: int, table: np.ndarray) -> None:
    """The index of element ``g*group + j`` is the low nibble of qs byte
    ``g*group/2 + j`` and of element ``g*group + group/2 + j`` the high one:
    checked by decoding a block of random indices with the spec and dividing
    out each group's scale (found from a block of index-15 elements)."""
    mod = _ref(fmt)
    spec = mod.FORMAT
    qs_off = spec.offsets()["qs"]
    rng = np.random.default_rng(0)
    blk = rng.integers(0, 256, spec.type_size, dtype=np.uint8)
    blk[:qs_off] = [0x00, 0x3C, 0x55, 0x55, 0x11, 0x22, 0x33, 0x44][:qs_off] if fmt != "mxfp4" else [128]
    if fmt == "nvfp4":
        blk[:4] = [0x38, 0x40, 0x48, 0x30]
    ones = blk.copy()
    ones[qs_off:] = 0xFF
    unit = mod.dequantize(ones[None, :])[0] / np.float32(table[15])
    codes = np.empty(spec.block_size, dtype=np.int64)
    for g in range(spec.block_size // group):
        q = blk[qs_off + g * group // 2: qs_off + (g + 1) * group // 2]
        codes[g * group: g * group + group // 2] = q & 15
        codes[g * group + group // 2: (g + 1) * group] = q >> 4
    if not np.array_equal(mod.dequantize(blk[None, :])[0], (unit * table[codes].astype(np.float32)).astype(np.float32)):
        raise ValueError(f"{fmt}: the nibble layout is not the one the codebook template assumes")
    if (unit == 0).any():
        raise ValueError(f"{fmt}: the layout probe needs non-zero scales")


def _e8m0_half_bits(e: np.ndarray) -> np.ndarray:
    """The SIMD kernels' E8M0_HALF (e8m0_half8 in codebook.c.j2): float bits
    (e - 1) << 23, and (e + 1) << 21 for e < 2."""
    e = e.astype(np.int64)
    return np.where(e < 2, (e + 1) << 21, (e - 1) << 23) & 0xFFFFFFFF


def _ue4m3_half_bits(b: np.ndarray) -> np.ndarray:
    """The SIMD kernels' UE4M3_HALF (ue4m3_half8 in codebook.c.j2): with
    v = b & 0x7F, float bits (v << 20) + (119 << 23), the float v * 2^-10 for
    v < 8, 0 for b = 0x7F."""
    v = b.astype(np.int64) & 0x7F
    small = (v.astype(np.float32) * np.float32(2.0**-10)).astype(np.float32).view(np.uint32)
    bits = np.where(v < 8, small, (v << 20) + (119 << 23))
    return np.where(b == 0x7F, 0, bits)


def _check_scale_formula(name: str, table: np.ndarray, formula) -> None:
    b = np.arange(256)
    if not np.array_equal(formula(b).astype(np.uint32), np.asarray(table, dtype=np.float32).view(np.uint32)):
        raise ValueError(f"the SIMD decoding of {name} differs from the spec's table")


def codebook_context(fmt: str, spec, extra: dict) -> dict:
    tables = _ref("tables.ggml")
    table = np.asarray(getattr(tables, extra["table"]), dtype=np.int8)
    group = extra["group"]
    _check_codebook_layout(fmt, group, table)
    ctx = dict(table=[int(v) for v in table], table_name=extra["table"], group=group,
               ngroups=spec.block_size // group, table_absmax=int(np.abs(table.astype(int)).max()),
               act=_activation(spec))
    fp4 = _ref("_fp4")
    if extra["scale"] == "e8m0_half":
        ctx["scale_table"] = _f32_hex(fp4.E8M0_HALF)
        _check_scale_formula("E8M0_HALF", fp4.E8M0_HALF, _e8m0_half_bits)
    elif extra["scale"] == "ue4m3_half":
        ctx["scale_table"] = _f32_hex(fp4.UE4M3_HALF)
        _check_scale_formula("UE4M3_HALF", fp4.UE4M3_HALF, _ue4m3_half_bits)
    if "imatrix" in extra and extra["imatrix"]:
        iq4 = _ref("_iq4")
        ctx["thresholds"] = _f32_hex(iq4.UPPER_LEVEL_FROM)
        ctx["ntry"] = iq4.NTRY
        ctx["group_max_eps"] = _f32_hex([iq4.GROUP_MAX_EPS])[0]
    # the Q8_0 block (or the part of a Q8_K block) each group of elements meets
    ctx["act_groups_per_block"] = spec.block_size // ctx["act"]["block_size"] if ctx["act"]["block_size"] <= spec.block_size else 0
    return ctx


# ---------------------------------------------------------------- ternary

def _code_map(fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """For each element: the byte (from the block start) and the bit shift
    of its code, probed through the spec's decoder: bit k of byte i set
    alone shows which element's code it moves."""
    mod = _ref(fmt)
    spec = mod.FORMAT
    byte = np.full(spec.block_size, -1)
    shift = np.full(spec.block_size, -1)
    qs_off = spec.offsets()["qs"]
    nbytes = next(f.count for f in spec.fields if f.name == "qs")
    d_off = spec.offsets()["d"]
    base = np.zeros(spec.type_size, dtype=np.uint8)
    base[d_off + 1] = 0x3C  # d = 1.0
    y0 = mod.dequantize(base[None, :])[0]
    for i in range(nbytes):
        for k in range(8):
            b = base.copy()
            b[qs_off + i] = 1 << k
            moved = np.flatnonzero(mod.dequantize(b[None, :])[0] != y0)
            if moved.size > 1:
                raise ValueError(f"{fmt}: bit {k} of qs[{i}] moves several elements")
            if moved.size == 1:
                e = int(moved[0])
                if byte[e] < 0:
                    byte[e], shift[e] = qs_off + i, k
                elif byte[e] != qs_off + i:
                    raise ValueError(f"{fmt}: element {e} spans bytes")
    if (byte < 0).any():
        raise ValueError(f"{fmt}: elements without a code bit")
    return byte, shift


def _runs(byte: np.ndarray, shift: np.ndarray) -> list[dict] | None:
    """32-element runs that are one byte range at one shift (else None)."""
    runs = []
    for r in range(byte.size // 32):
        e = np.arange(32 * r, 32 * r + 32)
        if not ((byte[e] == byte[e[0]] + np.arange(32)).all() and (shift[e] == shift[e[0]]).all()):
            return None
        runs.append(dict(byte=int(byte[e[0]]), shift=int(shift[e[0]])))
    return runs


def _chunks16(byte: np.ndarray, type_size: int) -> list[dict]:
    """16-element chunks: a 16-byte load inside the block and the pshufb
    indices that put element j's byte in position j."""
    out = []
    for c in range(byte.size // 16):
        b = byte[16 * c: 16 * c + 16]
        base = min(int(b.min()), type_size - 16)
        idx = [int(v) - base for v in b]
        assert all(0 <= i < 16 for i in idx)
        out.append(dict(base=base, idx=idx))
    return out


def ternary_context(fmt: str, spec, extra: dict) -> dict:
    mod = _ref(fmt)
    ctx = dict(act=_activation(spec), mul=extra["mul"], code_bits=extra.get("code_bits", 0), codes=extra["codes"])
    if extra["codes"] == "base3":
        byte = mod.TRIT_BYTE + spec.offsets()["qs"]
        chunks = _chunks16(byte, spec.type_size)
        # run r = chunks 2r (low 128 bits) and 2r+1 (high); one 32-byte load where they are contiguous;
        # the 16-bit lanes multiply their even (low) and odd (high) byte by 3^n separately
        ctx["base3_runs"] = [dict(lo=chunks[2 * r], hi=chunks[2 * r + 1],
                                  whole=chunks[2 * r + 1]["base"] == chunks[2 * r]["base"] + 16
                                  and chunks[2 * r]["idx"] == list(range(16)) == chunks[2 * r + 1]["idx"],
                                  pow_even=[int(v) for v in mod.TRIT_POW3[32 * r: 32 * r + 32: 2]],
                                  pow_odd=[int(v) for v in mod.TRIT_POW3[32 * r + 1: 32 * r + 32: 2]])
                             for r in range(spec.block_size // 32)]
        ctx["code_byte"] = [int(v) for v in byte]
        ctx["code_pow3"] = [int(v) for v in mod.TRIT_POW3]
    else:
        byte, shift = _code_map(fmt)
        width = extra["code_bits"]
        ctx["code_byte"], ctx["code_shift"] = [int(v) for v in byte], [int(v) for v in shift]
        ctx["code_mask"] = (1 << width) - 1
        runs = _runs(byte, shift)
        ctx["runs"] = runs
        if runs is None:
            # codes packed along consecutive bits: 32 elements = 32*width/8 consecutive bytes
            per_byte = 8 // width
            j = np.arange(spec.block_size)
            qs_off = spec.offsets()["qs"]
            if not ((byte == qs_off + j // per_byte).all() and (shift == width * (j % per_byte)).all()):
                raise ValueError(f"{fmt}: neither runs nor packed codes")
            ctx["packed"] = packed = dict(per_byte=per_byte, bytes_per_run=32 // per_byte)
            if width == 2:
                # SIMD decode of a run: element j's byte spread to position j, its field masked in place,
                # the field (c << s) folded into a nibble ((f | f >> 4) & 15) and mapped back to c by a table
                packed["spread"] = [(j // per_byte) % 8 for j in range(32)]
                packed["field_mask"] = [int(np.int8(np.uint8(((1 << width) - 1) << (width * (j % per_byte))))) for j in range(32)]
                fold = [0] * 16
                for c in range(1 << width):
                    for sh in range(0, 8, width):
                        f = (c << sh) & 0xFF
                        k = (f | (f >> 4)) & 15
                        if fold[k] not in (0, c):
                            raise ValueError(f"{fmt}: the nibble fold is ambiguous")
                        fold[k] = c
                packed["fold"] = fold
    # groups: the activation blocks (Q8_0) the block meets, or one group (Q8_K)
    act = ctx["act"]
    ctx["ngroups"] = max(spec.block_size // act["block_size"], 1)
    ctx["group"] = spec.block_size // ctx["ngroups"]
    ctx["outer_scale"] = ctx["ngroups"] > 1  # dw * sum_g (da_g * s_g)
    # the SIMD dot adds the int16 pair sums (code * a, two each) of a group's 32-element runs, and then
    # the two 128-bit halves of that sum, before widening
    max_code = 2 if extra["codes"] == "base3" else (1 << extra["code_bits"]) - 1
    ctx["max_code"] = max_code
    ctx["fold_bound"] = 2 * max_code * 128 * (ctx["group"] // 32) * 2
    if ctx["fold_bound"] > 32767:
        raise ValueError(f"{fmt}: a group's pair sums could overflow int16")
    # runs whose codes sit at a shift s > 0 whose products (c << s) * a still pair up within int16 over all
    # runs at that shift are multiplied in place (masked, not shifted) and their sum divided by 2^s exactly
    ctx["inplace_shifts"] = []
    if ctx.get("runs"):
        for r in ctx["runs"]:
            r["mask"] = ctx["code_mask"] << r["shift"]
        for sh in sorted({r["shift"] for r in ctx["runs"]} - {0}):
            count = sum(r["shift"] == sh for r in ctx["runs"])
            if (max_code << sh) < 128 and 2 * (max_code << sh) * 128 * count <= 32767:
                ctx["inplace_shifts"].append(sh)
        total = 2 * max_code * 128 * len(ctx["runs"])  # after the exact divisions
        if ctx["ngroups"] == 1 and 2 * total > 32767:
            raise ValueError(f"{fmt}: the runs' pair sums could overflow int16")
    if extra["codes"] == "base3":
        ctx["base3_plan"] = _base3_plan(fmt, ctx["base3_runs"], [int(v) for v in mod.TRIT_POW3])
        ctx["trit_cut"] = _trit_cuts()
    # the SIMD dot with one activation group per block: each block's 16 int16 pair sums stay exact when
    # four blocks' lanes are added (the 8-block reduction adds lanes in int16 before widening)
    ctx["q8k_trits"] = ctx["q8k_nibbles"] = None
    if ctx["ngroups"] == 1:
        if 4 * 2 * max_code * 128 * (spec.block_size // 32) > 32767:
            raise ValueError(f"{fmt}: four lanes of pair sums could overflow int16")
        if extra["codes"] == "base3":
            ctx["q8k_trits"] = _trit_sources(ctx["base3_plan"])
        elif ctx.get("runs") and extra["code_bits"] == 2:
            ctx["q8k_nibbles"] = _nibble_sources(ctx["runs"], max_code)
    return ctx


def _trit_sources(plan: list[dict]) -> dict | None:
    """The TQ1_0 shape of a base-3 plan, where one pass forms every power once: runs 0-4 one 32-byte load
    at powers 3^0..3^4; runs 5-7 one 16-byte load at 3^0..3^4 (in order: 5 lo, 5 hi, 6 lo, 6 hi, 7 lo) and
    run 7's high half one 4-byte load broadcast, its four groups at powers 3^ks. Another shape: None."""
    if len(plan) != 8 or any(not r["whole"] or r["k"] != i or r["base"] != plan[0]["base"] for i, r in enumerate(plan[:5])):
        return None
    halves = [h for r in plan[5:] for h in (r.get("lo"), r.get("hi"))]
    if any(h is None for h in halves) or any(h["src"] != "load16" or h["k"] != i or h["base"] != halves[0]["base"]
                                             for i, h in enumerate(halves[:5])) or halves[5]["src"] != "bcast4":
        return None
    if not all(0 <= k <= 3 for k in halves[5]["ks"]):
        return None
    return dict(whole=plan[0]["base"], half=halves[0]["base"], bcast=halves[5]["base"], bcast_ks=halves[5]["ks"])


def _nibble_sources(runs: list[dict], max_code: int) -> list[dict] | None:
    """2-bit codes as TQ2_0 stores them: 32-byte sources whose shifts 0, 2, 4, 6 are four runs. The codes
    at shifts 2 and 6 are taken as 4c (masked in place, after a shift by 4 for 6) and their products
    summed apart, then divided by 4 exactly; their pair sums must stay within int16. Another shape: None."""
    by_byte: dict[int, dict[int, int]] = {}
    for r, run in enumerate(runs):
        by_byte.setdefault(run["byte"], {})[run["shift"]] = r
    if any(sorted(s) != [0, 2, 4, 6] for s in by_byte.values()):
        return None
    if 2 * (max_code << 2) * 128 * 2 * len(by_byte) > 32767:
        return None
    return [dict(byte=b, runs=[s[sh] for sh in (0, 2, 4, 6)]) for b, s in sorted(by_byte.items())]


def _trit_cuts() -> list[int]:
    """The top base-3 digit of a byte y, (y * 3) >> 8, is [y >= t1] + [y >= t2]:
    the SIMD kernels compare y ^ 0x80 as signed bytes with t - 129."""
    y = np.arange(256)
    top = (y * 3) >> 8
    cuts = [int(np.flatnonzero(top >= t)[0]) for t in (1, 2)]
    if not np.array_equal(top, sum((y >= t).astype(int) for t in cuts)):
        raise ValueError("the top trit is not two thresholds")
    return [t - 129 for t in cuts]


def _base3_plan(fmt: str, runs: list[dict], pow3: list[int]) -> list[dict]:
    """How the SIMD dot forms each 32-element run's bytes y = byte * 3^k (mod 256): a whole run from one
    32-byte load and one power; else per 16-element half, a 16-byte load and one power, or one 4-byte
    load broadcast to four groups of 4 with a power each. Anything else is refused."""
    log3 = {3 ** k: k for k in range(5)}
    plan = []
    for r, run in enumerate(runs):
        pows = pow3[32 * r: 32 * r + 32]
        if run["whole"] and len(set(pows)) == 1:
            plan.append(dict(whole=True, base=run["lo"]["base"], k=log3[pows[0]]))
            continue
        halves = []
        for chunk, p in ((run["lo"], pows[:16]), (run["hi"], pows[16:])):
            idx = chunk["idx"]
            if idx == list(range(16)) and len(set(p)) == 1:
                halves.append(dict(src="load16", base=chunk["base"], k=log3[p[0]]))
            elif idx == idx[:4] * 4 and idx[:4] == list(range(idx[0], idx[0] + 4)) and all(
                    len(set(p[4 * m: 4 * m + 4])) == 1 for m in range(4)):
                halves.append(dict(src="bcast4", base=chunk["base"] + idx[0], ks=[log3[p[4 * m]] for m in range(4)]))
            else:
                raise ValueError(f"{fmt}: run {r} is neither a whole load nor 16-byte / 4-byte halves")
        plan.append(dict(whole=False, lo=halves[0], hi=halves[1]))
    return plan
