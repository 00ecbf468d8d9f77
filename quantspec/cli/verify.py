"""Compare another implementation of the formats with the spec, exactly.

The spec's edge-case corpus (zero and constant blocks, outliers, rounding
boundaries and their nextafter neighbours, subnormals, the largest finite
scale and its overflow, signed zeros, alternating signs, Student-t rows,
importance matrices with zeros and huge ratios, decode-only blocks with
random or NaN-looking bytes) and --cases random cases run through TARGET and
through the spec. Quantized bytes must be equal byte for byte and
dequantized floats bit for bit (NaN equals NaN whatever its payload). Per
format and op the report says pass, or the first differing case, block and
field (scale, min, quant bytes...) with the expected and actual bits.

TARGET:
  gguf-py          the gguf package's NumPy quants (gguf.quants.quantize /
                   dequantize); it takes no importance matrix, so cases
                   with one are skipped for formats that use it
  ggml             libggml from llama-cpp-python (ggml_quantize_chunk and
                   the type traits' to_float)
  kernels[:ISA]    quantspec's compiled kernels (best ISA, or the one named)
  module:function  your callable, imported with the current directory on
                   sys.path:

      def function(fmt: str, op: str, data: np.ndarray,
                   imatrix: np.ndarray | None) -> np.ndarray

    fmt      a format name as `qs.formats()` lists it, e.g. "q4_0"
    op       "quantize":   data is float32 (nrows, n), C-contiguous;
                           imatrix is float32 (n,) or None;
                           return uint8 (nrows, row_bytes), the block bytes
             "dequantize": data is uint8 (nrows, row_bytes); imatrix None;
                           return float32 (nrows, n)
             row_bytes = qs.format_info(fmt).row_bytes(n): per-row
             metadata (ik_llama row scales) first, then the blocks
    Raise NotImplementedError for a format, op or case you do not
    implement (reported as skipped / n/a, not as a failure); any other
    exception is a failure.

Exit status: 0 when every compared (format, op) agrees, 1 on any difference
or error, 2 on bad arguments or when nothing could be compared.
"""

from __future__ import annotations

import argparse
import sys

HELP = "compare another implementation (gguf-py, ggml, your function) with the spec, bit for bit"


def _csv(value: str) -> list[str]:
    return [v.strip().lower() for v in value.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("target", metavar="TARGET", help="gguf-py, ggml, kernels[:ISA] or module:function")
    p.add_argument("--formats", type=_csv, default=None, metavar="F1,F2",
                   help="formats to verify (default: every format quantspec has)")
    p.add_argument("--ops", type=_csv, default=["quantize", "dequantize"], metavar="OP,...",
                   help="quantize,dequantize (default: both)")
    p.add_argument("--cases", type=int, default=4, metavar="N",
                   help="random cases per format on top of the edge-case corpus (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cases (default: 0)")


def run(args: argparse.Namespace) -> int:
    from quantspec import registry, verify
    from quantspec.errors import UnknownFormatError

    try:
        formats = [registry.resolve(f) for f in args.formats] if args.formats else None
        bad = [op for op in args.ops if op not in verify.OPS]
        if bad:
            raise ValueError(f"unknown op {bad[0]!r}: expected {', '.join(verify.OPS)}")
        if args.cases < 0:
            raise ValueError("--cases must be >= 0")
        target = verify.load_target(args.target)
    except (UnknownFormatError, ValueError) as exc:
        print(f"quantspec verify: {exc}", file=sys.stderr)
        return 2
    progress = (lambda fmt: print(f"  {fmt} ...", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    outcomes = verify.verify(target, formats, args.ops, random_cases=args.cases, seed=args.seed, progress=progress)
    print(verify.render(outcomes, target.name))
    if any(not o.ok for o in outcomes):
        return 1
    return 0 if any(o.status != verify.NA for o in outcomes) else 2
