"""Template context: the spec module's layout facts plus the registry's
per-format facts. Python decides here; templates only format."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

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


def context(fmt: str, isa: str, ops: tuple[str, ...], extra: dict) -> dict:
    spec = spec_format(fmt)
    ctx = dict(fmt=fmt, isa=isa, ops=ops, block_size=spec.block_size, type_size=spec.type_size,
               fields=_fields(spec), act=None)
    ctx.update(extra)
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
