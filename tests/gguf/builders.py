"""GGUF files built in the tests, and llama.cpp's ``llama_model_quantize``
(through llama-cpp-python) as the oracle for whole files."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

gguf = __import__("gguf")  # gguf-py, not quantspec.gguf

#: llama.cpp's file type ids (include/llama.h)
FTYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11,
         "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
         "IQ2_XXS": 19, "IQ2_XS": 20, "Q2_K_S": 21, "IQ3_XS": 22, "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25,
         "IQ3_S": 26, "IQ3_M": 27, "IQ2_S": 28, "IQ2_M": 29, "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32,
         "TQ1_0": 36, "TQ2_0": 37, "MXFP4_MOE": 38}
GGML_TYPE_ID = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_k": 10,
                "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14, "iq4_nl": 20, "bf16": 30, "mxfp4": 39}


def write_gguf(path, kvs: dict, tensors: list[tuple[str, np.ndarray, str]], arch: str = "llama",
               alignment: int | None = None) -> Path:
    """``tensors``: (name, data, type) with data float32 in numpy order
    (rows last), stored as ``type`` (f32, f16, bf16 or a quantspec format)."""
    import quantspec as qs

    w = gguf.GGUFWriter(str(path), arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, value in kvs.items():
        if isinstance(value, tuple):  # (value, GGUFValueType[, sub_type])
            w.add_key_value(key, *value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    for name, data, type_name in tensors:
        data = np.ascontiguousarray(data, dtype=np.float32)
        if type_name == "f32":
            w.add_tensor(name, data)
        else:
            rows = data.reshape(-1, data.shape[-1])
            q = qs.quantize(type_name, rows)
            w.add_tensor(name, q.reshape(*data.shape[:-1], -1),
                         raw_dtype=gguf.GGMLQuantizationType(GGML_TYPE_ID[type_name]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def tiny_llama(path, *, n_layer: int = 2, n_embd: int = 64, n_ff: int = 96, n_vocab: int = 128, n_head: int = 4,
               n_head_kv: int = 2, tied: bool = False, dtype: str = "f32", seed: int = 0,
               n_expert: int = 0, extra_kv: dict | None = None, scale: float = 1.0) -> Path:
    """A llama-architecture model with the usual tensor names, random weights
    (norms are 1-D f32), written in file order token_embd, output_norm,
    output, then the blocks."""
    rng = np.random.default_rng(seed)
    kvs = {"llama.block_count": n_layer, "llama.context_length": 256, "llama.embedding_length": n_embd,
           "llama.feed_forward_length": n_ff, "llama.attention.head_count": n_head,
           "llama.attention.head_count_kv": n_head_kv, "llama.attention.layer_norm_rms_epsilon": 1e-5,
           "general.file_type": 0 if dtype == "f32" else 1}
    if n_expert:
        kvs["llama.expert_count"] = n_expert
        kvs["llama.expert_used_count"] = 2
    kvs.update(extra_kv or {})

    def w(*shape):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors = [("token_embd.weight", w(n_vocab, n_embd), dtype), ("output_norm.weight", w(n_embd), "f32")]
    if not tied:
        tensors.append(("output.weight", w(n_vocab, n_embd), dtype))
    kv_dim = n_embd * n_head_kv // n_head
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", w(n_embd), "f32"), (p + "attn_q.weight", w(n_embd, n_embd), dtype),
                    (p + "attn_k.weight", w(kv_dim, n_embd), dtype), (p + "attn_v.weight", w(kv_dim, n_embd), dtype),
                    (p + "attn_output.weight", w(n_embd, n_embd), dtype), (p + "ffn_norm.weight", w(n_embd), "f32")]
        if n_expert:
            tensors += [(p + "ffn_gate_inp.weight", w(n_expert, n_embd), "f32"),
                        (p + "ffn_gate_exps.weight", w(n_expert, n_ff, n_embd), dtype),
                        (p + "ffn_up_exps.weight", w(n_expert, n_ff, n_embd), dtype),
                        (p + "ffn_down_exps.weight", w(n_expert, n_embd, n_ff), dtype)]
        else:
            tensors += [(p + "ffn_gate.weight", w(n_ff, n_embd), dtype), (p + "ffn_up.weight", w(n_ff, n_embd), dtype),
                        (p + "ffn_down.weight", w(n_embd, n_ff), dtype)]
    return write_gguf(path, kvs, tensors)


# -- the oracle --------------------------------------------------------------

_log_callback = None


def _llama():
    import llama_cpp

    global _log_callback
    if _log_callback is None:  # silence llama.cpp's per-tensor log
        _log_callback = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    return llama_cpp


def llama_quantize(src, dst, ftype: str, **options) -> int:
    """``llama_model_quantize`` with these options; 0 on success.
    ``imatrix``: name -> float32 weights (already normalized, as
    llama-quantize passes them); ``kv_overrides``: (key, int | str) pairs."""
    _llama()
    return _quantize_with(src, str(dst).encode(), ftype, **options)


def _quantize_with(src, dst: bytes, ftype: str, *, threads: int = 2, allow_requantize: bool = False,
                   leave_output_tensor: bool = False, pure: bool = False, output_tensor_type: str | None = None,
                   token_embedding_type: str | None = None, tensor_types=(), imatrix: dict | None = None,
                   kv_overrides: list[tuple[str, object]] = (), dry_run: bool = False) -> int:
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.dry_run = dry_run
    p.nthread = threads
    p.ftype = FTYPE[ftype]
    p.allow_requantize = allow_requantize
    p.quantize_output_tensor = not leave_output_tensor
    p.pure = pure
    if output_tensor_type is not None:
        p.output_tensor_type = GGML_TYPE_ID[output_tensor_type]
    if token_embedding_type is not None:
        p.token_embedding_type = GGML_TYPE_ID[token_embedding_type]
    keep = []
    if tensor_types:
        arr = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
        for i, (pattern, t) in enumerate(tensor_types):
            arr[i].pattern = pattern.encode()
            arr[i].type = GGML_TYPE_ID[t]
        arr[len(tensor_types)].pattern = None
        arr[len(tensor_types)].type = 43
        p.tt_overrides = arr
        keep.append(arr)
    if imatrix:
        arr = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(imatrix.items()):
            v = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(v)
            arr[i].name = name.encode()
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(imatrix)].name = None
        p.imatrix = arr
        keep.append(arr)
    if kv_overrides:
        arr = (llama_cpp.llama_model_kv_override * (len(kv_overrides) + 1))()
        for i, (key, value) in enumerate(kv_overrides):
            arr[i].key = key.encode()
            if isinstance(value, int):
                arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                arr[i].value.val_i64 = value
            else:
                arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                arr[i].value.val_str = value.encode()[:127]
        arr[len(kv_overrides)].key = b""
        p.kv_overrides = arr
        keep.append(arr)
    return llama_cpp.llama_model_quantize(str(src).encode(), dst, ctypes.byref(p))


def tensor_types_of(path) -> dict[str, str]:
    """name -> type name, read with gguf-py's own GGUFReader (independent of quantspec)."""
    r = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name.lower() for t in r.tensors}


def first_difference(a, b) -> str:
    """Where two files differ, described by tensor when the tables agree."""
    da, db = Path(a).read_bytes(), Path(b).read_bytes()
    if da == db:
        return ""
    ra, rb = gguf.GGUFReader(str(a)), gguf.GGUFReader(str(b))
    ta = {t.name: t for t in ra.tensors}
    tb = {t.name: t for t in rb.tensors}
    if list(ta) != list(tb):
        return f"tensor order differs: {list(ta)[:5]} vs {list(tb)[:5]}"
    for name in ta:
        x, y = ta[name], tb[name]
        if x.tensor_type != y.tensor_type:
            return f"{name}: type {x.tensor_type.name} vs {y.tensor_type.name}"
        if bytes(x.data.view(np.uint8)) != bytes(y.data.view(np.uint8)):
            diff = np.flatnonzero(x.data.view(np.uint8).ravel() != y.data.view(np.uint8).ravel())
            return f"{name}: {diff.size} bytes differ, first at byte {int(diff[0])}"
    ka = {k: (f.types, f.contents()) for k, f in ra.fields.items()}
    kb = {k: (f.types, f.contents()) for k, f in rb.fields.items()}
    if list(ka) != list(kb):
        return f"metadata keys differ: {list(ka)} vs {list(kb)}"
    for k in ka:
        if ka[k] != kb[k]:
            return f"metadata {k}: {ka[k]} vs {kb[k]}"
    n = min(len(da), len(db))
    pos = next((i for i in range(n) if da[i] != db[i]), n)
    return f"files differ at byte {pos} (sizes {len(da)}, {len(db)})"


_captured: list[str] | None = None


def llama_plan(src, ftype: str, **options) -> dict[str, str]:
    """The tensor types ``llama_model_quantize`` chooses, from a dry run
    (nothing is quantized, so every mix can be planned whatever formats
    quantspec has): name -> type name, in llama.cpp's order."""
    import re

    llama_cpp = _llama()
    global _captured, _log_callback

    def capture(level, text, user_data):
        if _captured is not None:
            _captured.append(text.decode("utf-8", "replace"))

    cb = llama_cpp.llama_log_callback(capture)
    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    _captured = []
    try:
        rc = _quantize_with(src, b"", ftype, dry_run=True, **options)
        text = "".join(_captured)
    finally:
        _captured = None
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize dry run failed: {text[-500:]}")
    plan = {}
    line = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[.*?\], type =\s*(\S+), size =[^\n(]*(?:\((\S+)\))?")
    for m in line.finditer(text):
        plan[m.group(1)] = (m.group(3) or m.group(2)).lower()
    return plan
