"""Throughput of quantspec against ggml, both measured in one run on the same data.

Every timing is best-of-k after a warm-up call, one thread unless a row says
otherwise (thread CPU time; the wall clock for rows with threads or out of
cache), in millions of elements (weights) per second. Ours and the baseline
are called alternately, so that both sides of a ratio meet the same machine. Speed is reported, never asserted: the tests only check that the
machinery runs and that the bit-exactness column holds.

What "bit-exact" means per row:

- quantize: our bytes equal ``ggml_quantize_chunk``'s (for the
  activation-only q8_1, ggml's ``quantize_row_q8_1_ref``);
- dequantize: our float bit patterns equal ggml's ``to_float``; where ggml
  has no ``to_float`` (f32, q8_1) they are compared across every ISA here
  and the NumPy spec instead (marked ``†``);
- vec_dot: the result is bit-identical across every ISA here and the NumPy
  spec on a slice of the rows (ggml's own summation order differs per ISA,
  so equality with ggml is not the claim);
- other comparisons: threads=N output equals threads=1 output; the spec
  equals gguf-py; the out-of-cache output equals ggml's ``to_float``; the
  kernels' quantize equals the NumPy spec's ("vs spec").

ggml (the oracle's libggml) has no ik_llama.cpp format: such a format is
timed against the mainline format of similar size named in
``GGML_COUNTERPART`` (ggml quantizing, dequantizing and taking dot products
of that format on the same data; the baseline column reads e.g. "ggml
iq4_xs"), and its bit-exactness is checked across every ISA here and the
NumPy spec (``†``).
"""

from __future__ import annotations

import ctypes
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import quantspec as qs
from quantspec import dispatch, oracle

DEFAULT_N = 4 * 1024 * 1024
QUICK_N = 1024 * 1024
ROW = 1024  # quantize/dequantize rows are ROW elements long
# vec_dot is a mat-vec: weight rows of VEC_DOT_ROW elements (a 4096-wide layer)
# times one activation row. ggml's vec_dot takes one row per call; a C loop
# over rows (quantspec._rowloop) calls it, so neither side pays Python per row.
VEC_DOT_ROW = 4096
OUT_OF_CACHE_BYTES = 1 << 30  # float32 output of the out-of-cache dequantize row
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
NA = "–"
#: The ggml format an ik_llama.cpp format is timed against: the mainline
#: format of about the same bits per weight and kind (IQ2_XS's quantize needs
#: an importance matrix: ones are passed).
GGML_COUNTERPART = {
    "iq4_kss": "iq4_xs", "iq4_ks": "iq4_xs", "iq5_ks": "q5_k", "iq3_ks": "q3_k", "iq2_ks": "iq2_xs",
    "iq2_kl": "iq2_xs", "iq2_k": "q2_k", "iq3_k": "q3_k", "iq4_k": "q4_k", "iq5_k": "q5_k", "iq6_k": "q6_k",
    "q6_0": "q8_0", "iq1_kt": "tq1_0", "iq2_kt": "q2_k", "iq3_kt": "q3_k", "iq4_kt": "iq4_xs",
    "iq1_bn": "tq1_0", "iq2_bn": "tq2_0", "q1_0_g128": "q1_0",
}
SPEC_QUANTIZE = "vs spec"
SPEC_QUANTIZE_ROWS = 4  # rows of 1024 the NumPy spec quantizes (its searches are slow)
GGUF, OUT_OF_CACHE = "spec vs gguf-py", "out of cache vs copy"


@dataclass
class Result:
    """One timed comparison: ``ours`` against ``base`` (Melem/s each)."""

    kind: str  # "ggml" (the main table), else the comparison, e.g. "2 threads vs 1"
    fmt: str
    op: str
    isa: str  # our implementation
    ours: float
    base: float | None  # None: the baseline lacks the op
    exact: bool | None  # None: not checked
    base_name: str = "ggml"  # the main table's baseline: "ggml", or "ggml <counterpart>"
    ours_label: str = ""
    note: str = ""  # "†": exactness checked across ISAs, not against ggml

    @property
    def ratio(self) -> float | None:
        return None if self.base is None or self.base <= 0 else self.ours / self.base


def best_of(fn: Callable[[], object], repeats: int, warmup: int = 1, clock=time.thread_time) -> float:
    """The fastest of ``repeats`` timed calls: the least disturbed by the OS.

    One-thread work is timed with this thread's CPU time, so that other
    processes on a shared machine do not count; work spread over threads
    (and the copy bandwidth) is timed by the wall clock (``clock=time.perf_counter``).
    """
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def best_of_pair(fn: Callable[[], object], base: Callable[[], object] | None, repeats: int,
                 warmup: int = 1, clock=time.thread_time) -> tuple[float, float | None]:
    """``best_of`` for ours and the baseline, their calls alternating: on a
    shared machine whose speed drifts (a busy sibling core, frequency
    changes), both sides then meet the same conditions and the ratio holds,
    where two blocks of calls one after the other can catch different ones.
    ``base`` None: ``(best_of(fn), None)``."""
    if base is None:
        return best_of(fn, repeats, warmup, clock), None
    for _ in range(warmup):
        fn()
        base()
    best, best_base = math.inf, math.inf
    for _ in range(repeats):
        t0 = clock()
        fn()
        t1 = clock()
        base()
        t2 = clock()
        best, best_base = min(best, t1 - t0), min(best_base, t2 - t1)
    return best, best_base


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and bool((a.view(np.uint32) == b.view(np.uint32)).all())


class GgmlCalls:
    """Zero-argument callables that run ggml's C functions into preallocated
    buffers, so that timing sees no allocation and as little Python as possible."""

    def __init__(self):
        try:
            self.g = oracle.ggml()
        except (oracle.GgmlUnavailable, OSError):
            self.g = None

    def _type(self, fmt: str) -> int | None:
        if self.g is None or not self.g.supports(fmt):
            return None
        return qs.format_info(fmt).type_id

    def quantize(self, fmt: str, x: np.ndarray, out: np.ndarray, imatrix: np.ndarray | None = None):
        t = self._type(fmt)
        if t is None:
            return None
        im = None if imatrix is None else imatrix.ctypes.data
        nrows, n = x.shape
        if fmt in oracle.ACTIVATION_ONLY:  # ggml_quantize_chunk refuses them: the reference row quantizer
            ref = self.g.reference_row_quantizer(fmt)
            return lambda: ref(x.ctypes.data, out.ctypes.data, x.size)  # no row metadata: one flat row
        return lambda: self.g.base.ggml_quantize_chunk(t, x.ctypes.data, out.ctypes.data, 0, nrows, n, im)

    def dequantize(self, fmt: str, q: np.ndarray, y: np.ndarray):
        t = self._type(fmt)
        if t is None:
            return None
        fn = self.g.base.ggml_get_type_traits(t).contents.to_float
        if not fn:
            return None
        conv = oracle._TO_FLOAT(fn)
        if qs.format_info(fmt).row_meta_size == 0:  # blocks are independent: the matrix is one long row
            return lambda: conv(q.ctypes.data, y.ctypes.data, y.size)
        rb, n = q.shape[1], y.shape[1]
        return lambda: [conv(q.ctypes.data + r * rb, y.ctypes.data + 4 * r * n, n) for r in range(q.shape[0])]

    def vec_dot(self, fmt: str, wq: np.ndarray, aq: np.ndarray, out: np.ndarray, n: int):
        """ggml's vec_dot over every row, the row loop in C."""
        t = self._type(fmt)
        if t is None:
            return None
        fp = self.g.cpu.ggml_get_type_traits_cpu(t).contents.vec_dot
        if not fp:
            return None
        from quantspec import _rowloop

        return lambda: _rowloop.vec_dot_rows(fp, n, wq.shape[0], wq.ctypes.data, wq.shape[1], aq.ctypes.data,
                                             out.ctypes.data)


class Counterpart:
    """ggml's calls on the mainline format standing in for an ik_llama.cpp
    format (``GGML_COUNTERPART``), on the same data."""

    def __init__(self, gg: GgmlCalls, fmt: str):
        self.gg, self.name = gg, GGML_COUNTERPART.get(fmt)
        if self.name is None or gg._type(self.name) is None:
            self.name = None

    @property
    def label(self) -> str:
        return f"ggml {self.name}"

    def _imatrix(self, n: int) -> np.ndarray | None:
        return np.ones(n, np.float32) if qs.format_info(self.name).imatrix == "required" else None

    def _quantized(self, x: np.ndarray) -> np.ndarray:
        return self.gg.g.quantize(self.name, x, self._imatrix(x.shape[1]))

    def quantize(self, x: np.ndarray):
        out = np.zeros((x.shape[0], qs.format_info(self.name).row_bytes(x.shape[1])), np.uint8)
        im = self._imatrix(x.shape[1])
        call = self.gg.quantize(self.name, x, out, im)
        return call and (lambda: (call(), im))  # keeps the imatrix alive

    def dequantize(self, x: np.ndarray):
        q, y = self._quantized(x), np.zeros(x.shape, np.float32)
        call = self.gg.dequantize(self.name, q, y)
        return call and (lambda: (call(), q, y))

    def vec_dot(self, xw: np.ndarray, act: np.ndarray):
        wq = self._quantized(xw)
        aq = qs.quantize(qs.format_info(self.name).vec_dot_format, act)
        out = np.zeros(xw.shape[0], np.float32)
        call = self.gg.vec_dot(self.name, wq, aq, out, xw.shape[1])
        return call and (lambda: (call(), wq, aq))


def _isas_agree(fmt: str, op: str, *args, **kwargs) -> bool:
    """``op`` gives the same bits on every ISA with a kernel here and on the spec."""
    outs = []
    for isa in dispatch.available_isas():
        if isa != dispatch.REFERENCE and not dispatch.has_kernel(isa, fmt, op):
            continue
        with qs.use_isa(isa):
            outs.append(getattr(qs, op)(fmt, *args, **kwargs))
    if op == "quantize":
        return all(np.array_equal(outs[0], o) for o in outs[1:])
    return all(_same_bits(outs[0], o) for o in outs[1:])


def _melems(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-12) / 1e6


#: Formats whose NumPy quantizer takes milliseconds per block (grid, codebook-shift
#: and trellis searches): their spec quantize is not timed on benchmark-sized inputs.
SLOW_SPEC_QUANTIZERS = frozenset({
    "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m",
    "iq2_k", "iq3_k", "iq4_k", "iq5_k", "iq6_k", "iq4_ks", "iq4_kss", "iq5_ks", "iq2_ks", "iq3_ks", "iq2_kl",
    "iq1_kt", "iq2_kt", "iq3_kt", "iq4_kt",
})


def required_imatrix(fmt: str, n: int) -> np.ndarray | None:
    """An importance matrix of ones where the format requires one (ggml aborts without)."""
    return np.ones(n, np.float32) if qs.format_info(fmt).imatrix == "required" else None


def _weights(fmt: str, x: np.ndarray, gg: "GgmlCalls | None" = None) -> np.ndarray:
    """``x`` quantized: by the kernel where there is one, else by ggml (its
    bytes are the spec's, and the spec's grid searches take minutes on 4M
    elements), with an importance matrix of ones where the format requires one."""
    gg = gg or GgmlCalls()
    imatrix = required_imatrix(fmt, x.shape[1])
    if qs.kernel_info()[(fmt, "quantize")] == dispatch.REFERENCE and gg._type(fmt) is not None:
        return gg.g.quantize(fmt, x, imatrix)
    return qs.quantize(fmt, x, imatrix=imatrix)


def default_formats() -> list[str]:
    """The mainline formats with a generated kernel here. The others run
    through the NumPy spec only, some of whose searches take minutes on 4M
    elements; the ik_llama.cpp quantizers run 1-3 Melem/s even as kernels
    (exhaustive scale sweeps), minutes with the repeats and thread rows:
    name them with ``--formats`` to time them."""
    info = qs.kernel_info()
    return [f for f in qs.formats() if qs.format_info(f).origin == "ggml"
            and any(info[(f, op)] != dispatch.REFERENCE for op in dispatch.OPS)]


def run(formats=None, ops=None, *, n: int = DEFAULT_N, repeats: int = 10, threads: int = 2,
        out_of_cache: bool = False, progress: Callable[[str], None] | None = None) -> list[Result]:
    """Time every (format, op) against ggml, then the other comparisons.

    ``n`` elements per measurement (rounded down to whole rows of 1024),
    ``threads``: the thread count of the scaling rows (skipped when 1),
    ``out_of_cache``: add the 1 GiB dequantize row against copy bandwidth.
    """
    formats = [qs.format_info(f).name for f in (formats or default_formats())]
    ops = list(ops or dispatch.OPS)
    for op in ops:
        if op not in dispatch.OPS:
            raise ValueError(f"unknown op {op!r}: expected one of {', '.join(dispatch.OPS)}")
    say = progress or (lambda msg: None)
    nrows = max(1, n // ROW)
    n = nrows * ROW
    rng = np.random.default_rng(0)
    x = rng.standard_normal((nrows, ROW), dtype=np.float32)
    vd_rows = max(1, n // VEC_DOT_ROW)
    vd_n = n // vd_rows // 256 * 256
    xw = x.reshape(-1)[: vd_rows * vd_n].reshape(vd_rows, vd_n)
    act = rng.standard_normal((1, vd_n), dtype=np.float32)
    gg = GgmlCalls()
    info_now = qs.kernel_info()
    results: list[Result] = []
    deq_ggml: dict[str, np.ndarray] = {}  # ggml's dequantize output, reused by the out-of-cache check

    for fmt in formats:
        info = qs.format_info(fmt)
        q = _weights(fmt, x, gg)
        cp = Counterpart(gg, fmt) if gg._type(fmt) is None else None
        base_name = cp.label if cp and cp.name else "ggml"
        for op in ops:
            isa = info_now[(fmt, op)]
            say(f"{fmt} {op} ({isa})")
            if op == "quantize":
                if isa == dispatch.REFERENCE and fmt in SLOW_SPEC_QUANTIZERS:
                    say(f"{fmt} quantize: no kernel, and the spec's search takes minutes here: not timed")
                    continue
                im = required_imatrix(fmt, x.shape[1])
                ours_out, base_out = np.empty_like(q), np.zeros_like(q)
                call = cp.quantize(x) if cp and cp.name else gg.quantize(fmt, x, base_out, im)
                t, tb = best_of_pair(lambda: qs.quantize(fmt, x, imatrix=im, threads=1, out=ours_out), call, repeats)
                if cp:
                    exact, note = _isas_agree(fmt, op, x[:SPEC_QUANTIZE_ROWS]), "†"
                else:
                    exact, note = (bool((ours_out == base_out).all()) if call else None), ""
                results.append(Result("ggml", fmt, op, isa, _melems(n, t), tb and _melems(n, tb), exact,
                                      base_name=base_name, note=note))
                if cp and isa != dispatch.REFERENCE:
                    results.append(_spec_quantize_row(fmt, x[:SPEC_QUANTIZE_ROWS], isa, say))
            elif op == "dequantize":
                y, yb = np.empty(x.shape, np.float32), np.zeros(x.shape, np.float32)
                call = None if cp else gg.dequantize(fmt, q, yb)
                base = call or (cp.dequantize(x) if cp and cp.name else None)
                t, tb = best_of_pair(lambda: qs.dequantize(fmt, q, threads=1, out=y), base, repeats)
                if call:
                    exact, note = _same_bits(y, yb), ""
                    deq_ggml[fmt] = yb
                else:
                    note = "†"
                    exact = _isas_agree(fmt, op, q[: min(nrows, 8)])
                results.append(Result("ggml", fmt, op, isa, _melems(n, t), tb and _melems(n, tb), exact,
                                      base_name=base_name, note=note))
            elif op == "vec_dot":
                if info.vec_dot_format is None:
                    continue  # activation-only format: no dot product
                wq, aq = _weights(fmt, xw, gg), qs.quantize(info.vec_dot_format, act)
                if cp:
                    calls = cp.vec_dot(xw, act) if cp.name else None
                else:
                    calls = gg.vec_dot(fmt, wq, aq, np.zeros(vd_rows, np.float32), vd_n)
                t, tb = best_of_pair(lambda: qs.vec_dot(fmt, wq, aq, threads=1), calls, repeats)
                exact = _isas_agree(fmt, op, wq[: min(vd_rows, 2)], aq)
                results.append(Result("ggml", fmt, op, isa, _melems(vd_rows * vd_n, t),
                                      tb and _melems(vd_rows * vd_n, tb), exact, base_name=base_name))

    if "dequantize" in ops:
        results += _gguf_rows(formats, x, repeats, say)
    if threads > 1:  # on 4x the elements, so that splitting the work pays for the thread hand-off
        xl = rng.standard_normal((4 * nrows, ROW), dtype=np.float32)
        results += _thread_rows(formats, ops, xl, info_now, threads, repeats, say)
    if out_of_cache and "dequantize" in ops:
        row = _out_of_cache_row(formats, x, info_now, deq_ggml, say)
        if row:
            results.append(row)
    return results


def _spec_quantize_row(fmt, x, isa, say) -> Result:
    """The kernel's quantize against the NumPy spec's on a few rows (one timed
    call of the spec: its searches take seconds)."""
    say(f"{fmt} quantize: {isa} vs the NumPy spec")
    t = best_of(lambda: qs.quantize(fmt, x, threads=1), 3)
    with qs.use_isa(dispatch.REFERENCE):
        tb = best_of(lambda: qs.quantize(fmt, x), 1, warmup=0)
        expected = qs.quantize(fmt, x)
    exact = bool(np.array_equal(qs.quantize(fmt, x), expected))
    return Result(SPEC_QUANTIZE, fmt, "quantize", isa, _melems(x.size, t), _melems(x.size, tb), exact,
                  base_name="spec (NumPy)", ours_label=isa)


def _gguf_rows(formats, x, repeats, say) -> list[Result]:
    """The NumPy spec against gguf-py's NumPy dequantize: the two pure-Python readers."""
    try:
        import gguf
        from gguf import quants
    except ImportError:
        return []
    rows = []
    for fmt in formats:
        qtype = getattr(gguf.GGMLQuantizationType, fmt.upper(), None)
        # f32 is a zero-copy view in gguf-py: nothing to compare
        if qtype is None or fmt == "f32" or qs.format_info(fmt).origin != "ggml" or not (
                qtype == gguf.GGMLQuantizationType.F16 or qtype in quants._type_traits):
            continue
        say(f"{fmt} dequantize: spec vs gguf-py")
        q = _weights(fmt, x)
        with qs.use_isa("reference"):
            t, tb = best_of_pair(lambda: qs.dequantize(fmt, q), lambda: quants.dequantize(q, qtype), repeats)
            y = qs.dequantize(fmt, q)
        exact = _same_bits(y, quants.dequantize(q, qtype).reshape(y.shape))
        rows.append(Result(GGUF, fmt, "dequantize", "reference", _melems(x.size, t), _melems(x.size, tb),
                           exact, base_name="gguf-py (NumPy)", ours_label="spec (NumPy)"))
    return rows


def _thread_rows(formats, ops, x, info_now, threads, repeats, say) -> list[Result]:
    """threads=N against threads=1, same kernel, same data: the parallel speedup."""
    rows = []
    for fmt in formats:
        q = _weights(fmt, x)
        for op in ("quantize", "dequantize"):
            isa = info_now[(fmt, op)]
            if op not in ops or isa == dispatch.REFERENCE:  # the spec runs single-threaded
                continue
            say(f"{fmt} {op}: {threads} threads vs 1")
            if op == "quantize":
                a, b = np.empty_like(q), np.empty_like(q)
                im = required_imatrix(fmt, x.shape[1])
                fn = lambda th, out: qs.quantize(fmt, x, imatrix=im, threads=th, out=out)  # noqa: E731
            else:
                a, b = np.empty(x.shape, np.float32), np.empty(x.shape, np.float32)
                fn = lambda th, out: qs.dequantize(fmt, q, threads=th, out=out)  # noqa: E731
            tn = best_of(lambda: fn(threads, a), repeats, clock=time.perf_counter)
            t1 = best_of(lambda: fn(1, b), repeats, clock=time.perf_counter)
            exact = bool((a == b).all()) if op == "quantize" else _same_bits(a, b)
            rows.append(Result(f"{threads} threads vs 1", fmt, op, isa, _melems(x.size, tn), _melems(x.size, t1), exact,
                               base_name=f"{isa}, 1 thread", ours_label=f"{isa}, {threads} threads"))
    return rows


def _out_of_cache_row(formats, x, info_now, deq_ggml, say) -> Result | None:
    """Dequantize into a 1 GiB float32 output, against the bound that copy
    bandwidth (libc memmove, measured now on the same buffer) puts on moving
    the bytes read plus the bytes written."""
    kernels = [f for f in formats if info_now[(f, "dequantize")] != dispatch.REFERENCE]
    if not kernels:
        return None
    fmt = "q4_0" if "q4_0" in kernels else kernels[0]
    isa, info = info_now[(fmt, "dequantize")], qs.format_info(fmt)
    say(f"{fmt} dequantize: 1 GiB out of cache vs copy bandwidth")
    q = _weights(fmt, x)
    reps = max(1, OUT_OF_CACHE_BYTES // 4 // x.size)
    qbig = np.tile(q, (reps, 1))
    y = np.empty((x.shape[0] * reps, x.shape[1]), np.float32)
    t = best_of(lambda: qs.dequantize(fmt, qbig, threads=1, out=y), 3, clock=time.perf_counter)  # the warm-up faults the pages in
    half = y.nbytes // 2
    src, dst = y.ctypes.data, y.ctypes.data + half
    t_copy = best_of(lambda: ctypes.memmove(dst, src, half), 3, clock=time.perf_counter)
    copy_bw = 2 * half / t_copy  # bytes read + written per second
    bytes_per_elem = info.type_size / info.block_size + 4
    bound = copy_bw / bytes_per_elem / 1e6
    qs.dequantize(fmt, qbig[: x.shape[0]], out=y[: x.shape[0]])  # the copy overwrote half of y
    exact = _same_bits(y[: x.shape[0]], deq_ggml[fmt]) if fmt in deq_ggml else None
    return Result(OUT_OF_CACHE, fmt, "dequantize", isa, _melems(y.size, t), bound, exact,
                  base_name=f"copy bound ({copy_bw / 1e9:.1f} GB/s memmove)",
                  ours_label=f"{isa}, {y.nbytes >> 20} MiB out")


# ---------------------------------------------------------------- rendering

MAIN_COLUMNS = ("format", "op", "isa", "ours Melem/s", "baseline", "baseline Melem/s", "ratio", "bit-exact")
OTHER_COLUMNS = ("comparison", "format", "op", "ours", "ours Melem/s", "baseline", "baseline Melem/s",
                 "ratio", "bit-exact")


def _num(v: float | None) -> str:
    if v is None:
        return NA
    return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"  # the NumPy spec's searches run below 1 Melem/s


def _mark(r: Result) -> str:
    return NA if r.exact is None else ("✔" if r.exact else "✘") + r.note


def _ratio(r: Result) -> str:
    if r.ratio is None:
        return NA
    return f"{r.ratio:.0%} of bound" if r.kind == OUT_OF_CACHE else f"{r.ratio:.2f}×"


def tables(results: list[Result]) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
    """The main table (ours against ggml) and the table of other comparisons, as cells."""
    main = [(r.fmt, r.op, r.isa, _num(r.ours), r.base_name, _num(r.base), _ratio(r), _mark(r))
            for r in results if r.kind == "ggml"]
    other = [(r.kind, r.fmt, r.op, r.ours_label or r.isa, _num(r.ours), r.base_name,
              _num(r.base), _ratio(r), _mark(r)) for r in results if r.kind != "ggml"]
    return [(MAIN_COLUMNS, main)] + ([(OTHER_COLUMNS, other)] if other else [])


def _text_table(columns, rows) -> str:
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(columns)]
    right = {i for i, c in enumerate(columns) if "Melem/s" in c or c == "ratio"}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _markdown_table(columns, rows) -> str:
    align = ["---:" if ("Melem/s" in c or c == "ratio") else (":---:" if c == "bit-exact" else "---")
             for c in columns]
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def legend(n: int, repeats: int) -> str:
    vd_rows = max(1, n // VEC_DOT_ROW)
    return (f"{cpu_name()}; ISAs here: {', '.join(dispatch.available_isas())}; {n:,} elements "
            f"({n // ROW} rows x {ROW}; vec_dot {vd_rows} rows x {n // vd_rows // 256 * 256}; thread rows "
            f"4x as many), best of {repeats}, 1 thread unless stated. ratio = ours / baseline (> 1: ours faster). "
            "baseline: ggml on the same format, or (ik_llama.cpp formats, which ggml lacks) ggml on the mainline "
            "format named. bit-exact: quantize = bytes equal ggml_quantize_chunk; dequantize = bits equal ggml "
            "to_float (†: ggml lacks it, equal across every ISA and the NumPy spec); vec_dot = bits equal across "
            "every ISA and the NumPy spec (ggml's order differs per ISA). ggml vec_dot: one call per row from a C loop.")


def render(results: list[Result], markdown: bool = False, *, n: int | None = None, repeats: int | None = None) -> str:
    table = _markdown_table if markdown else _text_table
    parts = [table(cols, rows) for cols, rows in tables(results)]
    if n is not None and repeats is not None:
        parts.append(legend(n, repeats))
    return "\n\n".join(parts)


def update_readme(path, text: str) -> None:
    """Replace what lies between the bench markers in ``path`` with ``text``."""
    path = Path(path)
    doc = path.read_text(encoding="utf-8")
    start, stop = doc.find(BEGIN), doc.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"{path}: needs the markers {BEGIN} and {END} (in that order) around the bench table")
    path.write_text(doc[: start + len(BEGIN)] + "\n" + text.strip() + "\n" + doc[stop:], encoding="utf-8")
