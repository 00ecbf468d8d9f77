"""Kernel jobs for the test drivers (tests/arm/driver.c): inputs with the
spec's answers, the driver's wire format, and the bit-exact comparison.

A driver is a small C program linked with generated kernels that reads jobs
from stdin and writes the kernels' outputs to stdout; it runs the kernels of
ISAs this machine cannot execute directly (AArch64 under qemu-user,
tests/arm/test_neon_qemu.py; AVX-512 through SIMDe,
tests/avx512/test_avx512_simde.py). Every ISA of a format gets the same jobs:
the edge-case corpus (quantspec.corpus) and random cases at lengths that reach
every loop and tail of the kernels.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from dataclasses import dataclass

import numpy as np

import quantspec as qs
from quantspec import corpus, registry
from quantspec.bench import required_imatrix
from tests.bits import assert_same_bits

F32 = np.float32


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


def job_header(isa: str, fmt: str, op: str, job: Job) -> bytes:
    spec = registry.spec(fmt)
    act_bytes = 0
    if op == "vec_dot":
        act_bytes = registry.spec(spec.vec_dot_format).row_bytes(job.n)
    has_imatrix = int(op == "quantize" and len(job.inputs) > 1)
    return (f"{isa} {fmt} {op} {job.nrows} {job.n} {spec.row_bytes(job.n)} {act_bytes} {has_imatrix}\n"
            .encode())


def output_size(fmt: str, op: str, job: Job) -> int:
    if op == "quantize":
        return job.nrows * registry.spec(fmt).row_bytes(job.n)
    return 4 * (job.nrows * job.n if op == "dequantize" else job.nrows)


def reference(fn, *args, **kwargs):
    with qs.use_isa("reference"):
        return fn(*args, **kwargs)


def rng_for(fmt: str, op: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{fmt}/{op}".encode()))


#: row lengths in blocks that reach every loop and tail of the kernels: 1..5
#: blocks, around 8 and 16 (the vector steps), and long rows with ragged tails
BLOCK_COUNTS = (1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 19, 20, 31, 32, 35, 77)
#: a shorter list that still reaches one block, a ragged tail, the 16-block
#: step and the step with a tail (the spec's answers for the long list take
#: minutes for the trellis and grid formats)
SHORT_BLOCK_COUNTS = (1, 3, 16, 19)


def lengths(spec, block_counts: tuple[int, ...] = BLOCK_COUNTS) -> list[int]:
    if spec.block_size == 1:
        return [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 257]
    return [spec.block_size * nb for nb in block_counts]


def quantize_spec(fmt: str, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """``x`` quantized by the spec, with an importance matrix of ones where the
    format requires one and none is given."""
    if imatrix is None:
        imatrix = required_imatrix(fmt, x.shape[-1])
    return reference(qs.quantize, fmt, x, imatrix=imatrix)


def random_rows(rng, nrows: int, n: int) -> np.ndarray:
    scale = rng.choice([1.0, 1e-3, 300.0, 1e-6])
    return (rng.standard_normal((nrows, n)) * scale).astype(F32)


def act_row(fmt: str, x: np.ndarray) -> np.ndarray:
    """The activation of the dot product, quantized by the spec from ``x``."""
    act = registry.spec(fmt).vec_dot_format
    return reference(qs.quantize, act, x).reshape(-1)


def quantize_jobs(fmt: str, block_counts: tuple[int, ...] = BLOCK_COUNTS, with_corpus: bool = True) -> list[Job]:
    spec = registry.spec(fmt)
    jobs = []

    def add(name, x, imatrix=None):
        x = np.ascontiguousarray(x, dtype=F32)
        if imatrix is None:
            imatrix = required_imatrix(fmt, x.shape[1])
        expected = reference(qs.quantize, fmt, x, imatrix=imatrix).reshape(-1)
        inputs = (x,) if imatrix is None else (x, np.ascontiguousarray(imatrix, dtype=F32))
        jobs.append(Job(name, x.shape[0], x.shape[1], inputs, expected, -1))

    for case in corpus.cases(fmt) if with_corpus else ():
        if not case.decode_only:
            add(f"corpus {case.id}", case.x, case.imatrix)
    rng = rng_for(fmt, "quantize")
    for n in lengths(spec, block_counts):
        nrows = int(rng.integers(1, 4))
        add(f"random n={n}", random_rows(rng, nrows, n))
        if spec.imatrix != "ignored" and spec.block_size > 1:
            add(f"random n={n} imatrix", random_rows(rng, nrows, n), (rng.random(n) * 4).astype(F32))
    if fmt in ("f16", "bf16"):  # every binary16 value, the midpoints between them, random bit patterns
        halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(F32)
        mids = ((halves.view(np.uint32) + np.uint32(0x1000)) & np.uint32(0xFFFFF000)).view(F32)
        bits = rng.integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32).view(F32)
        add("every half, midpoints, random bit patterns", np.concatenate([halves, mids, bits]).reshape(6, -1))
    if spec.nonfinite_input == "reject":
        # the kernel names the first block holding NaN or inf; the other blocks are quantized as usual
        n = spec.block_size * 20
        x = random_rows(rng, 3, n)
        x[1, 5 * spec.block_size + 3] = np.inf
        x[1, 9 * spec.block_size] = np.nan
        x[2, 2 * spec.block_size + 1] = -np.inf
        blocks = x.reshape(-1, spec.block_size)
        bad = ~np.isfinite(blocks).all(axis=1)
        clean = np.where(bad[:, None], F32(0), blocks).reshape(x.shape)
        imatrix = required_imatrix(fmt, n)
        expected = quantize_spec(fmt, clean, imatrix).reshape(-1)
        if spec.row_meta_size:  # a row's metadata depends on all its blocks: rows with a bad block are not compared
            compare = np.repeat(~bad.reshape(x.shape[0], -1).any(axis=1), spec.row_bytes(n))
        else:
            compare = np.repeat(~bad, spec.type_size)
        inputs = (x,) if imatrix is None else (x, imatrix)
        jobs.append(Job("non-finite blocks", 3, n, inputs, expected, int(np.argmax(bad)), compare))
    return jobs


def dequantize_jobs(fmt: str, block_counts: tuple[int, ...] = BLOCK_COUNTS, with_corpus: bool = True) -> list[Job]:
    spec = registry.spec(fmt)
    jobs = []

    def add(name, q, n):
        q = np.ascontiguousarray(q, dtype=np.uint8).reshape(-1, spec.row_bytes(n))
        expected = reference(qs.dequantize, fmt, q).reshape(-1)
        jobs.append(Job(name, q.shape[0], n, (q,), expected))

    for case in corpus.cases(fmt) if with_corpus else ():
        if case.decode_only:
            add(f"corpus {case.id}", case.q, case.q.shape[1] // spec.type_size * spec.block_size)
        else:
            add(f"corpus {case.id}", quantize_spec(fmt, case.x, case.imatrix), case.x.shape[1])
    rng = rng_for(fmt, "dequantize")
    for n in lengths(spec, block_counts):  # arbitrary bytes: NaN, inf and subnormal scales included
        nrows = int(rng.integers(1, 4))
        add(f"random bytes n={n}", rng.integers(0, 256, nrows * spec.row_bytes(n), dtype=np.uint8), n)
    return jobs


def vec_dot_jobs(fmt: str, block_counts: tuple[int, ...] = BLOCK_COUNTS, with_corpus: bool = True) -> list[Job]:
    spec = registry.spec(fmt)
    act = registry.spec(spec.vec_dot_format)
    jobs = []

    def add(name, wq, aq, n):
        wq = np.ascontiguousarray(wq, dtype=np.uint8).reshape(-1, spec.row_bytes(n))
        aq = np.ascontiguousarray(aq, dtype=np.uint8).reshape(-1)
        expected = reference(qs.vec_dot, fmt, wq, aq)
        jobs.append(Job(name, wq.shape[0], n, (wq, aq), expected))

    rng = rng_for(fmt, "vec_dot")
    for case in corpus.cases(fmt) if with_corpus else ():
        if case.decode_only:
            n = case.q.shape[1] // spec.type_size * spec.block_size
            add(f"corpus {case.id}, random activation bytes", case.q,
                rng.integers(0, 256, act.row_bytes(n), dtype=np.uint8), n)
            continue
        x = case.x
        wq = quantize_spec(fmt, x, case.imatrix)
        add(f"corpus {case.id}", wq, act_row(fmt, x[:1]), x.shape[1])
        # the case's rows as one long row: 16-block steps and their tails
        long = x.reshape(1, -1)
        if spec.row_meta_size:  # a row's metadata covers that row: the joined row is quantized anew
            imatrix = None if case.imatrix is None else np.tile(case.imatrix, x.shape[0])
            wq_long = quantize_spec(fmt, long, imatrix)
        else:
            wq_long = wq.reshape(1, -1)
        add(f"corpus {case.id}, rows joined", wq_long, act_row(fmt, long[:, ::-1].copy()), long.shape[1])
    for n in lengths(spec, block_counts):
        nrows = int(rng.integers(1, 6))
        x = random_rows(rng, nrows, n)
        add(f"random n={n}", quantize_spec(fmt, x), act_row(fmt, random_rows(rng, 1, n)), n)
        add(f"random bytes n={n}", rng.integers(0, 256, nrows * spec.row_bytes(n), dtype=np.uint8),
            rng.integers(0, 256, act.row_bytes(n), dtype=np.uint8), n)
    return jobs


_JOBS = {"quantize": quantize_jobs, "dequantize": dequantize_jobs, "vec_dot": vec_dot_jobs}
_JOB_CACHE: dict[tuple[str, str, tuple[int, ...], bool], list[Job]] = {}


def jobs_for(fmt: str, op: str, block_counts: tuple[int, ...] = BLOCK_COUNTS, with_corpus: bool = True) -> list[Job]:
    """The jobs of (fmt, op) with the spec's answers, shared by every ISA:
    the edge-case corpus (unless ``with_corpus`` is false) and random cases
    of ``block_counts`` blocks per row."""
    key = (fmt, op, block_counts, with_corpus)
    if key not in _JOB_CACHE:
        _JOB_CACHE[key] = _JOBS[op](fmt, block_counts, with_corpus)
    return _JOB_CACHE[key]


def _split_rows(fmt: str, op: str, jobs: list[Job]) -> list[Job]:
    """Dequantize of a format with per-row metadata is called once per row
    (as the dispatcher does): such a job goes to the driver as one job per
    row."""
    if op != "dequantize" or not registry.spec(fmt).row_meta_size:
        return jobs
    return [Job(j.case, 1, j.n, (row,), j.expected) for j in jobs for row in j.inputs[0]]


def run_driver(command: list[str], isa: str, fmt: str, op: str, jobs: list[Job], timeout: float = 120):
    """The kernel's (result, output bytes) of every job, from one run of the
    driver ``command``."""
    sent = _split_rows(fmt, op, jobs)
    stdin = b"".join(job_header(isa, fmt, op, j) + b"".join(np.ascontiguousarray(a).tobytes() for a in j.inputs)
                     for j in sent)
    proc = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"driver exited with {proc.returncode} on {fmt} {op} {isa}: "
                             f"{proc.stderr.decode(errors='replace')}")
    out, pos, answers = proc.stdout, 0, []
    for j in sent:
        size = output_size(fmt, op, j)
        (result,) = struct.unpack_from("<q", out, pos)
        answers.append((result, out[pos + 8:pos + 8 + size]))
        pos += 8 + size
    assert pos == len(out), f"driver wrote {len(out)} bytes, expected {pos}"
    if len(sent) == len(jobs):
        return answers
    results, it = [], iter(answers)
    for j in jobs:  # the rows of a split job, joined again
        rows = [next(it) for _ in range(j.nrows)]
        results.append((max((r for r, _ in rows), default=0), b"".join(raw for _, raw in rows)))
    return results


def check_results(fmt: str, op: str, jobs: list[Job], results, where: str) -> None:
    """Every job's result equals the spec's: quantize byte for byte (the
    bytes the spec defines), dequantize and vec_dot bit for bit."""
    spec = registry.spec(fmt)
    for job, (result, raw) in zip(jobs, results, strict=True):
        at = f"{fmt} {op} on {where}, {job.case}, {job.nrows}x{job.n}"
        assert result == job.expected_result, f"{at}: returned {result}, expected {job.expected_result}"
        if op == "quantize":
            actual = np.frombuffer(raw, dtype=np.uint8)
            differ = actual != job.expected
            if job.compare is not None:
                differ &= job.compare
            if differ.any():
                block = int(np.argmax(differ)) // spec.type_size
                blocks = slice(block * spec.type_size, (block + 1) * spec.type_size)
                raise AssertionError(f"{at}: block {block} is {actual[blocks].tobytes().hex()}, "
                                     f"expected {job.expected[blocks].tobytes().hex()}")
        else:
            assert_same_bits(np.frombuffer(raw, dtype=F32), job.expected, at)
