"""The real libggml, through ctypes, as the oracle of the spec.

llama-cpp-python (pinned in the ``test`` and ``ggml`` extras) builds libggml
from source and ships ``libggml-base.so`` and ``libggml-cpu.so`` in
``llama_cpp/lib``. From them: ``ggml_quantize_chunk`` (the bytes files
hold), the type traits' ``to_float``, and the CPU traits' ``from_float`` and
``vec_dot`` (ggml's own, ISA-specific order).
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

import numpy as np

from quantspec import registry


#: formats ggml uses only as dot-product activations: ggml_quantize_chunk refuses them
ACTIVATION_ONLY = ("q8_1", "q8_k")

#: formats whose ggml quantizer aborts the process (GGML_ASSERT) on some finite
#: inputs, e.g. when every weighted distance of a grid search overflows: quantized
#: in a child process, so that an abort becomes GgmlAborted
MAY_ABORT = ("iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m")


class GgmlUnavailable(RuntimeError):
    """llama-cpp-python (and so libggml) is not installed."""


class GgmlAborted(RuntimeError):
    """ggml aborted (an assertion failed) on this input: it has no result to compare with."""


class _TypeTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


class _CpuTraits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                            ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def lib_dir() -> Path:
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise GgmlUnavailable("libggml needs llama-cpp-python: pip install 'quantspec[ggml]'") from exc
    return Path(os.path.dirname(llama_cpp.__file__)) / "lib"


class Ggml:
    """ggml's quantize, dequantize and dot product for ggml-origin formats."""

    def __init__(self):
        d = lib_dir()
        mode = getattr(os, "RTLD_GLOBAL", 0)
        self.base = ctypes.CDLL(str(d / "libggml-base.so"), mode=mode)
        self.cpu = ctypes.CDLL(str(d / "libggml-cpu.so"), mode=mode)
        self.base.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                  ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self.base.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        self.base.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_CpuTraits)
        self.cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
        self.cpu.ggml_cpu_init()

    @staticmethod
    def type_id(fmt: str) -> int:
        spec = registry.spec(fmt)
        if spec.origin != "ggml":
            raise ValueError(f"{fmt}: ggml does not define this format (origin {spec.origin})")
        return spec.type_id

    def supports(self, fmt: str) -> bool:
        try:
            traits = self.base.ggml_get_type_traits(self.type_id(fmt)).contents
        except ValueError:
            return False
        return traits.type_size == registry.spec(fmt).type_size

    def quantize(self, fmt: str, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        """``ggml_quantize_chunk``: the bytes a GGUF file would hold."""
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(x.shape[0] if x.ndim == 2 else 1, -1)
        nrows, n = x.shape
        spec = registry.spec(fmt)
        out = np.zeros((nrows, spec.row_bytes(n)), dtype=np.uint8)
        im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
        if fmt in ACTIVATION_ONLY:  # ggml_quantize_chunk refuses them; the _ref is the spec
            ref = self.reference_row_quantizer(fmt)
            for r in range(nrows):
                ref(x[r].ctypes.data, out[r].ctypes.data, n)
            return out
        if fmt in MAY_ABORT:
            return self._quantize_in_child(fmt, x, im, out)
        self.base.ggml_quantize_chunk(self.type_id(fmt), x.ctypes.data, out.ctypes.data, 0, nrows, n,
                                      None if im is None else im.ctypes.data)
        return out

    def _quantize_in_child(self, fmt: str, x: np.ndarray, im: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        """``ggml_quantize_chunk`` in a forked child writing into shared memory."""
        import mmap

        shared = mmap.mmap(-1, max(out.nbytes, 1))
        self.base.ggml_quantize_init(self.type_id(fmt))  # the grid tables, once, in this process
        pid = os.fork()
        if pid == 0:  # the child: quantize, copy out, exit without running any Python cleanup
            status = 1
            try:
                import faulthandler

                faulthandler.disable()  # an abort is the expected outcome here, not a crash to report
                os.environ["GGML_NO_BACKTRACE"] = "1"
                self.base.ggml_quantize_chunk(self.type_id(fmt), x.ctypes.data, out.ctypes.data, 0, x.shape[0],
                                              x.shape[1], None if im is None else im.ctypes.data)
                shared[:out.nbytes] = out.tobytes()
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise GgmlAborted(f"{fmt}: ggml_quantize_chunk aborted on this input (wait status {status})")
        out[...] = np.frombuffer(shared, dtype=np.uint8, count=out.nbytes).reshape(out.shape)
        return out

    def reference_row_quantizer(self, fmt: str):
        """The reference quantizer of an activation format: q8_1's type traits
        name it; Q8_K's traits have none, but ``quantize_row_q8_K_ref`` is exported."""
        if fmt == "q8_k":
            return _FROM_FLOAT(ctypes.cast(self.base.quantize_row_q8_K_ref, ctypes.c_void_p).value)
        return _FROM_FLOAT(self.base.ggml_get_type_traits(self.type_id(fmt)).contents.from_float_ref)

    def from_float(self, fmt: str, x: np.ndarray) -> np.ndarray:
        """The CPU backend's (ISA-specific) activation quantizer."""
        traits = self.cpu.ggml_get_type_traits_cpu(self.type_id(fmt)).contents
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        out = np.zeros(registry.spec(fmt).row_bytes(x.size), dtype=np.uint8)
        _FROM_FLOAT(traits.from_float)(x.ctypes.data, out.ctypes.data, x.size)
        return out

    def dequantize(self, fmt: str, q: np.ndarray) -> np.ndarray:
        """The type traits' ``to_float``, row by row."""
        q = np.ascontiguousarray(q, dtype=np.uint8)
        q = q.reshape(q.shape[0] if q.ndim == 2 else 1, -1)
        spec = registry.spec(fmt)
        n = (q.shape[1] - spec.row_meta_size) // spec.type_size * spec.block_size
        out = np.zeros((q.shape[0], n), dtype=np.float32)
        fn = self.base.ggml_get_type_traits(self.type_id(fmt)).contents.to_float
        if not fn and fmt == "q8_k":  # no to_float in its traits; the row function is exported
            fn = ctypes.cast(self.base.dequantize_row_q8_K, ctypes.c_void_p).value
        if not fn:
            raise ValueError(f"{fmt}: ggml has no to_float")
        conv = _TO_FLOAT(fn)
        for r in range(q.shape[0]):
            conv(q[r].ctypes.data, out[r].ctypes.data, n)
        return out

    def vec_dot(self, fmt: str, wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
        """ggml's CPU ``vec_dot`` (this machine's ISA order) of each row with ``aq``."""
        traits = self.cpu.ggml_get_type_traits_cpu(self.type_id(fmt)).contents
        wq = np.ascontiguousarray(wq, dtype=np.uint8)
        aq = np.ascontiguousarray(aq, dtype=np.uint8).reshape(-1)
        spec = registry.spec(fmt)
        n = (wq.shape[1] - spec.row_meta_size) // spec.type_size * spec.block_size
        fn = _VEC_DOT(traits.vec_dot)
        out = np.zeros(wq.shape[0], dtype=np.float32)
        for r in range(wq.shape[0]):
            fn(n, out[r:].ctypes.data, 0, wq[r].ctypes.data, 0, aq.ctypes.data, 0, 1)
        return out


@cache
def ggml() -> Ggml:
    """The process-wide libggml binding (raises GgmlUnavailable without it)."""
    return Ggml()
