"""The avx512 kernels equal the spec, checked on a CPU without AVX-512 by
emulating the AVX-512 intrinsics with SIMDe (SIMD Everywhere).

Every generated/avx512/<format>.c is compiled as the build compiles it, but
without the -mavx512* flags and with tests/avx512/simde/immintrin.h first on
the include path: the AVX2, FMA and F16C intrinsics stay the compiler's (they
run as this CPU's instructions), the AVX-512 ones become SIMDe's portable C
(plus the few SIMDe 0.7.4 lacks, defined in that header from the Intel
Intrinsics Guide). The objects are linked with the test driver
(tests/arm/driver.c) and run on the jobs of tests/kernel_jobs.py, the same
edge-case corpus and random cases the NEON kernels get under qemu (a shorter
list of row lengths, and no corpus for the formats whose corpus takes minutes
to build, by default; everything under ``-m slow``): quantize must give the
spec's bytes, dequantize and vec_dot its float bit patterns.

This proves the kernels' logic under SIMDe's (and the header's) definitions
of the intrinsics, not their behaviour on AVX-512 hardware: a wrong lane
order, mask, tail or reduction in a kernel shows here, a difference between
SIMDe and the silicon would not. On a machine with AVX-512 the native
kernels are checked directly (tests/kernels/test_bitexact.py).

The streaming stores of dequantize (_mm512_stream_ps, taken for outputs far
beyond the caches) are reached with small outputs: the build lowers
QS_STREAM_MIN_BYTES to 2 KiB, so the jobs of 3 blocks of 256 or 16 of 32
elements and more go through them (the shorter ones take the plain stores).

Objects are cached by a hash of their sources, headers and flags under
build/avx512-simde/. Needs Debian's ``libsimde-dev`` and an x86-64 CPU with
AVX2, FMA and F16C; skips, saying which is missing, without them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.kernel_jobs import BLOCK_COUNTS, SHORT_BLOCK_COUNTS, check_results, jobs_for, run_driver

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SHIM = HERE / "simde"
DRIVER = ROOT / "tests" / "arm"
CC = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
OBJDUMP = shutil.which("objdump")
ISA = "avx512"
#: outputs of at least this many bytes (64-byte aligned) take the streaming-store path
STREAM_MIN_BYTES = 2048


def _simde_header() -> Path | None:
    dirs = [d for var in ("CPATH", "C_INCLUDE_PATH") for d in os.environ.get(var, "").split(":") if d]
    for d in [*dirs, "/usr/local/include", "/usr/include"]:
        if (Path(d) / "simde" / "x86" / "avx512.h").is_file():
            return Path(d) / "simde" / "x86" / "avx512.h"
    return None


def _native_features() -> set[str]:
    try:
        from quantspec import _cpu
        return set(_cpu.features())
    except ImportError:
        return set()


def _missing() -> list[str]:
    missing = []
    if platform.machine().lower() not in ("x86_64", "amd64"):
        missing.append(f"an x86-64 CPU (this is {platform.machine()})")
    elif "avx2" not in _native_features():
        missing.append("a CPU with AVX2, FMA and F16C (the non-AVX-512 parts run natively)")
    if CC is None:
        missing.append("a C compiler (gcc)")
    if _simde_header() is None:
        missing.append("SIMDe headers simde/x86/avx512.h (Debian: libsimde-dev)")
    return missing


MISSING = _missing()

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason="cannot emulate the AVX-512 kernels: missing " + ", ".join(MISSING)),
    pytest.mark.skipif(not (ROOT / "codegen").is_dir(), reason="needs the source tree"),
]


def _manifest() -> dict:
    return json.loads((ROOT / "generated" / "MANIFEST.json").read_text())


def _kernels() -> list[dict]:
    return [k for k in _manifest()["kernels"] if k["isa"] == ISA]


def _extension() -> dict:
    (ext,) = [e for e in _manifest()["extensions"] if e["isa"] == ISA]
    return ext


def _cflags() -> list[str]:
    """The build's avx512 flags without -mavx512* (the CPU has none of it),
    at -O2; -Wno-psabi: SIMDe's 512-bit values pass through functions without
    AVX-512's calling convention, which GCC remarks on."""
    flags = [f for f in _extension()["cflags"] if not f.startswith("-mavx512") and not f.startswith("-O")]
    return ["-O2", *flags, "-Wall", "-Werror", "-Wno-psabi", f"-DQS_STREAM_MIN_BYTES={STREAM_MIN_BYTES}"]


# ------------------------------------------------------------------- build

def _headers() -> list[Path]:
    """Every header an avx512 source may include (hashed into each object's key)."""
    dirs = [ROOT / d for d in _extension()["include_dirs"]] + [ROOT / "generated" / "iqgrid", SHIM, DRIVER]
    return sorted(p for d in dirs if d.is_dir() for p in d.glob("*.h"))


def _compiler_id() -> str:
    return subprocess.run([CC, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _run_checked(cmd: list[str]) -> None:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{result.stdout}{result.stderr}")


def _kernel_table(kernels: list[dict]) -> str:
    lines = ['#include "driver.h"', f'#include "qs_kernels_{ISA}.h"',
             "const struct qs_driver_kernel QS_DRIVER_KERNELS[] = {"]
    for k in kernels:
        slots = [k["symbol"] if k["op"] == op else "0" for op in ("quantize", "dequantize", "vec_dot")]
        lines.append(f'    {{"{k["isa"]}", "{k["format"]}", "{k["op"]}", {", ".join(slots)}}},')
    lines += ["};", f"const int QS_DRIVER_NKERNELS = {len(kernels)};"]
    return "\n".join(lines) + "\n"


def _build(cache: Path) -> tuple[Path, list[Path]]:
    """The driver linked with every avx512 kernel, and the kernel objects.
    Each object is compiled only when its key (compiler, flags, source and
    every header) is new; the files are written under temporary names and
    renamed, so concurrent sessions never see half an object."""
    cflags = _cflags()
    common = hashlib.sha256()
    common.update(_compiler_id().encode())
    common.update("\0".join(cflags).encode())
    for h in _headers():
        common.update(h.name.encode() + h.read_bytes())
    includes = [f"-I{SHIM}", *(f"-I{ROOT / d}" for d in _extension()["include_dirs"]), f"-I{DRIVER}"]
    kernels = _kernels()
    table = _kernel_table(kernels)
    sources = [ROOT / f for f in dict.fromkeys(k["file"] for k in kernels)]
    sources.append(DRIVER / "driver.c")
    jobs, objects = [], []
    for src in sources:
        key = common.copy()
        key.update(src.read_bytes())
        obj = cache / f"{src.stem}.{key.hexdigest()[:16]}.o"
        objects.append(obj)
        if not obj.exists():
            jobs.append((src, obj))
    key = common.copy()
    key.update(table.encode())
    table_src = cache / f"table.{key.hexdigest()[:16]}.c"
    if not table_src.exists():
        tmp = table_src.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(table)
        tmp.replace(table_src)
    table_obj = table_src.with_suffix(".o")
    if not table_obj.exists():
        jobs.append((table_src, table_obj))

    def compile_one(job):
        src, obj = job
        tmp = obj.with_suffix(f".{os.getpid()}.tmp.o")
        _run_checked([CC, *cflags, *includes, "-c", str(src), "-o", str(tmp)])
        tmp.replace(obj)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(compile_one, jobs))
    link_key = hashlib.sha256("".join(o.name for o in [*objects, table_obj]).encode()).hexdigest()[:16]
    driver = cache / f"driver.{link_key}"
    if not driver.exists():
        tmp = driver.with_suffix(f".{os.getpid()}.tmp")
        _run_checked([CC, "-o", str(tmp), *(str(o) for o in objects), str(table_obj), "-lm"])
        tmp.replace(driver)
    return driver, objects[:-1]


@pytest.fixture(scope="session")
def simde_build() -> tuple[Path, list[Path]]:
    cache = ROOT / "build" / "avx512-simde"
    cache.mkdir(parents=True, exist_ok=True)
    return _build(cache)


# ------------------------------------------------------------------- tests

#: formats whose edge-case corpus takes minutes to build (its tie cases bisect
#: with the spec's quantizer, a trellis or grid search here): their default run
#: has the random jobs only, the corpus comes with ``-m slow``
SLOW_CORPUS = frozenset({"iq1_kt", "iq2_kt", "iq3_kt", "iq4_kt", "iq2_ks", "iq4_kss"})


def _params():
    """Each kernel on the corpus and the short list of row lengths; the full
    list of tests/kernel_jobs.py under ``-m slow``."""
    params = []
    for k in _kernels():
        fmt, op, name = k["format"], k["op"], f"{k['format']}-{k['op']}-{ISA}"
        params.append(pytest.param(fmt, op, SHORT_BLOCK_COUNTS, fmt not in SLOW_CORPUS, id=name))
        params.append(pytest.param(fmt, op, BLOCK_COUNTS, True, id=f"{name}-full", marks=pytest.mark.slow))
    return params


@pytest.mark.parametrize("fmt,op,block_counts,with_corpus", _params())
def test_kernel_equals_spec_through_simde(simde_build, fmt, op, block_counts, with_corpus):
    driver, _ = simde_build
    jobs = jobs_for(fmt, op, block_counts, with_corpus)
    check_results(fmt, op, jobs, run_driver([str(driver)], ISA, fmt, op, jobs), f"{ISA} (AVX-512 through SIMDe)")


#: an operand of an AVX-512 instruction: a zmm register, an opmask register,
#: or an EVEX-only vector register (xmm16-31, ymm16-31)
AVX512_OPERAND = re.compile(r"%(zmm\d+|k[0-7]\b|[xy]mm(1[6-9]|2\d|3[01])\b)")


@pytest.mark.skipif(OBJDUMP is None, reason="objdump (Debian: binutils) not found")
def test_no_native_avx512_instruction(simde_build):
    """Every AVX-512 operation of the emulation build is SIMDe's or the
    header's C: no object holds an instruction on zmm, opmask or the upper
    16 vector registers (it would fault on this CPU, or, on one with
    AVX-512, check the hardware instead of the emulation)."""
    _, objects = simde_build
    for obj in objects:
        listing = subprocess.run([OBJDUMP, "-d", str(obj)], capture_output=True, text=True, check=True).stdout
        found = sorted({m.group(1) for m in AVX512_OPERAND.finditer(listing)})
        assert not found, f"{obj.name}: AVX-512 registers {found}"
