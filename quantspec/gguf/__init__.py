"""GGUF files: read and check them, quantize and requantize them as
llama.cpp's ``llama-quantize`` does (same tensor types, same bytes),
dequantize them back to floats, and inspect them.

    from quantspec import gguf
    with gguf.open_gguf("model.gguf") as f:
        for t in f.tensors:
            print(t.name, t.type_name, t.shape)
    gguf.quantize_file("model-f16.gguf", "model-q4_k_m.gguf", "Q4_K_M")

Container IO goes through gguf-py (``pip install gguf``), imported lazily.
"""

from quantspec.gguf.io import GGUFFile, KV, Tensor, open_gguf

__all__ = ["GGUFFile", "KV", "Tensor", "open_gguf", "quantize_file", "dequantize_file", "inspect_file"]


def __getattr__(name):  # the drivers import NumPy-heavy code only when used
    if name in ("quantize_file", "dequantize_file"):
        from quantspec.gguf import quantize

        return getattr(quantize, name)
    if name == "inspect_file":
        from quantspec.gguf import inspection

        return inspection.inspect_file
    raise AttributeError(name)
