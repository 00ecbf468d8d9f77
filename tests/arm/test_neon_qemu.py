"""The AArch64 kernels (neon, neondot, and the portable scalar ones built for
AArch64) equal the spec, proved without ARM hardware: the generated C is
cross-compiled with each ISA's flags from generated/MANIFEST.json, linked with
the driver tests/arm/driver.c into one static binary, and run under qemu-user
on the edge-case corpus (quantspec.corpus) and random cases; quantize must
give the spec's bytes, dequantize and vec_dot its float bit patterns.

Two builds: "simd" holds every neon and neondot kernel and the scalar
kernels of the same formats (the default run); "portable" holds the scalar
kernels of the formats without NEON sections (``-m slow``).

qemu's CPU per ISA: neon and scalar run on a Cortex-A53 (ARMv8.0, no SDOT),
so they need nothing beyond the baseline; neondot runs on qemu's "max" CPU.
Needs Debian's ``gcc-aarch64-linux-gnu`` and ``qemu-user``; skips, saying
which is missing, without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import quantspec as qs
from quantspec import corpus, registry
from tests.bits import assert_same_bits

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CC = shutil.which("aarch64-linux-gnu-gcc")
OBJDUMP = shutil.which("aarch64-linux-gnu-objdump")
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
MISSING = [name for name, path in (("aarch64-linux-gnu-gcc (Debian: gcc-aarch64-linux-gnu)", CC),
                                   ("qemu-aarch64 (Debian: qemu-user)", QEMU)) if path is None]

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason="cannot cross-test AArch64 kernels: missing " + ", ".join(MISSING)),
    pytest.mark.skipif(not (ROOT / "codegen").is_dir(), reason="needs the source tree"),
]

#: the AArch64 builds of this test and the qemu CPU each runs on
QEMU_CPU = {"scalar": "cortex-a53", "neon": "cortex-a53", "neondot": "max"}
F32 = np.float32
FUSED = re.compile(r"\s(fmla|fmls|fmadd|fmsub|fnmadd|fnmsub|bfmla\w*)\s")


def _manifest() -> dict:
    return json.loads((ROOT / "generated" / "MANIFEST.json").read_text())


def _arm_kernels(build: str) -> list[dict]:
    """The kernels of a build: "simd" or "portable" (see the module docstring)."""
    kernels = [k for k in _manifest()["kernels"] if k["isa"] in QEMU_CPU]
    simd_formats = {k["format"] for k in kernels if k["isa"] != "scalar"}
    return [k for k in kernels if (k["format"] in simd_formats) == (build == "simd")]


# ------------------------------------------------------------------- build

@dataclass
class ArmBuild:
    driver: Path
    objects: dict[str, list[Path]]  # isa -> kernel objects


def _kernel_table(kernels: list[dict]) -> str:
    lines = ['#include "driver.h"']
    lines += [f'#include "qs_kernels_{isa}.h"' for isa in sorted({k["isa"] for k in kernels})]
    lines.append("const struct qs_driver_kernel QS_DRIVER_KERNELS[] = {")
    for k in kernels:
        slots = [k["symbol"] if k["op"] == op else "0" for op in ("quantize", "dequantize", "vec_dot")]
        lines.append(f'    {{"{k["isa"]}", "{k["format"]}", "{k["op"]}", {", ".join(slots)}}},')
    lines.append("};")
    lines.append(f"const int QS_DRIVER_NKERNELS = {len(kernels)};")
    return "\n".join(lines) + "\n"


def _run_checked(cmd: list[str]) -> None:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{result.stdout}{result.stderr}")


def _build(out: Path, kernels: list[dict]) -> ArmBuild:
    """``kernels`` compiled as the build would compile them on AArch64 (the
    MANIFEST's include dirs and flags per ISA), linked statically."""
    jobs, objects = [], {}
    files = {k["file"] for k in kernels}
    for ext in _manifest()["extensions"]:
        sources = [src for src in ext["sources"] if src in files]
        if ext["isa"] not in QEMU_CPU or not sources:
            continue
        includes = [f"-I{ROOT / d}" for d in ext["include_dirs"]]
        (out / ext["isa"]).mkdir()
        for src in sources:
            obj = out / ext["isa"] / (Path(src).stem + ".o")
            objects.setdefault(ext["isa"], []).append(obj)
            jobs.append([CC, *ext["cflags"], "-Wall", "-Werror", *includes, "-c", str(ROOT / src), "-o", str(obj)])
    (out / "table.c").write_text(_kernel_table(kernels))
    includes = [f"-I{ROOT / 'generated' / isa}" for isa in objects] + [f"-I{HERE}"]
    for name in ("driver.c", "table.c"):
        src = HERE / name if name == "driver.c" else out / name
        obj = out / (Path(name).stem + ".o")
        jobs.append([CC, "-O2", "-Wall", "-Werror", "-march=armv8-a", *includes, "-c", str(src), "-o", str(obj)])
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_run_checked, jobs))
    driver = out / "driver"
    _run_checked([CC, "-static", "-o", str(driver), str(out / "driver.o"), str(out / "table.o"),
                  *(str(o) for objs in objects.values() for o in objs), "-lm"])
    return ArmBuild(driver, objects)


@pytest.fixture(scope="session")
def arm_builds(tmp_path_factory):
    """build name -> ArmBuild, each compiled on first use."""
    built: dict[str, ArmBuild] = {}

    def get(name: str) -> ArmBuild:
        if name not in built:
            built[name] = _build(tmp_path_factory.mktemp(f"aarch64-{name}"), _arm_kernels(name))
        return built[name]
    return get


@pytest.fixture
def arm_build(arm_builds) -> ArmBuild:
    return arm_builds("simd")


# -------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One kernel call: its inputs, and what the spec says it returns."""

    case: str
    nrows: int
    n: int
    inputs: tuple[np.ndarray, ...]
    expected: np.ndarray  # uint8 bytes (quantize) or float32 values
    expected_result: int = 0
    compare: np.ndarray | None = None  # quantize: which output bytes the spec defines (None: all)


def _header(isa: str, fmt: str, op: str, job: Job) -> bytes:
    spec = registry.spec(fmt)
    act_bytes = 0
    if op == "vec_dot":
        act_bytes = registry.spec(spec.vec_dot_format).row_bytes(job.n)
    has_imatrix = int(op == "quantize" and len(job.inputs) > 1)
    return (f"{isa} {fmt} {op} {job.nrows} {job.n} {spec.row_bytes(job.n)} {act_bytes} {has_imatrix}\n"
            .encode())


def _output_size(fmt: str, op: str, job: Job) -> int:
    if op == "quantize":
        return job.nrows * registry.spec(fmt).row_bytes(job.n)
    return 4 * (job.nrows * job.n if op == "dequantize" else job.nrows)


def run_driver(build: ArmBuild, isa: str, fmt: str, op: str, jobs: list[Job], cpu: str | None = None):
    """The kernel's (result, output) of every job, from one qemu run."""
    stdin = b"".join(_header(isa, fmt, op, j) + b"".join(np.ascontiguousarray(a).tobytes() for a in j.inputs)
                     for j in jobs)
    proc = subprocess.run([QEMU, "-cpu", cpu or QEMU_CPU[isa], str(build.driver)], input=stdin,
                          capture_output=True, timeout=120)
    if proc.returncode:
        raise AssertionError(f"driver exited with {proc.returncode} on {fmt} {op} {isa}: "
                             f"{proc.stderr.decode(errors='replace')}")
    out, pos, results = proc.stdout, 0, []
    for j in jobs:
        size = _output_size(fmt, op, j)
        (result,) = struct.unpack_from("<q", out, pos)
        results.append((result, out[pos + 8:pos + 8 + size]))
        pos += 8 + size
    assert pos == len(out), f"driver wrote {len(out)} bytes, expected {pos}"
    return results


def _reference(fn, *args, **kwargs):
    with qs.use_isa("reference"):
        return fn(*args, **kwargs)


def _rng(fmt: str, op: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{fmt}/{op}".encode()))


def _lengths(spec) -> list[int]:
    """Row lengths that reach every loop and tail of the kernels: 1..5 blocks,
    around 8 and 16 (the vector steps), and long rows with ragged tails."""
    if spec.block_size == 1:
        return [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 257]
    return [spec.block_size * nb for nb in (1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 19, 20, 31, 32, 35, 77)]


def _random_rows(rng, nrows: int, n: int) -> np.ndarray:
    scale = rng.choice([1.0, 1e-3, 300.0, 1e-6])
    return (rng.standard_normal((nrows, n)) * scale).astype(F32)


def _act_row(fmt: str, x: np.ndarray) -> np.ndarray:
    """The activation of the dot product, quantized by the spec from ``x``."""
    act = registry.spec(fmt).vec_dot_format
    return _reference(qs.quantize, act, x).reshape(-1)


def quantize_jobs(fmt: str) -> list[Job]:
    spec = registry.spec(fmt)
    jobs = []

    def add(name, x, imatrix=None):
        x = np.ascontiguousarray(x, dtype=F32)
        expected = _reference(qs.quantize, fmt, x, imatrix=imatrix).reshape(-1)
        inputs = (x,) if imatrix is None else (x, np.ascontiguousarray(imatrix, dtype=F32))
        jobs.append(Job(name, x.shape[0], x.shape[1], inputs, expected, -1))

    for case in corpus.cases(fmt):
        if not case.decode_only:
            add(f"corpus {case.id}", case.x, case.imatrix)
    rng = _rng(fmt, "quantize")
    for n in _lengths(spec):
        nrows = int(rng.integers(1, 4))
        add(f"random n={n}", _random_rows(rng, nrows, n))
        if spec.imatrix != "ignored" and spec.block_size > 1:
            add(f"random n={n} imatrix", _random_rows(rng, nrows, n), (rng.random(n) * 4).astype(F32))
    if fmt in ("f16", "bf16"):  # every binary16 value, the midpoints between them, random bit patterns
        halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(F32)
        mids = ((halves.view(np.uint32) + np.uint32(0x1000)) & np.uint32(0xFFFFF000)).view(F32)
        bits = rng.integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32).view(F32)
        add("every half, midpoints, random bit patterns", np.concatenate([halves, mids, bits]).reshape(6, -1))
    if spec.nonfinite_input == "reject":
        # the kernel names the first block holding NaN or inf; the other blocks are quantized as usual
        n = spec.block_size * 20
        x = _random_rows(rng, 3, n)
        x[1, 5 * spec.block_size + 3] = np.inf
        x[1, 9 * spec.block_size] = np.nan
        x[2, 2 * spec.block_size + 1] = -np.inf
        blocks = x.reshape(-1, spec.block_size)
        bad = ~np.isfinite(blocks).all(axis=1)
        clean = np.where(bad[:, None], F32(0), blocks).reshape(x.shape)
        expected = _reference(qs.quantize, fmt, clean).reshape(-1)
        compare = np.repeat(~bad, spec.type_size)
        jobs.append(Job("non-finite blocks", 3, n, (x,), expected, int(np.argmax(bad)), compare))
    return jobs


def dequantize_jobs(fmt: str) -> list[Job]:
    spec = registry.spec(fmt)
    jobs = []

    def add(name, q, n):
        q = np.ascontiguousarray(q, dtype=np.uint8).reshape(-1, spec.row_bytes(n))
        expected = _reference(qs.dequantize, fmt, q).reshape(-1)
        jobs.append(Job(name, q.shape[0], n, (q,), expected))

    for case in corpus.cases(fmt):
        if case.decode_only:
            add(f"corpus {case.id}", case.q, case.q.shape[1] // spec.type_size * spec.block_size)
        else:
            add(f"corpus {case.id}", _reference(qs.quantize, fmt, case.x, imatrix=case.imatrix), case.x.shape[1])
    rng = _rng(fmt, "dequantize")
    for n in _lengths(spec):  # arbitrary bytes: NaN, inf and subnormal scales included
        nrows = int(rng.integers(1, 4))
        add(f"random bytes n={n}", rng.integers(0, 256, nrows * spec.row_bytes(n), dtype=np.uint8), n)
    return jobs


def vec_dot_jobs(fmt: str) -> list[Job]:
    spec = registry.spec(fmt)
    act = registry.spec(spec.vec_dot_format)
    jobs = []

    def add(name, wq, aq, n):
        wq = np.ascontiguousarray(wq, dtype=np.uint8).reshape(-1, spec.row_bytes(n))
        aq = np.ascontiguousarray(aq, dtype=np.uint8).reshape(-1)
        expected = _reference(qs.vec_dot, fmt, wq, aq)
        jobs.append(Job(name, wq.shape[0], n, (wq, aq), expected))

    rng = _rng(fmt, "vec_dot")
    for case in corpus.cases(fmt):
        if case.decode_only:
            n = case.q.shape[1] // spec.type_size * spec.block_size
            add(f"corpus {case.id}, random activation bytes", case.q,
                rng.integers(0, 256, act.row_bytes(n), dtype=np.uint8), n)
            continue
        x = case.x
        wq = _reference(qs.quantize, fmt, x, imatrix=case.imatrix)
        add(f"corpus {case.id}", wq, _act_row(fmt, x[:1]), x.shape[1])
        # the case's rows as one long row: 16-block steps and their tails
        long = x.reshape(1, -1)
        add(f"corpus {case.id}, rows joined", wq.reshape(1, -1), _act_row(fmt, long[:, ::-1].copy()), long.shape[1])
    for n in _lengths(spec):
        nrows = int(rng.integers(1, 6))
        x = _random_rows(rng, nrows, n)
        add(f"random n={n}", _reference(qs.quantize, fmt, x), _act_row(fmt, _random_rows(rng, 1, n)), n)
        add(f"random bytes n={n}", rng.integers(0, 256, nrows * spec.row_bytes(n), dtype=np.uint8),
            rng.integers(0, 256, act.row_bytes(n), dtype=np.uint8), n)
    return jobs


_JOBS = {"quantize": quantize_jobs, "dequantize": dequantize_jobs, "vec_dot": vec_dot_jobs}
_JOB_CACHE: dict[tuple[str, str], list[Job]] = {}


def jobs_for(fmt: str, op: str) -> list[Job]:
    """The jobs of (fmt, op) with the spec's answers, shared by every ISA."""
    key = (fmt, op)
    if key not in _JOB_CACHE:
        _JOB_CACHE[key] = _JOBS[op](fmt)
    return _JOB_CACHE[key]


# ------------------------------------------------------------------- tests

def _params():
    return [pytest.param(build, k["format"], k["op"], k["isa"], id=f"{k['format']}-{k['op']}-{k['isa']}",
                         marks=[pytest.mark.slow] if build == "portable" else [])
            for build in ("simd", "portable") for k in _arm_kernels(build)]


@pytest.mark.parametrize("build,fmt,op,isa", _params())
def test_kernel_equals_spec_under_qemu(arm_builds, build, fmt, op, isa):
    jobs = jobs_for(fmt, op)
    spec = registry.spec(fmt)
    for job, (result, raw) in zip(jobs, run_driver(arm_builds(build), isa, fmt, op, jobs)):
        where = f"{fmt} {op} on {isa} (qemu -cpu {QEMU_CPU[isa]}), {job.case}, {job.nrows}x{job.n}"
        assert result == job.expected_result, f"{where}: returned {result}, expected {job.expected_result}"
        if op == "quantize":
            actual = np.frombuffer(raw, dtype=np.uint8)
            differ = actual != job.expected
            if job.compare is not None:
                differ &= job.compare
            if differ.any():
                block = int(np.argmax(differ)) // spec.type_size
                blocks = slice(block * spec.type_size, (block + 1) * spec.type_size)
                raise AssertionError(f"{where}: block {block} is {actual[blocks].tobytes().hex()}, "
                                     f"expected {job.expected[blocks].tobytes().hex()}")
        else:
            assert_same_bits(np.frombuffer(raw, dtype=F32), job.expected, where)


def _disassembly(obj: Path) -> str:
    return subprocess.run([OBJDUMP, "-d", str(obj)], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(OBJDUMP is None, reason="aarch64-linux-gnu-objdump (Debian: binutils-aarch64-linux-gnu) "
                                             "not found")
@pytest.mark.parametrize("build", ["simd", pytest.param("portable", marks=pytest.mark.slow)])
def test_no_fused_multiply_add_in_any_kernel(arm_builds, build):
    """-ffp-contract=off holds: no a*b+c of any kernel became one FMA
    instruction (AArch64 compilers contract by default, which changes bits)."""
    for isa, objects in arm_builds(build).objects.items():
        for obj in objects:
            fused = FUSED.findall(_disassembly(obj))
            assert not fused, f"{isa}/{obj.name}: fused multiply-adds {sorted(set(fused))}"


@pytest.mark.skipif(OBJDUMP is None, reason="aarch64-linux-gnu-objdump not found")
def test_neondot_uses_sdot_and_neon_does_not(arm_build):
    legacy = {k["format"] for k in _arm_kernels("simd")
              if k["op"] == "vec_dot" and k["template"].endswith("legacy.c.j2")}
    for isa in ("neon", "neondot"):
        for obj in arm_build.objects[isa]:
            sdot = re.search(r"\s[su]dot\s", _disassembly(obj)) is not None
            if isa == "neon":
                assert not sdot, f"neon/{obj.name} uses the dot-product extension"
            elif obj.stem in legacy:
                assert sdot, f"neondot/{obj.name}: the integer dot products do not use SDOT"


def test_neondot_needs_the_dot_product_extension(arm_build):
    """On a core without SDOT (Cortex-A53) the neondot dot product traps, so
    dispatch must read the hwcap; the neon one runs there (the other tests)."""
    fmt = "q4_0"
    job = jobs_for(fmt, "vec_dot")[0]
    stdin = _header("neondot", fmt, "vec_dot", job) + b"".join(a.tobytes() for a in job.inputs)
    proc = subprocess.run([QEMU, "-cpu", "cortex-a53", str(arm_build.driver)], input=stdin, capture_output=True,
                          timeout=60)
    assert proc.returncode in (-signal.SIGILL, 128 + signal.SIGILL), proc.returncode
