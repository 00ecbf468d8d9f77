"""quantize_file against llama_model_quantize on models built here: the
whole output file is byte-identical (header, metadata, tensor table, every
tensor's bytes) for every file type whose formats quantspec has, from f32,
f16, bf16 and quantized sources, with the options and with importance
matrices in both file formats. A mix that needs a format quantspec lacks is
refused before anything is written, naming the tensor and the format."""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama_model_quantize is the oracle")

import quantspec as qs  # noqa: E402
from quantspec.errors import GGUFError  # noqa: E402
from quantspec.gguf import open_gguf, quantize_file  # noqa: E402
from quantspec.gguf.imatrix import load_imatrix  # noqa: E402
from tests.gguf.builders import first_difference, llama_plan, llama_quantize, tiny_llama, write_gguf  # noqa: E402

pytestmark = pytest.mark.oracle

LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16", "F32"]
K_MIXES = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q3_K_M", "Q3_K_S", "Q3_K_L", "Q2_K", "Q6_K"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    short = dict(n_layer=3, n_embd=64, n_ff=96, n_vocab=32, scale=0.05)
    k_rows = dict(n_layer=2, n_embd=256, n_ff=256, n_vocab=32, scale=0.05)
    return {
        "f32": tiny_llama(d / "f32.gguf", **short),
        "f16": tiny_llama(d / "f16.gguf", dtype="f16", seed=1, **short),
        "bf16": tiny_llama(d / "bf16.gguf", dtype="bf16", seed=2, **short),
        "q4_1": tiny_llama(d / "q4_1.gguf", dtype="q4_1", seed=3, **short),
        "tied": tiny_llama(d / "tied.gguf", tied=True, seed=4, **short),
        "k_rows": tiny_llama(d / "k_rows.gguf", seed=5, **k_rows),
    }


def _missing_formats(plan: dict[str, str]) -> set[str]:
    return {t for t in plan.values() if t not in qs.formats()}


def _compare(tmp_path, src, target: str, llama_ftype: str | None = None, **options):
    """Ours and llama.cpp's outputs are the same file, or (for mixes quantspec
    cannot write yet) ours is refused with the missing format named."""
    llama_ftype = llama_ftype or target
    llama_options = {k: v for k, v in options.items() if k not in ("imatrix_file",)}
    plan = llama_plan(src, llama_ftype, **llama_options)
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    kwargs = {k: v for k, v in options.items() if k not in ("imatrix", "kv_overrides", "imatrix_file")}
    if "imatrix_file" in options:
        kwargs["imatrix"] = options["imatrix_file"]
    missing = _missing_formats(plan)
    if missing:
        with pytest.raises(GGUFError, match="|".join(sorted(missing))):
            quantize_file(src, ours, target, threads=2, **kwargs)
        assert not ours.exists() and list(tmp_path.glob(".ours.gguf.*")) == []
        return
    assert llama_quantize(src, theirs, llama_ftype, **llama_options) == 0
    quantize_file(src, ours, target, threads=2, **kwargs)
    assert first_difference(ours, theirs) == ""


@pytest.mark.parametrize("ftype", LEGACY + K_MIXES)
@pytest.mark.parametrize("source", ["f32", "f16", "bf16", "tied"])
def test_file_types_byte_identical(tmp_path, models, ftype, source):
    _compare(tmp_path, models[source], ftype)


@pytest.mark.parametrize("ftype", ["Q8_0", "Q4_0", "Q5_1", "F16", "Q4_K_M"])
def test_requantize_byte_identical(tmp_path, models, ftype):
    _compare(tmp_path, models["q4_1"], ftype, allow_requantize=True)


# Q4_K_M, Q3_K_M, Q2_K and Q6_K between them use q2_k .. q6_k; the other
# mixes (same formats, other rules: test_gguf_mix) run with the slow tests
K_FAST = ["Q4_K_M", "Q3_K_M", "Q2_K", "Q6_K"]


@pytest.mark.parametrize("ftype", [f if f in K_FAST else pytest.param(f, marks=pytest.mark.slow)
                                   for f in K_MIXES] + ["Q4_0"])
def test_k_row_lengths(tmp_path, models, ftype):
    _compare(tmp_path, models["k_rows"], ftype)


@pytest.mark.parametrize("tensor_type,ftype", [("q4_0", "Q4_0"), ("q8_0", "Q8_0"), ("q5_1", "Q5_1"), ("f16", "F16")])
def test_a_tensor_type_is_the_pure_mix(tmp_path, models, tensor_type, ftype):
    _compare(tmp_path, models["f32"], tensor_type, llama_ftype=ftype, pure=True)


@pytest.mark.parametrize("options", [
    dict(leave_output_tensor=True), dict(pure=True), dict(output_tensor_type="q4_0"),
    dict(token_embedding_type="q8_0", output_tensor_type="q5_0"),
    dict(tensor_types=[("attn_v", "q8_0"), (r"blk\.1\.", "q5_1")]),
], ids=["leave-output", "pure", "output-type", "embd-and-output", "tensor-types"])
def test_options_byte_identical(tmp_path, models, options):
    _compare(tmp_path, models["f32"], "Q4_0", **options)


# -- importance matrices -------------------------------------------------------

def _activations(path, seed=7):
    """Sums of squares and counts for every 2-D weight, as llama-imatrix collects them."""
    rng = np.random.default_rng(seed)
    with open_gguf(path) as f:
        out = {}
        for t in f.tensors:
            if len(t.shape) >= 2 and t.name.endswith(".weight"):
                out[t.name] = (rng.gamma(0.5, 2.0, t.shape[0]).astype(np.float32) * 37, int(rng.integers(5, 500)))
    return out


def write_imatrix_gguf(path, stats, datasets=("wiki.train.raw",), chunk_count=12, chunk_size=512):
    from gguf import GGUFValueType

    kvs = {"imatrix.datasets": (list(datasets), GGUFValueType.ARRAY, GGUFValueType.STRING),
           "imatrix.chunk_count": chunk_count, "imatrix.chunk_size": chunk_size}
    tensors = []
    for name, (sums, count) in stats.items():
        tensors.append((f"{name}.in_sum2", sums.reshape(1, -1), "f32"))
        tensors.append((f"{name}.counts", np.array([[count]], np.float32), "f32"))
    return write_gguf(path, kvs, tensors, arch="imatrix")


def write_imatrix_dat(path, stats, ncall=10, chunk_count=12, dataset=b"wiki.train.raw"):
    out = [struct.pack("<i", len(stats))]
    for name, (sums, count) in stats.items():
        values = (sums / np.float32(count) * np.float32(ncall)).astype(np.float32)
        out += [struct.pack("<i", len(name)), name.encode(), struct.pack("<ii", ncall, values.size), values.tobytes()]
    out += [struct.pack("<i", chunk_count), struct.pack("<i", len(dataset)), dataset]
    path.write_bytes(b"".join(out))
    return path


@pytest.mark.parametrize("kind", ["gguf", "dat"])
@pytest.mark.parametrize("ftype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_M"])
def test_imatrix_byte_identical(tmp_path, models, kind, ftype):
    src = tiny_llama(tmp_path / "m8.gguf", n_layer=8, n_embd=64, n_ff=96, n_vocab=32, scale=0.05, seed=9)
    stats = _activations(src)
    path = (write_imatrix_gguf(tmp_path / "im.gguf", stats) if kind == "gguf"
            else write_imatrix_dat(tmp_path / "im.dat", stats))
    im = load_imatrix(path)
    # llama-quantize passes these weights and writes these keys (tools/quantize/quantize.cpp)
    overrides = [("quantize.imatrix.file", str(path)), ("quantize.imatrix.dataset", "wiki.train.raw"),
                 ("quantize.imatrix.entries_count", len(im.entries)), ("quantize.imatrix.chunks_count", 12)]
    _compare(tmp_path, src, ftype, imatrix=im.entries, kv_overrides=overrides, imatrix_file=str(path))


def test_imatrix_normalization(tmp_path, models):
    stats = {"a.weight": (np.array([3, 0, 1e-30, 7.5], np.float32), 3),
             "b.weight": (np.array([1, 2, 3, 4], np.float32), 0)}
    im = load_imatrix(write_imatrix_gguf(tmp_path / "im.gguf", stats))
    expected = stats["a.weight"][0] / np.float32(3)
    assert im.entries["a.weight"].view(np.uint32).tolist() == expected.view(np.uint32).tolist()
    assert im.entries["b.weight"].tolist() == [1, 1, 1, 1]  # no tokens: weights 1
    assert (im.datasets, im.chunk_count, im.chunk_size, im.is_legacy) == (["wiki.train.raw"], 12, 512, False)
    dat = load_imatrix(write_imatrix_dat(tmp_path / "im.dat", {"a.weight": stats["a.weight"]}, ncall=10))
    legacy_values = (stats["a.weight"][0] / np.float32(3) * np.float32(10)).astype(np.float32)
    assert dat.entries["a.weight"].view(np.uint32).tolist() == (legacy_values / np.float32(10)).view(np.uint32).tolist()
    assert (dat.datasets, dat.chunk_count, dat.is_legacy) == (["wiki.train.raw"], 12, True)


def test_expert_tensors_use_their_slice(tmp_path):
    """3-D expert weights: rows of expert e are encoded with weights
    e*ne0..(e+1)*ne0, normalized by that expert's own token count."""
    from gguf import GGUFValueType

    n_expert, n_embd = 4, 64
    src = tiny_llama(tmp_path / "moe.gguf", n_layer=1, n_embd=n_embd, n_ff=64, n_vocab=32, n_head=4, n_head_kv=4,
                     n_expert=n_expert, scale=0.05)
    rng = np.random.default_rng(3)
    tensors = []
    with open_gguf(src) as f:
        for t in f.tensors:
            if len(t.shape) < 2:
                continue
            experts = t.shape[2] if len(t.shape) == 3 else 1
            sums = rng.gamma(0.5, 2.0, (experts, t.shape[0])).astype(np.float32)
            counts = rng.integers(1, 500, (1, experts)).astype(np.float32)
            counts[0, -1] = 0 if experts > 1 else counts[0, -1]  # an expert that saw no tokens: weights 1
            tensors += [(f"{t.name}.in_sum2", sums, "f32"), (f"{t.name}.counts", counts, "f32")]
    path = write_gguf(tmp_path / "im.gguf", {"imatrix.datasets": (["d"], GGUFValueType.ARRAY, GGUFValueType.STRING),
                                             "imatrix.chunk_count": 3, "imatrix.chunk_size": 512},
                      tensors, arch="imatrix")
    im = load_imatrix(path)
    assert im.entries["blk.0.ffn_up_exps.weight"].size == n_embd * n_expert
    assert (im.entries["blk.0.ffn_up_exps.weight"][-n_embd:] == 1).all()
    overrides = [("quantize.imatrix.file", str(path)), ("quantize.imatrix.dataset", "d"),
                 ("quantize.imatrix.entries_count", len(im.entries)), ("quantize.imatrix.chunks_count", 3)]
    _compare(tmp_path, src, "Q4_0", imatrix=im.entries, kv_overrides=overrides, imatrix_file=str(path))


@pytest.mark.parametrize("to,ftype", [("f16", "F16"), ("bf16", "BF16"), ("f32", "F32")])
def test_dequantize_matches_llama_cpp_float_files(tmp_path, models, to, ftype):
    """Every quantized tensor decodes to the bytes llama_model_quantize writes
    for the float file types (which also convert f32 matrices; we keep those)."""
    from quantspec.gguf import dequantize_file

    src = models["q4_1"]
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    dequantize_file(src, ours, to)
    assert llama_quantize(src, theirs, ftype, allow_requantize=True) == 0
    with open_gguf(src) as s, open_gguf(ours) as a, open_gguf(theirs) as b:
        for t in s.tensors:
            if t.type_name == "q4_1":
                assert a.tensor(t.name).type_name == b.tensor(t.name).type_name == to
                assert bytes(a.raw(a.tensor(t.name))) == bytes(b.raw(b.tensor(t.name)))


def test_alignment_other_than_32_is_kept(tmp_path):
    """llama_model_quantize copies general.alignment = 64 but pads to 32, and
    then refuses its own output; ours keeps 64, and llama.cpp loads it."""
    rng = np.random.default_rng(0)
    kvs = {"llama.block_count": 1, "llama.context_length": 64, "llama.embedding_length": 64,
           "llama.feed_forward_length": 64, "llama.attention.head_count": 4,
           "llama.attention.layer_norm_rms_epsilon": 1e-5}
    tensors = [("token_embd.weight", rng.standard_normal((30, 64)), "f32"),
               ("blk.0.attn_q.weight", rng.standard_normal((64, 64)), "f32"),
               ("output_norm.weight", rng.standard_normal(64), "f32")]
    src64 = write_gguf(tmp_path / "a64.gguf", kvs, tensors, alignment=64)
    src32 = write_gguf(tmp_path / "a32.gguf", kvs, tensors)
    quantize_file(src64, tmp_path / "o64.gguf", "Q8_0")
    quantize_file(src32, tmp_path / "o32.gguf", "Q8_0")
    assert llama_plan(tmp_path / "o64.gguf", "Q8_0")  # llama.cpp loads it
    with open_gguf(tmp_path / "o64.gguf") as a, open_gguf(tmp_path / "o32.gguf") as b:
        assert a.alignment == 64 and all(t.offset % 64 == 0 for t in a.tensors)
        assert [bytes(a.raw(t)) for t in a.tensors] == [bytes(b.raw(t)) for t in b.tensors]
    assert llama_quantize(src64, tmp_path / "llama64.gguf", "Q8_0") == 0
    with pytest.raises(GGUFError, match="runs past the end"):
        open_gguf(tmp_path / "llama64.gguf")
