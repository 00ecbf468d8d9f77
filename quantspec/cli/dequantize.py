"""Decode every block-quantized tensor of a GGUF model back to floats (f16 by
default, or f32 / bf16): values exactly as the format's spec decodes them,
rounded to f16/bf16 to nearest even as ggml rounds. Tensors that are not
block-quantized are copied as they are; metadata and tensor order stay,
general.file_type becomes F32 / F16 / BF16. OUT is written atomically."""

from __future__ import annotations

import argparse

HELP = "decode a quantized GGUF file back to f16, f32 or bf16"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.gguf")
    p.add_argument("output", metavar="OUT.gguf")
    p.add_argument("--to", choices=("f16", "f32", "bf16"), default="f16", help="float type (default: f16)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="threads (default: all CPUs)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")


def run(args: argparse.Namespace) -> int:
    from quantspec.gguf.cli import progress_default, run_command

    def body() -> int:
        from quantspec.gguf.quantize import dequantize_file

        if args.threads is not None and args.threads < 1:
            raise ValueError("--threads must be at least 1")
        report = dequantize_file(args.input, args.output, args.to, threads=args.threads, force=args.force,
                                 progress=progress_default(False if args.quiet else None))
        if not args.quiet:
            print(f"{report.target}: {report.summary()}")
        return 0

    return run_command("quantspec dequantize", body)
