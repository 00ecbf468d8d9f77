"""The quantspec specification: one NumPy module per block format.

Each module exports ``FORMAT`` (a :class:`BlockFormat`) and ``quantize``,
``dequantize``, ``vec_dot`` and ``validate`` over 2-D row arrays. Modules
are listed here in ggml type-id order; the public registry reads this list.
"""

from ._format import BlockFormat, Field, Invalid

#: Every format module, by name. Adding a format: one module + one entry here.
MODULES = ("f32", "f16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k",
           "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "iq1_m",
           "bf16", "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0",
           # ik_llama.cpp (type ids in origin "ik_llama")
           "q6_0", "iq1_bn", "iq2_bn", "iq2_k", "iq3_k", "iq4_k", "iq5_k", "iq6_k", "iq4_ks", "iq2_ks", "iq4_kss", "iq5_ks", "iq2_kt",
           "iq3_kt", "iq4_kt", "iq3_ks", "iq2_kl", "iq1_kt", "q1_0_g128",
           # ik_llama.cpp activation-only formats
           "q8_k64")

__all__ = ["BlockFormat", "Field", "Invalid", "MODULES"]
