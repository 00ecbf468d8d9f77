"""Time ``quantspec quantize`` against llama.cpp's ``llama_model_quantize`` on
the same file, side by side in one run (not a test: speed is never asserted).

    python -m quantspec.gguf.bench MODEL.gguf [--types Q8_0,Q4_0] [--threads 2] [--repeats 3]

Each measurement is a fresh process, start-up included: ``quantspec
quantize`` as a user runs it, and a Python process that imports
llama-cpp-python and calls ``llama_model_quantize`` (llama-cpp-python ships
no ``llama-quantize`` binary); the time of the ``llama_model_quantize`` call
alone is shown too. Runs alternate between the two; the best of
``--repeats`` is reported, and the two outputs are compared byte for byte.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_LLAMA = r"""
import ctypes, sys, time
import llama_cpp
cb = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
p = llama_cpp.llama_model_quantize_default_params()
p.nthread, p.ftype, p.allow_requantize = int(sys.argv[3]), int(sys.argv[4]), True
t = time.perf_counter()
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p))
print(time.perf_counter() - t)
sys.exit(rc)
"""


def _timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {done.stderr.strip()[-400:]}")
    return elapsed, done.stdout


def run(model: Path, types: list[str], threads: int, repeats: int) -> list[tuple]:
    from quantspec.gguf.types import file_type

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for ftype in types:
            ours, theirs = Path(d) / f"ours-{ftype}.gguf", Path(d) / f"llama-{ftype}.gguf"
            best_ours = best_llama = best_call = float("inf")
            for _ in range(repeats):
                t, _ = _timed([sys.executable, "-m", "quantspec.cli", "quantize", str(model), str(ours), ftype,
                               "--allow-requantize", "--threads", str(threads), "--force", "--quiet"])
                best_ours = min(best_ours, t)
                t, out = _timed([sys.executable, "-c", _LLAMA, str(model), str(theirs), str(threads),
                                 str(file_type(ftype).ftype)])
                best_llama = min(best_llama, t)
                best_call = min(best_call, float(out.strip().splitlines()[-1]))
            same = ours.read_bytes() == theirs.read_bytes()
            rows.append((ftype, best_ours, best_llama, best_call, same))
    return rows


def render(model: Path, rows: list[tuple], threads: int) -> str:
    lines = [f"{model.name}, {threads} threads, best of the runs, seconds (whole process unless noted)", "",
             "| type | quantspec quantize | llama_model_quantize process | llama_model_quantize call | "
             "ratio (process) | identical |", "|---|---|---|---|---|---|"]
    for ftype, ours, llama, call, same in rows:
        lines.append(f"| {ftype} | {ours:.2f} | {llama:.2f} | {call:.2f} | {ours / llama:.2f} | "
                     f"{'yes' if same else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantspec.gguf.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--types", default="Q8_0,Q4_0", help="file types, comma-separated (default: Q8_0,Q4_0)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rows = run(args.model, [t.strip() for t in args.types.split(",") if t.strip()], args.threads, args.repeats)
    print(render(args.model, rows, args.threads))
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
