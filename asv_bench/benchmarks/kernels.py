"""quantize, dequantize and vec_dot per (format, implementation).

The parameter grid is the same on every machine: every format in the
registry times every ISA that generated/MANIFEST.json has kernels for, plus
"reference" (the NumPy spec) and "ggml" (libggml's own C functions). A
combination this machine cannot run (an ISA the CPU lacks, a kernel that is
not generated, an op ggml does not have) raises NotImplementedError in
setup, which asv reports as skipped. One thread, 1M elements: 1024 rows of
1024 for quantize/dequantize; vec_dot is 4 rows of 262144 times one
activation row, so that ggml's per-row ctypes call (a few microseconds of
Python) stays a small part of its time.
"""

import json
from importlib import resources

import numpy as np

import quantspec as qs
from quantspec import bench, dispatch

N_ROWS, ROW = 1024, 1024
VD_ROWS, VD_ROW = 4, 256 * 1024


def _manifest():
    text = resources.files("quantspec.generated").joinpath("MANIFEST.json").read_text()
    return {(k["format"], k["op"], k["isa"]) for k in json.loads(text)["kernels"]}


KERNELS = _manifest()
ISAS = [isa for isa in dispatch.ISA_PREFERENCE if any(k[2] == isa for k in KERNELS)]
# the formats with a kernel here: the spec-only searches of the others can take minutes on 1M elements
FORMATS = bench.default_formats()
IMPLS = ISAS + [dispatch.REFERENCE, "ggml"]


class _Op:
    op = ""
    params = (FORMATS, IMPLS)
    param_names = ("format", "impl")
    timeout = 120

    def setup(self, fmt, impl):
        if self.op == "vec_dot" and qs.format_info(fmt).vec_dot_format is None:
            raise NotImplementedError(f"{fmt} is an activation format: no dot product")
        if impl not in ("ggml", dispatch.REFERENCE):
            if (fmt, self.op, impl) not in KERNELS:
                raise NotImplementedError(f"no {impl} kernel for {fmt} {self.op}")
            if impl not in dispatch.available_isas():
                raise NotImplementedError(f"this CPU lacks {impl}")
        if impl == dispatch.REFERENCE and self.op == "quantize" and fmt in bench.SLOW_SPEC_QUANTIZERS:
            raise NotImplementedError(f"the spec's {fmt} search takes minutes on 1M elements")
        rng = np.random.default_rng(0)
        self.prepare(fmt, rng)
        if impl == "ggml":
            self.call = self.ggml_call(bench.GgmlCalls(), fmt)
            if self.call is None:
                raise NotImplementedError(f"ggml has no {self.op} for {fmt}")
        else:
            isa = impl

            def call():
                with qs.use_isa(isa):
                    self.ours(fmt)

            self.call = call
        self.call()  # warm-up, and a failure here is a setup error rather than a bogus timing


class Quantize(_Op):
    op = "quantize"

    def prepare(self, fmt, rng):
        self.x = rng.standard_normal((N_ROWS, ROW), dtype=np.float32)
        self.imatrix = bench.required_imatrix(fmt, ROW)
        self.out = np.empty((N_ROWS, qs.format_info(fmt).row_bytes(ROW)), dtype=np.uint8)

    def ours(self, fmt):
        qs.quantize(fmt, self.x, imatrix=self.imatrix, out=self.out)

    def ggml_call(self, gg, fmt):
        return gg.quantize(fmt, self.x, self.out, self.imatrix)

    def time_quantize(self, fmt, impl):
        self.call()


class Dequantize(_Op):
    op = "dequantize"

    def prepare(self, fmt, rng):
        self.q = bench._weights(fmt, rng.standard_normal((N_ROWS, ROW), dtype=np.float32))
        self.out = np.empty((N_ROWS, ROW), dtype=np.float32)

    def ours(self, fmt):
        qs.dequantize(fmt, self.q, out=self.out)

    def ggml_call(self, gg, fmt):
        return gg.dequantize(fmt, self.q, self.out)

    def time_dequantize(self, fmt, impl):
        self.call()


class VecDot(_Op):
    op = "vec_dot"

    def prepare(self, fmt, rng):
        self.wq = bench._weights(fmt, rng.standard_normal((VD_ROWS, VD_ROW), dtype=np.float32))
        act = qs.format_info(fmt).vec_dot_format
        self.aq = qs.quantize(act, rng.standard_normal((1, VD_ROW), dtype=np.float32))
        self.out = np.empty(VD_ROWS, dtype=np.float32)

    def ours(self, fmt):
        qs.vec_dot(fmt, self.wq, self.aq)

    def ggml_call(self, gg, fmt):
        return gg.vec_dot(fmt, self.wq, self.aq, self.out, VD_ROW)

    def time_vec_dot(self, fmt, impl):
        self.call()
