"""The AArch64 kernels (neon, neondot, and the portable scalar ones built for
AArch64) equal the spec, proved without ARM hardware: the generated C is
cross-compiled with each ISA's flags from generated/MANIFEST.json, linked with
the driver tests/arm/driver.c into one static binary, and run under qemu-user
on the jobs of tests/kernel_jobs.py (the edge-case corpus and random cases);
quantize must give the spec's bytes, dequantize and vec_dot its float bit
patterns.

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
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kernel_jobs import Job, check_results, job_header, jobs_for, run_driver

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


def run_arm_driver(build: ArmBuild, isa: str, fmt: str, op: str, jobs: list[Job], cpu: str | None = None):
    """The kernel's (result, output) of every job, from one qemu run."""
    return run_driver([QEMU, "-cpu", cpu or QEMU_CPU[isa], str(build.driver)], isa, fmt, op, jobs)


# ------------------------------------------------------------------- tests

def _params():
    return [pytest.param(build, k["format"], k["op"], k["isa"], id=f"{k['format']}-{k['op']}-{k['isa']}",
                         marks=[pytest.mark.slow] if build == "portable" else [])
            for build in ("simd", "portable") for k in _arm_kernels(build)]


@pytest.mark.parametrize("build,fmt,op,isa", _params())
def test_kernel_equals_spec_under_qemu(arm_builds, build, fmt, op, isa):
    jobs = jobs_for(fmt, op)
    check_results(fmt, op, jobs, run_arm_driver(arm_builds(build), isa, fmt, op, jobs),
                  f"{isa} (qemu -cpu {QEMU_CPU[isa]})")


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
    stdin = job_header("neondot", fmt, "vec_dot", job) + b"".join(a.tobytes() for a in job.inputs)
    proc = subprocess.run([QEMU, "-cpu", "cortex-a53", str(arm_build.driver)], input=stdin, capture_output=True,
                          timeout=60)
    assert proc.returncode in (-signal.SIGILL, 128 + signal.SIGILL), proc.returncode
