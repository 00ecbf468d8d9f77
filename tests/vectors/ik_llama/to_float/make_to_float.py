"""Regenerate the ``to_float`` outputs in this folder from a local build of
ik_llama.cpp (not run by the tests; kept to say how the data was made).

    LIBGGML=/path/to/ik_llama.cpp/ggml/build/src/libggml.so python make_to_float.py

The build: ik_llama.cpp @ 8337e4cd3861406fc04e0854b1409cd1b027fbc9, ggml
alone (``cmake -B build -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF
-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
-DGGML_IQK_FLASH_ATTENTION=OFF -DCMAKE_CXX_STANDARD=20
-DCMAKE_C_FLAGS=-ffp-contract=off -DCMAKE_CXX_FLAGS=-ffp-contract=off``), with
``iqk_fa_work_buffer_size`` and ``iqk_flash_attn_noalibi`` stubbed at link
time. Unlike the run that made ``../*.npz``, this one calls ``ggml_init``
first, which fills ggml's fp16 -> fp32 table; without it every fp16 scale
reads as 0 and ``to_float`` returns signed zeros. The same build reproduces
every ``q`` of ``../*.npz`` byte for byte.

For every case of ``../index.json`` it writes ``<type>_case<N>.npy``: the
rows ``q`` of the case dequantized by ``dequantize_row_<type>`` one row at a
time (float32 ``[nrows, n_per_row]``).
"""

import ctypes
import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def main() -> None:
    lib = ctypes.CDLL(os.environ["LIBGGML"])
    lib.ggml_init.restype = ctypes.c_void_p
    lib.ggml_init.argtypes = [_InitParams]
    lib.ggml_init(_InitParams(1 << 20, None, False))
    index = json.loads((HERE.parent / "index.json").read_text())
    for name, info in index["types"].items():
        fn = getattr(lib, f"dequantize_row_{name.lower()}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None
        for case in info["cases"]:
            q = np.ascontiguousarray(np.load(HERE.parent / case["file"])["q"])
            y = np.zeros((case["nrows"], case["n_per_row"]), dtype=np.float32)
            for r in range(q.shape[0]):
                fn(q[r].ctypes.data, y[r].ctypes.data, case["n_per_row"])
            np.save(HERE / case["file"].replace(".npz", ".npy"), y)


if __name__ == "__main__":
    main()
