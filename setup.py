"""Build the per-ISA kernel extensions listed in generated/MANIFEST.json.

Each ISA's kernel C files are compiled with that ISA's flags only; the
Cython wrapper of every extension, and the CPU-feature module, are compiled
with baseline flags, so importing an extension never executes an
instruction the CPU may lack.
"""

import json
import platform
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MANIFEST = json.loads((ROOT / "generated" / "MANIFEST.json").read_text())
BASE_CFLAGS = ["-O3", "-ffp-contract=off"]
# the MANIFEST's arch names; an extension of another arch is not built here
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
    platform.machine().lower(), platform.machine().lower())
KERNEL_EXTENSIONS = {e["name"]: e for e in MANIFEST["extensions"]}


class BuildPerIsa(build_ext):
    """Compile each extension's kernel sources with its own flags, then link
    them into the extension as extra objects."""

    def build_extension(self, ext):
        spec = KERNEL_EXTENSIONS.get(ext.name)
        if spec:
            objects = self.compiler.compile(
                spec["sources"], output_dir=str(Path(self.build_temp) / spec["isa"]),
                include_dirs=spec["include_dirs"], extra_postargs=spec["cflags"], depends=ext.depends)
            ext.extra_objects = list(objects)
            # relink when only kernel sources changed (build_ext compares sources + depends with the target)
            ext.depends = list(ext.depends) + list(spec["sources"])
        super().build_extension(ext)


def kernel_extensions():
    out = []
    for e in MANIFEST["extensions"]:
        if e["arch"] not in ("any", ARCH):
            continue
        # the wrapper's plain vec_dot path reads arrays through NumPy's C API
        ext = Extension(e["name"], [e["pyx"]], include_dirs=[*e["include_dirs"], numpy.get_include()],
                        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")], extra_compile_args=BASE_CFLAGS,
                        depends=[str(p) for p in [*(ROOT / "codegen" / "simd").glob("*.h"),
                                                   *(ROOT / "generated" / "iqgrid").glob("*.h")]])
        out.append(ext)
    return out


extensions = kernel_extensions() + [
    Extension("quantspec._cpu", ["quantspec/_cpu.pyx"], include_dirs=["quantspec"], extra_compile_args=BASE_CFLAGS),
    Extension("quantspec._rowloop", ["quantspec/_rowloop.pyx"], extra_compile_args=BASE_CFLAGS),
]

setup(ext_modules=cythonize(extensions, language_level=3, quiet=True), cmdclass={"build_ext": BuildPerIsa})
