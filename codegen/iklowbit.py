"""Template facts of ik_llama.cpp's low-bit families: the trellis formats
(kt.c.j2), the ternary IQ1_BN/IQ2_BN (bn.c.j2) and the binary Q1_0_G128
(binary.c.j2). Every table and constant is read from the
spec modules, never retyped."""

from __future__ import annotations

import importlib
import sys

import numpy as np

from codegen.model import ROOT, spec_format


def _reference(name: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"reference.{name}")


def _q8_0_facts() -> dict:
    act = spec_format("q8_0")
    offs = act.offsets()
    return dict(name=act.name, type_size=act.type_size, block_size=act.block_size, off_d=offs["d"],
                off_qs=offs["qs"])


def kt_context(fmt: str, spec, extra: dict) -> dict:
    """The trellis generator's constants (``reference/_kt.py``): the
    multiplier's powers ``KA**(k+1) mod 2**32`` for k = 0..G-1 (value k of a
    seed is ``(seed + offset) * KA**(k+1)``, so one vector multiply makes a
    seed's G states at once), the offsets, and the scale table."""
    kt = _reference("_kt")
    tables = _reference("tables.ik_llama")
    group = extra["group"]
    powers, x = [], 1
    for _ in range(group):
        x = (x * int(kt.KA)) & 0xFFFFFFFF
        powers.append(x)
    offsets = [kt.OFFSET] + ([_reference(fmt).SECOND_OFFSET] if extra.get("two_codebooks") else [])
    return dict(row_meta_size=spec.row_meta_size, group=group, nsub=spec.block_size // 32,
                groups_per_sub=32 // group, powers=powers, offsets=offsets,
                iq4k_values=[int(v) for v in np.asarray(tables.IQ4K_VALUES)[:16]],
                act=_q8_0_facts())


def bn_context(fmt: str, spec, extra: dict) -> dict:
    """IQ1_BN: for each element of a block, the byte holding its trit and the
    multiplier that brings it to the top (``TRIT_BYTE``, ``TRIT_MULT`` of
    reference/iq1_bn.py); the activation is Q8_K64 (reference/q8_k64.py)."""
    act = spec_format(spec.vec_dot_format)
    q8k64 = _reference(spec.vec_dot_format)
    ctx = dict(row_meta_size=spec.row_meta_size, act=dict(
        name=act.name, row_meta_size=act.row_meta_size, type_size=act.type_size, block_size=act.block_size,
        lanes=q8k64.LANES, lane_width=q8k64.LANE_WIDTH))
    if fmt == "iq1_bn":
        module = _reference(fmt)
        ctx["trit_byte"] = [int(v) for v in module.TRIT_BYTE]
        ctx["trit_mult"] = [int(v) for v in module.TRIT_MULT]
    return ctx


def binary_context(fmt: str, spec, extra: dict) -> dict:
    act = _q8_0_facts()
    return dict(act=act, act_per_block=spec.block_size // act["block_size"])
