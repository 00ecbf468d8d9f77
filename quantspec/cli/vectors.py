"""Conformance vectors in the Wycheproof style.

  quantspec vectors export DIR [--formats F1,F2] [--cases N]
      writes DIR/vectors.schema.json, DIR/<format>.json (layout, flag notes,
      tests with tcId, name, comment, flags) and DIR/<format>/*.bin payloads:
      input floats, importance matrix, expected bytes and the expected
      dequantized floats as uint32 bit patterns, each with its sha256.

  quantspec vectors check DIR TARGET [--formats ...] [--ops ...]
      runs the vectors through TARGET (gguf-py, ggml, kernels[:ISA] or
      module:function, as for `quantspec verify`) and reports like verify.
      Exit status: 0 all agree, 1 any difference, 2 bad arguments, corrupt
      vector files or nothing compared.
"""

from __future__ import annotations

import argparse
import sys

HELP = "export conformance vectors, or check an implementation against them"


def _csv(value: str) -> list[str]:
    return [v.strip().lower() for v in value.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="vectors_command", metavar="ACTION", required=True)
    e = sub.add_parser("export", help="write the spec's vectors into DIR")
    e.add_argument("directory", metavar="DIR")
    e.add_argument("--formats", type=_csv, default=None, metavar="F1,F2", help="default: every format")
    e.add_argument("--cases", type=int, default=2, metavar="N",
                   help="random cases per format on top of the edge-case corpus (default: 2)")
    e.add_argument("--seed", type=int, default=0, help="seed of the random cases (default: 0)")
    c = sub.add_parser("check", help="run the vectors in DIR through TARGET",
                       description="TARGET: gguf-py, ggml, kernels[:ISA] or module:function "
                                   "(see `quantspec verify --help` for the function's signature)")
    c.add_argument("directory", metavar="DIR")
    c.add_argument("target", metavar="TARGET")
    c.add_argument("--formats", type=_csv, default=None, metavar="F1,F2", help="default: every file in DIR")
    c.add_argument("--ops", type=_csv, default=["quantize", "dequantize"], metavar="OP,...",
                   help="quantize,dequantize (default: both)")


def run(args: argparse.Namespace) -> int:
    from quantspec import registry, vectors, verify
    from quantspec.errors import UnknownFormatError

    if args.vectors_command == "export":
        try:
            formats = [registry.resolve(f) for f in args.formats] if args.formats else None
            if args.cases < 0:
                raise ValueError("--cases must be >= 0")
            paths = vectors.export(args.directory, formats, random_cases=args.cases, seed=args.seed)
        except (UnknownFormatError, ValueError, OSError) as exc:
            print(f"quantspec vectors export: {exc}", file=sys.stderr)
            return 2
        for path in paths:
            print(path)
        return 0
    try:
        bad = [op for op in args.ops if op not in verify.OPS]
        if bad:
            raise ValueError(f"unknown op {bad[0]!r}: expected {', '.join(verify.OPS)}")
        target = verify.load_target(args.target)
        outcomes = vectors.check(args.directory, target, args.formats, args.ops)
    except ValueError as exc:  # VectorFileError, TargetError, bad ops
        print(f"quantspec vectors check: {exc}", file=sys.stderr)
        return 2
    print(verify.render(outcomes, target.name))
    if any(not o.ok for o in outcomes):
        return 1
    return 0 if any(o.status != verify.NA for o in outcomes) else 2
