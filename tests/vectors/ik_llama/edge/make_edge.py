"""Regenerate the edge-case vectors in this folder from a local build of
ik_llama.cpp (not run by the tests; kept to say how the data was made).

    LIBGGML=/path/to/libggml.so python make_edge.py

The build is the one described in ``../to_float/make_to_float.py``
(ik_llama.cpp @ 8337e4cd, AVX2 + FMA + F16C, ``-ffp-contract=off``,
``ggml_init`` called). Ten rows of 512 floats that stress the quantizers
(``ROWS``) are quantized one row at a time with ``ggml_quantize_chunk``,
without and with an importance matrix that has zero stretches, each in a
child process: a row on which ik_llama.cpp aborts (a failed ``GGML_ASSERT``)
is recorded as such (``ok`` False, zero bytes) instead of killing the run.
``y`` is ``dequantize_row_<type>`` of each row.

Each ``<type>.npz`` holds ``x`` [10, 512], ``imatrix`` [512], ``rows`` (the
row names), ``q``/``ok``/``y`` (no imatrix) and ``q_imatrix``/``ok_imatrix``/
``y_imatrix``.
"""

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N = 512


def rows() -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20260815)
    out = []
    out.append(("zeros", np.zeros(N)))
    r = rng.standard_normal(N); r[:64] = 0; out.append(("zero sub-blocks", r))
    out.append(("tiny 1e-20", rng.standard_normal(N) * 1e-20))
    out.append(("large 1e15", rng.standard_normal(N) * 1e15))
    out.append(("constant", np.full(N, 0.75)))
    r = rng.standard_normal(N) * 0.01; r[37] = 40.0; out.append(("one outlier", r))
    out.append(("small integers", rng.integers(-8, 9, N).astype(float)))
    r = rng.standard_normal(N); r[::7] = -0.0; out.append(("signed zeros", r))
    out.append(("ramp", np.linspace(-1, 1, N)))
    out.append(("student-t 2", rng.standard_t(2, N)))
    im = rng.uniform(0, 3, N).astype(np.float32); im[64:128] = 0; im[200] = 0
    return [n for n, _ in out], np.array([r for _, r in out], dtype=np.float32), im


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def _lib():
    lib = ctypes.CDLL(os.environ["LIBGGML"])
    lib.ggml_init.restype = ctypes.c_void_p
    lib.ggml_init.argtypes = [_InitParams]
    lib.ggml_init(_InitParams(1 << 20, None, False))
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    return lib


def _child(type_id: int, row: int, with_imatrix: bool, path: str) -> None:
    lib = _lib()
    _, x, im = rows()
    src = np.ascontiguousarray(x[row:row + 1])
    out = np.zeros(lib.ggml_row_size(type_id, N), dtype=np.uint8)
    lib.ggml_quantize_chunk(type_id, src.ctypes.data, out.ctypes.data, 0, 1, N,
                            im.ctypes.data if with_imatrix else None, None)
    Path(path).write_bytes(out.tobytes())


def main() -> None:
    names, x, im = rows()
    lib = _lib()
    index = json.loads((HERE.parent / "index.json").read_text())["types"]
    for name, info in index.items():
        tid = info["ggml_type_id"]
        rb = lib.ggml_row_size(tid, N)
        data = {"x": x, "imatrix": im, "rows": np.array(names)}
        for key, flag in (("q", False), ("q_imatrix", True)):
            q = np.zeros((len(names), rb), dtype=np.uint8)
            ok = np.zeros(len(names), dtype=bool)
            for r in range(len(names)):
                path = HERE / f".{name}.{r}.bin"
                done = subprocess.run([sys.executable, __file__, str(tid), str(r), str(int(flag)), str(path)])
                if done.returncode == 0:
                    q[r] = np.frombuffer(path.read_bytes(), dtype=np.uint8)
                    ok[r] = True
                path.unlink(missing_ok=True)
            fn = getattr(lib, f"dequantize_row_{name.lower()}")
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            fn.restype = None
            y = np.zeros((len(names), N), dtype=np.float32)
            for r in range(len(names)):
                fn(q[r].ctypes.data, y[r].ctypes.data, N)
            suffix = "" if key == "q" else "_imatrix"
            data[key], data["ok" + suffix], data["y" + suffix] = q, ok, y
        np.savez_compressed(HERE / f"{name.lower()}.npz", **data)


if __name__ == "__main__":
    if len(sys.argv) == 5:
        _child(int(sys.argv[1]), int(sys.argv[2]), bool(int(sys.argv[3])), sys.argv[4])
    else:
        main()
