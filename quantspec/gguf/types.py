"""Tensor types and file types of GGUF files, as ggml and llama.cpp number them.

Two enums that must never be confused (see ``docs``/README): a *tensor type*
(``enum ggml_type``, stored per tensor) and a *file type* (``enum
llama_ftype``, the mix that ``llama-quantize`` was asked for, stored once in
``general.file_type``).

Names here are quantspec's: ggml's type names in lower case (``q6_k`` for
ggml's ``q6_K``), so they are the names ``qs.formats()`` uses for the formats
quantspec implements. The table also lists the ggml types quantspec does not
implement (yet), so that files holding them can be read, sized and copied.

Facts: ``enum ggml_type`` (ggml/include/ggml.h), ``type_traits[]`` block and
type sizes (ggml/src/ggml.c), ``enum llama_ftype`` (include/llama.h),
``llama_ftype_get_default_type`` (src/llama-quant.cpp) and
``QUANT_OPTIONS`` (tools/quantize/quantize.cpp), all at llama.cpp
0c1e5709 (the sources of llama-cpp-python 0.3.36).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class GgmlType:
    """One ``enum ggml_type`` entry: id, name, elements per block, bytes per block."""

    type_id: int
    name: str
    block_size: int
    type_size: int
    is_quantized: bool  # ggml's type_traits[].is_quantized: block formats

    @property
    def removed(self) -> bool:
        """Slots of removed types (Q4_2, Q4_0_4_4, ...): ggml gives them size 0."""
        return self.block_size == 0


# (id, name, block_size, type_size, is_quantized) from ggml.c type_traits[].
_GGML_TYPES = (
    (0, "f32", 1, 4, False),
    (1, "f16", 1, 2, False),
    (2, "q4_0", 32, 18, True),
    (3, "q4_1", 32, 20, True),
    (4, "q4_2 (removed)", 0, 0, False),
    (5, "q4_3 (removed)", 0, 0, False),
    (6, "q5_0", 32, 22, True),
    (7, "q5_1", 32, 24, True),
    (8, "q8_0", 32, 34, True),
    (9, "q8_1", 32, 36, True),
    (10, "q2_k", 256, 84, True),
    (11, "q3_k", 256, 110, True),
    (12, "q4_k", 256, 144, True),
    (13, "q5_k", 256, 176, True),
    (14, "q6_k", 256, 210, True),
    (15, "q8_k", 256, 292, True),
    (16, "iq2_xxs", 256, 66, True),
    (17, "iq2_xs", 256, 74, True),
    (18, "iq3_xxs", 256, 98, True),
    (19, "iq1_s", 256, 50, True),
    (20, "iq4_nl", 32, 18, True),
    (21, "iq3_s", 256, 110, True),
    (22, "iq2_s", 256, 82, True),
    (23, "iq4_xs", 256, 136, True),
    (24, "i8", 1, 1, False),
    (25, "i16", 1, 2, False),
    (26, "i32", 1, 4, False),
    (27, "i64", 1, 8, False),
    (28, "f64", 1, 8, False),
    (29, "iq1_m", 256, 56, True),
    (30, "bf16", 1, 2, False),
    (31, "q4_0_4_4 (removed)", 0, 0, False),
    (32, "q4_0_4_8 (removed)", 0, 0, False),
    (33, "q4_0_8_8 (removed)", 0, 0, False),
    (34, "tq1_0", 256, 54, True),
    (35, "tq2_0", 256, 66, True),
    (36, "iq4_nl_4_4 (removed)", 0, 0, False),
    (37, "iq4_nl_4_8 (removed)", 0, 0, False),
    (38, "iq4_nl_8_8 (removed)", 0, 0, False),
    (39, "mxfp4", 32, 17, True),
    (40, "nvfp4", 64, 36, True),
    (41, "q1_0", 128, 18, True),
    (42, "q2_0", 64, 18, True),
)

GGML_TYPE_COUNT = 43

GGML_TYPES: dict[int, GgmlType] = {t[0]: GgmlType(*t) for t in _GGML_TYPES}
_BY_NAME: dict[str, GgmlType] = {t.name: t for t in GGML_TYPES.values() if not t.removed}

# Types that hold activations only (ggml has no to_float for them): never in files.
ACTIVATION_ONLY = frozenset({"q8_1", "q8_k"})

#: GGML_QNT_VERSION (ggml.h): written to general.quantization_version.
QUANTIZATION_VERSION = 2


def ggml_type(name_or_id) -> GgmlType:
    """A ggml type by quantspec name (any case: ``q6_K`` and ``q6_k`` alike) or id.
    Raises KeyError for names and ids ggml does not have."""
    if isinstance(name_or_id, str):
        return _BY_NAME[name_or_id.lower()]
    return GGML_TYPES[int(name_or_id)]


def type_names() -> list[str]:
    return list(_BY_NAME)


@cache
def _quantspec_formats() -> frozenset[str]:
    from quantspec import registry

    return frozenset(n for n in registry.formats() if registry.spec(n).origin == "ggml")


def quantspec_format(t: GgmlType) -> str | None:
    """The quantspec format of a ggml type, or None where quantspec has no spec
    for it (yet), or it is not a block/float format (i8..i64, f64)."""
    return t.name if t.name in _quantspec_formats() else None


def storable_formats() -> list[str]:
    """quantspec formats that GGUF files store (ggml types minus the
    activation-only ones), in ggml id order."""
    return [t.name for t in GGML_TYPES.values()
            if t.name in _quantspec_formats() and t.name not in ACTIVATION_ONLY]


@dataclass(frozen=True)
class FileType:
    """One ``enum llama_ftype`` entry and the tensor type it defaults to."""

    ftype: int
    name: str  # llama-quantize's name (QUANT_OPTIONS), e.g. "Q4_K_M"
    default_type: str | None  # llama_ftype_get_default_type; None: llama.cpp refuses it


# (ftype id, llama-quantize name, default tensor type): include/llama.h,
# llama_ftype_get_default_type, tools/quantize/quantize.cpp QUANT_OPTIONS.
_FILE_TYPES = (
    (0, "F32", "f32"),
    (1, "F16", "f16"),
    (2, "Q4_0", "q4_0"),
    (3, "Q4_1", "q4_1"),
    (7, "Q8_0", "q8_0"),
    (8, "Q5_0", "q5_0"),
    (9, "Q5_1", "q5_1"),
    (10, "Q2_K", "q2_k"),
    (11, "Q3_K_S", "q3_k"),
    (12, "Q3_K_M", "q3_k"),
    (13, "Q3_K_L", "q3_k"),
    (14, "Q4_K_S", "q4_k"),
    (15, "Q4_K_M", "q4_k"),
    (16, "Q5_K_S", "q5_k"),
    (17, "Q5_K_M", "q5_k"),
    (18, "Q6_K", "q6_k"),
    (19, "IQ2_XXS", "iq2_xxs"),
    (20, "IQ2_XS", "iq2_xs"),
    (21, "Q2_K_S", "q2_k"),
    (22, "IQ3_XS", "iq3_s"),
    (23, "IQ3_XXS", "iq3_xxs"),
    (24, "IQ1_S", "iq1_s"),
    (25, "IQ4_NL", "iq4_nl"),
    (26, "IQ3_S", "iq3_s"),
    (27, "IQ3_M", "iq3_s"),
    (28, "IQ2_S", "iq2_xs"),
    (29, "IQ2_M", "iq2_s"),
    (30, "IQ4_XS", "iq4_xs"),
    (31, "IQ1_M", "iq1_m"),
    (32, "BF16", "bf16"),
    (36, "TQ1_0", "tq1_0"),
    (37, "TQ2_0", "tq2_0"),
    (38, "MXFP4_MOE", "mxfp4"),
    (39, "NVFP4", None),  # in the enum, but llama_ftype_get_default_type has no case: refused
    (40, "Q1_0", "q1_0"),
    (41, "Q2_0", "q2_0"),
)

FILE_TYPES: dict[str, FileType] = {name: FileType(i, name, t) for i, name, t in _FILE_TYPES}
FILE_TYPES_BY_ID: dict[int, FileType] = {f.ftype: f for f in FILE_TYPES.values()}

#: llama-quantize's aliases (QUANT_OPTIONS): "Q4_K" means Q4_K_M, ...
FILE_TYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def file_type(name_or_id) -> FileType:
    """A file type by llama-quantize name (any case, aliases included) or id.
    Raises KeyError for unknown ones."""
    if isinstance(name_or_id, int):
        return FILE_TYPES_BY_ID[name_or_id]
    name = name_or_id.upper()
    return FILE_TYPES[FILE_TYPE_ALIASES.get(name, name)]


def file_type_for_tensor_type(type_name: str) -> FileType | None:
    """The file type whose mix defaults to ``type_name`` with nothing else mixed
    in (``q4_0`` -> Q4_0), for files quantized to one tensor type. None where
    llama.cpp has no such file type."""
    plain = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0",
             "q5_1": "Q5_1", "q8_0": "Q8_0", "q2_k": "Q2_K", "q3_k": "Q3_K_S", "q4_k": "Q4_K_S",
             "q5_k": "Q5_K_S", "q6_k": "Q6_K", "iq2_xxs": "IQ2_XXS", "iq2_xs": "IQ2_XS",
             "iq3_xxs": "IQ3_XXS", "iq1_s": "IQ1_S", "iq4_nl": "IQ4_NL", "iq3_s": "IQ3_S",
             "iq2_s": "IQ2_M", "iq4_xs": "IQ4_XS", "iq1_m": "IQ1_M", "tq1_0": "TQ1_0", "tq2_0": "TQ2_0",
             "mxfp4": "MXFP4_MOE", "nvfp4": "NVFP4", "q1_0": "Q1_0", "q2_0": "Q2_0"}
    name = plain.get(type_name.lower())
    return None if name is None else FILE_TYPES[name]
