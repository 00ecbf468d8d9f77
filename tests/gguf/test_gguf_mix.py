"""quantspec.gguf.mix against llama.cpp: for every file type, on models that
exercise the rules (K-quant row lengths and not, grouped-query attention,
tied embeddings, 8 experts, an importance matrix), the type of every tensor
is the one llama_model_quantize chooses (read from its dry run, so mixes of
formats quantspec does not have yet are checked too)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama_model_quantize is the oracle")

from quantspec.gguf import open_gguf  # noqa: E402
from quantspec.gguf.mix import MixParams, ModelInfo, choose_types, llama_order  # noqa: E402
from quantspec.gguf.quantize import parse_target  # noqa: E402
from tests.gguf.builders import FTYPE, llama_plan, tiny_llama  # noqa: E402

pytestmark = pytest.mark.oracle

MODELS = {
    # 8 layers: n/8, 7n/8, n/16 and use_more_bits pick different layers
    "k_rows": dict(n_layer=8, n_embd=256, n_ff=512, n_vocab=64, n_head=4, n_head_kv=2),
    "gqa4_tied": dict(n_layer=8, n_embd=256, n_ff=256, n_vocab=64, n_head=8, n_head_kv=2, tied=True),
    "short_rows": dict(n_layer=3, n_embd=64, n_ff=96, n_vocab=32),
    "moe8": dict(n_layer=2, n_embd=256, n_ff=256, n_vocab=32, n_head=4, n_head_kv=4, n_expert=8),
}
FILE_TYPES = [f for f in FTYPE if f not in ("F32",)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    return {name: tiny_llama(d / f"{name}.gguf", scale=0.02, **kw) for name, kw in MODELS.items()}


def _imatrix_for(path) -> dict[str, np.ndarray]:
    with open_gguf(path) as f:
        return {t.name: np.ones(t.shape[0] * (t.shape[2] if len(t.shape) > 2 else 1), np.float32)
                for t in f.tensors if len(t.shape) >= 2}


def ours(path, ftype: str, *, pure=False, leave_output_tensor=False, output_tensor_type=None,
         token_embedding_type=None, tensor_types=(), imatrix=None) -> dict[str, str]:
    target = parse_target(ftype)
    with open_gguf(path) as f:
        tensors = [f.tensors[i] for i in llama_order([t.name for t in f.tensors])]
        params = MixParams(target.ftype, target.default_type, pure=pure, quantize_output_tensor=not leave_output_tensor,
                           output_tensor_type=output_tensor_type, token_embedding_type=token_embedding_type,
                           tensor_types=tuple(tensor_types), has_imatrix=imatrix is not None)
        model = ModelInfo.from_metadata(f.get)
        choices = choose_types([(t.name, t.shape, t.type_name) for t in tensors], model, params)
    return {c.name: c.target_type for c in choices}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("ftype", FILE_TYPES)
def test_every_file_type_picks_llama_cpp_types(models, model, ftype):
    expected = llama_plan(models[model], ftype)
    got = ours(models[model], ftype)
    assert list(got) == list(expected)  # the same order: the output file's
    assert got == expected


@pytest.mark.parametrize("ftype", ["Q4_0", "Q5_0", "IQ3_XXS", "IQ4_XS", "IQ4_NL", "Q2_K_S"])
def test_rules_that_depend_on_an_importance_matrix(models, ftype):
    path = models["k_rows"]
    im = _imatrix_for(path)
    assert ours(path, ftype, imatrix=im) == llama_plan(path, ftype, imatrix=im)


OPTIONS = [
    dict(pure=True),
    dict(leave_output_tensor=True),
    dict(output_tensor_type="q8_0"),
    dict(token_embedding_type="q4_0"),
    dict(output_tensor_type="q5_1", token_embedding_type="q4_k"),
    dict(tensor_types=[("attn_v", "q8_0"), ("ffn_down", "q5_k")]),
    dict(tensor_types=[(r"blk\.[0-3]\.ffn_(up|gate)", "q6_k"), ("ffn", "q4_0")], pure=True),
    dict(tensor_types=[("token_embd", "q8_0")]),
]


@pytest.mark.parametrize("model", ["k_rows", "gqa4_tied"])
@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q3_K_L", "F16"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_as_llama_cpp(models, model, ftype, options):
    assert ours(models[model], ftype, **options) == llama_plan(models[model], ftype, **options)


def test_order_is_layer_then_name():
    names = ["blk.10.a.weight", "output.weight", "blk.2.b.weight", "blk.2.a.weight", "token_embd.weight",
             "blk.x.weight"]
    assert [names[i] for i in llama_order(names)] == ["blk.x.weight", "output.weight", "token_embd.weight",
                                                      "blk.2.a.weight", "blk.2.b.weight", "blk.10.a.weight"]
