"""Verify another implementation of the formats against the spec.

A *target* is anything that quantizes float32 rows to block bytes or
dequantizes block bytes to float32 rows. The spec computes the expected
bytes and floats of every case of the edge-case corpus (``quantspec.corpus``)
plus random cases; the target's results must equal them exactly: bytes byte
for byte, floats bit for bit (two NaNs count as equal whatever their payload
and sign, as IEEE 754 leaves the payload of an operation on NaNs to the
implementation). The first difference of each (format, op) is reported by
case, block and field.

Targets (``load_target``):

``gguf-py``
    the ``gguf`` package's NumPy quants, ``gguf.quants.quantize(data,
    qtype)`` / ``gguf.quants.dequantize(data, qtype)``, for the types it has.
    It takes no importance matrix: cases with one are skipped for formats
    that use it.
``ggml``
    libggml from llama-cpp-python (``quantspec.oracle``):
    ``ggml_quantize_chunk`` and the type traits' ``to_float``.
``kernels`` or ``kernels:ISA``
    quantspec's own compiled kernels (the best ISA, or the one named).
``module:function``
    a user's callable ``fn(fmt, op, data, imatrix) -> np.ndarray``:

    * ``fmt``: the format name as ``qs.formats()`` lists it (``"q4_0"``);
    * ``op == "quantize"``: ``data`` is float32 ``(nrows, n)``,
      C-contiguous; ``imatrix`` is float32 ``(n,)`` or None; return the
      uint8 block bytes ``(nrows, row_bytes)`` (any shape holding exactly
      those bytes in row order is accepted);
      (``row_bytes = qs.format_info(fmt).row_bytes(n)``: the per-row
      metadata of ik_llama formats first, then the blocks);
    * ``op == "dequantize"``: ``data`` is uint8 ``(nrows, row_bytes)``,
      ``imatrix`` is None; return float32 ``(nrows, n)`` (or any shape with
      those values in row order);
    * raise ``NotImplementedError`` for a format, op or case (e.g. with an
      importance matrix) that it does not implement: those are reported as
      skipped, not as failures. Any other exception is a failure.

    ``module`` is imported with the current directory on ``sys.path``.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from quantspec import api, dispatch, registry
from quantspec.reference import BlockFormat
from quantspec.reference._format import CTYPES

OPS = ("quantize", "dequantize")
PASS, FAIL, ERROR, NA = "pass", "FAIL", "ERROR", "n/a"


# ----------------------------------------------------------------- vectors

@dataclass(frozen=True, eq=False)
class Vector:
    """One case with its expected results: ``q`` (uint8 block rows) is what
    quantizing ``x`` must give and what dequantizing starts from; ``y``
    (float32 rows) is what dequantizing ``q`` must give."""

    id: str
    comment: str
    flags: tuple[str, ...]
    x: np.ndarray | None
    imatrix: np.ndarray | None
    q: np.ndarray
    y: np.ndarray


def expected(fmt: str, case) -> Vector:
    """A corpus case with the spec's results (the NumPy reference, not a kernel)."""
    with dispatch.use_isa(dispatch.REFERENCE), np.errstate(all="ignore"):
        q = case.q if case.x is None else api.quantize(fmt, case.x, imatrix=case.imatrix)
        y = api.dequantize(fmt, q)
    return Vector(case.id, case.comment, case.flags, case.x, case.imatrix, q, y)


def spec_vectors(fmt: str, random_cases: int = 4, seed: int = 0) -> list[Vector]:
    """The corpus of ``fmt`` plus ``random_cases`` random cases, with expected results."""
    from quantspec import corpus

    return [expected(fmt, c) for c in corpus.cases(fmt) + corpus.random_cases(fmt, random_cases, seed)]


# ----------------------------------------------------------------- targets

class Target:
    """What ``verify`` compares with the spec. ``supports`` returns None or
    the reason the target lacks a format; ``quantize``/``dequantize`` raise
    NotImplementedError for what they do not implement."""

    name = "target"

    def supports(self, fmt: str) -> str | None:
        return None

    def quantize(self, fmt: str, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def dequantize(self, fmt: str, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GgufPyTarget(Target):
    name = "gguf-py"

    def __init__(self):
        import gguf
        from gguf import quants

        self.gguf, self.quants = gguf, quants

    def qtype(self, fmt: str):
        spec = registry.spec(fmt)
        if spec.origin != "ggml":
            return None
        qtype = getattr(self.gguf.GGMLQuantizationType, fmt.upper(), None)
        if qtype is None or self.gguf.GGML_QUANT_SIZES.get(qtype) != (spec.block_size, spec.type_size):
            return None
        return qtype

    def supports(self, fmt: str) -> str | None:
        return None if self.qtype(fmt) is not None else f"gguf-py has no type {fmt.upper()}"

    def _run(self, op: str, fmt: str, data: np.ndarray) -> np.ndarray:
        qtype = self.qtype(fmt)
        try:
            with np.errstate(all="ignore"):
                return getattr(self.quants, op)(data, qtype)
        except NotImplementedError:  # gguf-py's classes without quantize_blocks raise a bare one
            raise NotImplementedError(f"gguf-py has no {op} for {qtype.name}") from None

    def quantize(self, fmt, x, imatrix):
        out = self._run("quantize", fmt, x)
        if imatrix is not None and registry.spec(fmt).imatrix != "ignored":
            raise NotImplementedError("gguf-py's quantize takes no importance matrix")
        return np.ascontiguousarray(out).view(np.uint8)

    def dequantize(self, fmt, q):
        return self._run("dequantize", fmt, q)


class GgmlTarget(Target):
    name = "ggml"

    def __init__(self):
        from quantspec.oracle import ggml

        self.lib = ggml()

    def supports(self, fmt: str) -> str | None:
        return None if self.lib.supports(fmt) else f"libggml has no {fmt} with this layout"

    def quantize(self, fmt, x, imatrix):
        return self.lib.quantize(fmt, x, imatrix)

    def dequantize(self, fmt, q):
        try:
            return self.lib.dequantize(fmt, q)
        except ValueError as exc:  # no to_float (f32)
            raise NotImplementedError(str(exc)) from None


class KernelTarget(Target):
    """quantspec's compiled kernels (through the public API), best ISA or one ISA."""

    def __init__(self, isa: str | None = None):
        self.isa = isa
        self.name = f"kernels:{isa}" if isa else "kernels"
        if isa is not None and isa not in dispatch.available_isas():
            raise ValueError(f"ISA {isa!r} is not available here: expected one of {dispatch.available_isas()}")

    def _isa(self, fmt, op):
        if self.isa:
            return self.isa if dispatch.has_kernel(self.isa, fmt, op) else None
        chosen = dispatch.implementation(fmt, op).isa
        return None if chosen == dispatch.REFERENCE else chosen

    def quantize(self, fmt, x, imatrix):
        isa = self._isa(fmt, "quantize")
        if isa is None:
            raise NotImplementedError(f"no {fmt} quantize kernel")
        with dispatch.use_isa(isa):
            return api.quantize(fmt, x, imatrix=imatrix)

    def dequantize(self, fmt, q):
        isa = self._isa(fmt, "dequantize")
        if isa is None:
            raise NotImplementedError(f"no {fmt} dequantize kernel")
        with dispatch.use_isa(isa):
            return api.dequantize(fmt, q)


class CallableTarget(Target):
    """``fn(fmt, op, data, imatrix) -> np.ndarray`` (see the module docstring)."""

    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name

    def quantize(self, fmt, x, imatrix):
        return self.fn(fmt, "quantize", x, imatrix)

    def dequantize(self, fmt, q):
        return self.fn(fmt, "dequantize", q, None)


class TargetError(ValueError):
    """A TARGET argument that names nothing loadable."""


def load_target(spec: str) -> Target:
    """``gguf-py``, ``ggml``, ``kernels[:ISA]`` or ``module:function``."""
    if spec == "gguf-py":
        try:
            return GgufPyTarget()
        except ImportError as exc:
            raise TargetError(f"target gguf-py needs the gguf package: {exc}") from None
    if spec == "ggml":
        from quantspec.oracle import GgmlUnavailable

        try:
            return GgmlTarget()
        except (GgmlUnavailable, OSError) as exc:
            raise TargetError(f"target ggml needs libggml from llama-cpp-python: {exc}") from None
    if spec == "kernels" or spec.startswith("kernels:"):
        return KernelTarget(spec.partition(":")[2] or None)
    modname, sep, attr = spec.partition(":")
    if not sep or not modname or not attr:
        raise TargetError(f"unknown target {spec!r}: expected gguf-py, ggml, kernels[:ISA] or module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(modname)
    except ImportError as exc:
        raise TargetError(f"target {spec!r}: cannot import {modname!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"target {spec!r}: {modname!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(f"target {spec!r}: {attr!r} is not callable")
    return CallableTarget(obj, spec)


# -------------------------------------------------------------- comparison

@dataclass
class Difference:
    """Where a target's result first differs from the expected one."""

    case: Vector
    rows_blocks: str  # "3 of 32 blocks differ"
    lines: list[str]


@dataclass
class NanPayloads:
    """Not a difference: both results are NaN in ``count`` places, with other
    payload or sign bits (reported, never failed)."""

    count: int


@dataclass
class Outcome:
    """The result of one (format, op) against a target."""

    fmt: str
    op: str
    status: str
    compared: int = 0  # cases compared
    skipped: int = 0  # cases the target does not implement
    blocks: int = 0  # blocks compared
    failing: list[str] = field(default_factory=list)  # ids of the cases that differ or raise
    first: Difference | None = None
    reason: str = ""
    nan_payloads: int = 0  # values where both are NaN with other bits

    @property
    def ok(self) -> bool:
        return self.status in (PASS, NA)


def _value(ctype: str, raw: bytes) -> str:
    """A field element's bits and value: ``0x3c00 (1.0)``."""
    dtype, size = CTYPES[ctype]
    v = np.frombuffer(raw, dtype=dtype)[0]
    if ctype in ("f16", "bf16"):
        bits = int(v)
        value = np.array(bits, np.uint16).view(np.float16) if ctype == "f16" else \
            np.array(bits << 16, np.uint32).view(np.float32)
        return f"0x{bits:04x} ({float(value)!r})"
    if ctype == "f32":
        return f"0x{int(np.frombuffer(raw, '<u4')[0]):08x} ({float(v)!r})"
    return f"{int(v)} (0x{int(v) & ((1 << 8 * size) - 1):0{2 * size}x})"


def _locate(layout: BlockFormat, offset: int) -> tuple[str, str]:
    """Name the field element holding byte ``offset`` of a block: ("qs[3]", ctype)."""
    for f, start in zip(layout.fields, layout.offsets().values()):
        if start <= offset < start + f.nbytes:
            k = (offset - start) // CTYPES[f.ctype][1]
            return (f.name if f.count == 1 else f"{f.name}[{k}]"), f.ctype
    raise ValueError(offset)


def _field_elements(layout: BlockFormat, block: bytes):
    """(element name, ctype, raw bytes) for every element of every field of a block."""
    for f, start in zip(layout.fields, layout.offsets().values()):
        size = CTYPES[f.ctype][1]
        for k in range(f.count):
            raw = block[start + k * size:start + (k + 1) * size]
            yield (f.name if f.count == 1 else f"{f.name}[{k}]"), f.ctype, raw


def _hex_fields(layout: BlockFormat, block: bytes) -> str:
    """``name=value`` per field, in hex: bytes for uint8 arrays, the
    little-endian value of wider elements (``d=3c00`` is fp16 1.0)."""
    parts = []
    for f, start in zip(layout.fields, layout.offsets().values()):
        dtype, size = CTYPES[f.ctype]
        values = np.frombuffer(block[start:start + f.nbytes], dtype=dtype.replace("f4", "u4"))
        parts.append(f"{f.name}=" + " ".join(f"{int(v) & ((1 << 8 * size) - 1):0{2 * size}x}" for v in values))
    return " ".join(parts)


def _where(layout: BlockFormat, nblocks_row: int, row: int, block: int) -> str:
    return f"block {row * nblocks_row + block} (row {row}, block {block} of {nblocks_row} in the row)"


def compare_bytes(layout: BlockFormat, case: Vector, actual) -> Difference | None:
    """Exact comparison of quantized rows; None when equal."""
    want = case.q
    got = np.asarray(actual)
    if got.dtype != np.uint8:
        got = np.ascontiguousarray(got).view(np.uint8) if got.dtype.itemsize else got
    if got.size != want.size:
        return Difference(case, "wrong size", [f"returned {got.size} bytes ({got.dtype}, shape {got.shape}); "
                                               f"expected {want.size} ({want.shape[0]} rows of {want.shape[1]})"])
    got = got.reshape(want.shape)
    if np.array_equal(got, want):
        return None
    meta, ts = layout.row_meta_size, layout.type_size
    nblocks_row = (want.shape[1] - meta) // ts
    lines = []
    meta_differ = np.zeros(want.shape[0], dtype=bool)
    if meta:
        meta_differ = (got[:, :meta] != want[:, :meta]).any(axis=1)
    blocks_w = want[:, meta:].reshape(want.shape[0], nblocks_row, ts)
    blocks_g = got[:, meta:].reshape(want.shape[0], nblocks_row, ts)
    block_differ = (blocks_w != blocks_g).any(axis=2)
    summary = f"{int(block_differ.sum())} of {block_differ.size} blocks differ"
    if meta:
        summary += f", row metadata of {int(meta_differ.sum())} of {want.shape[0]} rows"
    first_row = int(np.argmax(meta_differ | block_differ.any(axis=1)))
    if meta_differ[first_row]:
        k = int(np.argmax(want[first_row, :meta] != got[first_row, :meta]))
        lines.append(f"row {first_row}: row metadata (the {meta} bytes before the blocks) differs first, at byte {k}")
        lines.append(f"  expected {want[first_row, :meta].tobytes().hex(' ')}")
        lines.append(f"  actual   {got[first_row, :meta].tobytes().hex(' ')}")
        if not block_differ[first_row].any():
            return Difference(case, summary, lines)
    b = int(np.argmax(block_differ[first_row]))
    w, g = blocks_w[first_row, b].tobytes(), blocks_g[first_row, b].tobytes()
    k = next(i for i in range(ts) if w[i] != g[i])
    elem, _ = _locate(layout, k)
    lines.append(f"first: {_where(layout, nblocks_row, first_row, b)}, byte {k} of the block = {elem}")
    differing = [(name, ctype, rw, rg) for (name, ctype, rw), (_, _, rg)
                 in zip(_field_elements(layout, w), _field_elements(layout, g)) if rw != rg]
    lines.append("fields that differ in this block: " + ", ".join(d[0] for d in differing[:16])
                 + (f", ... ({len(differing)} elements)" if len(differing) > 16 else ""))
    for name, ctype, rw, rg in differing[:4]:
        lines.append(f"  {name:<10} expected {_value(ctype, rw)}   actual {_value(ctype, rg)}")
    lines.append(f"expected {_hex_fields(layout, w)}")
    lines.append(f"actual   {_hex_fields(layout, g)}")
    if case.x is not None:
        bs = layout.block_size
        xs = case.x[first_row, b * bs:(b + 1) * bs]
        shown = " ".join(f"{v:08x}" for v in xs[:8].view(np.uint32))
        lines.append(f"input block (float32 bits): {shown}{' ...' if bs > 8 else ''}")
    return Difference(case, summary, lines)


def compare_floats(layout: BlockFormat, case: Vector, actual) -> Difference | None:
    """Bit comparison of dequantized rows (NaN equals NaN); None when equal."""
    want = case.y
    got = np.asarray(actual)
    if got.dtype != np.float32:
        return Difference(case, "wrong dtype", [f"returned dtype {got.dtype}, shape {got.shape}; expected "
                                                f"float32 {want.shape}"])
    if got.size != want.size:
        return Difference(case, "wrong size", [f"returned {got.size} floats (shape {got.shape}); expected "
                                               f"{want.size} ({want.shape[0]} rows of {want.shape[1]})"])
    got = np.ascontiguousarray(got).reshape(want.shape)
    wb, gb = want.view(np.uint32), got.view(np.uint32)
    differ = (wb != gb) & ~(np.isnan(want) & np.isnan(got))
    nan_payloads = int(((wb != gb) & np.isnan(want) & np.isnan(got)).sum())
    if not differ.any():
        return NanPayloads(nan_payloads) if nan_payloads else None
    bs = layout.block_size
    nrows, n = want.shape
    per_block = differ.reshape(nrows, n // bs, bs).any(axis=2)
    summary = f"{int(per_block.sum())} of {per_block.size} blocks differ ({int(differ.sum())} of {differ.size} values)"
    r, c = (int(i) for i in np.argwhere(differ)[0])
    b, j = divmod(c, bs)
    nblocks_row = n // bs
    lines = [f"first: {_where(layout, nblocks_row, r, b)}, element {j} of the block (row {r} column {c})",
             f"  expected 0x{int(wb[r, c]):08x} ({float(want[r, c])!r})   actual 0x{int(gb[r, c]):08x} "
             f"({float(got[r, c])!r})",
             f"{int(differ[r, b * bs:(b + 1) * bs].sum())} of {bs} elements of this block differ"]
    start = layout.row_meta_size + b * layout.type_size
    lines.append(f"input block: {_hex_fields(layout, case.q[r, start:start + layout.type_size].tobytes())}")
    if layout.row_meta_size:
        lines.append(f"input row metadata: {case.q[r, :layout.row_meta_size].tobytes().hex(' ')}")
    return Difference(case, summary, lines)


# ------------------------------------------------------------------ driver

def _call(fn, *args):
    with np.errstate(all="ignore"):
        return fn(*args)


def check(target: Target, fmt: str, layout: BlockFormat, vectors: list[Vector],
          ops=OPS) -> list[Outcome]:
    """Run ``vectors`` of one format through ``target``; one Outcome per op."""
    outcomes = []
    unsupported = target.supports(fmt)
    for op in ops:
        if unsupported:
            outcomes.append(Outcome(fmt, op, NA, reason=unsupported))
            continue
        o = Outcome(fmt, op, PASS)
        skips: dict[str, int] = {}
        for v in vectors:
            if op == "quantize" and v.x is None:
                continue
            try:
                # copies: a target that writes into its input must not change the expectations
                if op == "quantize":
                    im = None if v.imatrix is None else v.imatrix.copy()
                    diff = compare_bytes(layout, v, _call(target.quantize, fmt, v.x.copy(), im))
                else:
                    diff = compare_floats(layout, v, _call(target.dequantize, fmt, v.q.copy()))
            except NotImplementedError as exc:
                o.skipped += 1
                why = str(exc) or "not implemented"
                skips[why] = skips.get(why, 0) + 1
                continue
            except Exception as exc:  # a target's failure is a result, not a crash of ours
                o.compared += 1
                o.failing.append(v.id)
                if o.first is None:
                    o.status = ERROR
                    o.first = Difference(v, "raised", [f"{type(exc).__name__}: {exc}"])
                continue
            o.compared += 1
            o.blocks += v.q.shape[0] * ((v.q.shape[1] - layout.row_meta_size) // layout.type_size)
            if isinstance(diff, NanPayloads):
                o.nan_payloads += diff.count
                diff = None
            if diff is not None:
                o.failing.append(v.id)
                if o.first is None:
                    o.status = FAIL
                    o.first = diff
        said = "; ".join(f"{why} ({k} cases)" for why, k in skips.items())
        if o.compared == 0:
            o.status, o.reason = NA, said or "no cases"
        elif o.skipped:
            o.reason = f"{o.skipped} cases skipped: {said}"
        outcomes.append(o)
    return outcomes


def verify(target: Target, formats=None, ops=OPS, random_cases: int = 4, seed: int = 0,
           progress=None) -> list[Outcome]:
    """The spec's corpus and ``random_cases`` random cases of each format (all
    formats by default) through ``target``."""
    formats = [registry.resolve(f) for f in formats] if formats else registry.formats()
    outcomes = []
    for fmt in formats:
        if progress:
            progress(fmt)
        reason = target.supports(fmt)
        vectors = [] if reason else spec_vectors(fmt, random_cases, seed)
        outcomes += check(target, fmt, registry.spec(fmt), vectors, ops)
    return outcomes


def render(outcomes: list[Outcome], target_name: str) -> str:
    """The report: one line per (format, op), details under each failure."""
    lines = []
    width = max([len(o.fmt) for o in outcomes] + [6])
    for o in outcomes:
        head = f"{o.fmt:<{width}} {o.op:<10} {o.status:<5}"
        if o.status == NA:
            lines.append(f"{head} {o.reason}")
            continue
        counts = f"{o.compared} cases, {o.blocks} blocks" + (f"; {o.reason}" if o.reason else "")
        if o.nan_payloads:
            counts += (f"; {o.nan_payloads} values are NaN in both with other payload/sign bits "
                       f"(allowed: the spec leaves NaN payloads open)")
        if o.status == PASS:
            lines.append(f"{head} {counts}")
            continue
        d = o.first
        lines.append(f"{head} {len(o.failing)} of {o.compared} cases differ ({counts})")
        lines.append(f"    case {d.case.id} [{', '.join(d.case.flags)}]: {d.rows_blocks}")
        lines.append(f"      {d.case.comment}")
        lines.extend(f"    {line}" for line in d.lines)
        others = [c for c in o.failing if c != d.case.id]
        if others:
            lines.append(f"    also: {', '.join(others[:12])}{' ...' if len(others) > 12 else ''}")
    failed = [o for o in outcomes if not o.ok]
    compared = [o for o in outcomes if o.status != NA]
    if failed:
        lines.append(f"{target_name}: {len(failed)} of {len(compared)} (format, op) pairs differ from the spec")
    elif compared:
        lines.append(f"{target_name}: every compared (format, op) pair agrees with the spec bit for bit "
                     f"({len(compared)} compared)")
    else:
        lines.append(f"{target_name}: nothing compared (the target implements none of the requested formats/ops)")
    return "\n".join(lines)
