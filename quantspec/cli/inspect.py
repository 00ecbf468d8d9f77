"""Show what a GGUF file holds (header, metadata, every tensor's type, shape,
size and bits per weight) and check every block's scales as ggml's
ggml_validate_row_data does, naming the first bad block of each tensor.

Exit status: 0 when every checked block is valid, 1 when some block is
invalid, 2 when the file cannot be read as GGUF (the error names the file,
the tensor or key, and the field)."""

from __future__ import annotations

import argparse
import json

HELP = "list a GGUF file's tensors, types and bpw, and validate every block's scales"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.gguf")
    p.add_argument("--metadata", action="store_true", help="also list the metadata keys and values")
    p.add_argument("--no-validate", action="store_true", help="do not read the tensor data")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    from quantspec.gguf.cli import progress_default, run_command

    def body() -> int:
        from quantspec.gguf.inspection import inspect_file

        result = inspect_file(args.file, validate=not args.no_validate,
                              progress=progress_default(False if args.json else None))
        if args.json:
            print(json.dumps(result.as_dict(), indent=1))
        else:
            print(result.render(show_metadata=args.metadata))
        return 1 if result.invalid else 0

    return run_command("quantspec inspect", body, failed=2)
