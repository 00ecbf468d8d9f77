"""Quantize or requantize a GGUF model as llama.cpp's llama-quantize does:
the same tensor types, the same bytes, the same metadata.

TYPE is a llama.cpp file type (a mix: Q4_K_M, Q5_K_S, Q8_0, F16, ... or its
id) or one tensor type for every quantizable tensor (q4_0, q8_0, q6_K, ...).
Names both can mean are told apart by case as llama.cpp spells them: Q4_0
is the file type (its mix puts the output tensor in Q6_K), q4_0 the tensor
type everywhere. The output is written to a temporary file next to OUT and
renamed when complete, so OUT is never partial."""

from __future__ import annotations

import argparse
import sys

HELP = "quantize/requantize a GGUF file as llama-quantize does (same types and bytes)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("input", metavar="IN.gguf")
    p.add_argument("output", metavar="OUT.gguf")
    p.add_argument("type", metavar="TYPE", help="file type (Q4_K_M, Q8_0, F16, ...) or tensor type (q4_0, q8_0, ...)")
    p.add_argument("--allow-requantize", action="store_true",
                   help="allow tensors that are already quantized (decoded to float32 and encoded again)")
    p.add_argument("--leave-output-tensor", action="store_true", help="keep output.weight as it is")
    p.add_argument("--pure", action="store_true",
                   help="no mix rules: every quantizable tensor gets the default type of TYPE")
    p.add_argument("--output-tensor-type", metavar="T", help="tensor type of output.weight")
    p.add_argument("--token-embedding-type", metavar="T", help="tensor type of token_embd.weight")
    p.add_argument("--tensor-type", metavar="PATTERN=TYPE", action="append", default=[],
                   help="tensors whose name matches the regular expression PATTERN (lower-cased, as llama-quantize) "
                        "get TYPE; repeatable, first match wins")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix from llama-imatrix (GGUF or legacy .dat)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="threads (default: all CPUs)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.add_argument("--verbose", "-v", action="store_true", help="list every tensor's old and new type and why")


def run(args: argparse.Namespace) -> int:
    from quantspec.gguf.cli import progress_default, run_command

    def body() -> int:
        from quantspec.gguf.quantize import parse_tensor_type_option, quantize_file

        if args.threads is not None and args.threads < 1:
            raise ValueError("--threads must be at least 1")
        overrides = []
        for text in args.tensor_type:
            pattern, type_name = parse_tensor_type_option(text)
            overrides.append((pattern.lower(), type_name))
        log = (lambda msg: None) if args.quiet else (lambda msg: print(f"note: {msg}", file=sys.stderr))
        report = quantize_file(args.input, args.output, args.type, allow_requantize=args.allow_requantize,
                               leave_output_tensor=args.leave_output_tensor, pure=args.pure,
                               output_tensor_type=args.output_tensor_type,
                               token_embedding_type=args.token_embedding_type, tensor_types=overrides,
                               imatrix=args.imatrix, threads=args.threads, force=args.force,
                               progress=progress_default(False if args.quiet else None), log=log)
        if args.verbose:
            width = max((len(t.name) for t in report.tensors), default=6)
            for t in report.tensors:
                mark = "->" if t.converted else "=="
                im = " (imatrix)" if t.imatrix else ""
                print(f"{t.name:<{width}}  {t.source_type:>6} {mark} {t.target_type:<6} {t.reason}{im}")
        if not args.quiet:
            print(f"{report.target}: {report.summary()}")
        return 0

    return run_command("quantspec quantize", body)
