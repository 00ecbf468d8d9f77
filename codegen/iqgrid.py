"""Template facts of the grid IQ formats (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,
IQ2_S, IQ3_XXS, IQ3_S) for codegen/templates/iqgrid.c.j2.

Every one of them decodes a super-block of 256 elements the same way:
group g (8 elements, or 4 for the IQ3 grids) is point ``index_g`` of a grid
of small integers, its elements' signs come from sign bits (IQ2, IQ3), a
delta is added (IQ1), and the block of 16 or 32 elements it lies in is
scaled by a float32 ``db`` from the super-block scale and a 3- or 4-bit
code. The formats differ only in where those bits lie, which the registry
line of each format states as bit positions (functions of the group, the
sign byte or the block number, counted from the start of a field). Here
they become byte offsets, shifts and masks; the grid and the sign table
come from the spec's table modules, never retyped.

Run ``r`` is elements 32r .. 32r+31. The template loops over the 8 runs, so
the bit position of a run's first group part must advance by a constant
number of bytes per run at a constant shift (checked here); scale codes
are read unrolled, once per super-block.
"""

from __future__ import annotations

import importlib

import numpy as np

from codegen.model import ROOT, float_expr, spec_format

QK = 256
RUN = 32


def _table(path: str) -> np.ndarray:
    module, name = path.rsplit(".", 1)
    import sys
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return getattr(importlib.import_module(f"reference.tables.{module}"), name)


def _load(offsets: dict, type_size: int, field: str, bit: int, width: int) -> dict:
    """The narrowest little-endian load (1, 2 or 4 bytes) holding bits
    ``bit .. bit+width-1`` of ``field``, placed so that it ends inside the
    block: its byte offset in the block, the shift and the mask."""
    start = offsets[field] + bit // 8
    shift = bit % 8
    for nbytes in (1, 2, 4):
        if shift + width <= 8 * nbytes:
            break
    else:
        raise ValueError(f"{field} bits {bit}..{bit + width - 1} span more than 4 bytes")
    back = max(0, start + nbytes - type_size)  # slide the load back so it stays inside the block
    return dict(byte=start - back, shift=shift + 8 * back, nbytes=nbytes, mask=(1 << width) - 1, width=width)


def _per_run(offsets, type_size, field, position, width, per_run: int) -> list[dict]:
    """Item j (0 .. per_run-1) of every run as a load at ``byte + step * r``:
    the facts of run 0 and the byte step, checked for all 8 runs."""
    items = []
    for j in range(per_run):
        loads = [_load(offsets, type_size, field, position(r * per_run + j), width) for r in range(QK // RUN)]
        step = loads[1]["byte"] - loads[0]["byte"]
        for r, ld in enumerate(loads):
            if ld["byte"] != loads[0]["byte"] + step * r or ld["shift"] != loads[0]["shift"] \
                    or ld["nbytes"] != loads[0]["nbytes"]:
                raise ValueError(f"{field}: item {j} of run {r} is not at a constant step from run 0")
        items.append(dict(loads[0], step=step))
    return items


def _scale_vector_layout(loads: list[dict], width: int) -> dict | None:
    """How the vector dot product reads all scale codes of a super-block at once:
    "nibbles" (code b = nibble b of consecutive bytes from ``byte``) or "words" (code b =
    the top nibble of the little-endian word of ``step`` = 4 or 8 bytes at ``byte + step * b``);
    None for other layouts (read code by code)."""
    if width != 4 or any(ld["nbytes"] != 1 for ld in loads):
        return None
    first = loads[0]["byte"]
    if all(ld["byte"] == first + b // 2 and ld["shift"] == 4 * (b % 2) for b, ld in enumerate(loads)):
        return dict(kind="nibbles", byte=first, nbytes=len(loads) // 2)
    for step in (4, 8):
        if all(ld["byte"] == first + step * b and ld["shift"] == 4 for b, ld in enumerate(loads)) \
                and len(loads) * step % 16 == 0:
            return dict(kind="words", byte=first - (step - 1), step=step, loads=len(loads) * step // 16)
    return None


def _run_words(items: list[dict], type_size: int) -> list[dict]:
    """The per-run items (grid index parts, sign indices) grouped into little-endian words of
    4 or 8 bytes at ``byte + step * r``, one load each: every item gets ``word`` (its word's
    number) and ``wshift`` (its shift within the word). Items that fit no word keep
    ``word`` None and are loaded on their own."""
    words: list[dict] = []
    for it in sorted(items, key=lambda it: it["byte"]):
        it["word"] = None
        end = it["byte"] + it["nbytes"]
        for k, w in enumerate(words):
            if w["step"] == it["step"] and it["byte"] >= w["byte"] and end - w["byte"] <= 8:
                w["nbytes"] = max(w["nbytes"], end - w["byte"])
                it["word"] = k
                break
        else:
            words.append(dict(byte=it["byte"], step=it["step"], nbytes=it["nbytes"]))
            it["word"] = len(words) - 1
    for w in words:
        w["nbytes"] = 4 if w["nbytes"] <= 4 else 8
        # the last run's word must end inside the block
        w["ok"] = w["byte"] + (QK // RUN - 1) * w["step"] + w["nbytes"] <= type_size
    for it in items:
        w = words[it["word"]]
        it["wshift"] = 8 * (it["byte"] - w["byte"]) + it["shift"]
        if not w["ok"]:
            it["word"] = None
    return words


def iqgrid_context(fmt: str, spec, extra: dict) -> dict:
    offsets = spec.offsets()
    type_size = spec.type_size
    grid = np.ascontiguousarray(_table(extra["grid"]))
    point_bytes = grid.dtype.itemsize  # 8 (u64 points) or 4 (u32 points)
    group = point_bytes
    groups_per_run = RUN // group
    block = extra["block"]
    nblocks = QK // block
    values = grid.astype(f"<u{point_bytes}").view(np.int8 if extra.get("signed_grid") else np.uint8)
    vmax = int(np.abs(values.astype(np.int32)).max())
    # maddubs takes unsigned bytes: the signed values plus an offset (a power of two >= max |value|),
    # pairs of (value + offset) * activation stay within int16
    offset = 1 << max(vmax - 1, 0).bit_length()
    if 2 * (vmax + offset) * 128 > 32767:
        raise ValueError(f"{fmt}: grid values up to {vmax} do not fit the maddubs offset trick")

    ctx = dict(iqgrid=True, group=group, groups_per_run=groups_per_run, block=block, nblocks=nblocks,
               blocks_per_run=RUN // block if block <= RUN else 0, point_bytes=point_bytes,
               grid_values=[f"0x{int(v):0{2 * point_bytes}X}" for v in grid], grid_size=len(grid),
               grid_name=extra["grid"].rsplit(".", 1)[1], vmax=vmax, value_offset=offset,
               offset_shift=offset.bit_length() - 1, signed_grid=bool(extra.get("signed_grid")))

    parts = []
    low = 0
    for field, position, width in extra["index"]:
        parts.append(dict(items=_per_run(offsets, type_size, field, position, width, groups_per_run), low=low))
        low += width
    ctx["index_parts"] = parts
    ctx["index_bits"] = low
    if (1 << low) != len(grid):
        raise ValueError(f"{fmt}: {low} index bits for a grid of {len(grid)} points")

    signs = extra.get("signs")
    ctx["sign_kind"] = signs[0] if signs else None
    if signs and signs[0] == "ksigns":
        _, field, position = signs
        ctx["sign_items"] = _per_run(offsets, type_size, field, position, 7, RUN // 8)
        ksigns = _table("ggml_iq2.KSIGNS_IQ2XS")
        ctx["ksigns"] = [int(v) for v in ksigns]
        # the 8 signs of each table entry as bytes -1 (0xFF, negative) or +1, the second operand of
        # _mm256_sign_epi8 in the vector kernels
        bits = (ksigns[:, None].astype(np.uint64) >> np.arange(8, dtype=np.uint64)) & np.uint64(1)
        units = np.where(bits == 1, np.uint64(0xFF), np.uint64(0x01))
        words = (units << (np.uint64(8) * np.arange(8, dtype=np.uint64))).sum(axis=1, dtype=np.uint64)
        ctx["ksign_units"] = [f"0x{int(w):016X}" for w in words]
    elif signs and signs[0] == "bytes":
        _, field, position = signs
        items = _per_run(offsets, type_size, field, position, 8, RUN // 8)
        if any(it["byte"] != items[0]["byte"] + j or it["shift"] for j, it in enumerate(items)):
            raise ValueError(f"{fmt}: the sign bytes of a run are not 4 consecutive bytes")
        ctx["sign_word"] = dict(byte=items[0]["byte"], step=items[0]["step"])

    field, position, width = extra["scale"]
    ctx["scale_loads"] = [_load(offsets, type_size, field, position(b), width) for b in range(nblocks)]
    ctx["scale_vec"] = _scale_vector_layout(ctx["scale_loads"], width)
    ctx["run_words"] = _run_words([it for part in parts for it in part["items"]] + ctx.get("sign_items", []),
                                  type_size)
    ctx["db"] = extra["db"]
    ctx["db_post"] = extra.get("db_post")

    delta = extra.get("delta")
    ctx["delta"] = None
    if delta:
        per, field, position, sums = delta
        count = nblocks if per == "block" else QK // group
        ctx["delta"] = dict(per=per, sums=sums, loads=[_load(offsets, type_size, field, position(k), 1)
                                                      for k in range(count)])

    ctx["super_scale"] = extra.get("super_scale", "fp16")
    if ctx["super_scale"] == "fp16":
        ctx["off_d"] = offsets["d"]
    else:  # IQ1_M: four nibbles at the top of the scale words
        ctx["off_scales"] = offsets["scales"]

    act = spec_format(spec.vec_dot_format)
    aoffs = act.offsets()
    ctx["kact"] = dict(name=act.name, type_size=act.type_size, off_d=aoffs["d"], off_qs=aoffs["qs"],
                       off_bsums=aoffs["bsums"])
    ctx["contrib_c"] = float_expr(extra["contrib"])
    ctx["contrib_avx2"] = float_expr(extra["contrib"], "_mm256")
    ctx["contrib_uses"] = sorted({n for n in ("dsum", "post") if n in extra["contrib"]})
    ctx["dot_post"] = extra.get("dot_post")
    return ctx
