"""Run-time dispatch: which implementation runs each (format, op).

At import, the CPU's features are read (cpuid/xgetbv through
``quantspec._cpu``) and the kernel extensions this CPU can run are imported.
Each (format, op) uses the best ISA that has a kernel for it, else the NumPy
spec ("reference"). ``QUANTSPEC_ISA`` (read at import) or ``use_isa(name)`` force one
implementation; forcing an ISA the CPU lacks is an error, never a silent
fallback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from quantspec import registry
from quantspec.errors import IsaError

#: best first
ISA_PREFERENCE = ("avx512vnni", "avx512", "avx2", "neondot", "neon", "scalar")
OPS = ("quantize", "dequantize", "vec_dot")
REFERENCE = "reference"

class _Forcing(threading.local):
    """The ISA forced by use_isa in this thread; the class default makes the
    unforced lookup a plain attribute read (a missing thread-local attribute
    costs a failed lookup on every call)."""
    isa: str | None = None


_forced = _Forcing()


@cache
def cpu_features() -> frozenset[str]:
    try:
        from quantspec import _cpu
    except ImportError:  # not built: the spec still works
        return frozenset()
    return _cpu.features() | {"scalar"}


@cache
def extensions() -> dict:
    """ISA name -> imported kernel extension, for every ISA this CPU runs."""
    found = {}
    for isa in ISA_PREFERENCE:
        if isa not in cpu_features():
            continue
        try:
            found[isa] = importlib.import_module(f"quantspec.generated._kernels_{isa}")
        except ImportError:
            continue
    return found


def available_isas() -> list[str]:
    """Implementations that can run here, best first, ending with the spec."""
    return [isa for isa in ISA_PREFERENCE if isa in extensions()] + [REFERENCE]


#: QUANTSPEC_ISA, read once when quantspec is imported (as NumPy reads its CPU-feature variables)
ENV_ISA = os.environ.get("QUANTSPEC_ISA", "").strip().lower() or None


def forced_isa() -> str | None:
    return _forced.isa or ENV_ISA


@contextlib.contextmanager
def use_isa(isa: str):
    """Force one implementation ("reference", "scalar", "avx2", ...) in this thread."""
    name = str(isa).lower()
    if name not in available_isas():
        raise IsaError(f"ISA {isa!r} is not available on this machine: expected one of {available_isas()}")
    previous = _forced.isa
    _forced.isa = name
    try:
        yield name
    finally:
        _forced.isa = previous


@cache
def _kernel_sets() -> dict[str, frozenset]:
    return {isa: frozenset(ext.KERNELS) for isa, ext in extensions().items()}


def has_kernel(isa: str, fmt: str, op: str) -> bool:
    kernels = _kernel_sets().get(isa)
    return kernels is not None and (fmt, op) in kernels


@dataclass(frozen=True)
class ReferenceImpl:
    """The NumPy spec module as an implementation."""

    fmt: str
    isa: str = REFERENCE

    def __getattr__(self, op):
        return getattr(registry.module(self.fmt), op)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads:
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="quantspec")
        return _POOL


def _split(total: int, parts: int, quantum: int = 1) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(total)``, cut at multiples of ``quantum``."""
    units = total // quantum
    parts = max(1, min(parts, units))
    bounds = [units * i // parts * quantum for i in range(parts)] + [total]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _run(jobs, threads: int):
    if threads <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    return [f.result() for f in [_pool(threads).submit(job) for job in jobs]]


@dataclass(frozen=True)
class KernelImpl:
    """A generated kernel. Threads split rows (quantize, dot) or blocks
    (dequantize); the kernels release the GIL, so the threads run in parallel."""

    fmt: str
    isa: str

    @cached_property
    def ext(self):
        return extensions()[self.isa]

    def quantize(self, x2: np.ndarray, q2: np.ndarray, imatrix, threads: int) -> int:
        spec = registry.spec(self.fmt)
        per_row = x2.shape[1] // spec.block_size
        if threads <= 1:
            return self.ext.quantize(self.fmt, x2, q2, imatrix)
        ranges = _split(x2.shape[0], threads)
        results = _run([lambda a=a, b=b: (a, self.ext.quantize(self.fmt, x2[a:b], q2[a:b], imatrix))
                        for a, b in ranges], threads)
        bad = [a * per_row + r for a, r in results if r >= 0]
        return min(bad) if bad else -1

    def dequantize(self, q2: np.ndarray, y2: np.ndarray, threads: int) -> None:
        spec = registry.spec(self.fmt)
        if spec.row_meta_size:  # the kernel takes one whole row at a time
            if threads <= 1:
                self.ext.dequantize_rows(self.fmt, q2, y2)
                return
            _run([lambda a=a, b=b: self.ext.dequantize_rows(self.fmt, q2[a:b], y2[a:b])
                  for a, b in _split(q2.shape[0], threads)], threads)
            return
        qf, yf = q2.reshape(-1), y2.reshape(-1)
        if threads <= 1:
            self.ext.dequantize(self.fmt, qf, yf)
            return
        nblocks = yf.size // spec.block_size
        _run([lambda a=a, b=b: self.ext.dequantize(
            self.fmt, qf[a * spec.type_size:b * spec.type_size], yf[a * spec.block_size:b * spec.block_size])
              for a, b in _split(nblocks, threads)], threads)

    def vec_dot(self, w2: np.ndarray, a: np.ndarray, threads: int, n: int | None = None) -> np.ndarray:
        """``n``: elements per row, when the caller has already derived it from the row bytes."""
        if n is None:
            spec = registry.spec(self.fmt)
            n = (w2.shape[1] - spec.row_meta_size) // spec.type_size * spec.block_size
        out = np.empty(w2.shape[0], dtype=np.float32)
        if threads <= 1:
            self.ext.vec_dot(self.fmt, w2, a, out, n)
            return out
        _run([lambda r0=r0, r1=r1: self.ext.vec_dot(self.fmt, w2[r0:r1], a, out[r0:r1], n)
              for r0, r1 in _split(w2.shape[0], threads)], threads)
        return out


def _best(fmt: str, op: str) -> str:
    for isa in available_isas():
        if isa == REFERENCE or has_kernel(isa, fmt, op):
            return isa
    return REFERENCE


_IMPLEMENTATIONS: dict[tuple[str, str, str | None], object] = {}


def implementation(fmt: str, op: str):
    """The implementation of ``op`` on ``fmt`` under the current forcing."""
    forced = forced_isa()
    key = (fmt, op, forced)
    impl = _IMPLEMENTATIONS.get(key)
    if impl is None:
        impl = _IMPLEMENTATIONS[key] = _choose(fmt, op, forced)
    return impl


def _choose(fmt: str, op: str, isa: str | None):
    if isa is None:
        isa = _best(fmt, op)
    elif isa != REFERENCE:
        if isa not in available_isas():
            raise IsaError(f"QUANTSPEC_ISA={isa!r} is not available on this machine: "
                           f"expected one of {available_isas()}")
        if not has_kernel(isa, fmt, op):
            isa = REFERENCE  # no kernel for this op (e.g. F32 copies): the spec runs it
    return ReferenceImpl(fmt) if isa == REFERENCE else KernelImpl(fmt, isa)


def kernel_info() -> dict[tuple[str, str], str]:
    """(format, op) -> the implementation that runs it now ("reference" where no kernel exists)."""
    return {(fmt, op): implementation(fmt, op).isa for fmt in registry.formats() for op in OPS}
