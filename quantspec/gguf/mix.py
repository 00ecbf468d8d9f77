"""Which tensor type each tensor of a model gets: llama.cpp's quantization
mixes (``Q4_K_M``, ``Q3_K_L``, ...) in Python.

This is ``llama_tensor_get_type`` and its helpers from llama.cpp
``src/llama-quant.cpp`` at 0c1e5709 (the sources of llama-cpp-python
0.3.36), rule for rule and in the same order, so that a mix names the same
type for every tensor as ``llama-quantize``. The functions below carry the
upstream names; the comments say what each rule is for.

The walk is stateful, as upstream: counters of attn_v-like and ffn tensors
advance in file order, and ``use_more_bits`` gives some layers more bits, so
the tensors must be visited in the order llama.cpp visits them
(``llama_order``: by layer number, then by name).

Differences from upstream, all outside what a file can express the same way:
``--tensor-type`` patterns are Python regular expressions (``re.search``)
where llama.cpp uses ``std::regex`` (ECMAScript); the two agree on the usual
patterns (literal names, ``.``, ``*``, ``+``, ``\\d``, classes, anchors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

from quantspec.errors import GGUFError
from quantspec.gguf.types import FileType, ggml_type

# Tensor types by name (quantspec spelling of ggml's names).
F32, F16, BF16 = "f32", "f16", "bf16"
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"
IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S = "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s"
IQ3_XXS, IQ3_S, IQ4_NL, IQ4_XS = "iq3_xxs", "iq3_s", "iq4_nl", "iq4_xs"
TQ1_0, TQ2_0, Q2_0, MXFP4 = "tq1_0", "tq2_0", "q2_0", "mxfp4"

# The IQ file types whose mixes share one block of rules.
_IQ_LOW = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})


class Category(Enum):
    """``enum class tensor_category``: broad roles found by name."""

    TOKEN_EMBD = "token_embd"
    ATTENTION_Q = "attn_q"
    ATTENTION_V = "attn_v"
    ATTENTION_K = "attn_k"
    ATTENTION_QKV = "attn_qkv"
    ATTENTION_KV_B = "attn_kv_b"
    ATTENTION_OUTPUT = "attn_output"
    FFN_UP = "ffn_up"
    FFN_GATE = "ffn_gate"
    FFN_DOWN = "ffn_down"
    OUTPUT = "output"
    OTHER = "other"


def tensor_get_category(name: str) -> Category:
    """``tensor_get_category``: exact names first, then substrings in this order."""
    if name == "output.weight":
        return Category.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return Category.TOKEN_EMBD
    for part, cat in (("attn_qkv.weight", Category.ATTENTION_QKV), ("attn_kv_b.weight", Category.ATTENTION_KV_B),
                      ("attn_v.weight", Category.ATTENTION_V), ("attn_k.weight", Category.ATTENTION_K),
                      ("attn_q.weight", Category.ATTENTION_Q), ("attn_output.weight", Category.ATTENTION_OUTPUT),
                      ("ffn_up", Category.FFN_UP), ("ffn_gate", Category.FFN_GATE), ("ffn_down", Category.FFN_DOWN)):
        if part in name:
            return cat
    return Category.OTHER


def category_is_attn_v(cat: Category) -> bool:
    """attn_v-like tensors (V, fused QKV, MLA's KV_B) are the most sensitive."""
    return cat in (Category.ATTENTION_V, Category.ATTENTION_QKV, Category.ATTENTION_KV_B)


_LAYER = re.compile(r"blk\.\s*([+-]?\d+)")


def _layer_of(name: str) -> int | None:
    """``sscanf(name, "blk.%d.", &layer)``: the number after ``blk.``, or None."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def llama_order(names: Sequence[str]) -> list[int]:
    """Indices of ``names`` in the order llama.cpp's loader keeps its weights
    (``weight_name_comparer`` in src/llama-model-loader.h): tensors outside any
    ``blk.N.`` first (layer -1), then by layer number, then by name bytes. The
    quantized file is written in this order."""
    def key(i: int):
        layer = _layer_of(names[i])
        return (-1 if layer is None else layer, names[i].encode("utf-8"))
    return sorted(range(len(names)), key=key)


@dataclass(frozen=True)
class ModelInfo:
    """The hyperparameters the mixes look at, from a file's metadata
    (``llama_model::load_hparams``): ``{arch}.block_count`` (n_layer_all),
    ``{arch}.attention.head_count`` / ``head_count_kv`` (layer 0; kv defaults
    to head_count) and ``{arch}.expert_count`` (0 when absent)."""

    arch: str
    n_layer: int | None
    n_head: int | None
    n_head_kv: int | None
    n_expert: int = 0

    @classmethod
    def from_metadata(cls, get) -> "ModelInfo":
        """``get(key)`` returns a metadata value or None."""
        arch = get("general.architecture")
        arch = arch if isinstance(arch, str) else ""

        def first(v):
            if isinstance(v, (list, tuple)):
                return int(v[0]) if len(v) else None
            return None if v is None else int(v)

        n_head = first(get(f"{arch}.attention.head_count"))
        n_head_kv = first(get(f"{arch}.attention.head_count_kv"))
        return cls(arch, first(get(f"{arch}.block_count")), n_head,
                   n_head if n_head_kv is None else n_head_kv, first(get(f"{arch}.expert_count")) or 0)

    @property
    def n_gqa(self) -> int:
        """``hparams.n_gqa()``: query heads per KV head (0 without KV heads)."""
        if not self.n_head_kv or self.n_head is None:
            return 0
        return self.n_head // self.n_head_kv

    @property
    def is_70b(self) -> bool:
        """``model.type == LLM_TYPE_70B``, as the loaders of the architectures
        that have it decide (src/models/{llama,qwen2,deci,olmo,jais2}.cpp)."""
        if self.arch == "llama":
            return self.n_expert != 8 and self.n_layer == 80 and self.n_head != self.n_head_kv
        return (self.arch, self.n_layer) in {("qwen2", 80), ("deci", 80), ("olmo", 80), ("jais2", 68)}


@dataclass(frozen=True)
class MixParams:
    """What ``llama_model_quantize_params`` says about tensor types.

    ``ftype`` is the file type (None for a plain tensor type that llama.cpp
    has no file type for); ``default_type`` its default tensor type
    (``llama_ftype_get_default_type``, or the plain tensor type).
    ``tensor_types``: ``(pattern, type)`` pairs, first match wins.
    """

    ftype: FileType | None
    default_type: str
    pure: bool = False
    quantize_output_tensor: bool = True
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    tensor_types: tuple[tuple[str, str], ...] = ()
    has_imatrix: bool = False


@dataclass(frozen=True)
class TensorChoice:
    """The type chosen for one tensor, and why."""

    name: str
    source_type: str
    target_type: str
    allows_quantization: bool
    category: Category
    requires_imatrix: bool
    reason: str


@dataclass
class _State:
    """``quantize_state_impl``: the counters that advance as tensors are visited."""

    model: ModelInfo
    params: MixParams
    patterns: list[tuple[re.Pattern, str]]
    n_attention_wv: int = 0
    n_ffn_down: int = 0
    n_ffn_gate: int = 0
    n_ffn_up: int = 0
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0
    has_tied_embeddings: bool = True
    notes: list[str] = field(default_factory=list)


# Name fragments that are never quantized (tensor_allows_quantization).
_NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
    "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
    ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
_GLM5_NEXT_NEVER_QUANTIZED = (
    "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight",
    "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight",
)


def ggml_n_dims(shape: Sequence[int]) -> int:
    """``ggml_n_dims``: dimensions up to the last one longer than 1 (at least
    1), so a (576, 1) tensor counts as 1-D whatever the file's n_dims says."""
    for i in range(len(shape) - 1, 0, -1):
        if shape[i] > 1:
            return i + 1
    return 1


def tensor_allows_quantization(name: str, shape: Sequence[int], arch: str, quantize_output_tensor: bool = True) -> bool:
    """``tensor_allows_quantization``: 2-D and 3-D (expert) weights, except
    norms, routers, small special-purpose weights and embeddings that models
    look up by position; ``output.weight`` unless ``--leave-output-tensor``."""
    if ggml_n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    if not quantize_output_tensor and name == "output.weight":
        return False
    if any(part in name for part in _NEVER_QUANTIZED):
        return False
    if name in ("position_embd.weight", "token_types.weight"):  # LLM_TENSOR_POS_EMBD / TOKEN_TYPES
        return False
    if arch == "glm5-next" and any(part in name for part in _GLM5_NEXT_NEVER_QUANTIZED):
        return False
    return True


def tensor_type_fallback(name: str, ne0: int, target: str, notes: list[str]) -> str:
    """``tensor_type_fallback``: a row length that is not a multiple of the
    target's block size demotes 256-blocks to a 32-block type of similar size;
    if even that does not fit, F16."""
    block = ggml_type(target).block_size
    if ne0 % block == 0:
        return target
    demoted = {IQ1_S: IQ4_NL, IQ1_M: IQ4_NL, IQ2_XXS: IQ4_NL, IQ2_XS: IQ4_NL, IQ2_S: IQ4_NL, IQ3_XXS: IQ4_NL,
               IQ3_S: IQ4_NL, IQ4_XS: IQ4_NL, Q2_0: Q4_0, Q2_K: Q4_0, Q3_K: Q4_0, TQ1_0: Q4_0, TQ2_0: Q4_0,
               Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0}
    if target in demoted:
        result = demoted[target]
    elif block <= 32:
        result = target  # already a 32-block type: nothing smaller to demote to
    else:
        raise GGUFError(f"{name}: ne[0] = {ne0} is not a multiple of {block} (the block size of {target}), and "
                        f"llama.cpp defines no fallback type for {target}", tensor=name, field="ne[0]")
    if ne0 % ggml_type(result).block_size:
        result = F16
    notes.append(f"{name}: ne[0] = {ne0} is not a multiple of {block} ({target}): {result} instead")
    return result


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The first and last eighth of the layers and every third one between
    them get more bits in the _M mixes."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _need(value: int | None, key: str, name: str) -> int:
    if value is None:
        raise GGUFError(f"{name}: the mix needs the model's {key}, which the file's metadata lacks",
                        tensor=name, field=key)
    return value


def _layer_info(st: _State, i_layer: int, n_layer: int | None, name: str) -> tuple[int, int]:
    """``layer_info``: the counter, or with experts the layer from the name
    (experts of one layer are not consecutive in some files)."""
    n_layer = _need(n_layer, f"{st.model.arch}.block_count", name)
    if max(1, st.model.n_expert) > 1:
        layer = _layer_of(name)
        if layer is None:
            raise GGUFError(f"{name}: cannot determine the layer of an expert tensor (no 'blk.N.' prefix)",
                            tensor=name)
        if not 0 <= layer < n_layer:
            raise GGUFError(f"{name}: layer {layer} is outside [0, {n_layer})", tensor=name)
        return layer, n_layer
    return i_layer, n_layer


def _ftype_name(st: _State) -> str:
    return st.params.ftype.name if st.params.ftype else ""


def llama_tensor_get_type_impl(st: _State, new_type: str, name: str, shape: Sequence[int], cat: Category) -> str:
    """The mix rules proper, for a quantized default type (``new_type``)."""
    ft = _ftype_name(st)
    arch = st.model.arch
    model = st.model

    # glm5-next: these projections are not quantized below Q8_0
    if arch == "glm5-next" and any(p in name for p in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
        if new_type not in (F32, BF16, F16):
            return Q8_0

    if cat == Category.OUTPUT or (st.has_tied_embeddings and cat == Category.TOKEN_EMBD):
        # the output projection (and the embeddings when they share its weights)
        if st.params.output_tensor_type is not None:
            new_type = st.params.output_tensor_type
        else:
            nx = shape[0]
            if ft == "MXFP4_MOE":
                new_type = Q8_0
            elif arch == "falcon" or nx % ggml_type(new_type).block_size != 0:
                new_type = Q8_0
            elif ft in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"):
                new_type = Q5_K
            elif new_type != Q8_0:
                new_type = Q6_K
    elif ft == "MXFP4_MOE":
        # experts (3-D with more than one expert) in MXFP4, the rest in Q8_0
        is_bailingmoe3_expert = arch == "bailingmoe3" and cat in (Category.FFN_UP, Category.FFN_GATE,
                                                                  Category.FFN_DOWN)
        ne2 = shape[2] if len(shape) > 2 else 1
        if ne2 > 1 and (arch != "bailingmoe3" or is_bailingmoe3_expert):
            new_type = MXFP4
        else:
            new_type = Q8_0
    elif cat == Category.TOKEN_EMBD:
        if st.params.token_embedding_type is not None:
            new_type = st.params.token_embedding_type
        elif ft in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            new_type = Q2_K
        elif ft in ("IQ2_S", "IQ2_M"):
            new_type = IQ3_S
        elif ft == "IQ3_XXS":
            new_type = IQ3_S
        elif ft in ("TQ1_0", "TQ2_0", "Q2_0"):
            new_type = Q4_K
    elif ft in _IQ_LOW:
        # the 1- and 2-bit IQ mixes
        iq2_s_or_m = ft in ("IQ2_S", "IQ2_M")
        if category_is_attn_v(cat):
            if model.n_gqa >= 4 or model.n_expert >= 4:
                new_type = Q4_K
            else:
                new_type = IQ3_S if iq2_s_or_m else Q2_K
            st.i_attention_wv += 1
        elif model.n_expert == 8 and cat == Category.ATTENTION_K:
            new_type = Q4_K
        elif cat == Category.FFN_DOWN:
            if st.i_ffn_down < _need(st.n_ffn_down or None, f"{arch}.block_count", name) // 8:
                new_type = IQ3_S if iq2_s_or_m else Q2_K
            st.i_ffn_down += 1
        elif cat == Category.ATTENTION_OUTPUT:
            if model.n_expert == 8:
                new_type = Q5_K
            elif ft in ("IQ1_S", "IQ1_M"):
                new_type = IQ2_XXS
            elif iq2_s_or_m:
                new_type = IQ3_S
    elif category_is_attn_v(cat):
        gqa = model.n_gqa
        if ft == "Q2_K":
            new_type = Q4_K if gqa >= 4 else Q3_K
        elif ft == "Q2_K_S" and gqa >= 4:
            new_type = Q4_K
        elif ft == "IQ3_XXS":
            new_type = Q4_K if gqa >= 4 else (IQ3_S if not st.params.has_imatrix else IQ3_XXS)
        elif ft in ("IQ3_XS", "IQ3_S") and gqa >= 4:
            new_type = Q4_K
        elif ft == "IQ3_M":
            new_type = Q4_K
        elif ft == "Q3_K_M":
            new_type = Q5_K if st.i_attention_wv < 2 else Q4_K
        elif ft == "Q3_K_L":
            new_type = Q5_K
        elif ft in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
            new_type = Q5_K
        elif ft in ("Q4_K_M", "Q5_K_M") and _use_more_bits(st.i_attention_wv, st.n_attention_wv):
            new_type = Q6_K
        elif ft == "Q4_K_S" and st.i_attention_wv < 4:
            new_type = Q5_K
        if model.is_70b and new_type in (Q3_K, Q4_K):
            # 70B models share attn_v across 8 heads: more bits cost little
            new_type = Q5_K
        if model.n_expert == 8:
            new_type = Q8_0
        st.i_attention_wv += 1
    elif cat == Category.ATTENTION_K:
        if model.n_expert == 8:
            new_type = Q8_0
        elif ft == "IQ3_XS":
            new_type = IQ3_XXS
        elif ft == "IQ3_XXS":
            new_type = IQ2_S
    elif cat == Category.ATTENTION_Q:
        if ft == "IQ3_XS":
            new_type = IQ3_XXS
        elif ft == "IQ3_XXS":
            new_type = IQ2_S
    elif cat == Category.FFN_DOWN:
        i_layer, n_layer = _layer_info(st, st.i_ffn_down, st.n_ffn_down or None, name)
        falcon = arch == "falcon"
        if ft == "Q2_K":
            new_type = Q3_K
        elif ft == "Q2_K_S":
            if i_layer < n_layer // 8:
                new_type = Q4_K
        elif ft == "IQ3_XXS" and not st.params.has_imatrix:
            new_type = Q4_K if i_layer < n_layer // 8 else Q3_K
        elif ft == "Q3_K_M":
            if i_layer < n_layer // 16:
                new_type = Q5_K
            elif not falcon or _use_more_bits(i_layer, n_layer):
                new_type = Q4_K
            else:
                new_type = Q3_K
        elif ft == "IQ3_M" and (i_layer < n_layer // 8 or (model.n_expert == 8 and _use_more_bits(i_layer, n_layer))):
            new_type = Q4_K
        elif ft == "Q3_K_L":
            new_type = Q4_K if falcon else Q5_K
        elif ft == "Q4_K_M":
            if falcon:
                new_type = Q6_K if i_layer < n_layer // 16 else (Q5_K if _use_more_bits(i_layer, n_layer) else Q4_K)
            elif _use_more_bits(i_layer, n_layer):
                new_type = Q6_K
        elif i_layer < n_layer // 8 and ft in ("IQ4_NL", "IQ4_XS") and not st.params.has_imatrix:
            new_type = Q5_K
        elif ft == "Q5_K_M" and _use_more_bits(i_layer, n_layer):
            new_type = Q6_K
        elif ft == "Q4_K_S" and not falcon and i_layer < n_layer // 8:
            new_type = Q5_K
        elif ft in ("Q4_0", "Q5_0") and st.params.has_imatrix and i_layer < n_layer // 8:
            # the first ffn_down layers can go wrong with Q4_0/Q5_0 even with an
            # imatrix (and Q4_1/Q5_1 go wrong without one): only with an imatrix
            new_type = Q4_1 if ft == "Q4_0" else Q5_1
        st.i_ffn_down += 1
    elif cat == Category.ATTENTION_OUTPUT:
        if arch != "falcon":
            if model.n_expert == 8:
                if ft in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                          "IQ3_M", "IQ4_XS"):
                    new_type = Q5_K
            else:
                new_type = {"Q2_K": Q3_K, "IQ3_XXS": IQ3_S, "Q3_K_M": Q4_K, "Q3_K_L": Q5_K,
                            "IQ3_M": Q4_K}.get(ft, new_type)
        elif ft == "Q3_K_L":
            new_type = Q4_K
    elif cat == Category.ATTENTION_QKV:
        # upstream has rules here, but fused QKV is attn_v-like and never gets here
        new_type = {"Q3_K_M": Q4_K, "Q3_K_L": Q4_K, "IQ3_M": Q4_K, "Q4_K_M": Q5_K, "Q5_K_M": Q6_K}.get(ft, new_type)
    elif cat == Category.FFN_GATE:
        i_layer, n_layer = _layer_info(st, st.i_ffn_gate, st.n_ffn_gate or None, name)
        if ft == "IQ3_XS" and n_layer // 8 <= i_layer < 7 * n_layer // 8:
            new_type = IQ3_XXS
        st.i_ffn_gate += 1
    elif cat == Category.FFN_UP:
        i_layer, n_layer = _layer_info(st, st.i_ffn_up, st.n_ffn_up or None, name)
        if ft == "IQ3_XS" and n_layer // 8 <= i_layer < 7 * n_layer // 8:
            new_type = IQ3_XXS
        st.i_ffn_up += 1
    return new_type


def llama_tensor_get_type(st: _State, name: str, shape: Sequence[int], source_type: str,
                          cat: Category) -> tuple[str, str]:
    """The outer wrapper: forced token-embedding and output types first, then
    ``--tensor-type`` patterns, then (unless ``--pure``) the mix rules, then
    the fallback for row lengths the chosen type cannot hold.
    Returns (type, reason)."""
    p = st.params
    if p.token_embedding_type is not None and cat == Category.TOKEN_EMBD:
        # per_layer_token_embd follows --token-embedding-type unless a
        # --tensor-type pattern names it
        named = name == "per_layer_token_embd.weight" and any(rx.search(name) for rx, _ in st.patterns)
        if not named:
            return p.token_embedding_type, "--token-embedding-type"
    if p.output_tensor_type is not None and cat == Category.OUTPUT:
        return p.output_tensor_type, "--output-tensor-type"

    new_type = p.default_type
    reason = "default type"
    if ggml_type(p.default_type).is_quantized:
        manual = False
        for rx, qtype in st.patterns:
            if rx.search(name):
                new_type, reason, manual = qtype, f"--tensor-type {rx.pattern}={qtype}", True
                break
        if not manual and not p.pure:
            mixed = llama_tensor_get_type_impl(st, new_type, name, shape, cat)
            if mixed != new_type:
                reason = f"{p.ftype.name if p.ftype else new_type} mix rule for {cat.value}"
            new_type = mixed
        fallback = tensor_type_fallback(name, shape[0], new_type, st.notes)
        if fallback != new_type:
            reason = f"fallback from {new_type} (ne[0] = {shape[0]})"
        new_type = fallback
    return new_type, reason


def tensor_requires_imatrix(name: str, target: str, ftype: FileType | None) -> bool:
    """``tensor_requires_imatrix``: the very low-bit types give garbage without
    one (except for the embeddings and the output), and so do the Q2_K
    tensors of a Q2_K_S file."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if target in (IQ3_XXS, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_M, IQ1_S):
        return True
    return target == Q2_K and ftype is not None and ftype.name == "Q2_K_S"


def choose_types(tensors: Sequence[tuple[str, Sequence[int], str]], model: ModelInfo,
                 params: MixParams) -> list[TensorChoice]:
    """The target type of every tensor, ``(name, shape as ne[0..], source type)``
    given in llama.cpp's order (``llama_order``); returned in the same order.

    As ``llama_model_quantize_impl``'s preliminary loop: counters from all
    tensors (``init_quantize_state_counters``), then each tensor in turn.
    Notes about fallbacks are in the reasons."""
    patterns = []
    for pattern, qtype in params.tensor_types:
        try:
            patterns.append((re.compile(pattern), qtype))
        except re.error as exc:
            raise GGUFError(f"--tensor-type pattern {pattern!r} is not a valid regular expression: {exc}",
                            field="tensor_type") from None
    st = _State(model, params, patterns)
    cats = [tensor_get_category(name) for name, _, _ in tensors]
    st.n_attention_wv = sum(category_is_attn_v(c) for c in cats)
    st.has_tied_embeddings = Category.OUTPUT not in cats
    st.n_ffn_down = st.n_ffn_gate = st.n_ffn_up = model.n_layer or 0

    out = []
    for (name, shape, source), cat in zip(tensors, cats):
        allowed = tensor_allows_quantization(name, shape, model.arch, params.quantize_output_tensor)
        if allowed:
            target, reason = llama_tensor_get_type(st, name, shape, source, cat)
        else:
            target, reason = source, "not quantized (kept as is)"
        out.append(TensorChoice(name, source, target, allowed, cat,
                                tensor_requires_imatrix(name, target, params.ftype), reason))
    return out
