"""quantspec: the executable specification of LLM block quantization formats.

    import quantspec as qs
    q = qs.quantize("q4_0", x)            # bytes exactly as ggml writes them
    y = qs.dequantize("q4_0", q)
    s = qs.vec_dot("q4_0", q, qs.quantize("q8_0", a))
"""

from quantspec.api import dequantize, quantize, validate, vec_dot
from quantspec.dispatch import kernel_info, use_isa
from quantspec.registry import format_info, formats

__all__ = ["formats", "format_info", "quantize", "dequantize", "vec_dot", "validate", "use_isa", "kernel_info"]
__version__ = "0.1.0"
